//! Image transfer: pull, push and copy as orchestration over two small traits,
//! in the shape of go-containerregistry's `remote` package.
//!
//! An [`ImageSource`] hands out manifests and blob streams; an [`ImageSink`]
//! takes blobs (verified against their digest before they count) and manifests.
//! A registry is both ([`Registry`]); the store implements them in `mybuild-ops`, so
//! this crate still knows nothing of the store. Each blob of an image moves in
//! its own task, bounded by a concurrency limit, and every step is told to a
//! [`TransferReporter`] as a typed [`TransferEvent`]; rendering is the caller's.

mod ops;
mod registry;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::io::AsyncRead;

use oci_vocab::Digest;

use crate::{Descriptor, Manifest, Reference};

pub use ops::{copy, pull, push, push_tree, transfer_blob, Pulled, Transfer};
pub use registry::Registry;

/// An error of a source or sink outside this crate (the store's, say), kept whole.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub type Result<T, E = TransferError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Registry(#[from] crate::Error),
    /// A source or sink failed; its own error says where and why.
    #[error(transparent)]
    Endpoint(BoxError),
    #[error("{reference}: no image for platform {want} (it has {have})")]
    NoPlatform {
        reference: String,
        want: String,
        have: String,
    },
    #[error("{reference}: nested indexes are not supported")]
    NestedIndex { reference: String },
    #[error("{reference}: expected an image manifest")]
    NotAnImage { reference: String },
    #[error("blob {digest}: its transfer task ended abnormally: {reason}")]
    Task { digest: Digest, reason: String },
}

impl TransferError {
    /// Wraps a source's or sink's own error.
    pub fn endpoint(e: impl Into<BoxError>) -> TransferError {
        TransferError::Endpoint(e.into())
    }
}

/// Bytes of one blob transferred so far (an absolute position: a retry that
/// starts again from an offset moves it back).
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// A reader of a blob opened at an offset.
pub type BlobReader = Box<dyn AsyncRead + Send + Unpin>;

/// Where an image is read from.
pub trait ImageSource: Send + Sync {
    /// The manifest `from` names (`child: None`), or one of its index's entries.
    fn manifest<'a>(
        &'a self,
        from: &'a Reference,
        child: Option<&'a Descriptor>,
    ) -> BoxFuture<'a, Result<Manifest>>;

    /// Streams a blob into `out`, verified against its descriptor's digest and
    /// size; `progress` is told the bytes written so far.
    fn read_blob<'a>(
        &'a self,
        from: &'a Reference,
        blob: &'a Descriptor,
        out: &'a mut (dyn std::io::Write + Send),
        progress: &'a (dyn Fn(u64) + Sync),
    ) -> BoxFuture<'a, Result<()>>;

    /// [`ImageSource::read_blob`] for a writer that checks the digest itself
    /// (see [`ImageSink::verifies_digests`]): the size is still checked, but a
    /// source may skip hashing. By default the same as `read_blob`.
    fn read_blob_unhashed<'a>(
        &'a self,
        from: &'a Reference,
        blob: &'a Descriptor,
        out: &'a mut (dyn std::io::Write + Send),
        progress: &'a (dyn Fn(u64) + Sync),
    ) -> BoxFuture<'a, Result<()>> {
        self.read_blob(from, blob, out, progress)
    }

    /// A reader of a blob from `offset` on, for uploads (which verify nothing
    /// themselves: the receiving registry checks the digest). May be called
    /// again after a failure.
    fn open_blob<'a>(
        &'a self,
        from: &'a Reference,
        blob: &'a Descriptor,
        offset: u64,
    ) -> BoxFuture<'a, std::io::Result<BlobReader>>;

    /// Fails early when the source cannot serve `blob` (a source that cannot
    /// tell without a request says yes).
    fn check_blob(&self, _from: &Reference, _blob: &Descriptor) -> Result<()> {
        Ok(())
    }

    /// Repositories of `registry` known to hold `digest`, so a push there can
    /// mount the blob instead of uploading it.
    fn mount_candidates(&self, from: &Reference, digest: &Digest, registry: &str) -> Vec<String>;

    /// `digests` now also live in `to` (a hint for later mounts).
    fn record_copied(&self, _to: &Reference, _digests: &[Digest]) {}
}

/// Where a blob write ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobOutcome {
    /// The sink already had it.
    Exists,
    /// Mounted from another repository of the same registry.
    Mounted { from: String },
    /// Written; `chunks` is how many requests carried it (1 for a local sink);
    /// `unpacked` when the sink also unpacked the layer while it streamed.
    Written { chunks: u32, unpacked: bool },
}

/// One blob to write into a sink.
pub struct BlobWrite<'a> {
    pub blob: &'a Descriptor,
    pub source: &'a dyn ImageSource,
    pub from: &'a Reference,
    /// Repositories to try a cross-repository mount from.
    pub mount_from: &'a [String],
    /// The layer's diff_id when the sink may unpack it while it streams.
    pub unpack_as: Option<&'a Digest>,
    pub progress: Progress,
    /// The sink said it checks digests ([`ImageSink::verifies_digests`]), so
    /// [`BlobWrite::read_into`] leaves hashing to it.
    pub sink_verifies: bool,
}

impl BlobWrite<'_> {
    /// Streams the blob from its source into `out`: verified by the source,
    /// or, when the sink checks digests itself, checked for size only.
    pub async fn read_into(
        &self,
        out: &mut (dyn std::io::Write + Send),
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<()> {
        if self.sink_verifies {
            self.source
                .read_blob_unhashed(self.from, self.blob, out, progress)
                .await
        } else {
            self.source
                .read_blob(self.from, self.blob, out, progress)
                .await
        }
    }
}

/// Where an image is written to.
pub trait ImageSink: Send + Sync {
    /// Whether the sink holds the blob already.
    fn has_blob<'a>(
        &'a self,
        to: &'a Reference,
        blob: &'a Descriptor,
    ) -> BoxFuture<'a, Result<bool>>;

    /// Whether `to`'s repository holds the manifest `digest` already.
    fn has_manifest<'a>(
        &'a self,
        to: &'a Reference,
        digest: &'a Digest,
    ) -> BoxFuture<'a, Result<bool>>;

    /// The digest of the manifest `to` names now, where the sink can tell.
    fn manifest_digest<'a>(&'a self, _to: &'a Reference) -> BoxFuture<'a, Option<Digest>> {
        Box::pin(async { None })
    }

    /// Whether the sink hashes every blob it writes and commits none whose
    /// content differs from its descriptor's digest (failing with both digests).
    /// A pull into such a sink does not hash the blob a second time on the way.
    fn verifies_digests(&self) -> bool {
        false
    }

    /// Writes one blob, committed only when its content matches its digest.
    fn write_blob<'a>(
        &'a self,
        to: &'a Reference,
        w: BlobWrite<'a>,
    ) -> BoxFuture<'a, Result<BlobOutcome>>;

    /// The diff_id of each of an image's layers, for sinks that unpack layers
    /// while they stream; called once `config` is in the sink. `None` where
    /// unknown (that layer is then only stored).
    fn layer_diff_ids(&self, _config: &Descriptor, layers: usize) -> Vec<Option<Digest>> {
        vec![None; layers]
    }

    /// Writes a manifest under `to`. `upstream_index` is the digest of the
    /// multi-platform index this single-platform manifest was picked from.
    fn write_manifest<'a>(
        &'a self,
        to: &'a Reference,
        m: &'a Manifest,
        upstream_index: Option<&'a Digest>,
    ) -> BoxFuture<'a, Result<()>>;

    /// `digests` came from `from` (a hint for later mounts).
    fn record_pulled(&self, _from: &Reference, _digests: &[Digest]) {}
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pull,
    Push,
    Copy,
}

/// What a transfer does, step by step.
#[derive(Debug, Clone, Copy)]
pub enum TransferEvent<'a> {
    /// A pull or push of `reference` begins.
    Start {
        action: Action,
        reference: &'a Reference,
    },
    /// A blob to pull is in the sink already.
    BlobExists {
        reference: &'a Reference,
        blob: &'a Descriptor,
    },
    /// A blob to push is in the registry already.
    BlobSkipped {
        reference: &'a Reference,
        blob: &'a Descriptor,
    },
    BlobMounted {
        reference: &'a Reference,
        blob: &'a Descriptor,
        from: &'a str,
    },
    /// A blob's upload (push, copy) begins; `BlobBytes` follow.
    BlobUploading {
        blob: &'a Descriptor,
    },
    /// A blob's download begins; `BlobBytes` follow.
    BlobDownloading {
        blob: &'a Descriptor,
    },
    /// Bytes of a blob moved so far.
    BlobBytes {
        blob: &'a Descriptor,
        bytes: u64,
    },
    /// A blob was transferred (`chunks` requests; `unpacked` on the way).
    BlobDone {
        action: Action,
        reference: &'a Reference,
        blob: &'a Descriptor,
        chunks: u32,
        unpacked: bool,
    },
    /// A manifest was written to `reference`.
    Manifest {
        reference: &'a Reference,
        digest: &'a Digest,
    },
    /// A pull or push ended: the top manifest's digest and size.
    Finish {
        action: Action,
        reference: &'a Reference,
        digest: &'a Digest,
        size: u64,
    },
    /// Stopped by a signal; `left` says what that left behind.
    Interrupted {
        action: Action,
        reference: &'a Reference,
        left: &'a str,
    },
    /// A push is about to replace the multi-platform index `index` that
    /// `reference` holds (the one the pushed image was picked from) with one platform.
    ReplacesIndex {
        reference: &'a Reference,
        index: &'a Digest,
    },
    Warning {
        message: &'a str,
    },
}

/// Told every [`TransferEvent`]; the default ignores them.
pub trait TransferReporter: Send + Sync {
    fn event(&self, _event: TransferEvent<'_>) {}
}

/// Reports nothing.
pub struct NoReport;

impl TransferReporter for NoReport {}
