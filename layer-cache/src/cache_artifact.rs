//! The step cache carried to another machine as one OCI artifact: an image manifest
//! whose config (media type [`CACHE_CONFIG`], also its `artifactType`) is the JSON
//! list of [`CacheRecord`]s and whose layers are the records' layer blobs with their
//! own media types. Keys are content-based and machine-independent, so imported
//! records are found by the same lookups as local ones.
//!
//! This module builds the artifact from the store's records, writes it to and reads
//! it from an OCI layout directory, checks a manifest fetched from elsewhere, and
//! adds imported records to the store's cache index. Moving it over the network is
//! the caller's business.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use oci_spec::image::Descriptor;
use serde::{Deserialize, Serialize};

use crate::cache_index::CacheRecord;
use crate::digest::Digest;
use crate::error::StoreError;
use crate::image::{self, descriptor_digest, ParsedManifest, OCI_INDEX, OCI_MANIFEST};
use crate::layout::{LayoutDir, LayoutError};
use crate::store::Store;

/// The artifact's config media type (also its `artifactType`). Distribution 2.8
/// (Debian's docker-registry) stores OCI manifests with any config media type, so
/// the artifact needs no disguise as an image.
pub const CACHE_CONFIG: &str = "application/vnd.mybuild.cache.v1+json";

/// The records list is read into memory; a bigger one is refused.
pub const MAX_RECORDS_BLOB: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CacheArtifactError {
    #[error("not found ({} does not exist)", .0.display())]
    NotFound(PathBuf),
    #[error("index.json is not JSON")]
    IndexNotJson(#[source] serde_json::Error),
    #[error("index.json lists no OCI manifest")]
    NoManifest,
    #[error("index.json: manifest descriptor without digest or size")]
    BadDescriptor,
    #[error("{what} is an index, not a mybuild cache")]
    IsIndex { what: String },
    #[error("not a mybuild cache (config media type {0})")]
    NotCache(String),
    #[error("its records blob is {0} bytes, too large")]
    RecordsTooLarge(u64),
    #[error("records blob {digest} is not a cache record list")]
    NotRecords {
        digest: Digest,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

pub type Result<T, E = CacheArtifactError> = std::result::Result<T, E>;

/// The config blob.
#[derive(Serialize, Deserialize)]
struct CacheFile {
    records: Vec<CacheRecord>,
    /// Cache mounts exported with it (`cache-mounts=true`); older readers ignore them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    mounts: Vec<MountExport>,
}

/// One `RUN --mount=type=cache` directory, exported: layers that unpack, in order,
/// into a copy of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MountExport {
    /// The cache's id (its target when the mount gave none).
    pub id: String,
    pub parts: Vec<MountPart>,
}

/// A part of an exported cache directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MountPart {
    /// The top-level directory it holds; empty for the top-level files.
    pub name: String,
    pub layer: Descriptor,
}

/// A cache manifest's parts: the records blob and the layers.
#[derive(Debug, Clone)]
pub struct CacheManifest {
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

impl CacheManifest {
    /// Checks that `bytes` (named `what` in errors) is a mybuild cache manifest.
    pub fn parse(bytes: &[u8], what: &str) -> Result<CacheManifest> {
        let ParsedManifest::Image(m) = image::parse_manifest(bytes, what)? else {
            return Err(CacheArtifactError::IsIndex {
                what: what.to_string(),
            });
        };
        let media_type = m.config().media_type().to_string();
        if media_type != CACHE_CONFIG {
            return Err(CacheArtifactError::NotCache(media_type));
        }
        Ok(CacheManifest {
            config: m.config().clone(),
            layers: m.layers().clone(),
        })
    }

    /// The records blob's descriptor, when small enough to be read.
    pub fn records_blob(&self) -> Result<&Descriptor> {
        if self.config.size() > MAX_RECORDS_BLOB {
            return Err(CacheArtifactError::RecordsTooLarge(self.config.size()));
        }
        Ok(&self.config)
    }

    /// The records, from the records blob's bytes (verified by the caller).
    pub fn contents(&self, records_blob: &[u8]) -> Result<CacheContents> {
        let file: CacheFile = serde_json::from_slice(records_blob).map_err(|source| {
            match descriptor_digest(&self.config) {
                Ok(digest) => CacheArtifactError::NotRecords { digest, source },
                Err(e) => e.into(),
            }
        })?;
        let listed: BTreeSet<Digest> = self
            .layers
            .iter()
            .filter_map(|l| descriptor_digest(l).ok())
            .collect();
        // A part the manifest does not list could not be fetched verified.
        let mounts = file
            .mounts
            .into_iter()
            .filter(|m| {
                m.parts
                    .iter()
                    .all(|p| descriptor_digest(&p.layer).is_ok_and(|d| listed.contains(&d)))
            })
            .collect();
        Ok(CacheContents {
            records: file.records,
            mounts,
            layers: self
                .layers
                .iter()
                .map(|l| Ok((descriptor_digest(l)?, l.size())))
                .collect::<Result<_>>()?,
        })
    }
}

/// What a cache source offers.
#[derive(Debug, Clone)]
pub struct CacheContents {
    pub records: Vec<CacheRecord>,
    /// Exported cache mounts whose every part the manifest lists.
    pub mounts: Vec<MountExport>,
    /// Layer digest → size, as its manifest lists them.
    pub layers: BTreeMap<Digest, u64>,
}

/// Records added to the store by [`CacheContents::add_to`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Added {
    /// Records added or already present.
    pub records: u64,
    /// Records left out: whole-build records, and those whose layer the cache lacks.
    pub skipped: u64,
}

impl CacheContents {
    /// Reads the artifact of the OCI layout at `dir` (`--cache-from type=local`).
    pub fn read_local(dir: &Path) -> Result<CacheContents> {
        let layout = LayoutDir::open(dir);
        let index = layout
            .read_index(image::MAX_JSON_BLOB)?
            .ok_or_else(|| CacheArtifactError::NotFound(layout.index_path()))?;
        let index: serde_json::Value =
            serde_json::from_slice(&index).map_err(CacheArtifactError::IndexNotJson)?;
        let desc = index["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["mediaType"] == OCI_MANIFEST)
            .ok_or(CacheArtifactError::NoManifest)?;
        let (digest, size) = match (desc["digest"].as_str(), desc["size"].as_u64()) {
            (Some(d), Some(s)) => (d, s),
            _ => return Err(CacheArtifactError::BadDescriptor),
        };
        let digest: Digest = digest.parse().map_err(StoreError::from)?;
        let bytes = layout.read_blob(&digest, size, image::MAX_JSON_BLOB)?;
        let m = CacheManifest::parse(&bytes, &format!("manifest {digest}"))?;
        let config = m.records_blob()?;
        let bytes =
            layout.read_blob(&descriptor_digest(config)?, config.size(), MAX_RECORDS_BLOB)?;
        m.contents(&bytes)
    }

    /// Adds the records whose layer the cache holds to the store's cache index; a
    /// local record that still has its blob is kept.
    pub fn add_to(self, store: &Store) -> Result<Added> {
        let mut added = Added::default();
        for rec in self.records {
            let layer_ok = match &rec.layer {
                Some(l) => self.layers.get(&descriptor_digest(l)?) == Some(&l.size()),
                None => true,
            };
            if !layer_ok || rec.manifest.is_some() {
                added.skipped += 1;
                continue;
            }
            let keep_local = match store.cache_get(&rec.key)? {
                Some(local) => match &local.layer {
                    Some(l) => store.has_blob(&descriptor_digest(l)?),
                    None => true,
                },
                None => false,
            };
            if !keep_local {
                store.cache_put(&rec)?;
            }
            added.records += 1;
        }
        Ok(added)
    }
}

/// The artifact to export.
#[derive(Debug, Clone)]
pub struct CacheArtifact {
    /// The records blob.
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
    /// The distinct layers, in record order.
    pub layers: Vec<Descriptor>,
    pub records: u64,
    /// The steps whose record was left out because the store lacks its layer.
    pub left_out: Vec<String>,
}

impl CacheArtifact {
    /// The artifact of the store's records under `keys` (unknown keys and
    /// whole-build records are passed over).
    /// Layers stored uncompressed (built here) are exported as `codec` says,
    /// reusing remembered variants ([`Store::layer_variant`]).
    pub fn collect<'a>(
        store: &Store,
        keys: impl IntoIterator<Item = &'a Digest>,
        mounts: Vec<MountExport>,
        codec: Option<&crate::variant::ExportCodec>,
    ) -> Result<CacheArtifact> {
        let mut records = Vec::new();
        let mut layers: Vec<Descriptor> = Vec::new();
        let mut left_out = Vec::new();
        let mut seen = BTreeSet::new();
        for key in keys {
            let Some(mut rec) = store.cache_get(key)? else {
                continue;
            };
            if rec.manifest.is_some() {
                continue;
            }
            if let Some(l) = &rec.layer {
                let d = descriptor_digest(l)?;
                if !store.has_blob(&d) {
                    left_out.push(rec.step.clone());
                    continue;
                }
                let plain = crate::image::Compression::of_media_type(l.media_type().as_ref())
                    == Some(crate::image::Compression::None);
                if let (true, Some(codec), Some(diff_id)) = (plain, codec, &rec.diff_id) {
                    let spec = crate::variant::VariantSpec {
                        compression: codec.compression,
                        level: codec.level,
                        clamp_mtime: None,
                    };
                    rec.layer = Some(store.layer_variant(l, diff_id, &spec, true)?.descriptor());
                }
            }
            if let Some(l) = &rec.layer {
                let d = descriptor_digest(l)?;
                if seen.insert(d) {
                    layers.push(l.clone());
                }
            }
            records.push(rec);
        }
        for part in mounts.iter().flat_map(|m| &m.parts) {
            if seen.insert(descriptor_digest(&part.layer)?) {
                layers.push(part.layer.clone());
            }
        }
        let n = records.len() as u64;
        let config = serde_json::to_vec(&CacheFile { records, mounts })?;
        let layer_json: Vec<serde_json::Value> = layers
            .iter()
            .map(|l| {
                serde_json::json!({
                    "mediaType": l.media_type().to_string(),
                    "digest": l.digest().to_string(),
                    "size": l.size(),
                })
            })
            .collect();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": CACHE_CONFIG,
            "config": {
                "mediaType": CACHE_CONFIG,
                "digest": Digest::of(&config).to_string(),
                "size": config.len(),
            },
            "layers": layer_json,
        }))?;
        Ok(CacheArtifact {
            config,
            manifest,
            layers,
            records: n,
            left_out,
        })
    }

    /// The layers' total size.
    pub fn layer_bytes(&self) -> u64 {
        self.layers.iter().map(|l| l.size()).sum()
    }

    /// Writes the artifact into an OCI layout at `dir` (`--cache-to type=local`):
    /// blobs first, `index.json` last, so an interrupted export leaves the previous
    /// one readable; blobs only the previous one used are removed afterwards.
    /// Returns the manifest's digest.
    pub fn write_local(&self, store: &Store, dir: &Path) -> Result<Digest> {
        let mut layout = LayoutDir::create(dir)?;
        for l in &self.layers {
            let d = descriptor_digest(l)?;
            // Read raw: the layout verifies what it writes.
            let path = store.blob_path(&d);
            let f = match fs_err::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(StoreError::BlobNotFound(d.clone()).into())
                }
                Err(e) => return Err(StoreError::Fs(e).into()),
            };
            layout.add_blob(&d, Some(l.size()), f)?;
        }
        layout.add_bytes(&self.config)?;
        let manifest_digest = layout.add_bytes(&self.manifest)?;
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{
                "mediaType": OCI_MANIFEST,
                "artifactType": CACHE_CONFIG,
                "digest": manifest_digest.to_string(),
                "size": self.manifest.len(),
                "annotations": {image::REF_NAME_ANNOTATION: "latest"},
            }],
        }))?;
        layout.write_index(&index)?;
        layout.remove_other_blobs();
        Ok(manifest_digest)
    }
}
