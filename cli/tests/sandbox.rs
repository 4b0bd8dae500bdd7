//! The RUN sandbox in real namespaces on a real overlayfs (needs root).

use std::path::{Path, PathBuf};
use std::process::Command;

use builder::sandbox::{self, Mount, MountKind, Network, Outcome, SandboxSpec, Stream};
use tempfile::TempDir;

fn exe() -> PathBuf {
    assert_cmd::cargo::cargo_bin("mybuild")
}

/// A busybox rootfs unpacked into `dir/lower`, plus the spec for a run on it.
fn setup(tmp: &Path, args: &[&str]) -> SandboxSpec {
    let lower = tmp.join("lower");
    std::fs::create_dir_all(&lower).expect("lower");
    let tarball = testdata::images::busybox_rootfs_file(tmp).expect("rootfs");
    let st = Command::new("tar")
        .arg("-xf")
        .arg(&tarball)
        .arg("-C")
        .arg(&lower)
        .status()
        .expect("tar");
    assert!(st.success());
    for d in ["upper", "work", "bundle"] {
        std::fs::create_dir_all(tmp.join(d)).expect("dir");
    }
    SandboxSpec {
        lowerdirs: vec![lower],
        upperdir: tmp.join("upper"),
        workdir: tmp.join("work"),
        rootfs: tmp.join("bundle/rootfs"),
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec!["PATH=/bin".into(), "HOME=/root".into()],
        cwd: "/".into(),
        uid: 0,
        gid: 0,
        additional_gids: vec![],
        hostname: "buildbox".into(),
        network: Network::Host,
        hosts: "127.0.0.1 localhost buildbox\n".into(),
        resolv_conf: "nameserver 127.0.0.1\n".into(),
        mounts: vec![],
        secret_env: vec![],
        insecure: false,
        ports: vec![],
    }
}

fn run(tmp: &Path, spec: &SandboxSpec) -> (Outcome, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let outcome = sandbox::run(&exe(), &tmp.join("bundle"), spec, &mut |s, b| match s {
        Stream::Stdout => out.extend_from_slice(b),
        Stream::Stderr => err.extend_from_slice(b),
    })
    .expect("sandbox runs");
    (
        outcome,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

fn mountinfo() -> String {
    std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo")
}

#[test]
fn runs_in_its_own_namespaces_and_changes_land_in_the_upperdir() {
    if !testdata::require_root() || !testdata::require_tool("busybox") {
        return;
    }
    let tmp = TempDir::new().expect("tmp");
    let marker = tmp.path().join("host-marker");
    std::fs::write(&marker, "secret").expect("marker");
    let script = format!(
        "echo pid=$$ ppid=$PPID; hostname; cat {} 2>&1; echo made > /made.txt; rm /etc/passwd; echo err >&2; exit 3",
        marker.display()
    );
    let spec = setup(tmp.path(), &["/bin/sh", "-c", &script]);
    let before = mountinfo();
    let (outcome, out, err) = run(tmp.path(), &spec);
    assert_eq!(outcome, Outcome::Exited(3), "{out}{err}");
    assert!(out.starts_with("pid=2 ppid=1\nbuildbox\n"), "{out}");
    assert!(
        out.contains("No such file or directory"),
        "host file visible: {out}"
    );
    assert_eq!(err, "err\n");
    let upper = tmp.path().join("upper");
    assert_eq!(
        std::fs::read_to_string(upper.join("made.txt")).expect("made"),
        "made\n"
    );
    // The deleted file is an overlay whiteout (char device 0/0) in the upperdir.
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let wh = std::fs::symlink_metadata(upper.join("etc/passwd")).expect("whiteout");
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    assert_eq!(mountinfo(), before, "mounts leaked onto the host");
}

#[test]
fn network_none_has_only_loopback_and_proc_dev_work() {
    if !testdata::require_root() || !testdata::require_tool("busybox") {
        return;
    }
    let tmp = TempDir::new().expect("tmp");
    let mut spec = setup(
        tmp.path(),
        &["/bin/sh", "-c", "ls /sys/class/net; echo x > /dev/null; head -c 4 /dev/zero | wc -c; cat /etc/hosts; ps -o pid | wc -l"],
    );
    spec.network = Network::None;
    let (outcome, out, err) = run(tmp.path(), &spec);
    assert_eq!(outcome, Outcome::Exited(0), "{out}{err}");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("lo"), "{out}");
    assert_eq!(lines.next(), Some("4"), "{out}");
    assert_eq!(lines.next(), Some("127.0.0.1 localhost buildbox"), "{out}");
}

#[test]
fn user_workdir_and_mounts_are_applied() {
    if !testdata::require_root() || !testdata::require_tool("busybox") {
        return;
    }
    let tmp = TempDir::new().expect("tmp");
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).expect("ctx");
    std::fs::write(ctx.join("in.txt"), "from context\n").expect("in");
    let mut spec = setup(
        tmp.path(),
        &["sh", "-c", "id -u; id -g; pwd; cat /src/in.txt; touch /src/x 2>/dev/null || echo readonly; echo t > /scratch/t && cat /scratch/t"],
    );
    spec.uid = 1000;
    spec.gid = 1000;
    spec.cwd = "/work/dir".into();
    spec.mounts = vec![
        Mount {
            target: "/src".into(),
            kind: MountKind::Bind {
                source: ctx.clone(),
                readonly: true,
            },
        },
        Mount {
            target: "/scratch".into(),
            kind: MountKind::Tmpfs { size: None },
        },
    ];
    let (outcome, out, err) = run(tmp.path(), &spec);
    assert_eq!(outcome, Outcome::Exited(0), "{out}{err}");
    assert_eq!(out, "1000\n1000\n/work/dir\nfrom context\nreadonly\nt\n");
    assert!(
        tmp.path().join("upper/work/dir").is_dir(),
        "WORKDIR is part of the layer"
    );
    assert!(!ctx.join("x").exists());
}

#[test]
fn exec_failures_and_setup_failures_are_reported() {
    if !testdata::require_root() || !testdata::require_tool("busybox") {
        return;
    }
    let tmp = TempDir::new().expect("tmp");
    let spec = setup(tmp.path(), &["/no/such/program"]);
    let (outcome, _out, err) = run(tmp.path(), &spec);
    assert_eq!(outcome, Outcome::Exited(sandbox::EXEC_FAILED));
    assert!(
        err.contains("exec /no/such/program: No such file or directory"),
        "{err}"
    );

    let mut bad = spec.clone();
    bad.lowerdirs = vec![tmp.path().join("missing-lower")];
    let e = sandbox::run(&exe(), &tmp.path().join("bundle"), &bad, &mut |_, _| {}).unwrap_err();
    assert!(e.to_string().contains("mount overlay"), "{e}");
}

#[test]
fn upperdir_diff_becomes_an_oci_layer() {
    if !testdata::require_root() || !testdata::require_tool("busybox") {
        return;
    }
    let tmp = TempDir::new().expect("tmp");
    let spec = setup(
        tmp.path(),
        &[
            "/bin/sh",
            "-c",
            "rm /etc/group; rm -rf /usr/bin && mkdir /usr/bin && echo new > /usr/bin/tool; \
             mkdir -p /app && echo data > /app/a && ln /app/a /app/b && ln -s a /app/c && chmod 4755 /app/a",
        ],
    );
    let (outcome, out, err) = run(tmp.path(), &spec);
    assert_eq!(outcome, Outcome::Exited(0), "{out}{err}");
    // The sandbox's own mount points and /etc files already exist in busybox's tree,
    // so only the step's changes are in the upperdir.
    let mut tar = Vec::new();
    builder::layer::diff::write_upperdir(&tmp.path().join("upper"), &mut tar, &Default::default())
        .expect("diff");
    let mut archive = tar::Archive::new(&tar[..]);
    let mut seen = Vec::new();
    for e in archive.entries().expect("entries") {
        let mut e = e.expect("entry");
        let path = e.path().expect("path").display().to_string();
        let kind = e.header().entry_type();
        let mut body = String::new();
        if kind.is_file() {
            std::io::Read::read_to_string(&mut e, &mut body).expect("body");
        }
        let link = e
            .link_name()
            .expect("link")
            .map(|l| l.display().to_string());
        seen.push((
            path,
            format!("{kind:?}"),
            body,
            link,
            e.header().mode().expect("mode"),
        ));
    }
    let names: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "app/",
            "app/a",
            "app/b",
            "app/c",
            "etc/",
            "etc/.wh.group",
            "usr/",
            "usr/bin/",
            "usr/bin/.wh..wh..opq",
            "usr/bin/tool"
        ],
        "{seen:?}"
    );
    let get = |n: &str| seen.iter().find(|s| s.0 == n).expect(n);
    assert_eq!(get("app/a").2, "data\n");
    assert_eq!(get("app/a").4, 0o4755);
    assert_eq!(get("app/b").1, "Link");
    assert_eq!(get("app/b").3.as_deref(), Some("app/a"));
    assert_eq!(get("app/c").1, "Symlink");
    assert_eq!(get("app/c").3.as_deref(), Some("a"));
    assert_eq!(get("usr/bin/tool").2, "new\n");
}
