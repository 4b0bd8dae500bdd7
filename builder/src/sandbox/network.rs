//! `--network=default`: the step's private network namespace gets a `tap0` with
//! 10.0.2.100/24, a default route through 10.0.2.2 and a DNS forwarder at 10.0.2.3,
//! all served by slirp4netns, a user-mode TCP/IP stack that makes ordinary sockets
//! on the host for the step's connections.
//!
//! Why slirp4netns rather than pasta: its options have been stable since 1.0 (the
//! pasta packaged in Debian 12 is a 2023 snapshot whose loopback options were renamed
//! since), `--exit-fd` ties its life to a pipe held by mybuild, so it ends with the
//! step on every path, SIGKILL of mybuild included, and `--ready-fd` says when the
//! interface is configured. `--disable-host-loopback` keeps the host's 127.0.0.1
//! services out of reach; `--enable-sandbox` and `--enable-seccomp` confine the stack
//! itself.
//!
//! Published ports (`-p`, [`PortForward`]) are forwarded by the same stack: with
//! any requested, it is started with `--api-socket` and, once ready, asked for
//! one `add_hostfwd` per port before the command starts. The stack listens on the
//! host's address and connects to the namespace's `10.0.2.100`. A UDP port
//! delivers datagrams into the namespace, but the stack drops the replies to a
//! sender on the host's loopback: with `--disable-host-loopback` it cannot tell
//! them from the namespace reaching the host's 127.0.0.1 (libslirp's
//! `sotranslate_out`), and that stays closed.

use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::SandboxError;

const STACK: &str = "slirp4netns";
/// How long the stack may take to configure the interface.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// slirp4netns on `PATH`.
pub fn find_stack() -> Result<PathBuf, SandboxError> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(STACK))
        .find(|p| p.is_file())
        .ok_or(SandboxError::StackMissing)
}

/// The transport a published port forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// One published port, Docker's `-p [IP:]HOST:CONTAINER[/PROTO]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortForward {
    /// The host address listened on; Docker's default is every address.
    pub host_ip: Ipv4Addr,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

/// Why a `-p` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid port mapping {spec:?}: {why}")]
pub struct PortError {
    pub spec: String,
    pub why: String,
}

impl PortForward {
    /// Parses Docker's `-p` syntax: `HOST:CONTAINER`, `IP:HOST:CONTAINER`, each with
    /// an optional `/tcp` or `/udp`. Refused: a container port alone (the host
    /// port would be chosen at random and go unreported), ranges, IPv6 addresses
    /// and `sctp`, which the user-mode stack cannot forward.
    pub fn parse(spec: &str) -> Result<PortForward, PortError> {
        let err = |why: &str| PortError {
            spec: spec.to_string(),
            why: why.to_string(),
        };
        let (addr, proto) = match spec.rsplit_once('/') {
            Some((a, p)) => (a, p),
            None => (spec, "tcp"),
        };
        let protocol = match proto.to_ascii_lowercase().as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "sctp" => {
                return Err(err(
                    "sctp cannot be forwarded by the user-mode network stack",
                ))
            }
            _ => return Err(err("the protocol must be tcp or udp")),
        };
        if addr.starts_with('[') || addr.matches(':').count() > 2 {
            return Err(err("IPv6 host addresses are not supported"));
        }
        let parts: Vec<&str> = addr.split(':').collect();
        let (ip, host, container) = match parts.as_slice() {
            [_] => return Err(err("a host port is needed (HOST:CONTAINER)")),
            [h, c] => ("", *h, *c),
            [i, h, c] => (*i, *h, *c),
            _ => return Err(err("too many colons")),
        };
        let host_ip = if ip.is_empty() {
            Ipv4Addr::UNSPECIFIED
        } else {
            ip.parse()
                .map_err(|_| err(&format!("{ip:?} is not an IPv4 address")))?
        };
        let port = |p: &str, which: &str| -> Result<u16, PortError> {
            if p.contains('-') {
                return Err(err("port ranges are not supported"));
            }
            match p.parse::<u16>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(err(&format!(
                    "{which} port {p:?} is not a number from 1 to 65535"
                ))),
            }
        };
        let host_port = if host.is_empty() {
            return Err(err("a host port is needed (HOST:CONTAINER)"));
        } else {
            port(host, "host")?
        };
        Ok(PortForward {
            host_ip,
            host_port,
            container_port: port(container, "container")?,
            protocol,
        })
    }
}

impl fmt::Display for PortForward {
    /// As `docker ps` shows a published port: `0.0.0.0:8080->80/tcp`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}->{}/{}",
            self.host_ip,
            self.host_port,
            self.container_port,
            self.protocol.as_str()
        )
    }
}

/// The address the stack gives the namespace's interface (`--configure`).
const GUEST_ADDR: &str = "10.0.2.100";
/// How long the API socket may take to accept after the stack said ready.
const API_WITHIN: Duration = Duration::from_secs(2);

/// A running stack serving one sandbox's network namespace; stopped on drop.
pub struct Stack {
    child: Child,
    /// While this end is open the stack runs; closing it (or mybuild dying) ends it.
    _exit: OwnedFd,
    /// Holds the API socket, when ports are published.
    _api_dir: Option<tempfile::TempDir>,
}

fn pipe() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| SandboxError::Stack(format!("pipe: {e}")))
}

impl Stack {
    /// Starts the stack for the network namespace of process `pid` and waits until
    /// its interface is configured. Its messages go to `bundle/network.log`.
    /// `ports` are forwarded from the host before this returns.
    pub fn start(
        exe: &Path,
        pid: u32,
        bundle: &Path,
        ports: &[PortForward],
    ) -> Result<Stack, SandboxError> {
        let (exit_r, exit_w) = pipe()?;
        let (ready_r, ready_w) = pipe()?;
        let log_path = bundle.join("network.log");
        let log = File::create(&log_path).map_err(|source| SandboxError::Io {
            path: log_path.clone(),
            source,
        })?;
        let log_err = log.try_clone().map_err(|source| SandboxError::Io {
            path: log_path.clone(),
            source,
        })?;
        let (exit_fd, ready_fd) = (exit_r.as_raw_fd(), ready_w.as_raw_fd());
        // The socket's path must fit in sun_path (108 bytes), which a bundle deep in
        // the store may not: a private directory under the temp dir holds it.
        let api_dir = if ports.is_empty() {
            None
        } else {
            Some(
                tempfile::Builder::new()
                    .prefix("mybuild-net-")
                    .tempdir()
                    .map_err(|source| SandboxError::Io {
                        path: std::env::temp_dir(),
                        source,
                    })?,
            )
        };
        let api_socket = api_dir.as_ref().map(|d| d.path().join("api.sock"));
        let mut cmd = Command::new(exe);
        if let Some(sock) = &api_socket {
            cmd.arg(format!("--api-socket={}", sock.display()));
        }
        cmd.args([
            "--configure",
            "--mtu=65520",
            "--disable-host-loopback",
            "--enable-sandbox",
            "--enable-seccomp",
            "--exit-fd=3",
            "--ready-fd=4",
        ])
        .arg(pid.to_string())
        .arg("tap0")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                // Move both ends above 3 and 4 first so neither dup2 clobbers the other;
                // dup2 clears close-on-exec on 3 and 4.
                let e = libc::fcntl(exit_fd, libc::F_DUPFD_CLOEXEC, 10);
                let r = libc::fcntl(ready_fd, libc::F_DUPFD_CLOEXEC, 10);
                if e < 0 || r < 0 || libc::dup2(e, 3) < 0 || libc::dup2(r, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|source| SandboxError::Spawn {
            exe: exe.to_path_buf(),
            source,
        })?;
        drop(exit_r);
        drop(ready_w);
        let mut stack = Stack {
            child,
            _exit: exit_w,
            _api_dir: api_dir,
        };
        let ready = wait_ready(&ready_r);
        if let (Ok(()), Some(sock)) = (&ready, &api_socket) {
            for p in ports {
                if let Err(why) = add_hostfwd(sock, p) {
                    stack.stop();
                    return Err(SandboxError::Port {
                        port: p.to_string(),
                        why,
                    });
                }
            }
        }
        if let Err(why) = ready {
            stack.stop();
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let detail = log
                .lines()
                .filter(|l| !l.starts_with("WARNING: Support for seccomp"))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(SandboxError::Stack(if detail.is_empty() {
                why
            } else {
                format!("{why}: {detail}")
            }));
        }
        Ok(stack)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads the stack's ready byte, at most [`READY_WITHIN`].
fn wait_ready(fd: &OwnedFd) -> Result<(), String> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(fd, PollFlags::IN)];
    let timeout = Timespec {
        tv_sec: READY_WITHIN.as_secs() as i64,
        tv_nsec: 0,
    };
    match poll(&mut fds, Some(&timeout)) {
        Ok(0) => return Err(format!("not ready within {}s", READY_WITHIN.as_secs())),
        Ok(_) => {}
        Err(e) => return Err(format!("waiting for it: {e}")),
    }
    let mut byte = [0u8; 1];
    match rustix::io::read(fd, &mut byte) {
        Ok(1) if byte[0] == b'1' => Ok(()),
        Ok(_) => Err("it exited before configuring the interface".into()),
        Err(e) => Err(format!("reading its ready signal: {e}")),
    }
}

/// Asks the stack, through its API socket, to forward `port`. The request is one
/// JSON object, the write side is then shut, and the answer is `{"return": ...}`
/// or `{"error": {"desc": ...}}`.
fn add_hostfwd(socket: &Path, port: &PortForward) -> Result<(), String> {
    let deadline = Instant::now() + API_WITHIN;
    let mut conn = loop {
        match UnixStream::connect(socket) {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("connecting to the stack's API socket: {e}")),
        }
    };
    let request = serde_json::json!({
        "execute": "add_hostfwd",
        "arguments": {
            "proto": port.protocol.as_str(),
            "host_addr": port.host_ip.to_string(),
            "host_port": port.host_port,
            "guest_addr": GUEST_ADDR,
            "guest_port": port.container_port,
        }
    });
    let _ = conn.set_read_timeout(Some(READY_WITHIN));
    conn.write_all(request.to_string().as_bytes())
        .and_then(|_| conn.shutdown(std::net::Shutdown::Write))
        .map_err(|e| format!("writing to the stack's API socket: {e}"))?;
    let mut answer = String::new();
    conn.take(64 * 1024)
        .read_to_string(&mut answer)
        .map_err(|e| format!("reading the stack's answer: {e}"))?;
    let value: serde_json::Value = serde_json::from_str(answer.trim())
        .map_err(|_| format!("unexpected answer from the stack: {:?}", answer.trim()))?;
    if value.get("return").is_some() {
        return Ok(());
    }
    match value.pointer("/error/desc").and_then(|d| d.as_str()) {
        Some(desc) => Err(desc.to_string()),
        None => Err(format!(
            "unexpected answer from the stack: {}",
            answer.trim()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(spec: &str) -> String {
        PortForward::parse(spec).unwrap().to_string()
    }

    fn refused(spec: &str) -> String {
        PortForward::parse(spec).unwrap_err().to_string()
    }

    #[test]
    fn parses_dockers_publish_syntax() {
        assert_eq!(ok("8080:80"), "0.0.0.0:8080->80/tcp");
        assert_eq!(ok("127.0.0.1:8080:80"), "127.0.0.1:8080->80/tcp");
        assert_eq!(ok("0.0.0.0:53:53/udp"), "0.0.0.0:53->53/udp");
        assert_eq!(ok("5353:53/UDP"), "0.0.0.0:5353->53/udp");
        assert_eq!(ok(":8080:80/tcp"), "0.0.0.0:8080->80/tcp");
        assert_eq!(
            PortForward::parse("127.0.0.1:1:65535/udp").unwrap(),
            PortForward {
                host_ip: Ipv4Addr::LOCALHOST,
                host_port: 1,
                container_port: 65535,
                protocol: Protocol::Udp,
            }
        );
    }

    #[test]
    fn refuses_what_it_cannot_forward_by_name() {
        assert_eq!(
            refused("80"),
            r#"invalid port mapping "80": a host port is needed (HOST:CONTAINER)"#
        );
        assert!(refused("8080-8081:80-81").contains("port ranges are not supported"));
        assert!(refused("[::1]:8080:80").contains("IPv6"));
        assert!(refused("8080:80/sctp").contains("sctp cannot be forwarded"));
        assert!(refused("8080:80/icmp").contains("tcp or udp"));
        assert!(refused("localhost:8080:80").contains(r#""localhost" is not an IPv4 address"#));
        assert!(refused("0:80").contains(r#"host port "0" is not a number from 1 to 65535"#));
        assert!(refused("8080:70000").contains("container port"));
        assert!(refused("a:b:c:d").contains("IPv6"));
    }
}
