//! The differential conformance suite: every case under `testdata/conformance/` is
//! built with mybuild on a busybox base and its filesystem and config are compared
//! with the case's checked-in `expected` manifest (what BuildKit gives). Cases where
//! buildah agrees with BuildKit are also built with `buildah bud` and compared with
//! the same manifest; a case whose `buildah` file exists says in one line why
//! buildah differs, and is built with mybuild only.
//!
//! A case is a directory: `Dockerfile`, an optional `context/` (else the context is
//! empty), an optional `args` file (one command-line argument a line, e.g.
//! `--build-arg=V=2`), `expected`, and the optional `buildah` file. `expected` lists
//! what the image holds beyond the base (new or changed entries; `deleted` for base
//! entries that are gone), one line each: path, type, mode, owner, size and sha256 of
//! a file, target of a link, link count of a hardlinked file; mtimes are left out.
//! Then the config fields a Dockerfile sets and the number of layers it adds.
//!
//! `MYBUILD_CONFORMANCE_BLESS=1` writes mybuild's results into `expected` (to author a
//! case; review each against BuildKit's behaviour before committing it).

mod common;

use common::*;

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/conformance")
}

/// One entry, path left out: type, mode, owner and what identifies its content.
fn describe(path: &Path, md: &std::fs::Metadata) -> String {
    let ft = md.file_type();
    let owner = format!("{}:{}", md.uid(), md.gid());
    let mode = md.mode() & 0o7777;
    if ft.is_dir() {
        format!("d {mode:04o} {owner}")
    } else if ft.is_symlink() {
        let target = std::fs::read_link(path).expect("readlink");
        format!("l {owner} -> {}", target.display())
    } else if ft.is_file() {
        let data = std::fs::read(path).expect("read");
        let mut s = format!(
            "f {mode:04o} {owner} size={} {}",
            data.len(),
            layer_cache::Digest::of(&data)
        );
        if md.nlink() > 1 {
            s.push_str(&format!(" nlink={}", md.nlink()));
        }
        s
    } else {
        let t = if ft.is_char_device() {
            'c'
        } else if ft.is_block_device() {
            'b'
        } else if ft.is_fifo() {
            'p'
        } else {
            's'
        };
        format!("{t} {mode:04o} {owner} rdev={}", md.rdev())
    }
}

/// Every entry under `root` ("/path" → description), without recursion.
fn walk(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read_dir") {
            let p = e.expect("entry").path();
            let md = std::fs::symlink_metadata(&p).expect("stat");
            let rel = format!("/{}", p.strip_prefix(root).expect("under").display());
            out.insert(rel, describe(&p, &md));
            if md.is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

/// The image's config from an OCI layout (`layout`, tag `name`).
fn oci_config(layout: &Path, name: &str) -> (serde_json::Value, usize) {
    let read = |p: PathBuf| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{p:?}: {e}")))
            .expect("json")
    };
    let blob = |d: &serde_json::Value| {
        let d = d.as_str().expect("digest");
        layout.join("blobs/sha256").join(&d[7..])
    };
    let index = read(layout.join("index.json"));
    let desc = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {layout:?}"))
        .clone();
    let manifest = read(blob(&desc["digest"]));
    let layers = manifest["layers"].as_array().map_or(0, Vec::len);
    (read(blob(&manifest["config"]["digest"])), layers)
}

/// Config lines: the fields a Dockerfile sets, empty ones left out.
fn config_lines(config: &serde_json::Value, new_layers: usize) -> Vec<String> {
    let c = &config["config"];
    let mut out = Vec::new();
    for field in [
        "User",
        "Env",
        "Entrypoint",
        "Cmd",
        "WorkingDir",
        "ExposedPorts",
        "Volumes",
        "Labels",
        "StopSignal",
        "OnBuild",
        "Shell",
        "Healthcheck",
    ] {
        let v = &c[field];
        let shown = match v {
            serde_json::Value::Null => continue,
            serde_json::Value::String(s) if s.is_empty() => continue,
            serde_json::Value::Array(a) if a.is_empty() => continue,
            serde_json::Value::Object(o) if o.is_empty() => continue,
            // Sets: their keys, sorted.
            serde_json::Value::Object(o) if matches!(field, "ExposedPorts" | "Volumes") => {
                let mut keys: Vec<&String> = o.keys().collect();
                keys.sort();
                serde_json::to_string(&keys).expect("json")
            }
            serde_json::Value::Object(o) => {
                let sorted: BTreeMap<&String, &serde_json::Value> = o.iter().collect();
                serde_json::to_string(&sorted).expect("json")
            }
            v => serde_json::to_string(v).expect("json"),
        };
        out.push(format!("config.{field} {shown}"));
    }
    out.push(format!("layers {new_layers}"));
    out
}

/// The manifest of an unpacked image against the base's entries.
fn manifest(
    base: &BTreeMap<String, String>,
    rootfs: &Path,
    config: &serde_json::Value,
    new_layers: usize,
) -> Vec<String> {
    let now = walk(rootfs);
    let mut lines = Vec::new();
    for (path, desc) in &now {
        if base.get(path) != Some(desc) {
            lines.push(format!("{path} {desc}"));
        }
    }
    for path in base.keys().filter(|p| !now.contains_key(*p)) {
        lines.push(format!("{path} deleted"));
    }
    lines.sort();
    lines.extend(config_lines(config, new_layers));
    lines
}

struct Case {
    name: String,
    dir: PathBuf,
    context: PathBuf,
    args: Vec<String>,
    /// Why buildah is not compared, when it differs from BuildKit.
    buildah_differs: Option<String>,
}

/// Copies a case's context to `dst` as a fresh checkout would give it whatever the
/// umask: owned by root, directories 0755, files 0644 (0755 when executable), then
/// the modes its `modes` file names (`path 0444` a line).
fn stage_context(src: &Path, dst: &Path, modes: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dst).expect("context dir");
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in std::fs::read_dir(src.join(&rel)).expect("read_dir") {
            let e = e.expect("entry");
            let r = rel.join(e.file_name());
            let (from, to) = (src.join(&r), dst.join(&r));
            let md = std::fs::symlink_metadata(&from).expect("stat");
            if md.file_type().is_symlink() {
                let target = std::fs::read_link(&from).expect("readlink");
                std::os::unix::fs::symlink(target, &to).expect("symlink");
            } else if md.is_dir() {
                std::fs::create_dir(&to).expect("mkdir");
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755))
                    .expect("chmod");
                stack.push(r);
            } else {
                std::fs::copy(&from, &to).expect("copy");
                let mode = if md.mode() & 0o111 != 0 { 0o755 } else { 0o644 };
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode))
                    .expect("chmod");
            }
            std::os::unix::fs::lchown(&to, Some(0), Some(0)).expect("chown");
        }
    }
    for line in modes.lines().filter(|l| !l.trim().is_empty()) {
        let (path, mode) = line.split_once(' ').expect("path mode");
        let mode = u32::from_str_radix(mode.trim(), 8).expect("octal mode");
        std::fs::set_permissions(dst.join(path), std::fs::Permissions::from_mode(mode))
            .expect("chmod");
    }
}

fn cases(tmp: &Path) -> Vec<Case> {
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .expect("conformance cases")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.join("Dockerfile").is_file())
        .collect();
    dirs.sort();
    for dir in dirs {
        let text = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
        let name = dir
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let context = tmp.join(format!("context-{name}"));
        if dir.join("context").is_dir() {
            stage_context(
                &dir.join("context"),
                &context,
                &text("modes").unwrap_or_default(),
            );
        } else {
            std::fs::create_dir_all(&context).expect("empty context");
        }
        out.push(Case {
            name,
            context,
            args: text("args")
                .unwrap_or_default()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect(),
            buildah_differs: text("buildah").map(|t| t.trim().to_string()),
            dir,
        });
    }
    out
}

/// Lines only in `want` (-) and only in `got` (+).
fn difference(want: &[String], got: &[String]) -> String {
    let mut s = String::new();
    for l in want.iter().filter(|l| !got.contains(l)) {
        s.push_str(&format!("  - {l}\n"));
    }
    for l in got.iter().filter(|l| !want.contains(l)) {
        s.push_str(&format!("  + {l}\n"));
    }
    s
}

fn expected(case: &Case) -> Vec<String> {
    std::fs::read_to_string(case.dir.join("expected"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

/// buildah's own storage under a temp dir, holding the store's busybox as
/// `docker.io/library/busybox:latest` (never pulled: `--pull=false`).
struct Buildah {
    root: PathBuf,
    runroot: PathBuf,
}

impl Buildah {
    fn cmd(&self) -> Command {
        let mut c = Command::new("buildah");
        c.arg("--root")
            .arg(&self.root)
            .arg("--runroot")
            .arg(&self.runroot)
            .args(["--storage-driver", "vfs"]);
        c
    }

    fn new(tmp: &Path, store: &Path) -> Buildah {
        let b = Buildah {
            root: tmp.join("buildah-root"),
            runroot: tmp.join("buildah-runroot"),
        };
        // skopeo names the image itself (buildah would name it after the path).
        ok(Command::new("skopeo")
            .args(["copy", "-q"])
            .arg(format!("oci:{}:busybox:latest", store.display()))
            .arg(format!(
                "containers-storage:[vfs@{}+{}]docker.io/library/busybox:latest",
                b.root.display(),
                b.runroot.display()
            )));
        b
    }

    /// Builds the case; its manifest.
    fn build(&self, tmp: &Path, base: &BTreeMap<String, String>, case: &Case) -> Vec<String> {
        let tag = format!("conf-{}", case.name);
        let (success, _, err) = run(self
            .cmd()
            .args(["bud", "--isolation", "chroot", "--pull=false", "-q", "-f"])
            .arg(case.dir.join("Dockerfile"))
            .args(["-t", &tag])
            .args(&case.args)
            .arg(&case.context));
        if !success {
            let last = err
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            return vec![format!("buildah bud failed: {last}")];
        }
        // One layout per case: two pushes into one index.json would race.
        let layout = tmp.join(format!("buildah-out-{}", case.name));
        ok(self.cmd().args(["push", "-q", &tag]).arg(format!(
            "oci:{}:{}",
            layout.display(),
            case.name
        )));
        let bundle = tmp.join(format!("buildah-bundle-{}", case.name));
        ok(Command::new("umoci")
            .arg("unpack")
            .arg("--image")
            .arg(format!("{}:{}", layout.display(), case.name))
            .arg(&bundle));
        let (config, layers) = oci_config(&layout, &case.name);
        let mut lines = manifest(base, &bundle.join("rootfs"), &config, layers);
        let _ = std::fs::remove_dir_all(&bundle);
        let _ = std::fs::remove_dir_all(&layout);
        // buildah leaves RUN's mount points behind (mount stubs): not compared, nor
        // its own label, nor its layer count (it commits the build as one layer).
        lines.retain(|l| {
            let path = l.split(' ').next().unwrap_or("");
            !matches!(
                path,
                "/dev"
                    | "/proc"
                    | "/sys"
                    | "/run"
                    | "/etc/hosts"
                    | "/etc/resolv.conf"
                    | "/etc/hostname"
            ) && !l.starts_with("/run/")
                && !l.starts_with("layers ")
        });
        for l in &mut lines {
            if l.starts_with("config.Labels ") {
                let mut labels: BTreeMap<String, String> =
                    serde_json::from_str(&l["config.Labels ".len()..]).expect("labels");
                labels.remove("io.buildah.version");
                *l = format!(
                    "config.Labels {}",
                    serde_json::to_string(&labels).expect("json")
                );
            }
        }
        lines.retain(|l| l != "config.Labels {}");
        lines
    }
}

#[test]
fn conformance_cases_match_buildkit_and_buildah_where_it_agrees() {
    let Some((tmp, root)) = setup() else { return };
    let bless = std::env::var_os("MYBUILD_CONFORMANCE_BLESS").is_some();
    let base_rootfs = unpack(tmp.path(), &root, "busybox:latest");
    let base = walk(&base_rootfs);
    let cases = cases(tmp.path());
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut failures = String::new();
    for case in &cases {
        let tag = format!("conf:{}", case.name);
        let (success, _, err) = run(mybuild(&root)
            .arg("build")
            .arg("-f")
            .arg(case.dir.join("Dockerfile"))
            .args(["-t", &tag])
            .args(&case.args)
            .arg(&case.context));
        if !success {
            failures.push_str(&format!("{}: mybuild failed:\n{err}\n", case.name));
            continue;
        }
        let rootfs = unpack(tmp.path(), &root, &tag);
        let (config, layers) = oci_config(&root, &tag);
        let got = manifest(&base, &rootfs, &config, layers.saturating_sub(1));
        let _ = std::fs::remove_dir_all(rootfs.parent().expect("bundle"));
        if bless {
            std::fs::write(case.dir.join("expected"), got.join("\n") + "\n").expect("bless");
            continue;
        }
        let want = expected(case);
        if want != got {
            failures.push_str(&format!(
                "{}: mybuild differs from expected:\n{}",
                case.name,
                difference(&want, &got)
            ));
        }
    }
    if !bless && testdata::require_tool("buildah") && testdata::require_tool("skopeo") {
        let b = Buildah::new(tmp.path(), &root);
        // MYBUILD_CONFORMANCE_CHECK_NOTES=1 also builds the cases said to differ, to
        // check each note still holds.
        let check_notes = std::env::var_os("MYBUILD_CONFORMANCE_CHECK_NOTES").is_some();
        let compared: Vec<&Case> = cases
            .iter()
            .filter(|c| check_notes || c.buildah_differs.is_none())
            .collect();
        // Two at a time: buildah is slow to start and mostly waits.
        let results: Vec<(String, Vec<String>)> = std::thread::scope(|s| {
            let chunks: Vec<Vec<&Case>> = compared
                .chunks(compared.len().div_ceil(2).max(1))
                .map(<[&Case]>::to_vec)
                .collect();
            let handles: Vec<_> = chunks
                .into_iter()
                .map(|chunk| {
                    let (b, base, tmp) = (&b, &base, tmp.path());
                    s.spawn(move || {
                        chunk
                            .into_iter()
                            .map(|c| (c.name.clone(), b.build(tmp, base, c)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("buildah thread"))
                .collect()
        });
        for (name, got) in results {
            let case = cases.iter().find(|c| c.name == name).expect("case");
            let want: Vec<String> = expected(case)
                .into_iter()
                .filter(|l| !l.starts_with("layers "))
                .collect();
            match (&case.buildah_differs, want == got) {
                (None, true) => {}
                (None, false) => failures.push_str(&format!(
                    "{name}: buildah differs from expected (if buildah is known to differ, \
                     say why in {name}/buildah):\n{}",
                    difference(&want, &got)
                )),
                (Some(why), true) => failures.push_str(&format!(
                    "{name}: buildah agrees, but {name}/buildah says: {why}\n"
                )),
                (Some(why), false) => {
                    eprintln!(
                        "{name}: buildah differs ({why}):\n{}",
                        difference(&want, &got)
                    )
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures}");
}
