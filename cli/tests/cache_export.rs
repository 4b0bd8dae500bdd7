//! `build --cache-to` / `--cache-from`: the step cache carried to a fresh store
//! through an OCI layout directory or a registry.

use std::path::{Path, PathBuf};

mod common;
use common::{context, fails, mybuild, ok, setup, unpack};
use testdata::registry::Registry;

const EPOCH: &str = "1700000000";

/// A store on another "machine": empty but for the same busybox (same digest, as a
/// base pulled by digest would be), moved over with save/load.
fn fresh_store(tmp: &Path, from: &Path, name: &str) -> PathBuf {
    let archive = tmp.join("busybox.tar");
    if !archive.is_file() {
        ok(mybuild(from).args(["save", "busybox", "-o"]).arg(&archive));
    }
    let root = tmp.join(name);
    ok(mybuild(&root).arg("load").arg("-i").arg(&archive));
    root
}

/// Builds `ctx` tagged `tag` with plain progress; returns (config digest, stderr).
/// The config is the image's content: a layer reused from an imported cache is
/// the compressed blob the cache carried, where the first store keeps its layers
/// uncompressed, so the two manifests differ (a push sends the same one).
fn build(root: &Path, ctx: &Path, tag: &str, extra: &[&str]) -> (String, String) {
    let iid = root.with_extension(format!("{tag}.iid"));
    let (_, err) = ok(mybuild(root)
        .args(["build", "--progress", "plain", "-t", tag, "--iidfile"])
        .arg(&iid)
        .args(extra)
        .arg(ctx)
        .env("SOURCE_DATE_EPOCH", EPOCH));
    let image = common::inspect(root, tag);
    let config = image["Manifest"]["config"]["digest"]
        .as_str()
        .expect("config");
    (config.to_string(), err)
}

/// A file of the image `tag` (unpacked once per tag; tags differ between stores).
fn read(tmp: &Path, root: &Path, tag: &str, file: &str) -> String {
    let bundle = tmp.join(format!("bundle-{}", tag.replace(':', "-")));
    let rootfs = if bundle.is_dir() {
        bundle.join("rootfs")
    } else {
        unpack(tmp, root, tag)
    };
    std::fs::read_to_string(rootfs.join(file)).expect("file in image")
}

/// Lines like `#3 CACHED`, and steps that ran (`#3 DONE`).
fn cached(err: &str) -> usize {
    err.lines().filter(|l| l.ends_with(" CACHED")).count()
}
fn ran(err: &str) -> usize {
    err.lines()
        .filter(|l| l.starts_with('#') && l.contains(" DONE "))
        .count()
}

/// The cache manifest in a local export: (manifest, records).
fn local_cache(dir: &Path) -> (serde_json::Value, Vec<serde_json::Value>) {
    let blob = |d: &str| std::fs::read(dir.join("blobs/sha256").join(&d[7..])).expect("blob");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).expect("index")).unwrap();
    let m: serde_json::Value =
        serde_json::from_slice(&blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap();
    let cfg: serde_json::Value =
        serde_json::from_slice(&blob(m["config"]["digest"].as_str().unwrap())).unwrap();
    (m, cfg["records"].as_array().unwrap().clone())
}

const STAMP_DF: &str = "FROM busybox\nCOPY a.txt /a.txt\n\
    RUN cat /proc/sys/kernel/random/uuid > /stamp\nENV DONE=1\n";

#[test]
fn local_cache_restores_every_step_in_a_fresh_store() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(tmp.path(), STAMP_DF, &[("a.txt", "one\n")]);
    let dir = tmp.path().join("cache");
    let dest = format!("type=local,dest={}", dir.display());
    let (digest1, err) = build(&root, &ctx, "app:1", &["--cache-to", &dest]);
    assert!(
        err.contains("(mode=min): 3 records, 2 layers"),
        "COPY, RUN, ENV: {err}"
    );
    let stamp1 = read(tmp.path(), &root, "app:1", "stamp");
    assert!(dir.join("oci-layout").is_file());
    let (m, records) = local_cache(&dir);
    assert_eq!(m["artifactType"], "application/vnd.mybuild.cache.v1+json");
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.mybuild.cache.v1+json"
    );
    assert_eq!(m["layers"].as_array().unwrap().len(), 2);
    assert!(m["layers"][0]["mediaType"]
        .as_str()
        .unwrap()
        .contains("tar+gzip"));
    assert_eq!(records.len(), 3);

    let fresh = fresh_store(tmp.path(), &root, "fresh");
    let src = format!("type=local,src={}", dir.display());
    let (digest2, err) = build(&fresh, &ctx, "app:2", &["--cache-from", &src]);
    assert!(
        err.contains(&format!(
            "importing cache from {}: 3 records, 2 layers",
            dir.display()
        )),
        "{err}"
    );
    assert_eq!(cached(&err), 3, "{err}");
    assert_eq!(ran(&err), 0, "{err}");
    assert!(err.contains("fetched 2 layers"), "{err}");
    // The RUN did not run again: its random output came from the first build.
    assert_eq!(read(tmp.path(), &fresh, "app:2", "stamp"), stamp1);
    assert_eq!(digest2, digest1);
    ok(mybuild(&fresh).arg("fsck"));

    // Without the cache the fresh store runs the step: the check above can fail.
    let other = fresh_store(tmp.path(), &root, "other");
    let (digest3, err) = build(&other, &ctx, "app:3", &[]);
    assert_eq!(cached(&err), 0, "{err}");
    assert_ne!(read(tmp.path(), &other, "app:3", "stamp"), stamp1);
    assert_ne!(digest3, digest1);
}

#[test]
fn registry_cache_restores_and_a_changed_file_reruns_only_later_steps() {
    if !testdata::require_tool("docker-registry") {
        return;
    }
    let Some((tmp, root)) = setup() else { return };
    let reg = Registry::start();
    let cache_ref = format!("{}/cache:1", reg.addr);
    let df = "FROM busybox\nRUN cat /proc/sys/kernel/random/uuid > /stamp\n\
              COPY a.txt /a.txt\nRUN cat /a.txt /stamp > /both\n";
    let ctx = context(tmp.path(), df, &[("a.txt", "one\n")]);
    let to = format!("type=registry,ref={cache_ref},mode=max");
    let (digest1, err) = build(&root, &ctx, "app:1", &["--cache-to", &to]);
    assert!(
        err.contains(&format!("exporting cache to {cache_ref}: done")),
        "{err}"
    );
    let stamp1 = read(tmp.path(), &root, "app:1", "stamp");
    // The registry holds the artifact under the tag.
    let (remote, _) = ok(mybuild(&root).args(["digest", &cache_ref]));
    assert!(remote.trim().starts_with("sha256:"), "{remote}");

    // A fresh store, the bare form, and a missing cache beside it (a warning).
    let fresh = fresh_store(tmp.path(), &root, "fresh");
    let missing = format!("{}/nothere:1", reg.addr);
    let (digest2, err) = build(
        &fresh,
        &ctx,
        "app:2",
        &["--cache-from", &cache_ref, "--cache-from", &missing],
    );
    assert!(
        err.contains(&format!(
            "warning: importing cache from {missing}: not found"
        )),
        "{err}"
    );
    assert_eq!(cached(&err), 3, "{err}");
    assert_eq!(ran(&err), 0, "{err}");
    assert_eq!(digest2, digest1);
    assert_eq!(read(tmp.path(), &fresh, "app:2", "stamp"), stamp1);

    // A changed source file in yet another store: the first RUN is restored, the
    // COPY and the RUN after it run.
    std::fs::write(ctx.join("a.txt"), "two\n").unwrap();
    let third = fresh_store(tmp.path(), &root, "third");
    let from = format!("type=registry,ref={cache_ref}");
    let (_, err) = build(&third, &ctx, "app:3", &["--cache-from", &from]);
    assert_eq!(cached(&err), 1, "{err}");
    assert_eq!(ran(&err), 2, "{err}");
    assert!(err.contains("fetched 1 layer "), "{err}");
    assert_eq!(read(tmp.path(), &third, "app:3", "stamp"), stamp1);
    assert_eq!(
        read(tmp.path(), &third, "app:3", "both"),
        format!("two\n{stamp1}")
    );
}

#[test]
fn mode_min_leaves_out_stages_only_copied_from_and_max_restores_them() {
    let Some((tmp, root)) = setup() else { return };
    let df = "FROM busybox AS builder\nRUN cat /proc/sys/kernel/random/uuid > /built\n\
              FROM busybox\nCOPY --from=builder /built /built\nRUN cat /built > /copy\n";
    let ctx = context(tmp.path(), df, &[]);
    let (min, max) = (tmp.path().join("min"), tmp.path().join("max"));
    let (digest1, _) = build(
        &root,
        &ctx,
        "app:1",
        &[
            "--cache-to",
            &format!("type=local,dest={}", min.display()),
            "--cache-to",
            &format!("type=local,dest={},mode=max", max.display()),
        ],
    );
    let built1 = read(tmp.path(), &root, "app:1", "built");
    // min: the final stage's COPY and RUN; max: the builder's RUN too.
    let steps = |dir: &Path| -> Vec<String> {
        let mut s: Vec<String> = local_cache(dir)
            .1
            .iter()
            .map(|r| r["step"].as_str().unwrap().to_string())
            .collect();
        s.sort();
        s
    };
    assert_eq!(
        steps(&min),
        [
            "COPY --from=builder /built /built",
            "RUN cat /built > /copy"
        ]
    );
    assert_eq!(
        steps(&max),
        [
            "COPY --from=builder /built /built",
            "RUN cat /built > /copy",
            "RUN cat /proc/sys/kernel/random/uuid > /built"
        ]
    );

    // With min the builder stage is built again; its new output changes what the
    // COPY reads, so nothing after it can be reused either.
    let a = fresh_store(tmp.path(), &root, "a");
    let src = format!("type=local,src={}", min.display());
    let (digest_a, err) = build(&a, &ctx, "app:2", &["--cache-from", &src]);
    assert!(err.contains("[builder] RUN cat /proc"), "{err}");
    assert_eq!(cached(&err), 0, "{err}");
    assert_ne!(read(tmp.path(), &a, "app:2", "built"), built1);
    assert_ne!(digest_a, digest1);

    // With max every step is restored, the builder's included.
    let b = fresh_store(tmp.path(), &root, "b");
    let src = format!("type=local,src={}", max.display());
    let (digest_b, err) = build(&b, &ctx, "app:3", &["--cache-from", &src]);
    assert_eq!(cached(&err), 3, "{err}");
    assert_eq!(ran(&err), 0, "{err}");
    assert_eq!(read(tmp.path(), &b, "app:3", "built"), built1);
    assert_eq!(digest_b, digest1);
}

#[test]
fn corrupt_blob_runs_the_step_and_missing_or_unsupported_caches_are_reported() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        "FROM busybox\nRUN cat /proc/sys/kernel/random/uuid > /stamp\n",
        &[],
    );
    let dir = tmp.path().join("cache");
    build(
        &root,
        &ctx,
        "app:1",
        &["--cache-to", &format!("type=local,dest={}", dir.display())],
    );
    let stamp1 = read(tmp.path(), &root, "app:1", "stamp");
    let (m, _) = local_cache(&dir);
    let layer = m["layers"][0]["digest"].as_str().unwrap().to_string();
    let path = dir.join("blobs/sha256").join(&layer[7..]);
    let size = std::fs::metadata(&path).unwrap().len() as usize;
    std::fs::write(&path, vec![b'x'; size]).unwrap();

    let fresh = fresh_store(tmp.path(), &root, "fresh");
    let missing = tmp.path().join("no-such-cache");
    let (_, err) = build(
        &fresh,
        &ctx,
        "app:2",
        &[
            "--cache-from",
            &format!("type=local,src={}", dir.display()),
            "--cache-from",
            &format!("type=local,src={}", missing.display()),
        ],
    );
    assert!(
        err.contains(&format!(
            "warning: importing cache from {}: not found",
            missing.display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "warning: cache layer {layer} from {}",
            dir.display()
        )) && err.contains("failed verification")
            && err.contains("the step ran instead"),
        "{err}"
    );
    assert_eq!(cached(&err), 0, "{err}");
    assert_eq!(ran(&err), 1, "{err}");
    assert_ne!(read(tmp.path(), &fresh, "app:2", "stamp"), stamp1);
    // The corrupt bytes never became a blob of the store.
    ok(mybuild(&fresh).arg("fsck"));

    for t in ["gha", "s3", "azblob", "inline"] {
        let err = fails(
            mybuild(&root)
                .args(["build", "--cache-to", &format!("type={t}")])
                .arg(&ctx),
        );
        assert!(
            err.contains(&format!("--cache-to: cache type \"{t}\" is not supported")),
            "{err}"
        );
    }
    let err = fails(
        mybuild(&root)
            .args(["build", "--cache-from", "type=gha,scope=x"])
            .arg(&ctx),
    );
    assert!(err.contains("cache type \"gha\" is not supported"), "{err}");
}
