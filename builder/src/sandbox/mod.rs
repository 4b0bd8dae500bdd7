//! The RUN sandbox: a command in new mount, PID, UTS and IPC namespaces (and a new
//! network namespace unless `--network=host`), inside an overlayfs whose lowerdirs
//! are the parent snapshots and whose upperdir collects the step's changes, confined
//! as Docker confines a container by default ([`confine`]): 14 capabilities, a
//! seccomp allowlist, masked and read-only `/proc` and `/sys` paths, a `nodev` root,
//! no inherited file descriptors. `--network=default` joins the private namespace to
//! the outside through a per-step slirp4netns ([`network`]).
//!
//! The `mybuild` binary re-executes itself as the sandbox's init ([`INIT_ARG`]), as
//! runc and buildah do, instead of forking inside a threaded process. The parent
//! unshares the namespaces between fork and exec; the re-executed process forks once
//! more so that its child is PID 1 of the new PID namespace. PID 1 sets up the mounts,
//! `pivot_root`s, forks the command (which so sees itself as PID 1's child), reaps,
//! and exits with the command's status. When PID 1 exits the kernel kills whatever
//! the step left running, and the mount namespace, with every mount in it, goes away:
//! nothing is left mounted on the host on any path, Ctrl-C included.
//! cgroups are not used.
//!
//! Run as root of a user namespace (a rootless build), the same init mounts overlay
//! with `userxattr` ([`layer_cache::overlay`]), or with fuse-overlayfs where the
//! kernel refuses, and binds the host's `/sys` read-only for `--network=host`; the
//! confinement is the same.

pub mod confine;
mod init;
mod network;

pub use network::{PortError, PortForward, Protocol};

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

pub use init::init_main;

/// argv[1] that makes `mybuild` act as the sandbox init.
pub const INIT_ARG: &str = "__mybuild-sandbox-init";

/// Exit status the init uses when the sandbox itself could not be set up.
pub const SETUP_FAILED: i32 = 125;
/// Exit status when the command could not be executed (not found, not executable).
pub const EXEC_FAILED: i32 = 127;
/// Exit status of an attached command that exists but cannot be executed (Docker's 126).
pub const EXEC_DENIED: i32 = 126;
/// The attached init's control pipe (secrets, network readiness): standard input
/// belongs to the command there.
const CONTROL_FD: i32 = 3;
/// Written to the error file (before the program's path) when exec said ENOEXEC.
const EXEC_FORMAT_MARK: &str = "exec format error: ";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Network {
    /// A new network namespace reaching the outside through a user-mode stack
    /// (slirp4netns), with no way to the host's loopback.
    Private,
    /// Share the host's network namespace.
    Host,
    /// A new network namespace with only `lo`.
    None,
}

/// Where a private network's DNS forwarder answers (slirp4netns's default).
pub const PRIVATE_DNS: &str = "10.0.2.3";
/// The private network's gateway: the host, as seen from the step (its loopback
/// services stay unreachable).
pub const PRIVATE_GATEWAY: &str = "10.0.2.2";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountKind {
    /// Bind `source` (a host path) at `target`.
    Bind { source: PathBuf, readonly: bool },
    /// An empty tmpfs at `target`.
    Tmpfs { size: Option<u64> },
    /// `source` (a cleaned path, symlinks already resolved) inside an overlay of
    /// `layers` (topmost first), mounted at `target`. With `scratch`, a directory
    /// holding empty `upper` and `work` dirs, the view is writable and the writes
    /// land there (to be discarded); without, it is read-only.
    Layers {
        layers: Vec<PathBuf>,
        source: String,
        scratch: Option<PathBuf>,
        is_dir: bool,
    },
    /// A file holding secret number `index` (see [`run_with_secrets`]), written to a
    /// tmpfs inside the sandbox's mount namespace and bound read-only at `target`.
    /// The value never touches a disk: it reaches the init through a pipe.
    Secret {
        index: usize,
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

/// An extra mount inside the rootfs (`RUN --mount`, secrets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Absolute path inside the container.
    pub target: String,
    pub kind: MountKind,
}

/// Everything the init needs; plain data, serialized to the bundle directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// Overlay lowerdirs, topmost first. Empty means an empty root (FROM scratch).
    pub lowerdirs: Vec<PathBuf>,
    pub upperdir: PathBuf,
    /// Overlay's work directory, on the same filesystem as `upperdir`.
    pub workdir: PathBuf,
    /// Where the merged root is mounted (inside the private mount namespace).
    pub rootfs: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<String>,
    /// Working directory inside the container; created when missing.
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub hostname: String,
    pub network: Network,
    /// Content of `/etc/hosts` inside the container.
    pub hosts: String,
    /// Content of `/etc/resolv.conf` inside the container.
    pub resolv_conf: String,
    pub mounts: Vec<Mount>,
    /// Variables set to a secret's value (`NAME`, secret index) for the command only.
    #[serde(default)]
    pub secret_env: Vec<(String, usize)>,
    /// `RUN --security=insecure`: every capability, no seccomp filter, no masked
    /// paths, `/sys` writable.
    #[serde(default)]
    pub insecure: bool,
    /// Ports published from the host into a private network (`-p`); only
    /// [`Network::Private`] can have them.
    #[serde(default)]
    pub ports: Vec<PortForward>,
}

/// What the init reads: the caller's spec and the seccomp program compiled once
/// per process (absent for an insecure step).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct InitSpec {
    spec: SandboxSpec,
    seccomp: Option<confine::SeccompProgram>,
    /// `/etc` files the parent wrote: (file in the bundle, absolute target resolved
    /// inside the image).
    etc_files: Vec<(PathBuf, String)>,
    /// How overlays are mounted in this process's user namespace.
    #[serde(default)]
    overlay: OverlayPlan,
    /// A container's attached run (see [`spawn_attached`]).
    #[serde(default)]
    attach: Option<AttachInit>,
}

/// What the init does differently for an attached container.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct AttachInit {
    terminal: bool,
    read_only: bool,
}

/// How the init mounts the step's overlays: kernel overlayfs first, with
/// `userxattr` inside a user namespace, then fuse-overlayfs when the kernel refuses
/// (or when the tests force it).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct OverlayPlan {
    /// The kernel wants `userxattr` (see [`layer_cache::overlay::namespace`]).
    userxattr: bool,
    /// fuse-overlayfs on the caller's `PATH`, resolved before the init's
    /// environment is cleared.
    fuse: Option<PathBuf>,
    /// Skip the kernel and use fuse-overlayfs (`MYBUILD_FORCE_FUSE_OVERLAYFS=1`).
    force_fuse: bool,
}

/// Test-only switch: mount every step with fuse-overlayfs.
const FORCE_FUSE_ENV: &str = "MYBUILD_FORCE_FUSE_OVERLAYFS";
/// The file in the bundle where the init says which overlay it mounted the root with.
const OVERLAY_USED_FILE: &str = "overlay-used";
/// [`OVERLAY_USED_FILE`]'s content after a fuse-overlayfs mount.
const OVERLAY_FUSE: &str = "fuse-overlayfs";
/// [`OVERLAY_USED_FILE`]'s content after a kernel mount.
const OVERLAY_KERNEL: &str = "kernel";

impl OverlayPlan {
    fn for_this_process() -> OverlayPlan {
        let path =
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
        OverlayPlan {
            userxattr: layer_cache::overlay::namespace().mount_option().is_some(),
            fuse: std::env::split_paths(&path)
                .map(|d| d.join("fuse-overlayfs"))
                .find(|p| p.is_file()),
            force_fuse: std::env::var_os(FORCE_FUSE_ENV).is_some_and(|v| v == "1"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting the sandbox ({}): {source}", exe.display())]
    Spawn {
        exe: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sandbox setup failed: {0}")]
    Setup(String),
    #[error("sandbox spec: {0}")]
    Spec(#[from] serde_json::Error),
    /// The command is not a program this kernel can run (ENOEXEC): usually one for
    /// another architecture with no binfmt_misc emulator registered.
    #[error("exec {program}: exec format error")]
    ExecFormat { program: String },
    #[error(transparent)]
    Confine(#[from] confine::ConfineError),
    #[error(
        "RUN with --network=default needs slirp4netns, the user-mode network stack that \
         joins its private network to the outside (apt-get install slirp4netns); or build \
         with --network=host (the host's network, unconfined) or --network=none"
    )]
    StackMissing,
    #[error("the network stack (slirp4netns) failed: {0}")]
    Stack(String),
    #[error("publishing port {port}: {why}")]
    Port { port: String, why: String },
    #[error("published ports (-p) need the default network: --network={network} {why}")]
    PortsWithoutPrivateNetwork {
        network: &'static str,
        why: &'static str,
    },
}

/// Which stream a chunk of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Exited(i32),
    Signaled(i32),
}

/// Mount points every sandbox needs: (path, is_dir).
const MOUNT_POINTS: &[(&str, bool)] = &[("proc", true), ("dev", true), ("sys", true)];

/// Builds a private lowerdir holding every mount point, to sit above the image's
/// layers. Mount points then exist without anything being created in the upperdir,
/// so they never reach a layer. Parent directories copy their owner and mode from
/// the image so the merged view keeps the image's metadata.
fn mountpoint_layer(
    spec: &SandboxSpec,
    etc_files: &[(PathBuf, String)],
    dir: &Path,
) -> Result<(), SandboxError> {
    let mut targets: Vec<(String, bool)> = MOUNT_POINTS
        .iter()
        .map(|(p, d)| (p.to_string(), *d))
        .collect();
    for (_, target) in etc_files {
        targets.push((target.trim_start_matches('/').to_string(), false));
    }
    for m in &spec.mounts {
        let is_dir = match &m.kind {
            MountKind::Bind { source, .. } => source.is_dir(),
            MountKind::Tmpfs { .. } => true,
            MountKind::Layers { is_dir, .. } => *is_dir,
            MountKind::Secret { .. } => false,
        };
        targets.push((m.target.trim_start_matches('/').to_string(), is_dir));
    }
    stub_tree(dir, &spec.lowerdirs, &targets)
}

/// Creates `targets` ((path, is_dir), relative) and their parents under `dir`, a
/// layer to sit above `lowers`: what `lowers` already holds with the right type is
/// left to them; parents copy owner and mode from `lowers` where they exist there.
fn stub_tree(
    dir: &Path,
    lowers: &[PathBuf],
    targets: &[(String, bool)],
) -> Result<(), SandboxError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SandboxError::Io { path, source }
    };
    // The stub's root is the view's root: it shows the root's owner and mode.
    if let Some(md) = lowers.first().and_then(|l| std::fs::metadata(l).ok()) {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(md.mode() & 0o7777))
            .map_err(io(dir))?;
        std::os::unix::fs::lchown(dir, Some(md.uid()), Some(md.gid())).map_err(io(dir))?;
    }
    for (target, is_dir) in targets {
        let is_dir = *is_dir;
        let existing = crate::exec::merged::lookup(lowers, Path::new(target.as_str()))
            .and_then(|p| std::fs::symlink_metadata(p).ok());
        let fits = |md: std::fs::Metadata| {
            if is_dir {
                md.is_dir()
            } else {
                md.is_file()
            }
        };
        if existing.is_some_and(fits) {
            // Already a mount point of the right type below: nothing to shadow it with.
            continue;
        }
        let parts: Vec<&str> = target
            .split('/')
            .filter(|p| !p.is_empty() && *p != "." && *p != "..")
            .collect();
        let mut rel = PathBuf::new();
        for (i, part) in parts.iter().enumerate() {
            rel.push(part);
            let here = dir.join(&rel);
            let leaf = i + 1 == parts.len();
            if here.symlink_metadata().is_ok() {
                continue;
            }
            let want_dir = !leaf || is_dir;
            if want_dir {
                std::fs::create_dir(&here).map_err(io(&here))?;
            } else {
                std::fs::write(&here, b"").map_err(io(&here))?;
            }
            let from_image = crate::exec::merged::lookup(lowers, &rel)
                .and_then(|p| std::fs::symlink_metadata(p).ok());
            if let Some(md) = from_image.filter(|m| m.is_dir() == want_dir) {
                std::fs::set_permissions(
                    &here,
                    std::fs::Permissions::from_mode(md.mode() & 0o7777),
                )
                .map_err(io(&here))?;
                std::os::unix::fs::lchown(&here, Some(md.uid()), Some(md.gid()))
                    .map_err(io(&here))?;
            }
        }
    }
    Ok(())
}

/// After a run: mount points the sandbox made for paths the image does not have
/// leave no trace in `upper`, as BuildKit's stub cleaner does. A whiteout (the step
/// unmounted and deleted one), an empty directory (copied up, e.g. by a file made and
/// removed below it) or an empty file there is removed, deepest first; the parent
/// keeps its times. `lowers` are the image's layers, topmost first.
pub fn remove_mount_stubs(
    bundle: &Path,
    upper: &Path,
    lowers: &[PathBuf],
) -> Result<(), SandboxError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let stubs = bundle.join("mountpoints");
    let mut found = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(stubs.join(&rel)) else {
            continue;
        };
        for e in rd.flatten() {
            let child = rel.join(e.file_name());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(child.clone());
            }
            found.push(child);
        }
    }
    // Deepest first, so a directory is judged after what was inside it.
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for rel in found {
        if crate::exec::merged::lookup(lowers, &rel).is_some() {
            continue;
        }
        let path = upper.join(&rel);
        let Ok(md) = path.symlink_metadata() else {
            continue;
        };
        let t = md.file_type();
        let removable = (t.is_char_device() && md.rdev() == 0)
            || (t.is_file() && md.len() == 0)
            || (t.is_dir() && std::fs::read_dir(&path).is_ok_and(|mut d| d.next().is_none()));
        if !removable {
            continue;
        }
        let parent = path.parent().map(Path::to_path_buf);
        let times = parent.as_ref().and_then(|p| p.symlink_metadata().ok());
        let io = |source| SandboxError::Io {
            path: path.clone(),
            source,
        };
        if t.is_dir() {
            std::fs::remove_dir(&path).map_err(io)?;
        } else {
            std::fs::remove_file(&path).map_err(io)?;
        }
        if let (Some(parent), Some(md)) = (parent, times) {
            let f = std::fs::File::open(&parent).map_err(|source| SandboxError::Io {
                path: parent.clone(),
                source,
            })?;
            let to_time = |s: i64, ns: i64| {
                std::time::UNIX_EPOCH
                    + std::time::Duration::new(s.max(0) as u64, ns.clamp(0, 999_999_999) as u32)
            };
            let times = std::fs::FileTimes::new()
                .set_accessed(to_time(md.atime(), md.atime_nsec()))
                .set_modified(to_time(md.mtime(), md.mtime_nsec()));
            f.set_times(times).map_err(|source| SandboxError::Io {
                path: parent.clone(),
                source,
            })?;
        }
    }
    Ok(())
}

/// Resolves `path` in the merged view of `layers` (topmost first) the way the kernel
/// would inside the container, following symlinks but never leaving the root.
/// Returns an absolute, cleaned path whose existing components are not symlinks.
pub fn resolve_in_layers(layers: &[PathBuf], path: &str) -> String {
    let mut pending: Vec<String> = path
        .split('/')
        .rev()
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    let mut done: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        match part.as_str() {
            "." => continue,
            ".." => {
                done.pop();
                continue;
            }
            _ => {}
        }
        done.push(part);
        let rel: PathBuf = done.iter().collect();
        let Some(real) = crate::exec::merged::lookup(layers, &rel) else {
            continue;
        };
        let Ok(link) = std::fs::read_link(&real) else {
            continue;
        };
        hops += 1;
        if hops > 40 {
            // A symlink loop: keep the rest as written; the mount will then fail.
            done.extend(pending.drain(..).rev().filter(|p| p != "." && p != ".."));
            break;
        }
        done.pop();
        let link = link.to_string_lossy().into_owned();
        if link.starts_with('/') {
            done.clear();
        }
        pending.extend(
            link.split('/')
                .rev()
                .filter(|p| !p.is_empty())
                .map(str::to_string),
        );
    }
    format!("/{}", done.join("/"))
}

/// Runs the spec'd command in the sandbox using `exe` (the `mybuild` binary) as init,
/// passing its output to `on_output` as it arrives. `bundle` is a private scratch
/// directory for this run.
pub fn run(
    exe: &Path,
    bundle: &Path,
    spec: &SandboxSpec,
    on_output: &mut dyn FnMut(Stream, &[u8]),
) -> Result<Outcome, SandboxError> {
    run_with_secrets(exe, bundle, spec, &[], on_output)
}

/// Number of path components: mounts are made shallowest first, so a mount inside
/// another one's target lands in it instead of under it.
fn depth(target: &str) -> usize {
    target.split('/').filter(|p| !p.is_empty()).count()
}

/// Read-only directory mounts that other mounts sit inside get a stub layer on top
/// holding those mount points, so nothing has to be created in what they show.
fn nested_stubs(spec: &mut SandboxSpec, bundle: &Path) -> Result<(), SandboxError> {
    let targets: Vec<String> = spec.mounts.iter().map(|m| m.target.clone()).collect();
    let kinds: Vec<bool> = spec
        .mounts
        .iter()
        .map(|m| match &m.kind {
            MountKind::Bind { source, .. } => source.is_dir(),
            MountKind::Tmpfs { .. } => true,
            MountKind::Layers { is_dir, .. } => *is_dir,
            MountKind::Secret { .. } => false,
        })
        .collect();
    for (i, m) in spec.mounts.iter_mut().enumerate() {
        let prefix = format!("{}/", m.target.trim_end_matches('/'));
        let inner: Vec<(String, bool)> = targets
            .iter()
            .zip(&kinds)
            .skip(i + 1)
            .filter_map(|(t, d)| t.strip_prefix(&prefix).map(|r| (r.to_string(), *d)))
            .collect();
        if inner.is_empty() {
            continue;
        }
        let stub = bundle.join(format!("stubs-{i}"));
        let io = |source| SandboxError::Io {
            path: stub.clone(),
            source,
        };
        std::fs::create_dir_all(&stub).map_err(io)?;
        match &mut m.kind {
            MountKind::Bind {
                source,
                readonly: true,
            } if source.is_dir() => {
                let lowers = vec![source.clone()];
                stub_tree(&stub, &lowers, &inner)?;
                m.kind = MountKind::Layers {
                    layers: vec![stub, lowers[0].clone()],
                    source: "/".into(),
                    scratch: None,
                    is_dir: true,
                };
            }
            MountKind::Layers {
                layers,
                source,
                scratch: None,
                ..
            } => {
                let base = source.trim_matches('/');
                let inner: Vec<(String, bool)> = inner
                    .into_iter()
                    .map(|(r, d)| (format!("{base}/{r}"), d))
                    .collect();
                stub_tree(&stub, layers, &inner)?;
                layers.insert(0, stub);
            }
            // Writable views (caches, tmpfs, rw binds) take their mount points as
            // they are mounted; a secret is a file and holds nothing.
            _ => {}
        }
    }
    Ok(())
}

/// Lays out `bundle` for a run: the mountpoints layer, the /etc files the sandbox
/// provides, and the spec with mount targets resolved through the image's symlinks
/// and the mountpoints layer on top.
fn prepare_bundle(
    bundle: &Path,
    spec: &SandboxSpec,
) -> Result<(SandboxSpec, Vec<(PathBuf, String)>), SandboxError> {
    let mountpoints = bundle.join("mountpoints");
    if mountpoints.exists() {
        std::fs::remove_dir_all(&mountpoints).map_err(|e| SandboxError::Io {
            path: mountpoints.clone(),
            source: e,
        })?;
    }
    std::fs::create_dir_all(&mountpoints).map_err(|e| SandboxError::Io {
        path: mountpoints.clone(),
        source: e,
    })?;
    let mut effective = spec.clone();
    // Mount targets are resolved through the image's symlinks first, so that a mount
    // point never shadows a symlink (e.g. /var/run -> /run) with a directory.
    for m in &mut effective.mounts {
        m.target = resolve_in_layers(&spec.lowerdirs, &m.target);
    }
    effective.mounts.sort_by_key(|m| depth(&m.target));
    nested_stubs(&mut effective, bundle)?;
    // The /etc files the sandbox provides are bound where the image's own symlinks
    // lead, inside its root: `/etc/resolv.conf -> ../run/resolv.conf` gets it at /run.
    let hostname = format!("{}\n", spec.hostname);
    let mut etc_files = Vec::new();
    for (name, content) in [
        ("hosts", &spec.hosts),
        ("resolv.conf", &spec.resolv_conf),
        ("hostname", &hostname),
    ] {
        let src = bundle.join(name);
        std::fs::write(&src, content).map_err(|source| SandboxError::Io {
            path: src.clone(),
            source,
        })?;
        let target = resolve_in_layers(&spec.lowerdirs, &format!("/etc/{name}"));
        etc_files.push((src, target));
    }
    mountpoint_layer(&effective, &etc_files, &mountpoints)?;
    effective.lowerdirs.insert(0, mountpoints);
    Ok((effective, etc_files))
}

/// Writes the secrets to the init's standard input on a thread of their own.
fn feed_secrets(
    child: &mut std::process::Child,
    secrets: &[&[u8]],
) -> Option<std::thread::JoinHandle<()>> {
    // Secrets go through a pipe as (u64 length, bytes) frames; the init reads them
    // all before it does anything else.
    child.stdin.take().map(|mut pipe| {
        let frames: Vec<Vec<u8>> = secrets.iter().map(|s| s.to_vec()).collect();
        std::thread::spawn(move || {
            use std::io::Write;
            for f in &frames {
                let len = (f.len() as u64).to_le_bytes();
                if pipe
                    .write_all(&len)
                    .and_then(|_| pipe.write_all(f))
                    .is_err()
                {
                    break;
                }
            }
        })
    })
}

/// Hands the child's stdout and stderr to `on_output` as they arrive, until both close.
fn pump_output(child: &mut std::process::Child, on_output: &mut dyn FnMut(Stream, &[u8])) {
    let (tx, rx) = std::sync::mpsc::channel::<(Stream, Vec<u8>)>();
    let mut readers = Vec::new();
    for (stream, pipe) in [
        (
            Stream::Stdout,
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
        (
            Stream::Stderr,
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
    ] {
        let Some(mut pipe) = pipe else { continue };
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send((stream, buf[..n].to_vec())).is_err() {
                            break;
                        }
                    }
                }
            }
        }));
    }
    drop(tx);
    for (stream, chunk) in rx {
        on_output(stream, &chunk);
    }
    for r in readers {
        let _ = r.join();
    }
}

/// What the exit status means: a signal, the init's setup or exec failure (its
/// message in `setup_err_path`), or the command's exit code.
fn outcome(
    status: std::process::ExitStatus,
    setup_err_path: &Path,
) -> Result<Outcome, SandboxError> {
    use std::os::unix::process::ExitStatusExt;
    if let Some(sig) = status.signal() {
        return Ok(Outcome::Signaled(sig));
    }
    let code = status.code().unwrap_or(SETUP_FAILED);
    if code == SETUP_FAILED || code == EXEC_FAILED {
        if let Ok(msg) = std::fs::read_to_string(setup_err_path) {
            if let Some(program) = msg.strip_prefix(EXEC_FORMAT_MARK) {
                return Err(SandboxError::ExecFormat {
                    program: program.to_string(),
                });
            }
            if code == SETUP_FAILED && !msg.is_empty() {
                return Err(SandboxError::Setup(msg.trim().to_string()));
            }
        }
    }
    Ok(Outcome::Exited(code))
}

/// Like [`run`], with `secrets`: the values `MountKind::Secret` and
/// `SandboxSpec::secret_env` refer to by index. They are written to the init's
/// standard input, never to the bundle.
pub fn run_with_secrets(
    exe: &Path,
    bundle: &Path,
    spec: &SandboxSpec,
    secrets: &[&[u8]],
    on_output: &mut dyn FnMut(Stream, &[u8]),
) -> Result<Outcome, SandboxError> {
    let Launch {
        spec: effective,
        spec_path,
        setup_err_path,
        flags,
        stack_exe,
    } = launch(bundle, spec, None)?;
    let spec = &effective;
    let mut cmd = Command::new(exe);
    // Standard input carries the secrets, and stays open until the network is up:
    // the init reads it to EOF before anything else.
    cmd.arg(INIT_ARG)
        .arg(&spec_path)
        .arg(&setup_err_path)
        .stdin(if secrets.is_empty() && stack_exe.is_none() {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_clear();
    // SAFETY: between fork and exec only async-signal-safe calls are made.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            // Nothing of the caller's open files reaches the sandbox.
            if libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if libc::unshare(flags) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| SandboxError::Spawn {
        exe: exe.to_path_buf(),
        source: e,
    })?;
    let stack = start_stack(stack_exe.as_deref(), &mut child, bundle, &spec.ports)?;
    let feeder = feed_secrets(&mut child, secrets);
    pump_output(&mut child, on_output);
    if let Some(f) = feeder {
        let _ = f.join();
    }
    let status = child.wait().map_err(|e| SandboxError::Spawn {
        exe: exe.to_path_buf(),
        source: e,
    })?;
    drop(stack);
    let outcome = outcome(status, &setup_err_path)?;
    // The mountpoints layer sits on top of the caller's lowers.
    overlay_used(
        bundle,
        &spec.upperdir,
        spec.lowerdirs.get(1..).unwrap_or(&[]),
    )?;
    Ok(outcome)
}

/// After a run: says once per process which overlay served the steps, and puts
/// an upper directory fuse-overlayfs wrote into the kernel's form.
fn overlay_used(bundle: &Path, upper: &Path, lowers: &[PathBuf]) -> Result<(), SandboxError> {
    static SAID: std::sync::Once = std::sync::Once::new();
    let used = std::fs::read_to_string(bundle.join(OVERLAY_USED_FILE)).unwrap_or_default();
    let fuse = used == OVERLAY_FUSE;
    if used == OVERLAY_KERNEL || fuse {
        SAID.call_once(|| {
            let which = match (fuse, layer_cache::overlay::namespace().mount_option()) {
                (true, _) => "fuse-overlayfs".to_string(),
                (false, Some(opt)) => format!("kernel ({opt})"),
                (false, None) => "kernel".to_string(),
            };
            tracing::debug!("overlay: {which}");
        });
    }
    if fuse {
        crate::layer::diff::normalize_fuse_upper(upper, lowers).map_err(|e| match e {
            crate::layer::diff::DiffError::Io { path, source } => SandboxError::Io { path, source },
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::resolve_in_layers;

    #[test]
    fn targets_resolve_through_symlinks_in_any_layer() {
        let tmp = tempfile::TempDir::new().unwrap();
        let (top, bottom) = (tmp.path().join("top"), tmp.path().join("bottom"));
        std::fs::create_dir_all(bottom.join("var")).unwrap();
        std::fs::create_dir_all(top.join("opt")).unwrap();
        std::os::unix::fs::symlink("/run", bottom.join("var/run")).unwrap();
        std::os::unix::fs::symlink("../../etc", top.join("opt/up")).unwrap();
        std::os::unix::fs::symlink("loop", top.join("loop")).unwrap();
        let layers = [top, bottom];
        assert_eq!(resolve_in_layers(&layers, "/var/run/x"), "/run/x");
        assert_eq!(resolve_in_layers(&layers, "/opt/up/conf"), "/etc/conf");
        assert_eq!(resolve_in_layers(&layers, "/a/../b/./c/"), "/b/c");
        // A loop stops instead of spinning.
        assert!(resolve_in_layers(&layers, "/loop/x").ends_with("/x"));
    }
}

/// The standard streams of an attached container and how it runs.
#[derive(Debug)]
pub struct Attach {
    /// The command's standard input; `None` is `/dev/null`.
    pub stdin: Option<std::os::fd::OwnedFd>,
    pub stdout: std::os::fd::OwnedFd,
    pub stderr: std::os::fd::OwnedFd,
    /// The three streams are one terminal (a pty's secondary side), which becomes
    /// the command's controlling terminal.
    pub terminal: bool,
    /// The root filesystem is mounted read-only (`--read-only`).
    pub read_only: bool,
}

/// An attached sandbox that was started; [`Running::wait`] ends it.
#[derive(Debug)]
pub struct Running {
    child: std::process::Child,
    stack: Option<network::Stack>,
    setup_err_path: PathBuf,
    bundle: PathBuf,
    upper: PathBuf,
    lowers: Vec<PathBuf>,
}

impl std::fmt::Debug for network::Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stack")
    }
}

impl Running {
    /// The sandbox's outer process: signals sent to it reach the command (SIGKILL
    /// ends the whole sandbox).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the command to end; the network stack stops with it.
    pub fn wait(mut self) -> Result<Outcome, SandboxError> {
        let status = loop {
            match self.child.wait() {
                Ok(s) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(SandboxError::Io {
                        path: self.bundle.clone(),
                        source: e,
                    })
                }
            }
        };
        if let Some(stack) = self.stack.take() {
            // The kernel takes a while (~15 ms) to release the stack's tap device
            // when it ends; the caller need not wait for that. Should the process
            // exit first, the stack's exit pipe closes and it ends all the same.
            std::thread::spawn(move || drop(stack));
        }
        let outcome = outcome(status, &self.setup_err_path)?;
        overlay_used(&self.bundle, &self.upper, &self.lowers)?;
        Ok(outcome)
    }
}

/// `/etc/resolv.conf` for a step or a container: the host's for the host network; for a private
/// one, the stack's forwarder with the host's search domains and options (the
/// host's nameservers may be loopback addresses the step cannot reach).
pub fn resolv_conf(network: Network) -> String {
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    match network {
        Network::Host => host,
        Network::None => String::new(),
        Network::Private => {
            let mut out = format!("nameserver {}\n", PRIVATE_DNS);
            for line in host.lines() {
                let t = line.trim_start();
                if t.starts_with("search ") || t.starts_with("domain ") || t.starts_with("options ")
                {
                    out.push_str(t);
                    out.push('\n');
                }
            }
            out
        }
    }
}

/// What both entry points have ready before the init is spawned: the spec written
/// to the bundle for the init, the namespaces to unshare and the network stack.
struct Launch {
    spec: SandboxSpec,
    spec_path: PathBuf,
    setup_err_path: PathBuf,
    flags: libc::c_int,
    stack_exe: Option<PathBuf>,
}

fn launch(
    bundle: &Path,
    spec: &SandboxSpec,
    attach: Option<AttachInit>,
) -> Result<Launch, SandboxError> {
    check_ports(spec)?;
    let (spec, etc_files) = prepare_bundle(bundle, spec)?;
    let seccomp = if spec.insecure {
        None
    } else {
        Some(confine::seccomp_program()?.clone())
    };
    let spec_path = bundle.join("spec.json");
    let bytes = serde_json::to_vec(&InitSpec {
        spec: spec.clone(),
        seccomp,
        etc_files,
        overlay: OverlayPlan::for_this_process(),
        attach,
    })?;
    std::fs::write(&spec_path, bytes).map_err(|e| SandboxError::Io {
        path: spec_path.clone(),
        source: e,
    })?;
    let mut flags =
        libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    if spec.network != Network::Host {
        flags |= libc::CLONE_NEWNET;
    }
    let stack_exe = match spec.network {
        Network::Private => Some(network::find_stack()?),
        _ => None,
    };
    Ok(Launch {
        spec,
        spec_path,
        setup_err_path: bundle.join("setup-error"),
        flags,
        stack_exe,
    })
}

/// The network stack for a private network, joined to the init's namespace; the
/// init is killed when it cannot start.
fn start_stack(
    stack_exe: Option<&Path>,
    child: &mut std::process::Child,
    bundle: &Path,
    ports: &[PortForward],
) -> Result<Option<network::Stack>, SandboxError> {
    let Some(stack_exe) = stack_exe else {
        return Ok(None);
    };
    match network::Stack::start(stack_exe, child.id(), bundle, ports) {
        Ok(s) => Ok(Some(s)),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

/// Published ports need a network of the sandbox's own to forward into.
fn check_ports(spec: &SandboxSpec) -> Result<(), SandboxError> {
    let (network, why) = match spec.network {
        _ if spec.ports.is_empty() => return Ok(()),
        Network::Private => return Ok(()),
        Network::Host => ("host", "already uses the host's ports"),
        Network::None => ("none", "has no network to publish on"),
    };
    Err(SandboxError::PortsWithoutPrivateNetwork { network, why })
}

/// Starts `spec` in the sandbox as a container: the command's standard streams are
/// `attach`'s (not captured, as a RUN's are), its ^C and other signals sent to
/// [`Running::pid`] are passed on to it, and PID 1 reaps whatever it leaves. The
/// confinement is RUN's.
pub fn spawn_attached(
    exe: &Path,
    bundle: &Path,
    spec: &SandboxSpec,
    attach: Attach,
) -> Result<Running, SandboxError> {
    use std::os::fd::AsRawFd;
    let Launch {
        spec: effective,
        spec_path,
        setup_err_path,
        flags,
        stack_exe,
    } = launch(
        bundle,
        spec,
        Some(AttachInit {
            terminal: attach.terminal,
            read_only: attach.read_only,
        }),
    )?;
    let spec = &effective;
    let (control_r, control_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| SandboxError::Setup(format!("pipe: {e}")))?;
    let control_fd = control_r.as_raw_fd();
    let mut cmd = Command::new(exe);
    cmd.arg(INIT_ARG)
        .arg(&spec_path)
        .arg(&setup_err_path)
        .stdin(match attach.stdin {
            Some(fd) => Stdio::from(fd),
            None => Stdio::null(),
        })
        .stdout(Stdio::from(attach.stdout))
        .stderr(Stdio::from(attach.stderr))
        .env_clear();
    // SAFETY: between fork and exec only async-signal-safe calls are made.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            // The control pipe moves to CONTROL_FD (above it first, so the dup2
            // clears close-on-exec even when it already was there).
            let high = libc::fcntl(control_fd, libc::F_DUPFD_CLOEXEC, 10);
            if high < 0 || libc::dup2(high, CONTROL_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Nothing else of the caller's open files reaches the sandbox.
            if libc::syscall(
                libc::SYS_close_range,
                (CONTROL_FD + 1) as u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // ^C at the user's terminal is the caller's to pass on.
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            if libc::unshare(flags) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| SandboxError::Spawn {
        exe: exe.to_path_buf(),
        source: e,
    })?;
    drop(control_r);
    let stack = start_stack(stack_exe.as_deref(), &mut child, bundle, &spec.ports)?;
    // The init reads the control pipe to EOF before it goes on.
    drop(control_w);
    Ok(Running {
        child,
        stack,
        setup_err_path,
        bundle: bundle.to_path_buf(),
        upper: spec.upperdir.clone(),
        lowers: spec.lowerdirs.get(1..).unwrap_or(&[]).to_vec(),
    })
}
