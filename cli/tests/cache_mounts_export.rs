//! `--cache-to …,cache-mounts=true`: `RUN --mount=type=cache` directories carried
//! with the step cache, restored on a fresh store before the first RUN that
//! mounts them.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use testdata::registry::Registry;

/// Fills the cache on its first run (a top-level file, rewritten each run, and a
/// directory of three, written once),
/// and writes how many files the cache held before this run into /count.
const DOCKERFILE: &str = "FROM busybox\nCOPY src /src\n\
RUN --mount=type=cache,target=/var/cache/app,sharing=locked \
find /var/cache/app -type f | wc -l > /count && \
mkdir -p /var/cache/app/d && echo top > /var/cache/app/top && \
for i in 1 2 3; do [ -e /var/cache/app/d/$i ] || echo $i > /var/cache/app/d/$i; done\n";

/// The `/count` of image `name` in `root`.
fn count(tmp: &Path, root: &Path, name: &str) -> String {
    let rootfs = unpack(tmp, root, name);
    std::fs::read_to_string(rootfs.join("count"))
        .expect("count")
        .trim()
        .to_string()
}

/// The cache-mount parts recorded in the local cache artifact at `dir`:
/// (name, layer digest).
fn parts(dir: &Path) -> Vec<(String, String)> {
    let read = |digest: &str| {
        let hex = digest.trim_start_matches("sha256:");
        std::fs::read(dir.join("blobs/sha256").join(hex)).expect("blob")
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).expect("index")).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&read(index["manifests"][0]["digest"].as_str().unwrap())).unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&read(manifest["config"]["digest"].as_str().unwrap())).unwrap();
    let mounts = config["mounts"].as_array().expect("mounts");
    assert_eq!(mounts.len(), 1, "{config}");
    assert_eq!(mounts[0]["id"], "/var/cache/app");
    mounts[0]["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["layer"]["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn fresh_store(tmp: &Path, name: &str) -> PathBuf {
    let dir = tmp.join(name);
    std::fs::create_dir_all(&dir).expect("dir");
    store_with_busybox(&dir)
}

#[test]
fn exported_cache_mounts_restore_on_a_fresh_store_and_travel_incrementally() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(tmp.path(), DOCKERFILE, &[("src", "1")]);
    let dir = tmp.path().join("cache");
    let to = format!("type=local,dest={},cache-mounts=true", dir.display());
    ok(mybuild(&root)
        .args(["build", "-t", "filled:1", "--cache-to", &to])
        .arg(&ctx));
    assert_eq!(count(tmp.path(), &root, "filled:1"), "0");
    let first = parts(&dir);
    let names: Vec<&str> = first.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["", "d"], "{first:?}");

    // A fresh store, the source changed so the RUN runs: it sees the four files.
    std::fs::write(ctx.join("src"), "2").unwrap();
    let fresh = fresh_store(tmp.path(), "b");
    let from = format!("type=local,src={}", dir.display());
    ok(mybuild(&fresh)
        .args(["build", "-t", "restored:1", "--cache-from", &from])
        .arg(&ctx));
    assert_eq!(count(tmp.path(), &fresh, "restored:1"), "4");

    // Exported again after one file of the top level changed: the directory's
    // part is the same layer, so only the changed part travels.
    std::fs::write(ctx.join("src"), "3").unwrap();
    let ctx2 = context(
        tmp.path(),
        &DOCKERFILE.replace("echo top", "echo changed"),
        &[("src", "3")],
    );
    ok(mybuild(&root)
        .args(["build", "-t", "filled:2", "--cache-to", &to])
        .arg(&ctx2));
    let second = parts(&dir);
    assert_eq!(second[1], first[1], "{first:?} {second:?}");
    assert_ne!(second[0], first[0], "{first:?} {second:?}");
}

#[test]
fn cache_mounts_travel_through_a_registry_and_a_corrupt_part_is_refused() {
    let Some((tmp, root)) = setup() else { return };
    let reg = Registry::start();
    let ctx = context(tmp.path(), DOCKERFILE, &[("src", "1")]);
    let cache_ref = format!("{}/cache/app:mounts", reg.addr);
    let to = format!("type=registry,ref={cache_ref},cache-mounts=true");
    ok(mybuild(&root)
        .args(["build", "-t", "filled:1", "--cache-to", &to])
        .arg(&ctx));
    std::fs::write(ctx.join("src"), "2").unwrap();
    let fresh = fresh_store(tmp.path(), "b");
    ok(mybuild(&fresh)
        .args(["build", "-t", "restored:1", "--cache-from", &cache_ref])
        .arg(&ctx));
    assert_eq!(count(tmp.path(), &fresh, "restored:1"), "4");

    // A local export whose directory part was altered: refused with a warning,
    // and the step runs on an empty cache.
    let dir = tmp.path().join("cache");
    let to = format!("type=local,dest={},cache-mounts=true", dir.display());
    std::fs::write(ctx.join("src"), "3").unwrap();
    ok(mybuild(&root)
        .args(["build", "-t", "filled:2", "--cache-to", &to])
        .arg(&ctx));
    let (_, digest) = parts(&dir).into_iter().find(|(n, _)| n == "d").unwrap();
    let blob = dir
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    std::fs::write(ctx.join("src"), "4").unwrap();
    let other = fresh_store(tmp.path(), "c");
    let from = format!("type=local,src={}", dir.display());
    let (_, err) = ok(mybuild(&other)
        .args([
            "build",
            "--progress=plain",
            "-t",
            "empty:1",
            "--cache-from",
            &from,
        ])
        .arg(&ctx));
    assert!(
        err.contains("cache mount \"/var/cache/app\"") && err.contains("it starts empty"),
        "{err}"
    );
    assert_eq!(count(tmp.path(), &other, "empty:1"), "0");
}
