//! `mybuild run` and the container verbs end to end: real namespaces, overlayfs, a
//! real terminal (tmux) for `-it`, detached keepers, and the store's container
//! records.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use assert_cmd::cargo::cargo_bin;
use common::*;
use testdata::rootless::AsUser;

/// A store with busybox, when this machine can run sandboxes (root, busybox).
fn setup_run() -> Option<(tempfile::TempDir, PathBuf)> {
    if !testdata::require_root() {
        return None;
    }
    setup()
}

/// Polls `check` every 20 ms for up to 20 s; panics with `what` when it never holds.
fn poll_until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn code(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A tmux server of the test's own (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(cols: u16, rows: u16) -> Option<Tmux> {
        if !testdata::require_tool("tmux") {
            return None;
        }
        // One server per test: tests of this file run in parallel threads.
        static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let socket = format!("mybuild-run-{}-{n}", std::process::id());
        let t = Tmux { socket };
        let st = t
            .cmd()
            .args(["new-session", "-d", "-s", "t", "-x"])
            .arg(cols.to_string())
            .arg("-y")
            .arg(rows.to_string())
            .arg("/bin/sh")
            .env("PS1", "host$ ")
            .status()
            .expect("tmux");
        assert!(st.success(), "tmux new-session");
        Some(t)
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    fn keys(&self, keys: &[&str]) {
        let st = self
            .cmd()
            .args(["send-keys", "-t", "t"])
            .args(keys)
            .status()
            .expect("send-keys");
        assert!(st.success());
    }

    fn screen(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", "t"])
            .output()
            .expect("capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until a line of the screen is exactly `line`, counting those already there.
    fn wait_line(&self, line: &str, already: usize) {
        poll_until(&format!("{line:?} on the terminal"), || {
            let s = self.screen();
            (s.lines().filter(|l| l.trim_end() == line).count() > already).then_some(s)
        });
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").status();
    }
}

fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

#[test]
fn an_interactive_shell_runs_on_a_terminal() {
    let Some((tmp, root)) = setup_run() else {
        return;
    };
    let Some(tmux) = Tmux::start(100, 30) else {
        return;
    };
    let dir = tmp.path();
    let line = format!(
        "stty -g > {before}; {bin} --root {root} run -it --rm busybox sh; echo $? > {rc}; stty -g > {after}",
        before = shell_quote(&dir.join("before")),
        after = shell_quote(&dir.join("after")),
        rc = shell_quote(&dir.join("rc")),
        bin = shell_quote(&cargo_bin("mybuild")),
        root = shell_quote(&root),
    );
    tmux.keys(&[&line, "Enter"]);
    tmux.wait_line("/ #", 0);
    tmux.keys(&["echo $((6*7))", "Enter"]);
    tmux.wait_line("42", 0);
    tmux.keys(&["stty size", "Enter"]);
    tmux.wait_line("30 100", 0);
    // The terminal is the container's console, as in Docker.
    tmux.keys(&["tty", "Enter"]);
    tmux.wait_line("/dev/console", 0);
    let st = tmux
        .cmd()
        .args(["resize-window", "-t", "t", "-x", "120", "-y", "40"])
        .status()
        .expect("resize");
    assert!(st.success());
    tmux.keys(&["stty size", "Enter"]);
    tmux.wait_line("40 120", 0);
    // ^C reaches the container's foreground command, not mybuild; sent once the
    // command's trap is set (before, it could land while the shell starts it).
    tmux.keys(&[
        "sh -c 'trap \"echo got-int; exit 130\" INT; echo armed; while :; do sleep 0.1; done'",
        "Enter",
    ]);
    tmux.wait_line("armed", 0);
    tmux.keys(&["C-c"]);
    tmux.keys(&["echo still-here", "Enter"]);
    tmux.wait_line("still-here", 0);
    // The terminal echoes ^C on the line the trap then writes to.
    let screen = tmux.screen();
    assert!(
        screen.lines().any(|l| l.trim_end() == "^Cgot-int"),
        "{screen}"
    );
    tmux.keys(&["exit 3", "Enter"]);
    let rc = poll_until("the exit code", || {
        std::fs::read_to_string(dir.join("after"))
            .ok()
            .filter(|s| !s.is_empty())?;
        std::fs::read_to_string(dir.join("rc")).ok()
    });
    assert_eq!(rc.trim(), "3", "{}", tmux.screen());
    let before = std::fs::read_to_string(dir.join("before")).expect("before");
    let after = std::fs::read_to_string(dir.join("after")).expect("after");
    assert_eq!(before, after, "the terminal mode is restored");
}

#[test]
fn without_t_the_users_terminal_reaches_the_container_through_pipes() {
    let Some((tmp, root)) = setup_run() else {
        return;
    };
    let Some(tmux) = Tmux::start(100, 30) else {
        return;
    };
    let out = tmp.path().join("out");
    let line = format!(
        "{bin} --root {root} run --rm -i busybox sh -c 'read x; echo got $x; readlink /proc/self/fd/0' > {out}.tmp 2>&1 <&0; mv {out}.tmp {out}",
        bin = shell_quote(&cargo_bin("mybuild")),
        root = shell_quote(&root),
        out = shell_quote(&out),
    );
    // Standard output goes to a file above; run a second time with it on the terminal.
    let line2 = format!(
        "{bin} --root {root} run --rm busybox sh -c 'readlink /proc/self/fd/1; echo done-$((1+1))'",
        bin = shell_quote(&cargo_bin("mybuild")),
        root = shell_quote(&root),
    );
    tmux.keys(&[&line, "Enter"]);
    tmux.keys(&["typed", "Enter"]);
    let got = poll_until("the first run", || std::fs::read_to_string(&out).ok());
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(lines.first(), Some(&"got typed"), "{got}");
    // Standard input came from the terminal: the container sees a pipe.
    assert!(
        lines.get(1).is_some_and(|l| l.starts_with("pipe:")),
        "{got}"
    );
    tmux.keys(&[&line2, "Enter"]);
    tmux.wait_line("done-2", 0);
    let screen = tmux.screen();
    assert!(
        screen.lines().any(|l| l.starts_with("pipe:[")),
        "standard output on a terminal reaches the container as a pipe:\n{screen}"
    );
}

/// The full id of the container named `name`.
fn container_id(root: &Path, name: &str) -> String {
    let dir = root.join("containers");
    for e in std::fs::read_dir(&dir).expect("containers").flatten() {
        let rec = e.path().join("config.json");
        if let Ok(text) = std::fs::read_to_string(&rec) {
            let v: serde_json::Value = serde_json::from_str(&text).expect("record");
            if v["name"] == name {
                return v["id"].as_str().expect("id").to_string();
            }
        }
    }
    panic!("no container {name}");
}

#[test]
fn a_container_is_kept_started_again_and_removed() {
    let Some((tmp, root)) = setup_run() else {
        return;
    };
    let (so, _) = ok(mybuild(&root).args([
        "run",
        "--name",
        "c1",
        "busybox",
        "sh",
        "-c",
        "cat /f 2>/dev/null; echo hi > /f",
    ]));
    assert_eq!(so, "");
    let (ps, _) = ok(mybuild(&root).args(["ps", "-a"]));
    let row = ps.lines().find(|l| l.ends_with(" c1")).expect(&ps);
    assert!(row.contains("Exited (0)"), "{ps}");
    assert!(ps.starts_with("CONTAINER ID "), "{ps}");
    let (running, _) = ok(mybuild(&root).arg("ps"));
    assert!(!running.contains("c1"), "{running}");
    // The same writable layer: /f is still there.
    let (so, _) = ok(mybuild(&root).args(["start", "-a", "c1"]));
    assert_eq!(so, "hi\n");
    // An attached run's output is kept for `logs` too.
    assert_eq!(logs(&root, "c1"), "hi\n");
    // Its changes, then an image of them through RUN's differ and layer writer.
    let (diff, _) = ok(mybuild(&root).args(["diff", "c1"]));
    assert_eq!(diff, "A /f\n");
    ok(mybuild(&root).args(["commit", "-m", "with f", "c1", "img:2"]));
    let rootfs = unpack(tmp.path(), &root, "img:2");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("f")).expect("/f"),
        "hi\n"
    );
    let (base, img) = (inspect(&root, "busybox"), inspect(&root, "img:2"));
    let layers = |v: &serde_json::Value| v["Manifest"]["layers"].as_array().map_or(0, Vec::len);
    assert_eq!(layers(&img), layers(&base) + 1, "{img}");
    assert_eq!(
        img["Config"]["config"]["Cmd"],
        serde_json::json!(["sh", "-c", "cat /f 2>/dev/null; echo hi > /f"]),
        "{img}"
    );
    let history = img["Config"]["history"].as_array().expect("history");
    assert_eq!(history.last().expect("entry")["comment"], "with f", "{img}");
    let (so, _) = ok(mybuild(&root).args(["run", "--rm", "img:2", "cat", "/f"]));
    assert_eq!(so, "hi\n");
    let id = container_id(&root, "c1");
    let (q, _) = ok(mybuild(&root).args(["ps", "-aq"]));
    assert_eq!(q.trim(), &id[..12]);
    assert!(root.join("containers").join(&id).join("upper/f").is_file());
    let err = fails(mybuild(&root).args(["run", "--name", "c1", "busybox", "true"]));
    assert!(err.contains("is already in use"), "{err}");
    // Started without -a: a keeper runs it and keeps its output.
    let (so, _) = ok(mybuild(&root).args(["start", "c1"]));
    assert_eq!(so, "c1\n");
    poll_until("the detached start to end", || {
        let (ps, _) = ok(mybuild(&root).args(["ps", "-q"]));
        ps.trim().is_empty().then_some(())
    });
    assert_eq!(logs(&root, "c1"), "hi\nhi\n");
    let (so, _) = ok(mybuild(&root).args(["rm", "c1"]));
    assert_eq!(so, "c1\n");
    assert!(!root.join("containers").join(&id).exists());
    let err = fails(mybuild(&root).args(["rm", "c1"]));
    assert!(err.contains("no such container: c1"), "{err}");
}

#[test]
fn a_container_holds_its_image_against_rmi_and_prune() {
    let Some((_tmp, root)) = setup_run() else {
        return;
    };
    ok(mybuild(&root).args(["tag", "busybox", "keep:1"]));
    ok(mybuild(&root).args(["run", "--name", "k", "keep:1", "true"]));
    ok(mybuild(&root).args(["rmi", "busybox"]));
    let err = fails(mybuild(&root).args(["rmi", "keep:1"]));
    assert!(
        err.contains("unable to remove image keep:1: it is used by container")
            && err.contains("(k)"),
        "{err}"
    );
    ok(mybuild(&root).args(["rmi", "-f", "keep:1"]));
    let (images, _) = ok(mybuild(&root).args(["images", "-q"]));
    assert_eq!(images.trim(), "");
    ok(mybuild(&root).arg("prune"));
    // Blobs and snapshots of the image are still there: the container starts again.
    let (so, _) = ok(mybuild(&root).args(["start", "-a", "k"]));
    assert_eq!(so, "");
    ok(mybuild(&root).args(["rm", "k"]));
    let (so, _) = ok(mybuild(&root).arg("prune"));
    assert!(!so.contains("Deleted 0 blobs"), "{so}");
}

fn logs(root: &Path, name: &str) -> String {
    ok(mybuild(root).args(["logs", name])).0
}

#[test]
fn a_detached_container_is_stopped_with_its_signal_then_killed() {
    let Some((_tmp, root)) = setup_run() else {
        return;
    };
    let script = "trap 'echo got TERM; exit 0' TERM; echo started; while :; do sleep 0.1; done";
    let (id, _) =
        ok(mybuild(&root).args(["run", "-d", "--name", "d1", "busybox", "sh", "-c", script]));
    assert_eq!(id.trim().len(), 64, "{id}");
    poll_until("the container's output", || {
        logs(&root, "d1").contains("started").then_some(())
    });
    let (ps, _) = ok(mybuild(&root).arg("ps"));
    assert!(
        ps.lines().any(|l| l.contains("Up ") && l.ends_with(" d1")),
        "{ps}"
    );
    let err = fails(mybuild(&root).args(["start", "-a", "d1"]));
    assert!(err.contains("already running"), "{err}");
    let (so, _) = ok(mybuild(&root).args(["stop", "-t", "1", "d1"]));
    assert_eq!(so, "d1\n");
    assert_eq!(logs(&root, "d1"), "started\ngot TERM\n");
    let (ps, _) = ok(mybuild(&root).args(["ps", "-a"]));
    assert!(
        ps.lines()
            .any(|l| l.contains("Exited (0)") && l.ends_with(" d1")),
        "{ps}"
    );

    let script = "trap '' TERM; echo ignoring; while :; do sleep 0.1; done";
    ok(mybuild(&root).args(["run", "-d", "--name", "d2", "busybox", "sh", "-c", script]));
    poll_until("the container's output", || {
        logs(&root, "d2").contains("ignoring").then_some(())
    });
    let t = Instant::now();
    ok(mybuild(&root).args(["stop", "-t", "1", "d2"]));
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(8),
        "{took:?}"
    );
    let (ps, _) = ok(mybuild(&root).args(["ps", "-a"]));
    assert!(
        ps.lines()
            .any(|l| l.contains("Exited (137)") && l.ends_with(" d2")),
        "{ps}"
    );
    ok(mybuild(&root).args(["rm", "d1", "d2"]));
}

#[test]
fn the_default_network_keeps_the_hosts_loopback_out_and_none_has_only_lo() {
    let Some((_tmp, root)) = setup_run() else {
        return;
    };
    if !testdata::require_tool("slirp4netns") {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let script = format!(
        "for a in 127.0.0.1 10.0.2.2; do wget -q -O - http://$a:{port}/ || echo unreachable; done; ip -o link | cut -d: -f2"
    );
    let (so, _) = ok(mybuild(&root).args(["run", "--rm", "busybox", "sh", "-c", &script]));
    assert!(so.starts_with("unreachable\nunreachable\n"), "{so}");
    assert!(so.contains("tap0"), "{so}");
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the host's loopback was reached: {other:?}"),
    }
    let (so, _) = ok(mybuild(&root).args([
        "run",
        "--rm",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "tail -n +3 /proc/net/dev | cut -d: -f1",
    ]));
    assert_eq!(so.trim(), "lo");
}

#[test]
fn binds_are_read_only_or_written_through() {
    let Some((tmp, root)) = setup_run() else {
        return;
    };
    let host = tmp.path().join("vol");
    std::fs::create_dir(&host).expect("vol");
    let rw = format!("{}:/data", host.display());
    ok(mybuild(&root).args([
        "run",
        "--rm",
        "-v",
        &rw,
        "busybox",
        "sh",
        "-c",
        "echo w > /data/x",
    ]));
    assert_eq!(std::fs::read_to_string(host.join("x")).expect("x"), "w\n");
    let ro = format!("{}:/data:ro", host.display());
    let (rc, _, err) = code(mybuild(&root).args([
        "run",
        "--rm",
        "-v",
        &ro,
        "busybox",
        "sh",
        "-c",
        "echo w > /data/y",
    ]));
    assert_ne!(rc, 0);
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(!host.join("y").exists());
    let (so, _) = ok(mybuild(&root).args([
        "run", "--rm", "--read-only", "--tmpfs", "/scratch", "--hostname", "hh", "--add-host",
        "foo:192.0.2.7", "busybox", "sh", "-c",
        "touch /scratch/a && ! touch /b 2>/dev/null && echo read-only; hostname; grep foo /etc/hosts",
    ]));
    assert_eq!(so, "read-only\nhh\n192.0.2.7\tfoo\n");
    let (rc, _, err) =
        code(mybuild(&root).args(["run", "--rm", "-v", "data:/data", "busybox", "true"]));
    assert_eq!(rc, 125);
    assert!(err.contains("named volumes are not supported"), "{err}");
}

#[test]
fn errors_give_dockers_exit_codes_and_one_line() {
    let Some((_tmp, root)) = setup_run() else {
        return;
    };
    let (rc, _, err) = code(mybuild(&root).args(["run", "--pull", "never", "nope:1"]));
    assert_eq!(rc, 125);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("Unable to find image 'nope:1' locally"),
        "{err}"
    );
    let (rc, _, err) = code(mybuild(&root).args(["run", "--rm", "busybox", "no-such-program"]));
    assert_eq!(rc, 127);
    assert_eq!(
        err.trim(),
        "exec: \"no-such-program\": executable file not found in $PATH"
    );
    let (rc, _, err) = code(mybuild(&root).args(["run", "--rm", "busybox", "/etc/passwd"]));
    assert_eq!(rc, 126);
    assert!(err.contains("Permission denied"), "{err}");
    let (rc, _, err) = code(mybuild(&root).args(["run", "--bogus", "busybox"]));
    assert_eq!(rc, 125);
    assert_eq!(err.trim(), "error: unexpected argument '--bogus' found");
    let (rc, _, err) = code(mybuild(&root).args(["run", "--memory", "1g", "busybox", "true"]));
    assert_eq!(rc, 125);
    assert!(err.contains("--memory needs cgroup v2 delegation"), "{err}");
    // The command's own code passes through.
    let (rc, so, _) =
        code(mybuild(&root).args(["run", "--rm", "busybox", "sh", "-c", "echo out; exit 7"]));
    assert_eq!((rc, so.as_str()), (7, "out\n"));
}

#[test]
fn the_image_config_and_options_combine_as_in_docker() {
    let Some((tmp, root)) = setup_run() else {
        return;
    };
    let ctx = context(
        tmp.path(),
        "FROM busybox\nENV A=image B=image\nWORKDIR /srv\nENTRYPOINT [\"echo\", \"ep\"]\nCMD [\"cmd\"]\n",
        &[],
    );
    ok(mybuild(&root)
        .args(["build", "--progress=plain", "-t", "cfg:1"])
        .arg(&ctx));
    let (so, _) = ok(mybuild(&root).args(["run", "--rm", "cfg:1"]));
    assert_eq!(so, "ep cmd\n");
    let (so, _) = ok(mybuild(&root).args(["run", "--rm", "cfg:1", "given"]));
    assert_eq!(so, "ep given\n");
    let (so, _) = ok(mybuild(&root).args([
        "run",
        "--rm",
        "-e",
        "B=option",
        "--entrypoint",
        "sh",
        "cfg:1",
        "-c",
        "echo $A $B $(pwd) $(id -u)",
    ]));
    assert_eq!(so, "image option /srv 0\n");
    // --env-file, then -e (K=V, or K from mybuild's environment).
    let env_file = tmp.path().join("env");
    std::fs::write(&env_file, "# comment\nB=file\nC=file\n").expect("env file");
    let (so, _) = ok(mybuild(&root)
        .env("FROM_HOST", "host")
        .arg("run")
        .arg("--env-file")
        .arg(&env_file)
        .args([
            "-e",
            "C=option",
            "-e",
            "FROM_HOST",
            "-e",
            "UNSET_HERE",
            "--entrypoint",
            "sh",
            "cfg:1",
            "-c",
            "echo $A $B $C $FROM_HOST ${UNSET_HERE-unset}",
        ]));
    assert_eq!(so, "image file option host unset\n");
    let (so, _) = ok(mybuild(&root).args([
        "run",
        "--rm",
        "-u",
        "1000:1000",
        "-w",
        "/tmp",
        "--entrypoint",
        "",
        "cfg:1",
        "sh",
        "-c",
        "echo $(id -u):$(id -g) $(pwd)",
    ]));
    assert_eq!(so, "1000:1000 /tmp\n");
    let (_, so, _) = with_stdin(
        mybuild(&root).args(["run", "--rm", "-i", "busybox", "cat"]),
        "piped in\n",
    );
    assert_eq!(so, "piped in\n");
}

#[test]
fn an_ordinary_user_runs_a_container() {
    if !testdata::require_tool("busybox") {
        return;
    }
    let Some(user) = AsUser::new("mbtest", &cargo_bin("mybuild"), true) else {
        return;
    };
    let root = store_with_busybox(user.dir.path());
    let archive = user.dir.path().join("busybox.tar");
    ok(mybuild(&root)
        .args(["save", "-o"])
        .arg(&archive)
        .arg("busybox"));
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&archive, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    ok(user.mybuild().args(["load", "-i"]).arg(&archive));
    let (so, se) =
        ok(user
            .mybuild()
            .args(["run", "--rm", "busybox", "sh", "-c", "id -u; echo ok"]));
    assert_eq!(so, "0\nok\n", "{se}");
    // Detached, as another user of the container: `stop` reaches it from a later
    // command's namespace.
    let script = "trap 'echo got TERM; exit 0' TERM; echo up; while :; do sleep 0.1; done";
    ok(user.mybuild().args([
        "run", "-d", "--name", "r1", "-u", "1000", "busybox", "sh", "-c", script,
    ]));
    poll_until("the container's output", || {
        let (so, _) = ok(user.mybuild().args(["logs", "r1"]));
        so.contains("up").then_some(())
    });
    ok(user.mybuild().args(["stop", "-t", "5", "r1"]));
    let (so, _) = ok(user.mybuild().args(["logs", "r1"]));
    assert_eq!(so, "up\ngot TERM\n");
    ok(user.mybuild().args(["rm", "r1"]));
}

#[test]
fn a_missing_image_is_pulled_first() {
    let Some((tmp, root)) = setup_run() else {
        return;
    };
    if !testdata::require_tool("docker-registry") {
        return;
    }
    let reg = testdata::registry::Registry::start();
    let image = format!("{}/lib/bb:1", reg.addr);
    ok(mybuild(&root).args(["push", "busybox", &image]));
    let empty = tmp.path().join("empty-store");
    let (rc, _, err) =
        code(mybuild(&empty).args(["run", "--rm", "--pull", "never", &image, "true"]));
    assert_eq!(rc, 125, "{err}");
    let (so, err) = ok(mybuild(&empty).args(["run", "--rm", &image, "echo", "pulled"]));
    assert_eq!(so, "pulled\n", "{err}");
    assert!(
        err.contains(&format!("Unable to find image '{image}' locally")),
        "{err}"
    );
    // Present now: --pull never runs it.
    let (so, _) =
        ok(mybuild(&empty).args(["run", "--rm", "--pull", "never", &image, "echo", "again"]));
    assert_eq!(so, "again\n");
}

#[test]
fn a_published_port_reaches_the_container_and_a_running_one_is_not_committed() {
    let Some((_tmp, root)) = setup_run() else {
        return;
    };
    if !testdata::require_tool("slirp4netns") {
        return;
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let publish = format!("127.0.0.1:{port}:8080");
    let script = "echo listening; while :; do echo hello | nc -l -p 8080; done";
    ok(mybuild(&root).args([
        "run", "-d", "--name", "p1", "-p", &publish, "busybox", "sh", "-c", script,
    ]));
    poll_until("the container's output", || {
        logs(&root, "p1").contains("listening").then_some(())
    });
    let reply = poll_until("a reply through the published port", || {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).ok()?;
        (!buf.is_empty()).then_some(buf)
    });
    assert_eq!(reply, "hello\n");
    let err = fails(mybuild(&root).args(["commit", "p1", "img:p"]));
    assert!(
        err.contains("the container is running; stop it first"),
        "{err}"
    );
    ok(mybuild(&root).args(["rm", "-f", "p1"]));

    let (c, _, err) = code(mybuild(&root).args([
        "run",
        "--rm",
        "--network",
        "none",
        "-p",
        &publish,
        "busybox",
        "true",
    ]));
    assert_eq!(c, 125, "{err}");
    assert!(err.contains("-p needs the default network"), "{err}");
    let (c, _, err) = code(mybuild(&root).args(["run", "--rm", "-p", "80", "busybox", "true"]));
    assert_eq!(c, 125, "{err}");
    assert!(err.contains("a host port is needed"), "{err}");
}
