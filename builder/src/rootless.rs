//! Rootless: run as an ordinary user, `mybuild` re-executes itself into a new user
//! namespace where that user is root, and everything else (the store, the RUN
//! sandbox's re-executed init, the confinement) runs there as it runs for root.
//!
//! The parent stays outside: it forks the child, which calls
//! `unshare(CLONE_NEWUSER)` between fork and exec (one thread there, as the kernel
//! requires), sends its pid through a pipe and waits. The parent maps the ids
//! (`newuidmap`/`newgidmap` with the user's `/etc/subuid` and `/etc/subgid` ranges,
//! or the user's own uid and gid alone, written to `/proc/PID/*_map`), says go, and
//! the child drops its supplementary groups and executes `mybuild` again, now as
//! root of the namespace. The parent forwards SIGINT/SIGTERM/SIGHUP to it and ends
//! the way it ends ([`exit_as`]).
//!
//! When no user namespace can be made the error names the cause and the fix
//! ([`diagnose`]); nothing ever runs with less isolation instead.

use std::ffi::OsString;
use std::fmt;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicI32, Ordering};

/// A range of subordinate ids: `start`, `start + 1`, … (`count` of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub start: u32,
    pub count: u32,
}

/// The subordinate ranges that `/etc/subuid` or `/etc/subgid` text gives a user,
/// read as shadow-utils reads them: every `owner:start:count` line whose owner is
/// the user's name or decimal id, in file order; malformed lines and repeats are
/// skipped.
pub fn parse_subids(text: &str, name: Option<&str>, id: u32) -> Vec<IdRange> {
    let id = id.to_string();
    let mut out: Vec<IdRange> = Vec::new();
    for line in text.lines() {
        let mut f = line.trim().splitn(3, ':');
        let (Some(owner), Some(start), Some(count)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if owner != id && Some(owner) != name {
            continue;
        }
        let (Ok(start), Ok(count)) = (start.trim().parse::<u32>(), count.trim().parse::<u32>())
        else {
            continue;
        };
        let r = IdRange { start, count };
        if count > 0 && start.checked_add(count - 1).is_some() && !out.contains(&r) {
            out.push(r);
        }
    }
    // The kernel takes at most 340 lines per map; one goes to the user's own id.
    out.truncate(339);
    out
}

/// How the namespace's ids are mapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapping {
    /// 0 is the user's own id; 1, 2, … are the subordinate ranges, in order.
    Ranges {
        uids: Vec<IdRange>,
        gids: Vec<IdRange>,
        newuidmap: PathBuf,
        newgidmap: PathBuf,
    },
    /// Only 0 (the user's own uid and gid) exists in the namespace.
    Single(SingleReason),
}

/// Why only the user's own ids are mapped. Its text is the warning the cli shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SingleReason {
    /// `/etc/subuid` or `/etc/subgid` has no range for the user.
    NoRanges { user: String },
    /// The ranges exist but `newuidmap`/`newgidmap` are not installed.
    NoNewuidmap,
}

impl fmt::Display for SingleReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SingleReason::NoRanges { user } => write!(
                f,
                "{user} has no subordinate ids in /etc/subuid and /etc/subgid: only your own \
                 uid and gid are mapped (as 0), so changing a file's owner to any other id \
                 will fail; add ranges as root with `usermod --add-subuids 100000-165535 \
                 --add-subgids 100000-165535 {user}` (or the lines `{user}:100000:65536` in \
                 /etc/subuid and /etc/subgid)"
            ),
            SingleReason::NoNewuidmap => write!(
                f,
                "newuidmap/newgidmap are not installed (apt-get install uidmap): only your \
                 own uid and gid are mapped (as 0), so changing a file's owner to any other \
                 id will fail"
            ),
        }
    }
}

/// Who enters and how their ids are mapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub uid: u32,
    pub gid: u32,
    pub user: String,
    pub mapping: Mapping,
}

#[derive(Debug, thiserror::Error)]
pub enum RootlessError {
    #[error(
        "cannot create a user namespace (unshare(CLONE_NEWUSER): {source}): {cause}. \
         As an ordinary user mybuild builds only inside a user namespace, and never with \
         less isolation"
    )]
    Unshare {
        #[source]
        source: std::io::Error,
        cause: Cause,
    },
    #[error("mapping ids into the user namespace ({what}): {detail}{}", hint(*.cause))]
    Map {
        what: String,
        detail: String,
        cause: Option<Cause>,
    },
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting {} in a user namespace: {source}", exe.display())]
    Spawn {
        exe: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn hint(cause: Option<Cause>) -> String {
    match cause {
        Some(c) if c != Cause::Unknown => format!(" ({c})"),
        _ => String::new(),
    }
}

/// The kernel settings and surroundings that decide whether an unprivileged user
/// may create a user namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostUserns {
    /// `kernel.unprivileged_userns_clone` (Debian's and Arch's kernels).
    pub unprivileged_userns_clone: Option<u64>,
    /// `user.max_user_namespaces`.
    pub max_user_namespaces: Option<u64>,
    /// `kernel.apparmor_restrict_unprivileged_userns` (Ubuntu 23.10 and later).
    pub apparmor_restrict: Option<u64>,
    /// Running inside a container (Docker's or Podman's marker file, or a
    /// seccomp filter on this process).
    pub in_container: bool,
    /// This process's uid or gid has no mapping in the user namespace it runs in
    /// (it shows as the overflow id, 65534): the kernel lets no such process create
    /// a user namespace.
    pub ids_unmapped: bool,
}

/// Whether `id` lies in one of the inner ranges of a `/proc/self/{uid,gid}_map`.
fn id_mapped(map: &str, id: u32) -> bool {
    map.lines().any(|l| {
        let f: Vec<u64> = l
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect();
        f.len() == 3 && (f[0]..f[0] + f[2]).contains(&u64::from(id))
    })
}

impl HostUserns {
    pub fn read() -> HostUserns {
        let num = |p: &str| {
            std::fs::read_to_string(p)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
        };
        let seccomp_filtered = std::fs::read_to_string("/proc/self/status")
            .map(|s| {
                s.lines()
                    .any(|l| l.split_whitespace().eq(["Seccomp:", "2"]))
            })
            .unwrap_or(false);
        HostUserns {
            unprivileged_userns_clone: num("/proc/sys/kernel/unprivileged_userns_clone"),
            max_user_namespaces: num("/proc/sys/user/max_user_namespaces"),
            apparmor_restrict: num("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"),
            in_container: Path::new("/.dockerenv").exists()
                || Path::new("/run/.containerenv").exists()
                || seccomp_filtered,
            ids_unmapped: [
                ("/proc/self/uid_map", rustix::process::getuid().as_raw()),
                ("/proc/self/gid_map", rustix::process::getgid().as_raw()),
            ]
            .iter()
            .any(|(map, id)| std::fs::read_to_string(map).is_ok_and(|m| !id_mapped(&m, *id))),
        }
    }
}

/// Why a user namespace could not be made, each with its fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// `kernel.unprivileged_userns_clone=0`.
    UnprivilegedCloneDisabled,
    /// `user.max_user_namespaces=0`.
    MaxUserNamespacesZero,
    /// The per-user count or the nesting depth (32) is used up.
    TooMany,
    /// AppArmor's `restrict_unprivileged_userns`: the namespace exists but gets no
    /// capabilities.
    AppArmor,
    /// A container runtime's seccomp or AppArmor profile refuses it.
    Container,
    /// The kernel has no user namespaces (`CONFIG_USER_NS`).
    NoKernelSupport,
    /// The user's ids are not mapped in the user namespace mybuild runs in.
    UnmappedIds,
    /// `newuidmap`/`newgidmap` run without their privilege (not setuid root nor
    /// `cap_setuid`/`cap_setgid`, a `nosuid` mount, a tracer).
    MapToolUnprivileged,
    Unknown,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cause::UnprivilegedCloneDisabled => {
                "unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone=0); \
                 as root run `sysctl -w kernel.unprivileged_userns_clone=1` and add \
                 `kernel.unprivileged_userns_clone=1` to /etc/sysctl.d/ to keep it"
            }
            Cause::MaxUserNamespacesZero => {
                "user namespaces are disabled (user.max_user_namespaces=0); as root run \
                 `sysctl -w user.max_user_namespaces=28633` and add it to /etc/sysctl.d/ \
                 to keep it"
            }
            Cause::TooMany => {
                "the limit on user namespaces is reached (user.max_user_namespaces, or 32 \
                 nested levels); raise user.max_user_namespaces as root, or end other \
                 processes holding namespaces"
            }
            Cause::AppArmor => {
                "AppArmor restricts unprivileged user namespaces \
                 (kernel.apparmor_restrict_unprivileged_userns=1); as root, give mybuild an \
                 AppArmor profile with the `userns,` rule (as /etc/apparmor.d/ ships for \
                 podman and buildah), or run `sysctl -w \
                 kernel.apparmor_restrict_unprivileged_userns=0`"
            }
            Cause::Container => {
                "this runs inside a container whose profile refuses user namespaces; start \
                 it with `--security-opt seccomp=unconfined --security-opt \
                 apparmor=unconfined` (or a seccomp profile that allows unshare and clone \
                 with CLONE_NEWUSER), or run mybuild as root there"
            }
            Cause::NoKernelSupport => {
                "this kernel has no user namespaces (CONFIG_USER_NS); use a kernel built \
                 with them, or run mybuild as root"
            }
            Cause::UnmappedIds => {
                "your uid or gid has no mapping in the user namespace this runs in (an \
                 outer namespace maps only some ids), and the kernel lets no such process \
                 create one; run mybuild where your ids are mapped, or as root of that \
                 namespace"
            }
            Cause::MapToolUnprivileged => {
                "newuidmap and newgidmap need their privilege (setuid root, or the file \
                 capabilities cap_setuid and cap_setgid, on a mount without nosuid, not \
                 under a tracer); reinstall them as root with `apt-get install --reinstall \
                 uidmap`"
            }
            Cause::Unknown => {
                "user namespaces are unavailable here; check `sysctl \
                 user.max_user_namespaces` and any security module in force, or run mybuild \
                 as root"
            }
        })
    }
}

/// At which point entering failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `unshare(CLONE_NEWUSER)` itself.
    Unshare,
    /// Writing the id maps or dropping groups in the new namespace.
    Map,
}

/// Names the cause of a failure to enter from the errno and the host's settings,
/// most specific first (modelled on BuildKit's rootless troubleshooting).
pub fn diagnose(stage: Stage, errno: i32, host: &HostUserns) -> Cause {
    if host.unprivileged_userns_clone == Some(0) {
        return Cause::UnprivilegedCloneDisabled;
    }
    if host.max_user_namespaces == Some(0) {
        return Cause::MaxUserNamespacesZero;
    }
    if stage == Stage::Unshare && (errno == libc::ENOSPC || errno == libc::EUSERS) {
        return Cause::TooMany;
    }
    if stage == Stage::Unshare && errno == libc::EPERM && host.ids_unmapped {
        return Cause::UnmappedIds;
    }
    if stage == Stage::Unshare && errno == libc::EINVAL {
        return Cause::NoKernelSupport;
    }
    // Under AppArmor's restriction unshare succeeds and the first privileged step
    // in the namespace is refused, so this is asked at both stages.
    if host.apparmor_restrict == Some(1) && (errno == libc::EPERM || errno == libc::EACCES) {
        return Cause::AppArmor;
    }
    if stage == Stage::Unshare && host.in_container && errno == libc::EPERM {
        return Cause::Container;
    }
    Cause::Unknown
}

/// Where `tool` is on `$PATH` (the usual system directories when it is unset).
fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// The user's login name from the user database, if it has one.
fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: an all-zero passwd is a valid out-parameter for getpwuid_r.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut res: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: the buffers outlive the call; pw's strings point into buf.
    let rc =
        unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut res) };
    if rc != 0 || res.is_null() || pw.pw_name.is_null() {
        return None;
    }
    // SAFETY: getpwuid_r succeeded, so pw_name is a NUL-terminated string in buf.
    let name = unsafe { std::ffi::CStr::from_ptr(pw.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

fn read_optional(path: &Path) -> Result<String, RootlessError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(RootlessError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The plan for the calling user: its ids, and its ranges when both files give it
/// some and `newuidmap`/`newgidmap` are installed.
pub fn plan() -> Result<Plan, RootlessError> {
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    let name = user_name(uid);
    let uids = parse_subids(
        &read_optional(Path::new("/etc/subuid"))?,
        name.as_deref(),
        uid,
    );
    let gids = parse_subids(
        &read_optional(Path::new("/etc/subgid"))?,
        name.as_deref(),
        uid,
    );
    let user = name.unwrap_or_else(|| uid.to_string());
    let mapping = if uids.is_empty() || gids.is_empty() {
        Mapping::Single(SingleReason::NoRanges { user: user.clone() })
    } else {
        match (find_tool("newuidmap"), find_tool("newgidmap")) {
            (Some(newuidmap), Some(newgidmap)) => Mapping::Ranges {
                uids,
                gids,
                newuidmap,
                newgidmap,
            },
            _ => Mapping::Single(SingleReason::NoNewuidmap),
        }
    };
    Ok(Plan {
        uid,
        gid,
        user,
        mapping,
    })
}

/// `newuidmap`'s arguments after the pid: `0 ID 1`, then each range from 1 on.
pub fn map_args(own: u32, ranges: &[IdRange]) -> Vec<String> {
    let mut args = vec!["0".to_string(), own.to_string(), "1".to_string()];
    let mut next: u64 = 1;
    for r in ranges {
        args.extend([next.to_string(), r.start.to_string(), r.count.to_string()]);
        next += u64::from(r.count);
    }
    args
}

/// Maps the ids of process `pid` (just unshared) as `plan` says.
fn write_maps(plan: &Plan, pid: i32) -> Result<(), RootlessError> {
    match &plan.mapping {
        Mapping::Ranges {
            uids,
            gids,
            newuidmap,
            newgidmap,
        } => {
            // Both at once: each is a setuid program's start-up, the main cost of
            // entering.
            let mut running = Vec::new();
            for (tool, own, ranges) in [(newuidmap, plan.uid, uids), (newgidmap, plan.gid, gids)] {
                let args = map_args(own, ranges);
                let what = format!("{} {pid} {}", tool.display(), args.join(" "));
                let child = Command::new(tool)
                    .arg(pid.to_string())
                    .args(&args)
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn();
                running.push((what, child));
            }
            for (what, child) in running {
                let out =
                    child
                        .and_then(|c| c.wait_with_output())
                        .map_err(|e| RootlessError::Map {
                            what: what.clone(),
                            detail: e.to_string(),
                            cause: None,
                        })?;
                if !out.status.success() {
                    let detail = String::from_utf8_lossy(&out.stderr).trim().to_string();
                    let cause =
                        detail.contains("Operation not permitted").then(|| {
                            match diagnose(Stage::Map, libc::EPERM, &HostUserns::read()) {
                                Cause::Unknown => Cause::MapToolUnprivileged,
                                c => c,
                            }
                        });
                    return Err(RootlessError::Map {
                        what,
                        detail: if detail.is_empty() {
                            out.status.to_string()
                        } else {
                            detail
                        },
                        cause,
                    });
                }
            }
        }
        Mapping::Single(_) => {
            // An unprivileged writer may map only its own ids, and the gid map
            // only once setgroups is denied.
            for (file, text) in [
                ("setgroups", "deny".to_string()),
                ("uid_map", format!("0 {} 1\n", plan.uid)),
                ("gid_map", format!("0 {} 1\n", plan.gid)),
            ] {
                let path = format!("/proc/{pid}/{file}");
                std::fs::write(&path, &text).map_err(|e| {
                    let errno = e.raw_os_error().unwrap_or(0);
                    RootlessError::Map {
                        what: format!("writing {path}"),
                        detail: e.to_string(),
                        cause: Some(diagnose(Stage::Map, errno, &HostUserns::read())),
                    }
                })?;
            }
        }
    }
    Ok(())
}

/// The child's pid, for the signal forwarder (0: none yet).
static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let child = CHILD.load(Ordering::SeqCst);
    // A terminal's signals (SI_KERNEL) reach the child's process group already.
    // SAFETY: the kernel hands a valid siginfo to an SA_SIGINFO handler.
    let from_kernel = !info.is_null() && unsafe { (*info).si_code } == libc::SI_KERNEL;
    if child > 0 && !from_kernel {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(child, sig) };
    }
}

const FORWARDED: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

fn install_forwarder() {
    for sig in FORWARDED {
        // SAFETY: a zeroed sigaction with our handler and SA_SIGINFO is valid.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                forward;
            sa.sa_sigaction = handler as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Runs this program again with `argv` (`argv[0]` included; with `env` added) in
/// a new user namespace mapped as `plan` says, forwarding SIGINT/SIGTERM/SIGHUP to
/// it, and returns how it ended.
pub fn run_in_namespace(
    plan: &Plan,
    argv: &[OsString],
    env: &[(OsString, OsString)],
) -> Result<ExitStatus, RootlessError> {
    // This very binary, even if its file was replaced since.
    let exe = Path::new("/proc/self/exe");
    let pipe = || {
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|e| {
            RootlessError::Spawn {
                exe: exe.to_path_buf(),
                source: e.into(),
            }
        })
    };
    // to_parent: the child's pid once it unshared; to_child: one byte, go.
    let (up_r, up_w): (OwnedFd, OwnedFd) = pipe()?;
    let (down_r, down_w): (OwnedFd, OwnedFd) = pipe()?;
    let (up_w_fd, up_r_fd) = (up_w.as_raw_fd(), up_r.as_raw_fd());
    let (down_r_fd, down_w_fd) = (down_r.as_raw_fd(), down_w.as_raw_fd());
    let drop_groups = matches!(plan.mapping, Mapping::Ranges { .. });

    let mapper = {
        let plan = plan.clone();
        std::thread::spawn(move || -> Result<bool, RootlessError> {
            let mut up = std::fs::File::from(up_r);
            let mut pid = [0u8; 4];
            if up.read_exact(&mut pid).is_err() {
                // The child ended before unsharing or just after: its error says why.
                return Ok(false);
            }
            let mut down = std::fs::File::from(down_w);
            write_maps(&plan, i32::from_ne_bytes(pid))?;
            // A failed write means the child is gone; its status tells.
            let _ = down.write_all(b"1");
            Ok(true)
        })
    };

    install_forwarder();
    let mut cmd = Command::new(exe);
    if let Some((arg0, rest)) = argv.split_first() {
        std::os::unix::process::CommandExt::arg0(&mut cmd, arg0);
        cmd.args(rest);
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    // SAFETY: between fork and exec only async-signal-safe calls are made, and
    // nothing allocates.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            libc::close(down_w_fd);
            libc::close(up_r_fd);
            if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let pid = libc::getpid().to_ne_bytes();
            if libc::write(up_w_fd, pid.as_ptr().cast(), pid.len()) != pid.len() as isize {
                return Err(std::io::Error::last_os_error());
            }
            let mut go = 0u8;
            if libc::read(down_r_fd, (&mut go as *mut u8).cast(), 1) != 1 || go != b'1' {
                // The parent could not map the ids and reports why.
                return Err(std::io::Error::from_raw_os_error(libc::ECANCELED));
            }
            // Groups the user had outside show up as nobody inside; drop them
            // where newgidmap left setgroups allowed (best effort: they are the
            // user's own groups either way).
            if drop_groups {
                libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>());
            }
            // The child must not outlive a killed parent.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let spawned = cmd.spawn();
    if let Ok(child) = &spawned {
        CHILD.store(child.id() as i32, Ordering::SeqCst);
    }
    // The parent's copies of the child's ends: the mapper sees EOF if the child
    // failed before writing its pid.
    drop(up_w);
    drop(down_r);
    let mapped = mapper.join().unwrap_or(Ok(false));
    let mut child = match (spawned, mapped) {
        (Ok(child), Ok(_)) => child,
        (Err(source), Ok(false)) => {
            let errno = source.raw_os_error().unwrap_or(0);
            return Err(RootlessError::Unshare {
                cause: diagnose(Stage::Unshare, errno, &HostUserns::read()),
                source,
            });
        }
        (Err(source), Ok(true)) => {
            return Err(RootlessError::Spawn {
                exe: exe.to_path_buf(),
                source,
            })
        }
        (Ok(mut child), Err(e)) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        (Err(_), Err(e)) => return Err(e),
    };
    child.wait().map_err(|source| RootlessError::Spawn {
        exe: exe.to_path_buf(),
        source,
    })
}

/// Ends this process as `status` ended: the same exit code, or the same signal
/// (default action restored, then raised).
pub fn exit_as(status: ExitStatus) -> ! {
    use std::os::unix::process::ExitStatusExt;
    if let Some(sig) = status.signal() {
        // SAFETY: restoring the default action and raising are plain syscalls.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::raise(sig);
        }
        std::process::exit(128 + sig);
    }
    std::process::exit(status.code().unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subids_match_name_or_uid_on_every_line() {
        let text = "alice:100000:65536\n\
                    bob:165536:65536\n\
                    1001:300000:1000\n\
                    # a comment\n\
                    alice:bad:1\n\
                    alice:200000:65536\n\
                    alice:100000:65536\n\
                    alice:5:0\n";
        assert_eq!(
            parse_subids(text, Some("alice"), 1001),
            [
                IdRange {
                    start: 100000,
                    count: 65536
                },
                IdRange {
                    start: 300000,
                    count: 1000
                },
                IdRange {
                    start: 200000,
                    count: 65536
                },
            ]
        );
        assert_eq!(parse_subids(text, None, 1001).len(), 1);
        assert!(parse_subids(text, Some("carol"), 7).is_empty());
    }

    #[test]
    fn an_id_is_mapped_when_an_inner_range_holds_it() {
        let map = "         0       1001          1\n         1     100000      65536\n";
        assert!(id_mapped(map, 0) && id_mapped(map, 65536));
        assert!(!id_mapped(map, 65537) && !id_mapped("", 0));
    }

    #[test]
    fn map_args_put_the_user_at_0_and_ranges_after_it() {
        let r = [
            IdRange {
                start: 100000,
                count: 65536,
            },
            IdRange {
                start: 200000,
                count: 10,
            },
        ];
        assert_eq!(
            map_args(1001, &r).join(" "),
            "0 1001 1 1 100000 65536 65537 200000 10"
        );
    }

    #[test]
    fn diagnosis_names_the_setting_that_refuses_user_namespaces() {
        let host = HostUserns::default();
        let with = |f: fn(&mut HostUserns)| {
            let mut h = host.clone();
            f(&mut h);
            h
        };
        let debian = with(|h| h.unprivileged_userns_clone = Some(0));
        assert_eq!(
            diagnose(Stage::Unshare, libc::EPERM, &debian),
            Cause::UnprivilegedCloneDisabled
        );
        let zero = with(|h| h.max_user_namespaces = Some(0));
        assert_eq!(
            diagnose(Stage::Unshare, libc::ENOSPC, &zero),
            Cause::MaxUserNamespacesZero
        );
        let many = with(|h| h.max_user_namespaces = Some(100));
        assert_eq!(
            diagnose(Stage::Unshare, libc::ENOSPC, &many),
            Cause::TooMany
        );
        let apparmor = with(|h| h.apparmor_restrict = Some(1));
        assert_eq!(
            diagnose(Stage::Map, libc::EPERM, &apparmor),
            Cause::AppArmor
        );
        assert_eq!(
            diagnose(Stage::Unshare, libc::EACCES, &apparmor),
            Cause::AppArmor
        );
        let container = with(|h| h.in_container = true);
        assert_eq!(
            diagnose(Stage::Unshare, libc::EPERM, &container),
            Cause::Container
        );
        // Once unshare worked, the container is not what refused.
        assert_eq!(
            diagnose(Stage::Map, libc::EPERM, &container),
            Cause::Unknown
        );
        assert_eq!(
            diagnose(Stage::Unshare, libc::EINVAL, &host),
            Cause::NoKernelSupport
        );
        assert_eq!(diagnose(Stage::Unshare, libc::EPERM, &host), Cause::Unknown);
        let unmapped = with(|h| {
            h.ids_unmapped = true;
            h.in_container = true;
        });
        assert_eq!(
            diagnose(Stage::Unshare, libc::EPERM, &unmapped),
            Cause::UnmappedIds
        );
        // A setting of 1 is no cause.
        let on = with(|h| {
            h.unprivileged_userns_clone = Some(1);
            h.apparmor_restrict = Some(0);
        });
        assert_eq!(diagnose(Stage::Unshare, libc::EPERM, &on), Cause::Unknown);
    }

    #[test]
    fn the_error_names_the_cause_and_the_fix() {
        let e = RootlessError::Unshare {
            source: std::io::Error::from_raw_os_error(libc::EPERM),
            cause: Cause::UnprivilegedCloneDisabled,
        };
        let text = e.to_string();
        assert!(text.contains("unshare(CLONE_NEWUSER)"), "{text}");
        assert!(text.contains("Operation not permitted"), "{text}");
        assert!(
            text.contains("sysctl -w kernel.unprivileged_userns_clone=1"),
            "{text}"
        );
        assert!(text.contains("never with less isolation"), "{text}");
        let e = RootlessError::Unshare {
            source: std::io::Error::from_raw_os_error(libc::EPERM),
            cause: Cause::AppArmor,
        };
        assert!(e
            .to_string()
            .contains("kernel.apparmor_restrict_unprivileged_userns=1"));
        let e = RootlessError::Unshare {
            source: std::io::Error::from_raw_os_error(libc::EPERM),
            cause: Cause::Container,
        };
        assert!(e.to_string().contains("--security-opt seccomp=unconfined"));
    }

    #[test]
    fn the_no_range_warning_says_how_to_add_ranges() {
        let w = SingleReason::NoRanges { user: "bob".into() }.to_string();
        assert!(w.contains("usermod --add-subuids 100000-165535 --add-subgids 100000-165535 bob"));
        assert!(w.contains("bob:100000:65536"));
        assert!(SingleReason::NoNewuidmap
            .to_string()
            .contains("apt-get install uidmap"));
    }
}
