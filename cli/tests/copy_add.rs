//! ADD (local archives, URLs, --checksum, --unpack) and COPY/ADD --link end to end:
//! a busybox base made with `mybuild import`, real archives made with tar and the
//! compressors, an HTTP server on 127.0.0.1, results read back with umoci.

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

mod common;

use common::{fails, ok, serve, unpack};

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
    assert!(!ok(mybuild(&root).arg("images")).0.contains("bad"));

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

    // Git sources stay refused, named.
    let git = context(
        tmp.path(),
        "git",
        "FROM busybox\nADD https://example.com/repo.git /src/\n",
    );
    let err = fails(mybuild(&root).args(["-t", "git:1"]).arg(&git));
    assert!(
        err.contains("ADD from a git repository (https://example.com/repo.git)"),
        "{err}"
    );

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
