//! Helpers shared by the cli's end-to-end tests: the binary, a store with a busybox
//! base imported from `busybox-static`, contexts, and umoci to read results back.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use assert_cmd::cargo::CommandCargoExt;
use tempfile::TempDir;

pub fn mybuild(root: &Path) -> Command {
    let mut c = Command::cargo_bin("mybuild").expect("binary");
    c.arg("--root").arg(root);
    c
}

pub fn ok(cmd: &mut Command) -> (String, String) {
    let out = cmd.output().expect("runs");
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{so}\n{se}");
    (so, se)
}

pub fn fails(cmd: &mut Command) -> String {
    let out = cmd.output().expect("runs");
    assert!(!out.status.success(), "{cmd:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
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
    let rootfs = testdata::images::busybox_rootfs_file(tmp.path()).expect("rootfs");
    let root = tmp.path().join("store");
    ok(mybuild(&root)
        .arg("import")
        .arg(&rootfs)
        .arg("busybox")
        .args(["-c", "ENV PATH=/bin"]));
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

pub fn inspect(root: &Path, name: &str) -> serde_json::Value {
    serde_json::from_str(&ok(mybuild(root).args(["inspect", name])).0).expect("json")
}
