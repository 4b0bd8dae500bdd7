//! An OCI image layout directory other than the store (a `--cache-to type=local`
//! directory, a `--build-context oci-layout://` source), written and read one way.
//!
//! Writing holds an exclusive flock in the directory, adds each blob through a temp
//! file that is verified against its digest before the rename, and writes
//! `index.json` last by rename, so an interrupted writer leaves the previous index
//! and every blob it names readable. Reading verifies every blob it returns.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::atomic::write_atomically;
use crate::digest::{Digest, Hasher, VerifyingReader};
use crate::error::StoreError;
use crate::lock::FileLock;
use crate::store::OCI_LAYOUT;

/// The writers' lock, inside the layout (the name dates from the first writer, the
/// cache exporter; kept so that versions exclude each other).
const LOCK_NAME: &str = ".mybuild-cache.lock";

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("blob {digest} is {size} bytes, more than {limit}")]
    TooLarge {
        digest: Digest,
        size: u64,
        limit: u64,
    },
    #[error("blob {digest} is corrupt: its content has digest {actual} ({size} bytes)")]
    Corrupt {
        digest: Digest,
        actual: Digest,
        size: u64,
    },
}

pub type Result<T, E = LayoutError> = std::result::Result<T, E>;

/// A layout directory, opened for reading or (holding its lock) for writing.
#[derive(Debug)]
pub struct LayoutDir {
    dir: PathBuf,
    /// Blobs added through this handle: what its index may name.
    added: BTreeSet<Digest>,
    _lock: Option<FileLock>,
}

impl LayoutDir {
    /// For reading; nothing is created.
    pub fn open(dir: impl Into<PathBuf>) -> LayoutDir {
        LayoutDir {
            dir: dir.into(),
            added: BTreeSet::new(),
            _lock: None,
        }
    }

    /// For writing: creates the directory and `blobs/sha256` when missing and holds
    /// the writers' lock until dropped (two writers would remove each other's blobs).
    pub fn create(dir: impl Into<PathBuf>) -> Result<LayoutDir> {
        let dir = dir.into();
        let blobs = blobs_dir(&dir);
        fs_err::create_dir_all(&blobs).map_err(StoreError::Fs)?;
        let lock = FileLock::exclusive(&dir.join(LOCK_NAME))?;
        Ok(LayoutDir {
            dir,
            added: BTreeSet::new(),
            _lock: Some(lock),
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn index_path(&self) -> PathBuf {
        self.dir.join("index.json")
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        blobs_dir(&self.dir).join(digest.hex())
    }

    /// Whether the layout holds `digest` with content that matches it.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        let Ok(mut f) = File::open(self.blob_path(digest)) else {
            return false;
        };
        let mut h = Hasher::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => h.update(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        h.finish() == *digest
    }

    /// Adds the blob `digest` read from `from`, unless the layout already holds it
    /// intact. Content that does not hash to `digest` (or is not `size` bytes) is
    /// refused and never becomes a blob.
    pub fn add_blob(&mut self, digest: &Digest, size: Option<u64>, from: impl Read) -> Result<()> {
        self.added.insert(digest.clone());
        if self.has_blob(digest) {
            return Ok(());
        }
        let dest = self.blob_path(digest);
        let mut r = VerifyingReader::new(from, digest.clone(), size);
        write_atomically(&dest, |f| io::copy(&mut r, f).map(drop))?;
        Ok(())
    }

    /// Adds a blob held in memory; returns its digest.
    pub fn add_bytes(&mut self, data: &[u8]) -> Result<Digest> {
        let d = Digest::of(data);
        self.added.insert(d.clone());
        if !self.has_blob(&d) {
            write_atomically(&self.blob_path(&d), |f| f.write_all(data))?;
        }
        Ok(d)
    }

    /// Makes `index` the layout's index (writing `oci-layout` first when missing).
    /// Call it after every blob it names is added.
    pub fn write_index(&self, index: &[u8]) -> Result<()> {
        let layout = self.dir.join("oci-layout");
        if !layout.is_file() {
            write_atomically(&layout, |f| f.write_all(OCI_LAYOUT))?;
        }
        write_atomically(&self.index_path(), |f| f.write_all(index))?;
        Ok(())
    }

    /// Removes every blob not added through this handle (those only an earlier index
    /// used). Best effort: a blob that cannot be removed only takes space.
    pub fn remove_other_blobs(&self) {
        let Ok(rd) = std::fs::read_dir(blobs_dir(&self.dir)) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Ok(d) = Digest::from_hex(&name) {
                if !self.added.contains(&d) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }

    /// `index.json`'s bytes, `None` when there is none; more than `limit` bytes is
    /// refused.
    pub fn read_index(&self, limit: u64) -> Result<Option<Vec<u8>>> {
        match read_file(&self.index_path(), limit) {
            Ok(b) => Ok(Some(b)),
            Err(StoreError::Fs(e)) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// A blob the size of its descriptor, at most `limit` bytes, verified.
    pub fn read_blob(&self, digest: &Digest, size: u64, limit: u64) -> Result<Vec<u8>> {
        if size > limit {
            return Err(LayoutError::TooLarge {
                digest: digest.clone(),
                size,
                limit,
            });
        }
        let path = self.blob_path(digest);
        let mut bytes = Vec::new();
        fs_err::File::open(&path)
            .and_then(|f| f.take(limit + 1).read_to_end(&mut bytes))
            .map_err(StoreError::Fs)?;
        let actual = Digest::of(&bytes);
        if actual != *digest || bytes.len() as u64 != size {
            return Err(LayoutError::Corrupt {
                digest: digest.clone(),
                actual,
                size: bytes.len() as u64,
            });
        }
        Ok(bytes)
    }

    /// A reader of the blob that fails at EOF unless its content matches.
    pub fn open_blob(&self, digest: &Digest, size: Option<u64>) -> Result<VerifyingReader<File>> {
        let path = self.blob_path(digest);
        let f = fs_err::File::open(&path)
            .map_err(StoreError::Fs)?
            .into_parts()
            .0;
        Ok(VerifyingReader::new(f, digest.clone(), size))
    }
}

fn blobs_dir(dir: &Path) -> PathBuf {
    dir.join("blobs").join("sha256")
}

/// A whole file of at most `limit` bytes.
pub(crate) fn read_file(path: &Path, limit: u64) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::new();
    fs_err::File::open(path)?
        .take(limit + 1)
        .read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(StoreError::TooLarge {
            what: path.display().to_string(),
            size: out.len() as u64,
            limit,
        });
    }
    Ok(out)
}
