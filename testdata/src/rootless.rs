//! Running `mybuild` as an ordinary user from a test that runs as root: a scratch
//! area the user can reach (the binary copied into it, as the target directory
//! may sit under a 0700 home), a home the user owns, and commands run with the
//! user's ids through `setpriv`.
//!
//! `.ci/run` creates the users: `mbtest` with subordinate ranges and `mbsolo`
//! without.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A user of this machine.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// The user's ids from `id`, or `None` if there is no such user.
pub fn user(name: &str) -> Option<User> {
    let id = |flag: &str| {
        let out = Command::new("id").args([flag, name]).output().ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    Some(User {
        name: name.to_string(),
        uid: id("-u")?,
        gid: id("-g")?,
    })
}

/// Whether `/etc/subuid` and `/etc/subgid` both give the user a range.
pub fn has_subids(user: &User) -> bool {
    ["/etc/subuid", "/etc/subgid"].iter().all(|f| {
        std::fs::read_to_string(f).is_ok_and(|text| {
            text.lines().any(|l| {
                let owner = l.split(':').next().unwrap_or("");
                owner == user.name || owner == user.uid.to_string()
            })
        })
    })
}

fn skip(msg: &str) -> Option<AsUser> {
    if super::require_all() {
        panic!("MYBUILD_TEST_REQUIRE_ALL is set but {msg}");
    }
    eprintln!("skipping: {msg}");
    None
}

/// A scratch area for running `mybuild` as `user`; removed on drop.
pub struct AsUser {
    pub user: User,
    /// Root's, mode 0755: what the test puts here the user can read, not write.
    pub dir: tempfile::TempDir,
    /// The user's home (`$HOME`), owned by the user, mode 0700.
    pub home: PathBuf,
    /// The copied `mybuild`.
    pub bin: PathBuf,
}

impl AsUser {
    /// Needs root, `setpriv`, `newuidmap`, and the user (with subordinate ranges
    /// when `ranges`). `None` when the test must skip.
    pub fn new(name: &str, mybuild: &Path, ranges: bool) -> Option<AsUser> {
        if !super::require_root()
            || !super::require_tool("setpriv")
            || !super::require_tool("newuidmap")
        {
            return None;
        }
        let Some(user) = user(name) else {
            return skip(&format!(
                "user {name} does not exist (.ci/run creates it with useradd)"
            ));
        };
        if ranges != has_subids(&user) {
            return skip(&format!(
                "user {name} {} subordinate ids in /etc/subuid and /etc/subgid (.ci/run sets them)",
                if ranges { "has no" } else { "has" }
            ));
        }
        let dir = tempfile::Builder::new()
            .prefix("mybuild-rootless-")
            .tempdir()
            .expect("tmp");
        let open = std::fs::Permissions::from_mode(0o755);
        std::fs::set_permissions(dir.path(), open.clone()).expect("chmod tmp");
        let bin_dir = dir.path().join("bin");
        std::fs::create_dir(&bin_dir).expect("bin dir");
        std::fs::set_permissions(&bin_dir, open.clone()).expect("chmod bin");
        let bin = bin_dir.join("mybuild");
        std::fs::copy(mybuild, &bin).expect("copy mybuild");
        std::fs::set_permissions(&bin, open).expect("chmod mybuild");
        let home = dir.path().join("home");
        std::fs::create_dir(&home).expect("home");
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        std::os::unix::fs::chown(&home, Some(user.uid), Some(user.gid)).expect("chown home");
        Some(AsUser {
            user,
            dir,
            home,
            bin,
        })
    }

    /// `$XDG_DATA_HOME` of the user's commands: the default store is `mybuild` in it.
    pub fn data_home(&self) -> PathBuf {
        self.home.join(".local/share")
    }

    /// `program` run as the user, in the user's home, with a clean environment
    /// (`PATH`, `HOME`, `XDG_DATA_HOME`, `USER`, `LOGNAME`, `SHELL`).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={}", self.user.uid))
            .arg(format!("--regid={}", self.user.gid))
            .arg("--init-groups")
            .arg("--inh-caps=-all")
            .arg("--")
            .arg(program)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("HOME", &self.home)
            .env("XDG_DATA_HOME", self.data_home())
            .env("USER", &self.user.name)
            .env("LOGNAME", &self.user.name)
            .env("SHELL", "/bin/sh")
            .current_dir(&self.home);
        c
    }

    /// The copied `mybuild`, run as the user.
    pub fn mybuild(&self) -> Command {
        self.command(&self.bin)
    }

    /// Makes `path` (a tree) the user's.
    pub fn give(&self, path: &Path) {
        let st = Command::new("chown")
            .arg("-R")
            .arg(format!("{}:{}", self.user.uid, self.user.gid))
            .arg(path)
            .status()
            .expect("chown");
        assert!(st.success(), "chown -R {}", path.display());
    }
}
