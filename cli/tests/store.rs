//! End-to-end tests of the store commands with the real binary and real outside
//! clients (skopeo, umoci) reading what we write.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use assert_cmd::cargo::CommandCargoExt;
use tempfile::TempDir;

fn mybuild(root: &Path) -> Command {
    let mut c = Command::cargo_bin("mybuild").expect("binary built");
    c.arg("--root").arg(root);
    c
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run_fail(cmd: &mut Command) -> String {
    let out = cmd.output().expect("runs");
    assert!(!out.status.success(), "{cmd:?} should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A store with `busybox:latest` imported from busybox-static; `None` when skipped.
fn store_with_busybox() -> Option<(TempDir, PathBuf)> {
    if !testdata::require_tool("busybox") {
        return None;
    }
    let tmp = TempDir::new().expect("tempdir");
    let rootfs = testdata::images::busybox_rootfs_file(tmp.path()).expect("rootfs");
    let root = tmp.path().join("store");
    run(mybuild(&root)
        .arg("import")
        .arg(&rootfs)
        .arg("busybox")
        .args(["-c", "ENV PATH=/bin", "-c", r#"CMD ["/bin/sh"]"#]));
    Some((tmp, root))
}

/// `import -c` runs a build's dispatchers: ENV expands earlier values and keeps a
/// variable's place, WORKDIR resolves against the last one, EXPOSE and HEALTHCHECK
/// are a build's, and ENTRYPOINT keeps a CMD an earlier change set (as in a stage).
#[test]
fn import_changes_are_applied_as_a_build_applies_them() {
    if !testdata::require_tool("busybox") {
        return;
    }
    let tmp = TempDir::new().expect("tempdir");
    let rootfs = testdata::images::busybox_rootfs_file(tmp.path()).expect("rootfs");
    let root = tmp.path().join("store");
    let changes = [
        "ENV A=1",
        "ENV B=$A",
        "ENV A=2",
        "WORKDIR /app",
        "WORKDIR sub",
        "EXPOSE 8000-8001",
        r#"CMD ["y"]"#,
        r#"ENTRYPOINT ["/bin/x"]"#,
        "HEALTHCHECK NONE",
    ];
    let mut cmd = mybuild(&root);
    cmd.arg("import").arg(&rootfs).arg("changed:1");
    for c in changes {
        cmd.args(["-c", c]);
    }
    run(&mut cmd);
    let inspect: serde_json::Value =
        serde_json::from_str(&run(mybuild(&root).args(["inspect", "changed:1"]))).expect("json");
    let config = &inspect["Config"]["config"];
    assert_eq!(config["Env"], serde_json::json!(["A=2", "B=1"]), "{config}");
    assert_eq!(config["WorkingDir"], "/app/sub", "{config}");
    assert_eq!(config["Cmd"], serde_json::json!(["y"]), "{config}");
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/bin/x"]),
        "{config}"
    );
    assert_eq!(
        config["ExposedPorts"],
        serde_json::json!({"8000/tcp": {}, "8001/tcp": {}}),
        "{config}"
    );
    assert_eq!(config["Healthcheck"]["Test"], serde_json::json!(["NONE"]));

    let err = run_fail(
        mybuild(&root)
            .arg("import")
            .arg(&rootfs)
            .arg("bad:1")
            .args(["-c", "RUN true"]),
    );
    assert!(err.contains("RUN is not supported"), "{err}");
}

fn blob_files(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root.join("blobs/sha256"))
        .expect("blobs dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn import_is_read_by_skopeo_and_umoci() {
    let Some((tmp, root)) = store_with_busybox() else {
        return;
    };
    if !testdata::require_tool("skopeo") || !testdata::require_tool("umoci") {
        return;
    }
    let inspect: serde_json::Value =
        serde_json::from_str(&run(mybuild(&root).args(["inspect", "busybox"]))).expect("json");
    assert_eq!(inspect["Config"]["config"]["Env"][0], "PATH=/bin");
    assert_eq!(inspect["Config"]["config"]["Cmd"][0], "/bin/sh");
    assert_eq!(inspect["RepoTags"][0], "busybox:latest");
    let digest = inspect["Digest"].as_str().expect("digest").to_string();

    let sk: serde_json::Value = serde_json::from_str(&run(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}:busybox:latest", root.display()))))
    .expect("skopeo json");
    assert_eq!(sk["Digest"], digest.as_str());
    assert_eq!(sk["Env"][0], "PATH=/bin");

    let bundle = tmp.path().join("bundle");
    run(Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:busybox:latest", root.display()))
        .arg(&bundle));
    let busybox = std::fs::read(bundle.join("rootfs/bin/busybox")).expect("busybox unpacked");
    let original =
        std::fs::read(testdata::images::busybox_binary().expect("busybox")).expect("read");
    assert_eq!(busybox, original);
    assert_eq!(
        std::fs::read_link(bundle.join("rootfs/bin/sh")).expect("link"),
        PathBuf::from("busybox")
    );
    let passwd = std::fs::read_to_string(bundle.join("rootfs/etc/passwd")).expect("passwd");
    assert!(passwd.starts_with("root:x:0:0:"));
}

#[test]
fn save_is_read_as_docker_and_oci_archive_and_loads_back() {
    let Some((tmp, root)) = store_with_busybox() else {
        return;
    };
    if !testdata::require_tool("skopeo") {
        return;
    }
    run(mybuild(&root).args(["tag", "busybox", "localhost:5000/team/bb:v2"]));
    let archive = tmp.path().join("out.tar");
    run(mybuild(&root)
        .args(["save", "-o"])
        .arg(&archive)
        .args(["busybox", "localhost:5000/team/bb:v2"]));
    let want: serde_json::Value =
        serde_json::from_str(&run(mybuild(&root).args(["inspect", "busybox"]))).expect("json");

    let docker: serde_json::Value =
        serde_json::from_str(&run(Command::new("skopeo").arg("inspect").arg(format!(
            "docker-archive:{}:busybox:latest",
            archive.display()
        ))))
        .expect("json");
    assert_eq!(docker["Env"][0], "PATH=/bin");
    let oci: serde_json::Value = serde_json::from_str(&run(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci-archive:{}:busybox:latest", archive.display()))))
    .expect("json");
    assert_eq!(oci["Digest"], want["Digest"]);

    // Load into a fresh store: same digest, both names.
    let root2 = tmp.path().join("store2");
    let out = run(mybuild(&root2).arg("load").arg("-i").arg(&archive));
    assert!(out.contains("busybox:latest"), "{out}");
    assert!(out.contains("localhost:5000/team/bb:v2"), "{out}");
    let got: serde_json::Value = serde_json::from_str(&run(
        mybuild(&root2).args(["inspect", "localhost:5000/team/bb:v2"])
    ))
    .expect("json");
    assert_eq!(got["Digest"], want["Digest"]);
    run(mybuild(&root2).arg("fsck"));
}

#[test]
fn loads_a_docker_archive_written_by_skopeo() {
    let Some((tmp, root)) = store_with_busybox() else {
        return;
    };
    if !testdata::require_tool("skopeo") {
        return;
    }
    let archive = tmp.path().join("skopeo.tar");
    run(Command::new("skopeo")
        .args(["copy", "-q"])
        .arg(format!("oci:{}:busybox:latest", root.display()))
        .arg(format!(
            "docker-archive:{}:example/from-skopeo:1",
            archive.display()
        )));
    let root2 = tmp.path().join("store2");
    let out = run(mybuild(&root2).arg("load").arg("-i").arg(&archive));
    assert!(out.contains("example/from-skopeo:1"), "{out}");
    let img: serde_json::Value = serde_json::from_str(&run(
        mybuild(&root2).args(["inspect", "example/from-skopeo:1"])
    ))
    .expect("json");
    assert_eq!(img["Config"]["config"]["Env"][0], "PATH=/bin");
    // skopeo writes uncompressed layers; their digest is the config's diff_id.
    assert_eq!(
        img["Manifest"]["layers"][0]["digest"],
        img["Config"]["rootfs"]["diff_ids"][0]
    );
    let fsck = run(mybuild(&root2).arg("fsck"));
    assert!(fsck.contains(": ok"), "{fsck}");
    // Only what the image needs was kept: manifest, config, one layer.
    assert_eq!(blob_files(&root2).len(), 3, "{:?}", blob_files(&root2));
}

#[test]
fn fsck_and_verified_reads_catch_a_corrupted_blob() {
    let Some((_tmp, root)) = store_with_busybox() else {
        return;
    };
    let img: serde_json::Value =
        serde_json::from_str(&run(mybuild(&root).args(["inspect", "busybox"]))).expect("json");
    let layer = img["Manifest"]["layers"][0]["digest"]
        .as_str()
        .expect("layer")
        .to_string();
    let path = root
        .join("blobs/sha256")
        .join(layer.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&path).expect("layer blob");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, &bytes).expect("corrupt");

    let out = mybuild(&root).arg("fsck").output().expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("blob {layer} is corrupt")), "{text}");

    // Saving reads the blob through a verifying reader and must refuse it.
    let err = run_fail(mybuild(&root).args(["save", "-o", "/dev/null", "busybox"]));
    assert!(
        err.contains(&layer) && err.contains("verification"),
        "{err}"
    );
}

#[test]
fn fsck_reports_a_missing_layer() {
    let Some((_tmp, root)) = store_with_busybox() else {
        return;
    };
    let img: serde_json::Value =
        serde_json::from_str(&run(mybuild(&root).args(["inspect", "busybox"]))).expect("json");
    let layer = img["Manifest"]["layers"][0]["digest"]
        .as_str()
        .expect("layer")
        .to_string();
    std::fs::remove_file(
        root.join("blobs/sha256")
            .join(layer.trim_start_matches("sha256:")),
    )
    .expect("rm");
    let out = mybuild(&root).arg("fsck").output().expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("tag busybox:latest: layer {layer} is missing")),
        "{text}"
    );
}

#[test]
fn concurrent_processes_never_lose_a_tag() {
    let Some((_tmp, root)) = store_with_busybox() else {
        return;
    };
    let spawn = |prefix: &'static str| {
        let root = root.clone();
        std::thread::spawn(move || {
            for i in 0..25 {
                run(mybuild(&root).args(["tag", "busybox", &format!("{prefix}:{i}")]));
            }
        })
    };
    let a = spawn("left");
    let b = spawn("right");
    a.join().expect("left writer");
    b.join().expect("right writer");
    let listing = run(mybuild(&root).args(["images", "--format", "{{.Repository}}:{{.Tag}}"]));
    for prefix in ["left", "right"] {
        for i in 0..25 {
            let line = format!("{prefix}:{i}");
            assert!(
                listing.lines().any(|l| l == line),
                "missing {prefix}:{i} in\n{listing}"
            );
        }
    }
    run(mybuild(&root).arg("fsck"));
}

#[test]
fn killed_import_leaves_no_visible_blob_and_prune_cleans_up() {
    let Some((tmp, root)) = store_with_busybox() else {
        return;
    };
    let before = blob_files(&root);
    let mut child = mybuild(&root)
        .args(["import", "-", "half:1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    {
        use std::io::Write;
        let rootfs =
            std::fs::read(testdata::images::busybox_rootfs_file(tmp.path()).expect("rootfs"))
                .expect("read");
        let stdin = child.stdin.as_mut().expect("stdin");
        stdin
            .write_all(&rootfs[..rootfs.len() / 2])
            .expect("half written");
        stdin.flush().expect("flush");
    }
    // Wait until the writer has created its ingest file, then kill it mid-stream.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_dir(root.join("ingest"))
        .expect("ingest")
        .count()
        == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "import never started ingesting"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.kill().expect("kill");
    child.wait().expect("reaped");
    assert_eq!(
        blob_files(&root),
        before,
        "a half-written blob became visible"
    );
    let listing = run(mybuild(&root).arg("images"));
    assert!(!listing.contains("half"), "{listing}");
    let pruned = run(mybuild(&root).arg("prune"));
    assert!(pruned.contains("1 stale ingest files"), "{pruned}");
    assert_eq!(
        std::fs::read_dir(root.join("ingest"))
            .expect("ingest")
            .count(),
        0
    );
    assert!(run(mybuild(&root).arg("fsck")).contains(": ok"));
}

#[test]
fn prune_removes_only_unreachable_blobs() {
    let Some((tmp, root)) = store_with_busybox() else {
        return;
    };
    let before = blob_files(&root);
    // Not a tar: refused with the reason, and nothing is left behind.
    let err = run_fail(
        mybuild(&root)
            .arg("import")
            .arg(testdata::images::busybox_binary().expect("bb"))
            .arg("junk:0"),
    );
    assert!(err.contains("not a valid tar archive"), "{err}");
    assert_eq!(blob_files(&root), before);

    // A second image sharing the layer, with its own config.
    let rootfs = testdata::images::busybox_rootfs_file(tmp.path()).expect("rootfs");
    run(mybuild(&root)
        .arg("import")
        .args(["-c", "ENV X=1"])
        .arg(&rootfs)
        .arg("other:1"));
    assert_eq!(
        blob_files(&root).len(),
        5,
        "shared layer plus two manifests and configs"
    );
    let pruned = run(mybuild(&root).arg("prune"));
    assert!(pruned.starts_with("Deleted 0 blobs"), "{pruned}");

    run(mybuild(&root).args(["rmi", "busybox"]));
    let pruned = run(mybuild(&root).arg("prune"));
    assert!(pruned.starts_with("Deleted 2 blobs"), "{pruned}");
    assert!(run(mybuild(&root).arg("fsck")).contains(": ok"));
    run(mybuild(&root).args(["rmi", "other:1"]));
    let pruned = run(mybuild(&root).arg("prune"));
    assert!(pruned.starts_with("Deleted 3 blobs"), "{pruned}");
    assert!(blob_files(&root).is_empty(), "{:?}", blob_files(&root));
}

#[test]
fn errors_are_one_clear_line() {
    let tmp = TempDir::new().expect("tmp");
    let root = tmp.path().join("s");
    let err = run_fail(mybuild(&root).args(["inspect", "nope:1"]));
    assert_eq!(err.trim(), "error: no such image: nope:1");
    let err = run_fail(mybuild(&root).args(["tag", "nope", "Bad"]));
    assert_eq!(err.trim(), "error: no such image: nope");
    let err = run_fail(mybuild(&root).args(["import", "/definitely/missing.tar", "x"]));
    assert!(
        err.starts_with("error: opening /definitely/missing.tar"),
        "{err}"
    );
}
