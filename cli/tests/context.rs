//! What of the build context a build sees: `.dockerignore` and
//! `<Dockerfile>.dockerignore`, `COPY --exclude` and `--parents`, contexts and
//! Dockerfiles on standard input, symlinks. Real busybox base, real namespaces;
//! results read back with `umoci unpack`.

mod common;

use common::{fails, mybuild, ok, setup, unpack};

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Runs `cmd` with `input` on standard input; returns (success, stderr).
fn with_stdin(cmd: &mut Command, input: &[u8]) -> (bool, String) {
    let (success, _, err) = common::with_stdin(cmd, input);
    (success, err)
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A context directory holding `files` (name, content); no Dockerfile unless listed.
fn context(tmp: &Path, files: &[(&str, &str)]) -> PathBuf {
    let ctx = tmp.join(format!("ctx-{}", NEXT.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&ctx).expect("ctx");
    for (name, body) in files {
        let p = ctx.join(name);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("dirs");
        std::fs::write(p, body).expect("file");
    }
    ctx
}

fn read(rootfs: &Path, path: &str) -> String {
    std::fs::read_to_string(rootfs.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn absent(rootfs: &Path, path: &str) -> bool {
    rootfs.join(path).symlink_metadata().is_err()
}

/// A tar of directory `dir`, entries named relative to it.
fn tar_of(dir: &Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", dir).expect("tar");
    b.into_inner().expect("tar bytes")
}

#[test]
fn dockerignore_excludes_files_and_directories_and_exceptions_reinclude() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        &[
            ("Dockerfile", "FROM busybox\nCOPY . /ctx/\n"),
            (
                ".dockerignore",
                "# build output\nsecret.txt\n/logs\n*/*.tmp\ndocs\n!docs/README.md\n",
            ),
            ("keep.txt", "kept"),
            ("secret.txt", "hidden"),
            ("logs/a.log", "log"),
            ("sub/x.tmp", "tmp"),
            ("sub/y.txt", "y"),
            ("docs/guide.md", "guide"),
            ("docs/README.md", "readme"),
        ],
    );
    ok(mybuild(&root).args(["-t", "ign:1"]).arg(&ctx));
    let fs = unpack(tmp.path(), &root, "ign:1");
    assert_eq!(read(&fs, "ctx/keep.txt"), "kept");
    assert_eq!(read(&fs, "ctx/sub/y.txt"), "y");
    assert_eq!(read(&fs, "ctx/docs/README.md"), "readme");
    for gone in [
        "ctx/secret.txt",
        "ctx/logs",
        "ctx/sub/x.tmp",
        "ctx/docs/guide.md",
    ] {
        assert!(absent(&fs, gone), "{gone} should be ignored");
    }
    // Not ignored, so COPY . copies them, as BuildKit does.
    assert!(read(&fs, "ctx/Dockerfile").contains("COPY . /ctx/"));
    assert!(read(&fs, "ctx/.dockerignore").contains("secret.txt"));

    // Ignoring the Dockerfile and .dockerignore hides them from COPY only.
    let ctx = context(
        tmp.path(),
        &[
            ("Dockerfile", "FROM busybox\nCOPY . /ctx/\n"),
            (".dockerignore", "Dockerfile\n.dockerignore\n"),
            ("a", "a"),
        ],
    );
    ok(mybuild(&root).args(["-t", "ign:2"]).arg(&ctx));
    let fs = unpack(tmp.path(), &root, "ign:2");
    assert_eq!(read(&fs, "ctx/a"), "a");
    assert!(absent(&fs, "ctx/Dockerfile"));
    assert!(absent(&fs, "ctx/.dockerignore"));
}

#[test]
fn dockerfile_specific_ignore_file_wins() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        &[
            ("build.Dockerfile", "FROM busybox\nCOPY . /ctx/\n"),
            ("build.Dockerfile.dockerignore", "a.txt\n"),
            (".dockerignore", "b.txt\n"),
            ("a.txt", "a"),
            ("b.txt", "b"),
        ],
    );
    ok(mybuild(&root)
        .args(["-t", "per:1", "-f"])
        .arg(ctx.join("build.Dockerfile"))
        .arg(&ctx));
    let fs = unpack(tmp.path(), &root, "per:1");
    assert!(
        absent(&fs, "ctx/a.txt"),
        "build.Dockerfile.dockerignore applies"
    );
    assert_eq!(read(&fs, "ctx/b.txt"), "b", ".dockerignore does not");

    // Another Dockerfile in the same context gets the context's .dockerignore.
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nCOPY . /ctx/\n").expect("df");
    ok(mybuild(&root).args(["-t", "per:2"]).arg(&ctx));
    let fs = unpack(tmp.path(), &root, "per:2");
    assert_eq!(read(&fs, "ctx/a.txt"), "a");
    assert!(absent(&fs, "ctx/b.txt"));
}

#[test]
fn copying_an_ignored_file_fails_with_a_clear_message() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        &[
            ("Dockerfile", "FROM busybox\nCOPY secret.txt /\n"),
            (".dockerignore", "secret.txt\n"),
            ("secret.txt", "s"),
        ],
    );
    let err = fails(mybuild(&root).args(["-t", "bad:1"]).arg(&ctx));
    assert!(
        err.contains(
            "Dockerfile:2: COPY secret.txt /: source \"secret.txt\" not found in build context or excluded by .dockerignore"
        ),
        "{err}"
    );

    let ctx = context(
        tmp.path(),
        &[
            ("Dockerfile", "FROM busybox\nCOPY x /\n"),
            (".dockerignore", "!\n"),
        ],
    );
    let err = fails(mybuild(&root).args(["-t", "bad:2"]).arg(&ctx));
    assert!(err.contains("illegal exclusion pattern"), "{err}");
    assert!(err.contains(".dockerignore"), "names the file: {err}");

    let ctx = context(
        tmp.path(),
        &[("Dockerfile", "FROM busybox\nCOPY --exclude=[ . /x/\n")],
    );
    let err = fails(mybuild(&root).args(["-t", "bad:3"]).arg(&ctx));
    assert!(
        err.contains("Dockerfile:2: COPY --exclude=[ . /x/: invalid pattern"),
        "{err}"
    );
}

#[test]
fn copy_exclude_and_parents() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        &[
            (
                "Dockerfile",
                "FROM busybox AS base\n\
                 RUN mkdir -p /test/a/b/c/d /test/a/b2/c/d/e \
                     && echo foo > /test/a/b/c/d/foo && echo bar > /test/a/b2/c/d/e/bar\n\
                 FROM busybox\n\
                 COPY --from=base --parents /test/a/b/./c/d /out1/\n\
                 COPY --from=base --parents /test/a/./*/c /out2/\n\
                 COPY --exclude=*.txt hom* /ex/\n\
                 COPY --exclude=*.png --exclude=sub dir /dirx/\n\
                 COPY --parents ./a/./b/c.txt /out/\n\
                 COPY --parents x/a.txt y/a.txt /par/\n\
                 WORKDIR /w\n\
                 COPY --parents --exclude=**/*.md src/** ./\n",
            ),
            ("home.md", "home md"),
            ("home.txt", "home txt"),
            ("dir/a.png", "png"),
            ("dir/b.txt", "b"),
            ("dir/sub/c.txt", "c"),
            ("a/b/c.txt", "abc"),
            ("x/a.txt", "xa"),
            ("y/a.txt", "ya"),
            ("src/one.rs", "1"),
            ("src/mod/two.rs", "2"),
            ("src/mod/notes.md", "md"),
        ],
    );
    ok(mybuild(&root).args(["-t", "ex:1"]).arg(&ctx));
    let fs = unpack(tmp.path(), &root, "ex:1");
    assert_eq!(read(&fs, "ex/home.md"), "home md");
    assert!(absent(&fs, "ex/home.txt"));
    assert_eq!(read(&fs, "dirx/b.txt"), "b");
    assert!(absent(&fs, "dirx/a.png"));
    assert!(absent(&fs, "dirx/sub"));
    assert_eq!(read(&fs, "out/b/c.txt"), "abc");
    assert!(absent(&fs, "out/a"));
    assert!(absent(&fs, "out/c.txt"));
    assert_eq!(read(&fs, "par/x/a.txt"), "xa");
    assert_eq!(read(&fs, "par/y/a.txt"), "ya");
    assert_eq!(read(&fs, "w/src/one.rs"), "1");
    assert_eq!(read(&fs, "w/src/mod/two.rs"), "2");
    assert!(absent(&fs, "w/src/mod/notes.md"));
    // From another stage, with absolute sources and a `/./` pivot (BuildKit's cases).
    assert_eq!(read(&fs, "out1/c/d/foo"), "foo\n");
    assert!(absent(&fs, "out1/test"));
    assert_eq!(read(&fs, "out2/b/c/d/foo"), "foo\n");
    assert_eq!(read(&fs, "out2/b2/c/d/e/bar"), "bar\n");
}

#[test]
fn context_from_a_tar_on_stdin() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        &[
            (
                "Dockerfile",
                "FROM busybox\nCOPY . /ctx/\nRUN cat /ctx/data/hello > /made\n",
            ),
            (".dockerignore", "skip.txt\n"),
            ("data/hello", "hello from a tar"),
            ("skip.txt", "no"),
        ],
    );
    let plain = tar_of(&ctx);
    let (ok_plain, err) = with_stdin(mybuild(&root).args(["-t", "tar:plain", "-"]), &plain);
    assert!(ok_plain, "{err}");
    let fs = unpack(tmp.path(), &root, "tar:plain");
    assert_eq!(read(&fs, "made"), "hello from a tar");
    assert_eq!(read(&fs, "ctx/data/hello"), "hello from a tar");
    assert!(
        absent(&fs, "ctx/skip.txt"),
        ".dockerignore inside the tar applies"
    );

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&plain).expect("gzip");
    let gz = gz.finish().expect("gzip");
    let (ok_gz, err) = with_stdin(mybuild(&root).args(["-t", "tar:gz", "-"]), &gz);
    assert!(ok_gz, "{err}");
    let fs = unpack(tmp.path(), &root, "tar:gz");
    assert_eq!(read(&fs, "ctx/data/hello"), "hello from a tar");

    // -f names a Dockerfile inside the tar.
    let ctx = context(
        tmp.path(),
        &[
            ("sub/alt.Dockerfile", "FROM busybox\nCOPY f /f\n"),
            ("f", "alt"),
        ],
    );
    let (ok_f, err) = with_stdin(
        mybuild(&root).args(["-t", "tar:f", "-f", "sub/alt.Dockerfile", "-"]),
        &tar_of(&ctx),
    );
    assert!(ok_f, "{err}");
    assert_eq!(read(&unpack(tmp.path(), &root, "tar:f"), "f"), "alt");

    // A tar that climbs out of its root is refused.
    let mut evil = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.as_gnu_mut().expect("gnu").name[..9].copy_from_slice(b"../escape");
    h.set_cksum();
    evil.append(&h, &b"x"[..]).expect("append");
    let (ok_evil, err) = with_stdin(
        mybuild(&root).args(["-t", "tar:evil", "-"]),
        &evil.into_inner().expect("tar"),
    );
    assert!(!ok_evil);
    assert!(err.contains("climbs above the target"), "{err}");
}

#[test]
fn dockerfile_on_stdin_has_no_context() {
    let Some((tmp, root)) = setup() else { return };
    let (built, err) = with_stdin(
        mybuild(&root).args(["-t", "stdin:1", "-"]),
        b"FROM busybox\nRUN echo from stdin > /hi\n",
    );
    assert!(built, "{err}");
    assert_eq!(
        read(&unpack(tmp.path(), &root, "stdin:1"), "hi"),
        "from stdin\n"
    );

    let (built, err) = with_stdin(
        mybuild(&root).args(["-t", "stdin:2", "-"]),
        b"FROM busybox\nCOPY anything /\n",
    );
    assert!(!built);
    assert!(
        err.contains("-:2: COPY anything /: source \"anything\" not found"),
        "{err}"
    );
}

#[test]
fn context_symlinks_are_copied_as_links() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        &[
            ("Dockerfile", "FROM busybox\nCOPY . /ctx/\n"),
            ("inside.txt", "in"),
        ],
    );
    let secret = tmp.path().join("host-secret");
    std::fs::write(&secret, "host data").expect("secret");
    std::os::unix::fs::symlink(&secret, ctx.join("outside")).expect("symlink");
    std::os::unix::fs::symlink("../../etc", ctx.join("up")).expect("symlink");
    ok(mybuild(&root).args(["-t", "links:1"]).arg(&ctx));
    let fs = unpack(tmp.path(), &root, "links:1");
    for (link, target) in [
        ("ctx/outside", secret.clone()),
        ("ctx/up", PathBuf::from("../../etc")),
    ] {
        let md = fs.join(link).symlink_metadata().expect(link);
        assert!(md.file_type().is_symlink(), "{link} is a link");
        assert_eq!(std::fs::read_link(fs.join(link)).expect(link), target);
    }
    assert_eq!(read(&fs, "ctx/inside.txt"), "in");

    // A link a source names is followed, but never out of the context: not to the
    // host's files, nor below a symlinked directory outside.
    for (df, link) in [
        ("FROM busybox\nCOPY outside /single\n", "\"outside\""),
        ("FROM busybox\nCOPY up/passwd /p\n", "\"up\""),
    ] {
        let ctx = context(tmp.path(), &[("Dockerfile", df)]);
        if !ctx.join("outside").exists() {
            std::os::unix::fs::symlink(&secret, ctx.join("outside")).expect("symlink");
        }
        std::os::unix::fs::symlink("/etc", ctx.join("up")).expect("symlink");
        let err = fails(mybuild(&root).args(["-t", "links:2"]).arg(&ctx));
        assert!(err.contains("outside the build context"), "{err}");
        assert!(err.contains(link), "{err}");
        assert!(!err.contains("host data"), "{err}");
    }
}
