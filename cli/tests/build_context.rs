//! `--build-context NAME=VALUE`: local directories (with their own `.dockerignore`,
//! keyed by content), `docker-image://` overrides of bases, `oci-layout://` images,
//! stages replaced by a context of their name, and the forms refused. Real busybox
//! base, real namespaces; results read back with umoci.

mod common;

use common::{fails, inspect, mybuild, ok, setup, unpack};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A directory under `tmp` holding `files` (name, content).
fn dir(tmp: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let d = tmp.join(name);
    std::fs::create_dir_all(&d).expect("dir");
    for (f, body) in files {
        let p = d.join(f);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("dirs");
        std::fs::write(p, body).expect("file");
    }
    d
}

fn read(rootfs: &Path, path: &str) -> String {
    std::fs::read_to_string(rootfs.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The instructions that ran (not CACHED), from `--progress=plain` output.
fn ran(log: &str) -> Vec<String> {
    let mut text: BTreeMap<usize, String> = BTreeMap::new();
    let mut cached: BTreeMap<usize, bool> = BTreeMap::new();
    for line in log.lines() {
        let Some((id, tail)) = line.strip_prefix('#').and_then(|r| r.split_once(' ')) else {
            continue;
        };
        let Ok(id) = id.parse::<usize>() else {
            continue;
        };
        if let Some((_, instr)) = tail.strip_prefix('[').and_then(|t| t.split_once("] ")) {
            text.insert(id, instr.to_string());
        } else if tail == "CACHED" {
            cached.insert(id, true);
        } else if tail.starts_with("DONE ") {
            cached.insert(id, false);
        }
    }
    text.into_iter()
        .filter(|(id, _)| !cached.get(id).copied().unwrap_or(false))
        .map(|(_, t)| t)
        .collect()
}

fn build(root: &Path, ctx: &Path, tag: &str, contexts: &[String]) -> String {
    let mut cmd = mybuild(root);
    cmd.args(["build", "--progress=plain", "-t", tag]);
    for c in contexts {
        cmd.arg("--build-context").arg(c);
    }
    ok(cmd.arg(ctx)).1
}

#[test]
fn local_context_feeds_copy_and_mounts_through_its_dockerignore_keyed_by_content() {
    let Some((tmp, root)) = setup() else { return };
    let extra = dir(
        tmp.path(),
        "extra",
        &[
            ("file", "one"),
            ("hidden", "secret"),
            (".dockerignore", "hidden\n"),
        ],
    );
    // The main context has a file of the same name: the named one must win.
    let ctx = dir(
        tmp.path(),
        "main",
        &[
            (
                "Dockerfile",
                "FROM busybox\n\
                 COPY --from=extra file /file\n\
                 RUN --mount=from=extra,target=/m cat /m/file > /seen && test ! -e /m/hidden\n\
                 COPY main.txt /main.txt\n",
            ),
            ("file", "main context"),
            ("main.txt", "main"),
        ],
    );
    let named = format!("extra={}", extra.display());
    let log = build(&root, &ctx, "nc:1", std::slice::from_ref(&named));
    let fs = unpack(tmp.path(), &root, "nc:1");
    assert_eq!(read(&fs, "file"), "one");
    assert_eq!(read(&fs, "seen"), "one");
    assert_eq!(read(&fs, "main.txt"), "main");
    assert_eq!(ran(&log).len(), 3, "{log}");

    // Unchanged: every step cached, same image.
    let log = build(&root, &ctx, "nc:2", std::slice::from_ref(&named));
    assert!(ran(&log).is_empty(), "{log}");
    assert_eq!(
        inspect(&root, "nc:1")["Digest"],
        inspect(&root, "nc:2")["Digest"]
    );

    // A file of the named context changed, the main context not: the COPY and the
    // mounting RUN run again, the main-context COPY's key is unchanged but under a
    // new parent.
    std::fs::write(extra.join("file"), "two").expect("edit");
    let log = build(&root, &ctx, "nc:3", std::slice::from_ref(&named));
    let again = ran(&log);
    assert!(
        again.iter().any(|s| s.starts_with("COPY --from=extra")),
        "{log}"
    );
    assert!(again.iter().any(|s| s.starts_with("RUN --mount")), "{log}");
    let fs = unpack(tmp.path(), &root, "nc:3");
    assert_eq!(read(&fs, "file"), "two");
    assert_eq!(read(&fs, "seen"), "two");

    // Only the ignored file changed: nothing the build sees changed.
    std::fs::write(extra.join("hidden"), "other secret").expect("edit");
    let log = build(&root, &ctx, "nc:4", std::slice::from_ref(&named));
    assert!(ran(&log).is_empty(), "{log}");

    // The ignored file is not there for COPY either.
    let bad = dir(
        tmp.path(),
        "bad",
        &[(
            "Dockerfile",
            "FROM busybox\nCOPY --from=extra hidden /hidden\n",
        )],
    );
    let err = fails(
        mybuild(&root)
            .args(["build", "--build-context", &named])
            .arg(&bad),
    );
    assert!(
        err.contains("\"hidden\" not found in build context or excluded by .dockerignore"),
        "{err}"
    );
}

#[test]
fn named_context_replaces_the_stage_of_its_name() {
    let Some((tmp, root)) = setup() else { return };
    let src = dir(tmp.path(), "src", &[("f", "from the named context")]);
    let ctx = dir(
        tmp.path(),
        "main",
        &[(
            "Dockerfile",
            "FROM busybox AS src\n\
                 RUN echo from the stage > /f\n\
                 FROM busybox\n\
                 COPY --from=src /f /f\n",
        )],
    );
    let log = build(&root, &ctx, "repl:1", &[format!("src={}", src.display())]);
    let fs = unpack(tmp.path(), &root, "repl:1");
    assert_eq!(read(&fs, "f"), "from the named context");
    // The replaced stage never ran.
    assert!(!log.contains("RUN echo from the stage"), "{log}");
}

#[test]
fn docker_image_context_overrides_bases() {
    let Some((tmp, root)) = setup() else { return };
    // `other-name` exists with different content; the override must win over it.
    let other = dir(
        tmp.path(),
        "other",
        &[("Dockerfile", "FROM busybox\nRUN echo other > /marker\n")],
    );
    build(&root, &other, "other-name", &[]);
    let ctx = dir(
        tmp.path(),
        "main",
        &[(
            "Dockerfile",
            "FROM other-name\nRUN ls /marker > /seen 2>&1 || echo no marker > /seen\n",
        )],
    );
    build(&root, &ctx, "plain:1", &[]);
    assert_eq!(
        read(&unpack(tmp.path(), &root, "plain:1"), "seen"),
        "/marker\n"
    );
    build(
        &root,
        &ctx,
        "over:1",
        &["other-name=docker-image://busybox".to_string()],
    );
    let fs = unpack(tmp.path(), &root, "over:1");
    assert_eq!(read(&fs, "seen"), "no marker\n");
    // Built on busybox's layer, keyed by its digest.
    let busybox = inspect(&root, "busybox");
    let over = inspect(&root, "over:1");
    assert_eq!(
        over["Manifest"]["layers"][0]["digest"], busybox["Manifest"]["layers"][0]["digest"],
        "{over}"
    );

    // A name that is no image at all, as a base and as COPY --from.
    let ctx = dir(
        tmp.path(),
        "base",
        &[(
            "Dockerfile",
            "FROM base\nCOPY --from=base /bin/busybox /copied\nRUN echo ran > /ran\n",
        )],
    );
    build(
        &root,
        &ctx,
        "base:1",
        &["base=docker-image://busybox:latest".to_string()],
    );
    let fs = unpack(tmp.path(), &root, "base:1");
    assert_eq!(read(&fs, "ran"), "ran\n");
    assert!(fs.join("copied").is_file());
}

#[test]
fn oci_layout_context_from_a_saved_archive_and_from_a_store() {
    let Some((tmp, root)) = setup() else { return };
    let src = dir(
        tmp.path(),
        "src",
        &[(
            "Dockerfile",
            "FROM busybox\nRUN echo from layout > /layout\n",
        )],
    );
    build(&root, &src, "layout-src:1", &[]);
    let manifest_digest = inspect(&root, "layout-src:1")["Digest"]
        .as_str()
        .expect("digest")
        .to_string();
    // `mybuild save` writes an OCI layout; extract it into a directory.
    let tar = tmp.path().join("saved.tar");
    ok(mybuild(&root)
        .args(["save", "-o"])
        .arg(&tar)
        .arg("layout-src:1"));
    let layout = tmp.path().join("layout");
    tar::Archive::new(std::fs::File::open(&tar).expect("tar"))
        .unpack(&layout)
        .expect("unpack");

    let ctx = dir(
        tmp.path(),
        "main",
        &[(
            "Dockerfile",
            "FROM img\nRUN cat /layout > /seen\nCOPY --from=img /layout /copied\n",
        )],
    );
    // A store with nothing in it: every blob must come from the layout.
    let empty = tmp.path().join("store2");
    for (i, spec) in [
        format!("{}:layout-src:1", layout.display()),
        format!("{}@{manifest_digest}", layout.display()),
        // The store root is an OCI layout too.
        format!("{}:layout-src:1", root.display()),
    ]
    .iter()
    .enumerate()
    {
        let tag = format!("fromlayout:{i}");
        build(&empty, &ctx, &tag, &[format!("img=oci-layout://{spec}")]);
        let fs = unpack(tmp.path(), &empty, &tag);
        assert_eq!(read(&fs, "seen"), "from layout\n", "{spec}");
        assert_eq!(read(&fs, "copied"), "from layout\n", "{spec}");
    }
    let err = fails(
        mybuild(&empty)
            .args(["build", "--build-context"])
            .arg(format!("img=oci-layout://{}:nosuchtag", layout.display()))
            .arg(&ctx),
    );
    assert!(err.contains("no image tagged \"nosuchtag\""), "{err}");
}

#[test]
fn refused_and_malformed_contexts_say_why() {
    let Some((tmp, root)) = setup() else { return };
    let extra = dir(tmp.path(), "extra", &[("f", "x")]);
    let ctx = dir(
        tmp.path(),
        "main",
        &[("Dockerfile", "FROM busybox\nCOPY --from=extra f /f\n")],
    );
    let attempt = |value: &str| {
        fails(
            mybuild(&root)
                .args(["build", "--build-context", value])
                .arg(&ctx),
        )
    };
    let err = attempt("extra=ftp://host/x");
    assert!(err.contains("unsupported context source ftp://"), "{err}");
    let err = attempt("extra");
    assert!(err.contains("expected NAME=VALUE"), "{err}");
    let err = attempt("Extra=/tmp");
    assert!(err.contains("invalid context name \"Extra\""), "{err}");
    let err = attempt(&format!("extra={}", tmp.path().join("missing").display()));
    assert!(
        err.contains("--build-context") && err.contains("No such file or directory"),
        "{err}"
    );
    let err = attempt("extra=https://github.com/o/r.git");
    assert!(err.contains("git repositories and http(s) URLs"), "{err}");
    let err = attempt("extra=target:other");
    assert!(err.contains("bake"), "{err}");

    // A directory is no base image.
    let from_dir = dir(
        tmp.path(),
        "fromdir",
        &[("Dockerfile", "FROM extra\nRUN true\n")],
    );
    let err = fails(
        mybuild(&root)
            .args(["build", "--build-context"])
            .arg(format!("extra={}", extra.display()))
            .arg(&from_dir),
    );
    assert!(
        err.contains("named context \"extra\" is a local directory, which cannot be a base image"),
        "{err}"
    );
}
