//! A real `docker-registry` (Debian's CNCF distribution) on 127.0.0.1 with a free
//! port, optionally behind htpasswd, token auth or TLS, and a fault-injecting
//! HTTP proxy to put in front of it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound and released; the race is acceptable in tests).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

#[derive(Default, Clone)]
pub struct RegistryOptions {
    /// Require these credentials (htpasswd, bcrypt made with `htpasswd -B`).
    pub basic_auth: Option<(String, String)>,
    /// Bearer token auth: realm URL, service, issuer, and the PEM root bundle path.
    pub token_auth: Option<TokenAuthConfig>,
    /// Serve HTTPS with this certificate and key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
}

#[derive(Clone)]
pub struct TokenAuthConfig {
    pub realm: String,
    pub service: String,
    pub issuer: String,
    pub root_cert_bundle: PathBuf,
}

/// A running registry; killed on drop.
pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`
    pub addr: String,
    pub dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Registry {
        Registry::start_with(&RegistryOptions::default())
    }

    pub fn start_with(opts: &RegistryOptions) -> Registry {
        let dir = tempfile::tempdir().expect("registry dir");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n  secret: mybuild-test-secret\n",
            dir.path().join("data").display()
        );
        if let Some((cert, key)) = &opts.tls {
            cfg.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
        }
        if let Some((user, pass)) = &opts.basic_auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, pass])
                .output()
                .expect("htpasswd (apache2-utils)");
            assert!(out.status.success(), "htpasswd failed");
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, &out.stdout).expect("htpasswd file");
            cfg.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: mybuild-test\n    path: {}\n",
                file.display()
            ));
        }
        if let Some(t) = &opts.token_auth {
            cfg.push_str(&format!(
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                t.realm,
                t.service,
                t.issuer,
                t.root_cert_bundle.display()
            ));
        }
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, cfg).expect("config.yml");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("docker-registry runs");
        let reg = Registry { child, addr, dir };
        reg.wait_ready();
        reg
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if TcpStream::connect(&self.addr).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "docker-registry did not start on {}: {}",
            self.addr,
            std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
        );
    }

    /// Where the registry keeps a repository's blob links (to check what it holds).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the proxy does to one matching request.
#[derive(Debug, Clone)]
pub enum FaultKind {
    /// Answer with this status without asking the registry.
    Status(u16),
    /// 429 with `Retry-After: secs`.
    TooManyRequests { retry_after: u64 },
    /// 503 with this `Retry-After` value as is (seconds or an HTTP-date).
    Unavailable { retry_after: String },
    /// Forward, send the response head and `after` body bytes, then reset the connection.
    ResetMidBody { after: usize },
    /// Forward, send the head and `after` body bytes, then close cleanly (short body).
    Truncate { after: usize },
    /// Forward with the first body byte flipped.
    Corrupt,
    /// Forward and add this header to the response.
    AddHeader { name: String, value: String },
    /// Serve `GET .../tags/list` in pages of at most `page` tags (or the request's
    /// smaller `n`), with `last=` and a `Link: rel="next"` header as the
    /// distribution spec describes. distribution 2.8 ignores `n` on tags and
    /// always answers with one page, so the proxy pages the registry's real
    /// answer (sorted, as the spec wants for pagination).
    PaginateTags { page: usize },
    /// Forward `after` bytes of the body (the request's when it has one, else the
    /// response's), then hold the connection without forwarding more until the
    /// client goes away or the proxy is dropped: a transfer caught mid-blob for as
    /// long as a test needs. [`FaultProxy::wait_stalled`] waits for it.
    Stall { after: usize },
    /// Forward, and point the response's `Location` at `to` (`127.0.0.1:PORT`)
    /// instead: an upload session handed to another host.
    RewriteLocation { to: String },
    /// Answer `307` with `Location: http://{to}{path}` without asking the registry.
    Redirect { to: String },
    /// Forward, send the head and `after` body bytes, then one byte every
    /// `every` until the body ends or the client goes away.
    Trickle { after: usize, every: Duration },
    /// Forward, and hold the registry's answer for `by` before passing it on:
    /// a request the registry has acted on whose client has no answer yet.
    /// [`FaultProxy::wait_stalled`] returns once the answer is held.
    Delay { by: Duration },
}

#[derive(Debug, Clone)]
pub struct Fault {
    pub method: String,
    pub path_contains: String,
    pub kind: FaultKind,
    /// How many matching requests it applies to.
    pub times: usize,
    /// Matching requests to let through before it applies.
    pub skip: usize,
}

impl Fault {
    pub fn new(method: &str, path_contains: &str, kind: FaultKind, times: usize) -> Fault {
        Fault {
            method: method.to_string(),
            path_contains: path_contains.to_string(),
            kind,
            times,
            skip: 0,
        }
    }

    /// Lets the first `n` matching requests through untouched.
    pub fn skipping(mut self, n: usize) -> Fault {
        self.skip = n;
        self
    }
}

#[derive(Default)]
struct ProxyState {
    faults: Vec<Fault>,
    log: Vec<String>,
    fired: Vec<String>,
    sizes: Vec<(String, String, u64)>,
    stalled: Vec<String>,
    authorizations: Vec<(String, Option<String>)>,
}

/// An HTTP/1.1 proxy in front of a registry that injects faults and records the
/// requests it sees (`METHOD /path?query`). Each connection carries one request.
pub struct FaultProxy {
    pub addr: String,
    state: Arc<Mutex<ProxyState>>,
    /// Signalled (with `state`) when a stall is reached.
    changed: Arc<Condvar>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    pub fn start(upstream: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let changed = Arc::new(Condvar::new());
        let stop = Arc::new(AtomicBool::new(false));
        let (st, cv, sp, up) = (
            state.clone(),
            changed.clone(),
            stop.clone(),
            upstream.to_string(),
        );
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (st, cv, sp, up) = (st.clone(), cv.clone(), sp.clone(), up.clone());
                std::thread::spawn(move || {
                    let _ = handle(conn, &up, &st, &cv, &sp);
                });
            }
        });
        FaultProxy {
            addr,
            state,
            changed,
            stop,
        }
    }

    /// Blocks until a [`FaultKind::Stall`] has forwarded its bytes and is holding
    /// the transfer; returns `METHOD /path` of that request. Each stall is
    /// returned once. Panics after a minute, so a broken test fails instead of hanging.
    pub fn wait_stalled(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut st = self.state.lock().expect("state");
        loop {
            if !st.stalled.is_empty() {
                return st.stalled.remove(0);
            }
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("no stall reached; requests: {:?}", st.log));
            st = self.changed.wait_timeout(st, left).expect("state").0;
        }
    }

    pub fn add(&self, fault: Fault) {
        self.state.lock().expect("state").faults.push(fault);
    }

    /// Every request seen so far, as `METHOD /path?query` (plus ` range=...` when asked).
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().expect("state").log.clone()
    }

    /// The faults that fired, as `KIND METHOD /path`.
    pub fn fired(&self) -> Vec<String> {
        self.state.lock().expect("state").fired.clone()
    }

    /// `(METHOD, /path?query, Content-Length)` of every request seen so far.
    pub fn request_sizes(&self) -> Vec<(String, String, u64)> {
        self.state.lock().expect("state").sizes.clone()
    }

    /// `(METHOD /path?query, Authorization header)` of every request seen so far.
    pub fn authorizations(&self) -> Vec<(String, Option<String>)> {
        self.state.lock().expect("state").authorizations.clone()
    }

    pub fn clear_log(&self) {
        let mut st = self.state.lock().expect("state");
        st.log.clear();
        st.sizes.clear();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}

fn read_head<R: BufRead>(r: &mut R) -> std::io::Result<Vec<String>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed",
            ));
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            return Ok(lines);
        }
        lines.push(line);
    }
}

fn header<'a>(head: &'a [String], name: &str) -> Option<&'a str> {
    head.iter().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

fn with_close(head: &[String]) -> String {
    let mut out = String::new();
    for (i, l) in head.iter().enumerate() {
        if i > 0 {
            let k = l.split_once(':').map(|(k, _)| k.trim()).unwrap_or("");
            if k.eq_ignore_ascii_case("connection") || k.eq_ignore_ascii_case("keep-alive") {
                continue;
            }
        }
        out.push_str(l);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    out
}

fn reset(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket fd and a correctly sized linger struct.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Records a reached stall and wakes [`FaultProxy::wait_stalled`].
fn stalled(state: &Mutex<ProxyState>, changed: &Condvar, what: String) {
    state.lock().expect("state").stalled.push(what);
    changed.notify_all();
}

fn handle(
    client: TcpStream,
    upstream: &str,
    state: &Mutex<ProxyState>,
    changed: &Condvar,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut client_w = client;
    let head = read_head(&mut reader)?;
    let mut parts = head[0].split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let len: u64 = header(&head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(
        header(&head, "transfer-encoding").is_none(),
        "the proxy expects Content-Length request bodies: {method} {path}"
    );
    let fault = {
        let mut st = state.lock().expect("state");
        match header(&head, "range") {
            Some(r) => st.log.push(format!("{method} {path} range={r}")),
            None => st.log.push(format!("{method} {path}")),
        }
        st.sizes.push((method.clone(), path.clone(), len));
        st.authorizations.push((
            format!("{method} {path}"),
            header(&head, "authorization").map(str::to_string),
        ));
        let found = st
            .faults
            .iter_mut()
            .find(|f| f.times > 0 && f.method == method && path.contains(&f.path_contains));
        let kind = found.and_then(|f| {
            if f.skip > 0 {
                f.skip -= 1;
                return None;
            }
            f.times -= 1;
            Some(f.kind.clone())
        });
        if let Some(k) = &kind {
            st.fired.push(format!("{k:?} {method} {path}"));
        }
        kind
    };
    let injected = match &fault {
        Some(FaultKind::Status(c)) => Some((*c, String::new())),
        Some(FaultKind::Redirect { to }) => Some((307, format!("Location: http://{to}{path}\r\n"))),
        Some(FaultKind::TooManyRequests { retry_after }) => {
            Some((429, format!("Retry-After: {retry_after}\r\n")))
        }
        Some(FaultKind::Unavailable { retry_after }) => {
            Some((503, format!("Retry-After: {retry_after}\r\n")))
        }
        _ => None,
    };
    if let Some((code, extra)) = injected {
        std::io::copy(&mut (&mut reader).take(len), &mut std::io::sink())?;
        write!(
            client_w,
            "HTTP/1.1 {code} Injected\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        return client_w.flush();
    }
    if let Some(FaultKind::PaginateTags { page }) = &fault {
        std::io::copy(&mut (&mut reader).take(len), &mut std::io::sink())?;
        return serve_tag_page(client_w, upstream, &head, &path, *page);
    }
    let mut up = TcpStream::connect(upstream)?;
    up.write_all(with_close(&head).as_bytes())?;
    if let (Some(FaultKind::Stall { after }), true) = (&fault, len > 0) {
        std::io::copy(&mut (&mut reader).take(len.min(*after as u64)), &mut up)?;
        up.flush()?;
        stalled(state, changed, format!("{method} {path}"));
        // The client's further bytes stay unread in the socket; hold both ends
        // open until the test is done with the proxy.
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
        return Ok(());
    }
    std::io::copy(&mut (&mut reader).take(len), &mut up)?;
    up.flush()?;
    let mut up_reader = BufReader::new(up);
    let mut resp_head = read_head(&mut up_reader)?;
    if let Some(FaultKind::Delay { by }) = &fault {
        stalled(state, changed, format!("{method} {path}"));
        std::thread::sleep(*by);
    }
    if let Some(FaultKind::AddHeader { name, value }) = &fault {
        resp_head.push(format!("{name}: {value}"));
    }
    if let Some(FaultKind::RewriteLocation { to }) = &fault {
        for line in resp_head.iter_mut().skip(1) {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            if !k.trim().eq_ignore_ascii_case("location") {
                continue;
            }
            let v = v.trim();
            // Absolute (`http://host/...`) or absolute-path (`/v2/...`).
            let rest = match v.split_once("://") {
                Some((_, after)) => after.find('/').map_or("/", |i| &after[i..]),
                None => v,
            };
            *line = format!("Location: http://{to}{rest}");
        }
    }
    client_w.write_all(with_close(&resp_head).as_bytes())?;
    match fault {
        Some(FaultKind::ResetMidBody { after }) | Some(FaultKind::Truncate { after }) => {
            std::io::copy(&mut (&mut up_reader).take(after as u64), &mut client_w)?;
            client_w.flush()?;
            if matches!(fault, Some(FaultKind::ResetMidBody { .. })) {
                reset(&client_w);
            } else {
                let _ = client_w.shutdown(Shutdown::Write);
            }
            return Ok(());
        }
        Some(FaultKind::Stall { after }) => {
            std::io::copy(&mut (&mut up_reader).take(after as u64), &mut client_w)?;
            client_w.flush()?;
            stalled(state, changed, format!("{method} {path}"));
            // The client sends nothing more on this connection: a read ends when
            // it closes (or is killed).
            client_w.set_read_timeout(Some(Duration::from_millis(50)))?;
            let mut buf = [0u8; 4096];
            while !stop.load(Ordering::SeqCst) {
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => break,
                }
            }
            return Ok(());
        }
        Some(FaultKind::Trickle { after, every }) => {
            std::io::copy(&mut (&mut up_reader).take(after as u64), &mut client_w)?;
            client_w.flush()?;
            let mut byte = [0u8; 1];
            while !stop.load(Ordering::SeqCst) && up_reader.read(&mut byte)? == 1 {
                std::thread::sleep(every);
                client_w.write_all(&byte)?;
                client_w.flush()?;
            }
            return Ok(());
        }
        Some(FaultKind::Corrupt) => {
            let mut first = [0u8; 1];
            if up_reader.read(&mut first)? == 1 {
                first[0] ^= 0xff;
                client_w.write_all(&first)?;
            }
        }
        _ => {}
    }
    std::io::copy(&mut up_reader, &mut client_w)?;
    client_w.flush()?;
    let _ = client_w.shutdown(Shutdown::Write);
    Ok(())
}

/// One page of a tag list: the registry's whole list (asked without a query,
/// with the client's own headers), sorted, after `last`, at most `n` long.
fn serve_tag_page(
    mut client_w: TcpStream,
    upstream: &str,
    head: &[String],
    path: &str,
    page: usize,
) -> std::io::Result<()> {
    let (base, query) = path.split_once('?').unwrap_or((path, ""));
    let params = query_pairs(query);
    let get = |k: &str| {
        params
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let n = get("n")
        .and_then(|n| n.parse::<usize>().ok())
        .map_or(page, |n| n.min(page))
        .max(1);
    let last = get("last");
    let mut up_head = head.to_vec();
    up_head[0] = format!("GET {base} HTTP/1.1");
    let mut up = TcpStream::connect(upstream)?;
    up.write_all(with_close(&up_head).as_bytes())?;
    up.flush()?;
    let mut up_reader = BufReader::new(up);
    let resp_head = read_head(&mut up_reader)?;
    let mut body = Vec::new();
    up_reader.read_to_end(&mut body)?;
    if !resp_head[0].contains(" 200 ") {
        client_w.write_all(with_close(&resp_head).as_bytes())?;
        client_w.write_all(&body)?;
        return client_w.flush();
    }
    let v: serde_json::Value = serde_json::from_slice(&body).expect("tag list JSON");
    let mut tags: Vec<String> = v["tags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    tags.sort();
    let rest: Vec<String> = tags
        .into_iter()
        .filter(|t| last.as_ref().is_none_or(|l| t > l))
        .collect();
    let this: Vec<String> = rest.iter().take(n).cloned().collect();
    let mut extra = String::new();
    if rest.len() > n {
        if let Some(l) = this.last() {
            extra = format!("Link: <{base}?last={l}&n={n}>; rel=\"next\"\r\n");
        }
    }
    let out = serde_json::json!({"name": v["name"], "tags": this}).to_string();
    write!(
        client_w,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{out}",
        out.len()
    )?;
    client_w.flush()
}

/// A self-signed CA and a server certificate for 127.0.0.1 made with `openssl`,
/// laid out as `certs_d/<host:port>/ca.crt`.
pub struct TestCerts {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn make_certs(dir: &Path) -> TestCerts {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=mybuild test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .expect("ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    TestCerts {
        ca: dir.join("ca.crt"),
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
    }
}

fn base64(data: &[u8], url: bool) -> String {
    let table: &[u8; 64] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(table[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
        if !url {
            for _ in chunk.len()..3 {
                out.push('=');
            }
        }
    }
    out
}

fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                    out.push(v);
                    i += 2;
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (url_decode(k), url_decode(v))
        })
        .collect()
}

/// One token request as the issuer saw it.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub method: String,
    /// `basic:USER`, `refresh` (OAuth2 POST), `refresh-basic` (GET with Basic
    /// `<token>:REFRESH`), `anonymous`, `refused`, or `no-oauth` (POST turned away)
    pub who: String,
    pub scopes: Vec<String>,
}

/// A Docker token server: checks Basic credentials or an OAuth2 refresh token,
/// and signs RS256 JWTs (with `openssl`) that `docker-registry` verifies
/// against the certificate in its `rootcertbundle`. Anonymous callers get `pull`.
pub struct TokenIssuer {
    pub realm: String,
    pub service: String,
    pub issuer: String,
    pub cert: PathBuf,
    log: Arc<Mutex<Vec<TokenRequest>>>,
    post_status: Arc<Mutex<Option<u16>>>,
    stop: Arc<AtomicBool>,
    addr: String,
    _dir: tempfile::TempDir,
}

impl TokenIssuer {
    pub fn start(user: &str, password: &str, refresh_token: &str) -> TokenIssuer {
        let dir = tempfile::tempdir().expect("issuer dir");
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("openssl runs");
            assert!(out.status.success(), "openssl {args:?}");
            out.stdout
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-subj",
            "/CN=mybuild token issuer",
        ]);
        let der = run(&["x509", "-in", "cert.pem", "-outform", "DER"]);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let log = Arc::new(Mutex::new(Vec::new()));
        let post_status = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let ctx = Arc::new(IssuerCtx {
            post_status: post_status.clone(),
            basic: format!(
                "Basic {}",
                base64(format!("{user}:{password}").as_bytes(), false)
            ),
            user: user.to_string(),
            refresh: refresh_token.to_string(),
            x5c: base64(&der, false),
            key: dir.path().join("key.pem"),
            service: "mybuild-test-registry".into(),
            issuer: "mybuild-test-issuer".into(),
            log: log.clone(),
        });
        let sp = stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let ctx = ctx.clone();
                std::thread::spawn(move || {
                    let _ = serve_token(conn, &ctx);
                });
            }
        });
        TokenIssuer {
            realm: format!("http://{addr}/token"),
            service: "mybuild-test-registry".into(),
            issuer: "mybuild-test-issuer".into(),
            cert: dir.path().join("cert.pem"),
            log,
            post_status,
            stop,
            addr,
            _dir: dir,
        }
    }

    pub fn config(&self) -> TokenAuthConfig {
        TokenAuthConfig {
            realm: self.realm.clone(),
            service: self.service.clone(),
            issuer: self.issuer.clone(),
            root_cert_bundle: self.cert.clone(),
        }
    }

    pub fn requests(&self) -> Vec<TokenRequest> {
        self.log.lock().expect("log").clone()
    }

    /// Behave like an issuer without the OAuth2 endpoint: every POST gets
    /// `status` (404, 405, 400...); `None` accepts POSTs again.
    pub fn refuse_post(&self, status: Option<u16>) {
        *self.post_status.lock().expect("post_status") = status;
    }
}

impl Drop for TokenIssuer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}

struct IssuerCtx {
    post_status: Arc<Mutex<Option<u16>>>,
    basic: String,
    user: String,
    refresh: String,
    x5c: String,
    key: PathBuf,
    service: String,
    issuer: String,
    log: Arc<Mutex<Vec<TokenRequest>>>,
}

fn serve_token(conn: TcpStream, ctx: &IssuerCtx) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut w = conn;
    let head = read_head(&mut reader)?;
    let mut parts = head[0].split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let len: u64 = header(&head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = String::new();
    (&mut reader).take(len).read_to_string(&mut body)?;
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let mut params = query_pairs(query);
    if method == "POST" {
        params.extend(query_pairs(&body));
    }
    let get = |k: &str| {
        params
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let scopes: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_string).collect::<Vec<_>>())
        .filter(|s| !s.is_empty())
        .collect();
    let auth = header(&head, "authorization").unwrap_or("");
    let refused_post = *ctx.post_status.lock().expect("post_status");
    if let (Some(code), "POST") = (refused_post, method.as_str()) {
        ctx.log.lock().expect("log").push(TokenRequest {
            method: method.clone(),
            who: "no-oauth".into(),
            scopes,
        });
        write!(
            w,
            "HTTP/1.1 {code} No OAuth\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        return w.flush();
    }
    let token_basic = format!(
        "Basic {}",
        base64(format!("<token>:{}", ctx.refresh).as_bytes(), false)
    );
    let who = if method == "POST" {
        if get("grant_type").as_deref() == Some("refresh_token")
            && get("refresh_token").as_deref() == Some(ctx.refresh.as_str())
        {
            Some("refresh".to_string())
        } else {
            None
        }
    } else if auth.is_empty() {
        Some("anonymous".to_string())
    } else if auth == ctx.basic {
        Some(format!("basic:{}", ctx.user))
    } else if auth == token_basic {
        Some("refresh-basic".to_string())
    } else {
        None
    };
    ctx.log.lock().expect("log").push(TokenRequest {
        method: method.clone(),
        who: who.clone().unwrap_or_else(|| "refused".into()),
        scopes: scopes.clone(),
    });
    let Some(who) = who else {
        let msg = br#"{"details":"invalid credentials"}"#;
        write!(
            w,
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            msg.len()
        )?;
        w.write_all(msg)?;
        return w.flush();
    };
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|s| {
            let mut it = s.splitn(3, ':');
            let (kind, name, actions) = (it.next()?, it.next()?, it.next()?);
            let actions: Vec<&str> = actions
                .split(',')
                .filter(|a| who != "anonymous" || *a == "pull")
                .collect();
            Some(serde_json::json!({"type": kind, "name": name, "actions": actions}))
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let header_json = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [ctx.x5c]});
    let claims = serde_json::json!({
        "iss": ctx.issuer, "sub": who, "aud": ctx.service,
        "exp": now + 300, "nbf": now - 10, "iat": now,
        "jti": format!("{now}-{}", std::process::id()), "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        base64(header_json.to_string().as_bytes(), true),
        base64(claims.to_string().as_bytes(), true)
    );
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(&ctx.key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(signing_input.as_bytes())?;
    let sig = child.wait_with_output()?.stdout;
    let token = format!("{signing_input}.{}", base64(&sig, true));
    let body = if who == "refresh" {
        serde_json::json!({"access_token": token, "expires_in": 300})
    } else {
        serde_json::json!({"token": token, "expires_in": 300})
    }
    .to_string();
    write!(
        w,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    w.flush()
}
