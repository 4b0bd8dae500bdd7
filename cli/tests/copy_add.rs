//! ADD (local archives, URLs, --checksum, --unpack) and COPY/ADD --link end to end:
//! a busybox base made with `mybuild import`, real archives made with tar and the
//! compressors, an HTTP server on 127.0.0.1, results read back with umoci.

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

mod common;

use common::{fails, lists_repo, ok, serve, unpack};

/// `mybuild` without proxy settings: the test server is local.
fn mybuild(root: &Path) -> Command {
    let mut c = common::mybuild(root);
    for v in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
    ] {
        c.env_remove(v);
    }
    c
}

/// A store with busybox imported, once `tools` are known to be there.
fn setup(tools: &[&str]) -> Option<(TempDir, PathBuf)> {
    if !tools.iter().all(|t| testdata::require_tool(t)) {
        return None;
    }
    common::setup()
}

fn context(tmp: &Path, name: &str, dockerfile: &str) -> PathBuf {
    let ctx = tmp.join(name);
    std::fs::create_dir_all(&ctx).expect("ctx");
    std::fs::write(ctx.join("Dockerfile"), dockerfile).expect("Dockerfile");
    ctx
}

fn sh(script: &str) {
    let st = Command::new("sh")
        .args(["-ec", script])
        .status()
        .expect("sh");
    assert!(st.success(), "{script}");
}

/// A small tree archived by tar (owners 1234:5678) in `dir/plain.tar`, compressed
/// copies next to it, and a gzip archive under a name that does not say so.
fn make_archives(dir: &Path) {
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("bin")).expect("bin");
    std::fs::create_dir_all(tree.join("etc")).expect("etc");
    std::fs::write(tree.join("bin/tool"), "#!/bin/sh\necho tool\n").expect("tool");
    std::fs::set_permissions(tree.join("bin/tool"), PermissionsExt::from_mode(0o755))
        .expect("mode");
    std::fs::write(tree.join("etc/conf"), "key=value\n").expect("conf");
    std::fs::set_permissions(tree.join("etc/conf"), PermissionsExt::from_mode(0o640))
        .expect("mode");
    std::fs::set_permissions(tree.join("etc"), PermissionsExt::from_mode(0o750)).expect("mode");
    std::os::unix::fs::symlink("bin/tool", tree.join("link")).expect("symlink");
    let d = dir.display();
    let t = tree.display();
    sh(&format!(
        "tar -C {t} --numeric-owner --owner=1234 --group=5678 -cf {d}/plain.tar bin etc link
         gzip -9 -c {d}/plain.tar > {d}/a.tar.gz
         xz -c {d}/plain.tar > {d}/a.tar.xz
         bzip2 -c {d}/plain.tar > {d}/a.tar.bz2
         zstd -q -c {d}/plain.tar > {d}/a.tar.zst
         cp {d}/a.tar.gz {d}/gzipped.bin
         echo 'not an archive' > {d}/fake.tar.gz"
    ));
}

fn check_tree(dir: &Path) {
    let tool = dir.join("bin/tool");
    assert_eq!(
        std::fs::read_to_string(&tool).unwrap_or_else(|e| panic!("{}: {e}", tool.display())),
        "#!/bin/sh\necho tool\n"
    );
    let md = std::fs::metadata(&tool).expect("tool");
    assert_eq!(md.mode() & 0o7777, 0o755, "{}", tool.display());
    assert_eq!((md.uid(), md.gid()), (1234, 5678), "{}", tool.display());
    let conf = std::fs::metadata(dir.join("etc/conf")).expect("conf");
    assert_eq!(conf.mode() & 0o7777, 0o640);
    let etc = std::fs::metadata(dir.join("etc")).expect("etc");
    assert_eq!(etc.mode() & 0o7777, 0o750);
    assert_eq!(
        std::fs::read_link(dir.join("link")).expect("link"),
        PathBuf::from("bin/tool")
    );
}

#[test]
fn add_extracts_local_archives_of_every_compression() {
    let Some((tmp, root)) = setup(&["tar", "gzip", "xz", "bzip2", "zstd"]) else {
        return;
    };
    let ctx = context(
        tmp.path(),
        "ctx",
        "FROM busybox\n\
         ADD plain.tar /x/plain/\n\
         ADD a.tar.gz /x/gz\n\
         ADD a.tar.xz /x/xz/\n\
         ADD a.tar.bz2 /x/bz2/\n\
         ADD a.tar.zst /x/zst/\n\
         ADD gzipped.bin /x/named/\n\
         ADD fake.tar.gz /x/fake/\n\
         ADD --unpack=false a.tar.gz /x/kept/\n\
         ADD --chown=7:8 --chmod=0600 a.tar.gz /x/chowned/\n\
         ADD a.tar.xz a.tar.zst /etc/\n",
    );
    make_archives(&ctx);
    ok(mybuild(&root).args(["-t", "arch:1"]).arg(&ctx));
    let rootfs = unpack(tmp.path(), &root, "arch:1");
    for d in ["plain", "gz", "xz", "bz2", "zst", "named"] {
        check_tree(&rootfs.join("x").join(d));
    }
    // Destinations that existed keep their metadata; new ones are 0755 root.
    let x = std::fs::metadata(rootfs.join("x/gz")).expect("x/gz");
    assert_eq!((x.mode() & 0o7777, x.uid()), (0o755, 0));
    // A file named like an archive is copied when its content is not one.
    assert_eq!(
        std::fs::read_to_string(rootfs.join("x/fake/fake.tar.gz")).expect("fake"),
        "not an archive\n"
    );
    // --unpack=false keeps the archive byte for byte.
    assert_eq!(
        std::fs::read(rootfs.join("x/kept/a.tar.gz")).expect("kept"),
        std::fs::read(ctx.join("a.tar.gz")).expect("orig")
    );
    assert!(!rootfs.join("x/kept/bin").exists());
    // --chown overrides the archive's owners; --chmod does not apply to archives.
    let c = std::fs::metadata(rootfs.join("x/chowned/bin/tool")).expect("chowned");
    assert_eq!((c.uid(), c.gid(), c.mode() & 0o7777), (7, 8, 0o755));
    let s = std::fs::symlink_metadata(rootfs.join("x/chowned/link")).expect("link");
    assert_eq!((s.uid(), s.gid()), (7, 8));
    // Extracting into /etc adds to it: busybox's files stay, /etc keeps its mode.
    check_tree(&rootfs.join("etc"));
    assert!(rootfs.join("etc/passwd").exists(), "lower content kept");
    assert!(rootfs.join("bin/busybox").exists());
    ok(mybuild(&root).arg("fsck"));
}

#[test]
fn hostile_archive_fails_and_writes_nothing_outside() {
    let Some((tmp, root)) = setup(&["gzip"]) else {
        return;
    };
    let ctx = context(tmp.path(), "ctx", "FROM busybox\nADD evil.bin /dst/\n");
    std::fs::write(ctx.join("evil.bin"), testdata::tars::dotdot_traversal()).expect("evil");
    let err = fails(mybuild(&root).args(["-t", "evil:1"]).arg(&ctx));
    assert!(err.contains("Dockerfile:2"), "{err}");
    assert!(err.contains("extracting evil.bin into /dst/"), "{err}");
    assert!(err.contains("climbs above the target"), "{err}");
    // The same escape inside gzip is refused the same way.
    std::fs::write(ctx.join("evil.bin"), testdata::tars::deep_dotdot()).expect("evil");
    sh(&format!(
        "gzip -f {}/evil.bin && mv {0}/evil.bin.gz {0}/evil.bin",
        ctx.display()
    ));
    let err = fails(mybuild(&root).args(["-t", "evil:1"]).arg(&ctx));
    assert!(err.contains("climbs above the target"), "{err}");
    // Nothing named `evil` anywhere: not in the store, not beside it.
    let out = Command::new("find")
        .arg(tmp.path())
        .args(["-name", "evil"])
        .output()
        .expect("find");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let images = ok(mybuild(&root).arg("images")).0;
    assert!(!images.contains("evil"), "{images}");
}

#[test]
fn add_from_url_downloads_checks_and_does_not_extract() {
    let Some((tmp, root)) = setup(&["tar", "gzip", "xz", "bzip2", "zstd", "sha256sum"]) else {
        return;
    };
    let scratch = tmp.path().join("archives");
    std::fs::create_dir_all(&scratch).expect("dir");
    make_archives(&scratch);
    let tgz = std::fs::read(scratch.join("a.tar.gz")).expect("tgz");
    let hello = b"hello over http\n".to_vec();
    std::fs::write(scratch.join("hello.txt"), &hello).expect("hello");
    let out = Command::new("sha256sum")
        .arg(scratch.join("hello.txt"))
        .output()
        .expect("sha256sum");
    let hex = String::from_utf8_lossy(&out.stdout);
    let sum = format!("sha256:{}", hex.split_whitespace().next().expect("digest"));
    let wrong = format!("sha256:{}", "0".repeat(64));
    let mut routes = HashMap::new();
    routes.insert("/files/hello.txt".to_string(), (200, hello.clone()));
    routes.insert("/files/a.tar.gz".to_string(), (200, tgz.clone()));
    routes.insert("/proxied/p.txt".to_string(), (200, b"via proxy\n".to_vec()));
    let srv = serve(routes);
    let base = format!("http://127.0.0.1:{}", srv.port);
    let ctx = context(
        tmp.path(),
        "ctx",
        &format!(
            "FROM busybox\n\
             ADD {base}/files/hello.txt /srv/\n\
             ADD {base}/files/hello.txt /srv/renamed\n\
             ADD --checksum={sum} {base}/files/hello.txt /srv/checked/\n\
             ADD --chown=5:6 --chmod=0644 {base}/files/hello.txt /srv/owned/\n\
             ADD {base}/files/a.tar.gz /srv/remote/\n\
             ADD --unpack=true {base}/files/a.tar.gz /srv/unpacked/\n"
        ),
    );
    ok(mybuild(&root).args(["-t", "url:1"]).arg(&ctx));
    // Each URL is fetched once per build, however many steps name it (the step with
    // --checksum checks the file already fetched).
    assert_eq!(srv.gets("/files/hello.txt"), 1, "{:?}", srv.requests);
    assert_eq!(srv.gets("/files/a.tar.gz"), 1, "{:?}", srv.requests);
    let rootfs = unpack(tmp.path(), &root, "url:1");
    for p in ["srv/hello.txt", "srv/renamed", "srv/checked/hello.txt"] {
        let f = rootfs.join(p);
        assert_eq!(std::fs::read(&f).expect(p), hello, "{p}");
        let md = std::fs::metadata(&f).expect(p);
        assert_eq!(
            md.mode() & 0o7777,
            0o600,
            "{p}: BuildKit's mode for downloads"
        );
        assert_eq!(md.mtime(), 784111777, "{p}: mtime from Last-Modified");
    }
    let owned = std::fs::metadata(rootfs.join("srv/owned/hello.txt")).expect("owned");
    assert_eq!(
        (owned.uid(), owned.gid(), owned.mode() & 0o7777),
        (5, 6, 0o644)
    );
    // A remote archive is a file, not extracted, unless --unpack=true.
    assert_eq!(
        std::fs::read(rootfs.join("srv/remote/a.tar.gz")).expect("remote"),
        tgz
    );
    assert!(!rootfs.join("srv/remote/bin").exists());
    check_tree(&rootfs.join("srv/unpacked"));

    // A wrong checksum fails naming both digests; nothing is tagged.
    let bad = context(
        tmp.path(),
        "bad",
        &format!("FROM busybox\nADD --checksum={wrong} {base}/files/hello.txt /srv/\n"),
    );
    let err = fails(mybuild(&root).args(["-t", "bad:1"]).arg(&bad));
    assert!(err.contains("Dockerfile:2"), "{err}");
    assert!(err.contains(&sum), "actual digest named: {err}");
    assert!(err.contains(&wrong), "expected digest named: {err}");
    assert!(lists_repo(&root, "busybox") && !lists_repo(&root, "bad"));

    // A 404 names the URL and the status.
    let missing = context(
        tmp.path(),
        "missing",
        &format!("FROM busybox\nADD {base}/nope.txt /srv/\n"),
    );
    let err = fails(mybuild(&root).args(["-t", "missing:1"]).arg(&missing));
    assert!(err.contains(&format!("{base}/nope.txt")), "{err}");
    assert!(err.contains("404"), "{err}");

    // --checksum needs a URL, as BuildKit says.
    let local = context(
        tmp.path(),
        "local",
        &format!("FROM busybox\nADD --checksum={sum} Dockerfile /srv/\n"),
    );
    let err = fails(mybuild(&root).args(["-t", "local:1"]).arg(&local));
    assert!(
        err.contains("checksum requires HTTP(S) or Git sources"),
        "{err}"
    );

    // COPY takes no URLs.
    let copy_url = context(
        tmp.path(),
        "copyurl",
        &format!("FROM busybox\nCOPY {base}/files/hello.txt /srv/\n"),
    );
    let err = fails(mybuild(&root).args(["-t", "copyurl:1"]).arg(&copy_url));
    assert!(err.contains("source can't be a URL for COPY"), "{err}");

    // HTTP_PROXY is honoured: the request reaches the proxy (ureq tunnels with CONNECT).
    let proxied = context(
        tmp.path(),
        "proxied",
        "FROM busybox\nADD http://mybuild-test.invalid/proxied/p.txt /srv/\n",
    );
    ok(mybuild(&root)
        .args(["-t", "proxied:1"])
        .env("HTTP_PROXY", &base)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .arg(&proxied));
    let rootfs = unpack(tmp.path(), &root, "proxied:1");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("srv/p.txt")).expect("p"),
        "via proxy\n"
    );
    assert!(srv
        .requests
        .lock()
        .expect("lock")
        .iter()
        .any(|r| r.starts_with("CONNECT mybuild-test.invalid:80")
            || r.starts_with("GET http://mybuild-test.invalid/proxied/p.txt")));
}

#[test]
fn copy_link_does_not_look_at_the_image_below() {
    let Some((tmp, root)) = setup(&[]) else {
        return;
    };
    let ctx = context(
        tmp.path(),
        "ctx",
        "FROM busybox\n\
         RUN mkdir -p /real /real2 /dirx && ln -s /real /app && ln -s /real2 /app2 \
             && mkdir -m 0700 /data /data2 && chown 33:33 /data /data2\n\
         COPY --link f.txt /app/sub/\n\
         ADD --link f.txt /app2/\n\
         COPY f.txt /data/\n\
         COPY --link f.txt /data2/\n\
         COPY --link f.txt /dirx\n",
    );
    std::fs::write(ctx.join("f.txt"), "linked\n").expect("f");
    ok(mybuild(&root).args(["-t", "link:1"]).arg(&ctx));
    let rootfs = unpack(tmp.path(), &root, "link:1");
    // An image symlink on the path is replaced by the layer's directory.
    for (dir, file) in [("app", "app/sub/f.txt"), ("app2", "app2/f.txt")] {
        let md = std::fs::symlink_metadata(rootfs.join(dir)).expect(dir);
        assert!(md.is_dir(), "/{dir} became a directory of the --link layer");
        assert_eq!(
            std::fs::read_to_string(rootfs.join(file)).expect(file),
            "linked\n"
        );
    }
    assert!(rootfs.join("real").is_dir());
    assert!(!rootfs.join("real/sub").exists(), "symlink not followed");
    assert!(!rootfs.join("real2/f.txt").exists(), "symlink not followed");
    // Without --link an existing parent keeps its owner and mode; with it the layer
    // brings its own (0755 root), as BuildKit's merged layer does.
    let data = std::fs::metadata(rootfs.join("data")).expect("data");
    assert_eq!((data.mode() & 0o7777, data.uid()), (0o700, 33));
    let data2 = std::fs::metadata(rootfs.join("data2")).expect("data2");
    assert_eq!((data2.mode() & 0o7777, data2.uid()), (0o755, 0));
    assert!(rootfs.join("data2/f.txt").is_file());
    // A destination without a trailing slash is a file name: the image's directory
    // there is not seen, so the file replaces it.
    assert_eq!(
        std::fs::read_to_string(rootfs.join("dirx")).expect("dirx is a file"),
        "linked\n"
    );
    assert!(rootfs.join("bin/busybox").exists(), "lower layers kept");
}

#[test]
fn archives_land_on_the_image_as_buildkit_applies_them() {
    let Some((tmp, root)) = setup(&["tar"]) else {
        return;
    };
    let ctx = context(
        tmp.path(),
        "ctx",
        "FROM busybox\n\
         RUN mkdir -m 0711 /opt && chown 9:9 /opt\n\
         ADD deep.tar /\n",
    );
    let src = tmp.path().join("deep");
    std::fs::create_dir_all(src.join("opt/tool")).expect("dirs");
    std::fs::write(src.join("opt/tool/x"), "x\n").expect("x");
    // Only the file: its parent directories are implied.
    sh(&format!(
        "tar -C {} --no-recursion -cf {}/deep.tar opt/tool/x",
        src.display(),
        ctx.display()
    ));
    ok(mybuild(&root).args(["-t", "deep:1"]).arg(&ctx));
    let rootfs = unpack(tmp.path(), &root, "deep:1");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("opt/tool/x")).expect("x"),
        "x\n"
    );
    let opt = std::fs::metadata(rootfs.join("opt")).expect("opt");
    assert_eq!((opt.mode() & 0o7777, opt.uid(), opt.gid()), (0o711, 9, 9));
    let tool = std::fs::metadata(rootfs.join("opt/tool")).expect("tool");
    assert_eq!((tool.mode() & 0o7777, tool.uid()), (0o755, 0));

    // --chown reaches what the archive brings, not the image directories it passes.
    let owned = context(
        tmp.path(),
        "owned",
        "FROM busybox\n\
         RUN mkdir -m 0711 /opt && chown 9:9 /opt\n\
         ADD --chown=7:8 deep.tar /\n",
    );
    std::fs::copy(ctx.join("deep.tar"), owned.join("deep.tar")).expect("copy");
    ok(mybuild(&root).args(["-t", "owned:1"]).arg(&owned));
    let rootfs = unpack(tmp.path(), &root, "owned:1");
    let opt = std::fs::metadata(rootfs.join("opt")).expect("opt");
    assert_eq!((opt.mode() & 0o7777, opt.uid(), opt.gid()), (0o711, 9, 9));
    for p in ["opt/tool", "opt/tool/x"] {
        let m = std::fs::metadata(rootfs.join(p)).expect(p);
        assert_eq!((m.uid(), m.gid()), (7, 8), "{p}");
    }

    // A whiteout in an ADDed archive hides the image's file, as the same entry does
    // once BuildKit's layer is applied.
    let wh = context(tmp.path(), "wh", "FROM busybox\nADD wh.tar /\n");
    std::fs::write(
        wh.join("wh.tar"),
        testdata::tars::RawTar::new()
            .file(b"etc/.wh.group", b"")
            .file(b"etc/added", b"added\n")
            .finish(),
    )
    .expect("wh.tar");
    ok(mybuild(&root).args(["-t", "wh:1"]).arg(&wh));
    let rootfs = unpack(tmp.path(), &root, "wh:1");
    assert!(!rootfs.join("etc/group").exists(), "whited out");
    assert!(!rootfs.join("etc/.wh.group").exists());
    assert!(rootfs.join("etc/passwd").exists(), "the rest of /etc stays");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/added")).expect("added"),
        "added\n"
    );

    // A relative image symlink on the way is followed, as BuildKit follows it: the
    // merged-/usr layout stays intact.
    let usr = context(
        tmp.path(),
        "usr",
        "FROM busybox\n\
         RUN mkdir -p /usr/lib && chmod 0750 /usr/lib && ln -s usr/lib /lib\n\
         ADD lib.tar /\n",
    );
    std::fs::write(
        usr.join("lib.tar"),
        testdata::tars::RawTar::new()
            .file(b"lib/x.so", b"so\n")
            .finish(),
    )
    .expect("lib.tar");
    ok(mybuild(&root).args(["-t", "usr:1"]).arg(&usr));
    let rootfs = unpack(tmp.path(), &root, "usr:1");
    assert_eq!(
        std::fs::read_link(rootfs.join("lib")).expect("/lib stays a symlink"),
        PathBuf::from("usr/lib")
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("usr/lib/x.so")).expect("x.so"),
        "so\n"
    );
    let m = std::fs::metadata(rootfs.join("usr/lib")).expect("usr/lib");
    assert_eq!(m.mode() & 0o7777, 0o750);

    let lnk = context(
        tmp.path(),
        "lnk",
        "FROM busybox\nRUN mkdir /elsewhere && ln -s /elsewhere /opt\nADD deep.tar /\n",
    );
    std::fs::copy(ctx.join("deep.tar"), lnk.join("deep.tar")).expect("copy");
    let err = fails(mybuild(&root).args(["-t", "lnk:1"]).arg(&lnk));
    assert!(err.contains("Dockerfile:3"), "{err}");
    assert!(
        err.contains("would write through symlink /opt of the image"),
        "{err}"
    );
}

#[test]
fn add_from_url_sends_userinfo_as_basic_auth() {
    let Some((tmp, root)) = setup(&[]) else {
        return;
    };
    let mut routes = HashMap::new();
    routes.insert("/private/f.txt".to_string(), (200, b"private\n".to_vec()));
    let srv = serve(routes);
    let ctx = context(
        tmp.path(),
        "ctx",
        &format!(
            "FROM busybox\nADD http://me%40corp:pa%3Ass@127.0.0.1:{}/private/f.txt /f.txt\n",
            srv.port
        ),
    );
    ok(mybuild(&root).args(["-t", "auth:1"]).arg(&ctx));
    let answers = srv.answers("/private/f.txt");
    assert_eq!(answers.len(), 1, "{:?}", srv.requests);
    // base64("me@corp:pa:ss")
    assert_eq!(
        answers[0].authorization.as_deref(),
        Some("Basic bWVAY29ycDpwYTpzcw==")
    );
    let requests = srv.requests.lock().expect("lock").clone();
    assert!(
        requests.iter().all(|r| !r.contains("pa%3Ass")),
        "{requests:?}"
    );
    let rootfs = unpack(tmp.path(), &root, "auth:1");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("f.txt")).expect("f"),
        "private\n"
    );
}

/// `git` for the test's own repositories: no user configuration, fixed identity.
fn git(dir: &Path, args: &[&str], time: i64) -> String {
    let (out, _) = ok(Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .env("GIT_AUTHOR_DATE", format!("@{time} +0000"))
        .env("GIT_COMMITTER_DATE", format!("@{time} +0000")));
    out.trim().to_string()
}

/// A work repository under `tmp/work` and its bare copy `tmp/git/repo.git`:
/// commit one (1600000000: a.txt "one", run.sh 0755, link -> a.txt, sub/ with a
/// nested dir; tags `light` and annotated `ann`), branch `dev` ("dev"), and `main`
/// at commit two (1600000100: a.txt "two"). Returns (work, bare, one, two).
fn git_repo(tmp: &Path) -> (PathBuf, PathBuf, String, String) {
    let work = tmp.join("work");
    std::fs::create_dir_all(work.join("sub/deep")).expect("dirs");
    git(&work, &["init", "-q", "-b", "main"], 0);
    std::fs::write(work.join("a.txt"), "one\n").expect("a");
    std::fs::write(work.join("run.sh"), "#!/bin/sh\n").expect("run");
    std::fs::set_permissions(work.join("run.sh"), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    std::os::unix::fs::symlink("a.txt", work.join("link")).expect("link");
    std::fs::write(work.join("sub/s.txt"), "subfile\n").expect("s");
    std::fs::write(work.join("sub/deep/d.txt"), "deep\n").expect("d");
    git(&work, &["add", "-A"], 0);
    git(&work, &["commit", "-q", "-m", "one"], 1600000000);
    let one = git(&work, &["rev-parse", "HEAD"], 0);
    git(&work, &["tag", "light"], 0);
    git(&work, &["tag", "-a", "ann", "-m", "annotated"], 1600000000);
    git(&work, &["checkout", "-q", "-b", "dev"], 0);
    std::fs::write(work.join("a.txt"), "dev\n").expect("a");
    git(&work, &["commit", "-q", "-am", "dev"], 1600000050);
    git(&work, &["checkout", "-q", "main"], 0);
    std::fs::write(work.join("a.txt"), "two\n").expect("a");
    git(&work, &["commit", "-q", "-am", "two"], 1600000100);
    let two = git(&work, &["rev-parse", "HEAD"], 0);
    let bare = tmp.join("git/repo.git");
    std::fs::create_dir_all(tmp.join("git")).expect("git dir");
    git(
        tmp,
        &[
            "clone",
            "-q",
            "--bare",
            &work.to_string_lossy(),
            &bare.to_string_lossy(),
        ],
        0,
    );
    (work, bare, one, two)
}

/// Ids of the build's steps whose instruction starts with `prefix`, and whether each
/// was CACHED, from the plain progress log.
fn cached_steps(log: &str, prefix: &str) -> Vec<(String, bool)> {
    let mut out: Vec<(usize, String, bool)> = Vec::new();
    for line in log.lines() {
        let Some((id, tail)) = line.strip_prefix('#').and_then(|r| r.split_once(' ')) else {
            continue;
        };
        let Ok(id) = id.parse::<usize>() else {
            continue;
        };
        if let Some((_, instr)) = tail.strip_prefix('[').and_then(|t| t.split_once("] ")) {
            if instr.starts_with(prefix) && !out.iter().any(|(i, _, _)| *i == id) {
                out.push((id, instr.to_string(), false));
            }
        } else if tail == "CACHED" {
            if let Some(e) = out.iter_mut().find(|(i, _, _)| *i == id) {
                e.2 = true;
            }
        }
    }
    out.into_iter().map(|(_, t, c)| (t, c)).collect()
}

#[test]
fn add_from_git_checks_out_refs_subdirs_and_keeps_git_dir_on_request() {
    let Some((tmp, root)) = setup(&["git"]) else {
        return;
    };
    let (_work, bare, one, two) = git_repo(tmp.path());
    let daemon = common::git_daemon(&tmp.path().join("git"));
    let repo = daemon.url("repo.git");
    // The same repository over dumb HTTP (`.git` URL), from the test HTTP server.
    let srv = serve(common::dumb_http_routes(&bare, "/r/repo.git"));
    let http = format!("http://127.0.0.1:{}/r/repo.git", srv.port);
    let dockerfile = format!(
        "FROM busybox\n\
         ADD {repo} /src/head\n\
         ADD {repo}#dev /src/dev\n\
         ADD {repo}#light /src/light\n\
         ADD {repo}#ann /src/ann\n\
         ADD {repo}#{one}:sub /src/sub\n\
         ADD --keep-git-dir=true {repo}#main /src/kept\n\
         ADD --checksum={two} --chown=5:6 --chmod=755 {repo}#main /src/owned\n\
         ADD {http}#dev:sub/deep /src/http/\n"
    );
    let ctx = context(tmp.path(), "ctx", &dockerfile);
    let (_, log) = ok(mybuild(&root).args(["-t", "git:1"]).arg(&ctx));
    assert!(
        cached_steps(&log, "ADD").iter().all(|(_, c)| !c),
        "first build runs every ADD:\n{log}"
    );
    let rootfs = unpack(tmp.path(), &root, "git:1");
    let read = |p: &str| std::fs::read_to_string(rootfs.join(p)).expect(p);
    assert_eq!(read("src/head/a.txt"), "two\n", "default branch");
    assert_eq!(read("src/dev/a.txt"), "dev\n", "branch");
    assert_eq!(read("src/light/a.txt"), "one\n", "lightweight tag");
    assert_eq!(read("src/ann/a.txt"), "one\n", "annotated tag");
    assert_eq!(read("src/kept/a.txt"), "two\n");
    // A subdirectory's contents only.
    assert_eq!(read("src/sub/s.txt"), "subfile\n");
    assert_eq!(read("src/sub/deep/d.txt"), "deep\n");
    assert!(!rootfs.join("src/sub/a.txt").exists());
    assert!(!rootfs.join("src/sub/sub").exists());
    assert_eq!(read("src/http/d.txt"), "deep\n", "dumb HTTP .git URL");
    // Modes as the repository records them, owners root, mtimes the commit's.
    let md = |p: &str| std::fs::symlink_metadata(rootfs.join(p)).expect(p);
    assert_eq!(md("src/head/a.txt").mode() & 0o7777, 0o644);
    assert_eq!(md("src/head/run.sh").mode() & 0o7777, 0o755);
    assert_eq!(
        (md("src/head/a.txt").uid(), md("src/head/a.txt").gid()),
        (0, 0)
    );
    assert_eq!(
        std::fs::read_link(rootfs.join("src/head/link")).expect("link"),
        Path::new("a.txt")
    );
    assert_eq!(md("src/head/a.txt").mtime(), 1600000100);
    assert_eq!(md("src/head/sub/deep").mtime(), 1600000100);
    assert_eq!(md("src/light/a.txt").mtime(), 1600000000);
    // --chown and --chmod apply to what a git source adds.
    let owned = md("src/owned/a.txt");
    assert_eq!(
        (owned.uid(), owned.gid(), owned.mode() & 0o7777),
        (5, 6, 0o755)
    );
    // .git only with --keep-git-dir=true, on the branch, without the fetch's remote
    // credentials.
    for p in ["src/head", "src/dev", "src/sub", "src/owned", "src/http"] {
        assert!(!rootfs.join(p).join(".git").exists(), "{p}/.git");
    }
    assert_eq!(read("src/kept/.git/HEAD"), "ref: refs/heads/main\n");
    assert!(read("src/kept/.git/config").contains(&repo));

    // Built again from the same commits: every ADD is CACHED.
    let (_, log) = ok(mybuild(&root).args(["-t", "git:2"]).arg(&ctx));
    let steps = cached_steps(&log, "ADD");
    assert_eq!(steps.len(), 8, "{log}");
    assert!(steps.iter().all(|(_, c)| *c), "{steps:?}\n{log}");
}

#[test]
fn add_from_git_reruns_on_a_new_commit_and_reports_errors() {
    let Some((tmp, root)) = setup(&["git"]) else {
        return;
    };
    let (work, bare, one, two) = git_repo(tmp.path());
    let daemon = common::git_daemon(&tmp.path().join("git"));
    let repo = daemon.url("repo.git");
    let ctx = context(
        tmp.path(),
        "ctx",
        &format!("FROM busybox\nADD {repo}#light /l\nADD {repo}#main /m\n"),
    );
    ok(mybuild(&root).args(["-t", "c:1"]).arg(&ctx));
    let (_, log) = ok(mybuild(&root).args(["-t", "c:2"]).arg(&ctx));
    let steps = cached_steps(&log, "ADD");
    assert_eq!(steps.len(), 2, "{log}");
    assert!(steps.iter().all(|(_, c)| *c), "{steps:?}\n{log}");

    // A new commit on main: that step runs again and brings it; the tag's stays cached.
    std::fs::write(work.join("a.txt"), "three\n").expect("a");
    git(&work, &["commit", "-q", "-am", "three"], 1600000200);
    git(&work, &["push", "-q", &bare.to_string_lossy(), "main"], 0);
    let (_, log) = ok(mybuild(&root).args(["-t", "c:3"]).arg(&ctx));
    let steps = cached_steps(&log, "ADD");
    assert_eq!(
        steps.iter().map(|(_, c)| *c).collect::<Vec<_>>(),
        vec![true, false],
        "{log}"
    );
    let rootfs = unpack(tmp.path(), &root, "c:3");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("m/a.txt")).expect("m"),
        "three\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("l/a.txt")).expect("l"),
        "one\n"
    );

    let fails_with = |name: &str, line: &str| {
        let ctx = context(tmp.path(), name, &format!("FROM busybox\n{line}\n"));
        let err = fails(mybuild(&root).args(["-t", "bad:1"]).arg(&ctx));
        assert!(err.contains("Dockerfile:2"), "{err}");
        err
    };
    // --checksum must be the commit the ref resolves to.
    let err = fails_with("sum2", &format!("ADD --checksum={two} {repo}#light /x"));
    assert!(err.contains("commit checksum mismatch"), "{err}");
    assert!(err.contains(&one) && err.contains(&two), "{err}");
    let err = fails_with(
        "sum3",
        &format!("ADD --checksum=sha256:{} {repo} /x", "0".repeat(64)),
    );
    assert!(err.contains("expected a full commit sha"), "{err}");
    // An unknown ref, a missing subdirectory, an unreachable repository.
    let err = fails_with("ref", &format!("ADD {repo}#nope /x"));
    assert!(err.contains("unknown ref \"nope\""), "{err}");
    assert!(
        err.contains(&format!("ADD {repo}#nope /x")),
        "names the step: {err}"
    );
    let err = fails_with("subdir", &format!("ADD {repo}#main:missing /x"));
    assert!(err.contains("subdirectory \"missing\" not found"), "{err}");
    let err = fails_with("gone", &format!("ADD {} /x", daemon.url("absent.git")));
    assert!(err.contains("git ls-remote failed: fatal:"), "{err}");
    assert!(!lists_repo(&root, "bad"));
    // COPY takes neither git sources nor --keep-git-dir, as in BuildKit.
    let err = fails_with("copy", &format!("COPY {repo} /x"));
    assert!(err.contains("source can't be a git ref for COPY"), "{err}");
    let err = fails(mybuild(&root).args(["-t", "bad:2"]).arg(context(
        tmp.path(),
        "copyflag",
        "FROM busybox\nCOPY --keep-git-dir=true Dockerfile /x\n",
    )));
    assert!(err.contains("unknown flag: --keep-git-dir"), "{err}");
}
