//! ADD of a git repository, as BuildKit's git source does it: the host's `git` binary
//! resolves `#ref` to a commit with `ls-remote` (that commit keys the step, so an
//! unchanged remote is a cache hit without fetching), then a shallow fetch of that
//! commit is checked out in a scratch directory of the store. git runs with no user
//! or system configuration, no terminal prompts and a time limit.

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use layer_cache::snapshot::ScratchDir;
use layer_cache::{Store, StoreError};

use super::add::redact;

/// How long `ls-remote` may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long each fetch or checkout command may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(1800);

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error(
        "ADD of a git repository needs the `git` binary, which was not found in PATH: \
         install git"
    )]
    NotInstalled,
    #[error("git repository {url}: {message}")]
    Failed { url: String, message: String },
    #[error("git repository {url}: {what} timed out after {secs}s")]
    Timeout {
        url: String,
        what: String,
        secs: u64,
    },
    #[error(
        "git repository {url}: unknown ref {reference:?} (no branch, tag or commit of that name)"
    )]
    UnknownRef { url: String, reference: String },
    #[error("git repository {url}: subdirectory {subdir:?} not found at commit {commit}")]
    NoSubdir {
        url: String,
        subdir: String,
        commit: String,
    },
    #[error("git repository {url}: invalid subdirectory {subdir:?}")]
    BadSubdir { url: String, subdir: String },
    #[error(
        "invalid --checksum {0:?} for a git source: expected a full commit sha (40 or 64 hex \
         digits)"
    )]
    BadChecksum(String),
    #[error("git repository {url}: commit checksum mismatch: {actual} (expected: {expected})")]
    Checksum {
        url: String,
        expected: String,
        actual: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A git source split as BuildKit reads it: `<remote>[#<ref>[:<subdir>]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSource {
    pub remote: String,
    /// Branch, tag, full ref name or full commit sha; `None`: the remote's HEAD.
    pub reference: Option<String>,
    /// A directory of the repository whose contents are added.
    pub subdir: Option<String>,
}

impl GitSource {
    pub fn parse(src: &str) -> GitSource {
        let (remote, fragment) = match src.split_once('#') {
            Some((r, f)) => (r, f),
            None => (src, ""),
        };
        let (reference, subdir) = match fragment.split_once(':') {
            Some((r, s)) => (r, s),
            None => (fragment, ""),
        };
        let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
        GitSource {
            remote: remote.to_string(),
            reference: some(reference),
            subdir: some(subdir),
        }
    }
}

/// A git source with its ref resolved to a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub source: GitSource,
    /// Full commit sha, lowercase.
    pub commit: String,
    /// The full ref name the commit was found under (`refs/heads/main`, `refs/tags/v1`,
    /// `HEAD`); `None` when the source named a commit.
    pub ref_name: Option<String>,
}

/// What git may see of the caller's environment.
#[derive(Debug, Clone, Default)]
pub struct GitEnv {
    /// The build's default `--ssh` agent, for `ssh://` and `git@` remotes.
    pub ssh_auth_sock: Option<PathBuf>,
}

fn is_commit_sha(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Checks a git source's `--checksum` before anything runs: a full commit sha.
pub fn validate_checksum(checksum: &str) -> Result<(), GitError> {
    match is_commit_sha(checksum) {
        true => Ok(()),
        false => Err(GitError::BadChecksum(checksum.to_string())),
    }
}

/// The resolved commit must be `checksum` (BuildKit's `ADD --checksum=<sha> <git>`).
pub fn verify_checksum(r: &Resolved, checksum: &str) -> Result<(), GitError> {
    validate_checksum(checksum)?;
    if !r.commit.eq_ignore_ascii_case(checksum) {
        return Err(GitError::Checksum {
            url: redact(&r.source.remote),
            expected: checksum.to_ascii_lowercase(),
            actual: r.commit.clone(),
        });
    }
    Ok(())
}

/// Resolves `src`'s ref with `git ls-remote`: a branch (`refs/heads/`), else a tag
/// (the commit an annotated tag points to), else a full ref name; none: the remote's
/// HEAD. A full commit sha is taken as is (BuildKit does not look it up either; the
/// fetch fails if the remote does not have it).
pub fn resolve(store: &Store, src: &str, env: &GitEnv) -> Result<Resolved, GitError> {
    let source = GitSource::parse(src);
    if let Some(r) = source.reference.as_deref().filter(|r| is_commit_sha(r)) {
        return Ok(Resolved {
            commit: r.to_ascii_lowercase(),
            source,
            ref_name: None,
        });
    }
    let home = store.scratch_dir("git-home")?;
    let git = Git {
        url: &source.remote,
        home: home.path(),
        env,
    };
    let pattern = source.reference.as_deref().unwrap_or("HEAD");
    let out = git.run(
        None,
        &["ls-remote", "--symref", "--", &source.remote, pattern],
        "ls-remote",
        RESOLVE_TIMEOUT,
    )?;
    let mut refs: Vec<(&str, &str)> = Vec::new();
    let mut head_target = None;
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("ref: ") {
            if let Some((target, "HEAD")) = rest.split_once('\t') {
                head_target = Some(target.to_string());
            }
            continue;
        }
        if let Some((sha, name)) = line.split_once('\t') {
            refs.push((sha.trim(), name.trim()));
        }
    }
    let find = |name: &str| refs.iter().find(|(_, n)| *n == name).map(|(s, _)| *s);
    let found = match source.reference.as_deref() {
        None => find("HEAD").map(|s| (s, head_target.unwrap_or_else(|| "HEAD".into()))),
        Some(r) => {
            let (head, tag) = (format!("refs/heads/{r}"), format!("refs/tags/{r}"));
            find(&head)
                .map(|s| (s, head.clone()))
                .or_else(|| {
                    find(&format!("{tag}^{{}}"))
                        .or_else(|| find(&tag))
                        .map(|s| (s, tag.clone()))
                })
                .or_else(|| {
                    find(&format!("{r}^{{}}"))
                        .or_else(|| find(r))
                        .filter(|_| r.starts_with("refs/"))
                        .map(|s| (s, r.to_string()))
                })
        }
    };
    let Some((sha, ref_name)) = found.filter(|(s, _)| is_commit_sha(s)) else {
        return Err(GitError::UnknownRef {
            url: redact(&source.remote),
            reference: pattern.to_string(),
        });
    };
    Ok(Resolved {
        commit: sha.to_ascii_lowercase(),
        source,
        ref_name: Some(ref_name),
    })
}

/// A commit checked out in a scratch directory of the store (removed when dropped).
pub struct Checkout {
    _dir: ScratchDir,
    /// The directory whose contents ADD copies: the work tree, or its subdirectory.
    pub root: PathBuf,
    /// The commit's committer time (Unix seconds): every file's mtime.
    pub time: i64,
}

/// Fetches `r.commit` (depth 1) and checks it out. The `.git` directory is removed
/// unless `keep_git_dir`; then a branch is checked out under its name, with `origin`
/// pointing at the remote (its password redacted), as BuildKit leaves it.
pub fn checkout(
    store: &Store,
    r: &Resolved,
    keep_git_dir: bool,
    env: &GitEnv,
) -> Result<Checkout, GitError> {
    let url = &r.source.remote;
    let subdir = match r.source.subdir.as_deref() {
        None => None,
        Some(s) => Some(
            super::copy::clean_rel(s).ok_or_else(|| GitError::BadSubdir {
                url: redact(url),
                subdir: s.to_string(),
            })?,
        ),
    };
    let dir = store.scratch_dir("add-git")?;
    let home = dir.path().join("home");
    let tree = dir.path().join("tree");
    std::fs::create_dir(&home).map_err(io(&home))?;
    let git = Git {
        url,
        home: &home,
        env,
    };
    let t = Some(tree.as_path());
    let tree_arg = tree.as_os_str().to_string_lossy().into_owned();
    git.run(None, &["init", "-q", &tree_arg], "init", FETCH_TIMEOUT)?;
    git.run(t, &["remote", "add", "origin", url], "init", FETCH_TIMEOUT)?;
    if !fetch_ref(&git, t, r)? {
        fetch_commit(&git, t, r)?;
    }
    let branch = r
        .ref_name
        .as_deref()
        .and_then(|n| n.strip_prefix("refs/heads/"))
        .filter(|_| keep_git_dir);
    match branch {
        Some(b) => git.run(
            t,
            &["checkout", "-q", "-B", b, &r.commit],
            "checkout",
            FETCH_TIMEOUT,
        )?,
        None => git.run(
            t,
            &["checkout", "-q", "--detach", &r.commit],
            "checkout",
            FETCH_TIMEOUT,
        )?,
    };
    let time = git
        .run(
            t,
            &["log", "-1", "--format=%ct", &r.commit],
            "checkout",
            FETCH_TIMEOUT,
        )?
        .trim()
        .parse::<i64>()
        .unwrap_or(0);
    let dot_git = tree.join(".git");
    if keep_git_dir {
        git.run(
            t,
            &["remote", "set-url", "origin", &redact(url)],
            "checkout",
            FETCH_TIMEOUT,
        )?;
    } else {
        std::fs::remove_dir_all(&dot_git).map_err(io(&dot_git))?;
    }
    // git writes files with the process umask; the repository only records 644 or 755.
    normalize(&tree, &dot_git, time)?;
    let root = match subdir {
        None => tree,
        Some(s) => {
            let root = tree.join(&s);
            let is_dir = root.symlink_metadata().map(|m| m.is_dir()).unwrap_or(false);
            if !is_dir || s.starts_with(".git") {
                return Err(GitError::NoSubdir {
                    url: redact(url),
                    subdir: s.display().to_string(),
                    commit: r.commit.clone(),
                });
            }
            root
        }
    };
    Ok(Checkout {
        _dir: dir,
        root,
        time,
    })
}

/// Fetches the ref `r` was resolved from; true when it still points at `r.commit`.
fn fetch_ref(git: &Git<'_>, t: Option<&Path>, r: &Resolved) -> Result<bool, GitError> {
    // A fetched ref goes to a ref of its kind, so a kept .git looks like a clone's.
    let local = r.ref_name.as_deref().map(|name| {
        if let Some(b) = name.strip_prefix("refs/heads/") {
            format!("refs/remotes/origin/{b}")
        } else if name.starts_with("refs/tags/") {
            name.to_string()
        } else {
            "refs/mybuild/fetched".to_string()
        }
    });
    if let (Some(name), Some(local)) = (r.ref_name.as_deref(), local.as_deref()) {
        let spec = format!("+{name}:{local}");
        let shallow = git.run(
            t,
            &["fetch", "-q", "--depth=1", "--no-tags", "origin", &spec],
            "fetch",
            FETCH_TIMEOUT,
        );
        match shallow {
            Err(GitError::Failed { .. }) => {
                // The dumb HTTP transport cannot fetch shallow: fetch the ref whole.
                git.run(
                    t,
                    &["fetch", "-q", "--no-tags", "origin", &spec],
                    "fetch",
                    FETCH_TIMEOUT,
                )?;
            }
            other => {
                other?;
            }
        }
        // The ref may have moved since ls-remote: then the commit is fetched by sha.
        let at = git.run(
            t,
            &[
                "rev-parse",
                "--verify",
                "-q",
                &format!("{local}^{{commit}}"),
            ],
            "fetch",
            FETCH_TIMEOUT,
        )?;
        return Ok(at.trim() == r.commit);
    }
    Ok(false)
}

/// Fetches `r.commit` by itself, or everything when the server refuses a bare sha.
fn fetch_commit(git: &Git<'_>, t: Option<&Path>, r: &Resolved) -> Result<(), GitError> {
    let by_sha = git.run(
        t,
        &["fetch", "-q", "--depth=1", "--no-tags", "origin", &r.commit],
        "fetch",
        FETCH_TIMEOUT,
    );
    if let Err(e) = by_sha {
        if matches!(e, GitError::NotInstalled | GitError::Timeout { .. }) {
            return Err(e);
        }
        // Servers that refuse a sha not at a ref tip: fetch everything.
        git.run(
            t,
            &[
                "fetch",
                "-q",
                "origin",
                "+refs/heads/*:refs/remotes/origin/*",
                "+refs/tags/*:refs/tags/*",
            ],
            "fetch",
            FETCH_TIMEOUT,
        )?;
    }
    let object = format!("{}^{{commit}}", r.commit);
    if git
        .run(t, &["cat-file", "-e", &object], "fetch", FETCH_TIMEOUT)
        .is_err()
    {
        return Err(GitError::UnknownRef {
            url: redact(git.url),
            reference: r
                .source
                .reference
                .clone()
                .unwrap_or_else(|| r.commit.clone()),
        });
    }
    Ok(())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> GitError + '_ {
    move |source| GitError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Gives the work tree git's modes (0644/0755 files, 0755 directories; `.git` keeps
/// its own) and every entry, `.git` included, the commit's time. BuildKit leaves
/// checkout times by default and sets the commit time with its `git.mtime=commit`
/// option (which its Dockerfile frontend turns on under SOURCE_DATE_EPOCH); we always
/// use the commit time, so the same commit always makes the same layer.
fn normalize(root: &Path, dot_git: &Path, time: i64) -> Result<(), GitError> {
    // Changing a child's mode or times leaves its directory's mtime alone, so the
    // order of visits does not matter; a stack keeps depth off the call stack.
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let rd = std::fs::read_dir(&dir).map_err(io(&dir))?;
        for e in rd {
            let e = e.map_err(io(&dir))?;
            let p = e.path();
            let md = p.symlink_metadata().map_err(io(&p))?;
            let in_git = p.starts_with(dot_git);
            if !in_git && !md.file_type().is_symlink() {
                let mode = match md.is_dir() || md.permissions().mode() & 0o100 != 0 {
                    true => 0o755,
                    false => 0o644,
                };
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
                    .map_err(io(&p))?;
            }
            set_mtime(&p, time)?;
            if md.is_dir() {
                todo.push(p);
            }
        }
    }
    set_mtime(root, time)
}

fn set_mtime(path: &Path, time: i64) -> Result<(), GitError> {
    crate::mtime::set(path, time, 0).map_err(io(path))
}

/// Runs git for one remote, isolated from the caller's configuration.
struct Git<'a> {
    url: &'a str,
    home: &'a Path,
    env: &'a GitEnv,
}

impl Git<'_> {
    /// Runs `git args` (in `dir`), returning its stdout; a failure carries a summary
    /// of git's stderr.
    fn run(
        &self,
        dir: Option<&Path>,
        args: &[&str],
        what: &str,
        timeout: Duration,
    ) -> Result<String, GitError> {
        let mut cmd = Command::new("git");
        if let Some(d) = dir {
            cmd.arg("-C").arg(d);
        }
        cmd.args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "advice.detachedHead=false",
        ]);
        cmd.args(args.iter().map(OsStr::new));
        // Only what git needs: no GIT_DIR or similar from the caller, no user or system
        // configuration, never a prompt for credentials.
        cmd.env_clear();
        for var in [
            "PATH",
            "HTTP_PROXY",
            "http_proxy",
            "HTTPS_PROXY",
            "https_proxy",
            "ALL_PROXY",
            "all_proxy",
            "NO_PROXY",
            "no_proxy",
            "SSL_CERT_FILE",
            "SSL_CERT_DIR",
        ] {
            if let Some(v) = std::env::var_os(var) {
                cmd.env(var, v);
            }
        }
        cmd.env("HOME", self.home)
            .env("XDG_CONFIG_HOME", self.home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
            .env("LC_ALL", "C");
        if let Some(sock) = &self.env.ssh_auth_sock {
            cmd.env("SSH_AUTH_SOCK", sock);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(GitError::NotInstalled)
            }
            Err(e) => return Err(io(Path::new("git"))(e)),
        };
        let reader = |s: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(mut s) = s {
                    let _ = s.read_to_end(&mut buf);
                }
                buf
            })
        };
        let out = reader(child.stdout.take().map(|s| Box::new(s) as _));
        let err = reader(child.stderr.take().map(|s| Box::new(s) as _));
        let deadline = Instant::now() + timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break st,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(GitError::Timeout {
                        url: redact(self.url),
                        what: format!("git {what}"),
                        secs: timeout.as_secs(),
                    });
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(io(Path::new("git"))(e)),
            }
        };
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        if !status.success() {
            return Err(GitError::Failed {
                url: redact(self.url),
                message: format!(
                    "git {what} failed: {}",
                    summarize(&String::from_utf8_lossy(&stderr), self.url)
                ),
            });
        }
        Ok(String::from_utf8_lossy(&stdout).into_owned())
    }
}

/// git's stderr in one line: from its first `fatal:`/`error:` line (else its last
/// lines), at most three lines, hints left out, the remote's password redacted.
fn summarize(stderr: &str, url: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("hint:"))
        .collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with("fatal:") || l.starts_with("error:"))
        .unwrap_or(lines.len().saturating_sub(3));
    let chosen: Vec<&str> = lines[start..].iter().copied().take(3).collect();
    let text = match chosen.is_empty() {
        true => "(no message)".to_string(),
        false => chosen.join("; "),
    };
    text.replace(url, &redact(url))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_split_into_ref_and_subdir() {
        assert_eq!(
            GitSource::parse("https://h/r.git#v1:docs/a"),
            GitSource {
                remote: "https://h/r.git".into(),
                reference: Some("v1".into()),
                subdir: Some("docs/a".into()),
            }
        );
        let s = GitSource::parse("git@h:o/r.git");
        assert_eq!(
            (s.remote.as_str(), s.reference, s.subdir),
            ("git@h:o/r.git", None, None)
        );
        let s = GitSource::parse("git://h/r.git#:sub");
        assert_eq!((s.reference, s.subdir), (None, Some("sub".into())));
    }

    #[test]
    fn checksums_are_full_commit_shas() {
        assert!(validate_checksum(&"a".repeat(40)).is_ok());
        assert!(validate_checksum(&"a".repeat(64)).is_ok());
        assert!(validate_checksum("abc123").is_err());
        assert!(validate_checksum(&format!("sha256:{}", "a".repeat(64))).is_err());
    }

    #[test]
    fn stderr_summaries_keep_the_fatal_lines() {
        let s = summarize(
            "hint: x\nfatal: could not read from https://u:pw@h/r.git\n\nerrno=refused\n",
            "https://u:pw@h/r.git",
        );
        assert_eq!(
            s,
            "fatal: could not read from https://u:xxxxx@h/r.git; errno=refused"
        );
    }
}
