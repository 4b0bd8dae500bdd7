//! Snapshots of what `--progress=plain` and `--progress=json` print for a small
//! build, a push and a pull: the text and the JSON event schema tools read.
//! Timings, the registry's port and temporary paths are redacted; the image
//! pushed and pulled is built from scratch with SOURCE_DATE_EPOCH, so its
//! digests are the same everywhere.

mod common;

use std::path::Path;

use common::*;
use testdata::registry::Registry;

/// `s` with every decimal number that follows `key` replaced by `with`.
fn redact_number(s: &str, key: &str, with: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(at) = rest.find(key) {
        let (head, tail) = rest.split_at(at + key.len());
        out.push_str(head);
        let n = tail
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(tail.len());
        out.push_str(if n > 0 { with } else { "" });
        rest = &tail[n..];
    }
    out.push_str(rest);
    out
}

/// Redacts `s`'s timings, and `subst`'s (text, placeholder) pairs.
fn normalise(s: &str, subst: &[(&str, &str)]) -> String {
    let mut s = s.to_string();
    for (from, to) in subst {
        s = s.replace(from, to);
    }
    let s = redact_number(&s, "\"elapsed_ms\":", "\"[ms]\"");
    let s = redact_number(&s, "\"time_ms\":", "\"[ms]\"");
    redact_number(&s, " DONE ", "[N.N]")
}

/// The lines between the first and the last sorted: a transfer's blobs finish
/// in any order.
fn blobs_sorted(s: &str) -> String {
    let mut lines: Vec<&str> = s.lines().collect();
    if lines.len() > 2 {
        let n = lines.len();
        lines[1..n - 1].sort();
    }
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// The image digest the build's last lines name, redacted (busybox differs
/// between machines).
fn image_digest(s: &str, digest: &str) -> String {
    s.replace(digest.trim(), "sha256:[image]")
}

#[test]
fn a_build_with_a_cached_step_prints_the_plain_and_json_snapshots() {
    let Some((tmp, root)) = setup() else { return };
    for progress in ["plain", "json"] {
        let store = tmp.path().join(format!("store-{progress}"));
        copy_store(&root, &store);
        let ctx = context(
            tmp.path(),
            "FROM busybox\nRUN echo built\nCOPY f /f\n",
            &[("f", progress)],
        );
        let run = |what: &str| {
            let iid = tmp.path().join("iid");
            let (_, err) = ok(mybuild(&store)
                .args(["build", "--progress", progress, "-t", "app:1", "--iidfile"])
                .arg(&iid)
                .arg(&ctx));
            let digest = std::fs::read_to_string(&iid).expect("iid");
            let tmp = tmp.path().display().to_string();
            format!(
                "{what}\n{}",
                image_digest(&normalise(&err, &[(&tmp, "[tmp]")]), &digest)
            )
        };
        let first = run("first build:");
        std::fs::write(ctx.join("f"), format!("{progress}, changed")).expect("f");
        let second = run("second build (RUN cached, COPY changed):");
        insta::assert_snapshot!(format!("build-{progress}"), format!("{first}\n{second}"));
    }
}

#[test]
fn a_push_and_a_pull_print_the_plain_and_json_snapshots() {
    let Some((tmp, root)) = setup() else { return };
    if !testdata::require_tool("docker-registry") {
        return;
    }
    let reg = Registry::start();
    let ctx = context(
        tmp.path(),
        "FROM scratch\nCOPY a /a\nCOPY b /b\n",
        &[("a", "hello\n"), ("b", "world\n")],
    );
    ok(mybuild(&root)
        .args(["build", "-q", "-t", "app:1"])
        .env("SOURCE_DATE_EPOCH", "0")
        .arg(&ctx));
    for progress in ["plain", "json"] {
        let dest = format!("{}/snap/{progress}:1", reg.addr);
        let subst = [(reg.addr.as_str(), "[registry]")];
        let (_, err) = ok(mybuild(&root).args(["push", "--progress", progress, "app:1", &dest]));
        let push = blobs_sorted(&normalise(&err, &subst));
        let fresh = tmp.path().join(format!("fresh-{progress}"));
        let (_, err) = ok(mybuild(&fresh).args(["pull", "--progress", progress, &dest]));
        let pull = blobs_sorted(&normalise(&err, &subst));
        insta::assert_snapshot!(format!("push-{progress}"), push);
        insta::assert_snapshot!(format!("pull-{progress}"), pull);
    }
}

/// A copy of the store at `from` (so each build starts from the same one).
fn copy_store(from: &Path, to: &Path) {
    ok(std::process::Command::new("cp").arg("-a").arg(from).arg(to));
}
