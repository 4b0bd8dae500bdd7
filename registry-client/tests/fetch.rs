//! `http::Fetcher` (ADD's URLs) against small servers on 127.0.0.1.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use registry_client::http::Fetcher;
use registry_client::ClientOptions;

/// Serves one connection: reads the request head, returns its lines through the
/// channel, then writes `answer` and holds the connection open for `hold`.
fn serve_once(
    answer: &'static [u8],
    hold: Duration,
) -> (String, std::sync::mpsc::Receiver<Vec<String>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            head.push(line.trim_end().to_string());
        }
        let _ = tx.send(head);
        let _ = s.write_all(answer);
        let _ = s.flush();
        std::thread::sleep(hold);
    });
    (addr, rx)
}

fn fetcher(idle: Duration) -> Fetcher {
    Fetcher::new(&ClientOptions {
        idle_timeout: idle,
        ..ClientOptions::from_env()
    })
}

#[test]
fn a_body_that_stalls_fails_after_the_idle_timeout() {
    let (addr, _) = serve_once(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b",
        Duration::from_secs(30),
    );
    let f = fetcher(Duration::from_millis(500));
    let started = Instant::now();
    let mut got = f.get(&format!("http://{addr}/f"), None, &[]).unwrap();
    assert_eq!(got.status, 200);
    let mut body = Vec::new();
    let err = got.body.read_to_end(&mut body).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "gave up after {:?}: {err}",
        started.elapsed()
    );
    assert_eq!(body, b"only ten b");
}

#[test]
fn headers_validators_and_basic_auth_are_sent() {
    let (addr, head) = serve_once(
        b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nLast-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 0\r\n\r\n",
        Duration::ZERO,
    );
    let f = fetcher(Duration::from_secs(5));
    let got = f
        .get(
            &format!("http://{addr}/a%20b"),
            Some(("me@corp", "pa:ss")),
            &[("if-none-match", "\"v1\"")],
        )
        .unwrap();
    assert_eq!(got.status, 304);
    assert_eq!(got.header("etag"), Some("\"v1\""));
    assert_eq!(got.url, format!("http://{addr}/a%20b"));
    let head = head.recv().unwrap();
    assert_eq!(head[0], "GET /a%20b HTTP/1.1");
    let has = |h: &str| head.iter().any(|l| l.eq_ignore_ascii_case(h));
    assert!(has("if-none-match: \"v1\""), "{head:?}");
    // base64("me@corp:pa:ss")
    assert!(has("authorization: Basic bWVAY29ycDpwYTpzcw=="), "{head:?}");
}
