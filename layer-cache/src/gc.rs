//! Garbage collection: remove blobs unreachable from any tag or step-cache record,
//! and dead ingests.

use std::collections::BTreeSet;

use oci_spec::image::Descriptor;

use crate::digest::Digest;
use crate::error::{Result, StoreError};
use crate::image::{self, ParsedManifest, MAX_JSON_BLOB};
use crate::lock::FileLock;
use crate::store::Store;
use oci_vocab::media;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PruneStats {
    pub blobs_removed: u64,
    pub bytes_removed: u64,
    pub ingests_removed: u64,
    pub snapshots_removed: u64,
    pub scratch_removed: u64,
}

impl Store {
    /// Digests reachable from `desc`: the manifest, its config and layers, or an
    /// index and whichever of its children are present.
    pub fn reachable_from(&self, desc: &Descriptor, out: &mut BTreeSet<Digest>) -> Result<()> {
        self.walk(desc, out, &mut BTreeSet::new())
    }

    /// Like `reachable_from`, also collecting the image configs met on the way. A
    /// stack, not recursion: indexes from outside may nest arbitrarily deep.
    fn walk(
        &self,
        desc: &Descriptor,
        out: &mut BTreeSet<Digest>,
        configs: &mut BTreeSet<Digest>,
    ) -> Result<()> {
        let mut todo = vec![desc.clone()];
        while let Some(desc) = todo.pop() {
            let digest = image::descriptor_digest(&desc)?;
            if !out.insert(digest.clone()) {
                continue;
            }
            let mt: &str = desc.media_type().as_ref();
            let is_manifest = media::is_manifest(mt) || media::is_index(mt);
            if !is_manifest {
                continue;
            }
            let bytes = self.read_blob(&digest, MAX_JSON_BLOB)?;
            match image::parse_manifest(&bytes, &format!("manifest {digest}"))? {
                ParsedManifest::Image(m) => {
                    let config = image::descriptor_digest(m.config())?;
                    configs.insert(config.clone());
                    out.insert(config);
                    for l in m.layers() {
                        out.insert(image::descriptor_digest(l)?);
                    }
                }
                ParsedManifest::Index(idx) => {
                    for child in idx.manifests() {
                        // An index may name platforms that were never fetched.
                        if self.has_blob(&image::descriptor_digest(child)?) {
                            todo.push(child.clone());
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Every digest some tag, step-cache record or extra root keeps alive.
    pub fn live_blobs(&self, extra_roots: &[Descriptor]) -> Result<BTreeSet<Digest>> {
        Ok(self.live(extra_roots)?.0)
    }

    /// Live blobs and the live images' configs.
    fn live(&self, extra_roots: &[Descriptor]) -> Result<(BTreeSet<Digest>, BTreeSet<Digest>)> {
        let (mut live, mut configs) = (BTreeSet::new(), BTreeSet::new());
        for t in self.tags()? {
            self.walk(&t.descriptor, &mut live, &mut configs)?;
        }
        for d in extra_roots.iter().chain(&self.cache_roots()?) {
            self.walk(d, &mut live, &mut configs)?;
        }
        // A container keeps its image (and so the image's snapshots).
        let in_use = crate::containers::images_in_use(self.root()).map_err(|e| match e {
            crate::containers::ContainerError::Store(e) => e,
            e => StoreError::invalid("containers", e.to_string()),
        })?;
        for digest in in_use {
            if self.has_blob(&digest) {
                let d = image::descriptor(media::OCI_MANIFEST, &digest, 0);
                self.walk(&d, &mut live, &mut configs)?;
            }
        }
        Ok((live, configs))
    }

    /// Removes unreachable blobs. Holds the GC lock exclusively, so no build or load
    /// that is still adding blobs runs at the same time.
    pub fn prune(&self, extra_roots: &[Descriptor]) -> Result<PruneStats> {
        let _gc = self.gc_lock()?;
        let (mut live, configs) = self.live(extra_roots)?;
        // Snapshots are kept for layers some live image config lists.
        let mut live_diff_ids = BTreeSet::new();
        for c in &configs {
            let bytes = self.read_blob(c, MAX_JSON_BLOB)?;
            let cfg = image::ImageConfig::parse(&bytes, &format!("config {c}"))?;
            live_diff_ids.extend(cfg.rootfs.diff_ids);
        }
        // And for layers of step-cache records, so a cache hit needs no unpack.
        for e in self.cache_list()? {
            live_diff_ids.extend(e.record.diff_id);
        }
        // A layer's re-encoded variants live as long as the layer does.
        live.extend(self.prune_variant_records(&live_diff_ids)?);
        self.prune_export_codecs(&live)?;
        let mut stats = PruneStats::default();
        for d in self.list_blobs()? {
            if live.contains(&d) {
                continue;
            }
            let path = self.blob_path(&d);
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            fs_err::remove_file(&path)?;
            stats.blobs_removed += 1;
            stats.bytes_removed += size;
        }
        // An ingest file whose writer is alive is flock'ed; the rest are leftovers of killed processes.
        let ingest = self.ingest_dir();
        for entry in fs_err::read_dir(&ingest)? {
            let entry = entry?;
            let path = entry.path();
            if let Some(_lock) = FileLock::try_exclusive_existing(&path)? {
                fs_err::remove_file(&path)?;
                stats.ingests_removed += 1;
            }
        }
        let (snapshots, scratch) = self.prune_snapshots(&live_diff_ids)?;
        stats.snapshots_removed = snapshots;
        if snapshots > 0 {
            // Its entries for removed snapshots would only linger.
            let path = self.snapshot_stat_cache_path();
            match fs_err::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        stats.scratch_removed = scratch;
        Ok(stats)
    }
}
