//! `mybuild build --platform`: the platform ARGs, stages built for the target or
//! the build platform, bases picked from a multi-platform index, RUN on a platform the
//! host cannot execute, and step keys that never cross platforms.

mod common;

use common::*;

use std::path::{Path, PathBuf};

use testdata::registry::Registry;

fn amd64_host() -> bool {
    if std::env::consts::ARCH == "x86_64" {
        return true;
    }
    eprintln!("skipping: these tests expect an amd64 host");
    false
}

/// Builds `ctx` for `platform` as `tag`, also written to a directory: (log, rootfs).
fn build(root: &Path, ctx: &Path, platform: &str, tag: &str) -> (String, PathBuf) {
    let out = root.with_file_name(format!("out-{}", tag.replace([':', '/'], "-")));
    let (_, log) = ok(mybuild(root)
        .args([
            "build",
            "--progress",
            "plain",
            "--platform",
            platform,
            "-t",
            tag,
        ])
        .arg("-o")
        .arg(format!("type=local,dest={}", out.display()))
        .arg(ctx));
    (log, out)
}

fn architecture(root: &Path, tag: &str) -> String {
    inspect(root, tag)["Config"]["architecture"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Texts of the steps a plain-progress log reports as CACHED.
fn cached_steps(log: &str) -> Vec<String> {
    let mut texts = std::collections::BTreeMap::new();
    let mut cached = Vec::new();
    for line in log.lines() {
        let Some((id, rest)) = line.strip_prefix('#').and_then(|l| l.split_once(' ')) else {
            continue;
        };
        if rest == "CACHED" {
            cached.extend(texts.get(id).cloned());
        } else if let Some((_, text)) = rest.strip_prefix('[').and_then(|r| r.split_once("] ")) {
            texts.insert(id.to_string(), text.to_string());
        }
    }
    cached
}

#[test]
fn target_platform_args_reach_run_and_the_config() {
    let Some((tmp, root)) = setup() else { return };
    if !amd64_host() {
        return;
    }
    let ctx = context(
        tmp.path(),
        "FROM busybox\n\
         ARG TARGETPLATFORM\nARG TARGETARCH\nARG BUILDPLATFORM\n\
         RUN echo $TARGETPLATFORM $TARGETARCH $BUILDPLATFORM > /p\n",
        &[],
    );
    // x86_64 is the same platform as amd64.
    let (_, out) = build(&root, &ctx, "linux/x86_64", "p:1");
    assert_eq!(
        std::fs::read_to_string(out.join("p")).unwrap(),
        "linux/amd64 amd64 linux/amd64\n"
    );
    assert_eq!(architecture(&root, "p:1"), "amd64");
}

#[test]
fn cross_build_copies_from_a_build_platform_stage() {
    let Some((tmp, root)) = setup() else { return };
    if !amd64_host() {
        return;
    }
    let ctx = context(
        tmp.path(),
        "FROM --platform=$BUILDPLATFORM busybox AS build\n\
         ARG TARGETARCH\n\
         RUN echo $TARGETARCH > /arch\n\
         FROM scratch\n\
         COPY --from=build /arch /arch\n",
        &[],
    );
    let (_, out) = build(&root, &ctx, "linux/aarch64", "cross:arm");
    assert_eq!(
        std::fs::read_to_string(out.join("arch")).unwrap(),
        "arm64\n"
    );
    let img = inspect(&root, "cross:arm");
    assert_eq!(img["Config"]["architecture"], "arm64");
    assert_eq!(img["Config"]["os"], "linux");
    // arm/v7 carries its variant into the config.
    build(&root, &ctx, "linux/arm", "cross:arm7");
    let img = inspect(&root, "cross:arm7");
    assert_eq!(img["Config"]["architecture"], "arm");
    assert_eq!(img["Config"]["variant"], "v7");
}

#[test]
fn steps_are_never_shared_across_target_platforms() {
    let Some((tmp, root)) = setup() else { return };
    if !amd64_host() {
        return;
    }
    let ctx = context(
        tmp.path(),
        "FROM --platform=$BUILDPLATFORM busybox AS build\n\
         RUN echo built > /b\n\
         FROM scratch\n\
         COPY --from=build /b /b\n\
         COPY a /a\n",
        &[("a", "same for every platform\n")],
    );
    let (_, _) = build(&root, &ctx, "linux/amd64", "k:amd");
    let (log, _) = build(&root, &ctx, "linux/arm64", "k:arm");
    // The build-platform stage is the same work for both targets; the target's
    // stage is not.
    assert_eq!(
        cached_steps(&log),
        vec!["RUN echo built > /b".to_string()],
        "{log}"
    );
    assert_eq!(architecture(&root, "k:arm"), "arm64");
    assert_eq!(architecture(&root, "k:amd"), "amd64");
    // Building amd64 again hits every step and gives the same image.
    let before = inspect(&root, "k:amd")["Id"].clone();
    let (log, _) = build(&root, &ctx, "linux/amd64", "k:amd2");
    assert_eq!(cached_steps(&log).len(), 3, "{log}");
    assert_eq!(inspect(&root, "k:amd2")["Id"], before);
}

/// Pushes `busybox` (amd64) and an arm64 image (`/which` = arm, ENV WHICH=arm, a
/// /bin/sh for aarch64) and an index of both; returns the index's reference.
fn push_index(root: &Path, tmp: &Path, registry: &str) -> String {
    let ctx = tmp.join("arm-image");
    std::fs::create_dir_all(ctx.join("rootfs/bin")).unwrap();
    std::fs::write(ctx.join("rootfs/bin/sh"), aarch64_elf()).unwrap();
    std::fs::set_permissions(
        ctx.join("rootfs/bin/sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(ctx.join("rootfs/which"), "arm\n").unwrap();
    std::fs::create_dir_all(ctx.join("rootfs/etc")).unwrap();
    std::fs::write(
        ctx.join("rootfs/etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(ctx.join("rootfs/etc/group"), "root:x:0:\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY rootfs/ /\nENV WHICH=arm\n",
    )
    .unwrap();
    ok(mybuild(root)
        .args(["build", "-q", "--platform", "linux/arm64", "-t", "armimg"])
        .arg(&ctx));
    common::push_two_platform_index(root, registry, "busybox", "armimg");
    format!("{registry}/multi:both")
}

#[test]
fn base_is_picked_from_an_index_for_the_target_platform() {
    let Some((tmp, root)) = setup() else { return };
    if !amd64_host() {
        return;
    }
    let reg = Registry::start();
    let both = push_index(&root, tmp.path(), &reg.addr);
    // A fresh store, so the base comes from the registry.
    let other = tmp.path().join("other");
    let ctx = context(
        tmp.path(),
        &format!("FROM {both}\nCOPY f /f\n"),
        &[("f", "from the context\n")],
    );
    let (_, out) = build(&other, &ctx, "linux/amd64", "on:amd");
    assert!(!out.join("which").exists());
    assert!(out.join("bin/busybox").exists());
    assert_eq!(architecture(&other, "on:amd"), "amd64");

    // The store now holds the name for amd64: the arm64 build pulls its own.
    let (_, out) = build(&other, &ctx, "linux/arm64", "on:arm");
    assert_eq!(std::fs::read_to_string(out.join("which")).unwrap(), "arm\n");
    assert_eq!(
        std::fs::read_to_string(out.join("f")).unwrap(),
        "from the context\n"
    );
    let img = inspect(&other, "on:arm");
    assert_eq!(img["Config"]["architecture"], "arm64");
    assert!(img["Config"]["config"]["Env"]
        .as_array()
        .unwrap()
        .contains(&"WHICH=arm".into()));

    // RUN in the arm64 stage: the kernel cannot execute its /bin/sh.
    let emulated = Path::new("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists();
    if !emulated {
        let run_ctx = context(
            tmp.path(),
            &format!("FROM {both}\nCOPY f /f\nRUN echo hi\n"),
            &[("f", "x")],
        );
        let err = fails(
            mybuild(&other)
                .args(["build", "--platform", "linux/arm64"])
                .arg(&run_ctx),
        );
        assert!(err.contains("Dockerfile:3: RUN echo hi"), "{err}");
        assert!(err.contains("exec format error"), "{err}");
        assert!(
            err.contains("platform linux/arm64 cannot run on this linux/amd64 host")
                && err.contains("binfmt_misc"),
            "{err}"
        );
    } else {
        eprintln!("skipping the exec format assertion: qemu-aarch64 is registered");
    }

    // Without the registry, a stored image of the other platform is not used.
    drop(reg);
    let err = fails(
        mybuild(&other)
            .args(["build", "--platform", "linux/amd64"])
            .arg(&ctx),
    );
    assert!(
        err.contains("in the store is linux/arm64, but this stage is built for linux/amd64"),
        "{err}"
    );
}

#[test]
fn a_platform_must_be_os_arch() {
    // Several platforms at once are tests/multiplatform.rs's.
    let tmp = tempfile::TempDir::new().unwrap();
    let ctx = context(tmp.path(), "FROM scratch\n", &[]);
    let root = tmp.path().join("store");
    let err = fails(
        mybuild(&root)
            .args(["build", "--platform", "linux/amd64,amd64"])
            .arg(&ctx),
    );
    assert!(err.contains("expected os/arch[/variant]"), "{err}");
}
