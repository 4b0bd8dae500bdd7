//! Snapshots: each layer unpacked once, in overlay form (whiteouts as 0/0 devices,
//! opaque dirs as xattrs), under `snapshots-v1/<diff_id hex>/`, and reused as an
//! overlay lowerdir by every build. A step's upperdir is already a snapshot of the
//! layer made from it, so it is moved in rather than unpacked again.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender};
use std::thread::JoinHandle;

use oci_spec::image::Descriptor;

use crate::digest::Digest;
use crate::error::{AtPath, Result, StoreError};
use crate::lock::FileLock;
use crate::store::Store;
use crate::unpack::{unpack_limited, UnpackLimits, UnpackOptions, WhiteoutMode};

impl Store {
    pub fn snapshots_dir(&self) -> PathBuf {
        self.root().join("snapshots-v1")
    }

    /// The committed snapshot of the layer with this diff_id, if present.
    pub fn snapshot_path(&self, diff_id: &Digest) -> PathBuf {
        self.snapshots_dir().join(diff_id.hex())
    }

    /// A fresh private directory on the store's filesystem, for upper/work dirs and
    /// unpacking; it is removed when the returned guard drops.
    pub fn scratch_dir(&self, prefix: &str) -> Result<ScratchDir> {
        let base = self.snapshots_dir().join("tmp");
        fs_err::create_dir_all(&base)?;
        let path = base.join(format!("{prefix}-{}", crate::store::unique_suffix()));
        fs_err::create_dir(&path)?;
        // Held while the directory is in use, so `prune` removes only leftovers of
        // processes that died (the kernel drops the lock with them).
        let lock = FileLock::exclusive(&base.join(format!("{}.lock", file_name(&path))))?;
        Ok(ScratchDir {
            path: Some(path),
            _lock: Some(lock),
        })
    }

    /// Returns the snapshot directory of a layer, unpacking the blob the first time.
    /// Concurrent callers for the same layer wait for one unpack.
    pub fn ensure_snapshot(&self, layer: &Descriptor, diff_id: &Digest) -> Result<PathBuf> {
        let target = self.snapshot_path(diff_id);
        if target.is_dir() {
            return Ok(target);
        }
        let locks = self.locks_dir();
        let _lock = FileLock::exclusive(&locks.join(format!("snapshot-{}.lock", diff_id.hex())))?;
        if target.is_dir() {
            return Ok(target);
        }
        let what = format!("layer {}", crate::image::descriptor_digest(layer)?);
        let limits = self.layer_unpack_limits(layer.size());
        let scratch = self.unpack_scratch(self.open_layer(layer)?, diff_id, &what, limits)?;
        self.commit_snapshot(scratch, diff_id)
    }

    /// Unpacks an uncompressed layer stream into a fresh scratch directory in overlay
    /// form, failing when the stream does not hash to `diff_id`.
    fn unpack_scratch(
        &self,
        layer: impl Read,
        diff_id: &Digest,
        what: &str,
        limits: UnpackLimits,
    ) -> Result<ScratchDir> {
        let scratch = self.scratch_dir("unpack")?;
        let mut reader = crate::digest::HashingReader::new(layer);
        let opts = UnpackOptions {
            whiteouts: WhiteoutMode::Overlay,
            preserve_owner: true,
            same_permissions: true,
        };
        unpack_limited(&mut reader, scratch.path(), &opts, limits)?;
        // Drain trailing padding so the whole stream is hashed and the blob verified.
        std::io::copy(&mut reader, &mut std::io::sink()).at(scratch.path())?;
        let (_, actual, _) = reader.finish();
        if actual != *diff_id {
            return Err(StoreError::DiffIdMismatch {
                what: what.to_string(),
                expected: diff_id.clone(),
                actual,
            });
        }
        Ok(scratch)
    }

    /// Starts unpacking the layer with this diff_id from its compressed bytes as they
    /// arrive (write them to the feeder), so a pulled base needs no second read of its
    /// blob. `None` when the snapshot exists or another unpack of it is under way.
    /// `compressed` is the blob's size (it sets the unpack limits); `what` names
    /// the layer in errors.
    pub fn snapshot_feeder(
        &self,
        diff_id: &Digest,
        compressed: u64,
        what: &str,
    ) -> Result<Option<SnapshotFeeder>> {
        if self.snapshot_path(diff_id).is_dir() {
            return Ok(None);
        }
        let lock_path = self
            .locks_dir()
            .join(format!("snapshot-{}.lock", diff_id.hex()));
        let Some(lock) = FileLock::try_exclusive(&lock_path)? else {
            return Ok(None);
        };
        if self.snapshot_path(diff_id).is_dir() {
            return Ok(None);
        }
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(FEED_CHUNKS);
        let store = self.clone();
        let id = diff_id.clone();
        let what = what.to_string();
        let limits = self.layer_unpack_limits(compressed);
        let worker = std::thread::spawn(move || {
            let input = std::io::BufReader::new(ChannelReader {
                rx,
                chunk: Vec::new(),
                pos: 0,
            });
            let layer = crate::unpack::decompress(input).at(&what)?;
            store.unpack_scratch(layer, &id, &what, limits)
        });
        Ok(Some(SnapshotFeeder {
            store: self.clone(),
            diff_id: diff_id.clone(),
            tx: Some(tx),
            worker: Some(worker),
            _lock: lock,
        }))
    }

    /// Moves a finished directory (a step's upperdir) in as the snapshot of `diff_id`.
    pub fn commit_snapshot(&self, mut dir: ScratchDir, diff_id: &Digest) -> Result<PathBuf> {
        // The snapshot outlives the scratch lock; only the path moves.
        let target = self.snapshot_path(diff_id);
        let Some(src) = dir.path.take() else {
            return Err(StoreError::invalid(
                "snapshot",
                "scratch directory already used",
            ));
        };
        match fs_err::rename(&src, &target) {
            Ok(()) => Ok(target),
            // Someone committed the same content first; theirs is as good as ours.
            Err(_) if target.is_dir() => {
                let _ = std::fs::remove_dir_all(&src);
                Ok(target)
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&src);
                Err(e.into())
            }
        }
    }
}

/// Chunks in flight between a download and its unpacking thread (each a network read,
/// typically a few KiB to 64 KiB), so a slow disk slows the download instead of
/// filling memory.
const FEED_CHUNKS: usize = 64;
/// Bytes per piece sent to the unpacking thread: at most 64 × 64 KiB (4 MiB) wait
/// per layer when the unpack is slower than the download.
const FEED_CHUNK_BYTES: usize = 64 << 10;

/// The writing end of an unpack under way: see [`Store::snapshot_feeder`].
pub struct SnapshotFeeder {
    store: Store,
    diff_id: Digest,
    tx: Option<SyncSender<Vec<u8>>>,
    worker: Option<JoinHandle<Result<ScratchDir>>>,
    _lock: FileLock,
}

impl SnapshotFeeder {
    /// Call once the whole blob has arrived and been verified: waits for the unpack
    /// and commits the snapshot.
    pub fn finish(mut self) -> Result<PathBuf> {
        self.tx = None;
        let scratch = self.join()?;
        self.store.commit_snapshot(scratch, &self.diff_id)
    }

    fn join(&mut self) -> Result<ScratchDir> {
        match self.worker.take().map(|w| w.join()) {
            Some(Ok(result)) => result,
            _ => Err(StoreError::invalid(
                format!("layer {}", self.diff_id),
                "the unpacking thread stopped",
            )),
        }
    }
}

impl Write for SnapshotFeeder {
    /// Never fails: if the unpack stopped (bad data), the bytes are dropped here and
    /// `finish` reports why; the download itself goes on.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // Pieces of at most FEED_CHUNK_BYTES: the channel then holds a bounded number
        // of bytes, whatever size of read the network hands over.
        for piece in buf.chunks(FEED_CHUNK_BYTES) {
            let Some(tx) = &self.tx else { break };
            if tx.send(piece.to_vec()).is_err() {
                self.tx = None;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for SnapshotFeeder {
    /// Not finished (the pull failed or was interrupted): the unpack sees a cut
    /// stream, fails, and its scratch directory is removed before we return.
    fn drop(&mut self) {
        self.tx = None;
        let _ = self.join();
    }
}

/// Reads the chunks a [`SnapshotFeeder`] sends; the end of the channel is EOF.
struct ChannelReader {
    rx: Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(c) => {
                    self.chunk = c;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A directory under the store that is deleted on drop unless committed.
#[derive(Debug)]
pub struct ScratchDir {
    path: Option<PathBuf>,
    _lock: Option<FileLock>,
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl ScratchDir {
    pub fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = std::fs::remove_dir_all(&p);
        }
        if let Some(lock) = self._lock.take() {
            let _ = std::fs::remove_file(lock.path());
        }
    }
}

impl Store {
    /// Removes scratch directories whose process is gone and snapshots no live image
    /// uses. Call with the GC lock held. Returns (snapshots, scratch dirs) removed.
    pub(crate) fn prune_snapshots(
        &self,
        live_diff_ids: &std::collections::BTreeSet<Digest>,
    ) -> Result<(u64, u64)> {
        let dir = self.snapshots_dir();
        let tmp = dir.join("tmp");
        let mut scratch = 0;
        if let Ok(rd) = std::fs::read_dir(&tmp) {
            for e in rd.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "lock") || !p.is_dir() {
                    continue;
                }
                let lock_path = tmp.join(format!("{}.lock", file_name(&p)));
                if let Some(_held) = FileLock::try_exclusive(&lock_path)? {
                    fs_err::remove_dir_all(&p)?;
                    let _ = std::fs::remove_file(&lock_path);
                    scratch += 1;
                }
            }
        }
        let mut snapshots = 0;
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Ok(d) = Digest::from_hex(&name) else {
                    continue;
                };
                if !live_diff_ids.contains(&d) {
                    let p = e.path();
                    fs_err::remove_dir_all(&p)?;
                    snapshots += 1;
                }
            }
        }
        Ok((snapshots, scratch))
    }
}
