//! More of BuildKit's image on everyday Dockerfiles: the config fields CMD,
//! ENTRYPOINT and ENV leave, the empty image's PATH and WORKDIR, end to end on a
//! busybox base.

mod common;

use common::*;

fn config(img: &serde_json::Value) -> &serde_json::Value {
    &img["Config"]["config"]
}

#[test]
fn entrypoint_keeps_a_cmd_set_earlier_in_the_same_stage() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        "FROM busybox AS base\n\
         CMD [\"inherited\"]\n\
         FROM base AS kept\n\
         CMD [\"mine\"]\n\
         ENTRYPOINT [\"/bin/echo\"]\n\
         FROM base AS reset\n\
         ENTRYPOINT [\"/bin/echo\"]\n\
         FROM base AS emptied\n\
         ENTRYPOINT []\n\
         CMD []\n",
        &[],
    );
    for target in ["kept", "reset", "emptied"] {
        ok(mybuild(&root)
            .args(["build", "--target", target, "-t"])
            .arg(format!("ep:{target}"))
            .arg(&ctx));
    }
    // BuildKit resets CMD on ENTRYPOINT only when this stage set none before.
    let kept = inspect(&root, "ep:kept");
    assert_eq!(config(&kept)["Cmd"], serde_json::json!(["mine"]));
    assert_eq!(
        config(&kept)["Entrypoint"],
        serde_json::json!(["/bin/echo"])
    );
    // Every CMD marks its arguments escaped, as BuildKit's config says.
    assert_eq!(config(&kept)["ArgsEscaped"], true);
    let reset = inspect(&root, "ep:reset");
    assert!(config(&reset)["Cmd"].is_null(), "{}", config(&reset));
    // Empty lists leave no field at all (Go omits them).
    let emptied = inspect(&root, "ep:emptied");
    let c = config(&emptied).as_object().expect("config");
    assert!(!c.contains_key("Cmd"), "{c:?}");
    assert!(!c.contains_key("Entrypoint"), "{c:?}");
}

#[test]
fn env_replaces_a_variable_in_its_place() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        "FROM busybox\n\
         ENV A=1 B=1\n\
         ENV A=2 PATH=/opt/bin:$PATH\n",
        &[],
    );
    ok(mybuild(&root).args(["build", "-t", "env:1"]).arg(&ctx));
    let img = inspect(&root, "env:1");
    assert_eq!(
        config(&img)["Env"],
        serde_json::json!(["PATH=/opt/bin:/bin", "A=2", "B=1"])
    );
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
