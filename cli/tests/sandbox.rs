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

/// Published ports (`-p`): the host's 127.0.0.1 reaches a server in the sandbox's
/// private network through the user-mode stack (needs root and slirp4netns).
mod ports {
    use super::*;
    use builder::sandbox::PortForward;
    use std::io::Read;
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    /// The spec of [`setup`] on the private network.
    fn private(tmp: &Path, args: &[&str]) -> SandboxSpec {
        let mut spec = setup(tmp, args);
        spec.network = Network::Private;
        spec.resolv_conf = format!("nameserver {}\n", sandbox::PRIVATE_DNS);
        spec
    }

    fn skip() -> bool {
        !testdata::require_root()
            || !testdata::require_tool("busybox")
            || !testdata::require_tool("slirp4netns")
    }

    /// Connects until the server in the sandbox answers (the stack accepts at once
    /// and drops the connection while nothing listens inside yet).
    fn read_reply(port: u16) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut reply = String::new();
                let _ = s.read_to_string(&mut reply);
                if !reply.is_empty() {
                    return reply;
                }
            }
            assert!(Instant::now() < deadline, "no reply on 127.0.0.1:{port}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn a_published_port_reaches_a_server_in_the_sandbox() {
        if skip() {
            return;
        }
        let tmp = TempDir::new().expect("tmp");
        let port = testdata::registry::free_port();
        // One connection served, then the command ends; `timeout` bounds a failure.
        let mut spec = private(
            tmp.path(),
            &[
                "/bin/busybox",
                "timeout",
                "30",
                "/bin/busybox",
                "nc",
                "-l",
                "-p",
                "8080",
                "-e",
                "/bin/echo",
                "hello",
            ],
        );
        spec.ports = vec![PortForward::parse(&format!("127.0.0.1:{port}:8080")).expect("parse")];
        let bundle = tmp.path().join("bundle");
        let runner = std::thread::spawn(move || {
            let mut out = Vec::new();
            let outcome =
                sandbox::run(&exe(), &bundle, &spec, &mut |_, b| out.extend_from_slice(b));
            (outcome, String::from_utf8_lossy(&out).into_owned())
        });
        assert_eq!(read_reply(port), "hello\n");
        let (outcome, out) = runner.join().expect("runner");
        assert_eq!(outcome.expect("sandbox runs"), Outcome::Exited(0), "{out}");
        // The forward ended with the sandbox.
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    }

    /// A static program that prints the first UDP datagram on port 5353 after `got `
    /// (busybox's nc has no UDP).
    const UDP_SINK: &str = r#"
    #include <netinet/in.h>
    #include <sys/socket.h>
    #include <unistd.h>
    int main(void) {
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        struct sockaddr_in a = {0};
        a.sin_family = AF_INET;
        a.sin_port = htons(5353);
        if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) != 0) return 2;
        char buf[512] = "got ";
        ssize_t n = recv(s, buf + 4, sizeof buf - 5, 0);
        if (n < 0) return 3;
        buf[n + 4] = '\n';
        return write(1, buf, n + 5) == n + 5 ? 0 : 4;
    }
    "#;

    /// Datagrams reach the container. Its replies to a sender on the host's loopback
    /// are dropped by slirp4netns's `--disable-host-loopback` (the stack cannot tell
    /// them from the container reaching the host's 127.0.0.1), so only the inbound
    /// direction is checked.
    #[test]
    fn a_udp_port_delivers_datagrams_into_the_sandbox() {
        if skip() || !testdata::require_tool("cc") {
            return;
        }
        let tmp = TempDir::new().expect("tmp");
        let port = testdata::registry::free_port();
        let mut spec = private(tmp.path(), &["/bin/busybox", "timeout", "30", "/udp-sink"]);
        let src = tmp.path().join("udp-sink.c");
        std::fs::write(&src, UDP_SINK).expect("source");
        let st = Command::new("cc")
            .args(["-static", "-O2", "-o"])
            .arg(spec.lowerdirs[0].join("udp-sink"))
            .arg(&src)
            .status()
            .expect("cc");
        assert!(st.success(), "cc -static: {st}");
        spec.ports =
            vec![PortForward::parse(&format!("127.0.0.1:{port}:5353/udp")).expect("parse")];
        let bundle = tmp.path().join("bundle");
        let runner = std::thread::spawn(move || {
            let mut out = Vec::new();
            let outcome =
                sandbox::run(&exe(), &bundle, &spec, &mut |_, b| out.extend_from_slice(b));
            (outcome, String::from_utf8_lossy(&out).into_owned())
        });
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !runner.is_finished() && Instant::now() < deadline {
            sock.send_to(b"ping", ("127.0.0.1", port)).expect("send");
            std::thread::sleep(Duration::from_millis(50));
        }
        let (outcome, out) = runner.join().expect("runner");
        assert_eq!(outcome.expect("sandbox runs"), Outcome::Exited(0), "{out}");
        assert_eq!(out, "got ping\n");
    }

    #[test]
    fn ports_are_refused_without_the_private_network_and_when_taken() {
        if skip() {
            return;
        }
        let tmp = TempDir::new().expect("tmp");
        let mut spec = private(tmp.path(), &["/bin/true"]);
        spec.ports = vec![PortForward::parse("127.0.0.1:18080:80").expect("parse")];
        for (network, text) in [
            (
                Network::Host,
                "published ports (-p) need the default network: --network=host already uses the \
                 host's ports",
            ),
            (
                Network::None,
                "published ports (-p) need the default network: --network=none has no network to \
                 publish on",
            ),
        ] {
            spec.network = network;
            let err = sandbox::run(&exe(), &tmp.path().join("bundle"), &spec, &mut |_, _| {})
                .unwrap_err()
                .to_string();
            assert_eq!(err, text);
        }
        // A host port another program holds.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = taken.local_addr().expect("addr").port();
        spec.network = Network::Private;
        spec.ports = vec![PortForward::parse(&format!("127.0.0.1:{port}:80")).expect("parse")];
        let err = sandbox::run(&exe(), &tmp.path().join("bundle"), &spec, &mut |_, _| {})
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("publishing port 127.0.0.1:{port}->80/tcp: ")),
            "{err}"
        );
    }
}
