//! Helpers shared by the cli's end-to-end tests: the binary, a store with a busybox
//! base imported from `busybox-static`, contexts, and umoci to read results back.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use assert_cmd::cargo::CommandCargoExt;
use tempfile::TempDir;

pub fn mybuild(root: &Path) -> Command {
    let mut c = Command::cargo_bin("mybuild").expect("binary");
    c.arg("--root").arg(root);
    // Never read the developer's own credentials or CAs.
    c.env("DOCKER_CONFIG", root.with_extension("docker"));
    c.env_remove("REGISTRY_AUTH_FILE");
    c.env("MYBUILD_CERTS_D", root.with_extension("certs.d"));
    c
}

/// Runs to the end: success, stdout, stderr.
pub fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn ok(cmd: &mut Command) -> (String, String) {
    let (success, so, se) = run(cmd);
    assert!(success, "{cmd:?} failed:\n{so}\n{se}");
    (so, se)
}

pub fn fails(cmd: &mut Command) -> String {
    let (success, so, se) = run(cmd);
    assert!(!success, "{cmd:?} should fail:\n{so}\n{se}");
    se
}

/// Runs with `input` on standard input (written from a thread, so a large input
/// cannot deadlock against the output): success, stdout, stderr.
pub fn with_stdin(cmd: &mut Command, input: impl AsRef<[u8]>) -> (bool, String, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let data = input.as_ref().to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait");
    writer.join().expect("writer");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Spawns `cmd` and returns once its standard error has shown `marker` (e.g. a RUN's
/// own output, so the sandbox is up); panics if it ends first.
pub fn spawn_until(cmd: &mut Command, marker: &str) -> std::process::Child {
    let mut child = cmd.stderr(Stdio::piped()).spawn().expect("spawn");
    let mut err = child.stderr.take().expect("stderr");
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains(marker) {
        let n = err.read(&mut buf).expect("read");
        assert!(n > 0, "ended early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    // Keep draining so the child never blocks on a full pipe.
    std::thread::spawn(move || while matches!(err.read(&mut buf), Ok(n) if n > 0) {});
    child
}

/// An inspected image's history as (created_by, empty_layer) pairs.
pub fn history(img: &serde_json::Value) -> Vec<(String, bool)> {
    img["Config"]["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| {
            (
                h["created_by"].as_str().unwrap_or("").to_string(),
                h["empty_layer"] == true,
            )
        })
        .collect()
}

/// A store under `tmp` holding `busybox` imported from `busybox-static`.
pub fn store_with_busybox(tmp: &Path) -> PathBuf {
    let rootfs = testdata::images::busybox_rootfs_file(tmp).expect("rootfs");
    let root = tmp.join("store");
    ok(mybuild(&root)
        .arg("import")
        .arg(&rootfs)
        .arg("busybox")
        .args(["-c", "ENV PATH=/bin"]));
    root
}

/// A store with busybox imported; `None` when the test must skip.
pub fn setup() -> Option<(TempDir, PathBuf)> {
    if !testdata::require_root()
        || !testdata::require_tool("busybox")
        || !testdata::require_tool("umoci")
    {
        return None;
    }
    let tmp = TempDir::new().expect("tmp");
    let root = store_with_busybox(tmp.path());
    Some((tmp, root))
}

pub fn context(tmp: &Path, dockerfile: &str, files: &[(&str, &str)]) -> PathBuf {
    let ctx = tmp.join(format!("ctx-{}", files.len() + dockerfile.len()));
    std::fs::create_dir_all(&ctx).expect("ctx");
    std::fs::write(ctx.join("Dockerfile"), dockerfile).expect("Dockerfile");
    for (name, body) in files {
        let p = ctx.join(name);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("dirs");
        std::fs::write(p, body).expect("file");
    }
    ctx
}

/// Unpacks a built image with umoci and returns the rootfs path.
pub fn unpack(tmp: &Path, root: &Path, name: &str) -> PathBuf {
    let bundle = tmp.join(format!("bundle-{}", name.replace([':', '/'], "-")));
    ok(Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:{name}", root.display()))
        .arg(&bundle));
    bundle.join("rootfs")
}

pub fn inspect(root: &Path, name: &str) -> serde_json::Value {
    serde_json::from_str(&ok(mybuild(root).args(["inspect", name])).0).expect("json")
}

/// Path → (status, body).
pub type Routes = HashMap<String, (u16, Vec<u8>)>;

/// Which cache validators [`serve_with`] sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validators {
    /// A fixed `Last-Modified`; conditions are ignored (every answer has the body).
    LastModified,
    /// Also an `ETag` derived from the body (unless pinned in `Server::etags`); a
    /// matching `If-None-Match` (or, without one, any `If-Modified-Since`) gets a 304.
    ETag,
    /// Neither header.
    None,
}

/// One answer the server gave.
#[derive(Debug, Clone)]
pub struct Served {
    pub path: String,
    pub status: u16,
    /// Body bytes sent.
    pub body: usize,
    pub if_none_match: Option<String>,
    pub if_modified_since: Option<String>,
    pub authorization: Option<String>,
}

/// An HTTP server on 127.0.0.1: one canned response per path (a test may change
/// them between builds); requests are recorded as their first line, answers in
/// `served`.
pub struct Server {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<String>>>,
    pub routes: Arc<Mutex<Routes>>,
    pub served: Arc<Mutex<Vec<Served>>>,
    /// Path → the ETag to send whatever the body (a server that changes content
    /// without changing its ETag).
    pub etags: Arc<Mutex<HashMap<String, String>>>,
}

impl Server {
    /// Answers for `path` that carried a body (2xx).
    pub fn bodies(&self, path: &str) -> usize {
        self.answers(path)
            .iter()
            .filter(|a| (200..300).contains(&a.status))
            .count()
    }

    /// Answers for `path` that were 304 Not Modified (they carry no body).
    pub fn not_modified(&self, path: &str) -> usize {
        self.answers(path)
            .iter()
            .filter(|a| a.status == 304 && a.body == 0)
            .count()
    }

    pub fn answers(&self, path: &str) -> Vec<Served> {
        self.served
            .lock()
            .expect("lock")
            .iter()
            .filter(|a| a.path == path)
            .cloned()
            .collect()
    }

    /// The ETag sent now for `path`'s current body.
    pub fn etag(&self, path: &str) -> String {
        let body = self.routes.lock().expect("lock").get(path).cloned();
        let pinned = self.etags.lock().expect("lock").get(path).cloned();
        pinned.unwrap_or_else(|| etag_of(&body.map(|b| b.1).unwrap_or_default()))
    }

    /// How many GET requests named `path`.
    pub fn gets(&self, path: &str) -> usize {
        let want = format!("GET {path} ");
        self.requests
            .lock()
            .expect("lock")
            .iter()
            .filter(|r| r.starts_with(&want))
            .count()
    }
}

fn etag_of(body: &[u8]) -> String {
    format!("\"{}\"", &layer_cache::Digest::of(body).hex()[..16])
}

pub fn serve(routes: Routes) -> Server {
    serve_with(routes, Validators::LastModified)
}

pub fn serve_with(routes: Routes, validators: Validators) -> Server {
    let routes = Arc::new(Mutex::new(routes));
    let served = routes.clone();
    let answers = Arc::new(Mutex::new(Vec::new()));
    let answered = answers.clone();
    let etags = Arc::new(Mutex::new(HashMap::new()));
    let pinned = etags.clone();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            // The first line and the headers (names lowercased).
            let read_head = |reader: &mut BufReader<_>| {
                let mut first = String::new();
                reader.read_line(&mut first).ok()?;
                let mut headers = HashMap::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':') {
                        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                    }
                }
                Some((first, headers))
            };
            let Some((mut first, mut headers)) = read_head(&mut reader) else {
                continue;
            };
            // A proxy client may tunnel: accept, then read the request inside.
            if first.starts_with("CONNECT ") {
                seen.lock().expect("lock").push(first.trim().to_string());
                let _ = stream.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
                let Some(inner) = read_head(&mut reader) else {
                    continue;
                };
                (first, headers) = inner;
            }
            let target = first.split_whitespace().nth(1).unwrap_or("/").to_string();
            seen.lock().expect("lock").push(first.trim().to_string());
            // A proxied request names the whole URL: serve it by its path.
            let path = match target.split_once("://") {
                Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]).to_string(),
                None => target,
            };
            let (mut status, mut body) = served
                .lock()
                .expect("lock")
                .get(&path)
                .cloned()
                .unwrap_or((404, b"not found\n".to_vec()));
            let mut extra = String::new();
            if validators != Validators::None {
                extra.push_str("Last-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\n");
            }
            if validators == Validators::ETag && status == 200 {
                let etag = pinned
                    .lock()
                    .expect("lock")
                    .get(&path)
                    .cloned()
                    .unwrap_or_else(|| etag_of(&body));
                let fresh = match (
                    headers.get("if-none-match"),
                    headers.get("if-modified-since"),
                ) {
                    (Some(inm), _) => inm.split(',').any(|t| t.trim() == etag),
                    (None, Some(_)) => true,
                    (None, None) => false,
                };
                if fresh {
                    status = 304;
                    body.clear();
                }
                extra.push_str(&format!("ETag: {etag}\r\n"));
            }
            answered.lock().expect("lock").push(Served {
                path: path.clone(),
                status,
                body: body.len(),
                if_none_match: headers.get("if-none-match").cloned(),
                if_modified_since: headers.get("if-modified-since").cloned(),
                authorization: headers.get("authorization").cloned(),
            });
            // A 304 has no body and no Content-Length of its own.
            let length = if status == 304 {
                String::new()
            } else {
                format!("Content-Length: {}\r\n", body.len())
            };
            let head = format!("HTTP/1.1 {status} X\r\n{length}{extra}Connection: close\r\n\r\n");
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
            let _ = stream.flush();
            let mut rest = Vec::new();
            let _ = reader.read_to_end(&mut rest);
        }
    });
    Server {
        port,
        requests,
        routes,
        served: answers,
        etags,
    }
}

/// What a command did under a pseudo-terminal: its stderr as the terminal
/// received it (escape sequences and all) and its stdout, kept apart.
pub struct Pty {
    pub success: bool,
    pub terminal: String,
    pub stdout: String,
}

/// Runs `cmd` with standard error on a pseudo-terminal `cols` columns wide
/// (`script` makes the terminal and records what reaches it), standard output to
/// a file. Returns `None` (the test skips) when `script` is missing.
pub fn in_pty(tmp: &Path, cmd: &Command, cols: u16) -> Option<Pty> {
    if !testdata::require_tool("script") {
        return None;
    }
    let quote = |s: &std::ffi::OsStr| format!("'{}'", s.to_string_lossy().replace('\'', r"'\''"));
    let mut line = format!(
        "stty cols {cols} rows 40 && exec {}",
        quote(cmd.get_program())
    );
    for a in cmd.get_args() {
        line.push(' ');
        line.push_str(&quote(a));
    }
    let dir = TempDir::new_in(tmp).expect("pty dir");
    let (log, out) = (dir.path().join("typescript"), dir.path().join("stdout"));
    line.push_str(&format!(" >{}", quote(out.as_os_str())));
    let mut script = Command::new("script");
    script
        .args(["-q", "-e", "-c", &line])
        .arg(&log)
        .env("SHELL", "/bin/sh")
        .env("TERM", "xterm")
        // `auto` progress is plain in CI; a test that wants CI sets it on `cmd`.
        .env_remove("CI")
        .stdin(Stdio::null())
        // It also copies the terminal to its own output; the log has it all.
        .stdout(Stdio::null());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => script.env(k, v),
            None => script.env_remove(k),
        };
    }
    let status = script.status().expect("script runs");
    let read =
        |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    // `script` frames the recording with a line of its own at each end.
    let log = read(&log);
    let body = log.split_once('\n').map_or("", |(_, rest)| rest);
    let body = body
        .rfind("\nScript done on")
        .map_or(body, |end| &body[..end]);
    Some(Pty {
        success: status.success(),
        terminal: body.to_string(),
        stdout: read(&out),
    })
}

/// The screen a terminal `cols` wide shows after receiving `raw`: what is left
/// on each line (trailing blanks trimmed), top to bottom. Understands what
/// indicatif and console send; any other escape sequence fails the test.
pub fn screen(raw: &str, cols: usize) -> Vec<String> {
    let mut lines: Vec<Vec<char>> = vec![Vec::new()];
    let (mut row, mut col) = (0usize, 0usize);
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        // `col == cols` is xterm's pending wrap: the next character goes below.
        match c {
            '\r' => col = 0,
            '\n' => row += 1,
            '\x08' => col = col.min(cols - 1).saturating_sub(1),
            '\x1b' => {
                assert_eq!(chars.next(), Some('['), "escape in {raw:?}");
                let mut params = String::new();
                let fin = loop {
                    match chars.next() {
                        Some(p) if p.is_ascii_digit() || p == ';' || p == '?' => params.push(p),
                        Some(f) => break f,
                        None => panic!("unterminated escape in {raw:?}"),
                    }
                };
                let n = params.parse::<usize>().unwrap_or(1).max(1);
                col = col.min(cols - 1);
                match (fin, params.as_str()) {
                    ('A', _) => row = row.saturating_sub(n),
                    ('B', _) => row += n,
                    ('C', _) => col = (col + n).min(cols - 1),
                    ('D', _) => col = col.saturating_sub(n),
                    ('K', "" | "0") => {
                        if let Some(l) = lines.get_mut(row) {
                            l.truncate(col)
                        }
                    }
                    ('K', "2") => {
                        if let Some(l) = lines.get_mut(row) {
                            l.clear()
                        }
                    }
                    ('J', "" | "0") => {
                        lines.truncate(row + 1);
                        if let Some(l) = lines.get_mut(row) {
                            l.truncate(col)
                        };
                    }
                    ('m', _) | ('h' | 'l', "?25") => {}
                    _ => panic!("unexpected escape ESC[{params}{fin} in {raw:?}"),
                }
            }
            c if c.is_control() => panic!("unexpected control {c:?} in {raw:?}"),
            c => {
                if col >= cols {
                    row += 1;
                    col = 0;
                }
                if lines.len() <= row {
                    lines.resize(row + 1, Vec::new());
                }
                let line = &mut lines[row];
                if line.len() <= col {
                    line.resize(col + 1, ' ');
                }
                line[col] = c;
                col += 1;
            }
        }
        if lines.len() <= row {
            lines.resize(row + 1, Vec::new());
        }
    }
    let mut out: Vec<String> = lines
        .iter()
        .map(|l| l.iter().collect::<String>().trim_end().to_string())
        .collect();
    while out.last().is_some_and(|l| l.is_empty()) {
        out.pop();
    }
    out
}

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
    ok(Command::new("git")
        .arg("-C")
        .arg(repo)
        .arg("update-server-info")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null"));
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

/// Pushes `amd_image` and `arm_image` from the store to `REGISTRY/multi:amd` and
/// `multi:arm` and puts an OCI index of both (linux/amd64, linux/arm64/v8) as
/// `multi:both`; returns the three manifest digests (amd, arm, index).
pub fn push_two_platform_index(
    root: &Path,
    registry: &str,
    amd_image: &str,
    arm_image: &str,
) -> (String, String, String) {
    let amd = ok(mybuild(root).args(["push", amd_image, &format!("{registry}/multi:amd")])).0;
    let arm = ok(mybuild(root).args(["push", arm_image, &format!("{registry}/multi:arm")])).0;
    let (amd, arm) = (amd.trim().to_string(), arm.trim().to_string());
    let size = |d: &str| {
        std::fs::metadata(root.join("blobs/sha256").join(&d[7..]))
            .expect("manifest blob")
            .len()
    };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd, "size": size(&amd),
             "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm, "size": size(&arm),
             "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        ]
    });
    let m = registry_client::Manifest::new(serde_json::to_vec(&index).expect("json"), None)
        .expect("index");
    let r = registry_client::Reference::parse(&format!("{registry}/multi:both")).expect("ref");
    let client = registry_client::Client::new(registry_client::ClientOptions::from_env());
    let digest = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(client.put_manifest(&r, &m))
        .expect("put index");
    (amd, arm, digest.to_string())
}

/// A 64-byte ELF header for an aarch64 executable: enough for the kernel to refuse
/// it with ENOEXEC on another architecture.
pub fn aarch64_elf() -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[..8].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    h[16] = 2; // ET_EXEC
    h[18] = 0xb7; // EM_AARCH64
    h[20] = 1; // EV_CURRENT
    h[52] = 64; // e_ehsize
    h
}
