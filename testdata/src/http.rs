//! A canned-response HTTP server on 127.0.0.1 for tests: one answer per path,
//! optional cache validators, requests and answers recorded.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

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
    use sha2::Digest as _;
    format!("\"{}\"", &hex::encode(sha2::Sha256::digest(body))[..16])
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
