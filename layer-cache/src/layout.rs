//! An image read out of an OCI image layout directory on disk (another store's root,
//! `skopeo copy … oci:DIR:TAG`, an extracted `-o type=oci` archive) into the store,
//! for `--build-context NAME=oci-layout://DIR[:TAG][@DIGEST]`. The layout is only
//! read; every blob is verified against its digest on the way in. [`LayoutDir`]
//! writes and reads such directories.

mod dir;

pub(crate) use dir::read_file;
pub use dir::{LayoutDir, LayoutError};

use std::io;
use std::path::Path;

use oci_spec::image::{Descriptor, ImageIndex};

use crate::digest::Digest;
use crate::error::{AtPath, Result, StoreError};
use crate::image::{self, ParsedManifest, MAX_JSON_BLOB};
use crate::layer::pick_platform;
use crate::store::Store;

impl Store {
    /// Copies the image `digest` names (else the one whose
    /// `org.opencontainers.image.ref.name` is `tag`, as buildx looks it up) from the
    /// layout at `dir`; an index gives the host platform's manifest, whose descriptor
    /// is returned. The blobs are untagged: hold [`Store::usage_lock`] until a build
    /// references them.
    pub fn copy_from_layout(
        &self,
        dir: &Path,
        tag: &str,
        digest: Option<&Digest>,
    ) -> Result<Descriptor> {
        let what = format!("OCI layout {}", dir.display());
        let layout = LayoutDir::open(dir);
        let bytes = read_small(&layout.index_path())?;
        let index: ImageIndex =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::json(&what, e))?;
        let listed = |want: &dyn Fn(&Descriptor) -> bool| {
            index.manifests().iter().find(|m| want(m)).cloned()
        };
        let found = match digest {
            Some(d) => match listed(&|m| image::descriptor_digest(m).ok().as_ref() == Some(d)) {
                Some(m) => Some(m),
                // Any manifest blob of the layout, listed or not (as BuildKit's
                // content store sees it).
                None if layout.blob_path(d).is_file() => {
                    let b = read_small(&layout.blob_path(d))?;
                    Some(image::descriptor(&media_type(&b), d, b.len() as u64))
                }
                None => None,
            },
            None => listed(&|m| {
                m.annotations()
                    .as_ref()
                    .and_then(|a| a.get(image::REF_NAME_ANNOTATION))
                    .is_some_and(|n| n == tag)
            }),
        };
        let Some(mut desc) = found else {
            let wanted = match digest {
                Some(d) => format!("no manifest {d}"),
                None => format!(
                    "no image tagged {tag:?} (index.json's {})",
                    image::REF_NAME_ANNOTATION
                ),
            };
            return Err(StoreError::invalid(what, wanted));
        };
        for _ in 0..4 {
            let d = image::descriptor_digest(&desc)?;
            self.copy_blob(&layout, &d, desc.size())?;
            let bytes = self.read_blob(&d, MAX_JSON_BLOB)?;
            match image::parse_manifest(&bytes, &format!("manifest {d}"))? {
                ParsedManifest::Index(index) => {
                    let child = pick_platform(&index, &d)?;
                    desc = index
                        .manifests()
                        .iter()
                        .find(|m| image::descriptor_digest(m).ok().as_ref() == Some(&child))
                        .cloned()
                        .ok_or_else(|| StoreError::invalid(&what, "index lost its manifest"))?;
                }
                ParsedManifest::Image(m) => {
                    self.copy_blob(
                        &layout,
                        &image::descriptor_digest(m.config())?,
                        m.config().size(),
                    )?;
                    for l in m.layers() {
                        self.copy_blob(&layout, &image::descriptor_digest(l)?, l.size())?;
                    }
                    return Ok(image::descriptor(&media_type(&bytes), &d, desc.size()));
                }
            }
        }
        Err(StoreError::invalid(what, "indexes nested too deeply"))
    }

    /// One blob of the layout into the store, verified; present ones are skipped.
    fn copy_blob(&self, layout: &LayoutDir, digest: &Digest, size: u64) -> Result<()> {
        if self.has_blob(digest) {
            return Ok(());
        }
        let path = layout.blob_path(digest);
        let mut file = fs_err::File::open(&path)?;
        let mut w = self.ingest()?;
        io::copy(&mut file, &mut w).at(&path)?;
        w.commit(Some(digest), Some(size))?;
        Ok(())
    }
}

fn read_small(path: &Path) -> Result<Vec<u8>> {
    read_file(path, MAX_JSON_BLOB)
}

fn media_type(bytes: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    match v.get("mediaType").and_then(serde_json::Value::as_str) {
        Some(mt) => mt.to_string(),
        None if v.get("manifests").is_some() => image::OCI_INDEX.to_string(),
        None => image::OCI_MANIFEST.to_string(),
    }
}
