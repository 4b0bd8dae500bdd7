//! Garbage collection: remove blobs unreachable from any tag, and dead ingests.

use std::collections::BTreeSet;

use oci_spec::image::Descriptor;

use crate::digest::Digest;
use crate::error::Result;
use crate::image::{self, ParsedManifest, MAX_JSON_BLOB};
use crate::lock::FileLock;
use crate::store::Store;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PruneStats {
    pub blobs_removed: u64,
    pub bytes_removed: u64,
    pub ingests_removed: u64,
}

impl Store {
    /// Digests reachable from `desc`: the manifest, its config and layers, or an
    /// index and whichever of its children are present.
    pub fn reachable_from(&self, desc: &Descriptor, out: &mut BTreeSet<Digest>) -> Result<()> {
        let digest = image::descriptor_digest(desc)?;
        if !out.insert(digest.clone()) {
            return Ok(());
        }
        let is_manifest = matches!(
            desc.media_type().to_string().as_str(),
            image::OCI_MANIFEST
                | image::OCI_INDEX
                | image::DOCKER_MANIFEST
                | image::DOCKER_MANIFEST_LIST
        );
        if !is_manifest {
            return Ok(());
        }
        let bytes = self.read_blob(&digest, MAX_JSON_BLOB)?;
        match image::parse_manifest(&bytes, &format!("manifest {digest}"))? {
            ParsedManifest::Image(m) => {
                out.insert(image::descriptor_digest(m.config())?);
                for l in m.layers() {
                    out.insert(image::descriptor_digest(l)?);
                }
            }
            ParsedManifest::Index(idx) => {
                for child in idx.manifests() {
                    // An index may name platforms that were never fetched.
                    if self.has_blob(&image::descriptor_digest(child)?) {
                        self.reachable_from(child, out)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Every digest some tag or extra root keeps alive.
    pub fn live_blobs(&self, extra_roots: &[Descriptor]) -> Result<BTreeSet<Digest>> {
        let mut live = BTreeSet::new();
        for t in self.tags()? {
            self.reachable_from(&t.descriptor, &mut live)?;
        }
        for d in extra_roots {
            self.reachable_from(d, &mut live)?;
        }
        Ok(live)
    }

    /// Removes unreachable blobs. Holds the GC lock exclusively, so no build or load
    /// that is still adding blobs runs at the same time.
    pub fn prune(&self, extra_roots: &[Descriptor]) -> Result<PruneStats> {
        let _gc = self.gc_lock()?;
        let live = self.live_blobs(extra_roots)?;
        let mut stats = PruneStats::default();
        for d in self.list_blobs()? {
            if live.contains(&d) {
                continue;
            }
            let path = self.blob_path(&d);
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            std::fs::remove_file(&path).map_err(|e| crate::StoreError::io(&path, e))?;
            stats.blobs_removed += 1;
            stats.bytes_removed += size;
        }
        // An ingest file whose writer is alive is flock'ed; the rest are leftovers of killed processes.
        let ingest = self.ingest_dir();
        for entry in std::fs::read_dir(&ingest).map_err(|e| crate::StoreError::io(&ingest, e))? {
            let entry = entry.map_err(|e| crate::StoreError::io(&ingest, e))?;
            let path = entry.path();
            if let Some(_lock) = FileLock::try_exclusive_existing(&path)? {
                std::fs::remove_file(&path).map_err(|e| crate::StoreError::io(&path, e))?;
                stats.ingests_removed += 1;
            }
        }
        Ok(stats)
    }
}
