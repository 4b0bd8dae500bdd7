//! Filesystems, sandbox and ownership when mybuild runs as root of a user namespace
//! other than the initial one, as a rootless build does: an ordinary user (`mbtest`,
//! with subordinate ranges, or `mbsolo`, without) runs the binary through
//! `runuser` and util-linux's `unshare --map-root-user`. Same image bytes as root
//! with kernel overlay and with fuse-overlayfs, the same confinement, and the
//! documented error where only one id is mapped.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use testdata::probe;

const RANGED_USER: &str = "mbtest";
const SOLO_USER: &str = "mbsolo";

/// Skips (or fails under MYBUILD_TEST_REQUIRE_ALL) with `why`.
fn missing(why: &str) -> bool {
    if std::env::var_os("MYBUILD_TEST_REQUIRE_ALL").is_some_and(|v| !v.is_empty() && v != "0") {
        panic!("MYBUILD_TEST_REQUIRE_ALL is set but {why}");
    }
    eprintln!("skipping: {why}");
    false
}

/// The user's uid, when the account exists.
fn uid_of(user: &str) -> Option<u32> {
    let out = Command::new("id").args(["-u", user]).output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// The first subordinate range (`start`, `count`) of `user` in `file`.
fn sub_range(file: &str, user: &str) -> Option<(u64, u64)> {
    std::fs::read_to_string(file).ok()?.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == user).then_some(())?;
        Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
    })
}

/// Runs mybuild as `user`, root of a user namespace of its own.
struct Rootless {
    user: &'static str,
    /// `--map-users=...` / `--map-groups=...` when the user has ranges.
    maps: Vec<String>,
    bin: PathBuf,
    /// Owned by `user`: its stores and home.
    dir: PathBuf,
}

impl Rootless {
    /// `None` (after saying why) when root, the tools or the user are missing.
    fn new(tmp: &Path, user: &'static str, ranged: bool) -> Option<Rootless> {
        if !testdata::require_root()
            || !testdata::require_tool("runuser")
            || !testdata::require_tool("unshare")
        {
            return None;
        }
        let Some(uid) = uid_of(user) else {
            missing(&format!("user {user} does not exist (.ci/run creates it)"));
            return None;
        };
        let mut maps = Vec::new();
        if ranged {
            if !testdata::require_tool("newuidmap") {
                return None;
            }
            let (Some((us, uc)), Some((gs, gc))) = (
                sub_range("/etc/subuid", user),
                sub_range("/etc/subgid", user),
            ) else {
                missing(&format!(
                    "{user} has no range in /etc/subuid and /etc/subgid"
                ));
                return None;
            };
            maps.push(format!("--map-users={us},1,{uc}"));
            maps.push(format!("--map-groups={gs},1,{gc}"));
        }
        // The test's temporary directory must be reachable by the user.
        std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let dir = tmp.join(format!("as-{user}"));
        std::fs::create_dir_all(&dir).expect("dir");
        std::os::unix::fs::chown(&dir, Some(uid), Some(uid)).expect("chown");
        let built = assert_cmd::cargo::cargo_bin("mybuild");
        let reachable = Command::new("runuser")
            .args(["-u", user, "--", "test", "-x"])
            .arg(&built)
            .status()
            .is_ok_and(|s| s.success());
        let bin = if reachable {
            built
        } else {
            let copy = tmp.join("bin/mybuild");
            std::fs::create_dir_all(copy.parent().expect("parent")).expect("bin dir");
            std::fs::set_permissions(
                copy.parent().expect("parent"),
                std::fs::Permissions::from_mode(0o755),
            )
            .expect("chmod");
            std::fs::copy(&built, &copy).expect("copy binary");
            copy
        };
        Some(Rootless {
            user,
            maps,
            bin,
            dir,
        })
    }

    /// `mybuild --root STORE ARGS...` as the user, with `env` set.
    fn mybuild(&self, store: &str, env: &[(&str, &str)]) -> Command {
        let mut c = Command::new("runuser");
        c.args(["-u", self.user, "--", "env"])
            .arg(format!("HOME={}", self.dir.join("home").display()))
            .arg(format!(
                "DOCKER_CONFIG={}",
                self.dir.join("docker").display()
            ));
        for (k, v) in env {
            c.arg(format!("{k}={v}"));
        }
        // By its path: `env` may be given another PATH for mybuild.
        c.arg(testdata::which("unshare").expect("unshare"))
            .arg("--map-root-user")
            .args(&self.maps)
            .arg(&self.bin)
            .arg("--root")
            .arg(self.dir.join(store));
        c
    }
}

/// A root store holding busybox, and the same image saved to a tar anyone reads.
fn root_store_and_base(tmp: &Path) -> (PathBuf, PathBuf) {
    let root = store_with_busybox(tmp);
    let base = tmp.join("base.tar");
    ok(mybuild(&root).args(["save", "busybox", "-o"]).arg(&base));
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    (root, base)
}

/// Makes everything below `dir` readable by the rootless user.
fn share(dir: &Path) {
    ok(Command::new("chmod").arg("-R").arg("a+rX").arg(dir));
}

/// A multi-stage build with every kind of change a layer can hold: RUN's chown,
/// COPY --chown, a cache mount, a secret, a tmpfs, a bind from a stage, deletions
/// (whiteouts), directories removed and made again (opaque, and read through by a
/// later COPY --from), a hard link.
const SAME_BYTES: &str = r#"FROM busybox AS build
RUN --mount=type=cache,target=/cache echo data > /cache/c && cp /cache/c /built
RUN --mount=type=secret,id=tok test "$(cat /run/secrets/tok)" = s3cret && mkdir -p /app/sub && echo x > /app/sub/f && chown -R 1000:1000 /app
RUN --mount=type=tmpfs,target=/scratch echo t > /scratch/t && cat /scratch/t
RUN mkdir -p /data/old && echo o > /data/old/f
RUN rm -rf /data && mkdir /data && echo only > /data/only
FROM busybox
COPY --from=build /data /data
RUN --mount=type=bind,from=build,source=/app,target=/mnt,rw touch /mnt/sub/scratch && test "$(ls /data)" = only
COPY --chown=1000:1000 f.txt /home/app/f.txt
COPY --from=build --chown=1000:1000 /app /app2
COPY --from=build /app /app
COPY --from=build /built /built
RUN --mount=type=bind,from=build,source=/app,target=/mnt cat /mnt/sub/f && rm /etc/group && mkdir -p /var/x && chown 1000:1000 /var/x && ln /built /built.hard
RUN rm -rf /var && mkdir -p /var/y && touch /var/y/z && chown 65534:65534 /var/y
RUN rm -rf /home/app && mkdir /home/app && echo new > /home/app/g
"#;

#[test]
fn rootless_builds_give_the_root_image_digest_with_kernel_overlay_and_fuse_overlayfs() {
    if !testdata::require_root()
        || !testdata::require_tool("busybox")
        || !testdata::require_tool("fuse-overlayfs")
    {
        return;
    }
    let tmp = tempfile::TempDir::new().expect("tmp");
    let Some(user) = Rootless::new(tmp.path(), RANGED_USER, true) else {
        return;
    };
    let fuse_usable = Command::new("runuser")
        .args([
            "-u",
            user.user,
            "--",
            "test",
            "-r",
            "/dev/fuse",
            "-a",
            "-w",
            "/dev/fuse",
        ])
        .status()
        .is_ok_and(|s| s.success());
    if !fuse_usable {
        missing(&format!(
            "{} cannot open /dev/fuse (Debian makes it 0666; chmod 0666 /dev/fuse)",
            user.user
        ));
        return;
    }
    let (root, base) = root_store_and_base(tmp.path());
    let ctx = context(tmp.path(), SAME_BYTES, &[("f.txt", "hello\n")]);
    let secret = tmp.path().join("secret.txt");
    std::fs::write(&secret, "s3cret").expect("secret");
    share(&ctx);
    share(&secret);
    let secret_arg = format!("id=tok,src={}", secret.display());
    let args = |iid: &Path| -> Vec<String> {
        [
            "--debug",
            "build",
            "--network=none",
            "--progress=plain",
            "--secret",
            &secret_arg,
            "--iidfile",
            &iid.display().to_string(),
            &ctx.display().to_string(),
        ]
        .map(str::to_string)
        .to_vec()
    };
    let root_iid = tmp.path().join("root.iid");
    ok(mybuild(&root)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(args(&root_iid)));
    let root_digest = std::fs::read_to_string(&root_iid).expect("iid");
    for (store, force, said) in [
        ("kernel", "0", "overlay: kernel (userxattr)"),
        ("fuse", "1", "overlay: fuse-overlayfs"),
    ] {
        ok(user.mybuild(store, &[]).args(["load", "-i"]).arg(&base));
        let iid = user.dir.join(format!("{store}.iid"));
        let env = [
            ("SOURCE_DATE_EPOCH", "1700000000"),
            ("MYBUILD_FORCE_FUSE_OVERLAYFS", force),
        ];
        let (_, err) = ok(user.mybuild(store, &env).args(args(&iid)));
        assert_eq!(
            err.matches(said).count(),
            1,
            "{store}: once, {said:?}:\n{err}"
        );
        let digest = std::fs::read_to_string(&iid).expect("iid");
        assert_eq!(digest, root_digest, "{store} rootless vs root:\n{err}");
    }
}

#[test]
fn the_probe_sees_the_same_confinement_rootless_as_root() {
    if !testdata::require_root()
        || !testdata::require_tool("busybox")
        || !testdata::require_tool("cc")
    {
        return;
    }
    let tmp = tempfile::TempDir::new().expect("tmp");
    let Some(user) = Rootless::new(tmp.path(), RANGED_USER, true) else {
        return;
    };
    let (root, base) = root_store_and_base(tmp.path());
    let ctx = tmp.path().join("probe-ctx");
    std::fs::create_dir_all(&ctx).expect("ctx");
    probe::build(&ctx).expect("cc -static builds the probe");
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nCOPY probe /probe\nRUN /probe\nUSER 1000\nRUN /probe\n",
    )
    .expect("Dockerfile");
    share(&ctx);
    let build = |cmd: &mut Command| {
        let (_, err) = ok(cmd
            .args(["build", "--network=none", "--progress=plain", "--no-cache"])
            .arg(&ctx));
        probe::values(&err)
    };
    let as_root = build(&mut mybuild(&root));
    ok(user.mybuild("store", &[]).args(["load", "-i"]).arg(&base));
    let rootless = build(&mut user.mybuild("store", &[]));
    assert_eq!(as_root.len(), rootless.len(), "{as_root:?}\n{rootless:?}");
    assert!(as_root.iter().any(|(k, _)| k == "CapBnd"), "{as_root:?}");
    for ((k, a), (k2, b)) in as_root.iter().zip(&rootless) {
        assert_eq!(k, k2);
        if k == "write_core_pattern" {
            // The file belongs to the host's root, unmapped here: refused by its
            // permissions before the read-only mount is reached.
            assert!(["EROFS", "EACCES"].contains(&b.as_str()), "{k}={b}");
            continue;
        }
        assert_eq!(a, b, "{k}: root vs rootless");
    }
}

#[test]
fn rootless_host_network_sees_the_hosts_sys_read_only_and_the_default_network_works() {
    if !testdata::require_root()
        || !testdata::require_tool("busybox")
        || !testdata::require_tool("slirp4netns")
    {
        return;
    }
    let tmp = tempfile::TempDir::new().expect("tmp");
    let Some(user) = Rootless::new(tmp.path(), RANGED_USER, true) else {
        return;
    };
    let (_, base) = root_store_and_base(tmp.path());
    ok(user.mybuild("store", &[]).args(["load", "-i"]).arg(&base));
    let ctx = context(
        tmp.path(),
        "FROM busybox\nARG NET\nRUN echo net=$NET; ls /sys/class/net | grep -c . ; touch /sys/x 2>&1; ip addr | grep -q tap0 && echo has-$(echo tap0); true\n",
        &[],
    );
    share(&ctx);
    for net in ["host", "default"] {
        let (_, err) = ok(user.mybuild("store", &[]).args([
            "build",
            "--no-cache",
            "--progress=plain",
            &format!("--network={net}"),
            "--build-arg",
            &format!("NET={net}"),
            &ctx.display().to_string(),
        ]));
        assert!(err.contains(&format!("net={net}")), "{err}");
        assert!(err.contains("Read-only file system"), "{net}: {err}");
        assert_eq!(err.contains("has-tap0"), net == "default", "{net}: {err}");
    }
}

#[test]
fn with_one_id_mapped_chown_to_another_fails_with_the_documented_error() {
    if !testdata::require_root() || !testdata::require_tool("busybox") {
        return;
    }
    let tmp = tempfile::TempDir::new().expect("tmp");
    let Some(user) = Rootless::new(tmp.path(), SOLO_USER, false) else {
        return;
    };
    let (root, base) = root_store_and_base(tmp.path());
    // A base whose layer holds a file of uid 1000.
    let owned = context(
        tmp.path(),
        "FROM busybox\nCOPY --chown=1000:1000 f /f\n",
        &[("f", "a\n")],
    );
    ok(mybuild(&root)
        .args(["build", "-q", "-t", "owned"])
        .arg(&owned));
    let owned_tar = tmp.path().join("owned.tar");
    ok(mybuild(&root).args(["save", "owned", "-o"]).arg(&owned_tar));
    share(&owned_tar);
    ok(user.mybuild("store", &[]).args(["load", "-i"]).arg(&base));
    ok(user
        .mybuild("store", &[])
        .args(["load", "-i"])
        .arg(&owned_tar));
    let fix = "only one id is mapped in this user namespace; add subordinate ids for your \
               user (usermod --add-subuids 100000-165535 --add-subgids 100000-165535 $USER) \
               and retry";
    for (dockerfile, what) in [
        (
            "FROM busybox\nCOPY --chown=1000:1000 f /f\n",
            "cannot give /f owner 1000:1000: ",
        ),
        (
            "FROM busybox\nRUN --mount=type=cache,target=/c,uid=1000,gid=1000 true\n",
            "cannot give /c owner 1000:1000: ",
        ),
        ("FROM owned\nRUN true\n", "cannot give /f owner 1000:1000: "),
    ] {
        let ctx = context(tmp.path(), dockerfile, &[("f", "a\n")]);
        share(&ctx);
        let err = fails(
            user.mybuild("store", &[])
                .args(["build", "--network=none"])
                .arg(&ctx),
        );
        assert!(err.contains(&format!("{what}{fix}")), "{dockerfile}: {err}");
    }
    // A build that gives nobody another owner works, RUN included.
    let plain = context(
        tmp.path(),
        "FROM busybox\nRUN echo plain > /p\nCOPY f /f\n",
        &[("f", "a\n")],
    );
    share(&plain);
    ok(user
        .mybuild("store", &[])
        .args(["build", "--network=none", "-t", "plain"])
        .arg(&plain));
}

#[test]
fn forced_fuse_overlayfs_that_is_not_installed_names_the_package() {
    if !testdata::require_root() || !testdata::require_tool("busybox") {
        return;
    }
    let tmp = tempfile::TempDir::new().expect("tmp");
    // The user without ranges: util-linux then needs no newuidmap from PATH.
    let Some(user) = Rootless::new(tmp.path(), SOLO_USER, false) else {
        return;
    };
    let (_, base) = root_store_and_base(tmp.path());
    ok(user.mybuild("store", &[]).args(["load", "-i"]).arg(&base));
    let ctx = context(tmp.path(), "FROM busybox\nRUN true\n", &[]);
    share(&ctx);
    let env = [
        ("MYBUILD_FORCE_FUSE_OVERLAYFS", "1"),
        ("PATH", "/nonexistent"),
    ];
    let err = fails(
        user.mybuild("store", &env)
            .args(["build", "--network=none"])
            .arg(&ctx),
    );
    assert!(
        err.contains("fuse-overlayfs is not installed (apt-get install fuse-overlayfs)"),
        "{err}"
    );
}
