//! A container's layer as the sandbox really writes it: a command runs on a stored
//! busybox image, then its upper directory is diffed and committed (needs root).

use std::path::Path;
use std::process::Command;

use builder::container::{self, CommitOptions};
use builder::sandbox::{self, Network, Outcome, SandboxSpec};
use layer_cache::image::{self, ContainerConfig};
use layer_cache::import::ImportOptions;
use layer_cache::{ImageRef, Store};
use tempfile::TempDir;

fn skip() -> bool {
    !testdata::require_root()
        || !testdata::require_tool("busybox")
        || !testdata::require_tool("umoci")
}

fn spec(tmp: &Path, lowerdirs: Vec<std::path::PathBuf>, script: &str) -> SandboxSpec {
    for d in ["upper", "work", "bundle"] {
        std::fs::create_dir_all(tmp.join(d)).expect("dir");
    }
    SandboxSpec {
        lowerdirs,
        upperdir: tmp.join("upper"),
        workdir: tmp.join("work"),
        rootfs: tmp.join("bundle/rootfs"),
        args: vec!["/bin/sh".into(), "-c".into(), script.into()],
        env: vec!["PATH=/bin".into(), "HOME=/root".into()],
        cwd: "/".into(),
        uid: 0,
        gid: 0,
        additional_gids: vec![],
        hostname: "c1".into(),
        network: Network::None,
        hosts: "127.0.0.1 localhost c1\n".into(),
        resolv_conf: String::new(),
        mounts: vec![],
        secret_env: vec![],
        insecure: false,
        ports: vec![],
    }
}

#[test]
fn a_run_containers_layer_diffs_and_commits() {
    if skip() {
        return;
    }
    let tmp = TempDir::new().expect("tmp");
    let store = Store::open(tmp.path().join("store")).expect("store");
    let tarball = testdata::images::busybox_rootfs_file(tmp.path()).expect("rootfs");
    let busybox = store
        .import_rootfs(
            std::fs::File::open(&tarball).expect("open"),
            &ImageRef::parse("busybox").expect("ref"),
            ImportOptions {
                config: ContainerConfig {
                    env: vec!["PATH=/bin".into()],
                    ..ContainerConfig::default()
                },
                created: image::rfc3339(1_700_000_000),
                source: "busybox".into(),
                layer: Default::default(),
                platform: None,
            },
        )
        .expect("import");
    let busybox = image::descriptor_digest(&busybox).expect("digest");
    let img = container::image_layers(&store, &busybox).expect("layers");
    let script = "echo hi > /f && rm /etc/passwd && mkdir /tmp/a && rm -rf /usr && mkdir /usr \
                  && touch /usr/n";
    let spec = spec(tmp.path(), img.lowerdirs(), script);
    let mut out = Vec::new();
    let outcome = sandbox::run(
        &assert_cmd::cargo::cargo_bin("mybuild"),
        &tmp.path().join("bundle"),
        &spec,
        &mut |_, b| out.extend_from_slice(b),
    )
    .expect("run");
    assert_eq!(
        outcome,
        Outcome::Exited(0),
        "{}",
        String::from_utf8_lossy(&out)
    );

    let changes: Vec<String> = container::changes(&store, &busybox, &spec.upperdir)
        .expect("diff")
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(
        changes,
        [
            "C /etc",
            "D /etc/passwd",
            "A /f",
            "C /tmp",
            "A /tmp/a",
            "D /usr",
            "A /usr/n"
        ]
    );

    let desc = container::commit(&store, &busybox, &spec.upperdir, &CommitOptions::default())
        .expect("commit");
    store
        .set_tag(&ImageRef::parse("img:2").expect("ref"), &desc)
        .expect("tag");
    let bundle = tmp.path().join("unpacked");
    let st = Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:img:2", store.root().display()))
        .arg(&bundle)
        .status()
        .expect("umoci");
    assert!(st.success());
    let rootfs = bundle.join("rootfs");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("f")).expect("f"),
        "hi\n"
    );
    assert!(!rootfs.join("etc/passwd").exists());
    assert!(rootfs.join("etc/group").is_file());
    assert!(rootfs.join("usr/n").is_file() && !rootfs.join("usr/bin").exists());
    assert!(rootfs.join("tmp/a").is_dir());
}
