//! Hostile and huge input stays bounded, and the first things a new user sees read
//! right: deep trees, deep expansions, costly `.dockerignore` patterns, big secrets,
//! special files as `-o dest=` or in the context, and the messages of a failing build.

use std::path::{Path, PathBuf};

mod common;

use common::{context, fails, mybuild, ok};

const DEEP: usize = 1500;

/// `deep/d/d/.../d` (`DEEP` levels below `deep`) as a relative path.
fn deep_rel() -> PathBuf {
    let mut p = PathBuf::from("deep");
    for _ in 0..DEEP {
        p.push("d");
    }
    p
}

fn local_out(tmp: &Path, name: &str) -> (PathBuf, String) {
    let dir = tmp.join(name);
    let spec = format!("type=local,dest={}", dir.display());
    (dir, spec)
}

#[test]
fn copy_of_a_1500_level_context_tree_builds() {
    let Some((tmp, root)) = common::setup() else {
        return;
    };
    let ctx = context(tmp.path(), "FROM busybox\nCOPY deep /deep\n", &[]);
    let leaf = ctx.join(deep_rel());
    std::fs::create_dir_all(&leaf).expect("deep dirs");
    std::fs::write(leaf.join("f"), "bottom\n").expect("deep file");
    let (out, spec) = local_out(tmp.path(), "out");
    ok(mybuild(&root)
        .args(["build", "-t", "deep:1", "-o", &spec])
        .arg(&ctx));
    let got = std::fs::read_to_string(out.join(deep_rel()).join("f")).expect("deepest file");
    assert_eq!(got, "bottom\n");
}

#[test]
fn run_writing_a_1500_level_tree_builds() {
    let Some((tmp, root)) = common::setup() else {
        return;
    };
    // 15 chunks of 100 levels, each made relative to the last, so no path given to
    // mkdir comes near PATH_MAX.
    let df = format!(
        "FROM busybox\n\
         RUN mkdir /deep && cd /deep && j=0; while [ $j -lt {} ]; do \
         p=d; i=1; while [ $i -lt 100 ]; do p=$p/d; i=$((i+1)); done; \
         mkdir -p $p && cd $p; j=$((j+1)); done; echo bottom > f\n\
         RUN cd /deep && find . -name f | wc -l > /count\n",
        DEEP / 100
    );
    let ctx = context(tmp.path(), &df, &[]);
    let (out, spec) = local_out(tmp.path(), "out");
    ok(mybuild(&root)
        .args(["build", "-t", "deep:2", "-o", &spec])
        .arg(&ctx));
    let got = std::fs::read_to_string(out.join(deep_rel()).join("f")).expect("deepest file");
    assert_eq!(got, "bottom\n");
    assert_eq!(
        std::fs::read_to_string(out.join("count")).unwrap().trim(),
        "1"
    );
}

#[test]
fn copy_of_a_fifo_socket_or_device_in_the_context_is_an_error_naming_it() {
    let Some((tmp, root)) = common::setup() else {
        return;
    };
    let ctx = context(tmp.path(), "FROM busybox\nCOPY fifo /x\n", &[]);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        ctx.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .expect("mkfifo");
    let err = fails(mybuild(&root).args(["build", "-t", "f:1"]).arg(&ctx));
    assert!(
        err.contains("fifo: named pipe (FIFO) in the build context"),
        "{err}"
    );

    // Inside a copied directory too, and for sockets and devices.
    let ctx = context(
        tmp.path(),
        "FROM busybox\nCOPY dir /x/\n",
        &[("dir/a", "a")],
    );
    let sock = ctx.join("dir/sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).expect("socket");
    let err = fails(mybuild(&root).args(["build", "-t", "f:2"]).arg(&ctx));
    assert!(
        err.contains("dir/sock: socket in the build context"),
        "{err}"
    );
    std::fs::remove_file(&sock).expect("rm socket");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        ctx.join("dir/null"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .expect("mknod");
    let err = fails(mybuild(&root).args(["build", "-t", "f:3"]).arg(&ctx));
    assert!(
        err.contains("dir/null: character device in the build context"),
        "{err}"
    );
}

#[test]
fn dockerignore_with_a_5kb_wildcard_line_over_a_40_level_tree_is_fast() {
    let Some((tmp, root)) = common::setup() else {
        return;
    };
    let ignore = format!("{}y\n", "*".repeat(5000));
    let ctx = context(
        tmp.path(),
        "FROM busybox\nCOPY . /ctx/\n",
        &[(".dockerignore", ignore.as_str())],
    );
    let mut leaf = ctx.clone();
    for _ in 0..40 {
        leaf.push("d");
    }
    std::fs::create_dir_all(&leaf).expect("dirs");
    std::fs::write(leaf.join("y"), "ignored").expect("y");
    std::fs::write(leaf.join("kept"), "kept").expect("kept");
    let (out, spec) = local_out(tmp.path(), "out");
    let started = std::time::Instant::now();
    ok(mybuild(&root)
        .args(["build", "-t", "ig:1", "-o", &spec])
        .arg(&ctx));
    let took = started.elapsed();
    // Bounded, not a benchmark: it used to take 47 s and 2.5 GB.
    assert!(took < std::time::Duration::from_secs(20), "took {took:?}");
    let below = out.join("ctx").join(leaf.strip_prefix(&ctx).unwrap());
    assert_eq!(std::fs::read_to_string(below.join("kept")).unwrap(), "kept");
    assert!(
        !below.join("y").exists(),
        "`**...*y` ignores y at any depth"
    );
}

/// `${a:-${a:-...x...}}`, `depth` levels, continued over lines of 1,000 levels
/// (a physical line may not pass 64 KiB).
fn nested(depth: usize) -> String {
    let open = vec!["${a:-".repeat(1000); depth / 1000].join("\\\n");
    let close = vec!["}".repeat(1000); depth / 1000].join("\\\n");
    let rest = depth % 1000;
    format!("{open}{}x{}{close}", "${a:-".repeat(rest), "}".repeat(rest))
}

#[test]
fn expansion_nested_12000_or_20000_deep_is_a_clear_error_naming_the_line() {
    let Some((tmp, root)) = common::setup() else {
        return;
    };
    for depth in [12_000, 20_000] {
        let df = format!("FROM busybox\nENV X={}\n", nested(depth));
        let ctx = context(tmp.path(), &df, &[]);
        let (ok, _, err) = common::run(mybuild(&root).args(["build", "-t", "n:1"]).arg(&ctx));
        assert!(!ok, "{depth} levels built");
        assert!(err.contains("nested deeper than 1000 levels"), "{err}");
        assert!(err.contains("Dockerfile:2"), "names the line: {err}");
        assert!(
            err.len() < 10_000,
            "the word is not quoted whole: {} bytes",
            err.len()
        );
    }
    // Within the limit, the value is the innermost default.
    let df = format!("FROM busybox\nENV X={}\nRUN test \"$X\" = x\n", nested(900));
    let ctx = context(tmp.path(), &df, &[]);
    ok(mybuild(&root).args(["build", "-t", "n:2"]).arg(&ctx));
}

#[test]
fn secret_from_dev_zero_is_read_only_when_mounted_and_only_up_to_500_kib() {
    let Some((tmp, root)) = common::setup() else {
        return;
    };
    // No step mounts it: nothing is read.
    let ctx = context(tmp.path(), "FROM busybox\nRUN true\n", &[]);
    ok(mybuild(&root)
        .args(["build", "-t", "s:1", "--secret", "id=z,src=/dev/zero"])
        .arg(&ctx));
    // Mounted: a clear error, fast, not memory growing without end.
    let ctx = context(
        tmp.path(),
        "FROM busybox\nRUN --mount=type=secret,id=z wc -c /run/secrets/z\n",
        &[],
    );
    let started = std::time::Instant::now();
    let err = fails(
        mybuild(&root)
            .args(["build", "-t", "s:2", "--secret", "id=z,src=/dev/zero"])
            .arg(&ctx),
    );
    assert!(
        err.contains("secret z: /dev/zero is larger than the 500 KiB limit for a secret"),
        "{err}"
    );
    assert!(err.contains("Dockerfile:2"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    // A regular file over the limit is refused at once; one at the limit is mounted.
    let big = tmp.path().join("big");
    std::fs::write(&big, vec![b'a'; 500 * 1024 + 1]).expect("big");
    let err = fails(
        mybuild(&root)
            .args(["build", "-t", "s:3", "--secret"])
            .arg(format!("id=z,src={}", big.display()))
            .arg(&ctx),
    );
    assert!(err.contains("--secret id=z"), "{err}");
    assert!(err.contains("larger than the 500 KiB limit"), "{err}");
    std::fs::write(&big, vec![b'a'; 500 * 1024]).expect("limit");
    let (so, se) = ok(mybuild(&root)
        .args(["build", "-t", "s:4", "--progress", "plain", "--secret"])
        .arg(format!("id=z,src={}", big.display()))
        .arg(&ctx));
    assert!(
        format!("{so}{se}").contains("512000 /run/secrets/z"),
        "{so}{se}"
    );
}

fn mknod(path: &Path, kind: rustix::fs::FileType, dev: rustix::fs::Dev) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        kind,
        rustix::fs::Mode::from_raw_mode(0o666),
        dev,
    )
    .expect("mknod");
}

/// The names in a tar's bytes.
fn tar_names(bytes: &[u8]) -> Vec<String> {
    tar::Archive::new(bytes)
        .entries()
        .expect("tar")
        .map(|e| {
            e.expect("entry")
                .path()
                .expect("path")
                .display()
                .to_string()
        })
        .collect()
}

#[test]
fn output_dest_that_is_a_device_fifo_or_symlink_is_written_into_not_replaced() {
    use std::os::unix::fs::FileTypeExt;
    let Some((tmp, root)) = common::setup() else {
        return;
    };
    let ctx = context(tmp.path(), "FROM busybox\nRUN echo hi > /hi\n", &[]);
    // A char device like /dev/null, made here so no host device is at stake.
    let null = tmp.path().join("null");
    mknod(
        &null,
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::makedev(1, 3),
    );
    for kind in ["tar", "oci", "docker"] {
        ok(mybuild(&root)
            .args(["build", "-t", "o:1", "-o"])
            .arg(format!("type={kind},dest={}", null.display()))
            .arg(&ctx));
        let md = std::fs::symlink_metadata(&null).expect("still there");
        assert!(
            md.file_type().is_char_device(),
            "type={kind} replaced the device"
        );
    }

    // A FIFO gets the archive's bytes.
    let fifo = tmp.path().join("fifo");
    mknod(&fifo, rustix::fs::FileType::Fifo, 0);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(&fifo).expect("read fifo"))
    };
    ok(mybuild(&root)
        .args(["build", "-t", "o:1", "-o"])
        .arg(format!("type=tar,dest={}", fifo.display()))
        .arg(&ctx));
    let bytes = reader.join().expect("reader");
    assert!(
        tar_names(&bytes).iter().any(|n| n == "hi"),
        "the rootfs came through"
    );
    let md = std::fs::symlink_metadata(&fifo).expect("fifo");
    assert!(md.file_type().is_fifo(), "the FIFO was replaced");

    // A symlink is written through, as buildx's os.Create does; the link stays.
    let target = tmp.path().join("real.tar");
    std::fs::write(&target, "old").expect("target");
    let link = tmp.path().join("link.tar");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    ok(mybuild(&root)
        .args(["build", "-t", "o:1", "-o"])
        .arg(format!("type=tar,dest={}", link.display()))
        .arg(&ctx));
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    let bytes = std::fs::read(&target).expect("target written");
    assert!(tar_names(&bytes).iter().any(|n| n == "hi"));
    // A dangling one creates its target.
    let gone = tmp.path().join("new.tar");
    let dangling = tmp.path().join("dangling.tar");
    std::os::unix::fs::symlink(&gone, &dangling).expect("symlink");
    ok(mybuild(&root)
        .args(["build", "-t", "o:1", "-o"])
        .arg(format!("type=oci,dest={}", dangling.display()))
        .arg(&ctx));
    assert!(std::fs::symlink_metadata(&dangling)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(tar_names(&std::fs::read(&gone).unwrap())
        .iter()
        .any(|n| n == "index.json"));

    // A directory is refused, as buildx does.
    let err = fails(
        mybuild(&root)
            .args(["build", "-t", "o:1", "-o"])
            .arg(format!("type=tar,dest={}", tmp.path().display()))
            .arg(&ctx),
    );
    assert!(err.contains("is a directory"), "{err}");
}

#[test]
fn a_misspelt_verb_is_not_a_command_and_build_is_suggested() {
    let Some((tmp, root)) = common::setup() else {
        return;
    };
    let ctx = context(tmp.path(), "FROM busybox\n", &[]);
    let (success, _, err) = common::run(
        mybuild(&root)
            .args(["buidl", "-t", "x:1", "."])
            .current_dir(&ctx),
    );
    assert!(!success);
    assert!(
        err.contains("unknown command \"buidl\"; did you mean \"build\"?"),
        "{err}"
    );
    // The verb stays optional: `mybuild -t x .`, `mybuild .`, and a context directory
    // whose name looks like a verb.
    ok(mybuild(&root).args(["-t", "x:1", "."]).current_dir(&ctx));
    ok(mybuild(&root).arg(".").current_dir(&ctx));
    let odd = context(tmp.path().join("in").as_path(), "FROM busybox\n", &[]);
    let named = odd.with_file_name("buidl");
    std::fs::rename(&odd, &named).expect("rename");
    ok(mybuild(&root)
        .args(["-t", "x:2", "buidl"])
        .current_dir(named.parent().unwrap()));
}

#[test]
fn a_failing_multi_line_run_shows_its_lines_marked_and_the_command_once() {
    let Some((tmp, root)) = common::setup() else {
        return;
    };
    let ctx = context(
        tmp.path(),
        "FROM busybox\nRUN false && \\\n    echo\nRUN true\n",
        &[],
    );
    let err = fails(mybuild(&root).args(["build", "-t", "f:1"]).arg(&ctx));
    let block = "Dockerfile:2\n\
                 --------------------\n   \
                 1 |     FROM busybox\n   \
                 2 | >>> RUN false && \\\n   \
                 3 | >>>     echo\n   \
                 4 |     RUN true\n\
                 --------------------\n\
                 error: process \"/bin/sh -c false &&     echo\" did not complete successfully: exit code: 1\n";
    assert!(err.ends_with(block), "{err}");
    assert_eq!(err.matches("/bin/sh -c false").count(), 1, "{err}");
}

#[test]
fn a_first_build_prints_no_cache_miss_line_and_warnings_have_one_prefix() {
    let Some((tmp, root)) = common::setup() else {
        return;
    };
    let ctx = context(tmp.path(), "FROM busybox\nRUN echo one > /one\n", &[]);
    let (_, err) = ok(mybuild(&root)
        .args([
            "build",
            "--progress",
            "plain",
            "-t",
            "c:1",
            "--build-arg",
            "UNUSED=1",
        ])
        .arg(&ctx));
    assert!(!err.contains("cache miss"), "{err}");
    assert!(!err.contains("no earlier build"), "{err}");
    assert!(
        err.contains("WARNING: One or more build-args [UNUSED] were not consumed"),
        "{err}"
    );
    assert!(!err.contains("[Warning]"), "{err}");
    // A change is still explained.
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nARG V=2\nRUN echo $V > /one\n",
    )
    .expect("edit");
    let (_, err) = ok(mybuild(&root)
        .args(["build", "--progress", "plain", "-t", "c:1", "--no-cache"])
        .arg(&ctx));
    assert!(err.contains("(cache miss: "), "{err}");
}

#[test]
fn progress_rawjson_is_refused_naming_the_values_that_exist() {
    let tmp = tempfile::TempDir::new().expect("tmp");
    let root = tmp.path().join("store");
    for verb in ["build", "pull"] {
        let err = fails(mybuild(&root).args([verb, "--progress", "rawjson", "x"]));
        assert!(
            err.contains("invalid value 'rawjson' for '--progress"),
            "{err}"
        );
        assert!(err.contains("json"), "{err}");
    }
}
