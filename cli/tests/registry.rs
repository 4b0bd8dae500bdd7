//! Registry commands end to end against Debian's `docker-registry` on 127.0.0.1,
//! with a fault-injecting proxy in front where a test needs to see or break traffic.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;
mod common;
use common::{fails, lists_repo, mybuild, ok, store_with_busybox, with_stdin};
use testdata::registry::{Fault, FaultKind, FaultProxy, Registry, RegistryOptions};

/// A store with busybox imported; `None` when the test must skip.
fn setup() -> Option<(TempDir, PathBuf)> {
    if !testdata::require_tool("busybox") || !testdata::require_tool("docker-registry") {
        return None;
    }
    let tmp = TempDir::new().expect("tmp");
    let root = store_with_busybox(tmp.path());
    Some((tmp, root))
}

fn image_id(root: &Path, name: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&ok(mybuild(root).args(["inspect", name])).0).expect("json");
    v["Id"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no digest in inspect output: {v}"))
}

fn blob_requests(p: &FaultProxy, methods: &[&str]) -> Vec<String> {
    p.requests()
        .into_iter()
        .filter(|r| {
            methods.iter().any(|m| r.starts_with(&format!("{m} "))) && r.contains("/blobs/")
        })
        .collect()
}

fn remote_digest(root: &Path, r: &str) -> String {
    ok(mybuild(root).args(["digest", r])).0.trim().to_string()
}

#[test]
fn push_pull_round_trip_keeps_digests_and_second_push_skips_every_blob() {
    let Some((tmp, root)) = setup() else { return };
    let reg = Registry::start();
    let proxy = FaultProxy::start(&reg.addr);
    let dest = format!("{}/team/bb:1", proxy.addr);
    let (digest, err) = ok(mybuild(&root).args(["push", "busybox", &dest]));
    let digest = digest.trim().to_string();
    assert!(err.contains(": pushed"), "{err}");
    assert_eq!(remote_digest(&root, &dest), digest);
    assert_eq!(
        ok(mybuild(&root).args(["tags", &format!("{}/team/bb", proxy.addr)])).0,
        "1\n"
    );

    // Pull into an empty store: same manifest digest, same bytes.
    let other = tmp.path().join("other");
    let (name, _) = ok(mybuild(&other).args(["pull", &dest]));
    assert_eq!(name.trim(), format!("{}/team/bb:1", proxy.addr));
    let (images, _) = ok(mybuild(&other).args(["images"]));
    assert!(images.contains(&digest[7..19]), "{images}");
    let (a, b) = (
        ok(mybuild(&root).args(["inspect", "busybox"])).0,
        ok(mybuild(&other).args(["inspect", &dest])).0,
    );
    let (a, b): (serde_json::Value, serde_json::Value) = (
        serde_json::from_str(&a).unwrap(),
        serde_json::from_str(&b).unwrap(),
    );
    assert_eq!(a["Manifest"], b["Manifest"]);
    assert_eq!(a["Config"], b["Config"]);
    ok(mybuild(&other).arg("fsck"));

    // A second push uploads nothing: HEAD checks only.
    proxy.clear_log();
    let (_, err) = ok(mybuild(&root).args(["push", "busybox", &dest]));
    assert_eq!(err.matches("skipped (exists)").count(), 2, "{err}");
    assert!(
        blob_requests(&proxy, &["POST", "PUT", "PATCH"]).is_empty(),
        "{:?}",
        proxy.requests()
    );
    assert_eq!(
        blob_requests(&proxy, &["HEAD"]).len(),
        2,
        "{:?}",
        proxy.requests()
    );

    // Pulling again downloads nothing either.
    proxy.clear_log();
    let (_, err) = ok(mybuild(&other).args(["pull", &dest]));
    assert!(blob_requests(&proxy, &["GET"]).is_empty(), "{err}");
}

#[test]
fn push_to_another_repository_mounts_blobs() {
    let Some((_tmp, root)) = setup() else { return };
    let reg = Registry::start();
    let proxy = FaultProxy::start(&reg.addr);
    ok(mybuild(&root).args(["push", "busybox", &format!("{}/a/one:1", proxy.addr)]));
    proxy.clear_log();
    let (_, err) = ok(mybuild(&root).args(["push", "busybox", &format!("{}/b/two:1", proxy.addr)]));
    assert_eq!(err.matches("mounted from a/one").count(), 2, "{err}");
    let posts = blob_requests(&proxy, &["POST"]);
    assert_eq!(posts.len(), 2, "{posts:?}");
    assert!(
        posts
            .iter()
            .all(|p| p.contains("mount=sha256") && p.contains("from=a%2Fone")),
        "{posts:?}"
    );
    assert!(
        blob_requests(&proxy, &["PUT", "PATCH"]).is_empty(),
        "{:?}",
        proxy.requests()
    );
    assert_eq!(
        remote_digest(&root, &format!("{}/b/two:1", proxy.addr)),
        remote_digest(&root, &format!("{}/a/one:1", proxy.addr))
    );
}

/// `left` incompressible bytes (xorshift from `state`).
struct Noise(u64, u64);

impl std::io::Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.1 as usize) / 8 * 8;
        let n = if n == 0 {
            buf.len().min(self.1 as usize)
        } else {
            n
        };
        for (i, b) in buf[..n].iter_mut().enumerate() {
            if i % 8 == 0 {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
            }
            *b = (self.0 >> ((i % 8) * 8)) as u8;
        }
        self.1 -= n as u64;
        Ok(n)
    }
}

/// 50 MB of incompressible bytes (xorshift), as a one-file rootfs tar.
fn big_rootfs(dir: &Path) -> PathBuf {
    let path = dir.join("big.tar");
    let f = std::fs::File::create(&path).expect("tar");
    let mut t = tar::Builder::new(std::io::BufWriter::new(f));
    let size = 50_000_000u64;
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    t.append_data(&mut h, "noise.bin", Noise(0x9e3779b97f4a7c15, size))
        .expect("append");
    t.into_inner().expect("finish").flush().expect("flush");
    path
}

#[test]
fn large_blob_is_pushed_in_chunks_and_pulls_back_verified() {
    let Some((tmp, root)) = setup() else { return };
    let tar = big_rootfs(tmp.path());
    ok(mybuild(&root)
        .args(["import", "--compression", "gzip"])
        .arg(&tar)
        .arg("big:1"));
    let reg = Registry::start();
    // Ctrl-C while the second chunk is held: the session is cancelled at the
    // Location of the first chunk's answer (distribution refuses a cancel
    // whose state counts fewer bytes than it holds).
    let held = FaultProxy::start(&reg.addr);
    held.add(Fault::new("PATCH", "/blobs/uploads/", FaultKind::Stall { after: 0 }, 1).skipping(1));
    let child = start_and_stall(
        mybuild(&root).args(["push", "big:1", &format!("{}/big:1", held.addr)]),
        &held,
        &root,
        &[],
        false,
    );
    assert_eq!(upload_sessions(&reg, "big").map(|s| s.len()), Some(1));
    let (status, err) = signal_and_wait(child, libc::SIGINT);
    assert_eq!(status.code(), Some(130), "{err}");
    assert_eq!(
        upload_sessions(&reg, "big"),
        Some(vec![]),
        "{:?}",
        held.requests()
    );
    let proxy = FaultProxy::start(&reg.addr);
    let dest = format!("{}/big:1", proxy.addr);
    // The second chunk fails once: the upload asks the registry where it stands
    // (GET on the upload URL) and resumes from its Range.
    proxy.add(Fault::new("PATCH", "/blobs/uploads/", FaultKind::Status(502), 1).skipping(1));
    let (digest, err) = ok(mybuild(&root).args(["push", "big:1", &dest]));
    assert!(
        err.contains("pushed 50.") && err.contains("in 3 chunks"),
        "{err}"
    );
    let patches = blob_requests(&proxy, &["PATCH"]);
    assert_eq!(
        patches.len(),
        4,
        "3 chunks + 1 retried: {:?}",
        proxy.requests()
    );
    assert_eq!(proxy.fired().len(), 1);
    let status_queries = blob_requests(&proxy, &["GET"])
        .into_iter()
        .filter(|r| r.contains("/blobs/uploads/"))
        .count();
    assert_eq!(status_queries, 1, "{:?}", proxy.requests());
    let other = tmp.path().join("other");
    ok(mybuild(&other).args(["pull", &dest]));
    ok(mybuild(&other).arg("fsck"));
    assert_eq!(remote_digest(&root, &dest), digest.trim());
    if testdata::require_tool("skopeo") {
        let out = ok(Command::new("skopeo").args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{dest}"),
        ]))
        .0;
        assert!(out.contains(digest.trim()), "{out}");
    }
}

#[test]
fn copy_between_two_registries_keeps_the_digest() {
    let Some((_tmp, root)) = setup() else { return };
    let (one, two) = (Registry::start(), Registry::start());
    let src = format!("{}/src/bb:7", one.addr);
    let digest = ok(mybuild(&root).args(["push", "busybox", &src])).0;
    let dst = format!("{}/dst/bb", two.addr);
    let (out, err) = ok(mybuild(&root).args(["copy", &src, &dst]));
    assert_eq!(out, digest);
    assert_eq!(err.matches(": copied").count(), 2, "{err}");
    assert_eq!(remote_digest(&root, &format!("{dst}:7")), digest.trim());
    // Same registry, another repository: mounted, not copied.
    let (_, err) = ok(mybuild(&root).args(["copy", &src, &format!("{}/again/bb:8", one.addr)]));
    assert_eq!(err.matches("mounted from src/bb").count(), 2, "{err}");
}

#[test]
fn skopeo_reads_what_we_push_and_we_read_what_skopeo_pushes() {
    let Some((tmp, root)) = setup() else { return };
    if !testdata::require_tool("skopeo") {
        return;
    }
    let reg = Registry::start();
    // skopeo → registry → mybuild pull
    let theirs = format!("{}/by-skopeo:1", reg.addr);
    ok(Command::new("skopeo").args([
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:busybox:latest", root.display()),
        &format!("docker://{theirs}"),
    ]));
    let other = tmp.path().join("other");
    ok(mybuild(&other).args(["pull", &theirs]));
    let pulled = remote_digest(&other, &theirs);
    assert_eq!(image_id(&other, &theirs), pulled);
    // mybuild push → registry → skopeo copy to an OCI layout
    let ours = format!("{}/by-mybuild:1", reg.addr);
    let digest = ok(mybuild(&root).args(["push", "busybox", &ours])).0;
    let layout = tmp.path().join("layout");
    ok(Command::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{ours}"),
        &format!("oci:{}:x", layout.display()),
    ]));
    let index = std::fs::read_to_string(layout.join("index.json")).expect("index");
    assert!(index.contains(digest.trim()), "{index}");
}

#[test]
fn transient_failures_are_retried_and_broken_downloads_resume() {
    let Some((tmp, root)) = setup() else { return };
    let reg = Registry::start();
    let proxy = FaultProxy::start(&reg.addr);
    let dest = format!("{}/flaky:1", proxy.addr);
    proxy.add(Fault::new(
        "PUT",
        "/blobs/uploads/",
        FaultKind::Status(503),
        1,
    ));
    proxy.add(Fault::new(
        "HEAD",
        "/blobs/",
        FaultKind::TooManyRequests { retry_after: 1 },
        1,
    ));
    let digest = ok(mybuild(&root).args(["push", "busybox", &dest])).0;
    proxy.add(Fault::new("GET", "/manifests/", FaultKind::Status(500), 1));
    let v: serde_json::Value =
        serde_json::from_str(&ok(mybuild(&root).args(["inspect", "busybox"])).0).unwrap();
    let layer = v["Manifest"]["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    // The layer breaks twice: a reset, then the resumed request cut short.
    proxy.add(Fault::new(
        "GET",
        &layer,
        FaultKind::ResetMidBody { after: 100_000 },
        1,
    ));
    proxy.add(Fault::new(
        "GET",
        &layer,
        FaultKind::Truncate { after: 50_000 },
        1,
    ));
    let other = tmp.path().join("other");
    ok(mybuild(&other).args(["pull", &dest]));
    ok(mybuild(&other).arg("fsck"));
    assert_eq!(image_id(&other, &dest), digest.trim());
    let fired = proxy.fired();
    assert_eq!(fired.len(), 5, "{fired:?}");
    // The broken downloads resumed with Range requests.
    let gets: Vec<String> = blob_requests(&proxy, &["GET"])
        .into_iter()
        .filter(|g| g.contains(&layer))
        .collect();
    assert_eq!(gets.len(), 3, "{gets:?}");
    assert!(!gets[0].contains("range="), "{gets:?}");
    assert!(
        gets[1..].iter().all(|g| g.contains("range=bytes=")),
        "{gets:?}"
    );
}

#[test]
fn a_blob_with_wrong_content_is_rejected_and_never_stored() {
    let Some((tmp, root)) = setup() else { return };
    let reg = Registry::start();
    let proxy = FaultProxy::start(&reg.addr);
    let dest = format!("{}/bad:1", proxy.addr);
    ok(mybuild(&root).args(["push", "busybox", &dest]));
    proxy.add(Fault::new("GET", "/blobs/", FaultKind::Corrupt, 100));
    let other = tmp.path().join("other");
    let err = fails(mybuild(&other).args(["pull", &dest]));
    assert!(
        err.contains("wrong data") && err.contains("sha256:"),
        "{err}"
    );
    // Nothing entered the store: no blob with a layer's digest, no temp file, no tag.
    let blobs: Vec<_> = std::fs::read_dir(other.join("blobs/sha256"))
        .expect("blobs")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(blobs.is_empty(), "{blobs:?}");
    let ingest: Vec<_> = std::fs::read_dir(other.join("ingest"))
        .expect("ingest")
        .flatten()
        .collect();
    assert!(ingest.is_empty(), "{ingest:?}");
    assert!(!lists_repo(&other, "bad"));
}

#[test]
fn basic_auth_login_push_pull_logout_and_no_secret_in_output() {
    let Some((tmp, root)) = setup() else { return };
    if !testdata::require_tool("htpasswd") {
        return;
    }
    let password = "pw-Very-Secret-42";
    let reg = Registry::start_with(&RegistryOptions {
        basic_auth: Some(("alice".into(), password.into())),
        ..Default::default()
    });
    let dest = format!("{}/private:1", reg.addr);
    let err = fails(mybuild(&root).args(["push", "busybox", &dest]));
    assert!(
        err.contains("authentication required") && err.contains("mybuild login"),
        "{err}"
    );
    let (success, _, err) = with_stdin(
        mybuild(&root).args(["login", "-u", "alice", "--password-stdin", &reg.addr]),
        "wrong\n",
    );
    assert!(
        !success && err.contains("refused the username or password"),
        "{err}"
    );
    let (success, out, err) = with_stdin(
        mybuild(&root).args(["login", "-u", "alice", "--password-stdin", &reg.addr]),
        format!("{password}\n"),
    );
    assert!(success && out.contains("Login Succeeded"), "{out}{err}");
    let config =
        std::fs::read_to_string(root.with_extension("docker").join("config.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert!(v["auths"][&reg.addr]["auth"].is_string(), "{config}");
    assert!(!config.contains(password));

    let (out, err) = ok(mybuild(&root).args(["--debug", "push", "busybox", &dest]));
    let other = tmp.path().join("other");
    let (out2, err2) = ok(mybuild(&other)
        .env("DOCKER_CONFIG", root.with_extension("docker"))
        .args(["--debug", "pull", &dest]));
    let b64 = v["auths"][&reg.addr]["auth"].as_str().unwrap().to_string();
    for text in [&out, &err, &out2, &err2] {
        assert!(
            !text.contains(password) && !text.contains(&b64),
            "secret leaked:\n{text}"
        );
    }
    ok(mybuild(&root).args(["logout", &reg.addr]));
    let err = fails(mybuild(&root).args(["pull", &dest]));
    assert!(err.contains("authentication required"), "{err}");
    let err = fails(mybuild(&root).args(["logout", &reg.addr]));
    assert!(err.contains("not logged in"), "{err}");
}

#[test]
fn credential_helpers_supply_secrets_and_a_missing_helper_means_anonymous() {
    let Some((tmp, root)) = setup() else { return };
    if !testdata::require_tool("htpasswd") {
        return;
    }
    let reg = Registry::start_with(&RegistryOptions {
        basic_auth: Some(("bob".into(), "helper-pw".into())),
        ..Default::default()
    });
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-mbtest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nread server\n[ \"$1\" = get ] && [ \"$server\" = \"{}\" ] && echo '{{\"ServerURL\":\"'$server'\",\"Username\":\"bob\",\"Secret\":\"helper-pw\"}}' && exit 0\necho 'credentials not found in native keychain'; exit 1\n",
            reg.addr
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let docker = root.with_extension("docker");
    std::fs::create_dir_all(&docker).unwrap();
    std::fs::write(
        docker.join("config.json"),
        format!(r#"{{"credHelpers":{{"{}":"mbtest"}}}}"#, reg.addr),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let dest = format!("{}/helped:1", reg.addr);
    ok(mybuild(&root)
        .env("PATH", &path)
        .args(["push", "busybox", &dest]));
    // Without the helper on PATH: a warning, then anonymous access (refused here).
    let err = fails(mybuild(&root).args(["push", "busybox", &dest]));
    assert!(
        err.contains("docker-credential-mbtest is not installed")
            && err.contains("without credentials")
            && err.contains("authentication required"),
        "{err}"
    );
}

#[test]
fn tags_list_and_delete_removes_a_manifest() {
    let Some((_tmp, root)) = setup() else { return };
    let reg = Registry::start();
    let proxy = FaultProxy::start(&reg.addr);
    for t in ["a", "b", "c", "d", "e"] {
        ok(mybuild(&root).args(["push", "busybox", &format!("{}/paged:{t}", proxy.addr)]));
    }
    // distribution 2.8 sends one page (see tags_follow_link_pagination_to_the_last_page).
    let (out, _) = ok(mybuild(&root).args(["tags", &format!("{}/paged", proxy.addr)]));
    assert_eq!(out, "a\nb\nc\nd\ne\n");
    let target = format!("{}/paged:c", proxy.addr);
    let (out, _) = ok(mybuild(&root).args(["delete", &target]));
    assert!(out.contains("Deleted"), "{out}");
    let err = fails(mybuild(&root).args(["digest", &target]));
    assert!(err.contains("not found"), "{err}");
}

/// A registry serving TLS with a certificate from a throwaway CA.
fn tls_registry(tmp: &Path) -> (testdata::registry::TestCerts, Registry) {
    let certs = testdata::registry::make_certs(tmp);
    let reg = Registry::start_with(&RegistryOptions {
        tls: Some((certs.cert.clone(), certs.key.clone())),
        ..Default::default()
    });
    (certs, reg)
}

#[test]
fn certs_d_supplies_the_registry_ca() {
    let Some((tmp, root)) = setup() else { return };
    if !testdata::require_tool("openssl") {
        return;
    }
    let (certs, reg) = tls_registry(tmp.path());
    let dest = format!("{}/tls:1", reg.addr);
    let err = fails(mybuild(&root).args(["push", "busybox", &dest]));
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    let dir = root.with_extension("certs.d").join(&reg.addr);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&certs.ca, dir.join("ca.crt")).unwrap();
    let digest = ok(mybuild(&root).args(["push", "busybox", &dest])).0;
    assert_eq!(remote_digest(&root, &dest), digest.trim());
}

#[test]
fn malformed_references_are_refused_clearly() {
    let tmp = TempDir::new().unwrap();
    let root = tmp.path().join("store");
    let err = fails(mybuild(&root).args(["pull", "Not/Valid"]));
    assert!(
        err.contains("invalid reference \"Not/Valid\"") && err.contains("lowercase"),
        "{err}"
    );
    let err = fails(mybuild(&root).args(["digest", "host:x/app"]));
    assert!(err.contains("invalid registry port"), "{err}");
}

/// Busybox and a second image (ENV SECOND=1) under an index of both platforms.
fn push_index(root: &Path, tmp: &Path, registry: &str) -> (String, String, String) {
    let rootfs = testdata::images::busybox_rootfs_file(tmp).expect("rootfs");
    ok(mybuild(root)
        .arg("import")
        .arg(&rootfs)
        .args(["second", "-c", "ENV SECOND=1"]));
    common::push_two_platform_index(root, registry, "busybox", "second")
}

#[test]
fn pull_picks_the_platform_and_copy_all_platforms_keeps_the_index() {
    let Some((tmp, root)) = setup() else { return };
    let (one, two) = (Registry::start(), Registry::start());
    let (amd, arm, index) = push_index(&root, tmp.path(), &one.addr);
    let src = format!("{}/multi:both", one.addr);
    assert_eq!(remote_digest(&root, &src), index);
    let other = tmp.path().join("other");
    ok(mybuild(&other).args(["pull", "--platform", "linux/aarch64", &src]));
    assert_eq!(image_id(&other, &src), arm);
    ok(mybuild(&other).args(["pull", "--platform", "linux/x86_64", &src]));
    assert_eq!(image_id(&other, &src), amd);
    let err = fails(mybuild(&other).args(["pull", "--platform", "linux/s390x", &src]));
    assert!(
        err.contains("no image for platform linux/s390x") && err.contains("linux/arm64/v8"),
        "{err}"
    );
    // --all-platforms keeps the index digest; without it one platform is copied.
    let out = ok(mybuild(&root).args([
        "copy",
        "--all-platforms",
        &src,
        &format!("{}/all:1", two.addr),
    ]))
    .0;
    assert_eq!(out.trim(), index);
    assert_eq!(remote_digest(&root, &format!("{}/all:1", two.addr)), index);
    assert_eq!(
        remote_digest(&root, &format!("{}/all@{arm}", two.addr)),
        arm
    );
    let out = ok(mybuild(&root).args([
        "copy",
        "--platform",
        "linux/arm64",
        &src,
        &format!("{}/one:1", two.addr),
    ]))
    .0;
    assert_eq!(out.trim(), arm);
}

#[test]
fn build_pulls_a_missing_base_and_pushes_the_result() {
    let Some((tmp, root)) = setup() else { return };
    if !testdata::require_root() {
        return;
    }
    let reg = Registry::start();
    let base = format!("{}/base:1", reg.addr);
    ok(mybuild(&root).args(["push", "busybox", &base]));
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {base}\nRUN echo built > /built.txt\n"),
    )
    .unwrap();
    let fresh = tmp.path().join("fresh");
    let app = format!("{}/app:1", reg.addr);
    let meta = tmp.path().join("meta.json");
    let (_, err) = ok(mybuild(&fresh)
        .args(["build", "--push", "-t", &app, "--metadata-file"])
        .arg(&meta)
        .arg(&ctx));
    assert!(err.contains(&format!("pulling {base}")), "{err}");
    // The built layer left gzip-compressed: the registry's manifest is the one
    // --metadata-file names, not the stored one.
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    assert_eq!(
        remote_digest(&fresh, &app),
        meta["containerimage.digest"].as_str().unwrap()
    );
    assert_ne!(remote_digest(&fresh, &app), image_id(&fresh, &app));
    // The base layer was unpacked into its snapshot as it arrived.
    let v: serde_json::Value =
        serde_json::from_str(&ok(mybuild(&root).args(["inspect", "busybox"])).0).unwrap();
    let layer = v["Manifest"]["layers"][0]["digest"].as_str().unwrap();
    let diff_id = v["Config"]["rootfs"]["diff_ids"][0].as_str().unwrap();
    let short = &layer["sha256:".len().."sha256:".len() + 12];
    assert!(
        err.lines()
            .any(|l| l.contains(short) && l.contains("pulled") && l.ends_with(", unpacked")),
        "{err}"
    );
    let snapshot = fresh
        .join("snapshots-v1")
        .join(diff_id.trim_start_matches("sha256:"));
    assert_eq!(
        std::fs::read(snapshot.join("bin/busybox")).unwrap(),
        std::fs::read(testdata::images::busybox_binary().unwrap()).unwrap()
    );
    // The pushed image has the new layer: pull it elsewhere and read the file.
    let third = tmp.path().join("third");
    ok(mybuild(&third).args(["pull", &app]));
    let v: serde_json::Value =
        serde_json::from_str(&ok(mybuild(&third).args(["inspect", &app])).0).unwrap();
    assert_eq!(
        v["Manifest"]["layers"].as_array().map(Vec::len),
        Some(2),
        "{v}"
    );
    // A base that is nowhere: the error names the image and the registry's answer.
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {}/missing:1\n", reg.addr),
    )
    .unwrap();
    let err = fails(mybuild(&fresh).arg("build").arg(&ctx));
    assert!(
        err.contains("missing:1") && err.contains("not found"),
        "{err}"
    );
}

#[test]
fn bearer_tokens_from_a_token_server_with_scopes_mounts_and_refresh_tokens() {
    let Some((tmp, root)) = setup() else { return };
    if !testdata::require_tool("openssl") {
        return;
    }
    let issuer = testdata::registry::TokenIssuer::start("carol", "tok-pw-77", "refresh-abc");
    let reg = Registry::start_with(&RegistryOptions {
        token_auth: Some(issuer.config()),
        ..Default::default()
    });
    let a = format!("{}/tok/a:1", reg.addr);
    // Anonymous tokens carry pull only: pushing is refused.
    let err = fails(mybuild(&root).args(["push", "busybox", &a]));
    assert!(err.contains("authentication required"), "{err}");
    let (success, _, err) = with_stdin(
        mybuild(&root).args(["login", "-u", "carol", "--password-stdin", &reg.addr]),
        "nope\n",
    );
    assert!(!success && err.contains("refused"), "{err}");
    let (success, out, err) = with_stdin(
        mybuild(&root).args(["login", "-u", "carol", "--password-stdin", &reg.addr]),
        "tok-pw-77\n",
    );
    assert!(success, "{out}{err}");
    let digest = ok(mybuild(&root).args(["push", "busybox", &a])).0;
    let reqs = issuer.requests();
    assert!(
        reqs.iter().any(|r| r.who == "basic:carol"
            && r.scopes == vec!["repository:tok/a:pull,push".to_string()]),
        "{reqs:?}"
    );
    // One token serves the whole push (cached per scope).
    let for_push = reqs
        .iter()
        .filter(|r| r.who == "basic:carol" && r.scopes.iter().any(|s| s.ends_with("pull,push")))
        .count();
    assert_eq!(for_push, 1, "{reqs:?}");
    // A mount asks for pull on the source repository too.
    let b = format!("{}/tok/b:1", reg.addr);
    let (_, err) = ok(mybuild(&root).args(["push", "busybox", &b]));
    assert!(err.contains("mounted from tok/a"), "{err}");
    assert!(
        issuer.requests().iter().any(|r| r.scopes
            == vec![
                "repository:tok/b:pull,push".to_string(),
                "repository:tok/a:pull".to_string()
            ]),
        "{:?}",
        issuer.requests()
    );
    // A 401 in the middle of a pull (an expired token) gets a fresh token and one retry.
    let proxy = FaultProxy::start(&reg.addr);
    proxy.add(Fault::new("GET", "/blobs/", FaultKind::Status(401), 1));
    let before = issuer.requests().len();
    let via = format!("{}/tok/a:1", proxy.addr);
    let third = tmp.path().join("third");
    ok(mybuild(&third)
        .env("DOCKER_CONFIG", root.with_extension("docker"))
        .args(["pull", &via]));
    assert_eq!(proxy.fired().len(), 1);
    let pulls = issuer.requests()[before..]
        .iter()
        .filter(|r| r.scopes == vec!["repository:tok/a:pull".to_string()])
        .count();
    assert_eq!(pulls, 2, "{:?}", issuer.requests());

    // An identity token in config.json is exchanged with an OAuth2 POST.
    let docker = tmp.path().join("refresh.docker");
    std::fs::create_dir_all(&docker).unwrap();
    std::fs::write(
        docker.join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"auth":"Y2Fyb2w6","identitytoken":"refresh-abc"}}}}}}"#,
            reg.addr
        ),
    )
    .unwrap();
    let other = tmp.path().join("other");
    ok(mybuild(&other)
        .env("DOCKER_CONFIG", &docker)
        .args(["pull", &a]));
    assert_eq!(image_id(&other, &a), digest.trim());
    assert!(
        issuer
            .requests()
            .iter()
            .any(|r| r.method == "POST" && r.who == "refresh"),
        "{:?}",
        issuer.requests()
    );
}

#[test]
fn tags_follow_link_pagination_to_the_last_page() {
    let Some((_tmp, root)) = setup() else { return };
    let reg = Registry::start();
    let proxy = FaultProxy::start(&reg.addr);
    let names = ["v1", "v10", "v2", "beta", "alpha", "rc-1", "z"];
    for t in names {
        ok(mybuild(&root).args(["push", "busybox", &format!("{}/paged:{t}", proxy.addr)]));
    }
    // The registry answers in pages of 3 without being asked (as GHCR and Hub do).
    proxy.add(Fault::new(
        "GET",
        "/tags/list",
        FaultKind::PaginateTags { page: 3 },
        100,
    ));
    proxy.clear_log();
    let (out, _) = ok(mybuild(&root).args(["tags", &format!("{}/paged", proxy.addr)]));
    let mut want: Vec<&str> = names.to_vec();
    want.sort();
    assert_eq!(out, format!("{}\n", want.join("\n")));
    let pages: Vec<String> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("GET ") && r.contains("/tags/list"))
        .collect();
    assert_eq!(
        pages,
        vec![
            "GET /v2/paged/tags/list".to_string(),
            "GET /v2/paged/tags/list?last=rc-1&n=3".to_string(),
            "GET /v2/paged/tags/list?last=v2&n=3".to_string(),
        ]
    );
}

#[test]
fn identity_tokens_use_the_oauth2_post_and_fall_back_to_get() {
    let Some((_tmp, root)) = setup() else { return };
    if !testdata::require_tool("openssl") {
        return;
    }
    let refresh = "refresh-Secret-9f3";
    let issuer = testdata::registry::TokenIssuer::start("carol", "tok-pw-77", refresh);
    let reg = Registry::start_with(&RegistryOptions {
        token_auth: Some(issuer.config()),
        ..Default::default()
    });
    let docker = root.with_extension("docker");
    std::fs::create_dir_all(&docker).unwrap();
    std::fs::write(
        docker.join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"auth":"Y2Fyb2w6","identitytoken":"{refresh}"}}}}}}"#,
            reg.addr
        ),
    )
    .unwrap();
    // The OAuth2 POST (grant_type=refresh_token) carries the push.
    let dest = format!("{}/tok/a:1", reg.addr);
    let (digest, err) = ok(mybuild(&root).args(["--debug", "push", "busybox", &dest]));
    let reqs = issuer.requests();
    assert!(
        reqs.iter().any(|r| r.method == "POST"
            && r.who == "refresh"
            && r.scopes == vec!["repository:tok/a:pull,push".to_string()]),
        "{reqs:?}"
    );
    assert!(
        reqs.iter()
            .all(|r| r.method == "POST" || r.who == "anonymous"),
        "{reqs:?}"
    );
    for text in [&digest, &err] {
        assert!(!text.contains(refresh), "secret leaked:\n{text}");
    }
    // Issuers that only do GET answer the POST with 404, 405 or 400: the
    // token then goes as Basic `<token>:REFRESH` on a GET.
    for status in [404u16, 405, 400] {
        issuer.refuse_post(Some(status));
        let before = issuer.requests().len();
        let (out, err) = ok(mybuild(&root).args(["--debug", "digest", &dest]));
        assert_eq!(out.trim(), digest.trim());
        let new: Vec<(String, String)> = issuer.requests()[before..]
            .iter()
            .map(|r| (r.method.clone(), r.who.clone()))
            .collect();
        assert_eq!(
            new,
            vec![
                ("POST".to_string(), "no-oauth".to_string()),
                ("GET".to_string(), "refresh-basic".to_string())
            ],
            "after {status}"
        );
        assert!(!err.contains(refresh), "secret leaked:\n{err}");
    }
    // The fallback token is good for pushing too.
    let (_, err) = ok(mybuild(&root).args(["push", "busybox", &format!("{}/tok/b:1", reg.addr)]));
    assert!(err.contains("mounted from tok/a"), "{err}");
    // A refresh token the issuer does not know is refused on both paths.
    std::fs::write(
        docker.join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"identitytoken":"wrong"}}}}}}"#,
            reg.addr
        ),
    )
    .unwrap();
    let err = fails(mybuild(&root).args(["push", "busybox", &dest]));
    assert!(err.contains("authentication required"), "{err}");
}

#[test]
fn login_and_logout_go_through_the_configured_creds_store() {
    let Some((tmp, root)) = setup() else { return };
    if !testdata::require_tool("htpasswd") {
        return;
    }
    let password = "store-Pw-Secret-31";
    let reg = Registry::start_with(&RegistryOptions {
        basic_auth: Some(("dave".into(), password.into())),
        ..Default::default()
    });
    let bin = tmp.path().join("bin");
    let keep = tmp.path().join("keychain");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&keep).unwrap();
    let helper = bin.join("docker-credential-mbrec");
    // Records every call; keeps one secret per server in a file.
    std::fs::write(
        &helper,
        format!(
            r#"#!/bin/sh
k={keep}
case "$1" in
store) cat > "$k/entry.json"; echo store >> "$k/log" ;;
get) read server; echo "get $server" >> "$k/log"
     if [ -f "$k/entry.json" ]; then cat "$k/entry.json"; else echo 'credentials not found in native keychain'; exit 1; fi ;;
erase) read server; echo "erase $server" >> "$k/log"; rm -f "$k/entry.json" ;;
*) exit 1 ;;
esac
"#,
            keep = keep.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let docker = root.with_extension("docker");
    std::fs::create_dir_all(&docker).unwrap();
    std::fs::write(docker.join("config.json"), r#"{"credsStore":"mbrec"}"#).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let (success, out, err) = with_stdin(
        mybuild(&root).env("PATH", &path).args([
            "login",
            "-u",
            "dave",
            "--password-stdin",
            &reg.addr,
        ]),
        format!("{password}\n"),
    );
    assert!(success && out.contains("Login Succeeded"), "{out}{err}");
    assert!(err.contains("docker-credential-mbrec"), "{err}");
    let entry: serde_json::Value =
        serde_json::from_slice(&std::fs::read(keep.join("entry.json")).unwrap()).unwrap();
    assert_eq!(
        entry,
        serde_json::json!({"ServerURL": reg.addr, "Username": "dave", "Secret": password})
    );
    let config = std::fs::read_to_string(docker.join("config.json")).unwrap();
    assert!(
        !config.contains(password) && !config.contains("\"auth\""),
        "{config}"
    );
    // Push reads the secret back with `get`.
    let dest = format!("{}/stored:1", reg.addr);
    let (o1, e1) = ok(mybuild(&root)
        .env("PATH", &path)
        .args(["--debug", "push", "busybox", &dest]));
    let (o2, e2) = ok(mybuild(&root)
        .env("PATH", &path)
        .args(["logout", &reg.addr]));
    let log = std::fs::read_to_string(keep.join("log")).unwrap();
    assert_eq!(
        log,
        format!("store\nget {0}\nerase {0}\n", reg.addr),
        "helper calls"
    );
    assert!(!keep.join("entry.json").exists());
    for text in [&out, &err, &o1, &e1, &o2, &e2] {
        assert!(!text.contains(password), "secret leaked:\n{text}");
    }
    let err = fails(
        mybuild(&root)
            .env("PATH", &path)
            .args(["push", "busybox", &dest]),
    );
    assert!(err.contains("authentication required"), "{err}");
    let config = std::fs::read_to_string(docker.join("config.json")).unwrap();
    assert!(!config.contains(password), "{config}");
}

#[test]
fn registry_warnings_are_shown_once_per_text() {
    let Some((tmp, root)) = setup() else { return };
    let reg = Registry::start();
    let proxy = FaultProxy::start(&reg.addr);
    let dest = format!("{}/warned:1", proxy.addr);
    ok(mybuild(&root).args(["push", "busybox", &dest]));
    let warn = |text: &str, path: &str, times: usize| {
        Fault::new(
            "GET",
            path,
            FaultKind::AddHeader {
                name: "Warning".into(),
                value: format!("299 - \"{text}\""),
            },
            times,
        )
    };
    // One text on the manifest only, another on every response after it.
    proxy.add(warn("quota at 95%", "/manifests/", 1));
    proxy.add(warn("this repository is deprecated", "/v2/warned/", 100));
    let other = tmp.path().join("other");
    let (_, err) = ok(mybuild(&other).args(["pull", &dest]));
    let fired = proxy.fired();
    assert!(fired.len() >= 3, "{fired:?}");
    assert_eq!(err.matches("quota at 95%").count(), 1, "{err}");
    assert_eq!(
        err.matches("this repository is deprecated").count(),
        1,
        "{err}"
    );
    assert!(!err.contains("299 -"), "{err}");
    // Once per command: the next command shows it again.
    let (_, err) = ok(mybuild(&tmp.path().join("third")).args(["pull", &dest]));
    assert_eq!(
        err.matches("this repository is deprecated").count(),
        1,
        "{err}"
    );
}

#[test]
fn chunked_push_honours_the_registrys_minimum_chunk_length() {
    let Some((tmp, root)) = setup() else { return };
    let tar = big_rootfs(tmp.path());
    ok(mybuild(&root)
        .args(["import", "--compression", "gzip"])
        .arg(&tar)
        .arg("big:1"));
    let reg = Registry::start();
    let proxy = FaultProxy::start(&reg.addr);
    // Our chunks are 16 MiB; this registry wants at least 30 MB per chunk.
    proxy.add(Fault::new(
        "POST",
        "/blobs/uploads/",
        FaultKind::AddHeader {
            name: "OCI-Chunk-Min-Length".into(),
            value: "30000000".into(),
        },
        10,
    ));
    let dest = format!("{}/big:1", proxy.addr);
    let (digest, err) = ok(mybuild(&root).args(["push", "big:1", &dest]));
    assert!(err.contains("in 2 chunks"), "{err}");
    let patches: Vec<u64> = proxy
        .request_sizes()
        .into_iter()
        .filter(|(m, p, _)| m == "PATCH" && p.contains("/blobs/uploads/"))
        .map(|(_, _, n)| n)
        .collect();
    let v: serde_json::Value =
        serde_json::from_str(&ok(mybuild(&root).args(["inspect", "big:1"])).0).unwrap();
    let layer_size = v["Manifest"]["layers"][0]["size"].as_u64().unwrap();
    assert_eq!(patches.len(), 2, "{patches:?}");
    assert!(patches[0] >= 30_000_000, "{patches:?}");
    assert_eq!(patches.iter().sum::<u64>(), layer_size, "{patches:?}");
    assert_eq!(remote_digest(&root, &dest), digest.trim());
}

#[test]
fn build_insecure_registry_reaches_a_registry_with_an_unknown_ca() {
    let Some((tmp, root)) = setup() else { return };
    if !testdata::require_tool("openssl") {
        return;
    }
    let (_certs, reg) = tls_registry(tmp.path());
    let base = format!("{}/base:1", reg.addr);
    ok(mybuild(&root).args(["push", "--insecure-registry", &reg.addr, "busybox", &base]));
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {base}\nLABEL built=yes\n"),
    )
    .unwrap();
    let fresh = tmp.path().join("fresh");
    let app = format!("{}/app:1", reg.addr);
    // Without the flag the certificate is refused when the base is pulled.
    let err = fails(
        mybuild(&fresh)
            .args(["build", "--push", "-t", &app])
            .arg(&ctx),
    );
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    // FROM auto-pull and --push both use it.
    let (_, err) = ok(mybuild(&fresh)
        .args([
            "build",
            "--push",
            "--insecure-registry",
            &reg.addr,
            "-t",
            &app,
        ])
        .arg(&ctx));
    assert!(err.contains(&format!("pulling {base}")), "{err}");
    let pushed = ok(mybuild(&fresh).args(["digest", "--insecure-registry", &reg.addr, &app])).0;
    assert_eq!(pushed.trim(), image_id(&fresh, &app));
    // And --pull, which pulls a base that is already in the store.
    let (_, err) = ok(mybuild(&fresh)
        .args(["build", "--pull", "--insecure-registry", &reg.addr])
        .arg(&ctx));
    assert!(err.contains(&format!("pulling {base}")), "{err}");
    // Without it --pull cannot refresh the base: a warning, the stored one is used.
    let (_, err) = ok(mybuild(&fresh).args(["build", "--pull"]).arg(&ctx));
    assert!(
        err.contains("WARNING: pulling") && err.to_lowercase().contains("certificate"),
        "{err}"
    );
}

#[test]
fn build_progress_json_reports_pulled_mounted_and_pushed_blobs() {
    let Some((tmp, root)) = setup() else { return };
    let reg = Registry::start();
    let base = format!("{}/jbase:1", reg.addr);
    ok(mybuild(&root).args(["push", "busybox", &base]));
    let v: serde_json::Value =
        serde_json::from_str(&ok(mybuild(&root).args(["inspect", "busybox"])).0).unwrap();
    let layer = v["Manifest"]["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let base_config = v["Manifest"]["config"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {base}\nLABEL json=yes\n"),
    )
    .unwrap();
    let fresh = tmp.path().join("fresh");
    let app = format!("{}/japp:1", reg.addr);
    let (_, err) = ok(mybuild(&fresh)
        .args(["build", "--progress=json", "--push", "-t", &app])
        .arg(&ctx));
    let events: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}\n{err}")))
        .collect();
    let blobs = |action: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["event"] == "blob" && e["action"] == action)
            .map(|e| e["digest"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "pull" && e["ref"] == base.as_str()),
        "{err}"
    );
    let mut pulled = blobs("pulled");
    pulled.sort();
    let mut want = vec![layer.clone(), base_config.clone()];
    want.sort();
    assert_eq!(pulled, want, "{err}");
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "push" && e["ref"] == app.as_str()),
        "{err}"
    );
    // The base layer is mounted from the repository it came from; the new config is uploaded.
    assert_eq!(blobs("mounted"), vec![layer], "{err}");
    let pushed = blobs("pushed");
    assert_eq!(pushed.len(), 1, "{err}");
    assert_ne!(pushed[0], base_config);
    assert!(events
        .iter()
        .filter(|e| e["event"] == "blob")
        .all(|e| e["size"].as_u64().is_some_and(|s| s > 0)));
}

/// Pushes `image` to `dest`; whether it warned that `dest` held the image's index.
fn push_warns_of_index(root: &Path, image: &str, dest: &str) -> bool {
    let (_, err) = ok(mybuild(root).args(["push", image, dest]));
    err.contains("holds the multi-platform index") && err.contains("--all-platforms")
}

#[test]
fn pulled_platform_of_an_index_pushes_byte_identical_and_remembers_the_index() {
    let Some((tmp, root)) = setup() else { return };
    let (one, two) = (Registry::start(), Registry::start());
    let (_amd, arm, index) = push_index(&root, tmp.path(), &one.addr);
    let src = format!("{}/multi:both", one.addr);
    let other = tmp.path().join("other");
    ok(mybuild(&other).args(["pull", "--platform", "linux/arm64", &src]));
    let v: serde_json::Value =
        serde_json::from_str(&ok(mybuild(&other).args(["inspect", &src])).0).unwrap();
    assert_eq!(v["Id"], arm.as_str());
    assert_eq!(v["UpstreamIndex"], index.as_str(), "{v}");
    // Pushed elsewhere, the platform manifest keeps its bytes (so its digest).
    let dst = format!("{}/moved:1", two.addr);
    let (out, _) = ok(mybuild(&other).args(["push", &src, &dst]));
    assert_eq!(out.trim(), arm);
    assert_eq!(remote_digest(&other, &dst), arm);
    let client = registry_client::Client::new(registry_client::ClientOptions::from_env());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let theirs = rt
        .block_on(client.get_manifest(&registry_client::Reference::parse(&src).unwrap()))
        .unwrap();
    assert!(theirs.is_index());
    let upstream = rt
        .block_on(client.get_manifest(
            &registry_client::Reference::parse(&format!("{}/multi@{arm}", one.addr)).unwrap(),
        ))
        .unwrap();
    let pushed = rt
        .block_on(client.get_manifest(&registry_client::Reference::parse(&dst).unwrap()))
        .unwrap();
    assert_eq!(pushed.bytes, upstream.bytes);
    assert!(
        !push_warns_of_index(&other, &src, &dst),
        "another tag: no warning"
    );
    // Pushed back over the index it came from: a warning, then the tag is replaced.
    assert!(push_warns_of_index(&other, &src, &src));
    assert_eq!(remote_digest(&other, &src), arm);
    // A plain image has no upstream index.
    let v: serde_json::Value =
        serde_json::from_str(&ok(mybuild(&root).args(["inspect", "busybox"])).0).unwrap();
    assert!(v["UpstreamIndex"].is_null(), "{v}");
}

/// Bytes of the big layer a stalled transfer lets through before it holds.
const STALL_AFTER: usize = 8 << 20;

/// Builds `layers:1` in `root`: busybox, a 24 MB incompressible layer and a small
/// one. Returns the big layer's digest and every blob digest of the image.
fn layered_image(tmp: &Path, root: &Path) -> (String, Vec<String>) {
    let ctx = tmp.join("layers-ctx");
    std::fs::create_dir_all(&ctx).expect("ctx");
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nCOPY noise.bin /noise.bin\nCOPY small.txt /small.txt\n",
    )
    .expect("Dockerfile");
    std::fs::write(ctx.join("small.txt"), "small\n").expect("small");
    let mut f = std::fs::File::create(ctx.join("noise.bin")).expect("noise");
    std::io::copy(&mut Noise(0x2545f4914f6cdd1d, 24_000_000), &mut f).expect("noise");
    ok(mybuild(root).args(["build", "-t", "layers:1"]).arg(&ctx));
    common::store_compressed(tmp, root, "layers:1");
    let v: serde_json::Value =
        serde_json::from_str(&ok(mybuild(root).args(["inspect", "layers:1"])).0).expect("json");
    let layers = v["Manifest"]["layers"].as_array().expect("layers").clone();
    assert_eq!(layers.len(), 3, "{v}");
    let big = layers
        .iter()
        .max_by_key(|l| l["size"].as_u64().expect("size"))
        .expect("a layer");
    assert!(big["size"].as_u64().expect("size") > 2 * STALL_AFTER as u64);
    let mut blobs: Vec<String> = layers
        .iter()
        .map(|l| l["digest"].as_str().expect("digest").to_string())
        .collect();
    blobs.push(
        v["Manifest"]["config"]["digest"]
            .as_str()
            .expect("config")
            .to_string(),
    );
    (big["digest"].as_str().expect("digest").to_string(), blobs)
}

/// Files in a store directory (`ingest`, `blobs/sha256`) with their sizes.
fn files_in(root: &Path, dir: &str) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = std::fs::read_dir(root.join(dir))
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                    (e.file_name().to_string_lossy().into_owned(), len)
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Waits (polling the file system, a minute at most) until `cond` holds.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Starts `cmd` with stderr captured; the proxy must stall it on the big blob.
/// Returns once the stall holds, the writer has put part of the blob on disk
/// and, when pulling, every other blob is committed: the process is mid-blob.
fn start_and_stall(
    cmd: &mut Command,
    proxy: &FaultProxy,
    store: &Path,
    others: &[String],
    pulling: bool,
) -> Held {
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    // Whatever it prints must not fill the pipe while it is held.
    let mut err = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        let _ = tx.send(s);
    });
    proxy.wait_stalled();
    if pulling {
        // Checked together: once the others are committed, a large ingest file
        // can only be the big blob's (another layer's would have been renamed away).
        wait_until(
            "the other blobs committed and part of the big one in ingest/",
            || {
                let have = files_in(store, "blobs/sha256");
                others
                    .iter()
                    .all(|d| have.iter().any(|(n, _)| d.ends_with(n.as_str())))
                    && files_in(store, "ingest")
                        .iter()
                        .any(|(_, len)| *len >= 1 << 20)
            },
        );
    }
    Held { child, stderr: rx }
}

/// A mybuild process held mid-transfer, and its standard error once it ends.
struct Held {
    child: std::process::Child,
    stderr: std::sync::mpsc::Receiver<String>,
}

/// Sends `sig` and waits for the process; returns its status and stderr.
fn signal_and_wait(mut held: Held, sig: i32) -> (std::process::ExitStatus, String) {
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(held.child.id() as i32, sig) };
    let status = held.child.wait().expect("wait");
    (status, held.stderr.recv().unwrap_or_default())
}

fn fsck_ok(root: &Path, tags: usize) {
    let (out, _) = ok(mybuild(root).arg("fsck"));
    assert!(out.contains(&format!("and {tags} tags: ok")), "{out}");
}

/// The pulled layers:1 is tagged in `store` with the registry's manifest digest.
fn assert_pulled(store: &Path, image: &str, remote: &str) {
    assert_eq!(image_id(store, image), remote);
    fsck_ok(store, 1);
}

/// A pull into a fresh store `other`, held by the proxy mid-way through the big layer
/// (every other blob already committed).
struct StalledPull {
    _reg: Registry,
    proxy: FaultProxy,
    image: String,
    remote: String,
    big: String,
    other: PathBuf,
    child: Held,
}

fn stalled_pull(tmp: &Path, root: &Path) -> StalledPull {
    let (big, blobs) = layered_image(tmp, root);
    let reg = Registry::start();
    let proxy = FaultProxy::start(&reg.addr);
    let image = format!("{}/layers:1", proxy.addr);
    ok(mybuild(root).args(["push", "layers:1", &image]));
    let remote = remote_digest(root, &image);
    proxy.add(Fault::new(
        "GET",
        &big[7..],
        FaultKind::Stall { after: STALL_AFTER },
        1,
    ));
    let other = tmp.join("other");
    let others: Vec<String> = blobs.iter().filter(|d| **d != big).cloned().collect();
    let child = start_and_stall(
        mybuild(&other).args(["pull", "--progress=plain", &image]),
        &proxy,
        &other,
        &others,
        true,
    );
    StalledPull {
        _reg: reg,
        proxy,
        image,
        remote,
        big,
        other,
        child,
    }
}

#[test]
fn a_pull_killed_mid_blob_leaves_the_store_consistent_and_prune_clears_the_ingest() {
    use std::os::unix::process::ExitStatusExt;
    let Some((tmp, root)) = setup() else { return };
    if !testdata::require_root() {
        return;
    }
    let StalledPull {
        _reg,
        proxy: _proxy,
        image,
        remote,
        big,
        other,
        child,
    } = stalled_pull(tmp.path(), &root);
    let (status, err) = signal_and_wait(child, libc::SIGKILL);
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{err}");

    // No tag, every visible blob whole, the half blob only in ingest/.
    assert!(!ok(mybuild(&other).arg("images")).0.contains("layers"));
    fsck_ok(&other, 0);
    let visible = files_in(&other, "blobs/sha256");
    assert!(
        visible.iter().all(|(n, _)| !big.ends_with(n.as_str())),
        "{visible:?}"
    );
    let ingest = files_in(&other, "ingest");
    assert_eq!(ingest.len(), 1, "{ingest:?}");
    assert!(ingest[0].1 >= 1 << 20, "{ingest:?}");

    // The dead writer's file is unlocked, so prune takes it (and the untagged blobs).
    let (pruned, _) = ok(mybuild(&other).arg("prune"));
    assert!(
        pruned.contains("Deleted 3 blobs and 1 stale ingest files"),
        "{pruned}"
    );
    assert!(files_in(&other, "ingest").is_empty());

    // Nothing left blocks the next run, which completes and verifies.
    let (name, _) = ok(mybuild(&other).args(["pull", "--progress=plain", &image]));
    assert_eq!(name.trim(), image);
    assert_pulled(&other, &image, &remote);
    assert!(files_in(&other, "ingest").is_empty());
}

#[test]
fn ctrl_c_during_a_pull_stops_it_promptly_and_removes_the_partial_blob() {
    let Some((tmp, root)) = setup() else { return };
    if !testdata::require_root() {
        return;
    }
    let StalledPull {
        _reg,
        proxy,
        image,
        remote,
        big,
        other,
        child,
    } = stalled_pull(tmp.path(), &root);
    // The transfer is held by the proxy: only the interrupt can end the process
    // before the client's two-minute read timeout.
    let (status, err) = signal_and_wait(child, libc::SIGINT);
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(
        err.contains(&format!(
            "error: pull of {image} interrupted: nothing was tagged"
        )),
        "{err}"
    );
    // The clean path removed its own partial file: nothing for prune to find.
    assert!(files_in(&other, "ingest").is_empty());
    assert!(!ok(mybuild(&other).arg("images")).0.contains("layers"));
    fsck_ok(&other, 0);
    let visible = files_in(&other, "blobs/sha256");
    assert!(
        visible.iter().all(|(n, _)| !big.ends_with(n.as_str())),
        "{visible:?}"
    );
    // The blobs that finished are kept, so the next pull fetches only the big one.
    proxy.clear_log();
    ok(mybuild(&other).args(["pull", &image]));
    let gets = blob_requests(&proxy, &["GET"]);
    assert_eq!(gets.len(), 1, "{gets:?}");
    assert!(gets[0].contains(&big), "{gets:?}");
    assert_pulled(&other, &image, &remote);
}

/// Every file under the store with its size and modification time.
fn store_state(root: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut out: Vec<_> = walkdir::WalkDir::new(root)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let m = e.metadata().expect("metadata");
            (
                e.path().strip_prefix(root).expect("under").to_path_buf(),
                m.len(),
                m.modified().expect("mtime"),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_push_killed_mid_blob_leaves_no_manifest_and_the_next_push_completes() {
    use std::os::unix::process::ExitStatusExt;
    let Some((tmp, root)) = setup() else { return };
    if !testdata::require_root() {
        return;
    }
    let (big, _) = layered_image(tmp.path(), &root);
    let local = image_id(&root, "layers:1");
    let reg = Registry::start();
    let proxy = FaultProxy::start(&reg.addr);
    let dest = format!("{}/pushed:1", proxy.addr);
    // The big blob is one PUT (below the chunking threshold): hold its body.
    proxy.add(Fault::new(
        "PUT",
        &big[7..],
        FaultKind::Stall { after: STALL_AFTER },
        1,
    ));
    ok(mybuild(&root).arg("fsck"));
    let before = store_state(&root);
    let child = start_and_stall(
        mybuild(&root).args(["push", "--progress=plain", "layers:1", &dest]),
        &proxy,
        &root,
        &[],
        false,
    );
    let (status, err) = signal_and_wait(child, libc::SIGKILL);
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{err}");
    assert!(
        !proxy
            .requests()
            .iter()
            .any(|r| r.starts_with("PUT ") && r.contains("/manifests/")),
        "{:?}",
        proxy.requests()
    );
    let err = fails(mybuild(&root).args(["digest", &dest]));
    assert!(
        err.contains("pushed:1") && err.contains("not found"),
        "{err}"
    );
    assert_eq!(store_state(&root), before);
    fsck_ok(&root, 2);

    // Ctrl-C the same way: a prompt exit saying so, and still no manifest.
    proxy.add(Fault::new(
        "PUT",
        &big[7..],
        FaultKind::Stall { after: STALL_AFTER },
        1,
    ));
    let child = start_and_stall(
        mybuild(&root).args(["push", "--progress=plain", "layers:1", &dest]),
        &proxy,
        &root,
        &[],
        false,
    );
    let (status, err) = signal_and_wait(child, libc::SIGINT);
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(
        err.contains(&format!("error: push of {dest} interrupted")),
        "{err}"
    );
    assert!(fails(mybuild(&root).args(["digest", &dest])).contains("not found"));
    assert_eq!(store_state(&root), before);

    let (digest, _) = ok(mybuild(&root).args(["push", "--progress=plain", "layers:1", &dest]));
    assert_eq!(digest.trim(), local);
    assert_eq!(remote_digest(&root, &dest), local);
    let fresh = tmp.path().join("fresh");
    ok(mybuild(&fresh).args(["pull", &dest]));
    assert_pulled(&fresh, &dest, &local);
    if testdata::require_tool("skopeo") {
        let out = ok(Command::new("skopeo").args([
            "inspect",
            "--tls-verify=false",
            "--raw",
            &format!("docker://{dest}"),
        ]));
        let manifest: serde_json::Value = serde_json::from_str(&out.0).expect("manifest");
        assert_eq!(manifest["layers"].as_array().map(Vec::len), Some(3));
    }
}

/// The upload sessions the registry holds for `repo`: `_uploads/<uuid>`
/// directories with the session's `startedat` or `data` (`None` when no upload
/// was ever started there). distribution 2.8 answers a cancel with 204 and
/// removes both, but its handler then writes a `hashstates/` stub back into
/// the directory; the session itself is gone (its URL answers 404).
fn upload_sessions(reg: &Registry, repo: &str) -> Option<Vec<String>> {
    let dir = reg
        .data_dir()
        .join("docker/registry/v2/repositories")
        .join(repo)
        .join("_uploads");
    let rd = std::fs::read_dir(dir).ok()?;
    let mut out: Vec<String> = rd
        .flatten()
        .filter(|e| e.path().join("startedat").exists() || e.path().join("data").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    Some(out)
}

/// Upload URLs (`/v2/.../blobs/uploads/<uuid>?_state=...`) the proxy saw with
/// `method`, by session uuid.
fn session_urls(proxy: &FaultProxy, method: &str) -> std::collections::BTreeMap<String, String> {
    proxy
        .requests()
        .iter()
        .filter_map(|r| r.strip_prefix(&format!("{method} ")))
        .filter_map(|path| {
            let (_, rest) = path.split_once("/blobs/uploads/")?;
            let id = rest.split('?').next()?;
            (!id.is_empty()).then(|| (id.to_string(), path.to_string()))
        })
        .collect()
}

/// The status of a plain `GET path` sent to `addr` (an upload's status: 404
/// once the session is gone).
fn get_status(addr: &str, path: &str) -> u16 {
    use std::io::Read;
    let mut c = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut head = String::new();
    c.read_to_string(&mut head).expect("read");
    head.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status: {head}"))
}

/// The config and layer digests of a stored image.
fn blob_digests(root: &Path, image: &str) -> Vec<String> {
    let v: serde_json::Value =
        serde_json::from_str(&ok(mybuild(root).args(["inspect", image])).0).expect("json");
    let m = &v["Manifest"];
    std::iter::once(&m["config"])
        .chain(m["layers"].as_array().expect("layers"))
        .map(|d| d["digest"].as_str().expect("digest").to_string())
        .collect()
}

/// busybox's one layer (~1 MB), the blob the proxy holds mid-upload.
fn busybox_layer(root: &Path) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&ok(mybuild(root).args(["inspect", "busybox"])).0).expect("json");
    let layer = &v["Manifest"]["layers"][0];
    assert!(layer["size"].as_u64().expect("size") > 512 << 10, "{v}");
    layer["digest"].as_str().expect("digest").to_string()
}

/// Starts `cmd`, which must upload busybox's layer through `proxy` to `repo` on
/// `reg`, holds it mid-layer and interrupts it with SIGINT. Asserts the session
/// was open while held and is gone after the exit; returns the exit code and stderr.
fn interrupt_mid_upload(
    cmd: &mut Command,
    root: &Path,
    reg: &Registry,
    proxy: &FaultProxy,
    repo: &str,
) -> (Option<i32>, String) {
    let layer = busybox_layer(root);
    // Held before the registry has any of the body: distribution 2.8 refuses
    // any request on a session whose `_state` counts fewer bytes than it holds
    // (and nothing can refresh that state), so a session that received part of
    // a PUT cannot be cancelled there, only purged.
    proxy.add(Fault::new(
        "PUT",
        &layer[7..],
        FaultKind::Stall { after: 0 },
        1,
    ));
    let child = start_and_stall(cmd, proxy, root, &[], false);
    let puts = session_urls(proxy, "PUT");
    let held: Vec<(&String, &String)> = puts
        .iter()
        .filter(|(_, url)| url.contains(&layer[7..]))
        .collect();
    assert_eq!(held.len(), 1, "{:?}", proxy.requests());
    let (id, url) = held[0];
    let open = upload_sessions(reg, repo).unwrap_or_default();
    assert!(open.contains(id), "{open:?} lacks {id}");
    let (status, err) = signal_and_wait(child, libc::SIGINT);
    // The held session is gone. Another blob's PUT that Ctrl-C cut mid-body may
    // leave one behind: 2.8 refuses to cancel a session holding part of a blob.
    let left = upload_sessions(reg, repo).unwrap_or_default();
    assert!(
        !left.contains(id),
        "{id} still open; requests: {:?}",
        proxy.requests()
    );
    assert!(
        session_urls(proxy, "DELETE").contains_key(id),
        "{:?}",
        proxy.requests()
    );
    // Asked only now: a status request whose `_state` offset lags the bytes
    // received makes distribution cancel the session itself.
    let status_url = url.split("&digest=").next().expect("url");
    assert_eq!(get_status(&reg.addr, status_url), 404);
    (status.code(), err)
}

#[test]
fn ctrl_c_during_a_push_cancels_the_open_upload_session() {
    let Some((_tmp, root)) = setup() else { return };
    let reg = Registry::start();
    let proxy = FaultProxy::start(&reg.addr);
    let dest = format!("{}/held/bb:1", proxy.addr);
    let (code, err) = interrupt_mid_upload(
        mybuild(&root).args(["push", "--progress=plain", "busybox", &dest]),
        &root,
        &reg,
        &proxy,
        "held/bb",
    );
    assert_eq!(code, Some(130), "{err}");
    assert!(
        err.contains(&format!("error: push of {dest} interrupted")),
        "{err}"
    );
    assert!(fails(mybuild(&root).args(["digest", &dest])).contains("not found"));
}

#[test]
fn ctrl_c_during_a_copy_exits_130_writes_no_manifest_and_cancels_the_upload() {
    let Some((_tmp, root)) = setup() else { return };
    let (one, two) = (Registry::start(), Registry::start());
    let src = format!("{}/src/bb:1", one.addr);
    let digest = ok(mybuild(&root).args(["push", "busybox", &src])).0;
    let proxy = FaultProxy::start(&two.addr);
    let dst = format!("{}/dst/bb:1", proxy.addr);
    let (code, err) = interrupt_mid_upload(
        mybuild(&root).args(["copy", &src, &dst]),
        &root,
        &two,
        &proxy,
        "dst/bb",
    );
    assert_eq!(code, Some(130), "{err}");
    let said: Vec<&str> = err.lines().filter(|l| l.contains("interrupted")).collect();
    assert_eq!(
        said,
        [format!(
            "error: copy of {src} interrupted: no manifest was written to {dst}"
        )],
        "{err}"
    );
    assert!(!err.contains(&format!("copied {src}")), "{err}");
    assert!(
        !proxy
            .requests()
            .iter()
            .any(|r| r.starts_with("PUT ") && r.contains("/manifests/")),
        "{:?}",
        proxy.requests()
    );
    assert!(fails(mybuild(&root).args(["digest", &dst])).contains("not found"));
    // Nothing left behind stops the next copy.
    assert_eq!(ok(mybuild(&root).args(["copy", &src, &dst])).0, digest);
    assert_eq!(remote_digest(&root, &dst), digest.trim());
}

#[test]
fn a_push_whose_uploads_fail_for_good_cancels_every_session_it_opened() {
    let Some((_tmp, root)) = setup() else { return };
    let reg = Registry::start();
    let proxy = FaultProxy::start(&reg.addr);
    let dest = format!("{}/failing/bb:1", proxy.addr);
    // Every blob PUT is refused, beyond the retry budget and the one fresh
    // session per blob. `Retry-After: 0` keeps the retries instant.
    proxy.add(Fault::new(
        "PUT",
        "/blobs/uploads/",
        FaultKind::TooManyRequests { retry_after: 0 },
        usize::MAX,
    ));
    let err = fails(mybuild(&root).args(["push", "--progress=plain", "busybox", &dest]));
    // The upload's own error, not the cancel's.
    assert!(
        err.contains("pushing blob sha256:") && err.contains("429"),
        "{err}"
    );
    let opened: Vec<String> = session_urls(&proxy, "PUT").into_keys().collect();
    assert!(opened.len() >= 2, "{:?}", proxy.requests());
    // Every session used is cancelled. A session whose POST was still in flight
    // when the push failed is cancelled too, unused: the registry's own list
    // below is the check that none is missed.
    let cancelled = session_urls(&proxy, "DELETE");
    for id in &opened {
        assert!(cancelled.contains_key(id), "{id}: {:?}", proxy.requests());
    }
    // A blob's failed session is cancelled before its fresh one is used.
    let log = proxy.requests();
    let at = |method: &str, id: &str| {
        log.iter()
            .position(|r| r.starts_with(method) && r.contains(id))
            .unwrap_or_else(|| panic!("no {method} of {id}: {log:?}"))
    };
    let mut retried = 0;
    for digest in blob_digests(&root, "busybox") {
        let mut sessions: Vec<&String> = opened
            .iter()
            .filter(|id| {
                log.iter()
                    .any(|r| r.contains(id.as_str()) && r.contains(&digest[7..]))
            })
            .collect();
        sessions.sort_by_key(|id| at("PUT ", id));
        if let [first, second] = sessions[..] {
            assert!(at("DELETE ", first) < at("PUT ", second), "{log:?}");
            retried += 1;
        }
    }
    assert!(retried >= 1, "{log:?}");
    // Sessions were opened here, and none is left.
    assert_eq!(upload_sessions(&reg, "failing/bb"), Some(vec![]));
    assert!(fails(mybuild(&root).args(["digest", &dest])).contains("not found"));
}

#[test]
fn a_build_killed_while_pulling_its_base_reruns_cleanly() {
    use std::os::unix::process::ExitStatusExt;
    let Some((tmp, root)) = setup() else { return };
    if !testdata::require_root() {
        return;
    }
    let (big, blobs) = layered_image(tmp.path(), &root);
    let reg = Registry::start();
    let proxy = FaultProxy::start(&reg.addr);
    let base = format!("{}/layers:1", proxy.addr);
    ok(mybuild(&root).args(["push", "layers:1", &base]));
    proxy.add(Fault::new(
        "GET",
        &big[7..],
        FaultKind::Stall { after: STALL_AFTER },
        1,
    ));
    let ctx = tmp.path().join("app-ctx");
    std::fs::create_dir_all(&ctx).expect("ctx");
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {base}\nCOPY app.txt /app.txt\n"),
    )
    .expect("Dockerfile");
    std::fs::write(ctx.join("app.txt"), "app\n").expect("app");
    let fresh = tmp.path().join("fresh");
    let others: Vec<String> = blobs.iter().filter(|d| **d != big).cloned().collect();
    let child = start_and_stall(
        mybuild(&fresh)
            .args(["build", "--progress=plain", "-t", "app:1"])
            .arg(&ctx),
        &proxy,
        &fresh,
        &others,
        true,
    );
    let (status, err) = signal_and_wait(child, libc::SIGKILL);
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{err}");
    fsck_ok(&fresh, 0);
    assert!(!ok(mybuild(&fresh).arg("images")).0.contains("layers"));

    // No prune in between: the dead build's leftovers must not get in the way.
    let (_, err) = ok(mybuild(&fresh)
        .args(["build", "--progress=plain", "-t", "app:1"])
        .arg(&ctx));
    assert!(err.contains(&format!("pulling {base}")), "{err}");
    fsck_ok(&fresh, 2);
    let v: serde_json::Value =
        serde_json::from_str(&ok(mybuild(&fresh).args(["inspect", "app:1"])).0).expect("json");
    assert_eq!(v["Manifest"]["layers"].as_array().map(Vec::len), Some(4));
    assert_eq!(
        v["Manifest"]["layers"][1]["digest"].as_str(),
        Some(big.as_str())
    );
    let (pruned, _) = ok(mybuild(&fresh).arg("prune"));
    assert!(pruned.contains("and 1 stale ingest files"), "{pruned}");
    assert!(files_in(&fresh, "ingest").is_empty());
}

#[test]
fn pull_and_push_progress_json_is_one_object_per_line_and_quiet_is_silent() {
    let Some((tmp, root)) = setup() else { return };
    let reg = Registry::start();
    let dest = format!("{}/prog:1", reg.addr);
    let v: serde_json::Value =
        serde_json::from_str(&ok(mybuild(&root).args(["inspect", "busybox"])).0).unwrap();
    let mut want: Vec<String> = std::iter::once(&v["Manifest"]["config"])
        .chain(v["Manifest"]["layers"].as_array().unwrap())
        .map(|d| d["digest"].as_str().unwrap().to_string())
        .collect();
    want.sort();
    let events = |err: &str| -> Vec<serde_json::Value> {
        err.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}\n{err}")))
            .collect()
    };
    let blobs = |events: &[serde_json::Value], action: &str| -> Vec<String> {
        let mut d: Vec<String> = events
            .iter()
            .filter(|e| e["event"] == "blob" && e["action"] == action)
            .map(|e| e["digest"].as_str().unwrap().to_string())
            .collect();
        d.sort();
        d
    };

    let (out, err) = ok(mybuild(&root).args(["push", "--progress=json", "busybox", &dest]));
    let pushed = events(&err);
    assert_eq!(blobs(&pushed, "pushed"), want, "{err}");
    let last = pushed.last().unwrap();
    assert_eq!(last["event"], "pushed", "{err}");
    assert_eq!(last["digest"].as_str(), Some(out.trim()));

    let fresh = tmp.path().join("fresh");
    let (name, err) = ok(mybuild(&fresh).args(["pull", "--progress=json", &dest]));
    assert_eq!(name.trim(), dest);
    let pulled = events(&err);
    assert_eq!(pulled[0]["event"], "pull", "{err}");
    assert_eq!(pulled[0]["ref"], dest.as_str(), "{err}");
    assert_eq!(blobs(&pulled, "pulled"), want, "{err}");
    let last = pulled.last().unwrap();
    assert_eq!(last["event"], "pulled", "{err}");
    assert_eq!(last["digest"].as_str(), Some(out.trim()));
    assert_eq!(image_id(&fresh, &dest), out.trim());

    // Again: every blob exists, said as such.
    let (_, err) = ok(mybuild(&fresh).args(["pull", "--progress=json", &dest]));
    assert_eq!(blobs(&events(&err), "exists"), want, "{err}");
    // Quiet prints the name and nothing else; -q is the same.
    for q in ["--progress=quiet", "-q"] {
        let (name, err) = ok(mybuild(&fresh).args(["pull", q, &dest]));
        assert_eq!((name.trim(), err.as_str()), (dest.as_str(), ""));
        let (digest, err) = ok(mybuild(&root).args(["push", q, "busybox", &dest]));
        assert_eq!((digest.trim(), err.as_str()), (out.trim(), ""));
    }
    let err = fails(mybuild(&fresh).args(["pull", "--progress=tty", &dest]));
    assert!(
        err.contains("--progress=tty: standard error is not a terminal"),
        "{err}"
    );
}

/// Bytes as an upload source, for blobs a test makes by hand.
struct HandMade(Vec<u8>);

impl registry_client::BlobSource for HandMade {
    fn open(
        &self,
        offset: u64,
    ) -> futures_util::future::BoxFuture<
        '_,
        std::io::Result<Box<dyn tokio::io::AsyncRead + Send + Unpin>>,
    > {
        let rest = self.0[offset as usize..].to_vec();
        Box::pin(async move {
            Ok(Box::new(std::io::Cursor::new(rest))
                as Box<dyn tokio::io::AsyncRead + Send + Unpin>)
        })
    }
}

#[test]
fn a_base_whose_layer_does_not_match_its_config_is_refused_and_never_unpacked() {
    let Some((tmp, root)) = setup() else { return };
    if !testdata::require_root() {
        return;
    }
    let reg = Registry::start();
    ok(mybuild(&root).args(["push", "busybox", &format!("{}/liar:src", reg.addr)]));
    // The same layer under a config that claims other uncompressed content.
    let v: serde_json::Value =
        serde_json::from_str(&ok(mybuild(&root).args(["inspect", "busybox"])).0).unwrap();
    let wrong = format!("sha256:{}", "ab".repeat(32));
    let mut config = v["Config"].clone();
    config["rootfs"]["diff_ids"][0] = wrong.clone().into();
    let config = serde_json::to_vec(&config).unwrap();
    let config_desc = registry_client::Descriptor {
        media_type: "application/vnd.oci.image.config.v1+json".into(),
        digest: layer_cache::Digest::of(&config),
        size: config.len() as u64,
        platform: None,
        urls: Vec::new(),
    };
    let mut manifest = v["Manifest"].clone();
    manifest["config"]["digest"] = config_desc.digest.to_string().into();
    manifest["config"]["size"] = config_desc.size.into();
    let liar = format!("{}/liar:1", reg.addr);
    let r = registry_client::Reference::parse(&liar).unwrap();
    let client = registry_client::Client::new(registry_client::ClientOptions::from_env());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(client.push_blob(&r, &config_desc, &HandMade(config), &[]))
        .unwrap();
    let m = registry_client::Manifest::new(serde_json::to_vec(&manifest).unwrap(), None).unwrap();
    rt.block_on(client.put_manifest(&r, &m)).unwrap();

    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), format!("FROM {liar}\nRUN true\n")).unwrap();
    let fresh = tmp.path().join("fresh");
    let err = fails(mybuild(&fresh).args(["build", "-t", "x:1"]).arg(&ctx));
    assert!(
        err.contains(&format!("but the config says {wrong}")),
        "{err}"
    );
    let snapshots = fresh.join("snapshots-v1");
    assert!(!snapshots.join(&wrong["sha256:".len()..]).exists());
    let left: Vec<_> = std::fs::read_dir(snapshots.join("tmp"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name())
                .filter(|n| !n.to_string_lossy().ends_with(".lock"))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    // The broken image is not tagged: a later build meets the same error again.
    let (images, _) = ok(mybuild(&fresh).args(["images", "-q"]));
    assert_eq!(images.trim(), "", "{images}");
    let err = fails(mybuild(&fresh).args(["build", "-t", "x:1"]).arg(&ctx));
    assert!(err.contains("but the config says"), "{err}");
}
