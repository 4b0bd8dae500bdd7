//! `index create` and `index inspect`: a multi-platform index from images built
//! on their own (amd64 and arm64 busybox images imported with `--platform`, so no
//! emulation is needed), in a registry and in the store.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;
mod common;
use common::{fails, mybuild, ok};
use testdata::registry::Registry;

fn setup() -> Option<(TempDir, PathBuf)> {
    common::two_platform_store()
}

fn skopeo_raw(name: &str) -> serde_json::Value {
    common::skopeo_raw(&format!("docker://{name}"))
}

fn platforms(index: &serde_json::Value) -> Vec<String> {
    index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| {
            let p = &m["platform"];
            format!(
                "{}/{}",
                p["os"].as_str().unwrap_or(""),
                p["architecture"].as_str().unwrap_or("")
            )
        })
        .collect()
}

/// Digests replaced by `[digest]`, so snapshots hold on any busybox.
fn redact(s: &str, root: &Path) -> String {
    let mut out = s.replace(&root.display().to_string(), "[store]");
    while let Some(i) = out.find("sha256:") {
        let end = (i + 7 + 64).min(out.len());
        out.replace_range(i..end, "[digest]");
    }
    out
}

#[test]
fn index_create_push_combines_two_platforms_and_pull_picks_each() {
    let Some((tmp, root)) = setup() else { return };
    let reg = Registry::start();
    let (amd_ref, arm_ref) = (
        format!("{}/app:amd64", reg.addr),
        format!("{}/other/app-arm:1", reg.addr),
    );
    let amd = ok(mybuild(&root).args(["push", "amd", &amd_ref])).0;
    let arm = ok(mybuild(&root).args(["push", "arm", &arm_ref])).0;
    let multi = format!("{}/multi:1", reg.addr);
    let (digest, _) = ok(mybuild(&root).args([
        "index",
        "create",
        "--push",
        "-t",
        &multi,
        "--annotation",
        "index:org.opencontainers.image.description=two platforms",
        "--annotation",
        "manifest-descriptor:org.example.kind=native",
        &amd_ref,
        &arm_ref,
    ]));
    let digest = digest.trim();
    assert_eq!(ok(mybuild(&root).args(["digest", &multi])).0.trim(), digest);

    let raw = skopeo_raw(&multi);
    assert_eq!(raw["mediaType"], "application/vnd.oci.image.index.v1+json");
    assert_eq!(platforms(&raw), ["linux/amd64", "linux/arm64"]);
    assert_eq!(raw["manifests"][0]["digest"].as_str(), Some(amd.trim()));
    assert_eq!(raw["manifests"][1]["digest"].as_str(), Some(arm.trim()));
    assert_eq!(
        raw["annotations"]["org.opencontainers.image.description"],
        "two platforms"
    );
    assert_eq!(
        raw["manifests"][1]["annotations"]["org.example.kind"],
        "native"
    );
    // The arm64 image came from another repository: it was copied into multi.
    let (arm_in_multi, _) = ok(mybuild(&root).args([
        "manifest",
        "--raw",
        &format!("{}/multi@{}", reg.addr, arm.trim()),
    ]));
    assert!(!arm_in_multi.is_empty());

    // Each platform pulls its own image.
    for (platform, arch, want) in [
        ("linux/arm64", "arm64", &arm),
        ("linux/amd64", "amd64", &amd),
    ] {
        let fresh = tmp.path().join(format!("fresh-{arch}"));
        ok(mybuild(&fresh).args(["pull", "--platform", platform, &multi]));
        let doc: serde_json::Value =
            serde_json::from_str(&ok(mybuild(&fresh).args(["inspect", &multi])).0).unwrap();
        assert_eq!(doc["Config"]["architecture"], arch);
        assert_eq!(doc["Id"].as_str(), Some(want.trim()));
    }

    // index inspect of the registry's index.
    let empty = tmp.path().join("empty");
    let (text, err) = ok(mybuild(&empty).args(["index", "inspect", &multi]));
    assert!(err.contains("not in the store; read from"), "{err}");
    assert!(text.contains("Source:    registry"), "{text}");
    insta::assert_snapshot!(
        "index-inspect-registry",
        redact(&text, &root).replace(&reg.addr, "[registry]")
    );

    // One index alone, with no annotation, is a carbon copy.
    let copy = format!("{}/copy:1", reg.addr);
    let (same, _) = ok(mybuild(&root).args(["index", "create", "--push", "-t", &copy, &multi]));
    assert_eq!(same.trim(), digest);
    assert_eq!(ok(mybuild(&root).args(["digest", &copy])).0.trim(), digest);

    // The same platform twice is refused by name, and nothing is pushed.
    let dup = format!("{}/dup:1", reg.addr);
    let err =
        fails(mybuild(&root).args(["index", "create", "--push", "-t", &dup, &amd_ref, &multi]));
    assert!(
        err.contains(&format!(
            "platform linux/amd64 is given twice: by {amd_ref} and by {multi}"
        )),
        "{err}"
    );
    let err = fails(mybuild(&root).args(["digest", &dup]));
    assert!(err.contains("dup"), "{err}");
}

#[test]
fn index_create_in_the_store_tags_an_index_that_push_and_inspect_know() {
    let Some((tmp, root)) = setup() else { return };
    let reg = Registry::start();
    let (digest, err) = ok(mybuild(&root).args([
        "index",
        "create",
        "-t",
        "multi:local",
        "--annotation",
        "org.example.note=local",
        "amd",
        "arm",
    ]));
    let digest = digest.trim().to_string();
    insta::assert_snapshot!("index-create-store", redact(&err, &root));

    let (text, _) = ok(mybuild(&root).args(["index", "inspect", "multi:local"]));
    insta::assert_snapshot!("index-inspect-store", redact(&text, &root));
    let raw = std::process::Command::new(assert_cmd::cargo::cargo_bin("mybuild"))
        .arg("--root")
        .arg(&root)
        .args(["index", "inspect", "--raw", "multi:local"])
        .output()
        .expect("runs");
    assert_eq!(
        layer_cache::Digest::of(&raw.stdout).to_string(),
        digest,
        "--raw prints the stored bytes"
    );
    let doc = common::inspect(&root, "multi:local");
    assert_eq!(doc["Digest"].as_str(), Some(digest.as_str()));
    assert_eq!(doc["Platforms"].as_array().map(Vec::len), Some(2));
    ok(mybuild(&root).arg("fsck"));

    // skopeo reads it straight from the store's layout, and push sends it whole.
    let (raw, _) = ok(Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci:{}:multi:local", root.display())));
    let raw: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(platforms(&raw), ["linux/amd64", "linux/arm64"]);
    let dest = format!("{}/pushed:1", reg.addr);
    assert_eq!(
        ok(mybuild(&root).args(["push", "multi:local", &dest]))
            .0
            .trim(),
        digest
    );
    assert_eq!(
        platforms(&skopeo_raw(&dest)),
        ["linux/amd64", "linux/arm64"]
    );

    // A source only in a registry is read from there (every platform of an
    // index), left untagged, and named by the new index alone.
    let arm_only = format!("{}/arm-only:1", reg.addr);
    let arm = ok(mybuild(&root).args(["push", "arm", &arm_only])).0;
    let fresh = tmp.path().join("fresh");
    ok(mybuild(&fresh)
        .args(["import"])
        .arg(tmp.path().join("busybox-rootfs.tar"))
        .args(["amd2", "--platform", "linux/amd64"]));
    let (_, err) =
        ok(mybuild(&fresh).args(["index", "create", "-t", "mixed:1", "amd2", &arm_only]));
    assert!(
        err.contains(&format!(
            "linux/arm64      {} (from {arm_only})",
            arm.trim()
        )),
        "{err}"
    );
    let images = ok(mybuild(&fresh).arg("images")).0;
    assert!(!images.contains("arm-only"), "{images}");
    ok(mybuild(&fresh).arg("fsck"));
    ok(mybuild(&fresh).arg("prune"));
    let mixed = format!("{}/mixed:1", reg.addr);
    ok(mybuild(&fresh).args(["push", "mixed:1", &mixed]));
    assert_eq!(
        platforms(&skopeo_raw(&mixed)),
        ["linux/amd64", "linux/arm64"]
    );

    // Errors name what is wrong.
    let err = fails(mybuild(&root).args(["index", "create", "-t", "dup:1", "amd", "amd"]));
    assert!(
        err.contains("platform linux/amd64 is given twice: by amd and by amd"),
        "{err}"
    );
    let err = fails(mybuild(&root).args(["index", "create", "-t", "x:1", "amd", "nothere"]));
    assert!(
        err.contains("nothere: not in the store (name its registry"),
        "{err}"
    );
    let err = fails(mybuild(&root).args(["index", "inspect", "amd"]));
    assert!(err.contains("amd is a single image, not an index"), "{err}");
    let err = fails(mybuild(&root).args([
        "index",
        "create",
        "-t",
        "x:1",
        "--annotation",
        "manifest:k=v",
        "amd",
    ]));
    assert!(err.contains("writes no manifest"), "{err}");
    assert!(!ok(mybuild(&root).arg("images")).0.contains("dup"));
    let _ = tmp;
}
