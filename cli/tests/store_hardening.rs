//! Hostile or huge input to the store and the registry client stays bounded, and
//! concurrent store commands do not mistake each other's work for damage.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{mybuild, ok};
use tempfile::TempDir;

/// A store holding `busybox` (so fsck has a tag to walk); `None` when skipped.
fn busybox_store() -> Option<(TempDir, PathBuf)> {
    if !testdata::require_tool("busybox") {
        return None;
    }
    let tmp = TempDir::new().expect("tmp");
    let root = common::store_with_busybox(tmp.path());
    Some((tmp, root))
}

/// Unreferenced blobs for `prune` to sweep.
fn add_garbage(root: &Path, round: usize, n: usize) {
    let store = layer_cache::Store::open(root).expect("store");
    for i in 0..n {
        store
            .write_blob(format!("garbage {round} {i}").as_bytes())
            .expect("blob");
    }
}

#[test]
fn fsck_during_prune_reports_no_vanished_garbage() {
    let Some((_tmp, root)) = busybox_store() else {
        return;
    };
    for round in 0..12 {
        add_garbage(&root, round, 400);
        let prune = mybuild(&root)
            .arg("prune")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("prune");
        let fsck = mybuild(&root).arg("fsck").output().expect("fsck");
        let pruned = prune.wait_with_output().expect("prune");
        assert!(pruned.status.success(), "prune failed: {pruned:?}");
        assert!(
            fsck.status.success(),
            "round {round}: fsck during prune failed:\n{}\n{}",
            String::from_utf8_lossy(&fsck.stdout),
            String::from_utf8_lossy(&fsck.stderr)
        );
    }
    // Damage a tag needs is still found once prune is done.
    let (so, _) = ok(mybuild(&root).arg("fsck"));
    assert!(so.contains(": ok"), "{so}");
}
