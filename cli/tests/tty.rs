//! `pull` and `push` on a terminal: per-blob byte bars drawn by indicatif that
//! give way to one line per blob. Each run gets a pseudo-terminal from `script`;
//! the tests read both what was sent to it and the screen it leaves.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use tempfile::TempDir;
use testdata::registry::Registry;

/// Wide enough that no line the commands print wraps.
const COLS: u16 = 100;
/// Big enough that a layer's transfer is drawn more than once.
const NOISE: usize = 4 << 20;

/// A store with `app:1`: busybox and a layer holding NOISE incompressible bytes,
/// stored gzip-compressed so a push sends the stored blobs.
fn setup() -> Option<(TempDir, PathBuf)> {
    if !testdata::require_tool("docker-registry") || !testdata::require_tool("script") {
        return None;
    }
    let (tmp, root) = common::setup()?;
    let ctx = context(tmp.path(), "FROM busybox\nCOPY noise.bin /noise.bin\n", &[]);
    std::fs::write(ctx.join("noise.bin"), noise(NOISE)).expect("noise");
    ok(mybuild(&root).args(["-q", "-t", "app:1"]).arg(&ctx));
    common::store_compressed(tmp.path(), &root, "app:1");
    Some((tmp, root))
}

/// `len` bytes of xorshift output, which gzip cannot shrink.
fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// One blob of a stored image.
struct Blob {
    short: String,
    size: u64,
}

/// The config and layers of `image` in `root`, and the manifest digest.
fn blobs(root: &Path, image: &str) -> (Vec<Blob>, String) {
    let v = inspect(root, image);
    let blobs = std::iter::once(&v["Manifest"]["config"])
        .chain(v["Manifest"]["layers"].as_array().expect("layers"))
        .map(|d| Blob {
            short: d["digest"].as_str().expect("digest")[7..19].to_string(),
            size: d["size"].as_u64().expect("size"),
        })
        .collect();
    (blobs, v["Id"].as_str().expect("Id").to_string())
}

/// The biggest blob: the noise layer.
fn noise_layer(blobs: &[Blob]) -> &Blob {
    let big = blobs.iter().max_by_key(|b| b.size).expect("blobs");
    assert!(
        big.size > NOISE as u64,
        "the noise was compressed: {}",
        big.size
    );
    big
}

/// Every drawing of `short`'s bar on the terminal, as (done, total) byte figures,
/// e.g. ("1.50 MiB", "4.00 MiB").
fn drawn_bars(raw: &str, short: &str) -> Vec<(String, String)> {
    let label = format!("{short}: ");
    raw.match_indices(&label)
        .filter_map(|(at, _)| {
            let (done, rest) = raw[at + label.len()..].split_once('/')?;
            let mut words = rest.split_whitespace();
            let total = format!("{} {}", words.next()?, words.next()?);
            let done = done.trim();
            (is_figure(done) && is_figure(&total)).then(|| (done.to_string(), total))
        })
        .collect()
}

/// `1.50 MiB`, `353 B`: a byte figure as indicatif writes one.
fn is_figure(s: &str) -> bool {
    s.split_once(' ')
        .is_some_and(|(n, unit)| n.parse::<f64>().is_ok() && ["B", "KiB", "MiB"].contains(&unit))
}

/// indicatif's binary size figure for a bar's total.
fn mib(size: u64) -> String {
    format!("{:.2} MiB", size as f64 / (1u64 << 20) as f64)
}

/// The byte bars were drawn for the noise layer (the mode is live, not plain)
/// and then cleared: the screen keeps `first`, one `verb` line per blob in any
/// order, and `last` at the bottom.
fn assert_drawn_then_cleared(p: &Pty, blobs: &[Blob], first: &str, verb: &str, last: &str) {
    let raw = &p.terminal;
    assert!(p.success, "{raw:?}");
    let big = noise_layer(blobs);
    let bars = drawn_bars(raw, &big.short);
    assert!(!bars.is_empty(), "no bar for {} in {raw:?}", big.short);
    assert!(
        bars.iter().all(|(_, total)| *total == mib(big.size)),
        "{bars:?}"
    );
    // Plain mode would print whole lines, never move the cursor.
    assert!(raw.contains("\x1b[2K"), "{raw:?}");
    let shown = screen(raw, COLS as usize);
    assert!(
        !shown.iter().any(|l| l.contains(['█', '░'])),
        "a bar was left on screen: {shown:#?}"
    );
    assert_eq!(shown.first().map(String::as_str), Some(first), "{shown:#?}");
    assert_eq!(shown.last().map(String::as_str), Some(last), "{shown:#?}");
    one_line_per_blob(&shown[1..shown.len() - 1], verb, blobs);
    let big_line = format!("{}: {verb} {:.3}MB", big.short, big.size as f64 / 1e6);
    assert!(shown.contains(&big_line), "{big_line:?} in {shown:#?}");
}

/// Each line is `SHORT: VERB …`, one for every blob.
fn one_line_per_blob(lines: &[impl AsRef<str>], verb: &str, blobs: &[Blob]) {
    let mut said: Vec<&str> = lines
        .iter()
        .map(|l| {
            let l = l.as_ref();
            let (short, what) = l.split_once(": ").unwrap_or(("", ""));
            assert!(
                what.starts_with(&format!("{verb} ")),
                "{l:?} in {:#?}",
                lines.iter().map(AsRef::as_ref).collect::<Vec<&str>>()
            );
            short
        })
        .collect();
    said.sort();
    let mut want: Vec<&str> = blobs.iter().map(|b| b.short.as_str()).collect();
    want.sort();
    assert_eq!(said, want);
}

/// Pushes `app:1` to `dest` without a terminal; returns the manifest digest.
fn push_quietly(root: &Path, dest: &str) -> String {
    ok(mybuild(root).args(["push", "-q", "app:1", dest]))
        .0
        .trim()
        .to_string()
}

#[test]
fn push_on_a_terminal_draws_byte_bars_per_blob_then_one_line_each() {
    let Some((tmp, root)) = setup() else { return };
    let reg = Registry::start();
    let dest = format!("{}/tty/app:1", reg.addr);
    let (blobs, id) = blobs(&root, "app:1");
    let p = in_pty(
        tmp.path(),
        mybuild(&root).args(["push", "app:1", &dest]),
        COLS,
    )
    .expect("script");
    assert_eq!(p.stdout.trim(), id);
    assert_drawn_then_cleared(
        &p,
        &blobs,
        &format!("pushing app:1 to {dest}"),
        "pushed",
        &pushed_line(&root, "1", &id),
    );
    // The registry holds what the terminal said.
    assert_eq!(ok(mybuild(&root).args(["digest", &dest])).0.trim(), id);
}

#[test]
fn pull_on_a_terminal_draws_byte_bars_per_blob_then_one_line_each() {
    let Some((tmp, root)) = setup() else { return };
    let reg = Registry::start();
    let dest = format!("{}/tty/app:1", reg.addr);
    let (blobs, id) = blobs(&root, "app:1");
    assert_eq!(push_quietly(&root, &dest), id);

    let fresh = tmp.path().join("fresh");
    let p = in_pty(tmp.path(), mybuild(&fresh).args(["pull", &dest]), COLS).expect("script");
    assert_eq!(p.stdout.trim(), dest);
    assert_drawn_then_cleared(
        &p,
        &blobs,
        &format!("pulling {dest}"),
        "pulled",
        &format!("Digest: {id}"),
    );
    assert_eq!(inspect(&fresh, &dest)["Id"].as_str(), Some(id.as_str()));
    ok(mybuild(&fresh).arg("fsck"));

    // A terminal narrower than a bar's text: drawn wrapped, cleared all the same.
    let narrow = tmp.path().join("narrow");
    let p = in_pty(tmp.path(), mybuild(&narrow).args(["pull", &dest]), 20).expect("script");
    assert!(p.success, "{:?}", p.terminal);
    assert_eq!(p.stdout.trim(), dest);
    assert!(
        !drawn_bars(&p.terminal, &noise_layer(&blobs).short).is_empty(),
        "{:?}",
        p.terminal
    );
    let shown = screen(&p.terminal, 20);
    assert!(!shown.iter().any(|l| l.contains(['█', '░'])), "{shown:#?}");
    assert!(
        shown.concat().ends_with(&format!("Digest: {id}")),
        "{shown:#?}"
    );
    ok(mybuild(&narrow).arg("fsck"));
}

/// Plain progress: whole lines, no cursor movement. The first says what starts,
/// then one `verb` line per blob in any order, and the result (`last`) at the end.
fn assert_plain(p: &Pty, blobs: &[Blob], first: &str, verb: &str, last: &str) {
    let raw = &p.terminal;
    assert!(p.success, "{raw:?}");
    assert!(
        !raw.contains('\x1b'),
        "escape sequences in plain output: {raw:?}"
    );
    // The terminal turns each newline into CR LF.
    let lines: Vec<&str> = raw.split_terminator("\r\n").collect();
    assert_eq!(lines.len(), blobs.len() + 2, "{lines:#?}");
    assert_eq!(lines[0], first, "{lines:#?}");
    assert_eq!(lines[blobs.len() + 1], last, "{lines:#?}");
    one_line_per_blob(&lines[1..=blobs.len()], verb, blobs);
}

/// `push`'s last line for a manifest stored in `root`.
fn pushed_line(root: &Path, tag: &str, digest: &str) -> String {
    let size = std::fs::metadata(root.join("blobs/sha256").join(&digest[7..]))
        .map(|m| m.len())
        .expect("manifest blob");
    format!("{tag}: digest: {digest} size: {size}")
}

#[test]
fn plain_and_quiet_progress_on_a_terminal_draw_no_bars() {
    let Some((tmp, root)) = setup() else { return };
    let reg = Registry::start();
    let dest = format!("{}/tty/app:1", reg.addr);
    let (blobs, id) = blobs(&root, "app:1");

    let p = in_pty(
        tmp.path(),
        mybuild(&root).args(["push", "--progress", "plain", "app:1", &dest]),
        COLS,
    )
    .expect("script");
    assert_eq!(p.stdout.trim(), id);
    assert_plain(
        &p,
        &blobs,
        &format!("pushing app:1 to {dest}"),
        "pushed",
        &pushed_line(&root, "1", &id),
    );

    let fresh = tmp.path().join("fresh");
    let p = in_pty(
        tmp.path(),
        mybuild(&fresh).args(["pull", "--progress=plain", &dest]),
        COLS,
    )
    .expect("script");
    assert_eq!(p.stdout.trim(), dest);
    let (first, last) = (format!("pulling {dest}"), format!("Digest: {id}"));
    assert_plain(&p, &blobs, &first, "pulled", &last);

    // Quiet: the terminal gets nothing, standard output just the result.
    let other = format!("{}/tty/other:1", reg.addr);
    let p = in_pty(
        tmp.path(),
        mybuild(&root).args(["push", "-q", "app:1", &other]),
        COLS,
    )
    .expect("script");
    assert!(p.success);
    assert_eq!((p.terminal.as_str(), p.stdout.trim()), ("", id.as_str()));
    let quiet = tmp.path().join("quiet");
    let p = in_pty(
        tmp.path(),
        mybuild(&quiet).args(["pull", "-q", &other]),
        COLS,
    )
    .expect("script");
    assert!(p.success);
    assert_eq!((p.terminal.as_str(), p.stdout.trim()), ("", other.as_str()));
    assert_eq!(inspect(&quiet, &other)["Id"].as_str(), Some(id.as_str()));
}

/// indicatif draws nothing where TERM is unset, and drops the lines printed
/// above its bars there too; CI asks for plain lines unless `--progress=tty`.
#[test]
fn a_terminal_without_term_or_in_ci_gets_plain_lines_unless_tty_is_asked_for() {
    let Some((tmp, root)) = setup() else { return };
    let reg = Registry::start();
    let dest = format!("{}/tty/app:1", reg.addr);
    let (blobs, id) = blobs(&root, "app:1");

    let p = in_pty(
        tmp.path(),
        mybuild(&root)
            .args(["push", "app:1", &dest])
            .env_remove("TERM"),
        COLS,
    )
    .expect("script");
    assert_eq!(p.stdout.trim(), id);
    let first = format!("pushing app:1 to {dest}");
    assert_plain(&p, &blobs, &first, "pushed", &pushed_line(&root, "1", &id));
    let p = in_pty(
        tmp.path(),
        mybuild(&root)
            .args(["push", "--progress=tty", "app:1", &dest])
            .env_remove("TERM"),
        COLS,
    )
    .expect("script");
    assert!(!p.success);
    assert_eq!(
        p.terminal,
        "error: --progress=tty: TERM is unset or dumb, so the terminal cannot show progress\r\n"
    );

    let (first, last) = (format!("pulling {dest}"), format!("Digest: {id}"));
    let ci = tmp.path().join("ci");
    let p = in_pty(
        tmp.path(),
        mybuild(&ci).args(["pull", &dest]).env("CI", "1"),
        COLS,
    )
    .expect("script");
    assert_plain(&p, &blobs, &first, "pulled", &last);
    let asked = tmp.path().join("asked");
    let p = in_pty(
        tmp.path(),
        mybuild(&asked)
            .args(["pull", "--progress=tty", &dest])
            .env("CI", "1"),
        COLS,
    )
    .expect("script");
    assert_eq!(p.stdout.trim(), dest);
    assert_drawn_then_cleared(&p, &blobs, &first, "pulled", &last);

    // A build's steps and their output, likewise.
    let ctx = context(tmp.path(), "FROM busybox\nRUN echo say''-hi\n", &[]);
    let p = in_pty(
        tmp.path(),
        mybuild(&root).arg(&ctx).env_remove("TERM"),
        COLS,
    )
    .expect("script");
    assert!(p.success, "{:?}", p.terminal);
    assert!(!p.terminal.contains('\x1b'), "{:?}", p.terminal);
    assert!(p.terminal.contains("#1 say-hi\r\n"), "{:?}", p.terminal);
}

/// A base pulled for FROM is drawn in the build's own view: its byte bars, then
/// one line per blob, then the steps below, and nothing left of any bar.
#[test]
fn a_build_on_a_terminal_draws_its_base_pull_and_steps_in_one_view() {
    let Some((tmp, root)) = setup() else { return };
    let reg = Registry::start();
    let dest = format!("{}/tty/base:1", reg.addr);
    let (blobs, id) = blobs(&root, "app:1");
    assert_eq!(
        ok(mybuild(&root).args(["push", "-q", "app:1", &dest]))
            .0
            .trim(),
        id
    );

    let fresh = tmp.path().join("fresh");
    let ctx = context(
        tmp.path(),
        &format!("FROM {dest}\nRUN echo built''-here\n"),
        &[],
    );
    let p = in_pty(
        tmp.path(),
        mybuild(&fresh)
            .args(["build", "--progress=tty", "-t", "b:1"])
            .arg(&ctx),
        COLS,
    )
    .expect("script");
    let raw = &p.terminal;
    assert!(p.success, "{raw:?}");
    let big = noise_layer(&blobs);
    assert!(!drawn_bars(raw, &big.short).is_empty(), "{raw:?}");
    let shown = screen(raw, COLS as usize);
    assert!(!shown.iter().any(|l| l.contains(['█', '░'])), "{shown:#?}");
    assert_eq!(shown[0], format!("pulling {dest}"), "{shown:#?}");
    one_line_per_blob(&shown[1..=blobs.len()], "pulled", &blobs);
    let rest: Vec<&str> = shown[blobs.len() + 1..]
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(rest[0], "#1 built-here", "{shown:#?}");
    assert!(
        rest[1].starts_with("✔ #1 [stage-0] RUN echo built''-here "),
        "{shown:#?}"
    );
    assert!(rest[2].starts_with("writing image sha256:"), "{shown:#?}");
    assert_eq!(rest[3], "naming to b:1 done", "{shown:#?}");
}
