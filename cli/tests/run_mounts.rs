//! `RUN --mount` and RUN heredocs end to end: real namespaces and overlayfs, a busybox
//! base made with `mybuild import`, images read back with umoci. Every test also
//! checks that what a mount showed never reached a layer.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{fails, inspect, mybuild, ok, setup, unpack};

/// A context directory named `name` with a Dockerfile and files.
fn context(tmp: &Path, name: &str, dockerfile: &str, files: &[(&str, &str)]) -> PathBuf {
    let ctx = tmp.join(format!("ctx-{name}"));
    std::fs::create_dir_all(&ctx).expect("ctx");
    std::fs::write(ctx.join("Dockerfile"), dockerfile).expect("Dockerfile");
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

/// Paths in the image's layers that the base image does not have, from the layer tars.
fn layer_entries(root: &Path, name: &str) -> Vec<String> {
    let img = inspect(root, name);
    let mut out = Vec::new();
    for l in img["Manifest"]["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .skip(1)
    {
        let digest = l["digest"].as_str().expect("digest");
        let blob = root.join("blobs/sha256").join(&digest["sha256:".len()..]);
        let (list, _) = ok(Command::new("sh")
            .arg("-c")
            .arg("zcat -f \"$1\" | tar -tf -")
            .arg("sh")
            .arg(&blob));
        out.extend(list.lines().map(|s| s.trim_end_matches('/').to_string()));
    }
    out
}

#[test]
fn bind_mounts_read_the_context_or_a_stage_and_leave_no_trace() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        "bind",
        "FROM busybox AS other\n\
         RUN echo from-stage > /made-in-stage\n\
         FROM busybox\n\
         RUN --mount=type=bind,source=data,target=/mnt/data cp /mnt/data/file.txt /copied\n\
         RUN --mount=from=other,source=/made-in-stage,target=/etc/fromstage cp /etc/fromstage /stage-copy\n\
         RUN --mount=target=/src,rw sh -c 'echo scribble > /src/data/file.txt && cat /src/data/file.txt > /scribbled'\n",
        &[("data/file.txt", "ctx-data\n")],
    );
    ok(mybuild(&root).args(["build", "-t", "bind:1"]).arg(&ctx));
    let rootfs = unpack(tmp.path(), &root, "bind:1");
    assert_eq!(read(&rootfs, "copied"), "ctx-data\n");
    assert_eq!(read(&rootfs, "stage-copy"), "from-stage\n");
    assert_eq!(read(&rootfs, "scribbled"), "scribble\n");
    // The rw view's write was discarded: the context is untouched.
    assert_eq!(
        std::fs::read_to_string(ctx.join("data/file.txt")).expect("ctx file"),
        "ctx-data\n"
    );
    // Neither the mounted files nor the mount points are in the image.
    for p in ["mnt", "src", "etc/fromstage", "file.txt", "made-in-stage"] {
        assert!(!rootfs.join(p).exists(), "{p} leaked into the image");
    }
    let entries = layer_entries(&root, "bind:1");
    assert_eq!(
        entries
            .iter()
            .filter(|e| !e.is_empty() && *e != ".")
            .cloned()
            .collect::<Vec<_>>(),
        ["copied", "stage-copy", "scribbled"]
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
        "only the step's own files are in the layers"
    );

    // A bind is read-only unless rw is given.
    let ro = context(
        tmp.path(),
        "bind-ro",
        "FROM busybox\nRUN --mount=type=bind,target=/src touch /src/new-file\n",
        &[],
    );
    let err = fails(mybuild(&root).args(["build", "-t", "bind:2"]).arg(&ro));
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(err.contains("Dockerfile:2"), "{err}");
    assert!(!ro.join("new-file").exists());
}

fn counter_dockerfile(marker: &str, sharing: &str) -> String {
    // The marker keeps each build's RUN text distinct, so no step is ever reused.
    format!(
        "FROM busybox\n\
         RUN --mount=type=cache,target=/var/cache/counter,sharing={sharing} \
         sh -c 'n=$(cat /var/cache/counter/n 2>/dev/null || echo 0); sleep 1; echo $((n+1)) > /var/cache/counter/n; cp /var/cache/counter/n /seen' && echo {marker}\n"
    )
}

#[test]
fn cache_mounts_persist_across_builds_and_never_reach_a_layer() {
    let Some((tmp, root)) = setup() else { return };
    for (i, expect) in [(1, "1\n"), (2, "2\n")] {
        let ctx = context(
            tmp.path(),
            &format!("cache-{i}"),
            &counter_dockerfile(&format!("build-{i}"), "shared"),
            &[],
        );
        ok(mybuild(&root)
            .args(["build", "-t", &format!("cache:{i}")])
            .arg(&ctx));
        let rootfs = unpack(tmp.path(), &root, &format!("cache:{i}"));
        assert_eq!(read(&rootfs, "seen"), expect, "build {i}");
        assert!(!rootfs.join("var/cache/counter").exists());
        assert_eq!(layer_entries(&root, &format!("cache:{i}")), ["seen"]);
    }
    // The cache lives in the store, keyed by its id (the target by default).
    let caches = std::fs::read_dir(root.join("cache-mounts"))
        .expect("cache dir")
        .count();
    assert_eq!(caches, 1);
    // A limited cache prune keeps cache mounts; a full one removes them.
    let (out, _) = ok(mybuild(&root).args(["prune", "--cache", "--filter", "until=1h"]));
    assert!(!out.contains("type=cache directories"), "{out}");
    let (out, _) = ok(mybuild(&root).args(["prune", "--cache"]));
    assert!(
        out.contains("Deleted 1 RUN --mount=type=cache directories"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_dir(root.join("cache-mounts"))
            .expect("dir")
            .count(),
        0
    );

    // uid/gid/mode shape a new cache directory.
    let ctx = context(
        tmp.path(),
        "cache-owner",
        "FROM busybox\n\
         RUN --mount=type=cache,id=owned,target=/c,uid=1000,gid=1001,mode=0700 stat -c '%u %g %a' /c > /owner\n",
        &[],
    );
    ok(mybuild(&root)
        .args(["build", "-t", "cache:owner"])
        .arg(&ctx));
    let rootfs = unpack(tmp.path(), &root, "cache:owner");
    assert_eq!(read(&rootfs, "owner"), "1000 1001 700\n");

    // from=/source= seed a new cache from a stage; later builds keep their own data.
    let seeded = |marker: &str| {
        format!(
            "FROM busybox AS seed\n\
             RUN mkdir /s && echo seeded > /s/f\n\
             FROM busybox\n\
             RUN --mount=type=cache,id=seeded,target=/c,from=seed,source=/s sh -c 'cat /c/f > /got; echo changed > /c/f' && echo {marker}\n"
        )
    };
    for (i, expect) in [(1, "seeded\n"), (2, "changed\n")] {
        let ctx = context(
            tmp.path(),
            &format!("seed-{i}"),
            &seeded(&format!("s{i}")),
            &[],
        );
        ok(mybuild(&root)
            .args(["build", "-t", &format!("seed:{i}")])
            .arg(&ctx));
        let rootfs = unpack(tmp.path(), &root, &format!("seed:{i}"));
        assert_eq!(read(&rootfs, "got"), expect, "build {i}");
        assert!(!rootfs.join("c").exists() && !rootfs.join("s").exists());
    }
}

#[test]
fn locked_cache_serializes_concurrent_builds() {
    let Some((tmp, root)) = setup() else { return };
    let children: Vec<_> = (1..=2)
        .map(|i| {
            let ctx = context(
                tmp.path(),
                &format!("locked-{i}"),
                &counter_dockerfile(&format!("locked-{i}"), "locked"),
                &[],
            );
            mybuild(&root)
                .args(["build", "-q", "-t", &format!("locked:{i}")])
                .arg(&ctx)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    let mut seen = Vec::new();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "build {} failed: {}",
            i + 1,
            String::from_utf8_lossy(&out.stderr)
        );
        let rootfs = unpack(tmp.path(), &root, &format!("locked:{}", i + 1));
        seen.push(read(&rootfs, "seen"));
    }
    seen.sort();
    // Each build saw the other's increment or none: never both reading 0.
    assert_eq!(seen, ["1\n", "2\n"]);
    let ctx = context(
        tmp.path(),
        "locked-read",
        "FROM busybox\nRUN --mount=type=cache,target=/var/cache/counter,sharing=locked cp /var/cache/counter/n /final\n",
        &[],
    );
    ok(mybuild(&root)
        .args(["build", "-t", "locked:read"])
        .arg(&ctx));
    let rootfs = unpack(tmp.path(), &root, "locked:read");
    assert_eq!(read(&rootfs, "final"), "2\n");
}

#[test]
fn tmpfs_mounts_are_sized_and_not_in_the_layer() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        "tmpfs",
        "FROM busybox\n\
         RUN mkdir /data && ln -s /data /link\n\
         RUN --mount=type=tmpfs,target=/link/t sh -c 'test -L /link && df /data/t | grep -q tmpfs && touch /link/t/x /data/seen'\n\
         RUN --mount=type=tmpfs,target=/scratch,size=1m sh -c 'echo gone > /scratch/f && df -k /scratch | tail -n 1 | awk \"{print \\$2}\" > /size && cat /scratch/f > /proof'\n",
        &[],
    );
    ok(mybuild(&root).args(["build", "-t", "tmpfs:1"]).arg(&ctx));
    let rootfs = unpack(tmp.path(), &root, "tmpfs:1");
    assert_eq!(read(&rootfs, "proof"), "gone\n");
    assert_eq!(read(&rootfs, "size"), "1024\n");
    assert!(!rootfs.join("scratch").exists());
    // A target under a symlink follows it, and the symlink stays a symlink.
    assert_eq!(
        std::fs::read_link(rootfs.join("link")).expect("link"),
        Path::new("/data")
    );
    assert!(rootfs.join("data/seen").exists());
    assert!(!rootfs.join("data/t").exists());
    let mut entries = layer_entries(&root, "tmpfs:1");
    entries.sort();
    assert_eq!(
        entries,
        ["data", "data", "data/seen", "link", "proof", "size"]
    );
}

const FILE_SECRET: &str = "file-secret-value-7391";
const ENV_SECRET: &str = "env-secret-value-4420";

#[test]
fn secrets_are_readable_in_the_step_and_stored_nowhere() {
    let Some((tmp, root)) = setup() else { return };
    let secret_file = tmp.path().join("secret.txt");
    std::fs::write(&secret_file, FILE_SECRET).expect("secret");
    let ctx = context(
        tmp.path(),
        "secret",
        "FROM busybox\n\
             RUN --mount=type=secret,id=fsec sha256sum /run/secrets/fsec | cut -d' ' -f1 > /hash\n\
             RUN --mount=type=secret,id=esec,env=ESEC,target=/etc/esec,mode=0440,uid=1,gid=2 sh -c 'test \"$(cat /etc/esec)\" = \"$ESEC\" && printf %s \"$ESEC\" | sha256sum | cut -d\" \" -f1 > /envhash && stat -c \"%a %u %g\" /etc/esec > /perm'\n\
             RUN --mount=type=secret,id=esec,env=ONLY_ENV sh -c 'test ! -e /run/secrets/esec && printf %s \"$ONLY_ENV\" | sha256sum | cut -d\" \" -f1 > /env-only'\n\
             RUN --mount=type=secret,id=absent sh -c 'test ! -e /run/secrets/absent && echo skipped > /absent'\n",
        &[],
    );
    ok(mybuild(&root)
        .args(["build", "-t", "secret:1", "--secret"])
        .arg(format!("id=fsec,src={}", secret_file.display()))
        .args(["--secret", "id=esec,env=MYBUILD_TEST_ENV_SECRET"])
        .env("MYBUILD_TEST_ENV_SECRET", ENV_SECRET)
        .arg(&ctx));
    let rootfs = unpack(tmp.path(), &root, "secret:1");
    let (expected_hash, _) = ok(Command::new("sha256sum").arg(&secret_file));
    assert_eq!(
        read(&rootfs, "hash").trim(),
        expected_hash.split_whitespace().next().expect("hash")
    );
    let (env_hash, _) = ok(Command::new("sh")
        .arg("-c")
        .arg("printf %s \"$1\" | sha256sum")
        .arg("sh")
        .arg(ENV_SECRET));
    assert_eq!(
        read(&rootfs, "envhash").trim(),
        env_hash.split_whitespace().next().expect("hash")
    );
    assert_eq!(read(&rootfs, "perm"), "440 1 2\n");
    assert_eq!(read(&rootfs, "env-only"), read(&rootfs, "envhash"));
    assert_eq!(read(&rootfs, "absent"), "skipped\n");
    assert!(!rootfs.join("run/secrets").exists());
    assert!(!rootfs.join("etc/esec").exists());
    let mut entries = layer_entries(&root, "secret:1");
    entries.sort();
    assert_eq!(entries, ["absent", "env-only", "envhash", "hash", "perm"]);

    // Not in the config, the history, or any byte of the store (blobs decompressed).
    let img = serde_json::to_string(&inspect(&root, "secret:1")).expect("json");
    for s in [FILE_SECRET, ENV_SECRET] {
        assert!(!img.contains(s), "{s} in the image config or manifest");
    }
    let (hits, _) = ok(Command::new("sh")
        .arg("-c")
        .arg(
            "find \"$1\" -type f | while read -r f; do \
               if zcat -f \"$f\" 2>/dev/null | grep -a -q -e \"$2\" -e \"$3\"; then echo \"$f\"; fi; \
             done",
        )
        .arg("sh")
        .arg(&root)
        .arg(FILE_SECRET)
        .arg(ENV_SECRET));
    assert_eq!(hits, "", "secret found in the store");

    // A required secret that was not given fails, naming it and the line.
    let req = context(
        tmp.path(),
        "secret-required",
        "FROM busybox\nRUN --mount=type=secret,id=needed_token,required=true true\n",
        &[],
    );
    let err = fails(mybuild(&root).args(["build", "-t", "secret:2"]).arg(&req));
    assert!(err.contains("needed_token"), "{err}");
    assert!(err.contains("Dockerfile:2"), "{err}");
    // A --secret whose file is missing is refused before building.
    let err = fails(
        mybuild(&root)
            .args([
                "build",
                "-t",
                "secret:3",
                "--secret",
                "id=x,src=/nonexistent/mybuild-secret",
            ])
            .arg(&req),
    );
    assert!(err.contains("id=x"), "{err}");
}

#[test]
fn run_heredocs_behave_as_in_buildkit() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        "heredoc",
        "FROM busybox\n\
         ENV FOO=bar\n\
         RUN <<EOF\n\
         echo one > /one\n\
         echo \"two $FOO\" > /two\n\
         EOF\n\
         RUN <<-EOF\n\
         \t\techo chomped > /chomped\n\
         \tEOF\n\
         RUN <<EOF\n\
         #!/bin/sh\n\
         echo \"script $0\" > /script\n\
         EOF\n\
         RUN <<EOF sh\n\
         echo via-stdin > /stdin\n\
         EOF\n\
         RUN cat <<A > /a && cat <<-'B' > /b\n\
         a=$FOO\n\
         A\n\
         \tb=$FOO\n\
         \tB\n",
        &[],
    );
    ok(mybuild(&root).args(["build", "-t", "heredoc:1"]).arg(&ctx));
    let rootfs = unpack(tmp.path(), &root, "heredoc:1");
    assert_eq!(read(&rootfs, "one"), "one\n");
    assert_eq!(read(&rootfs, "two"), "two bar\n");
    assert_eq!(read(&rootfs, "chomped"), "chomped\n");
    assert_eq!(read(&rootfs, "script"), "script /dev/pipes/EOF\n");
    assert_eq!(read(&rootfs, "stdin"), "via-stdin\n");
    // Unquoted delimiter: expanded by the shell; quoted: literal; <<- strips tabs.
    assert_eq!(read(&rootfs, "a"), "a=bar\n");
    assert_eq!(read(&rootfs, "b"), "b=$FOO\n");
    assert!(!rootfs.join("dev/pipes").exists());
    let img = inspect(&root, "heredoc:1");
    let history: Vec<String> = img["Config"]["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|h| h["created_by"].as_str().map(str::to_string))
        .collect();
    assert!(
        history.contains(
            &"RUN /bin/sh -c echo one > /one\necho \"two $FOO\" > /two\n # buildkit".to_string()
        ),
        "{history:?}"
    );
}

#[test]
fn unsupported_and_invalid_mounts_are_refused_by_name() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        "badtype",
        "FROM busybox\nRUN --mount=type=volume,target=/v true\n",
        &[],
    );
    let err = fails(mybuild(&root).args(["build", "-t", "bad:0"]).arg(&ctx));
    assert!(err.contains("volume"), "{err}");
    assert!(err.contains("Dockerfile:2"), "{err}");
    let ctx = context(
        tmp.path(),
        "badkey",
        "FROM busybox\nRUN --mount=type=cache,target=/c,sharing=sometimes true\n",
        &[],
    );
    let err = fails(mybuild(&root).args(["build", "-t", "bad:1"]).arg(&ctx));
    assert!(err.contains("sharing"), "{err}");
    assert!(err.contains("Dockerfile:2"), "{err}");
}

/// Builds `ctx` as `name` and returns its image id and the progress log.
fn build_iid(root: &Path, ctx: &Path, name: &str, extra: &[&str]) -> (String, String) {
    let iid = ctx.with_extension("iid");
    let (_, log) = ok(mybuild(root)
        .args(["build", "-t", name, "--iidfile"])
        .arg(&iid)
        .args(extra)
        .arg(ctx));
    (std::fs::read_to_string(&iid).expect("iid"), log)
}

#[test]
fn context_binds_show_the_context_through_dockerignore() {
    let Some((tmp, root)) = setup() else { return };
    let dockerfile = "FROM busybox\n\
         RUN --mount=type=bind,target=/ctx sh -c 'cd /ctx && find . | sort > /listing && stat -c %a data > /data-mode'\n\
         RUN --mount=type=bind,source=data,target=/d,rw sh -c 'ls /d > /dlist && echo x > /d/new && rm /d/keep.txt'\n";
    let ctx = context(
        tmp.path(),
        "ignore",
        dockerfile,
        &[
            (
                ".dockerignore",
                "**/*.key\nlogs\n!logs/keep.me\nnode_modules\n",
            ),
            ("data/keep.txt", "kept\n"),
            ("data/private.key", "key-1\n"),
            ("logs/a.log", "log\n"),
            ("logs/keep.me", "me\n"),
            ("node_modules/x/index.js", "js\n"),
        ],
    );
    std::fs::set_permissions(
        ctx.join("data"),
        std::os::unix::fs::PermissionsExt::from_mode(0o750),
    )
    .expect("chmod");
    let (first, _) = build_iid(&root, &ctx, "ignore:1", &[]);
    let rootfs = unpack(tmp.path(), &root, "ignore:1");
    assert_eq!(
        read(&rootfs, "listing"),
        ".\n./.dockerignore\n./Dockerfile\n./data\n./data/keep.txt\n./logs\n./logs/keep.me\n"
    );
    // The view's directories are the context's, owner and mode included.
    assert_eq!(read(&rootfs, "data-mode"), "750\n");
    assert_eq!(read(&rootfs, "dlist"), "keep.txt\n");
    // rw writes were discarded: the context is as it was.
    assert!(ctx.join("data/keep.txt").exists());
    assert!(!ctx.join("data/new").exists());
    let mut entries = layer_entries(&root, "ignore:1");
    entries.sort();
    assert_eq!(entries, ["data-mode", "dlist", "listing"]);

    // An ignored file does not reach the step key: changing it re-runs nothing.
    std::fs::write(ctx.join("data/private.key"), "key-2\n").expect("key");
    std::fs::write(ctx.join("logs/a.log"), "more log\n").expect("log");
    let (second, log) = build_iid(&root, &ctx, "ignore:2", &[]);
    assert_eq!(first, second, "{log}");
    assert_eq!(log.matches("CACHED").count(), 2, "{log}");
    // A file the mount shows does.
    std::fs::write(ctx.join("data/keep.txt"), "changed\n").expect("keep");
    // (Same outputs within the same second may give the same id, so the log says it.)
    let (_, log) = build_iid(&root, &ctx, "ignore:3", &[]);
    assert_eq!(log.matches("CACHED").count(), 0, "{log}");

    // An ignored source is absent, as in BuildKit.
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nRUN --mount=type=bind,source=node_modules,target=/nm true\n",
    )
    .expect("Dockerfile");
    let err = fails(mybuild(&root).args(["build", "-t", "ignore:4"]).arg(&ctx));
    assert!(
        err.contains("node_modules") && err.contains("not found"),
        "{err}"
    );
    assert!(err.contains("Dockerfile:2"), "{err}");

    // `<Dockerfile>.dockerignore` beside the Dockerfile wins over `.dockerignore`.
    std::fs::write(
        ctx.join("custom.Dockerfile"),
        "FROM busybox\nRUN --mount=type=bind,target=/ctx sh -c 'cd /ctx && find data | sort > /listing'\n",
    )
    .expect("custom");
    std::fs::write(
        ctx.join("custom.Dockerfile.dockerignore"),
        "data/keep.txt\n",
    )
    .expect("ign");
    ok(mybuild(&root)
        .args(["build", "-t", "ignore:5", "-f"])
        .arg(ctx.join("custom.Dockerfile"))
        .arg(&ctx));
    let rootfs = unpack(tmp.path(), &root, "ignore:5");
    assert_eq!(read(&rootfs, "listing"), "data\ndata/private.key\n");
}

/// Every regular file under `dir` whose bytes or path hold one of `needles`.
fn files_holding(dir: &Path, needles: &[&str]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let name = p.to_string_lossy().into_owned();
            if needles.iter().any(|n| name.contains(n)) {
                hits.push(p.clone());
            }
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                stack.push(p);
            } else if t.is_file() {
                let bytes = std::fs::read(&p).unwrap_or_default();
                let text = String::from_utf8_lossy(&bytes);
                if needles.iter().any(|n| text.contains(n)) {
                    hits.push(p);
                }
            }
        }
    }
    hits
}

fn find_named(dir: &Path, name: &str) -> Option<PathBuf> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_name() == name {
                return Some(p);
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            }
        }
    }
    None
}

#[test]
fn secret_values_never_reach_the_store_disk_even_while_the_step_runs() {
    let Some((tmp, root)) = setup() else { return };
    let secret_file = tmp.path().join("secret.txt");
    std::fs::write(&secret_file, FILE_SECRET).expect("secret");
    // The step waits on a fifo in a cache mount (which lives in the store), so the
    // store can be searched while the secrets are mounted.
    let ctx = context(
        tmp.path(),
        "secret-live",
        "FROM busybox\n\
         RUN --mount=type=cache,id=sync,target=/sync --mount=type=secret,id=fsec,target=/etc/fsec --mount=type=secret,id=esec,env=ESEC sh -c 'grep \" /etc/fsec \" /proc/self/mountinfo > /mountinfo && test -s /etc/fsec && test -n \"$ESEC\" && rm -f /sync/go && mkfifo /sync/go && touch /sync/ready && cat /sync/go > /dev/null && rm -f /sync/go /sync/ready'\n",
        &[],
    );
    let mut child = mybuild(&root)
        .args(["build", "-t", "secret:live", "--secret"])
        .arg(format!("id=fsec,src={}", secret_file.display()))
        .args(["--secret", "id=esec,env=MYBUILD_TEST_ENV_SECRET"])
        .env("MYBUILD_TEST_ENV_SECRET", ENV_SECRET)
        .arg(&ctx)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    // Poll until the step signals it is running with the secrets mounted.
    let ready = loop {
        if let Some(p) = find_named(&root.join("cache-mounts"), "ready") {
            break p;
        }
        if child.try_wait().expect("wait").is_some() {
            let out = child.wait_with_output().expect("output");
            panic!(
                "build ended before the step ran: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let during = files_holding(&root, &[FILE_SECRET, ENV_SECRET]);
    // Release the step whatever was found, so the build ends.
    std::fs::write(ready.with_file_name("go"), b"go\n").expect("release");
    let out = child.wait_with_output().expect("output");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        during,
        Vec::<PathBuf>::new(),
        "secret on the store's disk mid-step"
    );
    let rootfs = unpack(tmp.path(), &root, "secret:live");
    // The secret file sat on a tmpfs.
    let mountinfo = read(&rootfs, "mountinfo");
    assert!(mountinfo.contains(" - tmpfs "), "{mountinfo}");
    let mut entries = layer_entries(&root, "secret:live");
    entries.sort();
    assert_eq!(entries, ["mountinfo"]);
    // After the build: no file, name or decompressed blob holds either value.
    assert_eq!(
        files_holding(&root, &[FILE_SECRET, ENV_SECRET]),
        Vec::<PathBuf>::new()
    );
    let (hits, _) = ok(Command::new("sh")
        .arg("-c")
        .arg("find \"$1\" -type f -exec sh -c 'zcat -f \"$0\" 2>/dev/null | grep -a -q -e \"$1\" -e \"$2\" && echo \"$0\"' {} \"$2\" \"$3\" \\;")
        .arg("sh")
        .arg(&root)
        .arg(FILE_SECRET)
        .arg(ENV_SECRET));
    assert_eq!(hits, "", "secret in a blob");
    let img = serde_json::to_string(&inspect(&root, "secret:live")).expect("json");
    for s in [FILE_SECRET, ENV_SECRET] {
        assert!(!img.contains(s), "{s} in the image config or manifest");
    }
}

#[test]
fn mount_targets_edge_cases_leave_the_layer_right() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        "edges",
        "FROM busybox\n\
         RUN cp /etc/group /group-before\n\
         WORKDIR /app\n\
         RUN --mount=type=bind,source=src,target=src cat /app/src/a.txt > /rel-seen\n\
         RUN --mount=type=tmpfs,target=/opt/deep/nested/t sh -c 'touch /opt/deep/nested/t/x && test -d /opt/deep && echo ok > /deep-seen'\n\
         RUN --mount=type=bind,source=conf/app.conf,target=/etc/app/app.conf cat /etc/app/app.conf > /conf-seen\n\
         RUN --mount=type=bind,source=conf/app.conf,target=/etc/group cat /etc/group > /group-seen\n\
         RUN --mount=type=cache,id=nested,target=/work/src/cache --mount=type=bind,source=src,target=/work/src sh -c 'ls /work/src > /nested-list && echo hi > /work/src/cache/f && cat /work/src/cache/f > /nested-cache'\n\
         RUN --security=insecure --mount=type=tmpfs,target=/gone/t sh -c 'umount /gone/t && rmdir /gone/t && echo ok > /deleted-seen'\n\
         RUN --security=insecure --mount=type=tmpfs,target=/var/replaced sh -c 'umount /var/replaced && rmdir /var/replaced && echo mine > /var/replaced'\n\
         RUN --security=insecure --mount=type=bind,source=conf/app.conf,target=/srv/file.conf sh -c 'umount /srv/file.conf && rm /srv/file.conf && echo ok > /file-deleted'\n",
        &[("src/a.txt", "a\n"), ("conf/app.conf", "conf\n")],
    );
    // Unmounting needs CAP_SYS_ADMIN and the mount syscalls: an insecure step.
    ok(mybuild(&root)
        .args(["build", "--allow", "security.insecure", "-t", "edges:1"])
        .arg(&ctx));
    let rootfs = unpack(tmp.path(), &root, "edges:1");
    // A relative target is resolved against WORKDIR.
    assert_eq!(read(&rootfs, "rel-seen"), "a\n");
    assert_eq!(read(&rootfs, "deep-seen"), "ok\n");
    // A single file bound at a file path, under a missing parent or over an image file.
    assert_eq!(read(&rootfs, "conf-seen"), "conf\n");
    assert_eq!(read(&rootfs, "group-seen"), "conf\n");
    assert_eq!(read(&rootfs, "etc/group"), read(&rootfs, "group-before"));
    // The cache is mounted inside the bind, whatever order they were given in.
    assert_eq!(read(&rootfs, "nested-list"), "a.txt\ncache\n");
    assert_eq!(read(&rootfs, "nested-cache"), "hi\n");
    assert!(
        !ctx.join("src/cache").exists(),
        "mount point made in the context"
    );
    // Targets the step deleted or replaced: the step succeeded, and only what it made is kept.
    assert_eq!(read(&rootfs, "deleted-seen"), "ok\n");
    assert_eq!(read(&rootfs, "var/replaced"), "mine\n");
    assert_eq!(read(&rootfs, "file-deleted"), "ok\n");
    for p in ["app/src", "opt", "etc/app", "work", "gone", "srv"] {
        assert!(!rootfs.join(p).exists(), "{p} left in the image");
    }
    let mut entries = layer_entries(&root, "edges:1");
    entries.sort();
    entries.dedup();
    assert_eq!(
        entries,
        [
            "app",
            "conf-seen",
            "deep-seen",
            "deleted-seen",
            "file-deleted",
            "group-before",
            "group-seen",
            "nested-cache",
            "nested-list",
            "rel-seen",
            "var",
            "var/replaced",
        ]
    );
}

/// A real `ssh-agent` in the foreground, killed when dropped.
struct Agent(std::process::Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_agent(sock: &Path) -> Agent {
    let child = Command::new("ssh-agent")
        .args(["-D", "-a"])
        .arg(sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("ssh-agent");
    let agent = Agent(child);
    // Wait for the socket; ssh-add then fails loudly if the agent is not serving.
    for _ in 0..500 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    agent
}

/// `ssh-add` and the libraries `ldd` lists, copied into `dir`; returns the loader's name.
fn copy_ssh_add(dir: &Path) -> String {
    std::fs::create_dir_all(dir).expect("sshbin");
    let ssh_add = testdata::which("ssh-add").expect("ssh-add");
    std::fs::copy(&ssh_add, dir.join("ssh-add")).expect("copy ssh-add");
    let (list, _) = ok(Command::new("ldd").arg(&ssh_add));
    let mut loader = None;
    for line in list.lines() {
        let Some(path) = line.split_whitespace().find(|w| w.starts_with('/')) else {
            continue;
        };
        let name = Path::new(path).file_name().expect("name").to_owned();
        std::fs::copy(path, dir.join(&name)).expect("copy library");
        if name.to_string_lossy().starts_with("ld-linux") {
            loader = Some(name.to_string_lossy().into_owned());
        }
    }
    loader.expect("a dynamic loader in ldd's list")
}

#[test]
fn ssh_agents_are_forwarded_and_leave_no_trace() {
    if !testdata::require_tool("ssh-agent")
        || !testdata::require_tool("ssh-add")
        || !testdata::require_tool("ssh-keygen")
        || !testdata::require_tool("ldd")
    {
        return;
    }
    let Some((tmp, root)) = setup() else { return };
    let key = tmp.path().join("key");
    ok(Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "mybuild-test-key",
            "-f",
        ])
        .arg(&key));
    let sock = tmp.path().join("agent.sock");
    let _agent = start_agent(&sock);
    ok(Command::new("ssh-add")
        .arg(&key)
        .env("SSH_AUTH_SOCK", &sock));
    let (expected, _) = ok(Command::new("ssh-keygen")
        .arg("-lf")
        .arg(key.with_extension("pub")));
    let fingerprint = expected.split_whitespace().nth(1).expect("fingerprint");

    let dockerfile = "FROM busybox\n\
         RUN --mount=type=bind,source=sshbin,target=/opt/ssh --mount=type=ssh /opt/ssh/LOADER --library-path /opt/ssh /opt/ssh/ssh-add -l > /keys\n\
         RUN --mount=type=ssh,id=work,target=/tmp/agent.sock,mode=0660,uid=1,gid=2 --mount=type=ssh sh -c 'echo \"$SSH_AUTH_SOCK\" > /sock && stat -c \"%F %a %u %g\" /tmp/agent.sock > /perm && test -S /run/buildkit/ssh_agent.1 && echo second > /second'\n\
         RUN --mount=type=ssh,id=absent sh -c 'test ! -e /run/buildkit/ssh_agent.0 && echo \"$SSH_AUTH_SOCK\" > /absent'\n";
    let ctx = context(tmp.path(), "ssh", dockerfile, &[]);
    let loader = copy_ssh_add(&ctx.join("sshbin"));
    std::fs::write(
        ctx.join("Dockerfile"),
        dockerfile.replace("LOADER", &loader),
    )
    .expect("Dockerfile");
    ok(mybuild(&root)
        .args(["build", "-t", "ssh:1", "--ssh", "default", "--ssh"])
        .arg(format!("work={}", sock.display()))
        .env("SSH_AUTH_SOCK", &sock)
        .arg(&ctx));
    let rootfs = unpack(tmp.path(), &root, "ssh:1");
    let keys = read(&rootfs, "keys");
    assert!(keys.contains(fingerprint), "{keys} lacks {fingerprint}");
    assert!(keys.contains("mybuild-test-key"), "{keys}");
    assert_eq!(read(&rootfs, "sock"), "/tmp/agent.sock\n");
    assert_eq!(read(&rootfs, "perm"), "socket 660 1 2\n");
    assert_eq!(read(&rootfs, "second"), "second\n");
    // A missing id that is not required is skipped; SSH_AUTH_SOCK still names it.
    assert_eq!(read(&rootfs, "absent"), "/run/buildkit/ssh_agent.0\n");
    assert!(!rootfs.join("run/buildkit").exists());
    assert!(!rootfs.join("tmp/agent.sock").exists());
    assert!(!rootfs.join("opt/ssh").exists());
    let mut entries = layer_entries(&root, "ssh:1");
    entries.sort();
    assert_eq!(entries, ["absent", "keys", "perm", "second", "sock"]);
    // The agents are keyed by the mount's spec, never by what they hold: another
    // agent, holding no key, hits the cache for every RUN.
    let sock2 = tmp.path().join("agent2.sock");
    let _agent2 = start_agent(&sock2);
    let default2 = format!("default={}", sock2.display());
    let work2 = format!("work={}", sock2.display());
    let (_, log) = build_iid(
        &root,
        &ctx,
        "ssh:1b",
        &["--ssh", &default2, "--ssh", &work2],
    );
    assert_eq!(log.matches("CACHED").count(), 3, "{log}");
    // The agent's own socket kept its owner and mode.
    let (mode, _) = ok(Command::new("stat").args(["-c", "%a"]).arg(&sock));
    assert_eq!(mode.trim(), "600");

    // A required agent that was not given fails, naming the id and the line.
    let req = context(
        tmp.path(),
        "ssh-required",
        "FROM busybox\nRUN --mount=type=ssh,id=deploy_key,required=true true\n",
        &[],
    );
    let err = fails(mybuild(&root).args(["build", "-t", "ssh:2"]).arg(&req));
    assert!(err.contains("deploy_key"), "{err}");
    assert!(err.contains("Dockerfile:2"), "{err}");
    // An --ssh socket that does not exist, or one given with a key file, is refused
    // before building (BuildKit allows one socket, or key files).
    let missing = tmp.path().join("no-such-agent.sock");
    let err = fails(
        mybuild(&root)
            .args(["build", "-t", "ssh:3", "--ssh"])
            .arg(format!("deploy_key={}", missing.display()))
            .arg(&req),
    );
    assert!(err.contains("deploy_key"), "{err}");
    assert!(err.contains("no-such-agent.sock"), "{err}");
    for mixed in [
        format!("deploy_key={},{}", sock.display(), key.display()),
        format!("deploy_key={},{}", key.display(), sock.display()),
    ] {
        let err = fails(
            mybuild(&root)
                .args(["build", "-t", "ssh:4", "--ssh", &mixed])
                .arg(&req),
        );
        assert!(err.contains("must be the only path"), "{err}");
        assert!(err.contains(&sock.display().to_string()), "{err}");
    }
    let err = fails(
        mybuild(&root)
            .args(["build", "-t", "ssh:5", "--ssh", "default"])
            .env_remove("SSH_AUTH_SOCK")
            .arg(&req),
    );
    assert!(err.contains("SSH_AUTH_SOCK"), "{err}");
}

/// `ssh-keygen` without a passphrase unless one is given; returns the public key's
/// fingerprint as `ssh-keygen -lf` prints it.
fn keygen(path: &Path, kind: &str, comment: &str, passphrase: &str) -> String {
    ok(Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", passphrase, "-C", comment, "-f"])
        .arg(path));
    let (listed, _) = ok(Command::new("ssh-keygen")
        .arg("-lf")
        .arg(path.with_extension("pub")));
    listed
        .split_whitespace()
        .nth(1)
        .expect("fingerprint")
        .to_string()
}

/// What remains of the agents mybuild started with `TMPDIR=tmpdir`: their socket
/// directories, and any process whose command line names that directory.
fn agent_leftovers(tmpdir: &Path) -> Vec<String> {
    let mut left = Vec::new();
    for e in std::fs::read_dir(tmpdir).expect("tmpdir") {
        let name = e.expect("entry").file_name().to_string_lossy().into_owned();
        if name.starts_with("mybuild-ssh-") {
            left.push(format!("directory {name}"));
        }
    }
    let needle = tmpdir.to_string_lossy().into_owned();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&needle) {
            left.push(format!(
                "process {}: {cmdline}",
                e.file_name().to_string_lossy()
            ));
        }
    }
    left
}

/// Polls until the agents are gone (their guard cleans up just after we exit).
fn assert_agents_gone(tmpdir: &Path) {
    let mut left = agent_leftovers(tmpdir);
    for _ in 0..500 {
        if left.is_empty() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        left = agent_leftovers(tmpdir);
    }
    panic!("the build left ssh agents behind: {left:?}");
}

/// Every line of a PEM or OpenSSH key file's base64 body.
fn key_body_lines(key: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(key).expect("key");
    let lines: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_string)
        .collect();
    assert!(!lines.is_empty(), "no body in {text}");
    lines
}

#[test]
fn ssh_key_files_are_served_by_an_agent_for_the_build() {
    if !testdata::require_tool("ssh-agent")
        || !testdata::require_tool("ssh-add")
        || !testdata::require_tool("ssh-keygen")
        || !testdata::require_tool("ldd")
    {
        return;
    }
    let Some((tmp, root)) = setup() else { return };
    let key1 = tmp.path().join("id_ed25519");
    let key2 = tmp.path().join("id_ecdsa");
    let fp1 = keygen(&key1, "ed25519", "key-one", "");
    let fp2 = keygen(&key2, "ecdsa", "key-two", "");
    // BuildKit reads the file whatever its mode; ssh-add alone would refuse this one.
    std::fs::set_permissions(&key2, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .expect("chmod");
    let agent_tmp = tmp.path().join("agent-tmp");
    std::fs::create_dir_all(&agent_tmp).expect("agent tmp");

    let dockerfile = "FROM busybox\n\
         RUN --mount=type=bind,source=sshbin,target=/opt/ssh --mount=type=ssh /opt/ssh/LOADER --library-path /opt/ssh /opt/ssh/ssh-add -l > /default-keys\n\
         RUN --mount=type=bind,source=sshbin,target=/opt/ssh --mount=type=ssh,id=work /opt/ssh/LOADER --library-path /opt/ssh /opt/ssh/ssh-add -l > /work-keys\n";
    let ctx = context(tmp.path(), "sshkeys", dockerfile, &[]);
    let loader = copy_ssh_add(&ctx.join("sshbin"));
    std::fs::write(
        ctx.join("Dockerfile"),
        dockerfile.replace("LOADER", &loader),
    )
    .expect("Dockerfile");
    let (_, log) = ok(mybuild(&root)
        .args(["build", "-t", "sshkeys:1", "--ssh"])
        .arg(format!("default={}", key1.display()))
        .arg("--ssh")
        .arg(format!("work={},{}", key1.display(), key2.display()))
        .env("TMPDIR", &agent_tmp)
        .env_remove("SSH_AUTH_SOCK")
        .arg(&ctx));
    assert_agents_gone(&agent_tmp);
    let rootfs = unpack(tmp.path(), &root, "sshkeys:1");
    let default_keys = read(&rootfs, "default-keys");
    assert_eq!(default_keys.lines().count(), 1, "{default_keys}");
    assert!(default_keys.contains(&fp1), "{default_keys} lacks {fp1}");
    let work_keys = read(&rootfs, "work-keys");
    assert_eq!(work_keys.lines().count(), 2, "{work_keys}");
    assert!(work_keys.contains(&fp1), "{work_keys} lacks {fp1}");
    assert!(work_keys.contains(&fp2), "{work_keys} lacks {fp2}");
    let mut entries = layer_entries(&root, "sshkeys:1");
    entries.sort();
    assert_eq!(entries, ["default-keys", "work-keys"]);

    // No key bytes anywhere: not in a layer (uncompressed), the config, or any
    // file of the store, nor in what the build printed.
    let body: Vec<String> = key_body_lines(&key1)
        .into_iter()
        .chain(key_body_lines(&key2))
        .collect();
    let img = inspect(&root, "sshkeys:1");
    let blob = |d: &str| root.join("blobs/sha256").join(&d["sha256:".len()..]);
    let mut texts = vec![(
        "config".to_string(),
        std::fs::read(blob(
            img["Manifest"]["config"]["digest"]
                .as_str()
                .expect("config"),
        ))
        .expect("config blob"),
    )];
    for l in img["Manifest"]["layers"].as_array().expect("layers") {
        let digest = l["digest"].as_str().expect("digest");
        let out = Command::new("zcat")
            .arg("-f")
            .arg(blob(digest))
            .output()
            .expect("zcat");
        assert!(out.status.success(), "zcat {digest}");
        texts.push((digest.to_string(), out.stdout));
    }
    for e in walkdir(&root) {
        texts.push((
            e.display().to_string(),
            std::fs::read(&e).expect("store file"),
        ));
    }
    texts.push(("the build's output".into(), log.into_bytes()));
    for (what, bytes) in &texts {
        let text = String::from_utf8_lossy(bytes);
        for line in &body {
            assert!(!text.contains(line.as_str()), "key material in {what}");
        }
    }

    // The agents are keyed by the mount's spec, never by what they hold: other keys
    // hit the cache for both RUNs.
    let key3 = tmp.path().join("other");
    keygen(&key3, "ed25519", "other", "");
    let (_, log) = ok(mybuild(&root)
        .args(["build", "-t", "sshkeys:2", "--ssh"])
        .arg(format!("default={}", key3.display()))
        .arg("--ssh")
        .arg(format!("work={}", key3.display()))
        .env("TMPDIR", &agent_tmp)
        .arg(&ctx));
    assert_eq!(log.matches("CACHED").count(), 2, "{log}");
    assert_agents_gone(&agent_tmp);
}

/// Regular files under `dir`, recursively.
fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("dir").flatten() {
            let ft = e.file_type().expect("type");
            if ft.is_dir() {
                todo.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn ssh_key_files_that_cannot_be_served_fail_before_the_build() {
    if !testdata::require_tool("ssh-agent")
        || !testdata::require_tool("ssh-add")
        || !testdata::require_tool("ssh-keygen")
    {
        return;
    }
    let Some((tmp, root)) = setup() else { return };
    let good = tmp.path().join("good");
    keygen(&good, "ed25519", "good", "");
    let locked = tmp.path().join("locked");
    keygen(&locked, "ed25519", "locked", "secret");
    let agent_tmp = tmp.path().join("agent-tmp");
    std::fs::create_dir_all(&agent_tmp).expect("agent tmp");
    let ctx = context(
        tmp.path(),
        "sshbad",
        "FROM busybox\nRUN --mount=type=ssh,id=work echo step-ran-marker > /ran\n",
        &[],
    );
    let build = |ssh: String| {
        let err = fails(
            mybuild(&root)
                .args(["build", "-t", "sshbad:1", "--ssh", &ssh])
                .env("TMPDIR", &agent_tmp)
                .arg(&ctx),
        );
        // Refused before any step ran, and the agent already started is gone.
        assert!(!err.contains("step-ran-marker"), "{err}");
        assert_agents_gone(&agent_tmp);
        err
    };
    // A passphrase is never asked for: the key is refused, naming the file. The
    // good key before it was loaded into an agent that is stopped again.
    let err = build(format!("work={},{}", good.display(), locked.display()));
    assert!(err.contains("--ssh work"), "{err}");
    assert!(err.contains(&locked.display().to_string()), "{err}");
    assert!(err.contains("passphrase"), "{err}");
    assert!(!err.contains(&good.display().to_string()), "{err}");
    // A file that is not there.
    let missing = tmp.path().join("no-such-key");
    let err = build(format!("work={}", missing.display()));
    assert!(err.contains(&missing.display().to_string()), "{err}");
    assert!(err.contains("No such file"), "{err}");
    // A file that is not a private key (the public half), named with the reason.
    let public = good.with_extension("pub");
    let err = build(format!("work={}", public.display()));
    assert!(err.contains(&public.display().to_string()), "{err}");
    assert!(err.contains("not a private key"), "{err}");
    let (images, _) = ok(mybuild(&root).arg("images"));
    assert!(!images.contains("sshbad"), "{images}");
}

#[test]
fn ssh_key_agents_are_stopped_when_the_build_is_interrupted() {
    if !testdata::require_tool("ssh-agent")
        || !testdata::require_tool("ssh-add")
        || !testdata::require_tool("ssh-keygen")
    {
        return;
    }
    let Some((tmp, root)) = setup() else { return };
    let key = tmp.path().join("key");
    keygen(&key, "ed25519", "key", "");
    let agent_tmp = tmp.path().join("agent-tmp");
    std::fs::create_dir_all(&agent_tmp).expect("agent tmp");
    for (n, signal) in [rustix::process::Signal::INT, rustix::process::Signal::TERM]
        .into_iter()
        .enumerate()
    {
        let marker = format!("{}{n}", 4_242_000 + std::process::id() % 1000);
        let ctx = context(
            tmp.path(),
            &format!("sshint{n}"),
            &format!("FROM busybox\nRUN --mount=type=ssh sleep {marker}\n"),
            &[],
        );
        let mut child = mybuild(&root)
            .args(["build", "-t", "sshint:1", "--ssh"])
            .arg(format!("default={}", key.display()))
            .env("TMPDIR", &agent_tmp)
            .arg(&ctx)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("mybuild");
        // Waits for the step to run: the agent is up and serving it.
        let running = || {
            std::fs::read_dir("/proc")
                .expect("/proc")
                .flatten()
                .any(|e| {
                    std::fs::read(e.path().join("cmdline"))
                        .map(|c| String::from_utf8_lossy(&c).contains(&marker))
                        .unwrap_or(false)
                })
        };
        let mut waited = 0;
        while !running() {
            assert!(waited < 3000, "the step never started");
            std::thread::sleep(std::time::Duration::from_millis(10));
            waited += 1;
        }
        assert!(
            !agent_leftovers(&agent_tmp).is_empty(),
            "the build has no agent to clean up"
        );
        let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("pid");
        rustix::process::kill_process(pid, signal).expect("kill");
        let status = child.wait().expect("wait");
        assert!(!status.success(), "{status}");
        assert_agents_gone(&agent_tmp);
    }
}
