//! `RUN --mount=type=ssh`: a socket of our own, with the mount's owner and mode,
//! forwarding each connection to the agent socket `--ssh` named. The proxy socket
//! lives in a scratch directory of the store and is bind-mounted into the sandbox,
//! so the host agent's socket keeps its own owner and mode and nothing is copied.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use layer_cache::snapshot::ScratchDir;

/// A running proxy; dropping it stops accepting and removes the socket.
pub(super) struct AgentProxy {
    socket: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    _dir: ScratchDir,
}

impl AgentProxy {
    /// Listens in `dir` and forwards to `agent`; the socket gets `uid`, `gid`, `mode`.
    pub fn start(
        agent: &Path,
        dir: ScratchDir,
        uid: u32,
        gid: u32,
        mode: u32,
    ) -> std::io::Result<AgentProxy> {
        let socket = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&socket)?;
        std::os::unix::fs::chown(&socket, Some(uid), Some(gid))?;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(mode & 0o7777))?;
        let stop = Arc::new(AtomicBool::new(false));
        let agent = agent.to_path_buf();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                // An agent that went away: the client sees the connection close.
                let Ok(upstream) = UnixStream::connect(&agent) else {
                    continue;
                };
                forward(client, upstream);
            }
        });
        Ok(AgentProxy {
            socket,
            stop,
            thread: Some(thread),
            _dir: dir,
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

/// Copies both ways on two threads; each direction's end is passed on as a shutdown.
fn forward(client: UnixStream, upstream: UnixStream) {
    let pairs = [
        (client.try_clone(), upstream.try_clone()),
        (upstream.try_clone(), client.try_clone()),
    ];
    for pair in pairs {
        if let (Ok(from), Ok(to)) = pair {
            std::thread::spawn(move || pipe(from, to));
        }
    }
}

fn pipe(mut from: UnixStream, mut to: UnixStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

impl Drop for AgentProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the blocked accept so the thread sees the flag.
        let woke = UnixStream::connect(&self.socket).is_ok();
        if let Some(t) = self.thread.take() {
            if woke {
                let _ = t.join();
            }
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}
