//! Containers: a record plus a writable layer, under
//! `containers/<64-hex id>/` in the store: `config.json` (the record, replaced
//! atomically), `upper/` and `work/` (the overlay's upper and work directories,
//! kept after the container exits), `container.log` (output of a detached run) and
//! `lock` (flock'ed by whichever process runs the container, so a second start is
//! refused and a crashed runner leaves no "running" record behind).
//!
//! Names are unique: creating, renaming and removing take `containers/names.lock`.
//! A record that says running while nobody holds its lock reads as exited (its
//! runner died; the kernel released the lock with it).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::StoreError;
use crate::lock::FileLock;

/// The directory under the store root that holds containers.
pub const CONTAINERS_DIR: &str = "containers";
const RECORD: &str = "config.json";
const LOCK: &str = "lock";
const NAMES_LOCK: &str = "names.lock";
/// The log file of a detached container.
pub const LOG: &str = "container.log";

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no such container: {0}")]
    NotFound(String),
    #[error("multiple containers match {0:?}: give more of the id")]
    Ambiguous(String),
    #[error("the container name \"/{name}\" is already in use by container \"{id}\"; remove (or rename) that container to reuse the name")]
    NameInUse { name: String, id: String },
    #[error("invalid container name {0:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    BadName(String),
    #[error("container {0} is running: stop it first or use -f")]
    Running(String),
    #[error("container {0} is already running")]
    AlreadyRunning(String),
    #[error("container record {}: {reason}", path.display())]
    Record { path: PathBuf, reason: String },
}

pub type Result<T, E = ContainerError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Created,
    Running,
    Exited,
}

/// A host directory bound into the container (`-v HOST:CTR[:ro]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bind {
    pub source: PathBuf,
    pub target: String,
    pub readonly: bool,
}

/// What the container runs with, resolved once at creation from the image's config
/// and the options given, so every start runs the same thing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunConfig {
    /// The entrypoint and command as combined from the image and the options; what
    /// runs is [`RunConfig::args`]. A commit records them apart, as Docker's does.
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    /// The user as given (`USER[:GROUP]`), resolved in the image at each start.
    pub user: String,
    pub workdir: String,
    pub hostname: String,
    /// `default`, `none` or `host`.
    pub network: String,
    pub tty: bool,
    pub interactive: bool,
    pub binds: Vec<Bind>,
    pub tmpfs: Vec<String>,
    /// `--add-host` entries: (name, address).
    pub extra_hosts: Vec<(String, String)>,
    pub read_only: bool,
    pub init: bool,
    /// The image's STOPSIGNAL, if it names one.
    pub stop_signal: Option<String>,
    /// Remove the container when it exits (`--rm`).
    pub auto_remove: bool,
    /// Published ports as given to `-p` (checked at creation).
    #[serde(default)]
    pub ports: Vec<String>,
}

impl RunConfig {
    /// What runs: `entrypoint` then `cmd`.
    pub fn args(&self) -> Vec<String> {
        self.entrypoint.iter().chain(&self.cmd).cloned().collect()
    }
}

/// A container's record (`config.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    pub name: String,
    /// The image as the user named it.
    pub image: String,
    /// The manifest the container was created from; the store keeps it while the
    /// container exists.
    pub image_digest: Digest,
    pub config: RunConfig,
    /// RFC 3339.
    pub created: String,
    pub state: State,
    /// The process that runs the container (the sandbox's outer init), while running.
    pub pid: Option<i32>,
    pub exit_code: Option<i32>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

impl Container {
    /// The first 12 characters of the id, as `ps` shows it.
    pub fn short_id(&self) -> &str {
        self.id.get(..12).unwrap_or(&self.id)
    }
}

/// The containers of one store.
#[derive(Debug, Clone)]
pub struct Containers {
    dir: PathBuf,
}

/// Exclusive hold on a container: it runs (or is being removed) while this lives.
#[derive(Debug)]
pub struct RunLock {
    _lock: FileLock,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ContainerError + '_ {
    move |e| ContainerError::Store(StoreError::io(path, e))
}

impl Containers {
    /// The containers under the store at `root` (the directory is made on demand).
    pub fn open(root: &Path) -> Result<Containers> {
        let dir = root.join(CONTAINERS_DIR);
        fs_err::create_dir_all(&dir).map_err(StoreError::from)?;
        Ok(Containers { dir })
    }

    pub fn dir_of(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }
    pub fn upper_dir(&self, id: &str) -> PathBuf {
        self.dir_of(id).join("upper")
    }
    pub fn work_dir(&self, id: &str) -> PathBuf {
        self.dir_of(id).join("work")
    }
    /// Scratch space of one run (the sandbox's bundle); replaced at each start.
    pub fn bundle_dir(&self, id: &str) -> PathBuf {
        self.dir_of(id).join("bundle")
    }
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.dir_of(id).join(LOG)
    }

    fn names_lock(&self) -> Result<FileLock> {
        Ok(FileLock::exclusive(&self.dir.join(NAMES_LOCK))?)
    }

    /// Creates a container: a fresh id, `name` (or a generated one) checked unique,
    /// its directories and record. Returns the record.
    pub fn create(
        &self,
        name: Option<&str>,
        image: &str,
        image_digest: &Digest,
        config: RunConfig,
    ) -> Result<Container> {
        let _names = self.names_lock()?;
        let existing = self.list()?;
        let id = new_id()?;
        let name = match name {
            Some(n) => {
                let n = n.strip_prefix('/').unwrap_or(n);
                if !valid_name(n) {
                    return Err(ContainerError::BadName(n.to_string()));
                }
                if let Some(c) = existing.iter().find(|c| c.name == n) {
                    return Err(ContainerError::NameInUse {
                        name: n.to_string(),
                        id: c.id.clone(),
                    });
                }
                n.to_string()
            }
            None => generate_name(&id, &existing),
        };
        let record = Container {
            id: id.clone(),
            name,
            image: image.to_string(),
            image_digest: image_digest.clone(),
            config,
            created: now(),
            state: State::Created,
            pid: None,
            exit_code: None,
            started_at: None,
            finished_at: None,
        };
        // The record is written last, so a half-made directory has none and is
        // not listed.
        for d in [self.upper_dir(&id), self.work_dir(&id)] {
            fs_err::create_dir_all(&d).map_err(StoreError::from)?;
        }
        if record.config.auto_remove {
            // Removed when it exits: not worth a wait for the disk.
            self.save_state(&record)?;
        } else {
            self.save(&record)?;
        }
        Ok(record)
    }

    /// Replaces a container's record atomically and durably (fsync'ed).
    pub fn save(&self, c: &Container) -> Result<()> {
        let (path, bytes) = self.record_bytes(c)?;
        crate::atomic::write_atomically(&path, |f| f.write_all(&bytes))?;
        Ok(())
    }

    /// Replaces a container's record atomically but without waiting for the disk:
    /// for state changes (running, exited), which the run lock makes right again
    /// after a crash anyway.
    pub fn save_state(&self, c: &Container) -> Result<()> {
        let (path, bytes) = self.record_bytes(c)?;
        let temp = path.with_file_name(format!(".{RECORD}.{}", std::process::id()));
        std::fs::write(&temp, &bytes)
            .and_then(|()| std::fs::rename(&temp, &path))
            .map_err(|e| {
                let _ = std::fs::remove_file(&temp);
                io_err(&path)(e)
            })
    }

    fn record_bytes(&self, c: &Container) -> Result<(PathBuf, Vec<u8>)> {
        let path = self.dir_of(&c.id).join(RECORD);
        let bytes = serde_json::to_vec_pretty(c).map_err(|e| ContainerError::Record {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        Ok((path, bytes))
    }

    /// Reads a record by full id; a "running" record nobody runs reads as exited.
    pub fn get(&self, id: &str) -> Result<Container> {
        let path = self.dir_of(id).join(RECORD);
        let mut bytes = Vec::new();
        match std::fs::File::open(&path) {
            Ok(mut f) => f.read_to_end(&mut bytes).map_err(io_err(&path))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ContainerError::NotFound(id.to_string()))
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        let mut c: Container =
            serde_json::from_slice(&bytes).map_err(|e| ContainerError::Record {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        if c.state == State::Running && !self.is_held(id)? {
            c.state = State::Exited;
            c.pid = None;
            c.exit_code.get_or_insert(137);
        }
        Ok(c)
    }

    /// Whether some process holds the container's run lock.
    fn is_held(&self, id: &str) -> Result<bool> {
        let path = self.dir_of(id).join(LOCK);
        Ok(FileLock::try_exclusive_existing(&path)?.is_none() && path.exists())
    }

    /// Takes the container's run lock, or says it is already running.
    pub fn lock_for_run(&self, c: &Container) -> Result<RunLock> {
        let path = self.dir_of(&c.id).join(LOCK);
        match FileLock::try_exclusive(&path)? {
            Some(lock) => Ok(RunLock { _lock: lock }),
            None => Err(ContainerError::AlreadyRunning(c.name.clone())),
        }
    }

    /// Every container, newest first.
    pub fn list(&self) -> Result<Vec<Container>> {
        let mut out = Vec::new();
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io_err(&self.dir)(e)),
        };
        for e in rd {
            let e = e.map_err(io_err(&self.dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !is_id(&name) {
                continue;
            }
            match self.get(&name) {
                Ok(c) => out.push(c),
                // Being created or removed right now.
                Err(ContainerError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Finds a container by name, full id or a unique id prefix.
    pub fn lookup(&self, what: &str) -> Result<Container> {
        let what = what.strip_prefix('/').unwrap_or(what);
        let all = self.list()?;
        if let Some(c) = all.iter().find(|c| c.id == what || c.name == what) {
            return Ok(c.clone());
        }
        let hexish = !what.is_empty() && what.bytes().all(|b| b.is_ascii_hexdigit());
        if hexish {
            let mut found = all.into_iter().filter(|c| c.id.starts_with(what));
            if let Some(c) = found.next() {
                if found.next().is_some() {
                    return Err(ContainerError::Ambiguous(what.to_string()));
                }
                return Ok(c);
            }
        }
        Err(ContainerError::NotFound(what.to_string()))
    }

    /// Removes a container that is not running: its record first (so it stops being
    /// listed and stops holding its image), then its directory.
    pub fn remove(&self, c: &Container) -> Result<()> {
        let _names = self.names_lock()?;
        let dir = self.dir_of(&c.id);
        let lock_path = dir.join(LOCK);
        let _held = match FileLock::try_exclusive_existing(&lock_path)? {
            Some(l) => Some(l),
            None if lock_path.exists() => return Err(ContainerError::Running(c.name.clone())),
            None => None,
        };
        let record = dir.join(RECORD);
        match std::fs::remove_file(&record) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&record)(e)),
        }
        remove_tree(&dir)
    }
}

/// Removes a tree whose directories may lack write or search permission (overlay's
/// `work/work` is mode 000).
fn remove_tree(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::remove_dir_all(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(_) => {}
    }
    for e in walkdir::WalkDir::new(dir).into_iter().flatten() {
        if e.file_type().is_dir() {
            let _ = std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o700));
        }
    }
    std::fs::remove_dir_all(dir).map_err(io_err(dir))
}

/// The manifests the store's containers were created from: roots for `prune`.
pub fn images_in_use(root: &Path) -> Result<BTreeSet<Digest>> {
    let dir = root.join(CONTAINERS_DIR);
    if !dir.is_dir() {
        return Ok(BTreeSet::new());
    }
    let list = Containers { dir }.list()?;
    Ok(list.into_iter().map(|c| c.image_digest).collect())
}

/// The containers that use the manifest `digest`.
pub fn users_of(root: &Path, digest: &Digest) -> Result<Vec<Container>> {
    let dir = root.join(CONTAINERS_DIR);
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let list = Containers { dir }.list()?;
    Ok(list
        .into_iter()
        .filter(|c| &c.image_digest == digest)
        .collect())
}

fn is_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Docker's rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
fn valid_name(n: &str) -> bool {
    let mut b = n.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphanumeric())
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
        && !is_id(n)
}

fn new_id() -> Result<String> {
    let path = Path::new("/dev/urandom");
    let mut buf = [0u8; 32];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(io_err(path))?;
    Ok(hex::encode(buf))
}

const ADJECTIVES: &[&str] = &[
    "brave", "calm", "eager", "fervent", "gifted", "happy", "jolly", "keen", "lucid", "merry",
    "nifty", "quirky", "serene", "tender", "vibrant", "wizardly",
];
const NAMES: &[&str] = &[
    "babbage", "curie", "dijkstra", "euler", "fermat", "galois", "hopper", "kepler", "lovelace",
    "noether", "pascal", "ritchie", "shannon", "thompson", "turing", "wozniak",
];

/// Docker's style of name (`adjective_scientist`), from the id's bytes; a number
/// is appended when that name is taken.
fn generate_name(id: &str, existing: &[Container]) -> String {
    let byte = |i: usize| {
        id.get(i..i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .unwrap_or(0) as usize
    };
    let base = format!(
        "{}_{}",
        ADJECTIVES[byte(0) % ADJECTIVES.len()],
        NAMES[byte(2) % NAMES.len()]
    );
    let taken = |n: &str| existing.iter().any(|c| c.name == n);
    if !taken(&base) {
        return base;
    }
    (1..)
        .map(|i| format!("{base}{i}"))
        .find(|n| !taken(n))
        .unwrap_or(base)
}

/// The current time, RFC 3339.
pub fn now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    crate::image::rfc3339(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest() -> Digest {
        Digest::from_hex(&"ab".repeat(32)).unwrap()
    }

    #[test]
    fn create_lookup_lock_remove() {
        let tmp = tempfile::TempDir::new().unwrap();
        let cs = Containers::open(tmp.path()).unwrap();
        let c = cs
            .create(Some("c1"), "busybox", &digest(), RunConfig::default())
            .unwrap();
        assert!(cs.upper_dir(&c.id).is_dir());
        assert!(matches!(
            cs.create(Some("c1"), "busybox", &digest(), RunConfig::default()),
            Err(ContainerError::NameInUse { .. })
        ));
        assert_eq!(cs.lookup("c1").unwrap().id, c.id);
        assert_eq!(cs.lookup(&c.id[..6]).unwrap().id, c.id);
        assert!(matches!(
            cs.lookup("nope"),
            Err(ContainerError::NotFound(_))
        ));
        // A running record whose runner is gone reads as exited.
        let mut running = c.clone();
        running.state = State::Running;
        running.pid = Some(i32::MAX);
        cs.save(&running).unwrap();
        assert_eq!(cs.get(&c.id).unwrap().state, State::Exited);
        let held = cs.lock_for_run(&c).unwrap();
        assert_eq!(cs.get(&c.id).unwrap().state, State::Running);
        assert!(matches!(
            cs.lock_for_run(&c),
            Err(ContainerError::AlreadyRunning(_))
        ));
        assert!(matches!(cs.remove(&c), Err(ContainerError::Running(_))));
        drop(held);
        assert_eq!(
            images_in_use(tmp.path())
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            vec![digest()]
        );
        cs.remove(&c).unwrap();
        assert!(!cs.dir_of(&c.id).exists());
        assert!(images_in_use(tmp.path()).unwrap().is_empty());
    }

    #[test]
    fn generated_names_are_unique() {
        let tmp = tempfile::TempDir::new().unwrap();
        let cs = Containers::open(tmp.path()).unwrap();
        let a = cs
            .create(None, "x", &digest(), RunConfig::default())
            .unwrap();
        let b = cs
            .create(None, "x", &digest(), RunConfig::default())
            .unwrap();
        assert_ne!(a.name, b.name);
        assert!(valid_name(&a.name));
    }
}
