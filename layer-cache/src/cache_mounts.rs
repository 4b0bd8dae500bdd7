//! Persistent cache directories for `RUN --mount=type=cache`, under
//! `cache-mounts/<sha256 of id>/`: `id` (the id, for listing), `lock`, `data/`, and
//! `private-<n>/{lock,data}` for `sharing=private` users that found `data` busy.
//! Contents never reach a layer. Users hold `lock` for the whole step: shared for
//! `sharing=shared`, exclusive for `locked` and `private`; `prune_cache_mounts`
//! holds the store's GC lock, which every build holds shared, so it never removes a
//! directory in use.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::error::{AtPath, Result, StoreError};
use crate::lock::FileLock;
use crate::store::Store;

/// BuildKit's `sharing=` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// Every user sees the same directory at the same time.
    Shared,
    /// A user finding the directory busy gets a directory of its own.
    Private,
    /// One user at a time; the others wait.
    Locked,
}

/// How a new cache directory starts.
#[derive(Debug, Clone, Copy)]
pub struct CacheInit {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

/// A cache directory in use; its lock is released on drop.
#[derive(Debug)]
pub struct CacheMount {
    path: PathBuf,
    _lock: FileLock,
}

impl CacheMount {
    /// The directory to mount.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// One cache as `list_cache_mounts` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheMountInfo {
    pub id: String,
    pub path: PathBuf,
}

impl Store {
    pub fn cache_mounts_dir(&self) -> PathBuf {
        self.root().join("cache-mounts")
    }

    /// Opens (creating when missing) the cache directory for `id`. A new directory is
    /// created with `init`'s owner and mode and filled by `seed`, then renamed into
    /// place, so a concurrent user never sees it half seeded.
    pub fn open_cache_mount(
        &self,
        id: &str,
        sharing: Sharing,
        init: CacheInit,
        seed: &mut dyn FnMut(&Path) -> std::io::Result<()>,
    ) -> Result<CacheMount> {
        let base = self
            .cache_mounts_dir()
            .join(Digest::of(id.as_bytes()).hex());
        fs_err::create_dir_all(&base)?;
        let id_file = base.join("id");
        if !id_file.exists() {
            fs_err::write(&id_file, id)?;
        }
        let (dir, lock) = match sharing {
            Sharing::Shared => (base.clone(), FileLock::shared(&base.join("lock"))?),
            Sharing::Locked => (base.clone(), FileLock::exclusive(&base.join("lock"))?),
            Sharing::Private => private_slot(&base)?,
        };
        let data = dir.join("data");
        if !data.is_dir() {
            create_data(&dir, &data, init, seed)?;
        }
        Ok(CacheMount {
            path: data,
            _lock: lock,
        })
    }

    /// The cache directory of `id` when one exists (not a `sharing=private`
    /// user's own copy), held shared: a `sharing=locked` user waits meanwhile.
    pub fn existing_cache_mount(&self, id: &str) -> Result<Option<CacheMount>> {
        let base = self
            .cache_mounts_dir()
            .join(Digest::of(id.as_bytes()).hex());
        let data = base.join("data");
        if !data.is_dir() {
            return Ok(None);
        }
        let lock = FileLock::shared(&base.join("lock"))?;
        Ok(Some(CacheMount {
            path: data,
            _lock: lock,
        }))
    }

    /// Every cache directory with its id.
    pub fn list_cache_mounts(&self) -> Result<Vec<CacheMountInfo>> {
        let dir = self.cache_mounts_dir();
        let rd = match fs_err::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry?;
            let path = entry.path();
            let id = std::fs::read_to_string(path.join("id")).unwrap_or_default();
            out.push(CacheMountInfo { id, path });
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Removes every cache directory; returns how many. Waits for running builds.
    pub fn prune_cache_mounts(&self) -> Result<usize> {
        let _gc = self.gc_lock()?;
        let caches = self.list_cache_mounts()?;
        for c in &caches {
            make_removable(&c.path);
            fs_err::remove_dir_all(&c.path)?;
        }
        Ok(caches.len())
    }
}

/// `data` if nobody uses it, else the first free `private-<n>`, else a new one.
fn private_slot(base: &Path) -> Result<(PathBuf, FileLock)> {
    if let Some(l) = FileLock::try_exclusive(&base.join("lock"))? {
        return Ok((base.to_path_buf(), l));
    }
    for n in 0u32.. {
        let dir = base.join(format!("private-{n}"));
        fs_err::create_dir_all(&dir)?;
        if let Some(l) = FileLock::try_exclusive(&dir.join("lock"))? {
            return Ok((dir, l));
        }
    }
    Err(StoreError::invalid(
        base.display().to_string(),
        "no free private cache directory",
    ))
}

fn create_data(
    dir: &Path,
    data: &Path,
    init: CacheInit,
    seed: &mut dyn FnMut(&Path) -> std::io::Result<()>,
) -> Result<()> {
    let tmp = dir.join(format!("data.tmp-{}", crate::store::unique_suffix()));
    let result = (|| {
        std::fs::create_dir(&tmp)?;
        seed(&tmp)?;
        std::os::unix::fs::chown(&tmp, Some(init.uid), Some(init.gid))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(init.mode & 0o7777))?;
        std::fs::rename(&tmp, data)
    })();
    match result {
        Ok(()) => Ok(()),
        // A shared user created it first.
        Err(_) if data.is_dir() => {
            make_removable(&tmp);
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(())
        }
        Err(e) => {
            make_removable(&tmp);
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e).at(data)
        }
    }
}

/// A step may leave read-only directories in its cache; give the owner write access
/// so the tree can be removed.
fn make_removable(root: &Path) {
    // A stack of directories to visit: depth costs heap, not call stack.
    let mut todo = vec![root.to_path_buf()];
    while let Some(path) = todo.pop() {
        let Ok(md) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !md.is_dir() {
            continue;
        }
        let mode = md.permissions().mode();
        if mode & 0o700 != 0o700 {
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode | 0o700));
        }
        if let Ok(rd) = std::fs::read_dir(&path) {
            todo.extend(rd.flatten().map(|e| e.path()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init() -> CacheInit {
        CacheInit {
            uid: 0,
            gid: 0,
            mode: 0o755,
        }
    }

    #[test]
    fn same_id_same_directory_and_listed_by_id() {
        let tmp = tempfile::TempDir::new().unwrap();
        let store = Store::open(tmp.path().join("s")).unwrap();
        let mut seeded = 0;
        let a = store
            .open_cache_mount("/root/.cache", Sharing::Shared, init(), &mut |d| {
                seeded += 1;
                std::fs::write(d.join("seed"), "x")
            })
            .unwrap();
        std::fs::write(a.path().join("n"), "1").unwrap();
        let b = store
            .open_cache_mount("/root/.cache", Sharing::Shared, init(), &mut |_| {
                panic!("seeded twice")
            })
            .unwrap();
        assert_eq!(a.path(), b.path());
        assert_eq!(std::fs::read_to_string(b.path().join("n")).unwrap(), "1");
        assert_eq!(std::fs::read_to_string(b.path().join("seed")).unwrap(), "x");
        assert_eq!(seeded, 1);
        let list = store.list_cache_mounts().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].id, "/root/.cache");
    }

    #[test]
    fn private_users_get_separate_directories_while_busy() {
        let tmp = tempfile::TempDir::new().unwrap();
        let store = Store::open(tmp.path().join("s")).unwrap();
        let a = store
            .open_cache_mount("c", Sharing::Private, init(), &mut |_| Ok(()))
            .unwrap();
        let b = store
            .open_cache_mount("c", Sharing::Private, init(), &mut |_| Ok(()))
            .unwrap();
        assert_ne!(a.path(), b.path());
        let first = a.path().to_path_buf();
        drop(a);
        let c = store
            .open_cache_mount("c", Sharing::Private, init(), &mut |_| Ok(()))
            .unwrap();
        assert_eq!(c.path(), first);
    }

    #[test]
    fn prune_removes_caches() {
        let tmp = tempfile::TempDir::new().unwrap();
        let store = Store::open(tmp.path().join("s")).unwrap();
        let a = store
            .open_cache_mount("c", Sharing::Locked, init(), &mut |_| Ok(()))
            .unwrap();
        std::fs::create_dir(a.path().join("ro")).unwrap();
        std::fs::write(a.path().join("ro/f"), "x").unwrap();
        std::fs::set_permissions(a.path().join("ro"), std::fs::Permissions::from_mode(0o500))
            .unwrap();
        drop(a);
        assert_eq!(store.prune_cache_mounts().unwrap(), 1);
        assert!(store.list_cache_mounts().unwrap().is_empty());
    }
}
