//! `mybuild -t … CONTEXT` end to end: real namespaces, real overlayfs, a busybox base
//! made with `mybuild import`, results read back with umoci.

mod common;

use common::*;

use std::path::{Path, PathBuf};

#[test]
fn hello_example_builds_as_the_readme_says() {
    let Some((tmp, root)) = setup() else { return };
    let hello = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/hello");
    let (_, log) = ok(mybuild(&root).args(["-t", "hello:1"]).arg(&hello));
    assert!(log.contains("naming to hello:1 done"), "{log}");
    let rootfs = unpack(tmp.path(), &root, "hello:1");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("srv/message")).expect("message"),
        "hello, world\n> built by mybuild\n"
    );
    let img = inspect(&root, "hello:1");
    assert_eq!(
        img["Config"]["config"]["Cmd"],
        serde_json::json!(["cat", "/srv/message"])
    );
    assert_eq!(
        img["Config"]["config"]["Labels"]["org.opencontainers.image.title"],
        "hello"
    );
    assert!(img["Config"]["config"]["Env"]
        .as_array()
        .expect("env")
        .contains(&"GREETING_FILE=/srv/message".into()));
    // The build stage's files are not in the final image.
    assert!(!rootfs.join("src").exists());
    // Build args reach RUN and never the config.
    ok(mybuild(&root)
        .args(["build", "-t", "hello:2", "--build-arg", "WHO=mybuild"])
        .arg(&hello));
    let rootfs2 = unpack(tmp.path(), &root, "hello:2");
    assert!(std::fs::read_to_string(rootfs2.join("srv/message"))
        .expect("m")
        .starts_with("hello, mybuild\n"));
    assert!(!serde_json::to_string(&inspect(&root, "hello:2")["Config"])
        .expect("s")
        .contains("WHO"));
}

#[test]
fn run_changes_copy_metadata_and_whiteouts_reach_the_image() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        "FROM busybox\n\
         COPY --chown=app:app --chmod=0640 a.txt /data/\n\
         COPY dir /data/dir\n\
         RUN rm /etc/group && ln -s /data/a.txt /link && mkdir -p /opt/x && echo hi > /opt/x/f\n\
         WORKDIR /work\n\
         USER app\n\
         RUN id -u > /tmp/uid; pwd > /tmp/pwd\n\
         ENTRYPOINT [\"/bin/sh\"]\n\
         EXPOSE 8080\n",
        &[("a.txt", "A\n"), ("dir/sub/b.txt", "B\n")],
    );
    // The base has an `app` user only if we add one: use a passwd that has it.
    let base_passwd = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n";
    let base_ctx = context(
        tmp.path(),
        "FROM busybox\nCOPY passwd group /etc/\n",
        &[
            ("passwd", base_passwd),
            ("group", "root:x:0:\napp:x:1000:\n"),
        ],
    );
    ok(mybuild(&root).args(["-t", "busybox"]).arg(&base_ctx));
    ok(mybuild(&root).args(["-t", "meta:1"]).arg(&ctx));
    let rootfs = unpack(tmp.path(), &root, "meta:1");
    use std::os::unix::fs::MetadataExt;
    let a = std::fs::metadata(rootfs.join("data/a.txt")).expect("a");
    assert_eq!((a.uid(), a.gid(), a.mode() & 0o7777), (1000, 1000, 0o640));
    assert_eq!(
        std::fs::read_to_string(rootfs.join("data/dir/sub/b.txt")).expect("b"),
        "B\n"
    );
    assert!(
        !rootfs.join("etc/group").exists(),
        "deleted by RUN (whiteout)"
    );
    assert_eq!(
        std::fs::read_link(rootfs.join("link")).expect("link"),
        PathBuf::from("/data/a.txt")
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("opt/x/f")).expect("f"),
        "hi\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("tmp/uid")).expect("uid"),
        "1000\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("tmp/pwd")).expect("pwd"),
        "/work\n"
    );
    let img = inspect(&root, "meta:1");
    let cfg = &img["Config"]["config"];
    assert_eq!(cfg["User"], "app");
    assert_eq!(cfg["WorkingDir"], "/work");
    assert_eq!(cfg["Entrypoint"], serde_json::json!(["/bin/sh"]));
    assert!(cfg["ExposedPorts"]["8080/tcp"].is_object());
    let history = img["Config"]["history"].as_array().expect("history");
    let layers = img["Manifest"]["layers"].as_array().expect("layers").len();
    let non_empty = history.iter().filter(|h| h["empty_layer"] != true).count();
    assert_eq!(non_empty, layers, "history and layers agree");
    ok(mybuild(&root).arg("fsck"));
}

#[test]
fn a_failing_run_names_the_line_and_exit_code_and_tags_nothing() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        "FROM busybox\nRUN echo before\nRUN echo boom >&2; exit 7\n",
        &[],
    );
    let err = fails(mybuild(&root).args(["-t", "broken:1"]).arg(&ctx));
    assert!(err.contains("#2 boom"), "output is shown live: {err}");
    assert!(
        err.contains("Dockerfile:3\n--------------------\n"),
        "{err}"
    );
    assert!(
        err.contains("   3 | >>> RUN echo boom >&2; exit 7\n"),
        "{err}"
    );
    assert!(err.contains("exit code: 7"), "{err}");
    let images = ok(mybuild(&root).arg("images")).0;
    assert!(!images.contains("broken"), "{images}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mounts.contains(&root.display().to_string()),
        "leftover mounts: {mounts}"
    );
}

#[test]
fn bad_inputs_give_clear_errors() {
    let Some((tmp, root)) = setup() else { return };
    let missing = context(tmp.path(), "FROM busybox\nCOPY nope.txt /\n", &[]);
    let err = fails(mybuild(&root).arg(&missing));
    assert!(
        err.contains("Dockerfile:2: COPY nope.txt /: source \"nope.txt\" not found"),
        "{err}"
    );

    let chown = context(
        tmp.path(),
        "FROM busybox\nCOPY Dockerfile /\nCOPY --chown=ghost Dockerfile /x\n",
        &[("f", "")],
    );
    let err = fails(mybuild(&root).arg(&chown));
    assert!(err.contains("unable to find user ghost"), "{err}");

    let no_base = context(tmp.path(), "FROM nothere:1\n", &[("a", ""), ("b", "")]);
    let err = fails(mybuild(&root).arg(&no_base));
    assert!(
        err.contains("base image \"nothere:1\" is not in the store"),
        "{err}"
    );

    let syntax = context(
        tmp.path(),
        "FROM busybox\nFOO bar\n",
        &[("a", ""), ("b", ""), ("c", "")],
    );
    let err = fails(mybuild(&root).arg(&syntax));
    assert!(err.contains("Dockerfile:2"), "{err}");
    assert!(err.to_lowercase().contains("unknown instruction"), "{err}");
}

#[test]
fn independent_stages_run_at_the_same_time() {
    let Some((tmp, root)) = setup() else { return };
    // Each stage records when its work started and ended; overlap is read from the
    // image, not from wall-clock time of the test.
    let ctx = context(
        tmp.path(),
        "FROM busybox AS a\n\
         RUN cut -d' ' -f1 /proc/uptime > /start && sleep 1 && cut -d' ' -f1 /proc/uptime > /end\n\
         FROM busybox AS b\n\
         RUN cut -d' ' -f1 /proc/uptime > /start && sleep 1 && cut -d' ' -f1 /proc/uptime > /end\n\
         FROM busybox\n\
         COPY --from=a /start /a.start\nCOPY --from=a /end /a.end\n\
         COPY --from=b /start /b.start\nCOPY --from=b /end /b.end\n",
        &[("x", "")],
    );
    ok(mybuild(&root).args(["-t", "par:1"]).arg(&ctx));
    let rootfs = unpack(tmp.path(), &root, "par:1");
    let t = |n: &str| -> f64 {
        std::fs::read_to_string(rootfs.join(n))
            .expect(n)
            .trim()
            .parse()
            .expect("timestamp")
    };
    let (a0, a1, b0, b1) = (t("a.start"), t("a.end"), t("b.start"), t("b.end"));
    assert!(
        a0 < b1 && b0 < a1,
        "stages did not overlap: a {a0}..{a1}, b {b0}..{b1}"
    );
}

#[test]
fn source_date_epoch_makes_builds_reproducible() {
    let Some((tmp, _)) = setup() else { return };
    let rootfs = testdata::images::busybox_rootfs_file(tmp.path()).expect("rootfs");
    let ctx = context(
        tmp.path(),
        "FROM busybox\nCOPY a.txt /a.txt\nRUN echo built > /b.txt && mkdir -p /d && touch /d/e\nENV X=1\n",
        &[("a.txt", "A\n")],
    );
    let mut digests = Vec::new();
    for n in 0..2 {
        let root = tmp.path().join(format!("repro-{n}"));
        ok(mybuild(&root)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .arg("import")
            .arg(&rootfs)
            .arg("busybox"));
        // Different file times in the context between the two builds must not matter.
        let now = std::time::SystemTime::now();
        let f = std::fs::File::options()
            .write(true)
            .open(ctx.join("a.txt"))
            .expect("a");
        f.set_modified(now).expect("mtime");
        let (id, _) = ok(mybuild(&root)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args(["-q", "-t", "r:1"])
            .arg(&ctx));
        digests.push(id.trim().to_string());
        let img = inspect(&root, "r:1");
        assert_eq!(img["Config"]["created"], "2023-11-14T22:13:20Z");
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    assert_eq!(digests[0], digests[1]);
}

#[test]
fn podman_loads_and_runs_the_built_image() {
    let Some((tmp, root)) = setup() else { return };
    if !testdata::require_tool("podman") || !testdata::require_tool("runc") {
        return;
    }
    let hello = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/hello");
    ok(mybuild(&root)
        .args(["-t", "mybuild-podman-test:1"])
        .arg(&hello));
    let archive = tmp.path().join("hello.tar");
    ok(mybuild(&root)
        .args(["save", "-o"])
        .arg(&archive)
        .arg("mybuild-podman-test:1"));
    let podman = |args: &[&str]| common::podman(tmp.path(), args);
    ok(&mut podman(&["load", "-i", &archive.display().to_string()]));
    let (out, _) = ok(&mut podman(&[
        "run",
        "--rm",
        "--network",
        "none",
        "mybuild-podman-test:1",
    ]));
    assert_eq!(out, "hello, world\n> built by mybuild\n");
    let _ = podman(&["rmi", "-a", "-f"]).output();
}

#[test]
fn an_interrupted_build_leaves_no_mounts_processes_or_garbage() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        "FROM busybox\nRUN echo sta''rted && sleep 600\n",
        &[("a", ""), ("b", ""), ("c", ""), ("d", "")],
    );
    // Wait for the RUN's own output (the step header spells it differently), so the
    // sandbox is up.
    let mut child = spawn_until(
        mybuild(&root)
            .args(["-t", "never:1", "--progress", "plain"])
            .arg(&ctx),
        "started",
    );
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().expect("wait");
    assert!(!status.success());
    // The sandbox's processes die with the build (PDEATHSIG cascade).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let sleeping = std::fs::read_dir("/proc")
            .expect("proc")
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("cmdline")).ok())
            .any(|c| c == "sleep\u{0}600\u{0}");
        if !sleeping {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sandbox process survived the interrupt"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!mounts.contains(&root.display().to_string()), "{mounts}");
    assert!(!ok(mybuild(&root).arg("images")).0.contains("never"));
    let (pruned, _) = ok(mybuild(&root).arg("prune"));
    // The killed RUN left its work, upper and empty-lower directories.
    assert!(
        pruned.contains("Deleted 0 unused snapshots and 3 leftover build directories"),
        "{pruned}"
    );
    let tmpdirs: Vec<_> = std::fs::read_dir(root.join("snapshots-v1/tmp"))
        .map(|rd| rd.flatten().filter(|e| e.path().is_dir()).collect())
        .unwrap_or_default();
    assert!(tmpdirs.is_empty(), "{tmpdirs:?}");
    assert!(ok(mybuild(&root).arg("fsck")).0.contains(": ok"));
}

#[test]
fn symbolic_chmod_gives_directories_and_executables_x() {
    use std::os::unix::fs::PermissionsExt;
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        "FROM busybox\nCOPY --chmod=u=rwX,go=rX tree /t\nCOPY --chmod=0600 tree/run.sh /octal.sh\n",
        &[
            ("tree/plain.txt", "p\n"),
            ("tree/run.sh", "#!/bin/sh\n"),
            ("tree/sub/x", ""),
        ],
    );
    for (path, mode) in [
        ("tree/plain.txt", 0o600),
        ("tree/run.sh", 0o700),
        ("tree/sub", 0o700),
    ] {
        std::fs::set_permissions(ctx.join(path), std::fs::Permissions::from_mode(mode))
            .expect("chmod");
    }
    ok(mybuild(&root).args(["-t", "modes:1"]).arg(&ctx));
    let rootfs = unpack(tmp.path(), &root, "modes:1");
    let mode = |p: &str| {
        std::fs::symlink_metadata(rootfs.join(p))
            .expect(p)
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("t/plain.txt"), 0o644);
    assert_eq!(mode("t/run.sh"), 0o755);
    assert_eq!(mode("t/sub"), 0o755);
    assert_eq!(mode("octal.sh"), 0o600);
    let err = fails(mybuild(&root).arg(context(
        tmp.path(),
        "FROM busybox\nCOPY --chmod=u+q tree /t\n",
        &[("tree/a", "")],
    )));
    assert!(err.contains("invalid --chmod \"u+q\""), "{err}");
}

#[test]
fn copy_keeps_xattrs_and_file_capabilities_and_keys_on_them() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        "FROM busybox\nCOPY tool /bin/tool\n\
         FROM busybox\nCOPY --from=0 /bin/tool /bin/tool2\nCOPY tool /bin/tool\n",
        &[("tool", "#!/bin/sh\necho tool\n")],
    );
    // cap_net_bind_service, effective (VFS_CAP_REVISION_2).
    let cap: [u8; 20] = [1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let set = |name: &str, value: &[u8]| {
        rustix::fs::lsetxattr(
            ctx.join("tool"),
            name,
            value,
            rustix::fs::XattrFlags::empty(),
        )
        .expect("setxattr on the test's temporary directory");
    };
    set("user.mybuild", b"one");
    set("security.capability", &cap);
    let get = |path: &Path, name: &str| {
        let mut buf = [0u8; 64];
        let n = rustix::fs::lgetxattr(path, name, &mut buf[..]).unwrap_or_else(|e| {
            panic!("{} has no {name}: {e}", path.display());
        });
        buf[..n].to_vec()
    };
    let build = |tag: &str| {
        let iid = tmp.path().join(format!("{tag}.iid"));
        ok(mybuild(&root)
            .args(["-t", tag, "--iidfile"])
            .arg(&iid)
            .arg(&ctx));
        std::fs::read_to_string(iid).expect("iid")
    };
    let first = build("caps:1");
    let rootfs = unpack(tmp.path(), &root, "caps:1");
    for file in ["bin/tool", "bin/tool2"] {
        let path = rootfs.join(file);
        assert_eq!(get(&path, "user.mybuild"), b"one", "{file}");
        assert_eq!(get(&path, "security.capability"), cap, "{file}");
    }
    assert_eq!(build("caps:2"), first, "nothing changed, same image");
    // Only an attribute changes: the COPY must not come from the cache.
    set("user.mybuild", b"two");
    let third = build("caps:3");
    assert_ne!(third, first);
    let rootfs = unpack(tmp.path(), &root, "caps:3");
    assert_eq!(get(&rootfs.join("bin/tool"), "user.mybuild"), b"two");
}

#[test]
fn add_host_lines_reach_run_and_key_the_step() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        "FROM busybox\nRUN cat /etc/hosts > /hosts\n",
        &[],
    );
    let build = |tag: &str, hosts: &[&str]| {
        let mut cmd = mybuild(&root);
        cmd.args(["build", "--progress=plain", "-t", tag]);
        for h in hosts {
            cmd.arg(format!("--add-host={h}"));
        }
        ok(cmd.arg(&ctx)).1
    };
    build(
        "hosts:1",
        &["db:10.1.2.3", "gw=host-gateway", "v6:[fd00::7]"],
    );
    let hosts =
        std::fs::read_to_string(unpack(tmp.path(), &root, "hosts:1").join("hosts")).expect("hosts");
    for line in [
        "10.1.2.3\tdb",
        "10.0.2.2\tgw",
        "fd00::7\tv6",
        "127.0.0.1\tlocalhost mybuild",
    ] {
        assert!(hosts.lines().any(|l| l == line), "{line:?} in {hosts}");
    }
    // The hosts file is an input of RUN: the same flags are cached, others re-run.
    let same = build(
        "hosts:2",
        &["db:10.1.2.3", "gw=host-gateway", "v6:[fd00::7]"],
    );
    assert!(same.contains("CACHED"), "{same}");
    let other = build("hosts:3", &["db:10.9.9.9"]);
    assert!(!other.contains("CACHED"), "{other}");
    for bad in ["nohost", "db:not-an-ip", ":1.2.3.4"] {
        let err = fails(mybuild(&root).args(["build", "--add-host", bad]).arg(&ctx));
        assert!(err.contains("--add-host") && err.contains(bad), "{err}");
    }
}

#[test]
fn metadata_file_names_the_built_image() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(tmp.path(), "FROM busybox\nLABEL a=b\n", &[]);
    let meta = tmp.path().join("meta.json");
    ok(mybuild(&root)
        .args(["build", "-t", "meta:1", "-t", "meta:2", "--metadata-file"])
        .arg(&meta)
        .arg(&ctx));
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta).expect("metadata file")).expect("json");
    let img = inspect(&root, "meta:1");
    assert_eq!(m["containerimage.digest"], img["Id"], "{m}\n{img}");
    assert_eq!(m["containerimage.descriptor"]["digest"], img["Id"]);
    assert_eq!(
        m["containerimage.config.digest"],
        img["Manifest"]["config"]["digest"]
    );
    assert_eq!(m["image.name"], "meta:1,meta:2");
}

#[test]
fn build_checks_run_on_every_build_and_alone_with_check() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        "FROM busybox\nRUN echo ran > /ran\nCMD echo hi\n",
        &[],
    );
    // --check evaluates the rules and builds nothing.
    let (success, _, err) = run(mybuild(&root)
        .args(["build", "--check", "-t", "checked:1"])
        .arg(&ctx));
    assert!(!success, "{err}");
    assert!(err.contains("JSONArgsRecommended"), "{err}");
    assert!(err.contains("1 warning has been found"), "{err}");
    assert!(!err.contains("ran"), "{err}");
    let (images, _) = ok(mybuild(&root).args(["images"]));
    assert!(!images.contains("checked"), "{images}");
    // A build runs, then lists what the checks found.
    let (_, err) = ok(mybuild(&root)
        .args(["build", "--progress=plain", "-t", "checked:1"])
        .arg(&ctx));
    assert!(
        err.contains("1 warning found")
            && err
                .lines()
                .any(|l| l.starts_with(" - JSONArgsRecommended:") && l.ends_with("(line 3)")),
        "{err}"
    );
    // check=error=true turns findings into an error before any step runs.
    std::fs::write(
        ctx.join("Dockerfile"),
        "# check=error=true\nFROM busybox\nRUN echo ran > /ran2\nCMD echo hi\n",
    )
    .expect("write");
    let (success, _, err) = run(mybuild(&root)
        .args(["build", "--progress=plain", "-t", "checked:2"])
        .arg(&ctx));
    assert!(!success);
    assert!(
        err.contains("lint violation found for rules: JSONArgsRecommended"),
        "{err}"
    );
    assert!(!err.contains("RUN echo"), "a step ran: {err}");
    // A clean Dockerfile passes --check.
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nCMD [\"true\"]\n").expect("write");
    let (_, err) = ok(mybuild(&root).args(["build", "--check"]).arg(&ctx));
    assert!(err.contains("0 warnings have been found"), "{err}");
}
