//! The step cache index: cache key → what the step produced, one small JSON file per
//! key under `cache-v1/records/<key hex>`, so a lookup is one open (no scan), writes
//! are atomic (temp file, fsync, rename: a kill leaves the old record or the new one),
//! and two processes recording the same key simply leave the later, equally valid one.
//! A record's file mtime is its last use; it is bumped on every hit.
//!
//! Records keep their blobs alive: `prune` counts their layers and manifests as roots.
//! `cache-v1/notes/` holds small documents the builder keeps to explain misses;
//! `cache-v1/stat/` the stat caches ([`crate::stat_cache`]); `cache-v1/urls/` what ADD
//! last downloaded from each URL ([`crate::url_cache`]).

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use oci_spec::image::Descriptor;
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Result, StoreError};
use crate::image::{History, ImageConfig};
use crate::store::Store;

/// What a cached step produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheRecord {
    pub key: Digest,
    /// The instruction as written, for `mybuild cache ls`.
    pub step: String,
    /// The layer the step added; `None` for steps that only change the config.
    #[serde(default)]
    pub layer: Option<Descriptor>,
    #[serde(default)]
    pub diff_id: Option<Digest>,
    /// The image config after the step. Its rootfs and history are the parent's plus
    /// this step's, which a restore rebuilds from the parent it actually has.
    #[serde(default)]
    pub config: Option<ImageConfig>,
    #[serde(default)]
    pub history: Option<History>,
    /// For a whole-build record: the finished image.
    #[serde(default)]
    pub manifest: Option<Descriptor>,
    /// Unix seconds when recorded.
    pub created: i64,
    /// Bytes the record keeps alive (its layer's blob).
    pub size: u64,
}

/// A record with its last use.
#[derive(Debug, Clone)]
pub struct CacheEntry {
    pub record: CacheRecord,
    pub last_used: SystemTime,
}

/// `prune --cache` limits; with neither set every record goes.
#[derive(Debug, Default, Clone)]
pub struct CachePruneOptions {
    /// Keep the most recently used records whose sizes sum to at most this.
    pub keep_storage: Option<u64>,
    /// Remove only records not used within this long.
    pub until: Option<Duration>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CachePruneStats {
    pub records_removed: u64,
    pub bytes_released: u64,
}

impl Store {
    pub fn cache_dir(&self) -> PathBuf {
        self.root().join("cache-v1")
    }

    fn record_path(&self, key: &Digest) -> PathBuf {
        self.cache_dir().join("records").join(key.hex())
    }

    fn note_path(&self, name: &Digest) -> PathBuf {
        self.cache_dir().join("notes").join(name.hex())
    }

    /// The record for `key`, marking it used. A record that cannot be parsed (written by
    /// a newer version, say) is a miss, not an error.
    pub fn cache_get(&self, key: &Digest) -> Result<Option<CacheRecord>> {
        let path = self.record_path(key);
        let bytes = match fs_err::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let Ok(rec) = serde_json::from_slice::<CacheRecord>(&bytes) else {
            tracing::warn!("ignoring unreadable cache record {}", path.display());
            return Ok(None);
        };
        if rec.key != *key {
            return Ok(None);
        }
        // Last use is the file's mtime: bumping it is cheaper than rewriting the record.
        if let Ok(f) = std::fs::OpenOptions::new().write(true).open(&path) {
            let _ = f.set_modified(SystemTime::now());
        }
        Ok(Some(rec))
    }

    pub fn cache_put(&self, rec: &CacheRecord) -> Result<()> {
        let path = self.record_path(&rec.key);
        ensure_parent(&path)?;
        let bytes = serde_json::to_vec(rec).map_err(|e| StoreError::json("cache record", e))?;
        self.replace_file(&path, &bytes)
    }

    /// Every record, least recently used first.
    pub fn cache_list(&self) -> Result<Vec<CacheEntry>> {
        let dir = self.cache_dir().join("records");
        let rd = match fs_err::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry?;
            let Some(key) = entry
                .file_name()
                .to_str()
                .and_then(|n| Digest::from_hex(n).ok())
            else {
                continue;
            };
            let path = entry.path();
            // A record removed by a concurrent prune is simply gone.
            let (Ok(bytes), Ok(md)) = (std::fs::read(&path), std::fs::metadata(&path)) else {
                continue;
            };
            match serde_json::from_slice::<CacheRecord>(&bytes) {
                Ok(record) if record.key == key => out.push(CacheEntry {
                    record,
                    last_used: md.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                }),
                _ => tracing::warn!("ignoring unreadable cache record {}", path.display()),
            }
        }
        out.sort_by(|a, b| {
            a.last_used
                .cmp(&b.last_used)
                .then_with(|| a.record.key.cmp(&b.record.key))
        });
        Ok(out)
    }

    /// Removes records least recently used first. Holds the GC lock so no build is
    /// between looking a record up and tagging what it restored.
    pub fn cache_prune(&self, opts: &CachePruneOptions) -> Result<CachePruneStats> {
        let _gc = self.gc_lock()?;
        let entries = self.cache_list()?;
        let now = SystemTime::now();
        let mut total: u64 = entries.iter().map(|e| e.record.size).sum();
        let mut stats = CachePruneStats::default();
        let everything = opts.keep_storage.is_none() && opts.until.is_none();
        for e in &entries {
            let old_enough = match opts.until {
                Some(d) => now
                    .duration_since(e.last_used)
                    .map(|age| age >= d)
                    .unwrap_or(false),
                None => true,
            };
            let over_budget = match opts.keep_storage {
                Some(k) => total > k,
                None => true,
            };
            if !(everything || (old_enough && over_budget)) {
                continue;
            }
            let path = self.record_path(&e.record.key);
            match fs_err::remove_file(&path) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(err) => return Err(err.into()),
            }
            total = total.saturating_sub(e.record.size);
            stats.records_removed += 1;
            stats.bytes_released += e.record.size;
        }
        if everything {
            // Explanation notes, stat caches and URL metadata only save work; they go
            // with the records.
            for sub in ["notes", "stat", "urls"] {
                let dir = self.cache_dir().join(sub);
                match fs_err::remove_dir_all(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(stats)
    }

    /// Blobs the cache keeps alive: record layers and manifests.
    pub fn cache_roots(&self) -> Result<Vec<Descriptor>> {
        let mut out = Vec::new();
        for e in self.cache_list()? {
            out.extend(e.record.layer);
            out.extend(e.record.manifest);
        }
        Ok(out)
    }

    /// A small document stored under a name the caller derives (e.g. a hash).
    pub fn cache_note(&self, name: &Digest) -> Result<Option<Vec<u8>>> {
        let path = self.note_path(name);
        match fs_err::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub fn set_cache_note(&self, name: &Digest, data: &[u8]) -> Result<()> {
        let path = self.note_path(name);
        ensure_parent(&path)?;
        self.replace_file(&path, data)
    }
}

fn ensure_parent(path: &std::path::Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        if !dir.is_dir() {
            fs_err::create_dir_all(dir)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(store: &Store, n: u8, size: u64) -> CacheRecord {
        let key = Digest::of(&[n]);
        let r = CacheRecord {
            key: key.clone(),
            step: format!("RUN step {n}"),
            layer: None,
            diff_id: None,
            config: None,
            history: None,
            manifest: None,
            created: 0,
            size,
        };
        store.cache_put(&r).unwrap();
        r
    }

    fn age(store: &Store, r: &CacheRecord, secs: u64) {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(store.record_path(&r.key))
            .unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(secs))
            .unwrap();
    }

    #[test]
    fn records_round_trip_and_prune_least_recently_used_first() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let a = rec(&store, 1, 100);
        let b = rec(&store, 2, 100);
        let c = rec(&store, 3, 100);
        age(&store, &a, 300);
        age(&store, &b, 200);
        age(&store, &c, 100);
        assert_eq!(store.cache_get(&b.key).unwrap().as_ref(), Some(&b));
        assert_eq!(store.cache_get(&Digest::of(b"none")).unwrap(), None);
        // The hit made b the most recently used, so a then c go first.
        let s = store
            .cache_prune(&CachePruneOptions {
                keep_storage: Some(150),
                until: None,
            })
            .unwrap();
        assert_eq!(s.records_removed, 2);
        let left: Vec<Digest> = store
            .cache_list()
            .unwrap()
            .into_iter()
            .map(|e| e.record.key)
            .collect();
        assert_eq!(left, vec![b.key.clone()]);
        let d = rec(&store, 4, 10);
        age(&store, &b, 3 * 86400);
        let s = store
            .cache_prune(&CachePruneOptions {
                keep_storage: None,
                until: Some(Duration::from_secs(86400)),
            })
            .unwrap();
        assert_eq!(s.records_removed, 1);
        assert!(store.cache_get(&d.key).unwrap().is_some());
        store.cache_prune(&CachePruneOptions::default()).unwrap();
        assert!(store.cache_list().unwrap().is_empty());
    }
}
