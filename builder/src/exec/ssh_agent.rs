//! Agents for `--ssh` ids given key files: the host's `ssh-agent` on a socket in a
//! private temporary directory, loaded with `ssh-add`, for the length of a build.
//! [`ssh`](super::ssh) then forwards its socket like any other agent socket.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// As BuildKit, which reads at most this much of a key file.
const MAX_KEY_FILE: u64 = 100 * 1024;

/// Why an id's agent could not be set up; each names the id it is about.
#[derive(Debug, thiserror::Error)]
pub enum SshAgentError {
    #[error("{}: {source}", path.display())]
    Stat {
        id: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is an agent socket, which must be the only path for its id (give one socket or key files)", path.display())]
    SocketNotAlone { id: String, path: PathBuf },
    #[error("creating a directory for the ssh agent")]
    TempDir { source: std::io::Error },
    #[error("the agent socket {} is too long for a Unix socket; set TMPDIR to a shorter directory", path.display())]
    SocketTooLong { id: String, path: PathBuf },
    #[error("starting sh for ssh-agent")]
    Spawn { id: String, source: std::io::Error },
    #[error("ssh-agent (OpenSSH, which serves --ssh key files) did not start: {reason}")]
    NotStarted { id: String, reason: String },
    #[error("reading {}", path.display())]
    ReadKey {
        id: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is larger than 100 KiB: not a private key", path.display())]
    KeyTooLarge { id: String, path: PathBuf },
    #[error("running ssh-add for {}", path.display())]
    SshAdd {
        id: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is protected by a passphrase, which mybuild cannot ask for (BuildKit refuses such keys too); add it to an ssh-agent with ssh-add and pass the agent's socket", path.display())]
    Passphrase { id: String, path: PathBuf },
    #[error("{} is not a private key ssh-add can load: {reason}", path.display())]
    NotAKey {
        id: String,
        path: PathBuf,
        reason: String,
    },
}

impl SshAgentError {
    /// The `--ssh` id the error is about (`None`: not about one id).
    pub fn id(&self) -> Option<&str> {
        match self {
            SshAgentError::TempDir { .. } => None,
            SshAgentError::Stat { id, .. }
            | SshAgentError::SocketNotAlone { id, .. }
            | SshAgentError::SocketTooLong { id, .. }
            | SshAgentError::Spawn { id, .. }
            | SshAgentError::NotStarted { id, .. }
            | SshAgentError::ReadKey { id, .. }
            | SshAgentError::KeyTooLarge { id, .. }
            | SshAgentError::SshAdd { id, .. }
            | SshAgentError::Passphrase { id, .. }
            | SshAgentError::NotAKey { id, .. } => Some(id),
        }
    }
}

/// The agent socket for each `--ssh` id, and the agents serving key files.
pub struct SshAgents {
    pub sockets: BTreeMap<String, PathBuf>,
    // Dropped after the build: stops the agents and removes their directories.
    _keys: Vec<KeyAgent>,
}

impl SshAgents {
    /// For each id its paths: one agent socket, forwarded as is, or key files,
    /// served by an agent started here.
    pub fn start(wanted: BTreeMap<String, Vec<PathBuf>>) -> Result<SshAgents, SshAgentError> {
        let mut out = SshAgents {
            sockets: BTreeMap::new(),
            _keys: Vec::new(),
        };
        for (id, paths) in wanted {
            let mut keys = Vec::new();
            for p in &paths {
                let md = std::fs::metadata(p).map_err(|source| SshAgentError::Stat {
                    id: id.clone(),
                    path: p.clone(),
                    source,
                })?;
                if md.file_type().is_socket() {
                    // BuildKit refuses a socket with anything else: an agent is forwarded as is.
                    if paths.len() > 1 {
                        return Err(SshAgentError::SocketNotAlone {
                            id,
                            path: p.clone(),
                        });
                    }
                    out.sockets.insert(id.clone(), p.clone());
                } else {
                    keys.push(p.as_path());
                }
            }
            if !keys.is_empty() {
                let agent = KeyAgent::start(&id, &keys)?;
                out.sockets.insert(id, agent.socket.clone());
                out._keys.push(agent);
            }
        }
        Ok(out)
    }
}

/// An `ssh-agent` holding an id's keys for the build. It runs under a small `sh`
/// that waits for its stdin to close, then stops the agent and removes the
/// directory: we close that pipe when dropped, and the kernel closes it when we
/// die any other way (Ctrl-C, SIGTERM, SIGKILL), so no agent or socket outlives
/// the build. (`ssh-agent` is set-gid on Debian, so a parent-death signal would
/// not survive its exec.)
struct KeyAgent {
    socket: PathBuf,
    guard: Child,
    release: Option<ChildStdin>,
    // Removes the directory if the guard could not (it was never started).
    dir: tempfile::TempDir,
}

const GUARD: &str = r#"ssh-agent -D -a "$1" >/dev/null 2>"$2/agent.log" &
agent=$!
read -r _
kill "$agent" 2>/dev/null
wait "$agent"
rm -rf "$2""#;

impl KeyAgent {
    fn start(id: &str, keys: &[&Path]) -> Result<KeyAgent, SshAgentError> {
        // Private to us (0700), under $TMPDIR: socket paths must stay short.
        let dir = tempfile::Builder::new()
            .prefix("mybuild-ssh-")
            .tempdir()
            .map_err(|source| SshAgentError::TempDir { source })?;
        let socket = dir.path().join("agent.sock");
        if socket.as_os_str().len() >= 100 {
            return Err(SshAgentError::SocketTooLong {
                id: id.to_string(),
                path: socket,
            });
        }
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(GUARD)
            .arg("sh")
            .arg(&socket)
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        new_session(&mut cmd);
        let mut guard = cmd.spawn().map_err(|source| SshAgentError::Spawn {
            id: id.to_string(),
            source,
        })?;
        let release = guard.stdin.take();
        let agent = KeyAgent {
            socket,
            guard,
            release,
            dir,
        };
        agent.wait_ready(id)?;
        for key in keys {
            agent.add(id, key)?;
        }
        Ok(agent)
    }

    fn wait_ready(&self, id: &str) -> Result<(), SshAgentError> {
        let log = self.dir.path().join("agent.log");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if UnixStream::connect(&self.socket).is_ok() {
                return Ok(());
            }
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            if !said.trim().is_empty() || Instant::now() > deadline {
                return Err(SshAgentError::NotStarted {
                    id: id.to_string(),
                    reason: if said.trim().is_empty() {
                        "its socket never appeared".to_string()
                    } else {
                        said.trim().to_string()
                    },
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Loads one key through `ssh-add -`, so the file's mode does not matter (as in
    /// BuildKit) and no passphrase can be asked for: no tty, no askpass.
    fn add(&self, id: &str, key: &Path) -> Result<(), SshAgentError> {
        let mut bytes = Vec::new();
        std::fs::File::open(key)
            .and_then(|f| f.take(MAX_KEY_FILE + 1).read_to_end(&mut bytes))
            .map_err(|source| SshAgentError::ReadKey {
                id: id.to_string(),
                path: key.to_path_buf(),
                source,
            })?;
        if bytes.len() as u64 > MAX_KEY_FILE {
            return Err(SshAgentError::KeyTooLarge {
                id: id.to_string(),
                path: key.to_path_buf(),
            });
        }
        let mut cmd = Command::new("ssh-add");
        cmd.args(["-q", "-"])
            .env("SSH_AUTH_SOCK", &self.socket)
            .env_remove("SSH_ASKPASS")
            .env_remove("SSH_ASKPASS_REQUIRE")
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        new_session(&mut cmd);
        let ssh_add = |source| SshAgentError::SshAdd {
            id: id.to_string(),
            path: key.to_path_buf(),
            source,
        };
        let mut child = cmd.spawn().map_err(ssh_add)?;
        if let Some(mut stdin) = child.stdin.take() {
            // A key it rejects early makes this a broken pipe; its status says why.
            let _ = stdin.write_all(&bytes);
        }
        bytes.fill(0);
        let out = child.wait_with_output().map_err(ssh_add)?;
        if out.status.success() {
            return Ok(());
        }
        let said = String::from_utf8_lossy(&out.stderr);
        if said.contains("passphrase") {
            return Err(SshAgentError::Passphrase {
                id: id.to_string(),
                path: key.to_path_buf(),
            });
        }
        let said = said.replace("(stdin)", &key.display().to_string());
        Err(SshAgentError::NotAKey {
            id: id.to_string(),
            path: key.to_path_buf(),
            reason: if said.trim().is_empty() {
                format!("ssh-add {}", out.status)
            } else {
                said.trim().to_string()
            },
        })
    }
}

impl Drop for KeyAgent {
    fn drop(&mut self) {
        // EOF tells the guard to stop the agent; waiting makes its cleanup done.
        drop(self.release.take());
        let _ = self.guard.wait();
    }
}

/// Runs `cmd` in a session of its own: no controlling terminal to prompt on
/// (ssh-add) and no Ctrl-C from it (the guard must outlive us to clean up).
fn new_session(cmd: &mut Command) {
    // SAFETY: setsid is a single async-signal-safe system call, as pre_exec requires.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::setsid()?;
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_path_is_named_with_its_id() {
        let wanted = BTreeMap::from([(
            "default".to_string(),
            vec![PathBuf::from("/nonexistent/id_ed25519")],
        )]);
        let Err(err) = SshAgents::start(wanted) else {
            panic!("a missing key file was accepted");
        };
        assert_eq!(err.id(), Some("default"));
        assert!(
            err.to_string().starts_with("/nonexistent/id_ed25519: "),
            "{err}"
        );
    }
}
