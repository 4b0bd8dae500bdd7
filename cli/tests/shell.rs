//! Shell conventions, end to end with the real binary: completion scripts that bash
//! sources, man pages that groff renders, `version`, the unknown-command message, and
//! the build conveniences (`--load`, `--progress=quiet`, `BUILDKIT_PROGRESS`,
//! `SOURCE_DATE_EPOCH` as a build arg).

mod common;

use common::*;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use assert_cmd::cargo::CommandCargoExt;

fn bin() -> PathBuf {
    Command::cargo_bin("mybuild")
        .expect("binary")
        .get_program()
        .into()
}

/// The binary alone, in an empty directory, with a store of its own.
fn plain() -> (tempfile::TempDir, Command) {
    let tmp = tempfile::TempDir::new().expect("tmp");
    let mut c = mybuild(&tmp.path().join("store"));
    c.current_dir(tmp.path());
    (tmp, c)
}

#[test]
fn bash_sources_the_completion_script_and_completes_verbs() {
    if !testdata::require_tool("bash") {
        return;
    }
    let script = format!(
        "source <('{}' completion bash) && complete -p mybuild && \
         COMP_WORDS=(mybuild ima) COMP_CWORD=1 && _mybuild mybuild ima mybuild && \
         echo \"reply: ${{COMPREPLY[*]}}\"",
        bin().display()
    );
    let (out, err) = ok(Command::new("bash").arg("-c").arg(&script));
    assert!(err.is_empty(), "bash complained: {err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("complete ") && l.ends_with("-F _mybuild mybuild")),
        "{out}"
    );
    let reply = out
        .lines()
        .find_map(|l| l.strip_prefix("reply: "))
        .expect("reply");
    assert_eq!(reply.split_whitespace().collect::<Vec<_>>(), ["images"]);

    // `completions` is the same verb; zsh and fish get scripts naming the verbs.
    let (_tmp, mut c) = plain();
    let (bash, _) = ok(c.args(["completions", "bash"]));
    assert!(bash.contains("_mybuild()"), "{bash}");
    for shell in ["zsh", "fish"] {
        let (_tmp, mut c) = plain();
        let (text, _) = ok(c.args(["completion", shell]));
        for verb in ["images", "build", "completion", "version"] {
            assert!(text.contains(verb), "{shell} script lacks {verb}:\n{text}");
        }
    }
    let (_tmp, mut c) = plain();
    assert!(ok(c.args(["completion", "zsh"]))
        .0
        .starts_with("#compdef mybuild"));
    let (_tmp, mut c) = plain();
    let err = fails(c.args(["completion", "tcsh"]));
    assert!(err.contains("invalid value 'tcsh'"), "{err}");
}

/// groff's UTF-8 typography back to ASCII, and all white space to one space.
fn normalized(text: &str) -> String {
    text.replace(['‘', '`'], "`")
        .replace('’', "'")
        .replace(['‐', '−'], "-")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn every_man_page_renders_with_its_verbs_about_text() {
    if !testdata::require_tool("groff") {
        return;
    }
    let (tmp, mut c) = plain();
    let dir = tmp.path().join("man1");
    let (out, _) = ok(c.arg("__man").arg(&dir));
    assert_eq!(out.trim(), dir.display().to_string());
    let mut pages: Vec<String> = std::fs::read_dir(&dir)
        .expect("man dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    // One page per verb that `--help` lists (and one per sub-verb), none for hidden ones.
    for verb in [
        "build",
        "images",
        "cache",
        "cache-ls",
        "completion",
        "version",
        "run",
    ] {
        assert!(
            pages.contains(&format!("mybuild-{verb}.1")),
            "no page for {verb}: {pages:?}"
        );
    }
    assert!(pages.contains(&"mybuild.1".to_string()), "{pages:?}");
    assert!(!pages.iter().any(|p| p.contains("__")), "{pages:?}");
    for page in &pages {
        let name = page.trim_end_matches(".1");
        // The verb's own `--help` gives the about text the page must carry.
        let words: Vec<&str> = name.split('-').skip(1).collect();
        let (_tmp, mut help) = plain();
        let (help, _) = ok(help.args(&words).arg("--help"));
        let about = help.lines().next().expect("about line").trim().to_string();
        // A wide line and no hyphenation, so the text is not broken up.
        let out = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-rLL=400n", "-rHY=0", "-P-bou"])
            .arg(dir.join(page))
            .output()
            .expect("groff runs");
        let (text, warnings) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "groff failed on {page}: {warnings}");
        assert!(warnings.is_empty(), "groff warned on {page}: {warnings}");
        let text = normalized(&text);
        assert!(
            text.contains(&format!("NAME {name} - {}", normalized(&about))),
            "{page} lacks {about:?}:\n{text}"
        );
        assert!(text.contains("SYNOPSIS"), "{page}: {text}");
    }
}

#[test]
fn man_pages_go_where_man_finds_them_for_the_binary_on_path() {
    if !testdata::require_tool("man") {
        return;
    }
    // The binary installed as cargo install lays it out: PREFIX/bin/mybuild.
    let tmp = tempfile::TempDir::new().expect("tmp");
    let bindir = tmp.path().join("prefix/bin");
    std::fs::create_dir_all(&bindir).expect("bin");
    let exe = bindir.join("mybuild");
    if std::fs::hard_link(bin(), &exe).is_err() {
        std::fs::copy(bin(), &exe).expect("copy the binary");
    }
    let (out, _) = ok(Command::new(&exe).arg("__man").current_dir(tmp.path()));
    let dir = tmp.path().join("prefix/share/man/man1");
    assert_eq!(out.trim(), dir.display().to_string());
    assert!(dir.join("mybuild-build.1").is_file(), "{out}");
    // man-db derives PREFIX/share/man from PREFIX/bin on PATH: no MANPATH needed.
    let path = std::env::join_paths(std::iter::once(bindir.clone()).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .expect("PATH");
    let (found, _) = ok(Command::new("man")
        .args(["-w", "mybuild-build"])
        .env("PATH", &path)
        .env_remove("MANPATH"));
    assert_eq!(
        found.trim(),
        dir.join("mybuild-build.1").display().to_string()
    );
}

#[test]
fn version_names_the_commit_compiler_and_features() {
    let (_tmp, mut c) = plain();
    let (text, _) = ok(c.arg("version"));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        format!("mybuild {}", env!("CARGO_PKG_VERSION")),
        "{text}"
    );
    let commit = lines[1].strip_prefix("commit: ").expect("commit line");
    let commit_id = commit.trim_end_matches(" (dirty)");
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match head {
        Some(head) => assert_eq!(commit_id, head, "{text}"),
        None => assert_eq!(commit_id, "unknown", "{text}"),
    }
    let rustc = lines[2].strip_prefix("rustc: ").expect("rustc line");
    assert!(rustc.starts_with("rustc 1."), "{text}");
    if let Ok(o) = Command::new("rustc").arg("--version").output() {
        assert_eq!(rustc, String::from_utf8_lossy(&o.stdout).trim(), "{text}");
    }
    assert_eq!(lines[3], "features: none", "{text}");
    assert_eq!(lines.len(), 4, "{text}");

    // --version says the same; -V only the version.
    let (_tmp, mut c) = plain();
    assert_eq!(ok(c.arg("--version")).0, text);
    let (_tmp, mut c) = plain();
    assert_eq!(
        ok(c.arg("-V")).0,
        format!("mybuild {}\n", env!("CARGO_PKG_VERSION"))
    );

    let (_tmp, mut c) = plain();
    let (json, _) = ok(c.args(["version", "--format", "json"]));
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["commit"], commit_id);
    assert_eq!(v["dirty"], commit.ends_with(" (dirty)"));
    assert_eq!(v["rustc"], rustc);
    assert_eq!(v["features"], serde_json::json!([]));
}

#[test]
fn an_unknown_first_word_is_an_unknown_command_with_a_suggestion() {
    let (_tmp, mut c) = plain();
    let out = c.arg("imagse").output().expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.starts_with("error: unknown command \"imagse\"; did you mean \"images\"?"),
        "{err}"
    );
    assert!(!err.contains("build context"), "{err}");
    insta::assert_snapshot!("unknown-command-suggested", err);

    // Not close to any verb: no suggestion, and the reason it is not a context.
    let (_tmp, mut c) = plain();
    let out = c.args(["frobnicate", "x"]).output().expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.starts_with(
            "error: unknown command \"frobnicate\" (no verb, and no file or directory of that name to build)"
        ),
        "{err}"
    );
    insta::assert_snapshot!("unknown-command", err);
    // After global options too.
    let (tmp, mut c) = plain();
    let err = fails(c.arg("--debug").arg("--root").arg(tmp.path()).arg("pul"));
    assert!(
        err.contains("unknown command \"pul\"; did you mean \"pull\"?"),
        "{err}"
    );

    // What could be a context is still built as one: a path-like word that does not
    // exist is the build's own error, and so is a URL.
    for context in ["missing.d", "sub/ctx", "http://127.0.0.1:9/ctx.tar"] {
        let (_tmp, mut c) = plain();
        let err = fails(c.args(["-t", "x:1", context]));
        assert!(!err.contains("unknown command"), "{context}: {err}");
    }
}

#[test]
fn the_default_verb_still_builds_flags_paths_and_standard_input() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        "FROM busybox\nCOPY a.txt /a.txt\n",
        &[("a.txt", "A\n")],
    );
    ok(mybuild(&root).args(["-t", "x:1", "."]).current_dir(&ctx));
    ok(mybuild(&root).arg(".").current_dir(&ctx));
    // A directory named like a verb's near miss is a context, and so is a path.
    for dir in ["imagse", "sub/ctx"] {
        let d = tmp.path().join(dir);
        std::fs::create_dir_all(&d).expect("dir");
        for f in ["Dockerfile", "a.txt"] {
            std::fs::copy(ctx.join(f), d.join(f)).expect("copy");
        }
        ok(mybuild(&root)
            .args(["-t", "x:2", dir])
            .current_dir(tmp.path()));
    }
    let (success, _, err) = with_stdin(
        mybuild(&root).args(["-t", "x:4", "-"]),
        "FROM busybox\nENV FROM_STDIN=1\n",
    );
    assert!(success, "{err}");
    assert!(inspect(&root, "x:4")["Config"]["config"]["Env"]
        .as_array()
        .expect("env")
        .contains(&"FROM_STDIN=1".into()));
}

/// The image id `-q` printed, and standard error.
fn quiet_build(cmd: &mut Command) -> (String, String) {
    let (out, err) = ok(cmd);
    let id = out.trim().to_string();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{out}");
    (id, err)
}

#[test]
fn progress_quiet_is_dash_q_and_buildkit_progress_sets_the_default() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        "FROM busybox\nCOPY a.txt /a.txt\n",
        &[("a.txt", "A\n")],
    );
    let (q, q_err) = quiet_build(mybuild(&root).args(["-q", "-t", "p:1"]).arg(&ctx));
    let (pq, pq_err) = quiet_build(
        mybuild(&root)
            .args(["--progress=quiet", "-t", "p:1"])
            .arg(&ctx),
    );
    assert_eq!(q, pq);
    assert!(
        !q_err.contains("#1 ") && !pq_err.contains("#1 "),
        "{pq_err}"
    );

    // BUILDKIT_PROGRESS picks the view when no flag does.
    let (env_q, err) = quiet_build(
        mybuild(&root)
            .env("BUILDKIT_PROGRESS", "quiet")
            .args(["-t", "p:1"])
            .arg(&ctx),
    );
    assert_eq!(env_q, q);
    assert!(!err.contains("#1 "), "{err}");
    let (_, err) = ok(mybuild(&root)
        .env("BUILDKIT_PROGRESS", "json")
        .args(["-t", "p:1"])
        .arg(&ctx));
    let events: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}\n{err}")))
        .collect();
    assert!(!events.is_empty(), "{err}");
    // An explicit flag wins over the variable; an empty one is unset.
    let (_, err) = ok(mybuild(&root)
        .env("BUILDKIT_PROGRESS", "json")
        .args(["--progress=plain", "-t", "p:1"])
        .arg(&ctx));
    assert!(err.lines().any(|l| l.starts_with("#1 ")), "{err}");
    let (_, err) = ok(mybuild(&root)
        .env("BUILDKIT_PROGRESS", "")
        .args(["-t", "p:1"])
        .arg(&ctx));
    assert!(err.lines().any(|l| l.starts_with("#1 ")), "{err}");
    let err = fails(
        mybuild(&root)
            .env("BUILDKIT_PROGRESS", "fancy")
            .args(["-t", "p:1"])
            .arg(&ctx),
    );
    assert!(
        err.contains("BUILDKIT_PROGRESS=fancy: expected auto, tty, plain, json or quiet"),
        "{err}"
    );
}

#[test]
fn source_date_epoch_as_a_build_arg_acts_as_the_environment_variable() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        "FROM busybox\nCOPY a.txt /a.txt\nRUN echo built > /b.txt\n",
        &[("a.txt", "A\n")],
    );
    let (by_env, env_err) = quiet_build(
        mybuild(&root)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args(["-q", "-t", "e:1"])
            .arg(&ctx),
    );
    let (by_arg, arg_err) = quiet_build(
        mybuild(&root)
            .env_remove("SOURCE_DATE_EPOCH")
            .args([
                "-q",
                "-t",
                "e:2",
                "--build-arg",
                "SOURCE_DATE_EPOCH=1700000000",
            ])
            .arg(&ctx),
    );
    // The same image: the same created time, the same clamped file times.
    assert_eq!(by_env, by_arg);
    assert_eq!(
        inspect(&root, "e:2")["Config"]["created"],
        "2023-11-14T22:13:20Z"
    );
    // Neither is reported as an unused build arg.
    for err in [&env_err, &arg_err] {
        assert!(!err.contains("not consumed"), "{err}");
    }
    // The build arg wins over the variable.
    quiet_build(
        mybuild(&root)
            .env("SOURCE_DATE_EPOCH", "1")
            .args([
                "-q",
                "-t",
                "e:3",
                "--build-arg",
                "SOURCE_DATE_EPOCH=1700000000",
            ])
            .arg(&ctx),
    );
    assert_eq!(
        inspect(&root, "e:3")["Config"]["created"],
        "2023-11-14T22:13:20Z"
    );
    // `ARG SOURCE_DATE_EPOCH` sees the variable's value, as with buildx.
    let argctx = context(
        tmp.path(),
        "FROM busybox\nARG SOURCE_DATE_EPOCH\nRUN echo \"sde=$SOURCE_DATE_EPOCH\" > /sde\n",
        &[],
    );
    ok(mybuild(&root)
        .env("SOURCE_DATE_EPOCH", "1700000001")
        .args(["-t", "e:4"])
        .arg(&argctx));
    let rootfs = unpack(tmp.path(), &root, "e:4");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("sde")).expect("sde"),
        "sde=1700000001\n"
    );
    let err = fails(
        mybuild(&root)
            .args(["-t", "e:5", "--build-arg", "SOURCE_DATE_EPOCH=yesterday"])
            .arg(&ctx),
    );
    assert!(
        err.contains("--build-arg SOURCE_DATE_EPOCH=yesterday: expected a whole number"),
        "{err}"
    );
}

/// A directory holding only an executable `docker` script with `body`.
fn fake_docker(tmp: &Path, body: &str) -> PathBuf {
    let dir = tmp.join("fakebin");
    std::fs::create_dir_all(&dir).expect("fakebin");
    let docker = dir.join("docker");
    std::fs::write(&docker, format!("#!/bin/sh\n{body}")).expect("docker");
    std::fs::set_permissions(&docker, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

#[test]
fn load_without_docker_says_where_the_image_is() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        "FROM busybox\nCOPY a.txt /a.txt\n",
        &[("a.txt", "A\n")],
    );
    let empty = tmp.path().join("empty-path");
    std::fs::create_dir_all(&empty).expect("empty");
    let out = mybuild(&root)
        .env("PATH", &empty)
        .args(["--load", "-t", "l:1"])
        .arg(&ctx)
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--load: docker is not on PATH; the image is in mybuild's store as l:1"),
        "{err}"
    );
    // The build itself stands.
    assert_eq!(inspect(&root, "l:1")["Config"]["rootfs"]["type"], "layers");
    // docker load takes one platform's image: refused before anything is built.
    let err = fails(
        mybuild(&root)
            .args([
                "--load",
                "--platform",
                "linux/amd64,linux/arm64",
                "-t",
                "l:2",
            ])
            .arg(&ctx),
    );
    assert!(
        err.contains("--load: docker load cannot take a multi-platform image"),
        "{err}"
    );
    let err = fails(mybuild(&root).args(["inspect", "l:2"]));
    assert!(err.contains("no such image"), "{err}");
    // A failing docker load is reported with its status.
    let failing = fake_docker(
        tmp.path(),
        "/bin/cat >/dev/null; echo refused >&2; exit 3\n",
    );
    let err = fails(
        mybuild(&root)
            .env("PATH", &failing)
            .args(["--load", "-t", "l:1"])
            .arg(&ctx),
    );
    assert!(err.contains("refused"), "{err}");
    assert!(
        err.contains("--load: docker load failed (exit status: 3)"),
        "{err}"
    );
}

#[test]
fn load_pipes_a_docker_archive_into_docker_load() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        "FROM busybox\nCOPY a.txt /a.txt\n",
        &[("a.txt", "A\n")],
    );
    let archive = tmp.path().join("loaded.tar");
    // Stands in for the docker CLI: records its arguments and what it was fed.
    let bin = fake_docker(
        tmp.path(),
        &format!(
            "echo \"$@\" > '{args}'\n/bin/cat > '{tar}'\necho 'Loaded image: l:1'\n",
            args = tmp.path().join("args").display(),
            tar = archive.display()
        ),
    );
    let (out, err) = ok(mybuild(&root)
        .env("PATH", &bin)
        .args(["--load", "-q", "-t", "l:1", "-t", "l:2"])
        .arg(&ctx));
    let id = out.trim();
    // docker's own output goes to standard error: -q still prints only the id.
    assert!(
        id.starts_with("sha256:") && !out.contains("Loaded"),
        "{out}"
    );
    assert!(err.contains("Loaded image: l:1"), "{err}");
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("args")).expect("args"),
        "load\n"
    );
    // A docker archive: manifest.json naming both tags.
    let f = std::fs::File::open(&archive).expect("archive");
    let mut tar = tar::Archive::new(f);
    let mut manifest = None;
    for entry in tar.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        if entry.path().expect("path").as_os_str() == "manifest.json" {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut entry, &mut s).expect("read");
            manifest = Some(serde_json::from_str::<serde_json::Value>(&s).expect("json"));
        }
    }
    let manifest = manifest.expect("manifest.json in the archive");
    let tags: Vec<&str> = manifest
        .as_array()
        .expect("list")
        .iter()
        .flat_map(|m| m["RepoTags"].as_array().expect("RepoTags"))
        .filter_map(|t| t.as_str())
        .collect();
    assert!(tags.contains(&"l:1") && tags.contains(&"l:2"), "{manifest}");
    // And it loads back as the same image.
    let other = tmp.path().join("other");
    let (loaded, _) = ok(mybuild(&other).arg("load").arg("-i").arg(&archive));
    assert!(loaded.contains("Loaded image: l:1"), "{loaded}");
    assert_eq!(
        inspect(&other, "l:1")["Digest"],
        inspect(&root, "l:1")["Digest"]
    );
    assert_eq!(inspect(&other, "l:2")["Digest"], id);
    // Under --progress=json, standard error stays JSON events only.
    std::fs::remove_file(&archive).expect("rm");
    let (_, err) = ok(mybuild(&root)
        .env("PATH", &bin)
        .args(["--load", "--progress=json", "-t", "l:1"])
        .arg(&ctx));
    for line in err.lines() {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "not JSON: {line:?}\n{err}"
        );
    }
    assert!(archive.exists(), "docker load was not run");
}
