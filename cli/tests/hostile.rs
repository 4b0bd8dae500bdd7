//! Hostile registries and archives: every answer is read up to a stated limit and
//! every loop ends, with an error naming the limit.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

mod common;

use common::{fails, mybuild};

/// A raw HTTP server on 127.0.0.1: `answer(path, port, stream)` writes the whole
/// response for each request (one per connection). Returns the port.
fn raw_server(answer: fn(&str, u16, &mut TcpStream)) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut first = String::new();
                if reader.read_line(&mut first).is_err() {
                    return;
                }
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                }
                let path = first.split_whitespace().nth(1).unwrap_or("/").to_string();
                answer(&path, port, &mut stream);
            });
        }
    });
    port
}

/// Writes `total` bytes of `fill` as the body, without a Content-Length.
fn endless_body(stream: &mut TcpStream, total: usize) {
    let chunk = vec![b' '; 1 << 16];
    let mut sent = 0;
    while sent < total {
        if stream.write_all(&chunk).is_err() {
            return;
        }
        sent += chunk.len();
    }
}

#[test]
fn a_100_mb_token_response_is_refused_at_the_cap() {
    let tmp = tempfile::tempdir().expect("tmp");
    let port = raw_server(|path, port, s| {
        if path.starts_with("/token") {
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n",
            );
            endless_body(s, 100 << 20);
        } else {
            let _ = write!(
                s,
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"t\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    let start = Instant::now();
    let err =
        fails(mybuild(&tmp.path().join("root")).args(["tags", &format!("127.0.0.1:{port}/r")]));
    assert!(
        err.contains("token response larger than 1024 KiB"),
        "error names the cap: {err}"
    );
    assert!(start.elapsed() < Duration::from_secs(60), "bounded time");
}

#[test]
fn tags_pagination_that_never_ends_is_an_error_not_a_truncated_list() {
    let tmp = tempfile::tempdir().expect("tmp");
    let port = raw_server(|path, _, s| {
        // Every page names one more, forever.
        let n: u64 = path
            .rsplit_once("last=t")
            .and_then(|(_, n)| n.parse().ok())
            .unwrap_or(0);
        let body = format!("{{\"name\":\"r\",\"tags\":[\"t{}\"]}}", n + 1);
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nLink: </v2/r/tags/list?n=1&last=t{}>; rel=\"next\"\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            n + 1,
            body.len()
        );
    });
    let err =
        fails(mybuild(&tmp.path().join("root")).args(["tags", &format!("127.0.0.1:{port}/r")]));
    assert!(
        err.contains("more than 10000 pages"),
        "error names the page limit: {err}"
    );
}

#[test]
fn a_tags_page_of_endless_bytes_is_refused_at_the_cap() {
    let tmp = tempfile::tempdir().expect("tmp");
    let port = raw_server(|_, _, s| {
        let _ = s.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n",
        );
        endless_body(s, 100 << 20);
    });
    let err =
        fails(mybuild(&tmp.path().join("root")).args(["tags", &format!("127.0.0.1:{port}/r")]));
    assert!(
        err.contains("a page larger than 8 MiB"),
        "error names the cap: {err}"
    );
}

/// A 512-byte ustar header for `name` whose size field claims `size` bytes, with
/// no data after it: what a bomb's first entry looks like before inflating.
fn header_claiming(name: &str, size: u64) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

#[test]
fn add_of_a_local_archive_inflating_past_the_unpack_cap_is_refused() {
    let Some((tmp, root)) = common::setup() else {
        return;
    };
    // 2 MiB of content against a 1 MiB cap.
    let tar = testdata::tars::RawTar::new()
        .file(b"big", &vec![0u8; 2 << 20])
        .finish();
    let ctx = common::context(tmp.path(), "FROM scratch\nADD bomb.tar /x/\n", &[]);
    std::fs::write(ctx.join("bomb.tar"), tar).expect("write");
    let err = fails(
        mybuild(&root)
            .env("MYBUILD_UNPACK_MAX_BYTES", "1MiB")
            .args(["build", "-t", "bomb:1"])
            .arg(&ctx),
    );
    assert!(
        err.contains("bomb.tar") && err.contains("more than 1048576 bytes"),
        "error names the archive and the limit: {err}"
    );
}

#[test]
fn add_of_a_local_archive_claiming_3_gib_stops_at_the_default_cap_before_writing() {
    let Some((tmp, root)) = common::setup() else {
        return;
    };
    let mut tar = header_claiming("huge", 3 << 30);
    tar.extend_from_slice(&[0u8; 4096]);
    let ctx = common::context(tmp.path(), "FROM scratch\nADD bomb.tar /x/\n", &[]);
    std::fs::write(ctx.join("bomb.tar"), tar).expect("write");
    let err = fails(mybuild(&root).args(["build", "-t", "bomb:1"]).arg(&ctx));
    assert!(
        err.contains("bomb.tar") && err.contains("MYBUILD_UNPACK_MAX_BYTES"),
        "error names the archive and the limit: {err}"
    );
}
