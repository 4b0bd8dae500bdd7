//! `--ssh default|ID[=SOCKET|KEY[,KEY...]]` (docker buildx's syntax) for
//! `RUN --mount=type=ssh`, checked and set up before the build starts.
//!
//! An id given key files gets an agent of its own for the build: the host's
//! `ssh-agent` on a socket in a private temporary directory, loaded with `ssh-add`.
//! The builder then forwards its socket like any other agent socket.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The agent socket for each `--ssh` id, and the agents serving key files.
pub struct SshAgents {
    pub sockets: BTreeMap<String, PathBuf>,
    // Dropped after the build: stops the agents and removes their directories.
    _keys: Vec<KeyAgent>,
}

/// As BuildKit, which reads at most this much of a key file.
const MAX_KEY_FILE: u64 = 100 * 1024;

pub fn parse(list: &[String]) -> Result<SshAgents> {
    let mut wanted: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for item in list {
        let (id, paths) = match item.split_once('=') {
            Some((id, paths)) => (id, paths),
            None => (item.as_str(), ""),
        };
        if id.is_empty() {
            bail!("--ssh {item:?}: the id is empty (expected default or ID[=SOCKET|KEY[,KEY...]])");
        }
        let paths: Vec<PathBuf> = paths
            .split(',')
            .filter(|p| !p.is_empty())
            .map(expand_home)
            .collect();
        let paths = if paths.is_empty() {
            match std::env::var_os("SSH_AUTH_SOCK").filter(|v| !v.is_empty()) {
                Some(v) => vec![PathBuf::from(v)],
                None => bail!(
                    "--ssh {id}: SSH_AUTH_SOCK is not set; start an agent or give --ssh {id}=SOCKET or {id}=KEYFILE"
                ),
            }
        } else {
            paths
        };
        if wanted.insert(id.to_string(), paths).is_some() {
            bail!("--ssh {id}: given twice");
        }
    }
    let mut out = SshAgents {
        sockets: BTreeMap::new(),
        _keys: Vec::new(),
    };
    for (id, paths) in wanted {
        let mut keys = Vec::new();
        for p in &paths {
            let md = match std::fs::metadata(p) {
                Ok(md) => md,
                Err(e) => bail!("--ssh {id}: {}: {e}", p.display()),
            };
            if md.file_type().is_socket() {
                // BuildKit refuses a socket with anything else: an agent is forwarded as is.
                if paths.len() > 1 {
                    bail!(
                        "--ssh {id}: {} is an agent socket, which must be the only path for its id (give one socket or key files)",
                        p.display()
                    );
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

/// `~/x` as the shell would expand it (buildx users write `--ssh default=~/.ssh/id`).
fn expand_home(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ => PathBuf::from(p),
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
    fn start(id: &str, keys: &[&Path]) -> Result<KeyAgent> {
        // Private to us (0700), under $TMPDIR: socket paths must stay short.
        let dir = tempfile::Builder::new()
            .prefix("mybuild-ssh-")
            .tempdir()
            .context("creating a directory for the ssh agent")?;
        let socket = dir.path().join("agent.sock");
        if socket.as_os_str().len() >= 100 {
            bail!(
                "--ssh {id}: the agent socket {} is too long for a Unix socket; set TMPDIR to a shorter directory",
                socket.display()
            );
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
        let mut guard = cmd
            .spawn()
            .with_context(|| format!("--ssh {id}: starting sh for ssh-agent"))?;
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

    fn wait_ready(&self, id: &str) -> Result<()> {
        let log = self.dir.path().join("agent.log");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if UnixStream::connect(&self.socket).is_ok() {
                return Ok(());
            }
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            if !said.trim().is_empty() || Instant::now() > deadline {
                bail!(
                    "--ssh {id}: ssh-agent (OpenSSH, which serves --ssh key files) did not start: {}",
                    if said.trim().is_empty() {
                        "its socket never appeared"
                    } else {
                        said.trim()
                    }
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Loads one key through `ssh-add -`, so the file's mode does not matter (as in
    /// BuildKit) and no passphrase can be asked for: no tty, no askpass.
    fn add(&self, id: &str, key: &Path) -> Result<()> {
        let mut bytes = Vec::new();
        std::fs::File::open(key)
            .and_then(|f| f.take(MAX_KEY_FILE + 1).read_to_end(&mut bytes))
            .with_context(|| format!("--ssh {id}: reading {}", key.display()))?;
        if bytes.len() as u64 > MAX_KEY_FILE {
            bail!(
                "--ssh {id}: {} is larger than 100 KiB: not a private key",
                key.display()
            );
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
        let mut child = cmd
            .spawn()
            .with_context(|| format!("--ssh {id}: running ssh-add for {}", key.display()))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A key it rejects early makes this a broken pipe; its status says why.
            let _ = stdin.write_all(&bytes);
        }
        bytes.fill(0);
        let out = child
            .wait_with_output()
            .with_context(|| format!("--ssh {id}: running ssh-add for {}", key.display()))?;
        if out.status.success() {
            return Ok(());
        }
        let said = String::from_utf8_lossy(&out.stderr);
        if said.contains("passphrase") {
            bail!(
                "--ssh {id}: {} is protected by a passphrase, which mybuild cannot ask for (BuildKit refuses such keys too); add it to an ssh-agent with ssh-add and pass the agent's socket",
                key.display()
            );
        }
        let said = said.replace("(stdin)", &key.display().to_string());
        bail!(
            "--ssh {id}: {} is not a private key ssh-add can load: {}",
            key.display(),
            if said.trim().is_empty() {
                format!("ssh-add {}", out.status)
            } else {
                said.trim().to_string()
            }
        )
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
