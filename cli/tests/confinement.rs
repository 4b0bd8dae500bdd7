//! RUN's confinement, proven from inside: a static probe (testdata/probe/probe.c) runs
//! in RUN and reports capabilities, seccomp, refused calls, read-only and masked
//! paths and open file descriptors; device nodes, networks, entitlements and image
//! symlinks are checked through real builds (root, real namespaces and overlayfs).

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use testdata::probe;

/// Docker's 14 default capabilities as /proc shows them.
const DOCKER_CAPS: &str = "00000000a80425fb";

/// A context holding the probe and `dockerfile`.
fn probe_context(tmp: &Path, name: &str, dockerfile: &str) -> PathBuf {
    let ctx = tmp.join(name);
    std::fs::create_dir_all(&ctx).expect("ctx");
    probe::build(&ctx).expect("cc -static builds the probe");
    std::fs::write(ctx.join("Dockerfile"), dockerfile).expect("Dockerfile");
    ctx
}

/// A store with busybox, when root, busybox, umoci, cc and slirp4netns are there.
fn setup_sandbox() -> Option<(tempfile::TempDir, PathBuf)> {
    let got = setup()?;
    (testdata::require_tool("cc") && testdata::require_tool("slirp4netns")).then_some(got)
}

/// The output of `#N` lines of a plain-progress build, prefixes removed.
fn step_output(stderr: &str) -> String {
    stderr
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(_, rest)| rest))
        .collect::<Vec<_>>()
        .join("\n")
}

fn build_plain(root: &Path, ctx: &Path, extra: &[&str]) -> (bool, String) {
    let mut cmd = mybuild(root);
    cmd.args(["build", "--progress=plain", "--no-cache", "-t", "probe:1"])
        .args(extra)
        .arg(ctx);
    let (ok, out, err) = run(&mut cmd);
    (ok, format!("{out}\n{}", step_output(&err)))
}

#[test]
fn run_gets_dockers_capabilities_seccomp_masks_and_no_inherited_fds() {
    let Some((tmp, root)) = setup_sandbox() else {
        return;
    };
    let ctx = probe_context(
        tmp.path(),
        "ctx",
        "FROM busybox\nCOPY probe /probe\nRUN /probe\nUSER 1000\nRUN /probe > /tmp/as-user\nRUN cat /tmp/as-user\n",
    );
    // A host file left open (not close-on-exec) in mybuild's parent.
    let secret = tmp.path().join("host-secret");
    std::fs::write(&secret, "host data").expect("secret");
    let leaked = std::fs::File::open(&secret).expect("open");
    let fd = leaked.as_raw_fd();
    // SAFETY: clears FD_CLOEXEC on our own open fd so the child inherits it.
    assert_eq!(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }, 0);
    let (ok, out) = build_plain(&root, &ctx, &[]);
    drop(leaked);
    assert!(ok, "{out}");
    let root_part = out.split("USER 1000").next().expect("root part");
    for (key, want) in [
        ("CapBnd", DOCKER_CAPS),
        ("CapEff", DOCKER_CAPS),
        ("CapPrm", DOCKER_CAPS),
        ("CapInh", "0000000000000000"),
        ("CapAmb", "0000000000000000"),
        ("Seccomp", "2"),
        ("NoNewPrivs", "0"),
        ("mount", "EPERM"),
        ("open_by_handle_at", "EPERM"),
        ("unshare_user", "EPERM"),
        ("unshare_net", "EPERM"),
        ("keyctl", "EPERM"),
        ("add_key", "EPERM"),
        ("bpf", "EPERM"),
        ("perf_event_open", "EPERM"),
        ("userfaultfd", "EPERM"),
        ("io_uring_setup", "EPERM"),
        ("write_core_pattern", "EROFS"),
        ("write_sys", "EROFS"),
        ("cgroup_entries", "0"),
        ("proc_keys_bytes", "0"),
        ("fds", "0,1,2"),
    ] {
        assert_eq!(
            probe::value(root_part, key).as_deref(),
            Some(want),
            "{key} as root:\n{out}"
        );
    }
    // A non-root USER keeps the bounding set but has no effective capability.
    let user_part = out.split("cat /tmp/as-user").nth(1).expect("user part");
    for (key, want) in [
        ("CapBnd", DOCKER_CAPS),
        ("CapEff", "0000000000000000"),
        ("CapPrm", "0000000000000000"),
        ("Seccomp", "2"),
        ("fds", "0,1,2"),
    ] {
        assert_eq!(
            probe::value(user_part, key).as_deref(),
            Some(want),
            "{key} as USER 1000:\n{out}"
        );
    }
}

#[test]
fn the_probe_sees_what_buildah_chroot_gives_with_dockers_capabilities() {
    let Some((tmp, root)) = setup_sandbox() else {
        return;
    };
    if !testdata::require_tool("buildah") {
        return;
    }
    let ctx = probe_context(
        tmp.path(),
        "ctx",
        "FROM scratch\nCOPY probe /probe\nRUN [\"/probe\"]\n",
    );
    let (ok, ours) = build_plain(&root, &ctx, &[]);
    assert!(ok, "{ours}");
    let store = tmp.path().join("buildah");
    // containers.conf leaves MKNOD, NET_RAW and AUDIT_WRITE out of Docker's default
    // set; they are added back so both run with Docker's 14.
    let out = Command::new("buildah")
        .arg("--root")
        .arg(store.join("root"))
        .arg("--runroot")
        .arg(store.join("run"))
        .args(["--storage-driver", "vfs", "bud", "--isolation", "chroot"])
        .args(["--cap-add", "CAP_MKNOD,CAP_NET_RAW,CAP_AUDIT_WRITE"])
        .args(["-t", "probe-buildah"])
        .arg(&ctx)
        .output()
        .expect("buildah runs");
    let theirs = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{theirs}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for key in [
        "CapBnd",
        "CapEff",
        "CapPrm",
        "CapInh",
        "CapAmb",
        "Seccomp",
        "NoNewPrivs",
        "open_by_handle_at",
        "unshare_user",
        "write_core_pattern",
    ] {
        let (a, b) = (probe::value(&ours, key), probe::value(&theirs, key));
        assert!(a.is_some(), "{key} missing:\n{ours}");
        assert_eq!(a, b, "{key}: mybuild vs buildah\n{ours}\n---\n{theirs}");
    }
    assert_eq!(probe::value(&ours, "CapBnd").as_deref(), Some(DOCKER_CAPS));
    let _ = std::fs::remove_dir_all(&store);
}

/// A loop device over a file of the test's own, detached on drop.
struct Loop(String);

impl Loop {
    fn new(tmp: &Path) -> Loop {
        let backing = tmp.join("loop-backing");
        std::fs::write(&backing, vec![0x5au8; 1 << 20]).expect("backing");
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&backing)
            .output()
            .expect("losetup");
        assert!(out.status.success(), "losetup: {out:?}");
        Loop(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn numbers(&self) -> (u32, u32) {
        use std::os::unix::fs::MetadataExt;
        let rdev = std::fs::metadata(&self.0).expect("loop node").rdev();
        (libc::major(rdev), libc::minor(rdev))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

#[test]
fn device_nodes_made_in_run_are_kept_but_never_opened() {
    let Some((tmp, root)) = setup_sandbox() else {
        return;
    };
    if !testdata::require_tool("losetup") {
        return;
    }
    let dev = Loop::new(tmp.path());
    let (major, minor) = dev.numbers();
    let ctx = probe_context(
        tmp.path(),
        "ctx",
        &format!(
            "FROM busybox\nCOPY probe /probe\n\
             RUN mknod /blk b {major} {minor} && mknod /dev/blk b {major} {minor} \
             && mknod /tmp/blk b {major} {minor} && mknod /null c 1 3 \
             && /probe open /blk /dev/blk /tmp/blk /null /dev/null /dev/zero \
             && head -c 4 /dev/zero | wc -c && rm /dev/blk /tmp/blk\n"
        ),
    );
    let (ok, out) = build_plain(&root, &ctx, &[]);
    assert!(ok, "{out}");
    for (path, want) in [
        ("/blk", "EACCES"),
        ("/dev/blk", "EACCES"),
        ("/tmp/blk", "EACCES"),
        ("/null", "EACCES"),
        ("/dev/null", "ok"),
        ("/dev/zero", "ok"),
    ] {
        assert_eq!(
            probe::value(&out, &format!("open {path}")).as_deref(),
            Some(want),
            "{path}:\n{out}"
        );
    }
    // The nodes made in the image's own tree are in its layer.
    use std::os::unix::fs::FileTypeExt;
    let rootfs = unpack(tmp.path(), &root, "probe:1");
    let blk = std::fs::symlink_metadata(rootfs.join("blk")).expect("/blk in the image");
    assert!(blk.file_type().is_block_device());
    let null = std::fs::symlink_metadata(rootfs.join("null")).expect("/null in the image");
    assert!(null.file_type().is_char_device());
}

#[test]
fn ordinary_root_work_still_works() {
    let Some((tmp, root)) = setup_sandbox() else {
        return;
    };
    let ctx = probe_context(
        tmp.path(),
        "ctx",
        "FROM busybox\n\
         RUN echo data > /f && chown 1000:1000 /f && chmod u+s,g+s /f \
         && cp /bin/busybox /su && chmod 4755 /su && /su app -c 'id -u > /tmp/uid' \
         && cat /tmp/uid > /uid-after-su \
         && ping -c 1 -W 2 127.0.0.1 > /dev/null && echo pinged > /ping\n",
    );
    let (ok, out) = build_plain(&root, &ctx, &[]);
    assert!(ok, "{out}");
    use std::os::unix::fs::MetadataExt;
    let rootfs = unpack(tmp.path(), &root, "probe:1");
    let f = std::fs::symlink_metadata(rootfs.join("f")).expect("/f");
    assert_eq!((f.uid(), f.gid()), (1000, 1000));
    assert_eq!(f.mode() & 0o7777, 0o6644, "setuid and setgid kept");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("uid-after-su")).expect("uid"),
        "1000\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("ping")).expect("ping"),
        "pinged\n"
    );
}

/// An HTTP server on the host's 127.0.0.1 answering `body` to every request.
fn loopback_server(body: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

#[test]
fn the_default_network_cannot_reach_the_hosts_loopback() {
    let Some((tmp, root)) = setup_sandbox() else {
        return;
    };
    let port = loopback_server("host-only");
    let ctx = context(
        tmp.path(),
        &format!(
            "FROM busybox\n\
             RUN for a in 127.0.0.1 10.0.2.2; do \
             (wget -q -O - http://$a:{port}/ || echo unreachable) > /from-$a; done\n"
        ),
        &[],
    );
    let read = |rootfs: &Path, addr: &str| {
        std::fs::read_to_string(rootfs.join(format!("from-{addr}"))).expect("result")
    };
    ok(mybuild(&root)
        .args(["build", "--progress=plain", "-t", "net:default"])
        .arg(&ctx));
    let rootfs = unpack(tmp.path(), &root, "net:default");
    assert_eq!(read(&rootfs, "127.0.0.1"), "unreachable\n");
    assert_eq!(read(&rootfs, "10.0.2.2"), "unreachable\n");
    ok(mybuild(&root)
        .args([
            "build",
            "--progress=plain",
            "--network=host",
            "-t",
            "net:host",
        ])
        .arg(&ctx));
    let rootfs = unpack(tmp.path(), &root, "net:host");
    assert_eq!(read(&rootfs, "127.0.0.1"), "host-only");
}

/// A process holding a new network namespace, killed on drop.
struct Netns(std::process::Child);

impl Netns {
    fn new() -> Netns {
        Netns(
            Command::new("unshare")
                .args(["-n", "sleep", "600"])
                .spawn()
                .expect("unshare -n"),
        )
    }

    fn pid(&self) -> String {
        self.0.id().to_string()
    }

    /// Runs `args` inside the namespace.
    fn exec(&self, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.pid(), "-n", "--"]).args(args);
        c
    }

    fn sh(&self, script: &str) {
        let st = self.exec(&["sh", "-c", script]).status().expect("nsenter");
        assert!(st.success(), "{script}");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_default_network_reaches_out_through_the_stack() {
    let Some((tmp, root)) = setup_sandbox() else {
        return;
    };
    if !testdata::require_tool("ip")
        || !testdata::require_tool("nsenter")
        || !testdata::require_tool("unshare")
    {
        return;
    }
    // Two namespaces of the test's own joined by a veth pair: a web server in one,
    // mybuild in the other, whose default route leads to the server's side.
    let (server, client) = (Netns::new(), Netns::new());
    std::thread::sleep(std::time::Duration::from_millis(50));
    let link = format!("mbv{}", std::process::id() % 100_000);
    let st = Command::new("ip")
        .args(["link", "add", &format!("{link}a"), "netns", &server.pid()])
        .args(["type", "veth", "peer", "name", &format!("{link}b")])
        .args(["netns", &client.pid()])
        .status()
        .expect("ip link");
    assert!(st.success(), "veth pair");
    server.sh(&format!(
        "ip link set lo up && ip addr add 10.231.0.2/24 dev {link}a && ip link set {link}a up"
    ));
    client.sh(&format!(
        "ip link set lo up && ip addr add 10.231.0.1/24 dev {link}b && ip link set {link}b up \
         && ip route add default via 10.231.0.2"
    ));
    let www = tmp.path().join("www");
    std::fs::create_dir_all(&www).expect("www");
    std::fs::write(www.join("index.html"), "served from the test's namespace\n").expect("page");
    let busybox = testdata::images::busybox_binary().expect("busybox");
    let mut httpd = server
        .exec(&[
            &busybox.display().to_string(),
            "httpd",
            "-f",
            "-p",
            "10.231.0.2:8080",
            "-h",
            &www.display().to_string(),
        ])
        .spawn()
        .expect("httpd");
    let ctx = context(
        tmp.path(),
        "FROM busybox\nRUN ip route > /route && wget -q -O /got http://10.231.0.2:8080/index.html\n",
        &[],
    );
    let mut build = Command::new("nsenter");
    build
        .args(["-t", &client.pid(), "-n", "--"])
        .arg(assert_cmd::cargo::cargo_bin("mybuild"))
        .arg("--root")
        .arg(&root)
        .args(["build", "--progress=plain", "-t", "out:1"])
        .arg(&ctx);
    let result = run(&mut build);
    // A container gets the same network as a RUN step.
    let mut container = Command::new("nsenter");
    container
        .args(["-t", &client.pid(), "-n", "--"])
        .arg(assert_cmd::cargo::cargo_bin("mybuild"))
        .arg("--root")
        .arg(&root)
        .args(["run", "--rm", "busybox", "sh", "-c"])
        .arg("wget -q -O - http://10.231.0.2:8080/index.html");
    let ran = run(&mut container);
    let _ = httpd.kill();
    let _ = httpd.wait();
    assert!(result.0, "{}\n{}", result.1, result.2);
    assert!(ran.0, "{}\n{}", ran.1, ran.2);
    assert_eq!(ran.1, "served from the test's namespace\n");
    let rootfs = unpack(tmp.path(), &root, "out:1");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("got")).expect("got"),
        "served from the test's namespace\n"
    );
    let route = std::fs::read_to_string(rootfs.join("route")).expect("route");
    assert!(route.contains("default via 10.0.2.2"), "{route}");
}

#[test]
fn a_missing_network_stack_names_its_package_and_the_alternatives() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(tmp.path(), "FROM busybox\nRUN true\n", &[]);
    let err = fails(
        mybuild(&root)
            .env("PATH", tmp.path().join("no-such-dir"))
            .args(["build", "--progress=plain"])
            .arg(&ctx),
    );
    for part in [
        "slirp4netns",
        "apt-get install slirp4netns",
        "--network=host",
    ] {
        assert!(err.contains(part), "{part:?} in {err}");
    }
    // The host and none networks need no stack.
    ok(mybuild(&root)
        .env("PATH", tmp.path().join("no-such-dir"))
        .args(["build", "--progress=plain", "--network=none"])
        .arg(&ctx));
}

#[test]
fn insecure_steps_and_host_network_need_their_entitlements() {
    let Some((tmp, root)) = setup_sandbox() else {
        return;
    };
    let ctx = probe_context(
        tmp.path(),
        "ctx",
        "FROM busybox\nCOPY probe /probe\nRUN --security=insecure /probe\n",
    );
    let (ok_, out) = build_plain(&root, &ctx, &[]);
    assert!(!ok_, "{out}");
    assert!(
        out.contains("RUN --security=insecure needs the security.insecure entitlement")
            && out.contains("--allow security.insecure")
            && out.contains("Dockerfile:3"),
        "{out}"
    );
    let (ok_, out) = build_plain(&root, &ctx, &["--allow", "security.insecure"]);
    assert!(ok_, "{out}");
    assert_eq!(probe::value(&out, "Seccomp").as_deref(), Some("0"), "{out}");
    let eff = probe::value(&out, "CapEff").expect("CapEff");
    let eff = u64::from_str_radix(&eff, 16).expect("hex");
    assert!(eff & (1 << 21) != 0, "CAP_SYS_ADMIN in {eff:x}");

    let port = loopback_server("via-host");
    let ctx = context(
        tmp.path(),
        &format!("FROM busybox\nRUN --network=host wget -q -O /got http://127.0.0.1:{port}/\n"),
        &[],
    );
    let err = fails(mybuild(&root).args(["build", "--progress=plain"]).arg(&ctx));
    assert!(
        err.contains("RUN --network=host needs the network.host entitlement")
            && err.contains("--allow network.host"),
        "{err}"
    );
    ok(mybuild(&root)
        .args([
            "build",
            "--progress=plain",
            "--allow",
            "network.host",
            "-t",
            "h:1",
        ])
        .arg(&ctx));
    let rootfs = unpack(tmp.path(), &root, "h:1");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("got")).expect("got"),
        "via-host"
    );
}

#[test]
fn image_symlinks_never_lead_to_host_files() {
    let Some((tmp, root)) = setup_sandbox() else {
        return;
    };
    // Host directories an image's absolute symlinks name.
    let host_etc = tmp.path().join("host-etc");
    let host_data = tmp.path().join("host-data");
    for d in [&host_etc, &host_data] {
        std::fs::create_dir_all(d).expect("host dir");
    }
    std::fs::write(host_etc.join("passwd"), "hostonly:x:4242:4242::/:/bin/sh\n").expect("passwd");
    std::fs::write(host_etc.join("group"), "hostonly:x:4242:\n").expect("group");
    let busybox =
        std::fs::read(testdata::images::busybox_binary().expect("busybox")).expect("read");
    let (etc_link, data_link) = (
        host_etc.display().to_string(),
        host_data.display().to_string(),
    );
    let tar = testdata::tars::RawTar::new()
        .dir(b"bin/")
        .file_mode(b"bin/busybox", &busybox, 0o755)
        .symlink(b"bin/sh", b"busybox")
        .symlink(b"etc", etc_link.as_bytes())
        .symlink(b"data", data_link.as_bytes())
        .dir(b"tmp/")
        .finish();
    let tarball = tmp.path().join("evil.tar");
    std::fs::write(&tarball, tar).expect("tar");
    ok(mybuild(&root)
        .arg("import")
        .arg(&tarball)
        .arg("evil")
        .args(["-c", "ENV PATH=/bin"]));

    // USER and --chown read the image's /etc/passwd, which does not exist in it.
    for df in [
        "FROM evil\nUSER hostonly\nRUN true\n",
        "FROM evil\nCOPY --chown=hostonly f /f\n",
    ] {
        let ctx = context(tmp.path(), df, &[("f", "x")]);
        let err = fails(mybuild(&root).args(["build", "--progress=plain"]).arg(&ctx));
        assert!(err.contains("unable to find user hostonly"), "{df}: {err}");
    }

    // COPY and WORKDIR through `/data -> <host path>` land inside the image.
    let ctx = context(
        tmp.path(),
        "FROM evil\nCOPY f /data/f\nWORKDIR /data/w\nRUN /bin/busybox touch made-here\n",
        &[("f", "copied")],
    );
    ok(mybuild(&root)
        .args(["build", "--progress=plain", "-t", "evil:2"])
        .arg(&ctx));
    assert_eq!(
        std::fs::read_dir(&host_data).expect("host dir").count(),
        0,
        "nothing written on the host"
    );
    let rootfs = unpack(tmp.path(), &root, "evil:2");
    let inside = rootfs.join(host_data.strip_prefix("/").expect("absolute"));
    assert_eq!(
        std::fs::read_to_string(inside.join("f")).expect("f inside the image"),
        "copied"
    );
    assert!(inside.join("w/made-here").exists());
}

/// Pids of `name` processes whose parent is `parent`.
fn children_named(parent: u32, name: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // comm is in parentheses; ppid is the second field after it.
            let Some((comm, rest)) = stat.split_once(") ") else {
                return false;
            };
            let ppid = rest.split(' ').nth(1).and_then(|p| p.parse::<u32>().ok());
            comm.ends_with(&format!("({name}")) && ppid == Some(parent)
        })
        .collect()
}

#[test]
fn the_network_stack_dies_with_a_killed_build() {
    let Some((tmp, root)) = setup_sandbox() else {
        return;
    };
    let ctx = context(
        tmp.path(),
        "FROM busybox\nRUN echo sta''rted && sleep 600\n",
        &[],
    );
    let mut child = mybuild(&root)
        .args(["build", "--progress", "plain", "-t", "never:1"])
        .arg(&ctx)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut err = child.stderr.take().expect("stderr");
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("started") {
        let n = err.read(&mut buf).expect("read");
        assert!(
            n > 0,
            "build ended early: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    let stacks = children_named(child.id(), "slirp4netns");
    assert_eq!(stacks.len(), 1, "one stack for the running step");
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().expect("wait");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while Path::new(&format!("/proc/{}", stacks[0])).exists() {
        let cmd =
            std::fs::read_to_string(format!("/proc/{}/cmdline", stacks[0])).unwrap_or_default();
        if !cmd.contains("slirp4netns") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "slirp4netns outlived the killed build"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn the_step_cannot_reach_into_the_sandbox_init() {
    let Some((tmp, root)) = setup_sandbox() else {
        return;
    };
    // PID 1 is mybuild itself: its exe is the host's binary, its fd 3 a host file.
    let ctx = probe_context(
        tmp.path(),
        "ctx",
        "FROM busybox\nCOPY probe /probe\n\
         RUN /probe open /proc/1/exe /proc/1/mem /proc/1/environ /proc/1/fd/3 \
         && /probe ptrace 1\n",
    );
    let (ok, out) = build_plain(&root, &ctx, &[]);
    assert!(ok, "{out}");
    for (key, want) in [
        ("open /proc/1/exe", "EACCES"),
        ("open /proc/1/mem", "EACCES"),
        ("open /proc/1/environ", "EACCES"),
        ("open /proc/1/fd/3", "EACCES"),
        ("ptrace", "EPERM"),
    ] {
        assert_eq!(
            probe::value(&out, key).as_deref(),
            Some(want),
            "{key}:\n{out}"
        );
    }
}

#[test]
fn the_step_cannot_open_the_terminal_mybuild_runs_in() {
    let Some((tmp, root)) = setup_sandbox() else {
        return;
    };
    let ctx = probe_context(
        tmp.path(),
        "ctx",
        "FROM busybox\nCOPY probe /probe\nRUN /probe open /dev/tty\n",
    );
    // mybuild with a terminal of its own as controlling terminal, as in a shell.
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes the two descriptors; the other arguments may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    let mut cmd = mybuild(&root);
    cmd.args(["build", "--progress=plain", "--no-cache"])
        .arg(&ctx);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            if libc::setsid() < 0 || libc::ioctl(slave, libc::TIOCSCTTY, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (ok, out, err) = run(&mut cmd);
    // SAFETY: closing our own descriptors once the build is over.
    unsafe {
        libc::close(slave);
        libc::close(master);
    }
    let out = format!("{out}\n{}", step_output(&err));
    assert!(ok, "{out}");
    assert_eq!(
        probe::value(&out, "open /dev/tty").as_deref(),
        Some("ENXIO"),
        "{out}"
    );
}

#[test]
fn mount_targets_through_a_caches_symlinks_stay_inside_the_root() {
    let Some((tmp, root)) = setup_sandbox() else {
        return;
    };
    // A host directory a cache's symlinks name, absolutely and through `..`.
    let host = tmp.path().join("host-dir");
    std::fs::create_dir_all(&host).expect("host dir");
    let up = "../".repeat(30);
    let host_rel = host.display().to_string();
    let secret = tmp.path().join("secret.txt");
    std::fs::write(&secret, "s3cret").expect("secret");
    let ctx = probe_context(
        tmp.path(),
        "ctx",
        &format!(
            "FROM busybox\nCOPY probe /probe\n\
             RUN --mount=type=cache,target=/c,id=planted \
             ln -sfn {host_rel} /c/abs && ln -sfn {up}{rel} /c/rel\n\
             RUN --mount=type=cache,target=/c,id=planted \
             --mount=type=tmpfs,target=/c/abs/tmpfs \
             --mount=type=secret,id=s,target=/c/rel/secret \
             --mount=type=bind,target=/c/abs/ctx \
             cat /c/rel/secret && ls /c/abs/ctx/probe \
             && mknod /c/null c 1 3 && /probe open /c/null /c/abs/ctx/probe\n",
            rel = host_rel.trim_start_matches('/'),
        ),
    );
    let (ok, out) = build_plain(
        &root,
        &ctx,
        &["--secret", &format!("id=s,src={}", secret.display())],
    );
    assert!(ok, "{out}");
    assert_eq!(
        std::fs::read_dir(&host).expect("host dir").count(),
        0,
        "nothing made on the host:\n{out}"
    );
    // The mounts are there, where the symlinks lead inside the root.
    assert!(out.contains("s3cret"), "{out}");
    assert_eq!(
        probe::value(&out, "open /c/abs/ctx/probe").as_deref(),
        Some("ok"),
        "{out}"
    );
    // A node made in the cache never opens.
    assert_eq!(
        probe::value(&out, "open /c/null").as_deref(),
        Some("EACCES"),
        "{out}"
    );
}

#[test]
fn writable_mounts_lower_layer_nodes_and_file_capabilities_give_no_device_or_capability() {
    let Some((tmp, root)) = setup_sandbox() else {
        return;
    };
    // Char 1:3 is the host's /dev/null: harmless to open, so an "ok" would mean
    // any device opens there.
    let ctx = probe_context(
        tmp.path(),
        "ctx",
        "FROM busybox AS base\nCOPY probe /probe\n\
         RUN mknod /lower-null c 1 3 && cp /probe /capprobe && /probe setcap /capprobe\n\
         FROM base\n\
         RUN --mount=type=tmpfs,target=/t --mount=type=cache,target=/c \
         --mount=type=bind,target=/b,rw --mount=type=bind,from=base,target=/s \
         --mount=type=bind,from=base,target=/w,rw \
         mknod /dev/shm/null c 1 3 && mknod /t/null c 1 3 && mknod /c/null c 1 3 \
         && mknod /b/null c 1 3 \
         && /probe open /lower-null /dev/shm/null /t/null /c/null /b/null \
         /s/lower-null /w/lower-null\n\
         RUN /capprobe | sed 's/PROBE Cap/PROBE rootCap/'\n\
         USER 1000\n\
         RUN /capprobe | sed 's/PROBE Cap/PROBE userCap/'\n",
    );
    let (ok, out) = build_plain(&root, &ctx, &[]);
    assert!(ok, "{out}");
    assert_eq!(probe::value(&out, "setcap").as_deref(), Some("ok"), "{out}");
    for path in [
        "/lower-null",
        "/dev/shm/null",
        "/t/null",
        "/c/null",
        "/b/null",
        "/s/lower-null",
        "/w/lower-null",
    ] {
        assert_eq!(
            probe::value(&out, &format!("open {path}")).as_deref(),
            Some("EACCES"),
            "{path}:\n{out}"
        );
    }
    // CAP_SYS_ADMIN in the file's permitted set is cut by the bounding set.
    for (key, want) in [
        ("rootCapPrm", DOCKER_CAPS),
        ("rootCapEff", DOCKER_CAPS),
        ("userCapPrm", "0000000000000000"),
        ("userCapEff", "0000000000000000"),
    ] {
        assert_eq!(
            probe::value(&out, key).as_deref(),
            Some(want),
            "{key}:\n{out}"
        );
    }
}
