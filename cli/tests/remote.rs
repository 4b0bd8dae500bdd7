//! Reading images in a registry without pulling them: `manifest`, `config`, and
//! `inspect`'s fallback to the registry, checked against skopeo's bytes on a real
//! registry.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;
mod common;
use common::{fails, mybuild, ok, push_two_platform_index};
use testdata::registry::Registry;

fn setup() -> Option<(TempDir, PathBuf)> {
    common::two_platform_store()
}

fn stdout_bytes(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().expect("runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn skopeo_raw(name: &str, config: bool) -> Vec<u8> {
    let mut c = Command::new("skopeo");
    c.args(["inspect", "--raw", "--tls-verify=false"]);
    if config {
        c.arg("--config");
    }
    stdout_bytes(c.arg(format!("docker://{name}")))
}

fn sha256(bytes: &[u8]) -> String {
    layer_cache::Digest::of(bytes).to_string()
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).expect("json")
}

#[test]
fn manifest_and_config_raw_are_the_registrys_bytes() {
    let Some((_tmp, root)) = setup() else { return };
    let reg = Registry::start();
    let name = format!("{}/app:1", reg.addr);
    let pushed = ok(mybuild(&root).args(["push", "amd", &name])).0;

    let raw = stdout_bytes(mybuild(&root).args(["manifest", "--raw", &name]));
    assert_eq!(raw, skopeo_raw(&name, false));
    assert_eq!(sha256(&raw), pushed.trim());
    // Without --raw: the same document, pretty.
    let pretty = stdout_bytes(mybuild(&root).args(["manifest", &name]));
    assert_ne!(pretty, raw);
    assert_eq!(json(&pretty), json(&raw));

    let config = stdout_bytes(mybuild(&root).args(["config", "--raw", &name]));
    assert_eq!(config, skopeo_raw(&name, true));
    assert_eq!(
        json(&raw)["config"]["digest"].as_str(),
        Some(sha256(&config).as_str())
    );
    let pretty = json(&stdout_bytes(mybuild(&root).args(["config", &name])));
    assert_eq!(pretty["architecture"], "amd64");

    // An index: itself, or the entry a platform picks.
    let (amd, arm, index) = push_two_platform_index(&root, &reg.addr, "amd", "arm");
    let both = format!("{}/multi:both", reg.addr);
    let raw = stdout_bytes(mybuild(&root).args(["manifest", "--raw", &both]));
    assert_eq!(raw, skopeo_raw(&both, false));
    assert_eq!(sha256(&raw), index);
    for (platform, want, arch) in [
        ("linux/arm64", &arm, "arm64"),
        ("linux/amd64", &amd, "amd64"),
    ] {
        let m =
            stdout_bytes(mybuild(&root).args(["manifest", "--raw", "--platform", platform, &both]));
        assert_eq!(&sha256(&m), want, "{platform}");
        let c = json(&stdout_bytes(mybuild(&root).args([
            "config",
            "--platform",
            platform,
            &both,
        ])));
        assert_eq!(c["architecture"], arch);
    }
    let err = fails(mybuild(&root).args(["manifest", "--platform", "linux/s390x", &both]));
    assert!(err.contains("no image for platform linux/s390x"), "{err}");
    let err = fails(mybuild(&root).args(["manifest", &format!("{}/nothere:1", reg.addr)]));
    assert!(err.contains("nothere"), "{err}");
}

#[test]
fn inspect_reads_the_registry_when_the_store_lacks_the_image_and_says_so() {
    let Some((tmp, root)) = setup() else { return };
    let reg = Registry::start();
    let name = format!("{}/app:1", reg.addr);
    let pushed = ok(mybuild(&root).args(["push", "arm", &name])).0;

    // Store first: a stored image is inspected as before, not marked remote.
    let (local, err) = ok(mybuild(&root).args(["inspect", "arm"]));
    let local: serde_json::Value = serde_json::from_str(&local).expect("json");
    assert!(local.get("Remote").is_none(), "{local}");
    assert!(!err.contains("not in the store"), "{err}");

    let empty = tmp.path().join("empty");
    let (doc, err) = ok(mybuild(&empty).args(["inspect", &name]));
    assert_eq!(
        err.trim(),
        format!("{name}: not in the store; read from {}", reg.addr)
    );
    let doc: serde_json::Value = serde_json::from_str(&doc).expect("json");
    assert_eq!(doc["Remote"], true);
    assert_eq!(doc["Id"].as_str(), Some(pushed.trim()));
    assert_eq!(doc["Manifest"], local["Manifest"]);
    assert_eq!(doc["Config"], local["Config"]);
    assert_eq!(doc["ConfigDigest"], local["ConfigDigest"]);
    assert_eq!(doc["RepoTags"], serde_json::json!([]));
    // Nothing was pulled.
    assert!(!ok(mybuild(&empty).arg("images")).0.contains("app"));

    // An index in the registry: its platforms.
    push_two_platform_index(&root, &reg.addr, "amd", "arm");
    let (doc, _) = ok(mybuild(&empty).args(["inspect", &format!("{}/multi:both", reg.addr)]));
    let doc: serde_json::Value = serde_json::from_str(&doc).expect("json");
    assert_eq!(doc["Remote"], true);
    let platforms: Vec<&str> = doc["Platforms"]
        .as_array()
        .expect("platforms")
        .iter()
        .map(|p| p["Platform"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64/v8"]);

    // Neither here nor there: the registry's answer is part of the error.
    let err = fails(mybuild(&empty).args(["inspect", &format!("{}/nothere:1", reg.addr)]));
    assert!(
        err.contains("not in the store, and reading it from"),
        "{err}"
    );
    // An id, or a name that does not write its registry, is never looked up there.
    for local in ["0123456789ab", "app:1"] {
        let err = fails(mybuild(&empty).args(["inspect", local]));
        assert_eq!(err.trim(), format!("error: no such image: {local}"));
    }
}

/// A one-file rootfs tar whose bytes never change (fixed times and owners).
fn tiny_rootfs(dir: &Path) -> PathBuf {
    let path = dir.join("tiny.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&path).expect("tar"));
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    b.append_data(&mut h, "hello", &b"hi\n"[..])
        .expect("append");
    b.into_inner().expect("finish");
    path
}

#[test]
fn manifest_config_and_remote_inspect_print_the_snapshots() {
    if !testdata::require_tool("docker-registry") {
        return;
    }
    let tmp = TempDir::new().expect("tmp");
    let root = tmp.path().join("store");
    let rootfs = tiny_rootfs(tmp.path());
    for (name, platform) in [("tiny-amd", "linux/amd64"), ("tiny-arm", "linux/arm64")] {
        ok(mybuild(&root)
            .arg("import")
            .arg(&rootfs)
            .args([
                name,
                "--platform",
                platform,
                "-m",
                "tiny",
                "-c",
                "CMD [\"cat\", \"/hello\"]",
            ])
            .env("SOURCE_DATE_EPOCH", "0"));
    }
    let reg = Registry::start();
    let (amd, arm) = (
        format!("{}/tiny:amd", reg.addr),
        format!("{}/tiny:arm", reg.addr),
    );
    ok(mybuild(&root).args(["push", "tiny-amd", &amd]));
    ok(mybuild(&root).args(["push", "tiny-arm", &arm]));
    let multi = format!("{}/tiny:multi", reg.addr);
    ok(mybuild(&root).args(["index", "create", "--push", "-t", &multi, &amd, &arm]));

    let text = |args: &[&str]| {
        ok(mybuild(&root).args(args))
            .0
            .replace(&reg.addr, "[registry]")
    };
    insta::assert_snapshot!("manifest", text(&["manifest", &amd]));
    insta::assert_snapshot!("config", text(&["config", &amd]));
    insta::assert_snapshot!("manifest-index", text(&["manifest", &multi]));
    let empty = tmp.path().join("empty");
    let (doc, _) = ok(mybuild(&empty).args(["inspect", &arm]));
    insta::assert_snapshot!("inspect-remote", doc.replace(&reg.addr, "[registry]"));
}
