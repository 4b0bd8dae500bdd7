//! Helpers shared by the cli's end-to-end tests: the binary, a store with a busybox
//! base imported from `busybox-static`, contexts, and umoci to read results back.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use assert_cmd::cargo::CommandCargoExt;
use tempfile::TempDir;

pub fn mybuild(root: &Path) -> Command {
    let mut c = Command::cargo_bin("mybuild").expect("binary");
    c.arg("--root").arg(root);
    // Never read the developer's own credentials or CAs.
    c.env("DOCKER_CONFIG", root.with_extension("docker"));
    c.env_remove("REGISTRY_AUTH_FILE");
    c.env("MYBUILD_CERTS_D", root.with_extension("certs.d"));
    c
}

/// Runs to the end: success, stdout, stderr.
pub fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn ok(cmd: &mut Command) -> (String, String) {
    let (success, so, se) = run(cmd);
    assert!(success, "{cmd:?} failed:\n{so}\n{se}");
    (so, se)
}

pub fn fails(cmd: &mut Command) -> String {
    let (success, so, se) = run(cmd);
    assert!(!success, "{cmd:?} should fail:\n{so}\n{se}");
    se
}

/// Runs with `input` on standard input (written from a thread, so a large input
/// cannot deadlock against the output): success, stdout, stderr.
pub fn with_stdin(cmd: &mut Command, input: impl AsRef<[u8]>) -> (bool, String, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let data = input.as_ref().to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait");
    writer.join().expect("writer");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Spawns `cmd` and returns once its standard error has shown `marker` (e.g. a RUN's
/// own output, so the sandbox is up); panics if it ends first.
pub fn spawn_until(cmd: &mut Command, marker: &str) -> std::process::Child {
    let mut child = cmd.stderr(Stdio::piped()).spawn().expect("spawn");
    let mut err = child.stderr.take().expect("stderr");
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains(marker) {
        let n = err.read(&mut buf).expect("read");
        assert!(n > 0, "ended early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    // Keep draining so the child never blocks on a full pipe.
    std::thread::spawn(move || while matches!(err.read(&mut buf), Ok(n) if n > 0) {});
    child
}

/// An inspected image's history as (created_by, empty_layer) pairs.
pub fn history(img: &serde_json::Value) -> Vec<(String, bool)> {
    img["Config"]["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| {
            (
                h["created_by"].as_str().unwrap_or("").to_string(),
                h["empty_layer"] == true,
            )
        })
        .collect()
}

/// A store under `tmp` holding `busybox` imported from `busybox-static`, its
/// layer gzip-compressed as a base pulled from a registry is.
pub fn store_with_busybox(tmp: &Path) -> PathBuf {
    let rootfs = testdata::images::busybox_rootfs_file(tmp).expect("rootfs");
    let root = tmp.join("store");
    ok(mybuild(&root)
        .arg("import")
        .arg(&rootfs)
        .arg("busybox")
        .args(["--compression", "gzip", "-c", "ENV PATH=/bin"]));
    root
}

/// Whether `mybuild images` lists a repository whose last path component is
/// `name` (read from its column, as a short image id may hold any hex word).
pub fn lists_repo(root: &Path, name: &str) -> bool {
    ok(mybuild(root).arg("images")).0.lines().any(|l| {
        l.split_whitespace()
            .next()
            .is_some_and(|r| r.rsplit('/').next() == Some(name))
    })
}

/// A store with busybox imported; `None` when the test must skip.
pub fn setup() -> Option<(TempDir, PathBuf)> {
    if !testdata::require_root()
        || !testdata::require_tool("busybox")
        || !testdata::require_tool("umoci")
    {
        return None;
    }
    let tmp = TempDir::new().expect("tmp");
    let root = store_with_busybox(tmp.path());
    Some((tmp, root))
}

pub fn context(tmp: &Path, dockerfile: &str, files: &[(&str, &str)]) -> PathBuf {
    let ctx = tmp.join(format!("ctx-{}", files.len() + dockerfile.len()));
    std::fs::create_dir_all(&ctx).expect("ctx");
    std::fs::write(ctx.join("Dockerfile"), dockerfile).expect("Dockerfile");
    for (name, body) in files {
        let p = ctx.join(name);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("dirs");
        std::fs::write(p, body).expect("file");
    }
    ctx
}

/// Unpacks a built image with umoci and returns the rootfs path.
pub fn unpack(tmp: &Path, root: &Path, name: &str) -> PathBuf {
    let bundle = tmp.join(format!("bundle-{}", name.replace([':', '/'], "-")));
    ok(Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:{name}", root.display()))
        .arg(&bundle));
    bundle.join("rootfs")
}

/// Stores `tag` again with its built layers gzip-compressed (saved compressed and
/// loaded back), as a pulled image is: the blobs a test watches are then the
/// ones a push sends (built layers are otherwise compressed as they leave).
pub fn store_compressed(tmp: &Path, root: &Path, tag: &str) {
    let archive = tmp.join(format!("{}.gzip.tar", tag.replace([':', '/'], "-")));
    ok(mybuild(root)
        .args(["save", "--compression", "gzip", "-o"])
        .arg(&archive)
        .arg(tag));
    ok(mybuild(root).args(["load", "-i"]).arg(&archive));
}

/// The manifest skopeo reads raw at `target` (`docker://…` on the plain-HTTP
/// test registry, `oci-archive:…`, …).
pub fn skopeo_raw(target: &str) -> serde_json::Value {
    let mut cmd = Command::new("skopeo");
    cmd.args(["inspect", "--raw"]);
    if target.starts_with("docker://") {
        cmd.arg("--tls-verify=false");
    }
    let (out, _) = ok(cmd.arg(target));
    serde_json::from_str(&out).expect("skopeo json")
}

/// The media types of a manifest's layers.
pub fn layer_types(manifest: &serde_json::Value) -> Vec<String> {
    manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["mediaType"].as_str().expect("type").to_string())
        .collect()
}

/// podman with its storage under `tmp` (the machine's is neither read nor
/// changed), running `args`.
pub fn podman(tmp: &Path, args: &[&str]) -> Command {
    // This host's cgroups are hybrid: crun refuses them, runc with cgroupfs works.
    let conf = tmp.join("containers.conf");
    if !conf.is_file() {
        std::fs::write(
            &conf,
            "[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\nruntime = \"runc\"\n",
        )
        .expect("conf");
    }
    let mut c = Command::new("podman");
    c.env("CONTAINERS_CONF", &conf)
        .arg("--root")
        .arg(tmp.join("podman-root"))
        .arg("--runroot")
        .arg(tmp.join("podman-run"))
        .args(args);
    c
}

pub fn inspect(root: &Path, name: &str) -> serde_json::Value {
    serde_json::from_str(&ok(mybuild(root).args(["inspect", name])).0).expect("json")
}

#[allow(unused_imports)]
pub use testdata::git::{dumb_http_routes, git_daemon, GitDaemon};
#[allow(unused_imports)]
pub use testdata::http::{serve, serve_with, Routes, Served, Server, Validators};
#[allow(unused_imports)]
pub use testdata::images::aarch64_elf;
#[allow(unused_imports)]
pub use testdata::pty::{in_pty, screen, Pty};

/// Pushes `amd_image` and `arm_image` from the store to `REGISTRY/multi:amd` and
/// `multi:arm` and puts an OCI index of both (linux/amd64, linux/arm64/v8) as
/// `multi:both`; returns the three manifest digests (amd, arm, index).
pub fn push_two_platform_index(
    root: &Path,
    registry: &str,
    amd_image: &str,
    arm_image: &str,
) -> (String, String, String) {
    let amd = ok(mybuild(root).args(["push", amd_image, &format!("{registry}/multi:amd")])).0;
    let arm = ok(mybuild(root).args(["push", arm_image, &format!("{registry}/multi:arm")])).0;
    let (amd, arm) = (amd.trim().to_string(), arm.trim().to_string());
    let size = |d: &str| {
        std::fs::metadata(root.join("blobs/sha256").join(&d[7..]))
            .expect("manifest blob")
            .len()
    };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd, "size": size(&amd),
             "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm, "size": size(&arm),
             "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        ]
    });
    let m = registry_client::Manifest::new(serde_json::to_vec(&index).expect("json"), None)
        .expect("index");
    let r = registry_client::Reference::parse(&format!("{registry}/multi:both")).expect("ref");
    let client = registry_client::Client::new(registry_client::ClientOptions::from_env());
    let digest = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(client.put_manifest(&r, &m))
        .expect("put index");
    (amd, arm, digest.to_string())
}

/// A store with `amd` and `arm` imported from busybox-static (linux/amd64 and
/// linux/arm64 configs; nothing runs, so no emulation is needed), gzip-compressed
/// as pulled images are; `None` when the
/// test must skip (no busybox, docker-registry or skopeo).
pub fn two_platform_store() -> Option<(TempDir, PathBuf)> {
    for tool in ["busybox", "docker-registry", "skopeo"] {
        if !testdata::require_tool(tool) {
            return None;
        }
    }
    let tmp = TempDir::new().expect("tmp");
    let rootfs = testdata::images::busybox_rootfs_file(tmp.path()).expect("rootfs");
    let root = tmp.path().join("store");
    for (name, platform) in [("amd", "linux/amd64"), ("arm", "linux/arm64")] {
        ok(mybuild(&root).arg("import").arg(&rootfs).arg(name).args([
            "--platform",
            platform,
            "--compression",
            "gzip",
            "-c",
            "ENV PATH=/bin",
        ]));
    }
    Some((tmp, root))
}
