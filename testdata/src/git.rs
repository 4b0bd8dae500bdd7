//! Git servers for tests on 127.0.0.1: `git daemon`, and routes for git's dumb
//! HTTP protocol served by [`crate::http::serve`].

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::http::Routes;

/// A `git daemon` serving the repositories under a directory at
/// `git://127.0.0.1:<port>/`; killed when dropped.
pub struct GitDaemon {
    child: std::process::Child,
    pub port: u16,
}

impl GitDaemon {
    /// `git://127.0.0.1:<port>/<name>`.
    pub fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `git daemon` exporting every repository under `base` (read-only) and waits
/// until it accepts connections.
pub fn git_daemon(base: &Path) -> GitDaemon {
    for _ in 0..5 {
        // A free port, released just before the daemon binds it.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut child = Command::new("git")
            .arg("daemon")
            .arg("--reuseaddr")
            .arg(format!("--base-path={}", base.display()))
            .arg("--export-all")
            .arg("--listen=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg(base)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return GitDaemon { child, port };
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("git daemon did not start");
}

/// Routes serving every file of the (bare) repository `repo` under `prefix`, after
/// `git update-server-info`: git's dumb HTTP protocol.
pub fn dumb_http_routes(repo: &Path, prefix: &str) -> Routes {
    let status = Command::new("git")
        .arg("-C")
        .arg(repo)
        .arg("update-server-info")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .status()
        .expect("git runs");
    assert!(
        status.success(),
        "git update-server-info in {}",
        repo.display()
    );
    let mut routes = Routes::new();
    let mut stack = vec![repo.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(repo).expect("under repo");
                let body = std::fs::read(&p).expect("read");
                routes.insert(format!("{prefix}/{}", rel.display()), (200, body));
            }
        }
    }
    // git asks for the smart protocol first; the plain answer makes it fall back.
    if let Some(refs) = routes.get(&format!("{prefix}/info/refs")).cloned() {
        routes.insert(format!("{prefix}/info/refs?service=git-upload-pack"), refs);
    }
    routes
}
