//! The store's error type: each variant names the path, digest or reference it concerns.

use std::path::{Path, PathBuf};

use crate::digest::{Digest, DigestError};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An error of an `fs_err` call, whose text names the operation and the path
    /// (`failed to open file `/x`: ...`). Only such errors convert with `?`.
    #[error(transparent)]
    Fs(#[from] std::io::Error),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Digest(#[from] DigestError),
    #[error("blob {expected} failed verification: content hashes to {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("blob {digest} has {actual} bytes, expected {expected}")]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("blob {0} is not in the store")]
    BlobNotFound(Digest),
    #[error("no such image: {0}")]
    ImageNotFound(String),
    #[error("ambiguous image id prefix {prefix:?}: it matches {}", candidates.join(", "))]
    AmbiguousId {
        prefix: String,
        candidates: Vec<String>,
    },
    #[error("invalid reference {name:?}: {reason}")]
    InvalidReference { name: String, reason: String },
    #[error("{what} is not valid JSON: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("{what}: uncompressed content hashes to {actual}, but the config says {expected}")]
    DiffIdMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{what} is {size} bytes, more than the {limit} allowed")]
    TooLarge { what: String, size: u64, limit: u64 },
    #[error("archive {}: {reason}", path.display())]
    Archive { path: PathBuf, reason: String },
    #[error(transparent)]
    Unpack(#[from] crate::unpack::UnpackError),
    #[error("tar entry {entry:?}: {reason}")]
    TarEntry { entry: String, reason: String },
}

/// Names the path (or the stream) an I/O error concerns: `call().at(&path)?` gives
/// `StoreError::Io`, shown as `path: error`. For calls `fs_err` does not wrap
/// (flock, fsync of a held file, codecs, copies), so there is one way to do it.
pub trait AtPath<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T>;
}

/// `std::io::Result`, `rustix::io::Result` and `BufWriter::into_inner`'s result alike.
impl<T, E: Into<std::io::Error>> AtPath<T> for std::result::Result<T, E> {
    fn at(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| StoreError::io(path, e.into()))
    }
}

impl StoreError {
    /// The error `AtPath::at` gives, for errors not held in a `Result`.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    pub fn invalid(what: impl Into<String>, reason: impl Into<String>) -> StoreError {
        StoreError::Invalid {
            what: what.into(),
            reason: reason.into(),
        }
    }

    pub fn json(what: impl Into<String>, source: serde_json::Error) -> StoreError {
        StoreError::Json {
            what: what.into(),
            source,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
