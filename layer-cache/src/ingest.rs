//! Streaming ingest: bytes go to a temp file under `ingest/`, are hashed on the way,
//! and become visible under `blobs/sha256/` only after fsync and a digest check.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use fs_err::os::unix::fs::OpenOptionsExt;
use rustix::fs::{flock, FlockOperation};

use crate::digest::{Digest, Hasher};
use crate::error::{AtPath, Result, StoreError};
use crate::store::Store;

/// A blob being written. Dropping it without `commit` removes the temp file.
pub struct BlobWriter {
    file: Option<BufWriter<File>>,
    temp: PathBuf,
    blobs_dir: PathBuf,
    hasher: Hasher,
    /// Bytes already handed to writeback (see `start_writeback`).
    flushed: u64,
}

/// Writeback is started every this many bytes, so a large blob's dirty pages do not
/// pile up for the commit's fsync to wait on (RocksDB's `bytes_per_sync`).
const WRITEBACK_EVERY: u64 = 8 << 20;

/// A committed blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub digest: Digest,
    pub size: u64,
}

impl BlobWriter {
    pub(crate) fn new(store: &Store) -> Result<BlobWriter> {
        let name = crate::store::unique_suffix();
        let temp = store.ingest_dir().join(name);
        let file = fs_err::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&temp)?
            .into_parts()
            .0;
        // The lock tells `prune` this ingest is alive; it dies with the process.
        flock(&file, FlockOperation::NonBlockingLockExclusive).at(&temp)?;
        Ok(BlobWriter {
            file: Some(BufWriter::with_capacity(1 << 20, file)),
            temp,
            blobs_dir: store.blobs_dir(),
            hasher: Hasher::new(),
            flushed: 0,
        })
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.hasher.len()
    }

    /// Verifies against `expected` (when given), then makes the blob visible.
    /// A blob that already exists is success: the temp file is dropped.
    pub fn commit(
        mut self,
        expected: Option<&Digest>,
        expected_size: Option<u64>,
    ) -> Result<Committed> {
        let Some(buf) = self.file.take() else {
            return Err(StoreError::invalid("ingest", "writer already finished"));
        };
        let file = buf.into_inner().at(&self.temp)?;
        let size = self.hasher.len();
        let digest = std::mem::take(&mut self.hasher).finish();
        if let Some(expected) = expected {
            if let Some(expected_size) = expected_size {
                if expected_size != size {
                    return Err(StoreError::SizeMismatch {
                        digest: expected.clone(),
                        expected: expected_size,
                        actual: size,
                    });
                }
            }
            if *expected != digest {
                return Err(StoreError::DigestMismatch {
                    expected: expected.clone(),
                    actual: digest,
                });
            }
        }
        let dest = self.blobs_dir.join(digest.hex());
        // Already stored (and synced when it was): this copy needs no fsync.
        if dest.exists() {
            return Ok(Committed { digest, size });
        }
        file.sync_all().at(&self.temp)?;
        fs_err::rename(&self.temp, &dest)?;
        sync_dir(&self.blobs_dir)?;
        drop(file);
        Ok(Committed { digest, size })
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("blob writer already finished"))?;
        let n = file.write(buf)?;
        self.hasher.update(&buf[..n]);
        let in_file = self.hasher.len() - file.buffer().len() as u64;
        if in_file - self.flushed >= WRITEBACK_EVERY {
            start_writeback(file.get_ref(), self.flushed, in_file - self.flushed);
            self.flushed = in_file;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // After a successful rename the temp path no longer exists; ignore that.
        let _ = std::fs::remove_file(&self.temp);
    }
}

/// Asks the kernel to start writing a range out without waiting for it; only a
/// speed-up for the later fsync, so failure is ignored.
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: a valid open descriptor; the call reads no memory of ours.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

pub(crate) fn sync_dir(dir: &std::path::Path) -> Result<()> {
    Ok(fs_err::File::open(dir)?.sync_all()?)
}
