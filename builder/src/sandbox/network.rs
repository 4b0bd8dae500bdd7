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

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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

/// A running stack serving one sandbox's network namespace; stopped on drop.
pub struct Stack {
    child: Child,
    /// While this end is open the stack runs; closing it (or mybuild dying) ends it.
    _exit: OwnedFd,
}

fn pipe() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| SandboxError::Stack(format!("pipe: {e}")))
}

impl Stack {
    /// Starts the stack for the network namespace of process `pid` and waits until
    /// its interface is configured. Its messages go to `bundle/network.log`.
    pub fn start(exe: &Path, pid: u32, bundle: &Path) -> Result<Stack, SandboxError> {
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
        let mut cmd = Command::new(exe);
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
        };
        if let Err(why) = wait_ready(&ready_r) {
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
