//! What a RUN step may do: Docker's default confinement, applied by the init just
//! before `execve`. The capability set and masked paths follow moby's
//! `oci/defaults.go`; the seccomp filter follows moby's `profiles/seccomp/default.json`
//! for the 14 default capabilities, and denies `name_to_handle_at` besides.
//!
//! Crates: `caps` for capability sets (named capabilities, no bit tables of ours) and
//! `seccompiler` for the BPF program. seccompiler is pure Rust, resolves syscall
//! names per architecture from its own tables (so the profile is written once, by
//! name, and a unit test compiles it for both x86_64 and aarch64 on any host), and
//! needs no C library at build or run time; libseccomp would add a system package
//! to every machine that builds mybuild. The program is compiled once per process
//! ([`seccomp_program`]) and handed to each step's init as raw instructions.

use std::collections::HashSet;
use std::sync::OnceLock;

use caps::{CapSet, Capability};

/// Docker's default capabilities: what root in a RUN step keeps.
pub const DEFAULT_CAPS: [Capability; 14] = [
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FSETID,
    Capability::CAP_FOWNER,
    Capability::CAP_MKNOD,
    Capability::CAP_NET_RAW,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_KILL,
    Capability::CAP_AUDIT_WRITE,
];

/// Hidden from the step: a file gets `/dev/null` bound over it, a directory an empty
/// read-only tmpfs (moby's `MaskedPaths`).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Visible but read-only (moby's `ReadonlyPaths`).
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Syscalls every step may make, on every architecture mybuild runs on.
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "adjtimex",
    "bind",
    "brk",
    "capget",
    "capset",
    "chdir",
    "chroot",
    "clock_adjtime",
    "clock_getres",
    "clock_gettime",
    "clock_nanosleep",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "dup",
    "dup3",
    "epoll_create1",
    "epoll_ctl",
    "epoll_pwait",
    "epoll_pwait2",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchown",
    "fchownat",
    "fcntl",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstatfs",
    "fsync",
    "ftruncate",
    "futex",
    "futex_waitv",
    "getcpu",
    "getcwd",
    "getdents64",
    "getegid",
    "geteuid",
    "getgid",
    "getgroups",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresuid",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "gettid",
    "gettimeofday",
    "getuid",
    "getxattr",
    "inotify_add_watch",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lgetxattr",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "madvise",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdirat",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedsend",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "nanosleep",
    "newfstatat",
    "openat",
    "openat2",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "ppoll",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlinkat",
    "readv",
    "recvfrom",
    "recvmmsg",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "sendfile",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsuid",
    "setgid",
    "setgroups",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setresgid",
    "setresuid",
    "setreuid",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_tid_address",
    "setuid",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd4",
    "socketpair",
    "splice",
    "statfs",
    "statx",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_settime",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_settime",
    "times",
    "tkill",
    "truncate",
    "umask",
    "uname",
    "unlinkat",
    "utimensat",
    "vmsplice",
    "wait4",
    "waitid",
    "write",
    "writev",
];

/// The older calls x86_64 keeps beside their `*at` forms, and its own extras.
const ALLOWED_X86_64: &[&str] = &[
    "access",
    "alarm",
    "arch_prctl",
    "chmod",
    "chown",
    "creat",
    "dup2",
    "epoll_create",
    "epoll_ctl_old",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "fork",
    "futimesat",
    "getdents",
    "getpgrp",
    "get_thread_area",
    "inotify_init",
    "lchown",
    "link",
    "lstat",
    "mkdir",
    "mknod",
    "modify_ldt",
    "open",
    "pause",
    "pipe",
    "poll",
    "readlink",
    "rename",
    "rmdir",
    "select",
    "set_thread_area",
    "signalfd",
    "stat",
    "symlink",
    "time",
    "unlink",
    "utime",
    "utimes",
    "vfork",
];

/// Allowed from Linux 4.8, whose ptrace no longer lets a tracee skip seccomp.
const ALLOWED_SINCE_4_8: &[&str] = &["process_vm_readv", "process_vm_writev", "ptrace"];

/// `personality` values that stay allowed (Linux, and the read-only queries).
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// `clone` flags that make namespaces; a `clone` with any of them is denied.
const NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u64;

/// `socket` is allowed for every family but AF_VSOCK (a path to the host).
const AF_VSOCK: u64 = 40;

#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    #[error("the seccomp profile does not compile for {arch}: {source}")]
    Compile {
        arch: &'static str,
        #[source]
        source: seccompiler::Error,
    },
    #[error("seccomp is not supported on {0}")]
    Arch(String),
    #[error("the seccomp profile: {0}")]
    Profile(String),
}

fn rule(name: &str) -> serde_json::Value {
    serde_json::json!({ "syscall": name })
}

fn rule_arg(
    name: &str,
    index: u8,
    len: &str,
    op: serde_json::Value,
    val: u64,
) -> serde_json::Value {
    serde_json::json!({
        "syscall": name,
        "args": [{ "index": index, "type": len, "op": op, "val": val }],
    })
}

/// The profile as seccompiler's JSON, for `arch`: an allowlist, EPERM for the rest.
/// `clone3` is allowed here and answered ENOSYS by [`CLONE3_FILTER`], so that libc
/// falls back to `clone`, whose flags this filter can see.
fn profile_json(arch: &str, ptrace: bool) -> serde_json::Value {
    let mut rules: Vec<serde_json::Value> = ALLOWED.iter().map(|n| rule(n)).collect();
    if arch == "x86_64" {
        rules.extend(ALLOWED_X86_64.iter().map(|n| rule(n)));
    }
    if ptrace {
        rules.extend(ALLOWED_SINCE_4_8.iter().map(|n| rule(n)));
    }
    rules.push(rule("clone3"));
    rules.push(rule_arg(
        "clone",
        0,
        "qword",
        serde_json::json!({ "masked_eq": NAMESPACE_FLAGS }),
        0,
    ));
    rules.push(rule_arg("socket", 0, "dword", "ne".into(), AF_VSOCK));
    for p in PERSONALITIES {
        rules.push(rule_arg("personality", 0, "dword", "eq".into(), *p));
    }
    serde_json::json!({
        "main": {
            "mismatch_action": { "errno": libc::EPERM },
            "match_action": "allow",
            "filter": rules,
        },
        "clone3": {
            "mismatch_action": "allow",
            "match_action": { "errno": libc::ENOSYS },
            "filter": [rule("clone3")],
        },
    })
}

/// The two filters a step gets, as raw BPF instructions: the profile, then the
/// `clone3` → ENOSYS one (the kernel returns the errno of the filter installed last).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SeccompProgram {
    pub filters: Vec<Vec<u64>>,
}

/// One BPF instruction as a u64 (code, jt, jf, k from the top), so the program
/// travels to the init as plain JSON numbers.
fn pack(f: &seccompiler::sock_filter) -> u64 {
    (u64::from(f.code) << 48) | (u64::from(f.jt) << 40) | (u64::from(f.jf) << 32) | u64::from(f.k)
}

fn unpack(w: u64) -> libc::sock_filter {
    libc::sock_filter {
        code: (w >> 48) as u16,
        jt: (w >> 40) as u8,
        jf: (w >> 32) as u8,
        k: w as u32,
    }
}

/// Compiles the profile for `arch` (`x86_64` or `aarch64`).
pub fn compile(arch: &'static str, ptrace: bool) -> Result<SeccompProgram, ConfineError> {
    let target: seccompiler::TargetArch = arch
        .try_into()
        .map_err(|_| ConfineError::Arch(arch.to_string()))?;
    let json = profile_json(arch, ptrace).to_string();
    let mut map = seccompiler::compile_from_json(json.as_bytes(), target)
        .map_err(|source| ConfineError::Compile { arch, source })?;
    let mut filters = Vec::new();
    for name in ["main", "clone3"] {
        let prog = map
            .remove(name)
            .ok_or_else(|| ConfineError::Profile(format!("{arch}: no {name} filter")))?;
        filters.push(prog.iter().map(pack).collect());
    }
    Ok(SeccompProgram { filters })
}

/// Whether the running kernel is at least `major.minor`.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let maj: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let min: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (maj, min) >= (major, minor)
}

/// The host's program, compiled once per process and shared by every step.
pub fn seccomp_program() -> Result<&'static SeccompProgram, ConfineError> {
    // The error is kept as text: a OnceLock hands out references, and
    // seccompiler's error is not Clone.
    static PROGRAM: OnceLock<Result<SeccompProgram, String>> = OnceLock::new();
    PROGRAM
        .get_or_init(|| {
            compile(std::env::consts::ARCH, kernel_at_least(4, 8)).map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| ConfineError::Profile(e.clone()))
}

/// Installs the filters on the calling thread. Runs in the init after fork, before
/// capabilities drop: without `no_new_privs` (which Docker leaves off, so that setuid
/// programs like `su` keep working) installing a filter needs CAP_SYS_ADMIN.
/// seccompiler's own installer always sets `no_new_privs`, hence the direct call.
pub fn apply_seccomp(program: &SeccompProgram) -> Result<(), String> {
    for raw in &program.filters {
        let insns: Vec<libc::sock_filter> = raw.iter().map(|w| unpack(*w)).collect();
        let len = u16::try_from(insns.len()).map_err(|_| {
            format!(
                "seccomp: a filter of {} instructions is too long",
                insns.len()
            )
        })?;
        let prog = libc::sock_fprog {
            len,
            filter: insns.as_ptr().cast_mut(),
        };
        // SAFETY: the kernel copies the program; `insns` outlives the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc != 0 {
            return Err(format!("seccomp: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Drops every capability outside `keep` from the bounding set (needs CAP_SETPCAP,
/// so this comes first).
pub fn limit_bounding(keep: &HashSet<Capability>) -> Result<(), String> {
    for cap in caps::all() {
        if !keep.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|e| format!("dropping {cap} from the bounding set: {e}"))?;
        }
    }
    // Capabilities newer than the caps crate knows (numbers up to 63).
    for index in 41..64 {
        // SAFETY: prctl with integer arguments; EINVAL for numbers the kernel lacks.
        unsafe { libc::prctl(libc::PR_CAPBSET_DROP, index, 0, 0, 0) };
    }
    Ok(())
}

/// Sets the process's own sets after the uid change: `keep` in effective and
/// permitted (a non-root user has none left after setuid), nothing inheritable or
/// ambient. Inheritable stays empty as in moby since 20.10.14: with it set, a
/// program with inheritable file capabilities would gain them (CVE-2022-24769).
pub fn limit_process(keep: &HashSet<Capability>, root: bool) -> Result<(), String> {
    let none = HashSet::new();
    let want = if root { keep } else { &none };
    caps::clear(None, CapSet::Ambient)
        .map_err(|e| format!("clearing ambient capabilities: {e}"))?;
    caps::set(None, CapSet::Inheritable, &none)
        .map_err(|e| format!("clearing inheritable capabilities: {e}"))?;
    caps::set(None, CapSet::Effective, want)
        .map_err(|e| format!("setting effective capabilities: {e}"))?;
    caps::set(None, CapSet::Permitted, want)
        .map_err(|e| format!("setting permitted capabilities: {e}"))?;
    Ok(())
}

pub fn default_caps() -> HashSet<Capability> {
    DEFAULT_CAPS.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_compiles_for_both_architectures() {
        for arch in ["x86_64", "aarch64"] {
            for ptrace in [false, true] {
                let p = compile(arch, ptrace).unwrap_or_else(|e| panic!("{arch}: {e}"));
                assert_eq!(p.filters.len(), 2);
                assert!(p.filters[0].len() > 300, "{arch}: {}", p.filters[0].len());
            }
        }
    }

    #[test]
    fn denied_calls_are_not_in_the_allowlist() {
        for name in [
            "mount",
            "umount2",
            "pivot_root",
            "open_by_handle_at",
            "name_to_handle_at",
            "kexec_load",
            "kexec_file_load",
            "init_module",
            "finit_module",
            "delete_module",
            "bpf",
            "perf_event_open",
            "keyctl",
            "add_key",
            "request_key",
            "reboot",
            "swapon",
            "swapoff",
            "unshare",
            "setns",
            "userfaultfd",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "acct",
            "settimeofday",
            "clock_settime",
            "iopl",
            "ioperm",
            "lookup_dcookie",
            "quotactl",
            "syslog",
            "move_mount",
            "fsopen",
            "fsmount",
            "open_tree",
            "fspick",
            "mount_setattr",
        ] {
            assert!(!ALLOWED.contains(&name), "{name}");
            assert!(!ALLOWED_X86_64.contains(&name), "{name}");
        }
    }

    #[test]
    fn raw_instructions_round_trip() {
        let p = compile("x86_64", true).expect("compiles");
        let back: Vec<u64> = p.filters[0]
            .iter()
            .map(|w| {
                let f = unpack(*w);
                pack(&seccompiler::sock_filter {
                    code: f.code,
                    jt: f.jt,
                    jf: f.jf,
                    k: f.k,
                })
            })
            .collect();
        assert_eq!(back, p.filters[0]);
    }
}
