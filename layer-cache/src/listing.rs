//! Store queries behind `images` and `inspect`: the tags naming a manifest, the
//! children of a stored index, and an image's creation time and size.

use oci_spec::image::{Descriptor, ImageIndex};

use crate::digest::Digest;
use crate::error::{Result, StoreError};
use crate::image::{self, descriptor_digest};
use crate::store::Store;

impl Store {
    /// The tags that name the manifest (or index) `top`.
    pub fn tag_names(&self, top: &Digest) -> Result<Vec<String>> {
        Ok(self
            .tags()?
            .into_iter()
            .filter(|t| descriptor_digest(&t.descriptor).ok().as_ref() == Some(top))
            .map(|t| t.name)
            .collect())
    }

    /// The bytes and children of a stored multi-platform index, `None` for a
    /// single image.
    pub fn index_children(&self, desc: &Descriptor) -> Result<Option<(Vec<u8>, Vec<Descriptor>)>> {
        let mt = desc.media_type().to_string();
        if mt != image::OCI_INDEX && mt != image::DOCKER_MANIFEST_LIST {
            return Ok(None);
        }
        let digest = descriptor_digest(desc)?;
        let bytes = self.read_blob(&digest, image::MAX_JSON_BLOB)?;
        let index: ImageIndex =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::Invalid {
                what: format!("index {digest}"),
                reason: e.to_string(),
            })?;
        Ok(Some((bytes, index.manifests().clone())))
    }

    /// (created, size) of an image; for an index, the newest creation time and
    /// the size of every platform image the store holds.
    pub fn image_summary(&self, desc: &Descriptor) -> Result<(String, u64)> {
        let images = match self.index_children(desc)? {
            Some((_, children)) => children
                .into_iter()
                .filter(|c| descriptor_digest(c).is_ok_and(|d| self.has_blob(&d)))
                .collect(),
            None => vec![desc.clone()],
        };
        let (mut created, mut size) = (String::new(), 0);
        for d in &images {
            let img = self.load_image(d)?;
            created = created.max(img.config.created.clone().unwrap_or_default());
            size += img.manifest.layers().iter().map(|l| l.size()).sum::<u64>()
                + img.manifest.config().size();
        }
        Ok((created, size))
    }
}
