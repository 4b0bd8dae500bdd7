//! Running a command under a pseudo-terminal and reading back the screen it drew.

use std::path::Path;
use std::process::{Command, Stdio};

use tempfile::TempDir;

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
    if !crate::require_tool("script") {
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
