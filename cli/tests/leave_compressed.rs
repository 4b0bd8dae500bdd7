//! Layers built here are stored uncompressed and compressed only when they leave
//! the machine: what leaves must be what registries, skopeo and podman accept,
//! and the compressed variants are remembered so a second push sends nothing.

use std::path::Path;
use std::process::Command;

mod common;
use common::{context, inspect, layer_types, mybuild, ok, podman, setup};
use testdata::registry::Registry;

const DOCKERFILE: &str = "FROM busybox\n\
    RUN echo deferred > /hello && head -c 300000 /dev/zero > /zeros\n\
    CMD [\"cat\", \"/hello\"]\n";

/// The manifest the test registry holds for `r`.
fn registry_raw(r: &str) -> serde_json::Value {
    common::skopeo_raw(&format!("docker://{r}"))
}

fn tools() -> bool {
    ["skopeo", "podman", "runc", "docker-registry"]
        .iter()
        .all(|t| testdata::require_tool(t))
}

/// podman runs `image` and says what it printed.
fn podman_runs(tmp: &Path, image: &str) -> String {
    let (out, _) = ok(&mut podman(
        tmp,
        &["run", "--rm", "--network", "none", image],
    ));
    let _ = podman(tmp, &["rmi", "-a", "-f"]).output();
    out
}

#[test]
fn a_pushed_build_is_compressed_verified_by_skopeo_pulled_by_podman_and_pushed_once() {
    let Some((tmp, root)) = setup() else { return };
    if !tools() {
        return;
    }
    let reg = Registry::start();
    let name = format!("{}/app:1", reg.addr);
    let ctx = context(tmp.path(), DOCKERFILE, &[]);
    let meta = tmp.path().join("meta.json");
    ok(mybuild(&root)
        .args(["build", "-q", "--push", "-t", &name, "--metadata-file"])
        .arg(&meta)
        .arg(&ctx));

    // The store keeps the built layer as plain tar: its digest is its diff_id.
    let local = inspect(&root, &name);
    let stored = &local["Manifest"]["layers"][1];
    assert_eq!(
        stored["mediaType"],
        "application/vnd.oci.image.layer.v1.tar"
    );
    assert_eq!(stored["digest"], local["Config"]["rootfs"]["diff_ids"][1]);

    // The registry's manifest has it gzip-compressed, with the same config, and
    // --metadata-file names the registry's digest.
    let remote = registry_raw(&name);
    assert_eq!(
        layer_types(&remote),
        ["application/vnd.oci.image.layer.v1.tar+gzip"; 2]
    );
    assert_eq!(remote["config"], local["Manifest"]["config"]);
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta).expect("metadata")).expect("json");
    let pushed = meta["containerimage.digest"].as_str().expect("digest");
    let (digest, _) = ok(mybuild(&root).args(["digest", &name]));
    assert_eq!(digest.trim(), pushed);
    assert_ne!(local["Digest"].as_str(), Some(pushed));

    // skopeo copies it, checking every blob against its digest.
    let copied = tmp.path().join("copied");
    ok(Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{name}"))
        .arg(format!("oci:{}:app", copied.display())));

    // podman pulls it and runs it.
    ok(&mut podman(
        tmp.path(),
        &["pull", "-q", "--tls-verify=false", &name],
    ));
    assert_eq!(podman_runs(tmp.path(), &name), "deferred\n");

    // A second push compresses nothing and uploads nothing: every blob is
    // already there, under the same digests.
    let (again, err) = ok(mybuild(&root).args(["push", &name]));
    assert_eq!(again.trim(), pushed);
    assert_eq!(err.matches("skipped (exists)").count(), 3, "{err}");
}

#[test]
fn the_builds_compression_is_what_a_later_push_sends() {
    let Some((tmp, root)) = setup() else { return };
    if !testdata::require_tool("skopeo") || !testdata::require_tool("docker-registry") {
        return;
    }
    let reg = Registry::start();
    let ctx = context(tmp.path(), DOCKERFILE, &[]);
    ok(mybuild(&root)
        .args(["build", "-q", "--compression", "zstd", "-t", "app:z"])
        .arg(&ctx));
    let zstd = format!("{}/app:zstd", reg.addr);
    ok(mybuild(&root).args(["push", "app:z", &zstd]));
    // The base's gzip layer is sent as pulled; the built one as the build said.
    assert_eq!(
        layer_types(&registry_raw(&zstd)),
        [
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+zstd"
        ]
    );
    // push's own flags win, and --force-compression re-encodes the base's too.
    let gz = format!("{}/app:gz", reg.addr);
    ok(mybuild(&root).args(["push", "--compression-format", "gzip", "app:z", &gz]));
    assert_eq!(
        layer_types(&registry_raw(&gz)),
        ["application/vnd.oci.image.layer.v1.tar+gzip"; 2]
    );
    let forced = format!("{}/app:forced", reg.addr);
    ok(mybuild(&root).args([
        "push",
        "--compression-format",
        "zstd",
        "--force-compression",
        "app:z",
        &forced,
    ]));
    assert_eq!(
        layer_types(&registry_raw(&forced)),
        ["application/vnd.oci.image.layer.v1.tar+zstd"; 2]
    );
    let err =
        common::fails(mybuild(&root).args(["push", "--compression-level", "30", "app:z", &gz]));
    assert!(
        err.contains("--compression-level 30: zstd takes 1-22"),
        "{err}"
    );
}

#[test]
fn save_and_docker_output_load_in_podman() {
    let Some((tmp, root)) = setup() else { return };
    if !testdata::require_tool("podman") || !testdata::require_tool("runc") {
        return;
    }
    let ctx = context(tmp.path(), DOCKERFILE, &[]);
    let docker = tmp.path().join("docker.tar");
    ok(mybuild(&root)
        .args(["build", "-q", "-t", "mb-leave:1", "-o"])
        .arg(format!("type=docker,dest={}", docker.display()))
        .arg(&ctx));
    ok(&mut podman(
        tmp.path(),
        &["load", "-i", &docker.display().to_string()],
    ));
    assert_eq!(podman_runs(tmp.path(), "mb-leave:1"), "deferred\n");

    // save: as stored (the built layer plain tar), and gzip-compressed.
    for (file, extra) in [("plain.tar", None), ("gzip.tar", Some("gzip"))] {
        let archive = tmp.path().join(file);
        let mut save = mybuild(&root);
        save.arg("save");
        if let Some(c) = extra {
            save.args(["--compression", c]);
        }
        ok(save.arg("-o").arg(&archive).arg("mb-leave:1"));
        ok(&mut podman(
            tmp.path(),
            &["load", "-i", &archive.display().to_string()],
        ));
        assert_eq!(
            podman_runs(tmp.path(), "mb-leave:1"),
            "deferred\n",
            "{file}"
        );
    }
}
