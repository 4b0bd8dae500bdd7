//! More of BuildKit's image on everyday Dockerfiles: the empty image's PATH and
//! WORKDIR, end to end on a busybox base.

mod common;

use common::*;

fn config(img: &serde_json::Value) -> &serde_json::Value {
    &img["Config"]["config"]
}

#[test]
fn scratch_stage_has_buildkit_default_path_and_workdir() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        "FROM scratch\n\
         ENV PATH=/opt/bin:$PATH\n\
         COPY f /f\n",
        &[("f", "x\n")],
    );
    ok(mybuild(&root).args(["build", "-t", "scr:1"]).arg(&ctx));
    let img = inspect(&root, "scr:1");
    assert_eq!(
        config(&img)["Env"],
        serde_json::json!([
            "PATH=/opt/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        ])
    );
    assert_eq!(config(&img)["WorkingDir"], "/");
}

#[test]
fn base_image_without_path_gets_the_default_path() {
    let Some((tmp, root)) = setup() else { return };
    let rootfs = testdata::images::busybox_rootfs_file(tmp.path()).expect("rootfs");
    ok(mybuild(&root).arg("import").arg(&rootfs).arg("nopath"));
    let ctx = context(
        tmp.path(),
        "FROM nopath\n\
         ENV EXTRA=$PATH\n\
         RUN echo \"$PATH\" > /path\n",
        &[],
    );
    ok(mybuild(&root).args(["build", "-t", "np:1"]).arg(&ctx));
    let default = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    let img = inspect(&root, "np:1");
    assert_eq!(
        config(&img)["Env"],
        serde_json::json!([format!("PATH={default}"), format!("EXTRA={default}")])
    );
    let out = unpack(tmp.path(), &root, "np:1");
    assert_eq!(
        std::fs::read_to_string(out.join("path")).expect("path"),
        format!("{default}\n")
    );
}
