//! The step cache end to end: real busybox base, real sandbox, one store per test.
//! Whether a RUN ran is read from its output (a marker it prints), whether a step was
//! reused from the `#N CACHED` progress line, and results from the built images.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{mybuild, ok, setup};

/// A context at `dir` (fixed, so a test can edit it between builds).
fn context(dir: &Path, dockerfile: &str, files: &[(&str, &str)]) -> PathBuf {
    std::fs::create_dir_all(dir).expect("ctx");
    std::fs::write(dir.join("Dockerfile"), dockerfile).expect("Dockerfile");
    for (name, body) in files {
        write(&dir.join(name), body);
    }
    dir.to_path_buf()
}

fn write(p: &Path, body: &str) {
    std::fs::create_dir_all(p.parent().expect("parent")).expect("dirs");
    std::fs::write(p, body).expect("file");
}

/// Builds and returns (image digest, progress log).
fn build(root: &Path, ctx: &Path, extra: &[&str]) -> (String, String) {
    let iid = ctx.with_extension("iid");
    let mut cmd = mybuild(root);
    // ADD's test server is local.
    for v in ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"] {
        cmd.env_remove(v);
    }
    let (_, log) = ok(cmd
        .args(["build", "-t", "t:1", "--iidfile"])
        .arg(&iid)
        .args(extra)
        .arg(ctx));
    (std::fs::read_to_string(&iid).expect("iid"), log)
}

/// Each step's instruction and whether it was CACHED, in order (ARG steps left out).
fn steps(log: &str) -> Vec<(String, bool)> {
    let mut text: BTreeMap<usize, String> = BTreeMap::new();
    let mut cached: BTreeMap<usize, bool> = BTreeMap::new();
    for line in log.lines() {
        let Some(rest) = line.strip_prefix('#') else {
            continue;
        };
        let Some((id, tail)) = rest.split_once(' ') else {
            continue;
        };
        let Ok(id) = id.parse::<usize>() else {
            continue;
        };
        if let Some(t) = tail.strip_prefix('[') {
            if let Some((_, instr)) = t.split_once("] ") {
                text.insert(id, instr.to_string());
            }
        } else if tail == "CACHED" {
            cached.insert(id, true);
        } else if tail.starts_with("DONE ") {
            cached.insert(id, false);
        }
    }
    text.into_iter()
        .filter(|(_, t)| !t.starts_with("ARG "))
        .map(|(id, t)| {
            let c = cached.get(&id).copied().unwrap_or(false);
            (t, c)
        })
        .collect()
}

/// The instructions that ran (were not cached).
fn ran(log: &str) -> Vec<String> {
    steps(log)
        .into_iter()
        .filter(|(_, c)| !c)
        .map(|(t, _)| t)
        .collect()
}

fn blobs(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root.join("blobs/sha256"))
        .expect("blobs")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn du(p: &Path) -> u64 {
    let md = std::fs::symlink_metadata(p).expect("stat");
    if md.is_dir() {
        std::fs::read_dir(p)
            .expect("dir")
            .map(|e| du(&e.expect("entry").path()))
            .sum::<u64>()
            + 1
    } else {
        md.len() + 1
    }
}

/// A file of the image tagged t:1, read back with umoci.
fn read_image_file(tmp: &Path, root: &Path, path: &str) -> String {
    let rootfs = common::unpack(tmp, root, "t:1");
    let body = std::fs::read_to_string(rootfs.join(path.trim_start_matches('/'))).expect("file");
    let _ = std::fs::remove_dir_all(rootfs.parent().expect("bundle"));
    body
}

/// Deterministic bytes that do not compress.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e3779b97f4a7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

const SIMPLE: &str = "FROM busybox\n\
    COPY src/ /src/\n\
    RUN echo RAN-$((1))-RUN && cat /src/a.txt > /out\n\
    ENV GREETING=hi\n\
    CMD [\"cat\", \"/out\"]\n";

#[test]
fn unchanged_rebuild_is_all_cached_same_digest_and_writes_no_blob() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        &tmp.path().join("ctx"),
        SIMPLE,
        &[("src/a.txt", "A1"), ("src/b.txt", "B")],
    );
    let (first, log1) = build(&root, &ctx, &[]);
    assert!(log1.contains("RAN-1-RUN"), "{log1}");
    assert_eq!(ran(&log1).len(), 4, "{log1}");
    let before = blobs(&root);

    let (second, log2) = build(&root, &ctx, &[]);
    assert!(!log2.contains("RAN-1-RUN"), "RUN ran again:\n{log2}");
    assert!(ran(&log2).is_empty(), "{log2}");
    assert_eq!(steps(&log2).len(), 4);
    assert_eq!(first, second);
    assert_eq!(blobs(&root), before, "a fully cached build wrote blobs");

    // --no-cache runs everything; --no-cache-filter only the named stage.
    let (_, log3) = build(&root, &ctx, &["--no-cache"]);
    assert!(log3.contains("RAN-1-RUN"), "{log3}");
    assert_eq!(ran(&log3).len(), 4, "{log3}");
    assert!(
        log3.contains("(cache miss: COPY src/ /src/: --no-cache)"),
        "{log3}"
    );
    let (_, log4) = build(&root, &ctx, &["--no-cache-filter", "0"]);
    assert_eq!(ran(&log4).len(), 4, "{log4}");
    let (_, log5) = build(&root, &ctx, &["--no-cache-filter", "other"]);
    assert!(ran(&log5).is_empty(), "{log5}");
}

#[test]
fn mtime_only_change_reruns_nothing() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        &tmp.path().join("ctx"),
        SIMPLE,
        &[("src/a.txt", "A1"), ("src/b.txt", "B")],
    );
    let (first, _) = build(&root, &ctx, &[]);
    for f in ["src/a.txt", "src/b.txt"] {
        let file = std::fs::File::options()
            .write(true)
            .open(ctx.join(f))
            .expect("open");
        file.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
            .expect("touch");
    }
    let (second, log) = build(&root, &ctx, &[]);
    assert!(ran(&log).is_empty(), "{log}");
    assert_eq!(first, second);
}

#[test]
fn ignored_and_excluded_files_do_not_reach_the_key() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        &tmp.path().join("ctx"),
        "FROM busybox\n\
         COPY --exclude=*.log src/ /src/\n\
         RUN echo RAN-$((1)) && ls /src > /listing\n",
        &[
            ("src/a.txt", "A"),
            ("src/debug.log", "1"),
            ("src/tmp/scratch", "x"),
            (".dockerignore", "src/tmp\n"),
        ],
    );
    let (first, log) = build(&root, &ctx, &[]);
    assert_eq!(ran(&log).len(), 2, "{log}");
    write(&ctx.join("src/debug.log"), "2");
    write(&ctx.join("src/tmp/scratch"), "y");
    write(&ctx.join("src/tmp/new"), "z");
    let (second, log) = build(&root, &ctx, &[]);
    assert!(ran(&log).is_empty(), "{log}");
    assert_eq!(first, second);
    // A file the COPY does select still counts.
    write(&ctx.join("src/a.txt"), "A2");
    let (third, log) = build(&root, &ctx, &[]);
    assert_eq!(ran(&log).len(), 2, "{log}");
    assert_ne!(first, third);
}

#[test]
fn changed_file_reruns_from_its_copy_on_and_the_other_stage_stays_cached() {
    let Some((tmp, root)) = setup() else { return };
    let mut files: Vec<(String, String)> = Vec::new();
    for p in 0..10 {
        for f in 0..5 {
            files.push((format!("src/pkg{p}/f{f}.txt"), format!("{p}/{f}")));
        }
    }
    files.push(("tool/t.txt".into(), "tool".into()));
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let ctx = context(
        &tmp.path().join("ctx"),
        "FROM busybox AS tool\n\
         COPY tool/ /tool/\n\
         RUN echo RAN-$((1))-TOOL && cat /tool/t.txt > /tool.out\n\
         FROM busybox\n\
         ENV A=1\n\
         COPY src/ ./src/\n\
         RUN echo RAN-$((1))-APP && cat /src/pkg7/f3.txt > /app.out\n\
         COPY --from=tool /tool.out /\n\
         RUN echo RAN-$((1))-LAST\n",
        &refs,
    );
    let (first, _) = build(&root, &ctx, &[]);
    write(&ctx.join("src/pkg7/f3.txt"), "changed");
    let (second, log) = build(&root, &ctx, &["--explain-cache"]);
    assert_ne!(first, second);
    assert_eq!(
        ran(&log),
        [
            "COPY src/ ./src/",
            "RUN echo RAN-$((1))-APP && cat /src/pkg7/f3.txt > /app.out",
            "COPY --from=tool /tool.out /",
            "RUN echo RAN-$((1))-LAST"
        ],
        "{log}"
    );
    assert!(!log.contains("RAN-1-TOOL"), "{log}");
    assert!(
        log.contains("(cache miss: COPY src/ ./src/: src/pkg7/f3.txt changed)"),
        "{log}"
    );
    assert!(
        log.contains("cache miss in stage stage-1 at #")
            && log.contains(": COPY src/ ./src/: src/pkg7/f3.txt changed"),
        "--explain-cache summary: {log}"
    );
    assert_eq!(read_image_file(tmp.path(), &root, "/app.out"), "changed");
    // The tool stage reruns but makes the same /tool.out: what copies it still hits,
    // as COPY --from is keyed by the files it selects.
    write(&ctx.join("tool/unused.txt"), "noise");
    let (_, log) = build(&root, &ctx, &[]);
    assert_eq!(
        ran(&log),
        [
            "COPY tool/ /tool/",
            "RUN echo RAN-$((1))-TOOL && cat /tool/t.txt > /tool.out"
        ],
        "{log}"
    );
    // Changing the tool stage's output reruns what copies it, not the COPY before.
    write(&ctx.join("tool/t.txt"), "tool2");
    let (_, log) = build(&root, &ctx, &["--explain-cache"]);
    assert_eq!(
        ran(&log),
        [
            "COPY tool/ /tool/",
            "RUN echo RAN-$((1))-TOOL && cat /tool/t.txt > /tool.out",
            "COPY --from=tool /tool.out /",
            "RUN echo RAN-$((1))-LAST"
        ],
        "{log}"
    );
    assert!(
        log.contains("(cache miss: COPY --from=tool /tool.out /: tool.out changed)"),
        "{log}"
    );
}

#[test]
fn build_arg_change_invalidates_only_the_steps_it_reaches() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        &tmp.path().join("ctx"),
        "FROM busybox\n\
         RUN echo RAN-$((1))-EARLY > /early\n\
         ARG VERSION=1.0\n\
         RUN echo RAN-$((1))-LATE $VERSION > /late\n\
         ENV V=$VERSION\n",
        &[("x", "")],
    );
    build(&root, &ctx, &["--build-arg", "VERSION=1.2"]);
    let (_, log) = build(&root, &ctx, &["--build-arg", "VERSION=1.3"]);
    assert_eq!(
        ran(&log),
        [
            "RUN echo RAN-$((1))-LATE $VERSION > /late",
            "ENV V=$VERSION"
        ],
        "{log}"
    );
    assert!(
        log.contains("(cache miss: RUN echo RAN-$((1))-LATE $VERSION > /late: build arg VERSION changed 1.2→1.3)"),
        "{log}"
    );
    // A build arg nothing declares changes nothing.
    let (_, log) = build(
        &root,
        &ctx,
        &["--build-arg", "VERSION=1.3", "--build-arg", "UNUSED=9"],
    );
    assert!(ran(&log).is_empty(), "{log}");
}

#[test]
fn two_processes_building_at_once_share_the_store() {
    let Some((tmp, root)) = setup() else { return };
    let mut children = Vec::new();
    for n in 0..2 {
        let ctx = context(
            &tmp.path().join(format!("ctx{n}")),
            &format!(
                "FROM busybox\nCOPY f /f\nRUN echo shared > /shared\nRUN echo {n} > /n && sleep 1\n"
            ),
            &[("f", "same")],
        );
        let out = std::fs::File::create(tmp.path().join(format!("log{n}"))).expect("log");
        let child = mybuild(&root)
            .args(["build", "-t", &format!("c{n}:1")])
            .arg(&ctx)
            .stderr(out)
            .spawn()
            .expect("spawn");
        children.push((ctx, child));
    }
    let mut ctxs = Vec::new();
    for (ctx, mut child) in children {
        let status = child.wait().expect("wait");
        assert!(status.success(), "concurrent build failed");
        ctxs.push(ctx);
    }
    let (fsck, _) = ok(mybuild(&root).arg("fsck"));
    assert!(fsck.contains("checked"), "{fsck}");
    // Both results are in the cache now.
    for ctx in &ctxs {
        let (_, log) = build(&root, ctx, &[]);
        assert!(ran(&log).is_empty(), "{log}");
    }
}

#[test]
fn prune_cache_then_prune_shrinks_the_store_and_a_later_build_reruns() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        &tmp.path().join("ctx"),
        "FROM busybox\nCOPY big.bin /big.bin\nRUN echo RAN-$((1))-RUN && cp /big.bin /copy.bin\n",
        &[],
    );
    std::fs::write(ctx.join("big.bin"), noise(1 << 20)).expect("big");
    build(&root, &ctx, &[]);
    let (ls, _) = ok(mybuild(&root).args(["cache", "ls"]));
    assert!(ls.contains("COPY big.bin /big.bin"), "{ls}");
    assert!(
        ls.contains("RUN echo RAN-$((1))-RUN && cp /big.bin /copy.bin"),
        "{ls}"
    );
    ok(mybuild(&root).args(["rmi", "t:1"]));
    // The cache keeps its layers alive through a plain prune.
    ok(mybuild(&root).arg("prune"));
    let (_, log) = build(&root, &ctx, &[]);
    assert!(ran(&log).is_empty(), "{log}");
    ok(mybuild(&root).args(["rmi", "t:1"]));
    let before = du(&root);

    // Recently used records survive an age filter.
    ok(mybuild(&root).args(["prune", "--cache", "--filter", "until=24h"]));
    assert!(ok(mybuild(&root).args(["cache", "ls"]))
        .0
        .contains("COPY big.bin"));
    ok(mybuild(&root).args(["prune", "--cache"]));
    ok(mybuild(&root).arg("prune"));
    let after = du(&root);
    assert!(
        after + 3 * 1024 * 1024 < before,
        "store did not shrink: {before} -> {after}"
    );
    let (ls, _) = ok(mybuild(&root).args(["cache", "ls"]));
    assert_eq!(ls.lines().count(), 1, "only the header is left: {ls}");
    let (_, log) = build(&root, &ctx, &[]);
    assert!(log.contains("RAN-1-RUN"), "{log}");
    ok(mybuild(&root).arg("fsck"));
}

#[test]
fn a_new_base_image_digest_is_named_as_the_cause() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        &tmp.path().join("ctx"),
        "FROM busybox\nENV A=1\nRUN echo RAN-$((1))-X > /x\n",
        &[],
    );
    build(&root, &ctx, &[]);
    let rootfs = testdata::images::busybox_rootfs_file(tmp.path()).expect("rootfs");
    ok(mybuild(&root)
        .arg("import")
        .arg(&rootfs)
        .arg("busybox")
        .args(["-c", "ENV PATH=/bin", "-c", "ENV CHANGED=1"]));
    let (_, log) = build(&root, &ctx, &["--explain-cache"]);
    assert_eq!(
        ran(&log),
        ["ENV A=1", "RUN echo RAN-$((1))-X > /x"],
        "{log}"
    );
    assert!(
        log.contains("(cache miss: ENV A=1: base image busybox changed digest "),
        "{log}"
    );
}

#[test]
fn bind_mount_content_is_keyed_and_secret_content_is_not() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        &tmp.path().join("ctx"),
        "FROM busybox\n\
         RUN --mount=type=secret,id=tok test -s /run/secrets/tok && echo RAN-$((1))-S\n\
         RUN --mount=type=bind,source=conf,target=/conf cat /conf/a > /a && echo RAN-$((1))-B\n",
        &[("conf/a", "one"), ("other", "x")],
    );
    let secret = tmp.path().join("tok");
    std::fs::write(&secret, "secret-1").expect("secret");
    let sec = format!("id=tok,src={}", secret.display());
    build(&root, &ctx, &["--secret", &sec]);
    // A new secret value, or a change outside the bind source: nothing runs.
    std::fs::write(&secret, "secret-2").expect("secret");
    write(&ctx.join("other"), "y");
    let (_, log) = build(&root, &ctx, &["--secret", &sec, "--progress", "json"]);
    assert!(!log.contains("RAN-1-"), "{log}");
    assert_eq!(log.matches("\"event\":\"step_cached\"").count(), 2, "{log}");
    // A change inside it reruns the RUN that mounts it, and says which file.
    write(&ctx.join("conf/a"), "two");
    let (_, log) = build(&root, &ctx, &["--secret", &sec]);
    assert!(!log.contains("RAN-1-S"), "{log}");
    assert!(log.contains("RAN-1-B"), "{log}");
    assert!(log.contains(": conf/a changed)"), "{log}");
    assert_eq!(read_image_file(tmp.path(), &root, "/a"), "two");
}

/// The layer digests of the image whose manifest digest is `iid`, read from the store.
fn layer_digests(root: &Path, iid: &str) -> Vec<String> {
    let hex = iid.trim().trim_start_matches("sha256:");
    let raw = std::fs::read(root.join("blobs/sha256").join(hex)).expect("manifest");
    let m: serde_json::Value = serde_json::from_slice(&raw).expect("json");
    m["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().expect("digest").to_string())
        .collect()
}

/// The config of the image whose manifest digest is `iid`.
fn image_config(root: &Path, iid: &str) -> serde_json::Value {
    let blob = |d: &str| {
        let raw = std::fs::read(
            root.join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
        )
        .expect("blob");
        serde_json::from_slice::<serde_json::Value>(&raw).expect("json")
    };
    let m = blob(iid.trim());
    blob(m["config"]["digest"].as_str().expect("config digest"))
}

#[test]
fn copy_link_layer_is_reused_after_a_change_below() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        &tmp.path().join("ctx"),
        "FROM busybox\n\
         ARG X\n\
         RUN echo $X > /a\n\
         COPY --link big/ /big/\n\
         RUN echo AFTER-$((1))-RAN && cat /a /big/small.txt > /after\n",
        &[("big/small.txt", "small\n"), ("big/sub/note.txt", "note\n")],
    );
    let noise = noise(3 << 20);
    std::fs::write(ctx.join("big/noise.bin"), &noise).expect("noise");
    let (first, log1) = build(&root, &ctx, &["--build-arg", "X=one"]);
    assert_eq!(ran(&log1).len(), 3, "{log1}");
    let first_layers = layer_digests(&root, &first);

    let (second, log2) = build(&root, &ctx, &["--build-arg", "X=two", "--explain-cache"]);
    assert_eq!(
        steps(&log2),
        [
            ("RUN echo $X > /a".to_string(), false),
            ("COPY --link big/ /big/".to_string(), true),
            (
                "RUN echo AFTER-$((1))-RAN && cat /a /big/small.txt > /after".to_string(),
                false
            ),
        ],
        "{log2}"
    );
    assert!(log2.contains("AFTER-1-RAN"), "{log2}");
    assert!(
        log2.contains("COPY --link big/ /big/: its --link layer was reused"),
        "--explain-cache names the reused layer: {log2}"
    );
    let second_layers = layer_digests(&root, &second);
    assert_ne!(first, second);
    // busybox, RUN, COPY --link, RUN: the COPY layer is the very blob of the first build.
    assert_eq!(first_layers.len(), 4);
    assert_eq!(second_layers.len(), 4);
    assert_ne!(first_layers[1], second_layers[1], "the RUN layer changed");
    assert_eq!(
        first_layers[2], second_layers[2],
        "the --link layer was reused"
    );
    let rootfs = common::unpack(tmp.path(), &root, "t:1");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("a")).expect("a"),
        "two\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("after")).expect("after"),
        "two\nsmall\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("big/sub/note.txt")).expect("note"),
        "note\n"
    );
    assert!(std::fs::read(rootfs.join("big/noise.bin")).expect("noise") == noise);
    // rootfs and history: the new parent's plus this step's.
    let (c1, c2) = (image_config(&root, &first), image_config(&root, &second));
    let diff_ids = |c: &serde_json::Value| c["rootfs"]["diff_ids"].as_array().unwrap().clone();
    assert_eq!(diff_ids(&c2).len(), 4);
    assert_ne!(diff_ids(&c1)[1], diff_ids(&c2)[1]);
    assert_eq!(diff_ids(&c1)[2], diff_ids(&c2)[2]);
    let created_by: Vec<String> = c2["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["empty_layer"] != serde_json::json!(true))
        .map(|h| h["created_by"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(created_by.len(), 4, "{created_by:?}");
    assert!(created_by[1].starts_with("RUN "), "{created_by:?}");
    assert_eq!(created_by[2], "COPY big/ /big/ # buildkit");
    assert!(created_by[3].contains("AFTER"), "{created_by:?}");
    // The step on its new parent was recorded too: the same build again hits all.
    let (third, log3) = build(&root, &ctx, &["--build-arg", "X=two"]);
    assert!(ran(&log3).is_empty(), "{log3}");
    assert_eq!(third, second);
    // Without --link the same change re-runs the COPY.
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nARG X\nRUN echo $X > /a\nCOPY big/ /big/\n",
    )
    .expect("Dockerfile");
    build(&root, &ctx, &["--build-arg", "X=one"]);
    let (_, log4) = build(&root, &ctx, &["--build-arg", "X=three"]);
    assert_eq!(ran(&log4).len(), 2, "{log4}");
}

#[test]
fn add_from_url_is_cached_by_checksum_or_content() {
    let Some((tmp, root)) = setup() else { return };
    let fixed = b"fixed body\n".to_vec();
    let sum = layer_cache::Digest::of(&fixed).to_string();
    let mut routes = std::collections::HashMap::new();
    routes.insert("/fixed.txt".to_string(), (200, fixed.clone()));
    routes.insert("/data.txt".to_string(), (200, b"version 1\n".to_vec()));
    let srv = common::serve(routes);
    let base = format!("http://127.0.0.1:{}", srv.port);
    let ctx = context(
        &tmp.path().join("ctx"),
        &format!(
            "FROM busybox\n\
             ADD --checksum={sum} {base}/fixed.txt /fixed/\n\
             ADD {base}/data.txt /srv/\n\
             RUN echo RAN-$((1))-RUN && cat /srv/data.txt > /copy\n"
        ),
        &[],
    );
    let (first, log1) = build(&root, &ctx, &[]);
    assert_eq!(ran(&log1).len(), 3, "{log1}");
    // Keying the ADD fetched the body; the step used that file.
    assert_eq!(srv.gets("/data.txt"), 1, "{:?}", srv.requests);
    assert_eq!(srv.gets("/fixed.txt"), 1, "{:?}", srv.requests);

    // Same content: everything is cached; the checksum step asked nothing.
    let (second, log2) = build(&root, &ctx, &[]);
    assert!(ran(&log2).is_empty(), "{log2}");
    assert_eq!(steps(&log2).len(), 3, "{log2}");
    assert_eq!(first, second);
    assert_eq!(srv.gets("/fixed.txt"), 1, "{:?}", srv.requests);
    assert_eq!(srv.gets("/data.txt"), 2, "{:?}", srv.requests);

    // New content: that ADD and what follows run; the checksum step stays cached.
    srv.routes
        .lock()
        .unwrap()
        .insert("/data.txt".to_string(), (200, b"version 2\n".to_vec()));
    let (_, log3) = build(&root, &ctx, &["--explain-cache"]);
    assert_eq!(
        steps(&log3).into_iter().map(|(_, c)| c).collect::<Vec<_>>(),
        [true, false, false],
        "{log3}"
    );
    assert!(log3.contains("RAN-1-RUN"), "{log3}");
    assert!(
        log3.contains(&format!("url {base}/data.txt changed")),
        "the miss names the URL: {log3}"
    );
    assert_eq!(srv.gets("/fixed.txt"), 1, "{:?}", srv.requests);
    assert_eq!(srv.gets("/data.txt"), 3, "{:?}", srv.requests);
    let rootfs = common::unpack(tmp.path(), &root, "t:1");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("copy")).expect("copy"),
        "version 2\n"
    );
    let md = std::fs::metadata(rootfs.join("srv/data.txt")).expect("data");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(md.mode() & 0o7777, 0o600);
    assert_eq!(md.mtime(), 784111777, "mtime from Last-Modified");
    assert_eq!(
        std::fs::read(rootfs.join("fixed/fixed.txt")).expect("fixed"),
        fixed
    );
}

/// The URL metadata files of the store's cache, as text.
fn url_metadata(root: &Path) -> Vec<String> {
    match std::fs::read_dir(root.join("cache-v1/urls")) {
        Ok(rd) => rd
            .map(|e| std::fs::read_to_string(e.expect("entry").path()).expect("read"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// A context ADDing `/data.txt` from `base`, then a RUN copying it, then `extra`.
fn url_context(tmp: &Path, base: &str, extra: &str) -> PathBuf {
    context(
        &tmp.join("ctx"),
        &format!(
            "FROM busybox\n\
             ADD {base}/data.txt /srv/\n\
             RUN echo RAN-$((1))-RUN && cat /srv/data.txt > /copy\n\
             {extra}"
        ),
        &[],
    )
}

/// A server with `/data.txt` holding "version 1\n".
fn data_server(validators: common::Validators) -> common::Server {
    let mut routes = std::collections::HashMap::new();
    routes.insert("/data.txt".to_string(), (200, b"version 1\n".to_vec()));
    common::serve_with(routes, validators)
}

#[test]
fn add_url_unchanged_is_revalidated_with_a_304_and_no_body() {
    let Some((tmp, root)) = setup() else { return };
    let srv = data_server(common::Validators::ETag);
    let base = format!("http://127.0.0.1:{}", srv.port);
    let ctx = url_context(tmp.path(), &base, "");
    let (first, log1) = build(&root, &ctx, &[]);
    assert_eq!(ran(&log1).len(), 2, "{log1}");
    assert_eq!(srv.bodies("/data.txt"), 1, "{:?}", srv.answers("/data.txt"));
    let meta = url_metadata(&root);
    assert_eq!(meta.len(), 1, "{meta:?}");
    assert!(
        meta[0].contains(&srv.etag("/data.txt").replace('"', "\\\"")),
        "{meta:?}"
    );

    // Unchanged: one conditional request answered 304, no body, everything cached.
    let (second, log2) = build(&root, &ctx, &[]);
    assert!(ran(&log2).is_empty(), "{log2}");
    assert_eq!(first, second);
    let answers = srv.answers("/data.txt");
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert_eq!(answers[1].status, 304, "{answers:?}");
    assert_eq!(answers[1].body, 0, "{answers:?}");
    assert_eq!(
        answers[1].if_none_match.as_deref(),
        Some(srv.etag("/data.txt").as_str())
    );
    assert_eq!(answers[1].if_modified_since, None, "ETag wins: {answers:?}");
    assert_eq!(srv.bodies("/data.txt"), 1);

    // A new step ADDing the same URL misses after the 304: the body is fetched then
    // (once) and lands in the image.
    let ctx = url_context(tmp.path(), &base, &format!("ADD {base}/data.txt /again/\n"));
    let (_, log3) = build(&root, &ctx, &[]);
    assert_eq!(
        ran(&log3),
        [format!("ADD {base}/data.txt /again/")],
        "{log3}"
    );
    assert_eq!(
        srv.not_modified("/data.txt"),
        2,
        "{:?}",
        srv.answers("/data.txt")
    );
    assert_eq!(srv.bodies("/data.txt"), 2, "{:?}", srv.answers("/data.txt"));
    assert_eq!(
        read_image_file(tmp.path(), &root, "/again/data.txt"),
        "version 1\n"
    );

    // --no-cache asks for the whole body, unconditionally.
    let (_, log4) = build(&root, &ctx, &["--no-cache"]);
    assert_eq!(ran(&log4).len(), 3, "{log4}");
    let answers = srv.answers("/data.txt");
    assert_eq!(answers.len(), 5, "{answers:?}");
    let last = answers.last().unwrap();
    assert_eq!((last.status, last.if_none_match.as_deref()), (200, None));
}

#[test]
fn add_url_with_a_new_etag_reruns_and_one_that_lies_is_an_error() {
    let Some((tmp, root)) = setup() else { return };
    let srv = data_server(common::Validators::ETag);
    let base = format!("http://127.0.0.1:{}", srv.port);
    let ctx = url_context(tmp.path(), &base, "");
    let old_etag = srv.etag("/data.txt");
    build(&root, &ctx, &[]);

    // New content, new ETag: the conditional request gets the body; the ADD and the
    // RUN after it run with the new content.
    srv.routes
        .lock()
        .unwrap()
        .insert("/data.txt".to_string(), (200, b"version 2\n".to_vec()));
    let (_, log2) = build(&root, &ctx, &["--explain-cache"]);
    assert_eq!(ran(&log2).len(), 2, "{log2}");
    assert!(log2.contains("RAN-1-RUN"), "{log2}");
    assert!(
        log2.contains(&format!("url {base}/data.txt changed")),
        "{log2}"
    );
    let answers = srv.answers("/data.txt");
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert_eq!(answers[1].if_none_match.as_deref(), Some(old_etag.as_str()));
    assert_eq!((answers[1].status, answers[1].body), (200, 10));
    assert_eq!(read_image_file(tmp.path(), &root, "/copy"), "version 2\n");
    assert_eq!(
        read_image_file(tmp.path(), &root, "/srv/data.txt"),
        "version 2\n"
    );

    // New content behind the same ETag: the 304 keys the cached ADD by the old
    // digest, so the new step that needs the body finds it differs and says why.
    let etag = srv.etag("/data.txt");
    srv.etags
        .lock()
        .unwrap()
        .insert("/data.txt".to_string(), etag.clone());
    srv.routes
        .lock()
        .unwrap()
        .insert("/data.txt".to_string(), (200, b"version 3\n".to_vec()));
    let ctx = url_context(tmp.path(), &base, &format!("ADD {base}/data.txt /again/\n"));
    let mut cmd = mybuild(&root);
    cmd.env_remove("HTTP_PROXY").env_remove("http_proxy");
    let err = common::fails(cmd.args(["build", "-t", "t:1"]).arg(&ctx));
    assert!(err.contains("Dockerfile:4"), "{err}");
    assert!(
        err.contains(&format!(
            "the server changed the content without changing its ETag {etag}"
        )),
        "{err}"
    );
    assert!(
        err.contains(&layer_cache::Digest::of(b"version 3\n").to_string()),
        "{err}"
    );
    // The download was remembered: the next build uses the new content throughout.
    let (_, log4) = build(&root, &ctx, &[]);
    assert_eq!(ran(&log4).len(), 3, "{log4}");
    assert_eq!(read_image_file(tmp.path(), &root, "/copy"), "version 3\n");
}

#[test]
fn add_url_without_validators_is_fetched_every_build() {
    let Some((tmp, root)) = setup() else { return };
    let srv = data_server(common::Validators::None);
    let base = format!("http://127.0.0.1:{}", srv.port);
    let ctx = url_context(tmp.path(), &base, "");
    let (first, log1) = build(&root, &ctx, &[]);
    assert_eq!(ran(&log1).len(), 2, "{log1}");
    assert!(url_metadata(&root).is_empty(), "nothing to revalidate with");
    let (second, log2) = build(&root, &ctx, &[]);
    assert!(ran(&log2).is_empty(), "{log2}");
    assert_eq!(first, second);
    let answers = srv.answers("/data.txt");
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert!(
        answers.iter().all(|a| a.status == 200
            && a.body == 10
            && a.if_none_match.is_none()
            && a.if_modified_since.is_none()),
        "{answers:?}"
    );
    srv.routes
        .lock()
        .unwrap()
        .insert("/data.txt".to_string(), (200, b"version 2\n".to_vec()));
    let (_, log3) = build(&root, &ctx, &[]);
    assert_eq!(ran(&log3).len(), 2, "{log3}");
    assert_eq!(read_image_file(tmp.path(), &root, "/copy"), "version 2\n");
}

#[test]
fn add_url_metadata_keeps_no_credentials() {
    let Some((tmp, root)) = setup() else { return };
    let srv = data_server(common::Validators::ETag);
    let base = format!("http://someone:s3cr3t@127.0.0.1:{}", srv.port);
    let ctx = url_context(tmp.path(), &base, "");
    build(&root, &ctx, &[]);
    let meta = url_metadata(&root);
    assert_eq!(meta.len(), 1, "{meta:?}");
    assert!(
        meta[0].contains(&format!("\"http://127.0.0.1:{}/data.txt\"", srv.port)),
        "{meta:?}"
    );
    assert!(
        !meta[0].contains("s3cr3t") && !meta[0].contains("someone"),
        "{meta:?}"
    );
    // Found again by the same URL: the rebuild is a 304.
    let (_, log2) = build(&root, &ctx, &[]);
    assert!(ran(&log2).is_empty(), "{log2}");
    assert_eq!(
        srv.not_modified("/data.txt"),
        1,
        "{:?}",
        srv.answers("/data.txt")
    );
    assert_eq!(srv.bodies("/data.txt"), 1);
}
