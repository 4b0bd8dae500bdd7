//! Everyday Dockerfiles give the image BuildKit gives: WORKDIR, ENV, HOME, --chown,
//! COPY's directories, symlinked and hardlinked sources, ONBUILD, EXPOSE and
//! history, end to end on a busybox base, read back with umoci.

mod common;

use common::*;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

fn meta(rootfs: &Path, p: &str) -> std::fs::Metadata {
    std::fs::symlink_metadata(rootfs.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn owner_mode(rootfs: &Path, p: &str) -> (u32, u32, u32) {
    let m = meta(rootfs, p);
    (m.uid(), m.gid(), m.mode() & 0o7777)
}

fn env_of(img: &serde_json::Value) -> Vec<String> {
    img["Config"]["config"]["Env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn workdir_creates_its_directory_before_copy() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        "FROM busybox\n\
         WORKDIR /app\n\
         COPY package.json .\n\
         RUN pwd > /pwd && ls /app > /listing\n\
         USER app\n\
         WORKDIR /srv/data\n\
         WORKDIR /w\n\
         USER 4242\n\
         WORKDIR /by-uid\n\
         USER app\n\
         WORKDIR /app\n",
        &[("package.json", "{}\n")],
    );
    ok(mybuild(&root).args(["-t", "wd:1"]).arg(&ctx));
    let rootfs = unpack(tmp.path(), &root, "wd:1");
    assert!(meta(&rootfs, "app").is_dir(), "/app is a directory");
    assert_eq!(owner_mode(&rootfs, "app"), (0, 0, 0o755));
    assert_eq!(
        std::fs::read_to_string(rootfs.join("app/package.json")).expect("f"),
        "{}\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("pwd")).expect("pwd"),
        "/app\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("listing")).expect("ls"),
        "package.json\n"
    );
    // Under USER app: the new directories are app's (/srv too: it is new).
    assert_eq!(owner_mode(&rootfs, "srv/data"), (1000, 1000, 0o755));
    assert_eq!(owner_mode(&rootfs, "w"), (1000, 1000, 0o755));
    // A uid alone is also the group, as BuildKit's mkdir chowns.
    assert_eq!(owner_mode(&rootfs, "by-uid"), (4242, 4242, 0o755));
    let img = inspect(&root, "wd:1");
    assert_eq!(img["Config"]["config"]["WorkingDir"], "/app");
    let h = history(&img);
    // A WORKDIR that makes a directory has a layer; one whose directory exists has not.
    assert!(h.contains(&("WORKDIR /app".into(), false)), "{h:?}");
    assert!(h.contains(&("WORKDIR /w".into(), false)), "{h:?}");
    assert_eq!(h.last(), Some(&("WORKDIR /app".into(), true)), "{h:?}");
    let layers = img["Manifest"]["layers"].as_array().expect("layers").len();
    assert_eq!(h.iter().filter(|(_, empty)| !empty).count(), layers);
}

#[test]
fn workdir_follows_image_symlinks_inside_the_root() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        "FROM busybox\n\
         RUN mkdir /real && ln -s /real /lnk && ln -s ../../../real /up\n\
         WORKDIR /lnk/sub\n\
         RUN pwd -P > /pwd1\n\
         WORKDIR /up/other\n",
        &[],
    );
    ok(mybuild(&root).args(["-t", "wd:2"]).arg(&ctx));
    let rootfs = unpack(tmp.path(), &root, "wd:2");
    assert!(meta(&rootfs, "lnk").file_type().is_symlink());
    assert!(meta(&rootfs, "real/sub").is_dir());
    assert!(meta(&rootfs, "real/other").is_dir());
    assert_eq!(
        std::fs::read_to_string(rootfs.join("pwd1")).expect("pwd"),
        "/real/sub\n"
    );
}

#[test]
fn env_expands_from_values_before_the_instruction() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        "FROM busybox\nENV X=1\nENV X=2 Y=$X Z=${X}b\nRUN echo \"$X $Y $Z\" > /out\n",
        &[],
    );
    ok(mybuild(&root).args(["-t", "env:1"]).arg(&ctx));
    let env = env_of(&inspect(&root, "env:1"));
    assert!(env.contains(&"X=2".to_string()), "{env:?}");
    assert!(env.contains(&"Y=1".to_string()), "{env:?}");
    assert!(env.contains(&"Z=1b".to_string()), "{env:?}");
    let rootfs = unpack(tmp.path(), &root, "env:1");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("out")).expect("out"),
        "2 1 1b\n"
    );
}

#[test]
fn run_sets_home_from_the_user_without_changing_the_config() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        "FROM busybox\n\
         RUN echo \"$HOME\" > /root-home\n\
         RUN [\"/bin/sh\", \"-c\", \"echo $HOME > /exec-home\"]\n\
         USER app\n\
         RUN echo \"$HOME\" > /tmp/app-home\n\
         USER 4242\n\
         RUN echo \"$HOME\" > /tmp/nobody-home\n\
         USER root\n\
         ENV HOME=/custom\n\
         RUN echo \"$HOME\" > /env-home\n",
        &[],
    );
    ok(mybuild(&root).args(["-t", "home:1"]).arg(&ctx));
    let rootfs = unpack(tmp.path(), &root, "home:1");
    let read = |p: &str| std::fs::read_to_string(rootfs.join(p)).expect(p);
    assert_eq!(read("root-home"), "/root\n");
    assert_eq!(read("exec-home"), "/root\n");
    assert_eq!(read("tmp/app-home"), "/home/app\n");
    assert_eq!(read("tmp/nobody-home"), "/\n");
    assert_eq!(read("env-home"), "/custom\n");
    // Only the ENV the Dockerfile set reaches the config.
    let env = env_of(&inspect(&root, "home:1"));
    assert_eq!(
        env.iter()
            .filter(|e| e.starts_with("HOME="))
            .collect::<Vec<_>>(),
        ["HOME=/custom"]
    );
    ok(mybuild(&root).args(["-t", "home:2"]).arg(context(
        tmp.path(),
        "FROM busybox\nRUN true\n",
        &[("x", "")],
    )));
    assert!(!env_of(&inspect(&root, "home:2"))
        .iter()
        .any(|e| e.starts_with("HOME=")));
}

#[test]
fn chown_with_a_uid_alone_uses_it_as_the_group() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        "FROM busybox\n\
         COPY --chown=3000 f /uid-only\n\
         COPY --chown=app f /name-only\n\
         COPY --chown=1000 f /uid-of-app\n\
         COPY --chown=3000:7 f /both\n\
         COPY --link --chown=3001 f /linked\n",
        &[("f", "x\n")],
    );
    ok(mybuild(&root).args(["-t", "chown:1"]).arg(&ctx));
    let rootfs = unpack(tmp.path(), &root, "chown:1");
    let ids = |p: &str| {
        let m = meta(&rootfs, p);
        (m.uid(), m.gid())
    };
    assert_eq!(ids("uid-only"), (3000, 3000));
    assert_eq!(ids("name-only"), (1000, 1000));
    assert_eq!(ids("uid-of-app"), (1000, 1000));
    assert_eq!(ids("both"), (3000, 7));
    assert_eq!(ids("linked"), (3001, 3001));
}

#[test]
fn directories_copy_creates_take_the_chown_owner() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        "FROM busybox\n\
         COPY --chown=1000:1000 f /new/dir/f\n\
         COPY --chown=2000:2000 d /etc/made/deeper/\n\
         ADD --chown=3000:3000 f /added/here/\n",
        &[("f", "x\n"), ("d/g", "y\n")],
    );
    ok(mybuild(&root).args(["-t", "dirs:1"]).arg(&ctx));
    let rootfs = unpack(tmp.path(), &root, "dirs:1");
    assert_eq!(owner_mode(&rootfs, "new"), (1000, 1000, 0o755));
    assert_eq!(owner_mode(&rootfs, "new/dir"), (1000, 1000, 0o755));
    assert_eq!(owner_mode(&rootfs, "new/dir/f").0, 1000);
    // An existing parent keeps the image's owner.
    assert_eq!(owner_mode(&rootfs, "etc").0, 0);
    assert_eq!(owner_mode(&rootfs, "etc/made"), (2000, 2000, 0o755));
    assert_eq!(owner_mode(&rootfs, "etc/made/deeper"), (2000, 2000, 0o755));
    assert_eq!(owner_mode(&rootfs, "etc/made/deeper/g").0, 2000);
    assert_eq!(owner_mode(&rootfs, "added/here"), (3000, 3000, 0o755));
    assert_eq!(owner_mode(&rootfs, "added/here/f").0, 3000);
}

#[test]
fn onbuild_triggers_are_cleared_after_they_run() {
    let Some((tmp, root)) = setup() else { return };
    let parent = context(
        tmp.path(),
        "FROM busybox\nONBUILD RUN echo ran >> /ran\n",
        &[],
    );
    ok(mybuild(&root).args(["-t", "parent:1"]).arg(&parent));
    let img = inspect(&root, "parent:1");
    assert_eq!(
        img["Config"]["config"]["OnBuild"],
        serde_json::json!(["RUN echo ran >> /ran"])
    );
    let child = context(tmp.path(), "FROM parent:1\nRUN true\n", &[("c", "")]);
    ok(mybuild(&root).args(["-t", "child:1"]).arg(&child));
    let img = inspect(&root, "child:1");
    assert!(img["Config"]["config"]["OnBuild"].is_null(), "{img}");
    let grandchild = context(tmp.path(), "FROM child:1\n", &[("g", ""), ("h", "")]);
    ok(mybuild(&root).args(["-t", "grandchild:1"]).arg(&grandchild));
    let rootfs = unpack(tmp.path(), &root, "grandchild:1");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("ran")).expect("ran"),
        "ran\n",
        "the trigger ran once, in the child only"
    );
    // Within one file: a stage's own triggers run in a stage built FROM it, not after.
    let stages = context(
        tmp.path(),
        "FROM busybox AS a\nONBUILD RUN echo ran >> /ran\n\
         FROM a AS b\nRUN true\n\
         FROM b\nRUN cat /ran > /seen\n",
        &[("s", ""), ("t", ""), ("u", "")],
    );
    ok(mybuild(&root).args(["-t", "stages:1"]).arg(&stages));
    let rootfs = unpack(tmp.path(), &root, "stages:1");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("seen")).expect("seen"),
        "ran\n"
    );
    assert!(inspect(&root, "stages:1")["Config"]["config"]["OnBuild"].is_null());
}

#[test]
fn expose_is_normalised_and_validated() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        "FROM busybox\nARG P=9000\nEXPOSE 80 53/UDP 7000-7002 $P/Sctp\n",
        &[],
    );
    ok(mybuild(&root).args(["-t", "expose:1"]).arg(&ctx));
    let img = inspect(&root, "expose:1");
    let ports = img["Config"]["config"]["ExposedPorts"]
        .as_object()
        .expect("ports");
    let mut keys: Vec<&str> = ports.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "53/udp",
            "7000/tcp",
            "7001/tcp",
            "7002/tcp",
            "80/tcp",
            "9000/sctp"
        ]
    );
    // BuildKit sorts the words as written (`$P/Sctp` first) before expanding them.
    assert!(history(&img).contains(&(
        "EXPOSE [9000/sctp 53/udp 7000/tcp 7001/tcp 7002/tcp 80/tcp]".into(),
        true
    )));
    for (bad, why) in [
        ("abc", "invalid containerPort: abc"),
        ("80/foo", "invalid proto: foo"),
    ] {
        let ctx = context(
            tmp.path(),
            &format!("FROM busybox\n\nEXPOSE 8080 {bad}\n"),
            &[("bad", bad)],
        );
        let err = fails(mybuild(&root).args(["-t", "expose:bad"]).arg(&ctx));
        assert!(err.contains("Dockerfile:3:"), "{err}");
        assert!(err.contains(why), "{err}");
    }
}

/// Builds `ctx` as `tag`; the image id.
fn build_id(root: &Path, ctx: &Path, tag: &str, extra: &[&str]) -> String {
    let iid = ctx.with_extension(format!("{}.iid", tag.replace(':', "-")));
    ok(mybuild(root)
        .args(["build", "-t", tag, "--iidfile"])
        .arg(&iid)
        .args(extra)
        .arg(ctx));
    std::fs::read_to_string(&iid).expect("iid")
}

#[test]
fn history_records_build_args_as_buildkit_writes_them() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        "FROM busybox AS base\n\
         RUN echo none\n\
         ARG A=1\n\
         ARG B\n\
         ENV C=3\n\
         ARG C=ignored\n\
         RUN echo hi\n\
         RUN [\"echo\", \"x\"]\n\
         FROM base\n\
         ARG D=4\n\
         RUN echo child\n",
        &[],
    );
    let first = build_id(&root, &ctx, "hist:1", &[]);
    let h: Vec<(String, bool)> = history(&inspect(&root, "hist:1"))
        .into_iter()
        .filter(|(c, _)| !c.starts_with("ADD") && !c.starts_with("ENV PATH"))
        .collect();
    let want: Vec<(String, bool)> = [
        ("RUN /bin/sh -c echo none # buildkit", true),
        ("ARG A=1", true),
        ("ARG B", true),
        ("ENV C=3", true),
        ("ARG C=ignored", true),
        // An ARG declared after an ENV wins for RUN; the child stage inherits it.
        (
            "RUN |3 A=1 B= C=ignored /bin/sh -c echo hi # buildkit",
            true,
        ),
        ("RUN |3 A=1 B= C=ignored echo x # buildkit", true),
        ("ARG D=4", true),
        (
            "RUN |4 A=1 B= C=ignored D=4 /bin/sh -c echo child # buildkit",
            true,
        ),
    ]
    .iter()
    .map(|(c, e)| (c.to_string(), *e))
    .collect();
    assert_eq!(h[h.len() - want.len()..], want[..], "{h:#?}");
    // Cached steps make the same image again.
    assert_eq!(build_id(&root, &ctx, "hist:1", &[]), first);
    // A build arg changes the prefix (and the image).
    let second = build_id(&root, &ctx, "hist:2", &["--build-arg", "B=2"]);
    assert_ne!(second, first);
    let h = history(&inspect(&root, "hist:2"));
    assert!(h.contains(&(
        "RUN |3 A=1 B=2 C=ignored /bin/sh -c echo hi # buildkit".into(),
        true
    )));
    assert_eq!(
        build_id(&root, &ctx, "hist:2", &["--build-arg", "B=2"]),
        second
    );
    // An ARG no RUN follows still reaches the history, so the image changes.
    let tail = context(
        tmp.path(),
        "FROM busybox\nCOPY f /f\nARG V=1\n",
        &[("f", "f")],
    );
    let v1 = build_id(&root, &tail, "hist:3", &[]);
    let v2 = build_id(&root, &tail, "hist:3", &["--build-arg", "V=2"]);
    assert_ne!(v1, v2);
    assert!(history(&inspect(&root, "hist:3")).contains(&("ARG V=2".into(), true)));
    assert_eq!(build_id(&root, &tail, "hist:3", &[]), v1);
}

#[test]
fn a_symlink_named_as_a_copy_source_copies_its_target() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        "FROM busybox AS s\n\
         RUN mkdir -p /data && echo S > /data/s && ln -s /data/s /abs && ln -s ../../../data/s /rel\n\
         FROM busybox\n\
         COPY link.txt /copied.txt\n\
         COPY link.txt /into/\n\
         COPY dir /d/\n\
         COPY linkdir/f /viadir\n\
         COPY l*.txt /glob/\n\
         COPY --from=s /abs /from-abs\n\
         COPY --from=s /rel /from-rel\n",
        &[("real.txt", "R\n"), ("dir/f", "F\n")],
    );
    use std::os::unix::fs::symlink;
    symlink("real.txt", ctx.join("link.txt")).expect("link");
    symlink("../real.txt", ctx.join("dir/in")).expect("inner link");
    symlink("dir", ctx.join("linkdir")).expect("dir link");
    ok(mybuild(&root).args(["-t", "links:1"]).arg(&ctx));
    let rootfs = unpack(tmp.path(), &root, "links:1");
    let file = |p: &str| {
        assert!(meta(&rootfs, p).is_file(), "{p} is a regular file");
        std::fs::read_to_string(rootfs.join(p)).expect(p)
    };
    assert_eq!(file("copied.txt"), "R\n");
    assert_eq!(file("into/link.txt"), "R\n");
    assert_eq!(file("viadir"), "F\n");
    assert_eq!(file("glob/link.txt"), "R\n");
    assert_eq!(file("from-abs"), "S\n");
    assert_eq!(file("from-rel"), "S\n");
    // Inside a copied directory a link stays a link.
    assert!(meta(&rootfs, "d/in").file_type().is_symlink());
    assert_eq!(
        std::fs::read_link(rootfs.join("d/in")).expect("in"),
        Path::new("../real.txt")
    );
    // A link leading out of the context is an error naming it.
    for (name, target) in [("out", "../outside.txt"), ("abs", "/etc/passwd")] {
        let ctx = context(
            tmp.path(),
            &format!("FROM busybox\nCOPY {name} /x\n"),
            &[("a", ""), ("b", ""), ("c", ""), ("d", "")],
        );
        std::fs::write(ctx.parent().expect("parent").join("outside.txt"), "secret").expect("w");
        symlink(target, ctx.join(name)).expect("link");
        let err = fails(mybuild(&root).args(["-t", "links:bad"]).arg(&ctx));
        assert!(err.contains("outside the build context"), "{err}");
        assert!(err.contains(&format!("{name:?}")), "{err}");
        assert!(err.contains(target), "{err}");
        std::fs::remove_dir_all(&ctx).expect("rm");
    }
}

#[test]
fn hardlinks_survive_copy_and_copy_from() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        "FROM busybox AS s\n\
         RUN mkdir /m && echo M > /m/one && ln /m/one /m/two\n\
         FROM busybox\n\
         COPY hl /hl/\n\
         COPY --from=s /m /m/\n",
        &[("hl/a", "A\n")],
    );
    std::fs::hard_link(ctx.join("hl/a"), ctx.join("hl/b")).expect("hardlink");
    ok(mybuild(&root).args(["-t", "hard:1"]).arg(&ctx));
    let rootfs = unpack(tmp.path(), &root, "hard:1");
    for (a, b) in [("hl/a", "hl/b"), ("m/one", "m/two")] {
        let (ma, mb) = (meta(&rootfs, a), meta(&rootfs, b));
        assert_eq!(ma.ino(), mb.ino(), "{a} and {b} are one inode");
        assert_eq!(ma.nlink(), 2);
    }
    assert_eq!(
        std::fs::read_to_string(rootfs.join("m/two")).expect("two"),
        "M\n"
    );
    // In the layer: one file and a hardlink entry.
    let img = inspect(&root, "hard:1");
    let layers = img["Manifest"]["layers"].as_array().expect("layers");
    let last = layers.last().expect("layer")["digest"]
        .as_str()
        .expect("digest")
        .to_string();
    let blob = root.join("blobs/sha256").join(&last[7..]);
    let out = std::process::Command::new("tar")
        .arg("-tvf")
        .arg(&blob)
        .output()
        .expect("tar");
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with('h') && l.contains("link to")),
        "{listing}"
    );
}

#[test]
fn an_arg_declared_after_an_env_wins_in_run_but_not_in_the_config() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        "FROM busybox\n\
         ENV V=env W=env\n\
         ARG V=arg\n\
         ARG W\n\
         RUN echo \"$V $W\" > /vw\n\
         LABEL v=$V\n\
         ARG U=arg\n\
         ENV U=env\n\
         RUN echo \"$U\" > /u\n",
        &[],
    );
    ok(mybuild(&root).args(["-t", "argenv:1"]).arg(&ctx));
    let rootfs = unpack(tmp.path(), &root, "argenv:1");
    let read = |p: &str| std::fs::read_to_string(rootfs.join(p)).expect(p);
    // An ARG without a value leaves the ENV as it was.
    assert_eq!(read("vw"), "arg env\n");
    assert_eq!(read("u"), "env\n");
    let img = inspect(&root, "argenv:1");
    let env = env_of(&img);
    for want in ["V=env", "W=env", "U=env"] {
        assert!(env.contains(&want.to_string()), "{env:?}");
    }
    assert_eq!(img["Config"]["config"]["Labels"]["v"], "arg");
    assert!(history(&img).contains(&(
        "RUN |2 V=arg W=env /bin/sh -c echo \"$V $W\" > /vw # buildkit".into(),
        false
    )));
}

#[test]
fn a_stage_built_on_another_inherits_its_args() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        "FROM busybox AS base\n\
         ARG NAME=joe\n\
         FROM base AS build\n\
         RUN echo \"hello $NAME\" > /hello\n\
         LABEL name=$NAME\n\
         FROM busybox\n\
         COPY --from=build /hello /hello\n\
         RUN echo \"[$NAME]\" > /unrelated\n",
        &[],
    );
    ok(mybuild(&root).args(["-t", "inherit:1"]).arg(&ctx));
    let rootfs = unpack(tmp.path(), &root, "inherit:1");
    let read = |p: &str| std::fs::read_to_string(rootfs.join(p)).expect(p);
    assert_eq!(read("hello"), "hello joe\n");
    // A stage not built on it does not see it.
    assert_eq!(read("unrelated"), "[]\n");
    ok(mybuild(&root)
        .args(["-t", "inherit:2", "--target", "build"])
        .arg(&ctx));
    let img = inspect(&root, "inherit:2");
    assert_eq!(img["Config"]["config"]["Labels"]["name"], "joe");
    assert!(!env_of(&img).iter().any(|e| e.starts_with("NAME=")));
}

#[test]
fn a_directory_copied_to_a_new_destination_keeps_its_mode() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        "FROM busybox\nCOPY d /made\nCOPY d /made2/\nCOPY d /etc/\nCOPY --chmod=0700 d /private/\n",
        &[("d/f", "F\n")],
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(ctx.join("d"), std::fs::Permissions::from_mode(0o750)).expect("chmod");
    ok(mybuild(&root).args(["-t", "dirmode:1"]).arg(&ctx));
    let rootfs = unpack(tmp.path(), &root, "dirmode:1");
    assert_eq!(owner_mode(&rootfs, "made"), (0, 0, 0o750));
    assert_eq!(owner_mode(&rootfs, "made2"), (0, 0, 0o750));
    assert_eq!(owner_mode(&rootfs, "private"), (0, 0, 0o700));
    // An existing destination keeps its own mode.
    assert_eq!(owner_mode(&rootfs, "etc"), (0, 0, 0o755));
    assert!(meta(&rootfs, "etc/f").is_file());
}
