//! The sandbox init: runs in the re-executed `mybuild`, never in the library caller.
//! Everything here ends in `exit`; setup errors go to the error file the parent named
//! and end with [`SETUP_FAILED`].

use std::ffi::{CString, OsString};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use super::confine::{self, SeccompProgram};
use super::{
    InitSpec, MountKind, Network, OverlayPlan, CONTROL_FD, EXEC_DENIED, EXEC_FAILED,
    EXEC_FORMAT_MARK, OVERLAY_FUSE, OVERLAY_KERNEL, OVERLAY_USED_FILE, SETUP_FAILED,
};

struct Fail(String);

type R<T = ()> = Result<T, Fail>;

fn errno(what: &str, path: &Path) -> Fail {
    Fail(format!(
        "{what} {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    ))
}

fn cpath(p: &Path) -> R<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Fail(format!("path {} contains NUL", p.display())))
}

fn cstr(s: &str) -> R<CString> {
    CString::new(s).map_err(|_| Fail(format!("{s:?} contains NUL")))
}

fn mount(src: &str, target: &Path, fstype: &str, flags: libc::c_ulong, data: Option<&str>) -> R {
    mount_errno(src, target, fstype, flags, data).map_err(|(_, f)| f)
}

/// [`mount`], also giving the errno of a failed mount(2).
fn mount_errno(
    src: &str,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<(), (i32, Fail)> {
    let src_c = cstr(src).map_err(|f| (0, f))?;
    let target_c = cpath(target).map_err(|f| (0, f))?;
    let fstype_c = cstr(fstype).map_err(|f| (0, f))?;
    let data_c = data.map(cstr).transpose().map_err(|f| (0, f))?;
    // SAFETY: all pointers are valid NUL-terminated strings for the call's duration.
    let rc = unsafe {
        libc::mount(
            src_c.as_ptr(),
            target_c.as_ptr(),
            fstype_c.as_ptr(),
            flags,
            data_c
                .as_ref()
                .map_or(std::ptr::null(), |d| d.as_ptr().cast()),
        )
    };
    if rc != 0 {
        let code = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        return Err((code, errno(&format!("mount {fstype} {src} on"), target)));
    }
    Ok(())
}

/// Binds `src` on the directory or file `target` holds, for the step: never a usable
/// device node (`nodev`, submounts too), and read-only when asked. The flags are set
/// on a detached copy of the tree before it is attached, so no moment exists where
/// the step's view has devices allowed; the source's other flags (nosuid, noexec,
/// ...) are kept.
fn bind(src: &Path, target: &OwnedFd, readonly: bool) -> R {
    let ro = if readonly { libc::MOUNT_ATTR_RDONLY } else { 0 };
    bind_with(src, target, libc::MOUNT_ATTR_NODEV | ro)
}

/// [`bind`] of a host tree that holds nothing to run: also `nosuid` and `noexec`.
fn bind_tree(src: &Path, target: &OwnedFd, readonly: bool) -> R {
    let ro = if readonly { libc::MOUNT_ATTR_RDONLY } else { 0 };
    let attrs = libc::MOUNT_ATTR_NODEV | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NOEXEC;
    bind_with(src, target, attrs | ro)
}

fn bind_with(src: &Path, target: &OwnedFd, attr_set: u64) -> R {
    let src_c = cpath(src)?;
    let mut attr: libc::mount_attr = unsafe { std::mem::zeroed() };
    attr.attr_set = attr_set;
    // SAFETY: valid C strings and a zeroed mount_attr of the size passed; the tree
    // descriptor is owned right after the call.
    unsafe {
        let tree = libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            src_c.as_ptr(),
            libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_RECURSIVE as libc::c_uint,
        );
        if tree < 0 {
            return Err(errno("open_tree", src));
        }
        let tree = OwnedFd::from_raw_fd(tree as RawFd);
        if libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        ) != 0
        {
            return Err(errno("mount_setattr", src));
        }
        if libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH,
        ) != 0
        {
            return Err(errno("move_mount", src));
        }
    }
    Ok(())
}

/// The path that names what `fd` holds, for mount(2).
fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Opens `path` under `root` (a directory descriptor) as the kernel resolves it
/// inside the container: `..` and symlinks, absolute ones too, never leave `root`.
/// Each component is opened relative to the directory already held, so a tree
/// that changes meanwhile (a cache mount another step writes to) cannot lead out
/// of it either. Missing components are made: directories, and the last one a
/// file unless `dir`. The result is an `O_PATH` descriptor to mount on.
fn open_in_root(root: &OwnedFd, path: &str, dir: bool) -> R<OwnedFd> {
    let split = |p: &[u8]| -> Vec<Vec<u8>> {
        p.split(|b| *b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
            .rev()
            .map(<[u8]>::to_vec)
            .collect()
    };
    let fail = |what: &str| {
        Fail(format!(
            "{what} {path}: {}",
            std::io::Error::last_os_error()
        ))
    };
    let mut pending = split(path.as_bytes());
    let mut held: Vec<OwnedFd> = Vec::new();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == b".." {
            held.pop();
            continue;
        }
        let at = held.last().unwrap_or(root).as_raw_fd();
        let name = CString::new(part).map_err(|_| Fail(format!("{path:?} contains NUL")))?;
        let mut tries = 0;
        // SAFETY: plain *at calls on descriptors we hold, with valid C strings; a
        // descriptor returned is owned at once.
        let fd = loop {
            let fd = unsafe {
                libc::openat(
                    at,
                    name.as_ptr(),
                    libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                )
            };
            if fd >= 0 {
                break unsafe { OwnedFd::from_raw_fd(fd) };
            }
            tries += 1;
            if std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOENT) || tries > 8 {
                return Err(fail("opening"));
            }
            let made = if pending.is_empty() && !dir {
                let f = unsafe {
                    libc::openat(
                        at,
                        name.as_ptr(),
                        libc::O_CREAT
                            | libc::O_EXCL
                            | libc::O_NOFOLLOW
                            | libc::O_WRONLY
                            | libc::O_CLOEXEC,
                        0o644,
                    )
                };
                if f >= 0 {
                    unsafe { libc::close(f) };
                }
                f >= 0
            } else {
                unsafe { libc::mkdirat(at, name.as_ptr(), 0o755) == 0 }
            };
            if !made && std::io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST) {
                return Err(fail("creating"));
            }
        };
        // SAFETY: fstat and readlinkat write only into the buffers given.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return Err(fail("stat"));
        }
        if st.st_mode & libc::S_IFMT != libc::S_IFLNK {
            held.push(fd);
            continue;
        }
        links += 1;
        if links > 40 {
            return Err(Fail(format!("{path}: too many levels of symbolic links")));
        }
        let mut buf = vec![0u8; libc::PATH_MAX as usize];
        let n = unsafe {
            libc::readlinkat(
                fd.as_raw_fd(),
                c"".as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n < 0 {
            return Err(fail("readlink"));
        }
        buf.truncate(n as usize);
        if buf.starts_with(b"/") {
            held.clear();
        }
        pending.extend(split(&buf));
    }
    match held.pop() {
        Some(fd) => Ok(fd),
        None => root.try_clone().map_err(|e| Fail(format!("{path}: {e}"))),
    }
}

/// Binds a host device node (`/dev/null`, ...) as it is: these must stay openable.
fn bind_device(src: &Path, target: &Path) -> R {
    let src_s = src.to_string_lossy().into_owned();
    mount(&src_s, target, "none", libc::MS_BIND, None)
}

fn open_dir(p: &Path) -> R<OwnedFd> {
    let c = cpath(p)?;
    // SAFETY: a valid C string; the descriptor is owned at once.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(errno("open", p));
    }
    // SAFETY: fd was just opened and is not owned elsewhere.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ensure_dir(p: &Path) -> R {
    std::fs::create_dir_all(p).map_err(|e| Fail(format!("mkdir {}: {e}", p.display())))
}

fn ensure_file(p: &Path) -> R {
    if p.symlink_metadata().is_ok() {
        return Ok(());
    }
    if let Some(parent) = p.parent() {
        ensure_dir(parent)?;
    }
    File::create(p)
        .map(drop)
        .map_err(|e| Fail(format!("create {}: {e}", p.display())))
}

/// Resolves a container path under `root` without leaving it (`..` and absolute
/// symlinks are taken relative to `root`).
fn in_root(root: &Path, path: &str) -> PathBuf {
    let mut out = root.to_path_buf();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if out != root {
                    out.pop();
                }
            }
            p => out.push(p),
        }
    }
    out
}

/// Mounts an overlay of `lowers` (topmost first) at `target`, writable into
/// `upper_work` (upper and work directories) when given, else read-only. The kernel's
/// overlayfs is tried first (with `userxattr` in a user namespace); where it refuses
/// (EPERM, EINVAL), or when forced, fuse-overlayfs serves it. Its daemon is a child
/// of PID 1, so it ends with the step's PID namespace. Returns which one mounted.
fn mount_overlay(
    plan: &OverlayPlan,
    bundle: &Path,
    lowers: &[String],
    upper_work: Option<(&Path, &Path)>,
    target: &Path,
) -> R<&'static str> {
    let mut data = format!("lowerdir={}", lowers.join(":"));
    if let Some((upper, work)) = upper_work {
        data.push_str(&format!(
            ",upperdir={},workdir={}",
            upper.display(),
            work.display()
        ));
    }
    let readonly = if upper_work.is_none() {
        libc::MS_RDONLY
    } else {
        0
    };
    let mut refused = None;
    if !plan.force_fuse {
        let mut kernel = data.clone();
        if plan.userxattr {
            kernel.push_str(",userxattr");
        }
        // nodev: a device node made in RUN may belong in the image, but never opens.
        match mount_errno(
            "overlay",
            target,
            "overlay",
            readonly | libc::MS_NODEV,
            Some(&kernel),
        ) {
            Ok(()) => return Ok(OVERLAY_KERNEL),
            Err((code, e)) => {
                if !matches!(code, libc::EPERM | libc::EINVAL) {
                    return Err(e);
                }
                if plan.fuse.is_none() {
                    // In a user namespace the fallback is what is missing.
                    if plan.userxattr {
                        return Err(Fail(format!(
                            "{}; the kernel refuses overlayfs in this user namespace: \
                             install fuse-overlayfs (apt-get install fuse-overlayfs)",
                            e.0
                        )));
                    }
                    return Err(e);
                }
                refused = Some(e.0);
            }
        }
    }
    let Some(fuse) = &plan.fuse else {
        return Err(Fail(
            "fuse-overlayfs is not installed (apt-get install fuse-overlayfs)".into(),
        ));
    };
    let log_path = bundle.join("fuse-overlayfs.log");
    let log =
        File::create(&log_path).map_err(|e| Fail(format!("create {}: {e}", log_path.display())))?;
    // allow_other: the step may run as another user than the daemon; the kernel
    // makes a FUSE mount in a user namespace nodev and nosuid regardless.
    let mut opts = format!("{data},allow_other,nodev,nosuid");
    if upper_work.is_none() {
        opts.push_str(",ro");
    }
    let status = std::process::Command::new(fuse)
        .arg("-o")
        .arg(&opts)
        .arg(target)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .status()
        .map_err(|e| Fail(format!("starting {}: {e}", fuse.display())))?;
    if !status.success() {
        let said = std::fs::read_to_string(&log_path).unwrap_or_default();
        let kernel = refused.map(|k| format!("{k}; then ")).unwrap_or_default();
        return Err(Fail(format!(
            "{kernel}fuse-overlayfs could not mount {}: {status}: {}",
            target.display(),
            said.trim()
        )));
    }
    FUSE_STARTED.store(true, std::sync::atomic::Ordering::Relaxed);
    Ok(OVERLAY_FUSE)
}

/// Set once a fuse-overlayfs daemon serves a mount of this sandbox.
static FUSE_STARTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn setup_dev(dev: &Path) -> R {
    ensure_dir(dev)?;
    // nodev: a node the step makes here with mknod cannot be opened; the nodes
    // below are bind mounts of the host's own, which keep working.
    mount(
        "tmpfs",
        dev,
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    for name in ["null", "zero", "full", "random", "urandom", "tty"] {
        let target = dev.join(name);
        ensure_file(&target)?;
        bind_device(&Path::new("/dev").join(name), &target)?;
    }
    let pts = dev.join("pts");
    ensure_dir(&pts)?;
    mount(
        "devpts",
        &pts,
        "devpts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    let shm = dev.join("shm");
    ensure_dir(&shm)?;
    mount(
        "shm",
        &shm,
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(target, dev.join(link)).map_err(|e| Fail(format!("symlink /dev/{link}: {e}")))?;
    }
    Ok(())
}

fn loopback_up() -> R {
    // SAFETY: plain socket/ioctl calls on a zeroed, correctly sized ifreq.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(Fail(format!("socket: {}", std::io::Error::last_os_error())));
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        let ok = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) == 0 && {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) == 0
        };
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if !ok {
            return Err(Fail(format!("bringing up lo: {err}")));
        }
    }
    Ok(())
}

/// The RUN's mounts, each target opened under the new root (never by a host path).
fn setup_mounts(
    init: &InitSpec,
    bundle: &Path,
    secrets: &[Vec<u8>],
    root_fd: &OwnedFd,
    secret_dir: &Path,
) -> R {
    let spec = &init.spec;
    for (i, m) in spec.mounts.iter().enumerate() {
        match &m.kind {
            MountKind::Bind { source, readonly } => {
                let target = open_in_root(root_fd, &m.target, source.is_dir())?;
                bind(source, &target, *readonly)?;
            }
            MountKind::Tmpfs { size } => {
                let target = open_in_root(root_fd, &m.target, true)?;
                let data = size.map(|s| format!("size={s}"));
                mount(
                    "tmpfs",
                    &fd_path(&target),
                    "tmpfs",
                    libc::MS_NOSUID | libc::MS_NODEV,
                    data.as_deref(),
                )?;
            }
            MountKind::Layers {
                layers,
                source,
                scratch,
                is_dir,
            } => {
                let staging = bundle.join(format!("layers-{i}"));
                ensure_dir(&staging)?;
                let lowers: Vec<String> = layers.iter().map(|p| p.display().to_string()).collect();
                let (upper, work) = match scratch {
                    Some(s) => (s.join("upper"), s.join("work")),
                    None => (PathBuf::new(), PathBuf::new()),
                };
                let upper_work = scratch.as_ref().map(|_| (upper.as_path(), work.as_path()));
                mount_overlay(&init.overlay, bundle, &lowers, upper_work, &staging)?;
                let target = open_in_root(root_fd, &m.target, *is_dir)?;
                bind(&in_root(&staging, source), &target, scratch.is_none())?;
            }
            MountKind::Secret {
                index,
                mode,
                uid,
                gid,
            } => {
                use std::os::unix::fs::PermissionsExt;
                let value = secrets
                    .get(*index)
                    .ok_or_else(|| Fail(format!("secret {index} was not passed")))?;
                let file = secret_dir.join(format!("secret-{i}"));
                let fail = |e: std::io::Error| Fail(format!("{}: {e}", file.display()));
                std::fs::write(&file, value).map_err(fail)?;
                std::os::unix::fs::chown(&file, Some(*uid), Some(*gid)).map_err(|e| {
                    if e.raw_os_error()
                        .is_some_and(layer_cache::overlay::is_unmapped_owner)
                    {
                        let owner = layer_cache::overlay::UnmappedOwner {
                            path: PathBuf::from(&m.target),
                            uid: *uid,
                            gid: *gid,
                        };
                        return Fail(owner.to_string());
                    }
                    fail(e)
                })?;
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode & 0o7777))
                    .map_err(fail)?;
                bind(&file, &open_in_root(root_fd, &m.target, false)?, true)?;
            }
        }
    }
    Ok(())
}

fn setup_root(init: &InitSpec, bundle: &Path, secrets: &[Vec<u8>]) -> R {
    let spec = &init.spec;
    let root = Path::new("/");
    mount("none", root, "none", libc::MS_REC | libc::MS_PRIVATE, None)?;
    if spec.lowerdirs.is_empty() {
        return Err(Fail("no lowerdir given".into()));
    }
    let lowers: Vec<String> = spec
        .lowerdirs
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let rootfs = &spec.rootfs;
    ensure_dir(rootfs)?;
    let used = mount_overlay(
        &init.overlay,
        bundle,
        &lowers,
        Some((&spec.upperdir, &spec.workdir)),
        rootfs,
    )?;
    let used_path = bundle.join(OVERLAY_USED_FILE);
    std::fs::write(&used_path, used).map_err(|e| Fail(format!("{}: {e}", used_path.display())))?;

    let proc_dir = rootfs.join("proc");
    ensure_dir(&proc_dir)?;
    mount(
        "proc",
        &proc_dir,
        "proc",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    )?;
    setup_dev(&rootfs.join("dev"))?;
    if init.attach.as_ref().is_some_and(|a| a.terminal) {
        // The terminal (our standard input) is the container's /dev/console, as
        // Docker binds it: ttyname() then finds it inside the container. Bound by
        // its path in this (copied) mount namespace: the descriptor's own mount
        // belongs to the caller's, which mount(2) refuses as a source.
        if let Ok(pts) = std::fs::read_link("/proc/self/fd/0") {
            if pts.starts_with("/dev/pts/") {
                let console = rootfs.join("dev/console");
                ensure_file(&console)?;
                bind_device(&pts, &console)?;
            }
        }
    }
    let sys = rootfs.join("sys");
    ensure_dir(&sys)?;
    // A fresh sysfs has no submounts: no host cgroup file, debugfs or securityfs
    // below it, and read-only all the way down.
    let mut sys_flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    if !spec.insecure {
        sys_flags |= libc::MS_RDONLY;
    }
    if spec.network == Network::Host && layer_cache::overlay::in_user_namespace() {
        // sysfs mounts only where the network namespace belongs to our user
        // namespace; the host's does not. Its /sys, read-only all the way down, as
        // rootless podman does.
        bind_tree(Path::new("/sys"), &open_dir(&sys)?, !spec.insecure)?;
    } else {
        mount("sysfs", &sys, "sysfs", sys_flags, None)?;
    }

    // Every target below is resolved under this descriptor, never by a host path:
    // a mount's contents (a cache another step wrote) may hold symlinks.
    let root_fd = open_dir(rootfs)?;
    for (src, target) in &init.etc_files {
        bind(src, &open_in_root(&root_fd, target, false)?, false)?;
    }

    let secret_dir = bundle.join("secrets");
    if spec
        .mounts
        .iter()
        .any(|m| matches!(m.kind, MountKind::Secret { .. }))
    {
        // A tmpfs in this mount namespace only: the values live in memory and go
        // away with the namespace; the directory on disk stays empty.
        ensure_dir(&secret_dir)?;
        let size: usize = secrets.iter().map(|s| s.len() + 4096).sum::<usize>() + 65536;
        mount(
            "tmpfs",
            &secret_dir,
            "tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            Some(&format!("mode=700,size={size}")),
        )?;
    }

    setup_mounts(init, bundle, secrets, &root_fd, &secret_dir)?;

    if FUSE_STARTED.load(std::sync::atomic::Ordering::Relaxed) {
        // pivot_root moves every process of the mount namespace whose root is the old
        // root into the new one: a fuse-overlayfs daemon would then resolve its own
        // paths through the mount it serves, and wait on itself forever. The daemons
        // keep this namespace; PID 1 pivots in a copy of it.
        // SAFETY: unshare and mount with valid arguments in a single-threaded process.
        if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
            return Err(errno("unshare mount namespace for", rootfs));
        }
        mount("none", root, "none", libc::MS_REC | libc::MS_PRIVATE, None)?;
    }
    let rootfs_c = cpath(rootfs)?;
    let dot = cstr(".")?;
    // SAFETY: valid C strings; pivot_root(".", ".") stacks the old root under the new
    // one, and the lazy unmount then drops it.
    unsafe {
        if libc::chdir(rootfs_c.as_ptr()) != 0 {
            return Err(errno("chdir", rootfs));
        }
        if libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) != 0 {
            return Err(errno("pivot_root", rootfs));
        }
        if libc::umount2(dot.as_ptr(), libc::MNT_DETACH) != 0 {
            return Err(errno("unmount old root at", Path::new("/")));
        }
        if libc::chdir(c"/".as_ptr()) != 0 {
            return Err(errno("chdir", Path::new("/")));
        }
        let host = spec.hostname.as_bytes();
        if libc::sethostname(host.as_ptr().cast(), host.len()) != 0 {
            return Err(Fail(format!(
                "sethostname: {}",
                std::io::Error::last_os_error()
            )));
        }
    }
    if spec.network != Network::Host {
        loopback_up()?;
    }
    if !spec.insecure {
        mask_paths()?;
    }
    // WORKDIR is created as root before privileges drop, as Docker does.
    ensure_dir(&in_root(Path::new("/"), &spec.cwd))?;
    if init.attach.as_ref().is_some_and(|a| a.read_only) {
        // `--read-only`: the root only; /dev, /proc, tmpfs and binds are their own mounts.
        mount(
            "none",
            root,
            "none",
            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NODEV,
            None,
        )?;
    }
    Ok(())
}

/// Docker's masked and read-only paths, in the new root.
fn mask_paths() -> R {
    for p in confine::MASKED_PATHS {
        let path = Path::new(p);
        let Ok(md) = path.symlink_metadata() else {
            continue;
        };
        if md.is_dir() {
            mount(
                "tmpfs",
                path,
                "tmpfs",
                libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                Some("size=0"),
            )?;
        } else {
            bind_device(Path::new("/dev/null"), path)?;
        }
    }
    for p in confine::READONLY_PATHS {
        let path = Path::new(p);
        if path.symlink_metadata().is_err() {
            continue;
        }
        mount(p, path, "none", libc::MS_BIND | libc::MS_REC, None)?;
        mount(
            "none",
            path,
            "none",
            libc::MS_BIND
                | libc::MS_REMOUNT
                | libc::MS_RDONLY
                | libc::MS_NOSUID
                | libc::MS_NODEV
                | libc::MS_NOEXEC,
            None,
        )?;
    }
    Ok(())
}

/// Docker's confinement for the calling process, in runc's order: bounding set
/// (needs CAP_SETPCAP), seccomp (needs CAP_SYS_ADMIN without no_new_privs), the
/// uid change (`switch_user`), then the process's own capability sets.
fn confine_self(
    seccomp: Option<&SeccompProgram>,
    switch_user: impl FnOnce() -> Result<(), String>,
    root: bool,
) -> Result<(), String> {
    let keep = confine::default_caps();
    confine::limit_bounding(&keep)?;
    if let Some(program) = seccomp {
        confine::apply_seccomp(program)?;
    }
    switch_user()?;
    confine::limit_process(&keep, root)
}

/// A container's PID 1 after the fork: Docker's bounding set and filter, and of
/// the capabilities only CAP_KILL.
fn confine_forwarder(seccomp: Option<&SeccompProgram>) -> Result<(), String> {
    confine::limit_bounding(&confine::default_caps())?;
    if let Some(program) = seccomp {
        confine::apply_seccomp(program)?;
    }
    let keep = [caps::Capability::CAP_KILL].into_iter().collect();
    confine::limit_process(&keep, true)
}

/// Finds `arg0` on the container's PATH, as execvp would.
fn resolve_program(arg0: &str, env: &[String]) -> PathBuf {
    if arg0.contains('/') {
        return PathBuf::from(arg0);
    }
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(arg0);
        if candidate.is_file() {
            return candidate;
        }
    }
    PathBuf::from(arg0)
}

/// In the forked command process: drop privileges and exec. Never returns.
fn exec_command(init: &InitSpec, secrets: &[Vec<u8>], err: &mut File) -> ! {
    let spec = &init.spec;
    let fail = |msg: String| -> ! {
        let _ = writeln!(std::io::stderr(), "{msg}");
        // SAFETY: _exit is always safe.
        unsafe { libc::_exit(EXEC_FAILED) }
    };
    if init.attach.as_ref().is_some_and(|a| a.terminal) {
        // The terminal on fd 0 becomes the command's controlling terminal, in a
        // session of its own, so ^C and window changes reach it.
        // SAFETY: setsid and ioctl with an integer argument in a single-threaded child.
        unsafe {
            // The command's user owns its terminal, as runc arranges, so /dev/tty
            // opens for a user other than root too.
            libc::fchown(0, spec.uid, spec.gid);
            libc::setsid();
            if libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                fail(format!(
                    "mybuild sandbox: controlling terminal: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
    }
    let Some(arg0) = spec.args.first() else {
        fail("mybuild sandbox: empty command".into())
    };
    let program = resolve_program(arg0, &spec.env);
    let Ok(prog_c) = cpath(&program) else {
        fail(format!("exec {arg0}: bad path"))
    };
    let Ok(args_c) = spec.args.iter().map(|a| cstr(a)).collect::<R<Vec<_>>>() else {
        fail("mybuild sandbox: argument contains NUL".into())
    };
    let secret_names: Vec<&str> = spec.secret_env.iter().map(|(n, _)| n.as_str()).collect();
    let kept = spec
        .env
        .iter()
        .filter(|e| !secret_names.contains(&e.split_once('=').map_or(e.as_str(), |(n, _)| n)));
    let Ok(mut env_c) = kept.map(|a| cstr(a)).collect::<R<Vec<_>>>() else {
        fail("mybuild sandbox: environment contains NUL".into())
    };
    // Secret variables reach this process only; they are never in the spec file.
    for (name, index) in &spec.secret_env {
        let mut var = format!("{name}=").into_bytes();
        var.extend_from_slice(secrets.get(*index).map_or(&[][..], Vec::as_slice));
        let Ok(c) = CString::new(var) else {
            fail(format!(
                "mybuild sandbox: secret variable {name} contains NUL"
            ))
        };
        env_c.push(c);
    }
    let mut argv: Vec<*const libc::c_char> = args_c.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env_c.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    let cwd = in_root(Path::new("/"), &spec.cwd);
    let Ok(cwd_c) = cpath(&cwd) else {
        fail("bad working directory".into())
    };
    let switch_user = || -> Result<(), String> {
        let gids: Vec<libc::gid_t> = spec.additional_gids.clone();
        // SAFETY: plain id syscalls in a single-threaded child.
        unsafe {
            if libc::setgroups(gids.len(), gids.as_ptr()) != 0 {
                let e = std::io::Error::last_os_error();
                // A user namespace whose single gid was mapped without newgidmap
                // denies setgroups for good; the groups stay the user's own, as
                // crun leaves them there.
                let denied = e.raw_os_error() == Some(libc::EPERM)
                    && std::fs::read_to_string("/proc/self/setgroups")
                        .is_ok_and(|s| s.trim() == "deny");
                if !denied {
                    return Err(format!("setgroups: {e}"));
                }
            }
            if libc::setgid(spec.gid) != 0 {
                return Err(format!(
                    "setgid {}: {}",
                    spec.gid,
                    std::io::Error::last_os_error()
                ));
            }
            if libc::setuid(spec.uid) != 0 {
                return Err(format!(
                    "setuid {}: {}",
                    spec.uid,
                    std::io::Error::last_os_error()
                ));
            }
        }
        Ok(())
    };
    let confined = if spec.insecure {
        switch_user()
    } else {
        confine_self(init.seccomp.as_ref(), switch_user, spec.uid == 0)
    };
    if let Err(e) = confined {
        fail(format!("mybuild sandbox: {e}"));
    }
    // SAFETY: single-threaded child after fork; all pointers outlive the calls.
    unsafe {
        // Only 0, 1 and 2 reach the command; the error file stays usable until exec.
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
        if libc::chdir(cwd_c.as_ptr()) != 0 {
            fail(format!(
                "chdir {}: {}",
                spec.cwd,
                std::io::Error::last_os_error()
            ));
        }
        libc::execve(prog_c.as_ptr(), argv.as_ptr(), envp.as_ptr());
    }
    let e = std::io::Error::last_os_error();
    // A binary for another architecture: told apart from a command's own exit 127
    // through the error file, so the build can name the platform.
    if e.raw_os_error() == Some(libc::ENOEXEC) {
        let _ = write!(err, "{EXEC_FORMAT_MARK}{}", program.display());
    }
    let denied = matches!(
        e.raw_os_error(),
        Some(libc::EACCES | libc::EISDIR | libc::EPERM)
    );
    if denied && init.attach.is_some() {
        // As Docker: 126 when the program exists but cannot be executed.
        let _ = writeln!(std::io::stderr(), "exec {arg0}: {e}");
        // SAFETY: _exit is always safe.
        unsafe { libc::_exit(EXEC_DENIED) }
    }
    if e.raw_os_error() == Some(libc::ENOENT) && !arg0.contains('/') {
        fail(format!(
            "exec: \"{arg0}\": executable file not found in $PATH"
        ))
    }
    fail(format!("exec {arg0}: {e}"))
}

/// Where the forwarding handler sends the signals it catches (0: nowhere yet).
static FORWARD_TO: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn forward_signal(sig: libc::c_int) {
    let pid = FORWARD_TO.load(std::sync::atomic::Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Signals a container's command is sent (by `stop`, or the user's ^C without a
/// terminal): each process between mybuild and the command passes them on.
const FORWARDED: [libc::c_int; 7] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
];

/// Passes [`FORWARDED`] signals on to `pid`. PID 1 of a namespace gets signals from
/// outside only for those it handles, so this is also what lets them in.
fn forward_signals_to(pid: libc::pid_t) {
    FORWARD_TO.store(pid, std::sync::atomic::Ordering::Relaxed);
    for sig in FORWARDED {
        // SAFETY: a zeroed sigaction with a plain handler and SA_RESTART.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = forward_signal as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

fn wait_status_to_code(status: libc::c_int) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        SETUP_FAILED
    }
}

/// PID 1 of the sandbox: set up, run the command, reap, exit with its status.
fn pid1(init: &InitSpec, bundle: &Path, secrets: &[Vec<u8>], err: &mut File) -> ! {
    let spec = &init.spec;
    // SAFETY: prctl with these arguments has no memory effects.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    if let Err(Fail(msg)) = setup_root(init, bundle, secrets) {
        let _ = err.write_all(msg.as_bytes());
        std::process::exit(SETUP_FAILED);
    }
    // SAFETY: fork in a single-threaded process.
    let child = unsafe { libc::fork() };
    if child < 0 {
        let _ = write!(err, "fork: {}", std::io::Error::last_os_error());
        std::process::exit(SETUP_FAILED);
    }
    if child == 0 {
        exec_command(init, secrets, err);
    }
    if init.attach.is_some() {
        forward_signals_to(child);
    }
    // PID 1 only reaps from here on: it keeps no capability and the same filter, so
    // nothing in the namespace holds more than the step. A container's keeps
    // CAP_KILL (in Docker's default set) to pass signals to a command of any user.
    if !spec.insecure {
        let confined = if init.attach.is_some() {
            confine_forwarder(init.seccomp.as_ref())
        } else {
            confine_self(init.seccomp.as_ref(), || Ok(()), false)
        };
        if let Err(e) = confined {
            let _ = write!(err, "{e}");
            // SAFETY: kill of our own child.
            unsafe { libc::kill(child, libc::SIGKILL) };
            std::process::exit(SETUP_FAILED);
        }
    }
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only to `status`.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid == child {
            if FUSE_STARTED.load(std::sync::atomic::Ordering::Relaxed) {
                // Exiting kills the fuse-overlayfs daemons: pages still cached
                // (written through mmap) reach the upper directory first.
                // SAFETY: open and syncfs on a valid C string; the fd is closed.
                unsafe {
                    let fd = libc::open(c"/".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                    if fd >= 0 {
                        libc::syncfs(fd);
                        libc::close(fd);
                    }
                }
            }
            // Exiting as PID 1 kills everything else left in the namespace.
            std::process::exit(wait_status_to_code(status));
        }
        if pid < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            std::process::exit(SETUP_FAILED);
        }
    }
}

/// Reads the secret frames ((u64 length, bytes) each) the parent writes to standard
/// input until EOF, then puts `/dev/null` there for the command.
fn read_secrets(attached: bool) -> R<Vec<Vec<u8>>> {
    use std::io::Read;
    let mut all = Vec::new();
    if attached {
        // Standard input is the container's; the control pipe is fd CONTROL_FD.
        // SAFETY: the parent put the pipe there; it is owned (and closed) here.
        let mut control = unsafe { File::from_raw_fd(CONTROL_FD) };
        control
            .read_to_end(&mut all)
            .map_err(|e| Fail(format!("control pipe: {e}")))?;
    } else {
        std::io::stdin()
            .lock()
            .read_to_end(&mut all)
            .map_err(|e| Fail(format!("standard input: {e}")))?;
    }
    let mut out = Vec::new();
    let mut rest = &all[..];
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<8>()
            .ok_or_else(|| Fail("truncated secret frame".into()))?;
        let len = usize::try_from(u64::from_le_bytes(*len))
            .ok()
            .filter(|l| *l <= tail.len())
            .ok_or_else(|| Fail("truncated secret frame".into()))?;
        out.push(tail[..len].to_vec());
        rest = &tail[len..];
    }
    if attached {
        return Ok(out);
    }
    let null = File::open("/dev/null").map_err(|e| Fail(format!("/dev/null: {e}")))?;
    // SAFETY: dup2 onto fd 0 of this single-threaded process.
    if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 0) } < 0 {
        return Err(Fail(format!("stdin: {}", std::io::Error::last_os_error())));
    }
    Ok(out)
}

/// Entry point for `mybuild __mybuild-sandbox-init SPEC ERRFILE`. Call it first thing
/// in `main`, before any thread starts.
pub fn init_main(args: &[OsString]) -> ! {
    let (Some(spec_path), Some(err_path)) = (args.get(2), args.get(3)) else {
        let _ = writeln!(std::io::stderr(), "mybuild sandbox init: missing arguments");
        std::process::exit(SETUP_FAILED);
    };
    let mut err = match File::create(err_path) {
        Ok(f) => f,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "mybuild sandbox init: {e}");
            std::process::exit(SETUP_FAILED);
        }
    };
    let init: InitSpec = match std::fs::read(spec_path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => {
            let _ = write!(err, "reading sandbox spec: {e}");
            std::process::exit(SETUP_FAILED);
        }
    };
    let secrets = match read_secrets(init.attach.is_some()) {
        Ok(s) => s,
        Err(Fail(e)) => {
            let _ = write!(err, "reading secrets: {e}");
            std::process::exit(SETUP_FAILED);
        }
    };
    let bundle = PathBuf::from(spec_path)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    // SAFETY: prctl and setsid have no memory effects.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        // Not dumpable (inherited by PID 1, reset by the command's execve): the step
        // cannot ptrace PID 1 or open its /proc/1/exe (mybuild's binary on the
        // host), /proc/1/fd (the error file) or /proc/1/mem (the secrets).
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        // A session of its own, without a controlling terminal: /dev/tty must not
        // be the terminal mybuild runs in (TIOCSTI would type into its shell).
        libc::setsid();
    }
    // The parent unshared CLONE_NEWPID: our first child is PID 1 of the new namespace.
    // SAFETY: fork in a single-threaded process (init_main runs before any thread).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let _ = write!(err, "fork: {}", std::io::Error::last_os_error());
        std::process::exit(SETUP_FAILED);
    }
    if pid == 0 {
        pid1(&init, &bundle, &secrets, &mut err);
    }
    if init.attach.is_some() {
        forward_signals_to(pid);
    }
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes only to `status`.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            break;
        }
        if rc < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            std::process::exit(SETUP_FAILED);
        }
    }
    std::process::exit(wait_status_to_code(status))
}
