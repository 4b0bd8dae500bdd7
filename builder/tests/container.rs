//! A container's changes and commit against a real busybox image in a store, with
//! an upper directory made as overlay makes one (needs root for whiteouts).

use std::path::{Path, PathBuf};
use std::process::Command;

use builder::container::{self, CommitOptions};
use layer_cache::image::{self, ContainerConfig};
use layer_cache::import::ImportOptions;
use layer_cache::{Digest, ImageRef, Store};
use tempfile::TempDir;

/// A store under `tmp` holding busybox (with `PATH=/bin` in its config).
fn store_with_busybox(tmp: &Path) -> (Store, Digest) {
    let store = Store::open(tmp.join("store")).expect("store");
    let tarball = testdata::images::busybox_rootfs_file(tmp).expect("rootfs");
    let desc = store
        .import_rootfs(
            std::fs::File::open(&tarball).expect("open"),
            &ImageRef::parse("busybox").expect("ref"),
            ImportOptions {
                config: ContainerConfig {
                    env: vec!["PATH=/bin".into()],
                    cmd: Some(vec!["sh".into()]),
                    ..ContainerConfig::default()
                },
                created: image::rfc3339(1_700_000_000),
                source: "busybox".into(),
                layer: Default::default(),
                platform: None,
            },
        )
        .expect("import");
    (store, image::descriptor_digest(&desc).expect("digest"))
}

fn whiteout(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        rustix::fs::makedev(0, 0),
    )
    .expect("mknod 0/0");
}

/// An upper directory as a container leaves it: a new file, a changed one, a
/// removed one, a new tree below an image directory and a replaced directory.
fn make_upper(tmp: &Path) -> PathBuf {
    let upper = tmp.join("upper");
    std::fs::create_dir_all(upper.join("etc")).expect("etc");
    std::fs::write(upper.join("f"), "hello\n").expect("f");
    std::fs::write(upper.join("etc/group"), "root:x:0:\n").expect("group");
    whiteout(&upper.join("etc/passwd"));
    std::fs::create_dir_all(upper.join("tmp/sub")).expect("tmp/sub");
    std::fs::write(upper.join("tmp/sub/g"), "g").expect("g");
    // `/usr` removed and made again: opaque, with one new file.
    std::fs::create_dir_all(upper.join("usr")).expect("usr");
    rustix::fs::lsetxattr(
        upper.join("usr"),
        layer_cache::overlay::namespace().opaque(),
        b"y",
        rustix::fs::XattrFlags::empty(),
    )
    .expect("opaque");
    std::fs::write(upper.join("usr/x"), "x").expect("usr/x");
    upper
}

fn lines(changes: &[container::Change]) -> Vec<String> {
    changes.iter().map(|c| c.to_string()).collect()
}

fn tag(store: &Store, desc: &layer_cache::oci_spec::image::Descriptor, name: &str) {
    store
        .set_tag(&ImageRef::parse(name).expect("ref"), desc)
        .expect("tag");
}

/// Unpacks `name` from the store with umoci; returns the rootfs.
fn unpack(tmp: &Path, store: &Store, name: &str) -> PathBuf {
    let bundle = tmp.join(format!("bundle-{}", name.replace([':', '/'], "-")));
    let out = Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:{name}", store.root().display()))
        .arg(&bundle)
        .output()
        .expect("umoci");
    assert!(
        out.status.success(),
        "umoci unpack: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bundle.join("rootfs")
}

fn skip() -> bool {
    !testdata::require_root()
        || !testdata::require_tool("busybox")
        || !testdata::require_tool("umoci")
}

#[test]
fn diff_lists_changes_as_docker_diff_does() {
    if skip() {
        return;
    }
    let tmp = TempDir::new().expect("tmp");
    let (store, busybox) = store_with_busybox(tmp.path());
    let upper = make_upper(tmp.path());
    let changes = container::changes(&store, &busybox, &upper).expect("changes");
    assert_eq!(
        lines(&changes),
        [
            "C /etc",
            "C /etc/group",
            "D /etc/passwd",
            "A /f",
            "C /tmp",
            "A /tmp/sub",
            "A /tmp/sub/g",
            "D /usr",
            "A /usr/x",
        ]
    );
    // An empty layer has no changes.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).expect("empty");
    assert!(container::changes(&store, &busybox, &empty)
        .expect("changes")
        .is_empty());
}

#[test]
fn an_unchanged_directory_is_listed_only_as_the_parent_of_a_change() {
    if skip() {
        return;
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let tmp = TempDir::new().expect("tmp");
    let (store, busybox) = store_with_busybox(tmp.path());
    let img = container::image_layers(&store, &busybox).expect("image");
    let lower_usr = img.snapshots[0].join("usr");
    let lower_bin = lower_usr.join("bin");
    let upper = tmp.path().join("upper");
    // `/usr` and `/usr/bin` copied up as overlay does (mode, time); a file
    // added in `/usr/bin` changes only that directory.
    std::fs::create_dir_all(upper.join("usr/bin")).expect("dirs");
    std::fs::write(upper.join("usr/bin/new"), "n").expect("new");
    for (dir, lower) in [("usr/bin", &lower_bin), ("usr", &lower_usr)] {
        let md = std::fs::metadata(lower).expect("lower");
        let p = upper.join(dir);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(md.mode() & 0o7777))
            .expect("chmod");
        builder::mtime::set(&p, md.mtime(), md.mtime_nsec()).expect("mtime");
    }
    let same_size = std::fs::metadata(upper.join("usr")).expect("usr").len()
        == std::fs::metadata(&lower_usr).expect("usr").len();
    let got = lines(&container::changes_over(&img.lowerdirs(), &upper).expect("changes"));
    let mut want = vec!["C /usr/bin", "A /usr/bin/new"];
    if !same_size {
        // A filesystem that counts entries in a directory's size sees `/usr` changed.
        want.insert(0, "C /usr");
    }
    assert_eq!(got, want);
}

#[test]
fn commit_makes_an_image_with_the_containers_changes() {
    if skip() {
        return;
    }
    let tmp = TempDir::new().expect("tmp");
    let (store, busybox) = store_with_busybox(tmp.path());
    let upper = make_upper(tmp.path());
    let opts = CommitOptions {
        changes: vec![
            r#"CMD ["x"]"#.into(),
            "ENV A=1".into(),
            "ENV B=$PATH:/usr/bin".into(),
        ],
        message: Some("made by hand".into()),
        author: Some("Ann <ann@example.com>".into()),
        created: Some(1_700_000_100),
        ..CommitOptions::default()
    };
    let desc = container::commit(&store, &busybox, &upper, &opts).expect("commit");
    tag(&store, &desc, "img:2");

    let rootfs = unpack(tmp.path(), &store, "img:2");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("f")).expect("f"),
        "hello\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/group")).expect("group"),
        "root:x:0:\n"
    );
    assert!(
        !rootfs.join("etc/passwd").exists(),
        "whited-out file is gone"
    );
    assert!(
        !rootfs.join("usr/bin").exists(),
        "opaque dir hides the image's"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("usr/x")).expect("x"),
        "x"
    );
    assert!(rootfs.join("bin/busybox").is_file());

    let img = store.load_image(&desc).expect("load");
    let c = img.config.config.as_ref().expect("config");
    assert_eq!(c.cmd, Some(vec!["x".to_string()]));
    assert_eq!(c.env, ["PATH=/bin", "A=1", "B=/bin:/usr/bin"]);
    assert_eq!(img.config.author.as_deref(), Some("Ann <ann@example.com>"));
    assert_eq!(img.config.rootfs.diff_ids.len(), 2);
    assert_eq!(img.manifest.layers().len(), 2);
    let last = img.config.history.last().expect("history");
    // Docker names the command the container ran: the image's here.
    assert_eq!(last.created_by.as_deref(), Some("sh"));
    assert_eq!(last.comment.as_deref(), Some("made by hand"));
    assert!(!last.empty_layer);
    assert_eq!(last.created.as_deref(), Some("2023-11-14T22:15:00Z"));
}

#[test]
fn commit_takes_the_containers_config_and_an_empty_layer() {
    if skip() {
        return;
    }
    let tmp = TempDir::new().expect("tmp");
    let (store, busybox) = store_with_busybox(tmp.path());
    let upper = tmp.path().join("upper");
    std::fs::create_dir(&upper).expect("upper");
    let run_config = ContainerConfig {
        env: vec!["PATH=/bin".into(), "X=1".into()],
        cmd: Some(vec!["sh".into(), "-c".into(), "echo hi > /f".into()]),
        ..ContainerConfig::default()
    };
    let opts = CommitOptions {
        config: Some(run_config),
        changes: vec!["ENTRYPOINT [\"/bin/sh\"]".into(), "WORKDIR /app".into()],
        ..CommitOptions::default()
    };
    let desc = container::commit(&store, &busybox, &upper, &opts).expect("commit");
    let img = store.load_image(&desc).expect("load");
    let before = container::image_layers(&store, &busybox).expect("busybox");
    assert_eq!(img.manifest.layers(), &before.layers, "no new layer");
    assert_ne!(img.manifest_digest, busybox, "a new image all the same");
    let last = img.config.history.last().expect("history");
    assert!(last.empty_layer);
    assert_eq!(last.created_by.as_deref(), Some("sh -c echo hi > /f"));
    assert_eq!(last.comment, None);
    let c = img.config.config.as_ref().expect("config");
    assert_eq!(c.env, ["PATH=/bin", "X=1"]);
    assert_eq!(c.entrypoint, Some(vec!["/bin/sh".to_string()]));
    // ENTRYPOINT clears a CMD no earlier change set, as in Docker.
    assert_eq!(c.cmd, None);
    assert_eq!(c.working_dir.as_deref(), Some("/app"));
    assert_eq!(img.config.author, None);
    tag(&store, &desc, "img:3");
    let rootfs = unpack(tmp.path(), &store, "img:3");
    assert!(rootfs.join("etc/passwd").is_file());
}

#[test]
fn commit_refuses_instructions_docker_commit_refuses_before_writing() {
    if skip() {
        return;
    }
    let tmp = TempDir::new().expect("tmp");
    let (store, busybox) = store_with_busybox(tmp.path());
    let upper = make_upper(tmp.path());
    let blobs_before = store.list_blobs().expect("blobs").len();
    for (line, word) in [
        ("RUN x", "RUN"),
        ("COPY a b", "COPY"),
        ("FROM busybox", "FROM"),
    ] {
        let opts = CommitOptions {
            changes: vec![line.into()],
            ..CommitOptions::default()
        };
        let err = container::commit(&store, &busybox, &upper, &opts)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("{line:?}: {word} is not supported")),
            "{err}"
        );
    }
    assert_eq!(store.list_blobs().expect("blobs").len(), blobs_before);
    let missing = tmp.path().join("nope");
    let err = container::commit(&store, &busybox, &missing, &CommitOptions::default())
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!("container layer {}: not a directory", missing.display())
    );
}
