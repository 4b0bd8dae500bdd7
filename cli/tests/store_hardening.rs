//! Hostile or huge input to the store and the registry client stays bounded, and
//! concurrent store commands do not mistake each other's work for damage.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{mybuild, ok};
use tempfile::TempDir;
use testdata::registry::{Fault, FaultKind, FaultProxy, Registry, RegistryOptions};

/// A store holding `busybox` (so fsck has a tag to walk); `None` when skipped.
fn busybox_store() -> Option<(TempDir, PathBuf)> {
    if !testdata::require_tool("busybox") {
        return None;
    }
    let tmp = TempDir::new().expect("tmp");
    let root = common::store_with_busybox(tmp.path());
    Some((tmp, root))
}

/// Unreferenced blobs for `prune` to sweep.
fn add_garbage(root: &Path, round: usize, n: usize) {
    let store = layer_cache::Store::open(root).expect("store");
    for i in 0..n {
        store
            .write_blob(format!("garbage {round} {i}").as_bytes())
            .expect("blob");
    }
}

#[test]
fn fsck_during_prune_reports_no_vanished_garbage() {
    let Some((_tmp, root)) = busybox_store() else {
        return;
    };
    for round in 0..12 {
        add_garbage(&root, round, 400);
        let prune = mybuild(&root)
            .arg("prune")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("prune");
        let fsck = mybuild(&root).arg("fsck").output().expect("fsck");
        let pruned = prune.wait_with_output().expect("prune");
        assert!(pruned.status.success(), "prune failed: {pruned:?}");
        assert!(
            fsck.status.success(),
            "round {round}: fsck during prune failed:\n{}\n{}",
            String::from_utf8_lossy(&fsck.stdout),
            String::from_utf8_lossy(&fsck.stderr)
        );
    }
    // Damage a tag needs is still found once prune is done.
    let (so, _) = ok(mybuild(&root).arg("fsck"));
    assert!(so.contains(": ok"), "{so}");
}

/// Runs `cmd` with `feed` writing its standard input from a thread and its output
/// in files: (success, peak RSS in MiB, stderr).
fn run_measured(
    cmd: &mut std::process::Command,
    dir: &Path,
    feed: impl FnOnce(&mut dyn Write) + Send + 'static,
) -> (bool, u64, String) {
    let err_path = dir.join("stderr.txt");
    // Reaped by wait4 below, which also gives its own peak RSS.
    #[allow(clippy::zombie_processes)]
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || feed(&mut stdin));
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; both pointers are valid for the call.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t, "wait4");
    writer.join().expect("writer");
    let success = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    // ru_maxrss is in KiB on Linux.
    (success, usage.ru_maxrss as u64 / 1024, stderr)
}

/// Writes a tar stream: `members` files of 1 MiB of zeros under `junk/`, then the
/// members of `image` (a saved image tar, end blocks included). Write errors end
/// it quietly: the reader may have stopped.
fn write_zero_members(out: &mut dyn Write, members: usize, image: &[u8]) {
    let zeros = vec![0u8; 1 << 20];
    for i in 0..members {
        let mut h = tar::Header::new_ustar();
        if h.set_path(format!("junk/{i:05}")).is_err() {
            return;
        }
        h.set_size(1 << 20);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        if out.write_all(h.as_bytes()).is_err() || out.write_all(&zeros).is_err() {
            return;
        }
    }
    let _ = out.write_all(image);
}

#[test]
fn load_memory_stays_flat_with_many_large_members() {
    let Some((tmp, root)) = busybox_store() else {
        return;
    };
    let image = tmp.path().join("busybox.tar");
    ok(mybuild(&root)
        .args(["save", "-o"])
        .arg(&image)
        .arg("busybox"));
    let image = std::fs::read(&image).expect("image tar");
    // Each member fits the old in-memory limit (1 MiB): before, all were held
    // at once (2,000 took about 2 GB); 300 keep the test quick and still show it.
    let members = 300;
    let fresh = tmp.path().join("fresh");
    let started = std::time::Instant::now();
    let (success, peak_mib, stderr) =
        run_measured(mybuild(&fresh).arg("load"), tmp.path(), move |w| {
            write_zero_members(w, members, &image)
        });
    eprintln!(
        "load of {members} x 1 MiB members: peak RSS {peak_mib} MiB, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(success, "load failed: {stderr}");
    assert!(peak_mib < 100, "load peaked at {peak_mib} MiB of RSS");
    let (so, _) = ok(mybuild(&fresh).arg("images"));
    assert!(so.contains("busybox"), "{so}");
}

#[test]
fn unpack_cap_from_the_environment_stops_a_large_base_layer() {
    if !testdata::require_root() {
        return;
    }
    let tmp = TempDir::new().expect("tmp");
    let root = tmp.path().join("store");
    // A base whose one layer holds an 8 MiB file (its gzip is a few KiB).
    let rootfs = tmp.path().join("big.tar");
    {
        let mut b = tar::Builder::new(std::fs::File::create(&rootfs).expect("tar"));
        let mut h = tar::Header::new_ustar();
        h.set_size(8 << 20);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_data(&mut h, "big", std::io::repeat(0).take(8 << 20))
            .expect("append");
        b.finish().expect("tar");
    }
    ok(mybuild(&root).arg("import").arg(&rootfs).arg("big"));
    let ctx = common::context(tmp.path(), "FROM scratch\nCOPY --from=big /big /big\n", &[]);
    let build = |cap: &str| {
        common::run(
            mybuild(&root)
                .env("MYBUILD_UNPACK_MAX_BYTES", cap)
                .args(["build", "-t", "out:1"])
                .arg(&ctx),
        )
    };
    let (success, so, se) = build("4MiB");
    assert!(!success, "the build should stop:\n{so}\n{se}");
    assert!(
        se.contains("\"big\"") && se.contains("more than 4194304 bytes"),
        "{se}"
    );
    assert!(se.contains("MYBUILD_UNPACK_MAX_BYTES"), "{se}");
    // With room for it, the same build passes.
    let (success, so, se) = build("16MiB");
    assert!(success, "{so}\n{se}");
}

/// A store with busybox for the registry tests; `None` when skipped.
fn registry_setup(tools: &[&str]) -> Option<(TempDir, PathBuf)> {
    if !tools.iter().all(|t| testdata::require_tool(t)) {
        return None;
    }
    busybox_store()
}

fn login(root: &Path, registry: &str, user: &str, password: &str) {
    let (success, out, err) = common::with_stdin(
        mybuild(root).args(["login", "-u", user, "--password-stdin", registry]),
        format!("{password}\n"),
    );
    assert!(success, "login failed: {out}{err}");
}

/// The requests a proxy saw that carried an Authorization header.
fn authorized(p: &FaultProxy) -> Vec<(String, Option<String>)> {
    p.authorizations()
        .into_iter()
        .filter(|(_, a)| a.is_some())
        .collect()
}

/// Two proxies in front of `reg`: the client talks to the first, whose upload
/// sessions are handed to the second, another port of the same registry.
fn upload_elsewhere(reg: &Registry) -> (FaultProxy, FaultProxy) {
    let front = FaultProxy::start(&reg.addr);
    let other = FaultProxy::start(&reg.addr);
    front.add(Fault::new(
        "POST",
        "/blobs/uploads/",
        FaultKind::RewriteLocation {
            to: other.addr.clone(),
        },
        100,
    ));
    (front, other)
}

#[test]
fn upload_location_on_another_port_gets_no_basic_credentials() {
    let Some((_tmp, root)) = registry_setup(&["docker-registry", "htpasswd"]) else {
        return;
    };
    let reg = Registry::start_with(&RegistryOptions {
        basic_auth: Some(("alice".into(), "pw-Basic-77".into())),
        ..Default::default()
    });
    let (front, other) = upload_elsewhere(&reg);
    login(&root, &front.addr, "alice", "pw-Basic-77");
    let dest = format!("{}/private:1", front.addr);
    let (success, so, se) = common::run(mybuild(&root).args(["push", "busybox", &dest]));
    let seen = other.authorizations();
    assert!(
        seen.iter().any(|(r, _)| r.contains("/blobs/uploads/")),
        "the upload never reached the other port: {seen:?}"
    );
    assert_eq!(
        authorized(&other),
        vec![],
        "credentials left their registry"
    );
    // The other port wants credentials it does not get: the push fails clearly.
    assert!(!success, "{so}\n{se}");
    assert!(se.contains("authentication required"), "{se}");
    // The registry itself still gets them.
    assert!(!authorized(&front).is_empty());
}

#[test]
fn upload_location_on_another_port_gets_only_the_realms_bearer_token() {
    let Some((_tmp, root)) = registry_setup(&["docker-registry", "openssl"]) else {
        return;
    };
    let issuer = testdata::registry::TokenIssuer::start("carol", "tok-pw-77", "refresh-abc");
    let reg = Registry::start_with(&RegistryOptions {
        token_auth: Some(issuer.config()),
        ..Default::default()
    });
    let (front, other) = upload_elsewhere(&reg);
    login(&root, &front.addr, "carol", "tok-pw-77");
    let dest = format!("{}/tok/a:1", front.addr);
    // The other port challenges for the same realm and service: the token the
    // realm issued for it goes along, and the push completes.
    ok(mybuild(&root).args(["push", "busybox", &dest]));
    let sent = authorized(&other);
    assert!(!sent.is_empty(), "{:?}", other.authorizations());
    for (req, auth) in &sent {
        let auth = auth.as_deref().unwrap_or_default();
        assert!(auth.starts_with("Bearer "), "{req}: {auth}");
    }
    // Each session's first request went without: the token follows a challenge.
    let first = other.authorizations().into_iter().next();
    assert!(matches!(first, Some((_, None))), "{first:?}");
}

#[test]
fn blob_redirect_to_another_port_gets_no_credentials() {
    let Some((_tmp, root)) = registry_setup(&["docker-registry", "htpasswd"]) else {
        return;
    };
    let reg = Registry::start_with(&RegistryOptions {
        basic_auth: Some(("alice".into(), "pw-Basic-77".into())),
        ..Default::default()
    });
    let front = FaultProxy::start(&reg.addr);
    let other = FaultProxy::start(&reg.addr);
    login(&root, &front.addr, "alice", "pw-Basic-77");
    let dest = format!("{}/private:1", front.addr);
    ok(mybuild(&root).args(["push", "busybox", &dest]));
    front.add(Fault::new(
        "GET",
        "/blobs/sha256:",
        FaultKind::Redirect {
            to: other.addr.clone(),
        },
        100,
    ));
    let fresh = root.with_file_name("fresh");
    let _ = common::run(
        mybuild(&fresh)
            .env("DOCKER_CONFIG", root.with_extension("docker"))
            .args(["pull", &dest]),
    );
    assert!(
        other
            .authorizations()
            .iter()
            .any(|(r, _)| r.contains("/blobs/sha256:")),
        "{:?}",
        other.authorizations()
    );
    assert_eq!(
        authorized(&other),
        vec![],
        "credentials followed a redirect"
    );
}

/// The digest of the image's (only) layer blob.
fn layer_digest(root: &Path, name: &str) -> String {
    let v = common::inspect(root, name);
    v["Manifest"]["layers"][0]["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("no layer in {v}"))
        .to_string()
}

/// A registry holding busybox behind a proxy that trickles its layer blob at
/// 1 byte/s for the first `times` GETs: (registry, proxy, reference, layer digest).
fn trickling_registry(root: &Path, times: usize) -> (Registry, FaultProxy, String, String) {
    let reg = Registry::start();
    let dest = format!("{}/slow:1", reg.addr);
    ok(mybuild(root).args(["push", "busybox", &dest]));
    let proxy = FaultProxy::start(&reg.addr);
    let layer = layer_digest(root, "busybox");
    proxy.add(Fault::new(
        "GET",
        &format!("/blobs/{layer}"),
        FaultKind::Trickle {
            after: 4096,
            every: std::time::Duration::from_secs(1),
        },
        times,
    ));
    let from_proxy = format!("{}/slow:1", proxy.addr);
    (reg, proxy, from_proxy, layer)
}

/// The second GET resumes where the trickle left off: 4096 bytes plus the few
/// trickled before the transfer was found idle.
fn assert_resumed_after_trickle(gets: &[String]) {
    let from: u64 = gets[1]
        .split("range=bytes=")
        .nth(1)
        .and_then(|r| r.trim_end_matches('-').parse().ok())
        .unwrap_or_else(|| panic!("no Range in {gets:?}"));
    assert!((4096..4096 + 10).contains(&from), "{gets:?}");
}

fn layer_gets(p: &FaultProxy, layer: &str) -> Vec<String> {
    p.requests()
        .into_iter()
        .filter(|r| r.starts_with("GET ") && r.contains(layer))
        .collect()
}

#[test]
fn idle_blob_transfer_is_resumed_once_then_fails_naming_the_blob() {
    let Some((tmp, root)) = registry_setup(&["docker-registry"]) else {
        return;
    };
    let (_reg, proxy, from_proxy, layer) = trickling_registry(&root, 2);
    let started = std::time::Instant::now();
    let (success, so, se) = common::run(
        mybuild(&tmp.path().join("fresh"))
            .env("MYBUILD_IDLE_TIMEOUT", "2s")
            .args(["pull", &from_proxy]),
    );
    let took = started.elapsed();
    assert!(!success, "{so}\n{se}");
    assert!(
        se.contains(&format!("blob {layer}")) && se.contains("stalled") && se.contains("2s"),
        "{se}"
    );
    let gets = layer_gets(&proxy, &layer);
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_resumed_after_trickle(&gets);
    // Two idle windows of 2 s, not the 60 s default nor the whole trickle.
    assert!(took.as_secs() < 20, "{took:?}");
}

#[test]
fn idle_blob_transfer_resumes_with_range_and_completes() {
    let Some((tmp, root)) = registry_setup(&["docker-registry"]) else {
        return;
    };
    let (_reg, proxy, from_proxy, layer) = trickling_registry(&root, 1);
    let fresh = tmp.path().join("fresh");
    ok(mybuild(&fresh)
        .env("MYBUILD_IDLE_TIMEOUT", "2s")
        .args(["pull", &from_proxy]));
    let gets = layer_gets(&proxy, &layer);
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_resumed_after_trickle(&gets);
    let (so, _) = ok(mybuild(&fresh).arg("fsck"));
    assert!(so.contains(": ok"), "{so}");
}

#[test]
fn idle_blob_upload_is_retried_once_then_fails_naming_the_blob() {
    let Some((tmp, root)) = registry_setup(&["docker-registry"]) else {
        return;
    };
    // A 24 MiB incompressible layer: more than the socket buffers between the
    // client and a proxy that stops reading hold.
    let rootfs = tmp.path().join("noise.tar");
    {
        let mut data = vec![0u8; 24 << 20];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for chunk in data.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        let mut b = tar::Builder::new(std::fs::File::create(&rootfs).expect("tar"));
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_data(&mut h, "noise", &data[..]).expect("append");
        b.finish().expect("tar");
    }
    ok(mybuild(&root)
        .args(["import", "--compression", "uncompressed"])
        .arg(&rootfs)
        .arg("noise"));
    let layer = layer_digest(&root, "noise");
    let reg = Registry::start();
    let proxy = FaultProxy::start(&reg.addr);
    // The monolithic PUT names the digest in its query.
    proxy.add(Fault::new(
        "PUT",
        &layer[7..],
        FaultKind::Stall { after: 64 << 10 },
        2,
    ));
    let started = std::time::Instant::now();
    let (success, so, se) = common::run(mybuild(&root).env("MYBUILD_IDLE_TIMEOUT", "2s").args([
        "push",
        "--compression-format",
        "uncompressed",
        "noise",
        &format!("{}/noise:1", proxy.addr),
    ]));
    let took = started.elapsed();
    assert!(!success, "{so}\n{se}");
    assert!(
        se.contains(&format!("pushing blob {layer}"))
            && se.contains("stalled")
            && se.contains("2s"),
        "{se}"
    );
    let puts: Vec<String> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("PUT ") && r.contains(&layer[7..]))
        .collect();
    assert_eq!(puts.len(), 2, "{puts:?}");
    assert!(took.as_secs() < 30, "{took:?}");
}
