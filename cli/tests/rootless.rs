//! Rootless: `mybuild` run as an ordinary user (`mbtest`, with subordinate ranges;
//! `mbsolo`, without) enters a user namespace and builds, pulls and pushes there.
//! The tests run as root and run the binary as those users (`testdata::rootless`).

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use assert_cmd::cargo::cargo_bin;
use common::*;
use testdata::registry::{Registry, RegistryOptions};
use testdata::rootless::AsUser;

const EPOCH: &str = "1700000000";

/// `mbtest` (with ranges) and a root store holding busybox; `None` to skip.
fn setup_user(name: &str, ranges: bool) -> Option<(AsUser, PathBuf)> {
    if !testdata::require_tool("busybox") || !testdata::require_tool("umoci") {
        return None;
    }
    let user = AsUser::new(name, &cargo_bin("mybuild"), ranges)?;
    let root = store_with_busybox(user.dir.path());
    // The user gets the very same base image: saved by root, loaded by the user.
    let archive = user.dir.path().join("busybox.tar");
    ok(mybuild(&root)
        .args(["save", "-o"])
        .arg(&archive)
        .arg("busybox"));
    set_mode(&archive, 0o644);
    ok(user.mybuild().args(["load", "-i"]).arg(&archive));
    Some((user, root))
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The user's default store.
fn user_store(user: &AsUser) -> PathBuf {
    user.data_home().join("mybuild")
}

/// The manifest digest `inspect` gives.
fn image_id(inspected: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(inspected).expect("json");
    v["Id"].as_str().expect("Id").to_string()
}

/// Every layer entry of a stored image: (path, uid, gid), read from the blobs.
fn layer_entries(store: &Path, tag: &str) -> Vec<(String, u64, u64)> {
    let blob = |d: &str| std::fs::read(store.join("blobs/sha256").join(&d[7..])).expect("blob");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.join("index.json")).expect("index"))
            .expect("json");
    let desc = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("{tag} not in {index}"));
    let manifest: serde_json::Value =
        serde_json::from_slice(&blob(desc["digest"].as_str().expect("digest"))).expect("json");
    let mut out = Vec::new();
    for layer in manifest["layers"].as_array().expect("layers") {
        let bytes = blob(layer["digest"].as_str().expect("digest"));
        let plain = layer_cache::layer::decompress(&bytes[..]).expect("layer codec");
        let mut tar = tar::Archive::new(plain);
        for e in tar.entries().expect("entries") {
            let e = e.expect("entry");
            let h = e.header();
            out.push((
                e.path().expect("path").to_string_lossy().into_owned(),
                h.uid().expect("uid"),
                h.gid().expect("gid"),
            ));
        }
    }
    out
}

#[test]
fn a_rootless_build_gives_the_same_digest_as_root() {
    let Some((user, root)) = setup_user("mbtest", true) else {
        return;
    };
    let dir = user.dir.path();
    let secret = dir.join("token.txt");
    std::fs::write(&secret, "s3cret-value\n").expect("secret");
    set_mode(&secret, 0o644);
    let df = "FROM busybox AS build\n\
              RUN --mount=type=cache,target=/cache echo one >> /cache/log && cp /cache/log /built\n\
              RUN --mount=type=secret,id=tok sha256sum /run/secrets/tok > /tokhash\n\
              RUN mkdir -p /app/sub && echo data > /app/sub/data && chown -R 1000:1000 /app \
                  && touch /app/other && chown 2000:3000 /app/other\n\
              FROM busybox\n\
              COPY --from=build /built /tokhash /out/\n\
              COPY --from=build /app /app\n\
              COPY --chown=1000:1000 hello.txt /home/app/hello.txt\n\
              RUN rm -f /bin/seq && chown 2000:3000 /out/tokhash\n";
    let ctx = context(dir, df, &[("hello.txt", "hello\n")]);
    let args = |c: &mut Command| {
        c.env("SOURCE_DATE_EPOCH", EPOCH)
            .args(["build", "-q", "-t", "app:1", "--secret"])
            .arg(format!("id=tok,src={}", secret.display()))
            .arg(&ctx);
    };
    let mut as_root = mybuild(&root);
    args(&mut as_root);
    let (root_id, _) = ok(&mut as_root);
    let mut rootless = user.mybuild();
    args(&mut rootless);
    let (user_id, err) = ok(&mut rootless);
    assert!(!err.contains("warning"), "{err}");
    assert_eq!(user_id.trim(), root_id.trim(), "image ids differ");
    let root_manifest = image_id(&ok(mybuild(&root).args(["inspect", "app:1"])).0);
    let user_manifest = image_id(&ok(user.mybuild().args(["inspect", "app:1"])).0);
    assert_eq!(user_manifest, root_manifest);
    // The owners stay image-side through the mapping.
    let entries = layer_entries(&user_store(&user), "app:1");
    for (path, uid, gid) in [
        ("home/app/hello.txt", 1000, 1000),
        ("out/tokhash", 2000, 3000),
    ] {
        assert!(
            entries
                .iter()
                .any(|(p, u, g)| p == path && (*u, *g) == (uid, gid)),
            "{path} not {uid}:{gid} in {entries:?}"
        );
    }
    // The whiteout of a base file is in the rootless layer too.
    assert!(
        entries.iter().any(|(p, _, _)| p == "bin/.wh.seq"),
        "{entries:?}"
    );
}

#[test]
fn rootless_pull_push_with_htpasswd_auth_and_a_registry_cache_round_trip() {
    let Some((user, _root)) = setup_user("mbtest", true) else {
        return;
    };
    if !testdata::require_tool("docker-registry") || !testdata::require_tool("htpasswd") {
        return;
    }
    let password = "pw-Rootless-7";
    let reg = Registry::start_with(&RegistryOptions {
        basic_auth: Some(("alice".into(), password.into())),
        ..Default::default()
    });
    let dest = format!("{}/private/bb:1", reg.addr);
    let err = fails(user.mybuild().args(["push", "busybox", &dest]));
    assert!(err.contains("authentication required"), "{err}");
    let (success, out, err) = with_stdin(
        user.mybuild()
            .args(["login", "-u", "alice", "--password-stdin", &reg.addr]),
        format!("{password}\n"),
    );
    assert!(success && out.contains("Login Succeeded"), "{out}{err}");
    // The user's own Docker config holds the credentials.
    let config = std::fs::read_to_string(user.home.join(".docker/config.json")).expect("config");
    assert!(config.contains(&reg.addr), "{config}");

    let (digest, err) = ok(user.mybuild().args(["push", "busybox", &dest]));
    assert!(err.contains("pushed"), "{err}");
    let other = user.home.join("other-store");
    ok(user
        .mybuild()
        .arg("--root")
        .arg(&other)
        .args(["load", "-i"])
        .arg(user.dir.path().join("busybox.tar")));
    let (name, _) = ok(user
        .mybuild()
        .arg("--root")
        .arg(&other)
        .args(["pull", &dest]));
    assert_eq!(name.trim(), dest);
    assert_eq!(
        ok(user.mybuild().args(["digest", &dest])).0.trim(),
        digest.trim()
    );
    let inspected = |store: Option<&Path>, name: &str| -> serde_json::Value {
        let mut c = user.mybuild();
        if let Some(s) = store {
            c.arg("--root").arg(s);
        }
        serde_json::from_str(&ok(c.args(["inspect", name])).0).expect("json")
    };
    let (a, b) = (inspected(None, "busybox"), inspected(Some(&other), &dest));
    assert_eq!(a["Manifest"], b["Manifest"]);
    assert_eq!(a["Config"], b["Config"]);
    ok(user.mybuild().arg("--root").arg(&other).arg("fsck"));

    // --cache-to from the default store, --cache-from into the other one.
    let cache_ref = format!("{}/private/cache:1", reg.addr);
    let ctx = context(
        user.dir.path(),
        "FROM busybox\nRUN cat /proc/sys/kernel/random/uuid > /stamp && chown 1000 /stamp\n",
        &[],
    );
    let build = |store: Option<&Path>, extra: &[&str]| {
        let mut c = user.mybuild();
        if let Some(s) = store {
            c.arg("--root").arg(s);
        }
        c.env("SOURCE_DATE_EPOCH", EPOCH)
            .args(["build", "--progress=plain", "-t", "c:1"])
            .args(extra)
            .arg(&ctx);
        ok(&mut c)
    };
    let to = format!("type=registry,ref={cache_ref},mode=max");
    let (_, err) = build(None, &["--cache-to", &to]);
    assert!(
        err.contains(&format!("exporting cache to {cache_ref}: done")),
        "{err}"
    );
    let (_, err) = build(Some(&other), &["--cache-from", &cache_ref]);
    assert_eq!(
        err.lines().filter(|l| l.ends_with(" CACHED")).count(),
        1,
        "{err}"
    );
    // The same image: the same config (the cache carried the layer compressed,
    // where the first store keeps it uncompressed, so the manifests differ).
    let config = |inspected: &str| {
        let v: serde_json::Value = serde_json::from_str(inspected).expect("json");
        v["Manifest"]["config"]["digest"].to_string()
    };
    let a = config(&ok(user.mybuild().args(["inspect", "c:1"])).0);
    let b = config(
        &ok(user
            .mybuild()
            .arg("--root")
            .arg(&other)
            .args(["inspect", "c:1"]))
        .0,
    );
    assert_eq!(a, b);
}

/// Docker's 14 default capabilities as /proc shows them.
const DOCKER_CAPS: &str = "00000000a80425fb";

#[test]
fn the_confinement_probe_passes_rootless() {
    if !testdata::require_tool("cc") || !testdata::require_tool("slirp4netns") {
        return;
    }
    let Some((user, root)) = setup_user("mbtest", true) else {
        return;
    };
    let ctx = user.dir.path().join("probe-ctx");
    std::fs::create_dir_all(&ctx).expect("ctx");
    testdata::probe::build(&ctx).expect("cc -static builds the probe");
    set_mode(&ctx.join("probe"), 0o755);
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nCOPY probe /probe\nRUN /probe\n",
    )
    .expect("Dockerfile");
    let probe_values = |c: &mut Command| {
        c.args(["build", "--progress=plain", "--no-cache", "-t", "probe:1"])
            .arg(&ctx);
        let (_, err) = ok(c);
        testdata::probe::values(&err)
    };
    let as_root = probe_values(&mut mybuild(&root));
    let rootless = probe_values(&mut user.mybuild());
    for (key, want) in [
        ("CapBnd", DOCKER_CAPS),
        ("CapEff", DOCKER_CAPS),
        ("CapPrm", DOCKER_CAPS),
        ("CapInh", "0000000000000000"),
        ("CapAmb", "0000000000000000"),
        ("Seccomp", "2"),
        ("NoNewPrivs", "0"),
        ("mount", "EPERM"),
        ("unshare_user", "EPERM"),
        ("unshare_net", "EPERM"),
        ("keyctl", "EPERM"),
        ("bpf", "EPERM"),
        ("write_sys", "EROFS"),
        ("proc_keys_bytes", "0"),
        ("fds", "0,1,2"),
    ] {
        let got = rootless
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str());
        assert_eq!(got, Some(want), "{key} rootless: {rootless:?}");
    }
    // Everything the probe reports is as it is for root, except that writing
    // /proc/sys is refused for want of permission before the read-only mount is
    // met: the files belong to the host's root, which the namespace does not map.
    assert_eq!(
        rootless.iter().map(|(k, _)| k).collect::<Vec<_>>(),
        as_root.iter().map(|(k, _)| k).collect::<Vec<_>>()
    );
    for ((key, got), (_, want)) in rootless.iter().zip(&as_root) {
        if key == "write_core_pattern" {
            assert!(["EROFS", "EACCES"].contains(&got.as_str()), "{key}={got}");
        } else {
            assert_eq!(
                got, want,
                "{key} rootless vs root:\n{rootless:?}\n{as_root:?}"
            );
        }
    }
}

#[test]
fn a_user_without_ranges_builds_with_one_warning_and_a_chown_fails() {
    let Some((user, _root)) = setup_user("mbsolo", false) else {
        return;
    };
    let ctx = context(
        user.dir.path(),
        "FROM busybox\nRUN echo hi > /x && ls -ln /x\n",
        &[],
    );
    let (_, err) = ok(user
        .mybuild()
        .args(["build", "--progress=plain", "-t", "plain:1"])
        .arg(&ctx));
    let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("warning:")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(
        warnings[0].contains("mbsolo has no subordinate ids")
            && warnings[0]
                .contains("usermod --add-subuids 100000-165535 --add-subgids 100000-165535 mbsolo"),
        "{err}"
    );
    // Inside, only 0 exists: the user's own files show as root's.
    assert!(err.contains(" 0        0 "), "{err}");

    let ctx = context(
        user.dir.path(),
        "FROM busybox\nRUN touch /x && chown 1000 /x\n",
        &[],
    );
    let out = user
        .mybuild()
        .args(["build", "--progress=plain", "-t", "chown:1"])
        .arg(&ctx)
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("chown: /x: Invalid argument") && err.contains("usermod --add-subuids"),
        "{err}"
    );
}

#[test]
fn a_copy_chown_without_ranges_fails_naming_the_fix() {
    let Some((user, _root)) = setup_user("mbsolo", false) else {
        return;
    };
    let ctx = context(
        user.dir.path(),
        "FROM busybox\nCOPY --chown=1000:1000 a.txt /a.txt\n",
        &[("a.txt", "a\n")],
    );
    let err = fails(user.mybuild().args(["build", "-t", "cc:1"]).arg(&ctx));
    let error = err
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_default();
    assert!(
        error.contains("Dockerfile:2")
            && error.contains("cannot give /a.txt owner 1000:1000: only one id is mapped")
            && error.contains("usermod --add-subuids"),
        "{err}"
    );
    assert!(!lists_user_repo(&user, "cc"), "{err}");
}

fn lists_user_repo(user: &AsUser, name: &str) -> bool {
    ok(user.mybuild().arg("images")).0.lines().any(|l| {
        l.split_whitespace()
            .next()
            .is_some_and(|r| r.rsplit('/').next() == Some(name))
    })
}

#[test]
fn forcing_fuse_overlayfs_builds_and_debug_says_so() {
    if !testdata::require_tool("fuse-overlayfs") {
        return;
    }
    let Some((user, _root)) = setup_user("mbtest", true) else {
        return;
    };
    let ctx = context(
        user.dir.path(),
        "FROM busybox\nRUN echo fuse > /f && rm /bin/seq && chown 1000 /f\n",
        &[],
    );
    let (_, err) = ok(user
        .mybuild()
        .env("MYBUILD_FORCE_FUSE_OVERLAYFS", "1")
        .args(["--debug", "build", "--progress=plain", "-t", "fuse:1"])
        .arg(&ctx));
    assert!(err.contains("fuse-overlayfs"), "{err}");
    let entries = layer_entries(&user_store(&user), "fuse:1");
    assert!(
        entries.iter().any(|(p, u, _)| p == "f" && *u == 1000),
        "{entries:?}"
    );
    assert!(
        entries.iter().any(|(p, _, _)| p == "bin/.wh.seq"),
        "{entries:?}"
    );
}

#[test]
fn a_rootless_build_without_root_uses_xdg_data_home_and_never_the_root_store() {
    let Some((user, _root)) = setup_user("mbtest", true) else {
        return;
    };
    let system = Path::new("/var/lib/mybuild");
    let listing = |p: &Path| -> Option<Vec<(String, std::time::SystemTime)>> {
        let rd = std::fs::read_dir(p).ok()?;
        let mut v: Vec<_> = rd
            .flatten()
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    e.metadata().and_then(|m| m.modified()).expect("mtime"),
                )
            })
            .collect();
        v.sort();
        Some(v)
    };
    let before = (
        listing(system),
        std::fs::metadata(system).and_then(|m| m.modified()).ok(),
    );
    let ctx = context(user.dir.path(), "FROM busybox\nRUN echo x > /x\n", &[]);
    ok(user.mybuild().args(["-t", "xdg:1"]).arg(&ctx));
    let index = std::fs::read_to_string(user_store(&user).join("index.json")).expect("index");
    assert!(index.contains("xdg:1"), "{index}");
    let after = (
        listing(system),
        std::fs::metadata(system).and_then(|m| m.modified()).ok(),
    );
    assert_eq!(before, after, "/var/lib/mybuild changed");
    // Without XDG_DATA_HOME: ~/.local/share/mybuild, the same place here.
    let (images, _) = ok(user.mybuild().env_remove("XDG_DATA_HOME").arg("images"));
    assert!(images.contains("xdg"), "{images}");
}

#[test]
fn mybuild_unshare_runs_in_the_namespace_and_can_remove_the_store() {
    let Some((user, _root)) = setup_user("mbtest", true) else {
        return;
    };
    let (out, _) = ok(user.mybuild().args([
        "unshare",
        "sh",
        "-c",
        "id -u; echo \"$MYBUILD_ROOT\"; cat /proc/self/uid_map",
    ]));
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("0"), "{out}");
    assert_eq!(
        lines.next().map(PathBuf::from),
        Some(user_store(&user)),
        "{out}"
    );
    let map: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(map[0], ["0", &user.user.uid.to_string(), "1"], "{out}");
    assert!(map.iter().any(|l| l[1] == "200000"), "{out}");

    // A build leaves files of subordinate ids that the user cannot remove
    // directly; inside the namespace it can.
    let ctx = context(
        user.dir.path(),
        "FROM busybox\nRUN mkdir /d && touch /d/f && chown -R 1000 /d && chmod 700 /d\n",
        &[],
    );
    ok(user.mybuild().args(["-t", "owned:1"]).arg(&ctx));
    let store = user_store(&user);
    let (success, _, _) = run(user.command("rm").arg("-rf").arg(&store));
    assert!(!success, "the user removed files of other ids");
    ok(user
        .mybuild()
        .args(["unshare", "sh", "-c", "rm -rf \"$MYBUILD_ROOT\""]));
    assert!(!store.exists());
}

#[test]
fn without_newuidmap_only_the_users_ids_are_mapped_and_the_warning_names_uidmap() {
    let Some(user) = AsUser::new("mbtest", &cargo_bin("mybuild"), true) else {
        return;
    };
    let (out, err) = ok(user
        .command("/usr/bin/env")
        .arg("PATH=/nonexistent")
        .arg(&user.bin)
        .args(["unshare", "/bin/cat", "/proc/self/uid_map"]));
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(err.contains("apt-get install uidmap"), "{err}");
}

#[test]
fn the_parent_forwards_sigterm_and_ends_as_the_child_ended() {
    let Some(user) = AsUser::new("mbtest", &cargo_bin("mybuild"), true) else {
        return;
    };
    let mut child = user
        .mybuild()
        .args(["unshare", "sh", "-c", "echo ready; exec sleep 30"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut line = [0u8; 6];
    child
        .stdout
        .take()
        .expect("stdout")
        .read_exact(&mut line)
        .expect("ready");
    // setpriv execs mybuild: the pid is the parent's.
    let started = std::time::Instant::now();
    // SAFETY: kill on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = child.wait().expect("wait");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn host_network_is_the_users_own_network() {
    let Some((user, _root)) = setup_user("mbtest", true) else {
        return;
    };
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = write!(s, "HTTP/1.0 200 OK\r\nContent-Length: 8\r\n\r\nvia-host");
        }
    });
    let ctx = context(
        user.dir.path(),
        &format!("FROM busybox\nRUN wget -q -O /got http://127.0.0.1:{port}/ && cat /got\n"),
        &[],
    );
    let (_, err) = ok(user
        .mybuild()
        .args([
            "build",
            "--progress=plain",
            "--network=host",
            "--allow",
            "network.host",
            "-t",
            "h:1",
        ])
        .arg(&ctx));
    assert!(err.contains("via-host"), "{err}");
}

#[test]
fn rmi_and_prune_remove_what_a_rootless_build_left() {
    let Some((user, _root)) = setup_user("mbtest", true) else {
        return;
    };
    let ctx = context(
        user.dir.path(),
        "FROM busybox\nRUN mkdir /d && touch /d/f && chown -R 1000:1000 /d && chmod 700 /d\n",
        &[],
    );
    let snapshots = user_store(&user).join("snapshots-v1");
    let count = || {
        std::fs::read_dir(&snapshots)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name() != "tmp")
            .count()
    };
    // The base's snapshot is made by the first build, and stays (busybox is tagged).
    ok(user.mybuild().args(["-t", "base:1"]).arg(context(
        user.dir.path(),
        "FROM busybox
RUN true
",
        &[],
    )));
    let before = count();
    ok(user.mybuild().args(["-t", "gone:1"]).arg(&ctx));
    assert_eq!(count(), before + 1);
    ok(user.mybuild().args(["rmi", "gone:1"]));
    ok(user.mybuild().args(["prune", "--cache"]));
    assert_eq!(count(), before, "prune left the step's snapshot");
    assert!(!lists_user_repo(&user, "gone"));
}

/// `unshare --user --map-root-user`, `depth` times nested, then one `unshare --user`
/// whose process stays unmapped (nobody): there `bin images` runs.
fn in_nested_user_namespaces(depth: usize, bin: &Path) -> (Option<i32>, String) {
    let mut c = Command::new("unshare");
    for _ in 1..depth {
        c.args(["--user", "--map-root-user", "unshare"]);
    }
    let out = c
        .args(["--user", "env", "HOME=/nonexistent"])
        .arg(bin)
        .arg("images")
        .output()
        .expect("unshare");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_refused_user_namespace_names_the_cause_and_the_fix() {
    let Some(user) = AsUser::new("mbtest", &cargo_bin("mybuild"), true) else {
        return;
    };
    if !testdata::require_tool("unshare") {
        return;
    }
    // The kernel refuses a user namespace whose parent is already 33 levels deep.
    let (code, err) = in_nested_user_namespaces(33, &user.bin);
    assert_eq!(code, Some(1), "{err}");
    for part in [
        "cannot create a user namespace (unshare(CLONE_NEWUSER): No space left on device",
        "the limit on user namespaces is reached (user.max_user_namespaces, or 32 nested levels)",
        "never with less isolation",
    ] {
        assert!(err.contains(part), "{part:?} not in {err}");
    }
    // An unmapped user (nobody) may not create one at all.
    let (code, err) = in_nested_user_namespaces(1, &user.bin);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("Operation not permitted")
            && err.contains("your uid or gid has no mapping in the user namespace this runs in"),
        "{err}"
    );
}
