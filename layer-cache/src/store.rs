//! The store: an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/`) plus
//! private areas for ingest, locks and, later, snapshots and cache records.
//!
//! Concurrency: `index.json` is rewritten under an exclusive flock on
//! `locks/index.lock` (read, modify, write temp, fsync, rename), so concurrent
//! processes never lose a tag. Work that adds blobs holds `locks/gc.lock` shared;
//! `prune` holds it exclusive, so it never sweeps a blob that is about to be tagged.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::digest::{Digest, VerifyingReader};
use crate::error::{AtPath, Result, StoreError};
use crate::ingest::{sync_dir, BlobWriter, Committed};
use crate::lock::FileLock;

pub const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
/// On a tag pulled from a multi-platform index: that index's digest (only the chosen
/// platform's manifest is stored; the index is a note of where it came from).
pub const UPSTREAM_INDEX_ANNOTATION: &str = "io.mybuild.upstream.index";
const EMPTY_INDEX: &[u8] = br#"{"manifests":[],"schemaVersion":2}"#;

#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    unpack_overrides: UnpackOverrides,
}

/// Replacements for the default layer unpack limits
/// ([`crate::unpack::UnpackLimits::for_layer`]), e.g. from the environment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnpackOverrides {
    pub max_bytes: Option<u64>,
    pub max_entries: Option<u64>,
}

impl Store {
    /// Opens the store at `root`, creating the layout when missing.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        let store = Store {
            root: root.into(),
            unpack_overrides: UnpackOverrides::default(),
        };
        for dir in [
            store.root.clone(),
            store.blobs_dir(),
            store.ingest_dir(),
            store.locks_dir(),
        ] {
            fs_err::create_dir_all(&dir)?;
        }
        store.create_if_missing(&store.root.join("oci-layout"), OCI_LAYOUT)?;
        store.create_if_missing(&store.index_path(), EMPTY_INDEX)?;
        Ok(store)
    }

    /// This store, unpacking layers with these limits instead of the defaults.
    pub fn with_unpack_overrides(mut self, o: UnpackOverrides) -> Store {
        self.unpack_overrides = o;
        self
    }

    /// The limits for unpacking a layer whose blob has `compressed` bytes.
    pub fn layer_unpack_limits(&self, compressed: u64) -> crate::unpack::UnpackLimits {
        let d = crate::unpack::UnpackLimits::for_layer(compressed);
        crate::unpack::UnpackLimits {
            max_bytes: self.unpack_overrides.max_bytes.unwrap_or(d.max_bytes),
            max_entries: self.unpack_overrides.max_entries.unwrap_or(d.max_entries),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }
    pub fn ingest_dir(&self) -> PathBuf {
        self.root.join("ingest")
    }
    pub(crate) fn locks_dir(&self) -> PathBuf {
        self.root.join("locks")
    }
    pub fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    /// Atomic create: link a complete temp file into place, never overwrite.
    fn create_if_missing(&self, path: &Path, content: &[u8]) -> Result<()> {
        if path.exists() {
            return Ok(());
        }
        let (temp, _held) = self.write_temp(content)?;
        match fs_err::hard_link(&temp, path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                return Err(e.into());
            }
        }
        let _ = std::fs::remove_file(&temp);
        sync_dir(&self.root)
    }

    /// A complete temp file, flock'ed while the returned handle lives so `prune` leaves it.
    fn write_temp(&self, content: &[u8]) -> Result<(PathBuf, File)> {
        let temp = self.ingest_dir().join(format!("meta-{}", unique_suffix()));
        let mut f = fs_err::File::create(&temp)?.into_parts().0;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive).at(&temp)?;
        f.write_all(content).and_then(|_| f.sync_all()).at(&temp)?;
        Ok((temp, f))
    }

    /// Replaces a small metadata file atomically (temp, fsync, rename, fsync dir).
    /// The temp file lives in `ingest/`, locked, so `prune` leaves it.
    pub(crate) fn replace_file(&self, path: &Path, content: &[u8]) -> Result<()> {
        self.replace_file_with(path, |f| f.write_all(content))
    }

    /// [`Store::replace_file`] with the content written by `fill`.
    pub(crate) fn replace_file_with(
        &self,
        path: &Path,
        fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
    ) -> Result<()> {
        crate::atomic::write_atomically_in(&self.ingest_dir(), path, fill)
    }

    /// Held by any operation that adds blobs it has not yet referenced.
    pub fn usage_lock(&self) -> Result<FileLock> {
        FileLock::shared(&self.locks_dir().join("gc.lock"))
    }

    pub(crate) fn gc_lock(&self) -> Result<FileLock> {
        FileLock::exclusive(&self.locks_dir().join("gc.lock"))
    }

    pub(crate) fn index_lock(&self) -> Result<FileLock> {
        FileLock::exclusive(&self.locks_dir().join("index.lock"))
    }

    pub fn ingest(&self) -> Result<BlobWriter> {
        BlobWriter::new(self)
    }

    /// Stores a small blob held in memory (manifests, configs).
    pub fn write_blob(&self, data: &[u8]) -> Result<Committed> {
        let mut w = self.ingest()?;
        w.write_all(data).at(self.ingest_dir())?;
        w.commit(None, None)
    }

    /// Size of a stored blob, or `None` when absent.
    pub fn blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        let path = self.blob_path(digest);
        match fs_err::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// A reader that fails at EOF unless the content matches `digest` (and `size`).
    pub fn open_blob(&self, digest: &Digest, size: Option<u64>) -> Result<VerifyingReader<File>> {
        let path = self.blob_path(digest);
        let file = match fs_err::File::open(&path) {
            Ok(f) => f.into_parts().0,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::BlobNotFound(digest.clone()))
            }
            Err(e) => return Err(e.into()),
        };
        Ok(VerifyingReader::new(file, digest.clone(), size))
    }

    /// Reads a small blob fully and verifies it. `limit` caps memory use.
    pub fn read_blob(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>> {
        let size = self
            .blob_size(digest)?
            .ok_or_else(|| StoreError::BlobNotFound(digest.clone()))?;
        if size > limit {
            return Err(StoreError::TooLarge {
                what: format!("blob {digest}"),
                size,
                limit,
            });
        }
        let mut out = Vec::with_capacity(size as usize);
        self.open_blob(digest, Some(size))?
            .read_to_end(&mut out)
            .map_err(|e| verify_error(digest, &self.blob_path(digest), e))?;
        Ok(out)
    }

    /// Every blob in the store, by digest. Files with names that are not digests are skipped.
    pub fn list_blobs(&self) -> Result<Vec<Digest>> {
        let dir = self.blobs_dir();
        let mut out = Vec::new();
        for entry in fs_err::read_dir(&dir)? {
            let entry = entry?;
            if let Some(d) = entry
                .file_name()
                .to_str()
                .and_then(|n| Digest::from_hex(n).ok())
            {
                out.push(d);
            }
        }
        out.sort();
        Ok(out)
    }
}

/// Turns the verifying reader's InvalidData into the typed mismatch error.
pub(crate) fn verify_error(digest: &Digest, path: &Path, e: std::io::Error) -> StoreError {
    if e.kind() == std::io::ErrorKind::InvalidData {
        StoreError::invalid(format!("blob {digest}"), e.to_string())
    } else {
        StoreError::io(path, e)
    }
}

/// `PID-NANOS-SEQ`, unique among this store's temporary names: the sequence number
/// keeps two threads of one process apart when the clock is coarse.
pub(crate) fn unique_suffix() -> String {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}-{nanos}-{}",
        std::process::id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}
