//! The stat cache, like git's index: for one build context directory, each file's
//! (size, mtime, ctime, inode, mode) and the sha256 of its content, persisted under
//! `cache-v1/stat/<sha256 of the context path>`. A file whose stat is unchanged is
//! not read again. Racy-git rule: an entry whose mtime is not strictly older (in whole
//! seconds) than the time the cache was written may have changed again within the
//! same second without its stat changing, so it is re-hashed.
//!
//! On disk it is one compact index: fixed-size records sorted by name, then the
//! names and extended attributes. It is read whole into one buffer and searched in
//! place, so loading costs one read and no allocation per file, and a lookup is a
//! binary search. Files hashed since loading live in a small map until `save`
//! merges them in. A cache written as JSON by an older mybuild is read once and
//! rewritten in this form.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::digest::{Digest, Hasher};
use crate::error::Result;
use crate::store::Store;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
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

#[derive(Debug, Clone, Deserialize)]
struct Entry {
    stat: Stat,
    /// Kept as bytes: a cold context holds one entry per file until saved.
    #[serde(deserialize_with = "digest_bytes")]
    sha256: [u8; 32],
    /// Setting an xattr changes ctime, so an unchanged stat means unchanged xattrs.
    /// `None`: not read yet (caches written before they were kept).
    #[serde(default)]
    xattrs: Option<Xattrs>,
}

/// The JSON form older versions wrote.
#[derive(Deserialize)]
struct JsonCache {
    written: i64,
    entries: HashMap<String, Entry>,
}

const MAGIC: &[u8; 16] = b"mybuild-stat-v2\n";
/// Header: magic, written (i64), record count (u64).
const HEADER: usize = 32;
/// name offset u64, name length u32, xattrs offset u64, xattrs length u32
/// (`u32::MAX`: not read yet), size u64, mtime s/ns i64, ctime s/ns i64, ino u64,
/// mode u32, sha256 32 bytes: 108 bytes, padded to 112.
const RECORD: usize = 112;
const NOT_READ: u32 = u32::MAX;

/// The saved index, searched in place.
#[derive(Debug, Default)]
struct Index {
    bytes: Vec<u8>,
    count: usize,
    written: i64,
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .unwrap_or(0)
}

impl Index {
    /// The index in `bytes`, or `None` when they are not one (or are damaged: a
    /// cache that cannot be read only costs re-hashing).
    fn parse(bytes: Vec<u8>) -> Option<Index> {
        if bytes.len() < HEADER || &bytes[..16] != MAGIC {
            return None;
        }
        let written = le_u64(&bytes, 16) as i64;
        let count = usize::try_from(le_u64(&bytes, 24)).ok()?;
        let table_end = count.checked_mul(RECORD)?.checked_add(HEADER)?;
        if table_end > bytes.len() {
            return None;
        }
        let index = Index {
            bytes,
            count,
            written,
        };
        // Every record's name and xattrs lie inside the file, names strictly sorted.
        let mut last: Option<&[u8]> = None;
        for i in 0..count {
            let name = index.name(i)?;
            if last.is_some_and(|l| l >= name) {
                return None;
            }
            last = Some(name);
            let (off, len) = index.xattr_span(i);
            if len != NOT_READ {
                index.bytes.get(off..off.checked_add(len as usize)?)?;
            }
        }
        Some(index)
    }

    fn record(&self, i: usize) -> &[u8] {
        let at = HEADER + i * RECORD;
        &self.bytes[at..at + RECORD]
    }

    fn name(&self, i: usize) -> Option<&[u8]> {
        let r = self.record(i);
        let off = usize::try_from(le_u64(r, 0)).ok()?;
        let len = le_u32(r, 8) as usize;
        self.bytes.get(off..off.checked_add(len)?)
    }

    fn xattr_span(&self, i: usize) -> (usize, u32) {
        let r = self.record(i);
        (
            usize::try_from(le_u64(r, 12)).unwrap_or(usize::MAX),
            le_u32(r, 20),
        )
    }

    fn find(&self, name: &[u8]) -> Option<usize> {
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.name(mid)?.cmp(name) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    /// [`Index::find`], trying record `hint` first: a walk asks for names mostly in
    /// the order they are saved, so most lookups cost one comparison.
    fn find_from(&self, name: &[u8], hint: usize) -> Option<usize> {
        if hint < self.count && self.name(hint) == Some(name) {
            return Some(hint);
        }
        self.find(name)
    }

    fn stat(&self, i: usize) -> Stat {
        let r = self.record(i);
        Stat {
            size: le_u64(r, 24),
            mtime: (le_u64(r, 32) as i64, le_u64(r, 40) as i64),
            ctime: (le_u64(r, 48) as i64, le_u64(r, 56) as i64),
            ino: le_u64(r, 64),
            mode: le_u32(r, 72),
        }
    }

    fn sha256(&self, i: usize) -> [u8; 32] {
        let mut sha = [0u8; 32];
        sha.copy_from_slice(&self.record(i)[76..108]);
        sha
    }

    fn xattrs(&self, i: usize) -> Option<Xattrs> {
        let (off, len) = self.xattr_span(i);
        if len == NOT_READ {
            return None;
        }
        let mut b = self.bytes.get(off..off + len as usize)?;
        let mut out = Vec::new();
        let take = |b: &mut &[u8]| -> Option<Vec<u8>> {
            let n = le_u32(b, 0) as usize;
            let v = b.get(4..4usize.checked_add(n)?)?.to_vec();
            *b = &b[4 + n..];
            Some(v)
        };
        while !b.is_empty() {
            let name = take(&mut b)?;
            let value = take(&mut b)?;
            out.push((name, value));
        }
        Some(out)
    }

    fn entry(&self, i: usize) -> Entry {
        Entry {
            stat: self.stat(i),
            sha256: self.sha256(i),
            xattrs: self.xattrs(i),
        }
    }
}

/// A `sha256:` digest as the JSON form wrote it, as bytes.
fn digest_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<[u8; 32], D::Error> {
    let digest = Digest::deserialize(d)?;
    let mut sha = [0u8; 32];
    // A Digest is always 64 hex digits.
    hex::decode_to_slice(digest.hex(), &mut sha).map_err(serde::de::Error::custom)?;
    Ok(sha)
}

/// Where an entry written by [`encode`] comes from.
enum Src<'a> {
    /// A record of the loaded index, copied as it is.
    Saved(usize),
    Fresh(&'a Entry),
}

/// Writes `entries` (sorted by name) as an index into `out`; `Saved` records are
/// read from `saved` and copied without being decoded. Streamed: a context of
/// many files is never encoded whole in memory beside its entries.
fn encode(
    written: i64,
    saved: &Index,
    entries: &[(&[u8], Src)],
    out: &mut impl std::io::Write,
) -> std::io::Result<()> {
    // Xattr lengths first, so every record's offsets are known before it is written.
    let x_len = |src: &Src| -> u32 {
        match src {
            Src::Saved(i) => saved.xattr_span(*i).1,
            Src::Fresh(Entry {
                xattrs: Some(list), ..
            }) => list
                .iter()
                .map(|(k, v)| 8 + k.len() + v.len())
                .sum::<usize>() as u32,
            Src::Fresh(_) => NOT_READ,
        }
    };
    let names_len: usize = entries.iter().map(|(n, _)| n.len()).sum();
    let names_at = HEADER + entries.len() * RECORD;
    let xattrs_at = names_at + names_len;
    out.write_all(MAGIC)?;
    out.write_all(&written.to_le_bytes())?;
    out.write_all(&(entries.len() as u64).to_le_bytes())?;
    let (mut name_at, mut x_at) = (names_at, xattrs_at);
    let mut record = [0u8; RECORD];
    for (name, src) in entries {
        record.fill(0);
        record[0..8].copy_from_slice(&(name_at as u64).to_le_bytes());
        record[8..12].copy_from_slice(&(name.len() as u32).to_le_bytes());
        let len = x_len(src);
        let at = if len == NOT_READ { xattrs_at } else { x_at };
        record[12..20].copy_from_slice(&(at as u64).to_le_bytes());
        record[20..24].copy_from_slice(&len.to_le_bytes());
        match src {
            // Stat and sha256, bytes 24..108 of the record.
            Src::Saved(i) => record[24..108].copy_from_slice(&saved.record(*i)[24..108]),
            Src::Fresh(e) => {
                let s = &e.stat;
                let fields = [s.size, s.mtime.0 as u64, s.mtime.1 as u64, s.ctime.0 as u64];
                for (k, v) in fields.into_iter().enumerate() {
                    record[24 + 8 * k..32 + 8 * k].copy_from_slice(&v.to_le_bytes());
                }
                record[56..64].copy_from_slice(&(s.ctime.1 as u64).to_le_bytes());
                record[64..72].copy_from_slice(&s.ino.to_le_bytes());
                record[72..76].copy_from_slice(&s.mode.to_le_bytes());
                record[76..108].copy_from_slice(&e.sha256);
            }
        }
        out.write_all(&record)?;
        name_at += name.len();
        if len != NOT_READ {
            x_at += len as usize;
        }
    }
    for (name, _) in entries {
        out.write_all(name)?;
    }
    for (_, src) in entries {
        match src {
            Src::Saved(i) => match saved.xattr_span(*i) {
                (_, NOT_READ) => {}
                // Checked to lie inside the file when the index was parsed.
                (off, len) => out.write_all(&saved.bytes[off..off + len as usize])?,
            },
            Src::Fresh(Entry {
                xattrs: Some(list), ..
            }) => {
                for (k, v) in list {
                    out.write_all(&(k.len() as u32).to_le_bytes())?;
                    out.write_all(k)?;
                    out.write_all(&(v.len() as u32).to_le_bytes())?;
                    out.write_all(v)?;
                }
            }
            Src::Fresh(_) => {}
        }
    }
    Ok(())
}

/// One context's stat cache.
#[derive(Debug)]
pub struct StatCache {
    path: PathBuf,
    saved: Index,
    /// Entries hashed (or completed) since loading, by name; they win over `saved`.
    fresh: HashMap<Vec<u8>, Entry>,
    hashed: u64,
    /// The saved record after the last one found, where the next lookup starts.
    hint: usize,
    /// Entries named by real path (the snapshot cache) rather than the caller's name.
    by_real_path: bool,
}

impl Store {
    /// The stat cache of `context` (canonical path); empty when none was saved yet.
    pub fn stat_cache(&self, context: &Path) -> StatCache {
        let name = Digest::of(context.as_os_str().as_bytes());
        let path = self.cache_dir().join("stat").join(name.hex());
        let mut cache = StatCache {
            path,
            saved: Index::default(),
            fresh: HashMap::new(),
            hashed: 0,
            hint: 0,
            by_real_path: false,
        };
        // A missing or unreadable cache only costs re-hashing.
        let Ok(bytes) = std::fs::read(&cache.path) else {
            return cache;
        };
        if bytes.starts_with(MAGIC) {
            cache.saved = Index::parse(bytes).unwrap_or_default();
        } else if let Ok(old) = serde_json::from_slice::<JsonCache>(&bytes) {
            // Rewritten in the new form at the next save.
            cache.saved.written = old.written;
            cache.fresh = old
                .entries
                .into_iter()
                .map(|(k, v)| (k.into_bytes(), v))
                .collect();
        }
        cache
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
        let name = Digest::of(self.snapshots_dir().as_os_str().as_bytes());
        self.cache_dir().join("stat").join(name.hex())
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
        let (sha, xattrs) = self.file_sha256(rel, real, md, read_xattrs)?;
        Ok((Digest::from_sha256_bytes(&sha), xattrs))
    }

    /// [`StatCache::file_entry`] with the sha256 as bytes: a context of many files
    /// makes no `Digest` for each.
    pub fn file_sha256(
        &mut self,
        rel: &str,
        real: &Path,
        md: &std::fs::Metadata,
        read_xattrs: impl FnOnce() -> std::io::Result<Xattrs>,
    ) -> std::io::Result<([u8; 32], Xattrs)> {
        let stat = Stat::of(md);
        let name: &[u8] = if self.by_real_path {
            real.as_os_str().as_bytes()
        } else {
            rel.as_bytes()
        };
        let trusted = |e: &Stat| *e == stat && stat.mtime.0 < self.saved.written;
        if let Some(e) = self.fresh.get_mut(name) {
            if trusted(&e.stat) {
                let xattrs = match &e.xattrs {
                    Some(x) => x.clone(),
                    None => {
                        let x = read_xattrs()?;
                        e.xattrs = Some(x.clone());
                        x
                    }
                };
                return Ok((e.sha256, xattrs));
            }
        } else if let Some(i) = self.saved.find_from(name, self.hint) {
            self.hint = i + 1;
            if trusted(&self.saved.stat(i)) {
                let sha256 = self.saved.sha256(i);
                let xattrs = match self.saved.xattrs(i) {
                    Some(x) => x,
                    None => {
                        let x = read_xattrs()?;
                        let mut e = self.saved.entry(i);
                        e.xattrs = Some(x.clone());
                        self.fresh.insert(name.to_vec(), e);
                        x
                    }
                };
                return Ok((sha256, xattrs));
            }
        }
        let name = name.to_vec();
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
        let sha256 = h.finish_bytes();
        let xattrs = read_xattrs()?;
        self.hashed += 1;
        self.fresh.insert(
            name,
            Entry {
                stat,
                sha256,
                xattrs: Some(xattrs.clone()),
            },
        );
        Ok((sha256, xattrs))
    }

    /// Files read (not answered from the cache) since loading.
    pub fn hashed(&self) -> u64 {
        self.hashed
    }

    /// Persists the cache when something changed; otherwise writes nothing.
    pub fn save(&mut self, store: &Store) -> Result<()> {
        self.save_at(store, now_secs())
    }

    /// `save` with the write time given (seconds), for tests of the racy rule.
    pub fn save_at(&mut self, store: &Store, now: i64) -> Result<()> {
        if self.fresh.is_empty() {
            return Ok(());
        }
        // The saved records not replaced and the fresh entries, both sorted, merged
        // by name.
        let mut fresh: Vec<(&[u8], &Entry)> =
            self.fresh.iter().map(|(n, e)| (n.as_slice(), e)).collect();
        fresh.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut list: Vec<(&[u8], Src)> = Vec::with_capacity(self.saved.count + fresh.len());
        let mut fresh = fresh.into_iter().peekable();
        for i in 0..self.saved.count {
            let Some(name) = self.saved.name(i) else {
                continue;
            };
            while let Some((n, e)) = fresh.next_if(|(n, _)| *n < name) {
                list.push((n, Src::Fresh(e)));
            }
            if let Some((n, e)) = fresh.next_if(|(n, _)| *n == name) {
                list.push((n, Src::Fresh(e)));
            } else {
                list.push((name, Src::Saved(i)));
            }
        }
        list.extend(fresh.map(|(n, e)| (n, Src::Fresh(e))));
        if let Some(dir) = self.path.parent() {
            fs_err::create_dir_all(dir)?;
        }
        store.replace_file_with(&self.path, |f| {
            let mut w = std::io::BufWriter::with_capacity(256 * 1024, f);
            encode(now, &self.saved, &list, &mut w)?;
            std::io::Write::flush(&mut w)
        })?;
        drop(list);
        // Read back once the entries are gone, so both are never held at once.
        self.fresh = HashMap::new();
        self.saved = std::fs::read(&self.path)
            .ok()
            .and_then(Index::parse)
            .unwrap_or_default();
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

    #[test]
    fn the_index_keeps_entries_and_xattrs_and_reads_the_old_json_once() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path().join("store")).unwrap();
        let ctx = tmp.path().join("ctx");
        std::fs::create_dir(&ctx).unwrap();
        let now = now_secs();
        let names = ["b", "a", "dir/c", "é"];
        for n in names {
            let p = ctx.join(n);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, n).unwrap();
            set_mtime(&p, now - 100);
        }
        let x: Xattrs = vec![(b"user.k".to_vec(), b"v\0w".to_vec())];
        let entry = |c: &mut StatCache, n: &str, calls: &mut u32| {
            let p = ctx.join(n);
            c.file_entry(n, &p, &std::fs::symlink_metadata(&p).unwrap(), || {
                *calls += 1;
                Ok(if n == "a" { x.clone() } else { Vec::new() })
            })
            .unwrap()
        };
        let mut calls = 0;
        let mut c = store.stat_cache(&ctx);
        for n in names {
            entry(&mut c, n, &mut calls);
        }
        c.save_at(&store, now).unwrap();
        let mut c = store.stat_cache(&ctx);
        for n in names {
            let (d, xa) = entry(&mut c, n, &mut calls);
            assert_eq!(d, Digest::of(n.as_bytes()));
            assert_eq!(xa, if n == "a" { x.clone() } else { Vec::new() });
        }
        assert_eq!((c.hashed(), calls), (0, 4));
        // One changed file: the rewrite keeps the others.
        std::fs::write(ctx.join("b"), "bb").unwrap();
        set_mtime(&ctx.join("b"), now - 50);
        assert_eq!(entry(&mut c, "b", &mut calls).0, Digest::of(b"bb"));
        c.save_at(&store, now).unwrap();
        let mut c = store.stat_cache(&ctx);
        let before = calls;
        for n in names {
            let (_, xa) = entry(&mut c, n, &mut calls);
            assert_eq!(xa, if n == "a" { x.clone() } else { Vec::new() });
        }
        assert_eq!((c.hashed(), calls), (0, before));

        // A damaged file is an empty cache, never an error.
        let path = c.path.clone();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 3);
        std::fs::write(&path, &bytes).unwrap();
        let mut c = store.stat_cache(&ctx);
        entry(&mut c, "a", &mut calls);
        assert_eq!(c.hashed(), 1);

        // The JSON an older version wrote is trusted, and rewritten as an index.
        let json = serde_json::json!({
            "written": now,
            "entries": {"a": {
                "stat": serde_json::to_value(Stat::of(&std::fs::symlink_metadata(ctx.join("a")).unwrap())).unwrap(),
                "sha256": Digest::of(b"a").to_string(),
            }},
        });
        std::fs::write(&path, json.to_string()).unwrap();
        let mut c = store.stat_cache(&ctx);
        let before = calls;
        assert_eq!(entry(&mut c, "a", &mut calls).0, Digest::of(b"a"));
        assert_eq!((c.hashed(), calls - before), (0, 1));
        c.save_at(&store, now).unwrap();
        assert!(std::fs::read(&path).unwrap().starts_with(MAGIC));
    }
}
