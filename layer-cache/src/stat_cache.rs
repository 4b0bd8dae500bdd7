//! The stat cache, like git's index: for one build context directory, each file's
//! (size, mtime, ctime, inode, mode) and the sha256 of its content, persisted under
//! `cache-v1/stat/<sha256 of the context path>`. A file whose stat is unchanged is
//! not read again. Racy-git rule: an entry whose mtime is not strictly older (in whole
//! seconds) than the time the cache was written may have changed again within the
//! same second without its stat changing, so it is re-hashed.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::{Digest, Hasher};
use crate::error::{Result, StoreError};
use crate::store::Store;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stat {
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    ino: u64,
    mode: u32,
}

impl Stat {
    fn of(md: &std::fs::Metadata) -> Stat {
        Stat {
            size: md.len(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
            ino: md.ino(),
            mode: md.mode(),
        }
    }
}

/// A file's extended attributes, (name, value), as the cache keeps them.
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    stat: Stat,
    sha256: Digest,
    /// Setting an xattr changes ctime, so an unchanged stat means unchanged xattrs.
    /// `None` in caches written before they were kept: read them once.
    #[serde(default)]
    xattrs: Option<Xattrs>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct OnDisk {
    /// Unix seconds when the file was written.
    written: i64,
    entries: HashMap<String, Entry>,
}

/// One context's stat cache, loaded in memory.
#[derive(Debug)]
pub struct StatCache {
    path: PathBuf,
    disk: OnDisk,
    dirty: bool,
    hashed: u64,
    /// Entries named by real path (the snapshot cache) rather than the caller's name.
    by_real_path: bool,
}

impl Store {
    /// The stat cache of `context` (canonical path); empty when none was saved yet.
    pub fn stat_cache(&self, context: &Path) -> StatCache {
        let name = Digest::of(context.as_os_str().as_bytes());
        let path = self.cache_dir().join("stat").join(name.hex());
        // A missing or unreadable cache only costs re-hashing.
        let disk = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        StatCache {
            path,
            disk,
            dirty: false,
            hashed: 0,
            by_real_path: false,
        }
    }

    /// One stat cache for files in `snapshots-v1/`, by real path: snapshots never change
    /// once committed, so any stack of them is answered from it. `prune` drops it when
    /// it removes snapshots.
    pub fn snapshot_stat_cache(&self) -> StatCache {
        let mut c = self.stat_cache(&self.snapshots_dir());
        c.by_real_path = true;
        c
    }

    pub(crate) fn snapshot_stat_cache_path(&self) -> PathBuf {
        self.stat_cache(&self.snapshots_dir()).path
    }
}

impl StatCache {
    /// The sha256 and extended attributes of regular file `real`, known to the cache
    /// as `rel`; `md` is its `symlink_metadata`. The file is read (and `read_xattrs`
    /// called) only when its stat changed or is racy.
    pub fn file_entry(
        &mut self,
        rel: &str,
        real: &Path,
        md: &std::fs::Metadata,
        read_xattrs: impl FnOnce() -> std::io::Result<Xattrs>,
    ) -> std::io::Result<(Digest, Xattrs)> {
        let stat = Stat::of(md);
        let real_name;
        let rel = if self.by_real_path {
            real_name = real.to_string_lossy();
            &*real_name
        } else {
            rel
        };
        if let Some(e) = self.disk.entries.get_mut(rel) {
            if e.stat == stat && stat.mtime.0 < self.disk.written {
                let xattrs = match &e.xattrs {
                    Some(x) => x.clone(),
                    None => {
                        let x = read_xattrs()?;
                        e.xattrs = Some(x.clone());
                        self.dirty = true;
                        x
                    }
                };
                return Ok((e.sha256.clone(), xattrs));
            }
        }
        let mut f = std::fs::File::open(real)?;
        let mut h = Hasher::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let sha256 = h.finish();
        let xattrs = read_xattrs()?;
        self.hashed += 1;
        self.dirty = true;
        self.disk.entries.insert(
            rel.to_string(),
            Entry {
                stat,
                sha256: sha256.clone(),
                xattrs: Some(xattrs.clone()),
            },
        );
        Ok((sha256, xattrs))
    }

    /// Files read (not answered from the cache) since loading.
    pub fn hashed(&self) -> u64 {
        self.hashed
    }

    /// Persists the cache when something was hashed; otherwise writes nothing.
    pub fn save(&mut self, store: &Store) -> Result<()> {
        self.save_at(store, now_secs())
    }

    /// `save` with the write time given (seconds), for tests of the racy rule.
    pub fn save_at(&mut self, store: &Store, now: i64) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        self.disk.written = now;
        if let Some(dir) = self.path.parent() {
            fs_err::create_dir_all(dir)?;
        }
        let bytes =
            serde_json::to_vec(&self.disk).map_err(|e| StoreError::json("stat cache", e))?;
        store.replace_file(&self.path, &bytes)?;
        self.dirty = false;
        Ok(())
    }
}

/// The wall clock in Unix seconds (never SOURCE_DATE_EPOCH: this compares with file times).
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_mtime(p: &Path, secs: i64) {
        let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
        f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64))
            .unwrap();
    }

    #[test]
    fn unchanged_old_files_are_not_reread_and_racy_ones_are() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path().join("store")).unwrap();
        let ctx = tmp.path().join("ctx");
        std::fs::create_dir(&ctx).unwrap();
        let (old, racy) = (ctx.join("old"), ctx.join("racy"));
        std::fs::write(&old, "old").unwrap();
        std::fs::write(&racy, "racy").unwrap();
        let now = now_secs();
        set_mtime(&old, now - 100);
        set_mtime(&racy, now);

        let digest = |c: &mut StatCache, name: &str, p: &Path| {
            c.file_entry(name, p, &std::fs::symlink_metadata(p).unwrap(), || {
                Ok(Vec::new())
            })
            .map(|(d, _)| d)
            .unwrap()
        };
        let mut c = store.stat_cache(&ctx);
        assert_eq!(digest(&mut c, "old", &old), Digest::of(b"old"));
        assert_eq!(digest(&mut c, "racy", &racy), Digest::of(b"racy"));
        assert_eq!(c.hashed(), 2);
        c.save_at(&store, now).unwrap();

        // Same second as the write: `racy` is re-read, `old` is trusted.
        let mut c = store.stat_cache(&ctx);
        assert_eq!(digest(&mut c, "old", &old), Digest::of(b"old"));
        assert_eq!(c.hashed(), 0);
        assert_eq!(digest(&mut c, "racy", &racy), Digest::of(b"racy"));
        assert_eq!(c.hashed(), 1);
        c.save_at(&store, now + 1).unwrap();

        // Written a second later, the entry is no longer racy.
        let mut c = store.stat_cache(&ctx);
        digest(&mut c, "racy", &racy);
        assert_eq!(c.hashed(), 0);

        // A content change is seen through the stat change.
        std::fs::write(&old, "new!").unwrap();
        set_mtime(&old, now - 100);
        let mut c = store.stat_cache(&ctx);
        assert_eq!(digest(&mut c, "old", &old), Digest::of(b"new!"));
        assert_eq!(c.hashed(), 1);
        // Nothing hashed, nothing written.
        let mut c2 = store.stat_cache(&ctx);
        c2.save(&store).unwrap();
    }
}
