//! The store as a transfer source and sink: blobs stream from its files and
//! into its ingest writers (a layer also into its snapshot while it arrives),
//! manifests are read by digest and tagged once pulled.

use std::io::Write;
use std::sync::Mutex;

use futures_util::future::BoxFuture;
use layer_cache::image::descriptor as oci_descriptor;
use layer_cache::snapshot::SnapshotFeeder;
use layer_cache::sources::RegistrySources;
use layer_cache::store::UPSTREAM_INDEX_ANNOTATION;
use layer_cache::{Digest, ImageRef, Store};
use registry_client::manifest::MAX_MANIFEST;
use registry_client::transfer::{
    BlobOutcome, BlobReader, BlobWrite, ImageSink, ImageSource, Result, TransferError,
};
use registry_client::{Descriptor, Manifest, Reference};
use tokio::io::AsyncSeekExt;

use crate::OpsError;

fn endpoint(e: impl Into<OpsError>) -> TransferError {
    match e.into() {
        // A registry's own error stays typed, as the client raised it.
        OpsError::Transfer(t) => t,
        e => TransferError::endpoint(e),
    }
}

/// The store's name for a registry reference (`busybox:latest`, `host:5000/app:1`).
pub fn local_name(r: &Reference) -> String {
    let repo = r.name();
    match (&r.tag, &r.digest) {
        (Some(t), _) => format!("{repo}:{t}"),
        (None, Some(d)) => format!("{repo}@{d}"),
        (None, None) => format!("{repo}:latest"),
    }
}

/// The store, read and written by transfers.
pub struct StoreIo {
    store: Store,
    /// Where blobs live, for cross-repository mounts (none for single blobs).
    sources: Mutex<Option<RegistrySources>>,
}

impl StoreIo {
    pub fn new(store: &Store) -> StoreIo {
        StoreIo {
            store: store.clone(),
            sources: Mutex::new(Some(RegistrySources::load(store))),
        }
    }

    /// For single blobs: no record of where blobs live is read or kept.
    pub fn blobs_only(store: &Store) -> StoreIo {
        StoreIo {
            store: store.clone(),
            sources: Mutex::new(None),
        }
    }

    /// A stored image's manifest, and the index it was pulled from, if any.
    pub fn image(&self, name: &str) -> crate::Result<(Manifest, Option<Digest>)> {
        self.image_of(&self.store.resolve(name)?)
    }

    /// The manifest `desc` names, and the upstream index it came from.
    pub fn image_of(
        &self,
        desc: &layer_cache::oci_spec::image::Descriptor,
    ) -> crate::Result<(Manifest, Option<Digest>)> {
        let digest = layer_cache::image::descriptor_digest(desc)?;
        let bytes = self.store.read_blob(&digest, MAX_MANIFEST)?;
        let m = Manifest::new(bytes, Some(desc.media_type().to_string().as_str()))?;
        let upstream = desc
            .annotations()
            .as_ref()
            .and_then(|a| a.get(UPSTREAM_INDEX_ANNOTATION))
            // A note only: one that does not parse is as good as none.
            .and_then(|d| d.parse::<Digest>().ok());
        Ok((m, upstream))
    }

    /// Keeps what the transfer learnt of where blobs live (after a success).
    pub fn save_sources(&self) {
        if let Ok(mut s) = self.sources.lock() {
            if let Some(s) = s.as_mut() {
                // A hint: failing to keep it costs a later upload, not this command.
                let _ = s.save();
            }
        }
    }

    fn record(&self, r: &Reference, digests: &[Digest]) {
        if let Ok(mut s) = self.sources.lock() {
            if let Some(s) = s.as_mut() {
                for d in digests {
                    s.add(d, &r.name());
                }
            }
        }
    }

    /// The diff_ids of a stored config, one per layer (`None` where it cannot be
    /// read, so that layer is simply not unpacked early).
    fn stored_diff_ids(&self, config: &Descriptor, layers: usize) -> Vec<Option<Digest>> {
        let ids = self
            .store
            .read_blob(&config.digest, layer_cache::image::MAX_JSON_BLOB)
            .ok()
            .and_then(|b| layer_cache::image::ImageConfig::parse(&b, "config").ok())
            .map(|c| c.rootfs.diff_ids)
            .unwrap_or_default();
        if ids.len() != layers {
            return vec![None; layers];
        }
        ids.into_iter().map(Some).collect()
    }

    /// Pulls one blob into the store; with `w.unpack_as`, also unpacks the layer
    /// into its snapshot on the way. Content that contradicts the config fails the
    /// pull; any other failed unpack is left for the build, which unpacks from the
    /// stored blob and reports the cause.
    async fn ingest(&self, w: BlobWrite<'_>) -> crate::Result<BlobOutcome> {
        let d = w.blob;
        let mut feeder = match w.unpack_as {
            Some(id) => self
                .store
                .snapshot_feeder(id, d.size, &format!("layer {}", d.digest))?,
            None => None,
        };
        let mut ingest = self.store.ingest()?;
        let progress = |n: u64| (w.progress)(n);
        // The ingest writer hashes, so the source does not (`verifies_digests`).
        match feeder.as_mut() {
            Some(f) => {
                let mut tee = Tee(&mut ingest, f);
                w.read_into(&mut tee, &progress).await
            }
            None => w.read_into(&mut ingest, &progress).await,
        }?;
        let size = ingest.written();
        match ingest.commit(Some(&d.digest), Some(d.size)) {
            // Told as the client told it when it hashed: the registry sent wrong data.
            Err(layer_cache::StoreError::DigestMismatch { expected, actual }) => {
                return Err(TransferError::from(registry_client::Error::DigestMismatch {
                    digest: expected,
                    actual,
                    size,
                })
                .into())
            }
            r => r?,
        };
        let unpacked = match feeder.map(|f| f.finish()) {
            Some(Ok(_)) => true,
            // The blob is what the manifest names, but not what the config says it
            // holds: the image is broken, so it is not tagged.
            Some(Err(e @ layer_cache::StoreError::DiffIdMismatch { .. })) => return Err(e.into()),
            Some(Err(e)) => {
                tracing::debug!("{}: unpacking while pulling failed: {e}", d.digest);
                false
            }
            None => false,
        };
        Ok(BlobOutcome::Written {
            chunks: 1,
            unpacked,
        })
    }

    /// Stores a pulled manifest and tags it by `r` (unless `r` is a bare digest).
    fn store_manifest(
        &self,
        r: &Reference,
        m: &Manifest,
        upstream_index: Option<&Digest>,
    ) -> crate::Result<()> {
        let committed = self.store.write_blob(&m.bytes)?;
        if committed.digest != m.digest {
            return Err(OpsError::ManifestDigestMismatch {
                reference: r.to_string(),
            });
        }
        let mut desc = oci_descriptor(&m.media_type, &committed.digest, committed.size);
        // Only the chosen platform is stored, so the index is kept as a note of
        // where the image came from, never pushed: a push of this image sends the
        // platform manifest byte for byte, not an index missing its other platforms.
        if let Some(index) = upstream_index {
            let mut ann = std::collections::HashMap::new();
            ann.insert(UPSTREAM_INDEX_ANNOTATION.to_string(), index.to_string());
            desc.set_annotations(Some(ann));
        }
        if r.digest.is_none() || r.tag.is_some() {
            let local = ImageRef::parse(&local_name(r))?;
            self.store.set_tag(&local, &desc)?;
        }
        Ok(())
    }

    fn read_manifest(
        &self,
        from: &Reference,
        child: Option<&Descriptor>,
    ) -> crate::Result<Manifest> {
        Ok(match child {
            Some(child) => {
                let bytes =
                    self.store
                        .read_blob(&child.digest, MAX_MANIFEST)
                        .map_err(|source| OpsError::IndexEntryMissing {
                            digest: child.digest.clone(),
                            source,
                        })?;
                Manifest::new(bytes, Some(&child.media_type))?
            }
            None => self.image(&local_name(from))?.0,
        })
    }
}

impl ImageSource for StoreIo {
    fn manifest<'a>(
        &'a self,
        from: &'a Reference,
        child: Option<&'a Descriptor>,
    ) -> BoxFuture<'a, Result<Manifest>> {
        Box::pin(async move { self.read_manifest(from, child).map_err(endpoint) })
    }

    fn read_blob<'a>(
        &'a self,
        _from: &'a Reference,
        blob: &'a Descriptor,
        out: &'a mut (dyn Write + Send),
        progress: &'a (dyn Fn(u64) + Sync),
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let copied = (|| {
                let mut r = self.store.open_blob(&blob.digest, Some(blob.size))?;
                let n = std::io::copy(&mut r, out).map_err(|source| OpsError::CopyBlob {
                    digest: blob.digest.clone(),
                    source,
                })?;
                progress(n);
                Ok::<(), OpsError>(())
            })();
            copied.map_err(endpoint)
        })
    }

    fn open_blob<'a>(
        &'a self,
        _from: &'a Reference,
        blob: &'a Descriptor,
        offset: u64,
    ) -> BoxFuture<'a, std::io::Result<BlobReader>> {
        Box::pin(async move {
            let mut f = tokio::fs::File::open(self.store.blob_path(&blob.digest)).await?;
            f.seek(std::io::SeekFrom::Start(offset)).await?;
            Ok(Box::new(f) as BlobReader)
        })
    }

    fn check_blob(&self, _from: &Reference, blob: &Descriptor) -> Result<()> {
        if !self.store.blob_path(&blob.digest).is_file() {
            return Err(endpoint(OpsError::BlobMissing {
                digest: blob.digest.clone(),
            }));
        }
        Ok(())
    }

    fn mount_candidates(&self, _from: &Reference, digest: &Digest, registry: &str) -> Vec<String> {
        self.sources
            .lock()
            .ok()
            .and_then(|s| s.as_ref().map(|s| s.repos_on(digest, registry)))
            .unwrap_or_default()
    }

    fn record_copied(&self, to: &Reference, digests: &[Digest]) {
        self.record(to, digests)
    }
}

impl ImageSink for StoreIo {
    fn verifies_digests(&self) -> bool {
        true
    }

    fn has_blob<'a>(
        &'a self,
        _to: &'a Reference,
        blob: &'a Descriptor,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move { Ok(self.store.has_blob(&blob.digest)) })
    }

    fn has_manifest<'a>(
        &'a self,
        _to: &'a Reference,
        digest: &'a Digest,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move { Ok(self.store.has_blob(digest)) })
    }

    fn write_blob<'a>(
        &'a self,
        _to: &'a Reference,
        w: BlobWrite<'a>,
    ) -> BoxFuture<'a, Result<BlobOutcome>> {
        Box::pin(async move { self.ingest(w).await.map_err(endpoint) })
    }

    fn layer_diff_ids(&self, config: &Descriptor, layers: usize) -> Vec<Option<Digest>> {
        self.stored_diff_ids(config, layers)
    }

    fn write_manifest<'a>(
        &'a self,
        to: &'a Reference,
        m: &'a Manifest,
        upstream_index: Option<&'a Digest>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { self.store_manifest(to, m, upstream_index).map_err(endpoint) })
    }

    fn record_pulled(&self, from: &Reference, digests: &[Digest]) {
        self.record(from, digests)
    }
}

/// Writes to two writers: the blob's ingest file and its snapshot feeder.
struct Tee<'a>(
    &'a mut layer_cache::ingest::BlobWriter,
    &'a mut SnapshotFeeder,
);

impl Write for Tee<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_all(buf)?;
        self.1.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}
