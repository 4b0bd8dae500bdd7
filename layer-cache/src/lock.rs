//! Advisory file locks (flock) shared between mybuild processes.

use std::fs::File;
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

use crate::error::{AtPath, StoreError};

/// Held until dropped; the kernel releases it if the process dies.
#[derive(Debug)]
pub struct FileLock {
    _file: File,
    path: PathBuf,
}

impl FileLock {
    pub fn exclusive(path: &Path) -> Result<FileLock, StoreError> {
        Self::take(path, FlockOperation::LockExclusive)
    }

    pub fn shared(path: &Path) -> Result<FileLock, StoreError> {
        Self::take(path, FlockOperation::LockShared)
    }

    /// Exclusive without waiting: `None` when another process holds it.
    pub fn try_exclusive(path: &Path) -> Result<Option<FileLock>, StoreError> {
        let file = open(path)?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(FileLock {
                _file: file,
                path: path.to_path_buf(),
            })),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(e).at(path),
        }
    }

    /// Like `try_exclusive` on a file that must already exist; `None` if it vanished.
    pub fn try_exclusive_existing(path: &Path) -> Result<Option<FileLock>, StoreError> {
        let file = match fs_err::File::open(path) {
            Ok(f) => f.into_parts().0,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(FileLock {
                _file: file,
                path: path.to_path_buf(),
            })),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(e).at(path),
        }
    }

    fn take(path: &Path, op: FlockOperation) -> Result<FileLock, StoreError> {
        let file = open(path)?;
        loop {
            match flock(&file, op) {
                Ok(()) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e).at(path),
            }
        }
        Ok(FileLock {
            _file: file,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn open(path: &Path) -> Result<File, StoreError> {
    let mut opts = fs_err::OpenOptions::new();
    opts.create(true).truncate(false).read(true).write(true);
    Ok(opts.open(path)?.into_parts().0)
}
