//! Published ports (`-p`): the host's 127.0.0.1 reaches a server in the sandbox's
//! private network through the user-mode stack (needs root and slirp4netns).

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use builder::sandbox::{self, Network, Outcome, PortForward, SandboxSpec};
use tempfile::TempDir;

fn exe() -> PathBuf {
    assert_cmd::cargo::cargo_bin("mybuild")
}

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
        hostname: "box".into(),
        network: Network::Private,
        hosts: "127.0.0.1 localhost box\n".into(),
        resolv_conf: format!("nameserver {}\n", sandbox::PRIVATE_DNS),
        mounts: vec![],
        secret_env: vec![],
        insecure: false,
        ports: vec![],
    }
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
    let mut spec = setup(
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
        let outcome = sandbox::run(&exe(), &bundle, &spec, &mut |_, b| out.extend_from_slice(b));
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
    let mut spec = setup(tmp.path(), &["/bin/busybox", "timeout", "30", "/udp-sink"]);
    let src = tmp.path().join("udp-sink.c");
    std::fs::write(&src, UDP_SINK).expect("source");
    let st = Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(spec.lowerdirs[0].join("udp-sink"))
        .arg(&src)
        .status()
        .expect("cc");
    assert!(st.success(), "cc -static: {st}");
    spec.ports = vec![PortForward::parse(&format!("127.0.0.1:{port}:5353/udp")).expect("parse")];
    let bundle = tmp.path().join("bundle");
    let runner = std::thread::spawn(move || {
        let mut out = Vec::new();
        let outcome = sandbox::run(&exe(), &bundle, &spec, &mut |_, b| out.extend_from_slice(b));
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
    let mut spec = setup(tmp.path(), &["/bin/true"]);
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
