//! An image as an exporter writes it: layers in a codec ([`crate::variant`]),
//! OCI or Docker schema 2 media types, file times clamped, and annotations on the
//! manifest, the index and their descriptors (BuildKit's `annotation-*` kinds).
//! The converted documents are written to the store as new blobs; the stored
//! image is never changed. When nothing changes, the image's own descriptor comes
//! back, so the bytes written out are the bytes the store tagged.

use std::collections::BTreeMap;

use oci_spec::image::Descriptor;
use serde_json::Value;

use crate::digest::Digest;
use crate::error::{Result, StoreError};
use crate::image::{self, canonical_json, Compression, MAX_JSON_BLOB};
use crate::store::Store;
use crate::variant::VariantSpec;
use oci_vocab::{media, Platform};

/// Annotations by where BuildKit puts them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Annotations {
    /// On each image manifest.
    pub manifest: BTreeMap<String, String>,
    /// On the descriptor of each image manifest (in the index, or the layout's
    /// `index.json` for a single image).
    pub manifest_descriptor: BTreeMap<String, String>,
    /// On the index (a multi-platform image only).
    pub index: BTreeMap<String, String>,
    /// On the index's descriptor in the layout's `index.json`.
    pub index_descriptor: BTreeMap<String, String>,
    /// On the manifest of one platform (`annotation-manifest[os/arch].KEY`).
    pub manifest_for: Vec<(Platform, String, String)>,
    /// On the descriptor of one platform's manifest.
    pub manifest_descriptor_for: Vec<(Platform, String, String)>,
}

impl Annotations {
    pub fn is_empty(&self) -> bool {
        self.manifest.is_empty()
            && self.manifest_descriptor.is_empty()
            && self.index.is_empty()
            && self.index_descriptor.is_empty()
            && self.manifest_for.is_empty()
            && self.manifest_descriptor_for.is_empty()
    }

    /// `base` with the entries of `per_platform` for `platform` added.
    fn for_platform(
        base: &BTreeMap<String, String>,
        per_platform: &[(Platform, String, String)],
        platform: Option<&Platform>,
    ) -> BTreeMap<String, String> {
        let mut m = base.clone();
        if let Some(p) = platform {
            for (want, k, v) in per_platform {
                if want.is(p) {
                    m.insert(k.clone(), v.clone());
                }
            }
        }
        m
    }

    /// `other`'s values win.
    pub fn merged(&self, other: &Annotations) -> Annotations {
        let join = |a: &BTreeMap<String, String>, b: &BTreeMap<String, String>| {
            let mut m = a.clone();
            m.extend(b.iter().map(|(k, v)| (k.clone(), v.clone())));
            m
        };
        Annotations {
            manifest: join(&self.manifest, &other.manifest),
            manifest_descriptor: join(&self.manifest_descriptor, &other.manifest_descriptor),
            index: join(&self.index, &other.index),
            index_descriptor: join(&self.index_descriptor, &other.index_descriptor),
            manifest_for: [&self.manifest_for[..], &other.manifest_for[..]].concat(),
            manifest_descriptor_for: [
                &self.manifest_descriptor_for[..],
                &other.manifest_descriptor_for[..],
            ]
            .concat(),
        }
    }
}

/// How to write an image out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConvertOptions {
    /// The layers' codec; `None` keeps each layer as stored, but see `uncompressed_to`.
    pub compression: Option<Compression>,
    /// With `compression: None`: the codec of layers stored uncompressed (those
    /// built here, which are compressed only when they leave the machine).
    pub uncompressed_to: Option<Compression>,
    pub level: Option<u32>,
    /// Re-encode layers already in the codec too (at `level`).
    pub force: bool,
    /// `Some(false)`: Docker schema 2 media types; `Some(true)`: OCI; `None`: as stored.
    pub oci_media_types: Option<bool>,
    /// With `oci_media_types: Some(false)`: an image with zstd layers gets OCI
    /// media types instead of an error (BuildKit's rule when the types were a
    /// default, not asked for).
    pub oci_for_zstd: bool,
    /// Clamp layer file times to this Unix time (BuildKit's `rewrite-timestamp`).
    pub clamp_mtime: Option<i64>,
    /// Base images' diff_ids: the leading layers an image shares with one of
    /// these are the base's and keep their times (BuildKit's rule, so base
    /// layers stay shared with the base).
    pub base_diff_ids: Vec<Vec<Digest>>,
    pub annotations: Annotations,
}

impl ConvertOptions {
    fn changes_layers(&self) -> bool {
        self.compression.is_some()
            || self.uncompressed_to.is_some_and(|c| c != Compression::None)
            || self.clamp_mtime.is_some()
    }
}

impl Store {
    /// The image `desc` names (a manifest or an index of them) converted as `opts`
    /// says; its blobs are in the store when this returns. Hold
    /// [`Store::usage_lock`] until the result is tagged or written out.
    pub fn convert_image(&self, desc: &Descriptor, opts: &ConvertOptions) -> Result<Descriptor> {
        let _usage = self.usage_lock()?;
        let digest = image::descriptor_digest(desc)?;
        let bytes = self.read_blob(&digest, MAX_JSON_BLOB)?;
        let what = format!("manifest {digest}");
        let doc: Value = serde_json::from_slice(&bytes).map_err(|e| StoreError::json(&what, e))?;
        let is_index =
            media::is_index(desc.media_type().as_ref()) || doc.get("manifests").is_some();
        let a = &opts.annotations;
        if !is_index {
            if !a.index.is_empty() || !a.index_descriptor.is_empty() {
                return Err(StoreError::invalid(
                    what,
                    "index annotations not supported for single platform export",
                ));
            }
            let platform = self.manifest_platform(desc, &doc)?;
            let mut out = self.convert_manifest(desc, doc, &bytes, opts)?;
            let ann = Annotations::for_platform(
                &a.manifest_descriptor,
                &a.manifest_descriptor_for,
                platform.as_ref(),
            );
            add_annotations(&mut out, &ann);
            return Ok(out);
        }
        let mut doc = doc;
        let children = doc
            .get("manifests")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut new_children = Vec::new();
        for child in children {
            let child_desc: Descriptor = serde_json::from_value(child.clone())
                .map_err(|e| StoreError::json(format!("{what}: a child"), e))?;
            let child_digest = image::descriptor_digest(&child_desc)?;
            // A platform the store never fetched stays as it is.
            if !self.has_blob(&child_digest)
                || !media::is_manifest(child_desc.media_type().as_ref())
            {
                new_children.push(child);
                continue;
            }
            let child_bytes = self.read_blob(&child_digest, MAX_JSON_BLOB)?;
            let child_doc: Value = serde_json::from_slice(&child_bytes)
                .map_err(|e| StoreError::json(format!("manifest {child_digest}"), e))?;
            let converted = self.convert_manifest(&child_desc, child_doc, &child_bytes, opts)?;
            let mut entry = child;
            entry["mediaType"] = converted.media_type().to_string().into();
            entry["digest"] = converted.digest().to_string().into();
            entry["size"] = converted.size().into();
            let platform = child_desc.platform().as_ref().map(Platform::from);
            let wanted = Annotations::for_platform(
                &a.manifest_descriptor,
                &a.manifest_descriptor_for,
                platform.as_ref(),
            );
            if !wanted.is_empty() {
                let ann = entry.as_object_mut().map(|o| {
                    o.entry("annotations")
                        .or_insert_with(|| Value::Object(Default::default()))
                });
                if let Some(Value::Object(m)) = ann {
                    for (k, v) in &wanted {
                        m.insert(k.clone(), v.clone().into());
                    }
                }
            }
            new_children.push(entry);
        }
        doc["manifests"] = Value::Array(new_children);
        let index_type = match opts.oci_media_types {
            Some(false) => media::DOCKER_MANIFEST_LIST,
            Some(true) => media::OCI_INDEX,
            None => doc
                .get("mediaType")
                .and_then(Value::as_str)
                .map(|s| {
                    if media::is_index(s) {
                        s
                    } else {
                        media::OCI_INDEX
                    }
                })
                .unwrap_or(media::OCI_INDEX),
        };
        let index_type = static_type(index_type);
        if doc.get("mediaType").is_some() || index_type != media::OCI_INDEX {
            doc["mediaType"] = index_type.into();
        }
        annotate_doc(&mut doc, &a.index);
        let mut out = self.write_doc(desc, &doc, &bytes, index_type)?;
        add_annotations(&mut out, &a.index_descriptor);
        Ok(out)
    }

    fn convert_manifest(
        &self,
        desc: &Descriptor,
        mut doc: Value,
        bytes: &[u8],
        opts: &ConvertOptions,
    ) -> Result<Descriptor> {
        let digest = image::descriptor_digest(desc)?;
        let what = format!("manifest {digest}");
        let stored_type = doc
            .get("mediaType")
            .and_then(Value::as_str)
            .unwrap_or(desc.media_type().as_ref())
            .to_string();
        let config_desc: Descriptor = serde_json::from_value(doc["config"].clone())
            .map_err(|e| StoreError::json(format!("{what}: config"), e))?;
        let config_digest = image::descriptor_digest(&config_desc)?;
        let layers: Vec<Descriptor> = serde_json::from_value(doc["layers"].clone())
            .map_err(|e| StoreError::json(format!("{what}: layers"), e))?;
        let mut new_layers = Vec::new();
        let mut compressions = Vec::new();
        let mut diff_ids_changed = false;
        let mut config_doc: Option<Value> = None;
        if opts.changes_layers() {
            let cfg_bytes = self.read_blob(&config_digest, MAX_JSON_BLOB)?;
            let cfg: Value = serde_json::from_slice(&cfg_bytes)
                .map_err(|e| StoreError::json(format!("config {config_digest}"), e))?;
            let diff_ids: Vec<Digest> = serde_json::from_value(cfg["rootfs"]["diff_ids"].clone())
                .map_err(|e| {
                StoreError::json(format!("config {config_digest}: diff_ids"), e)
            })?;
            if diff_ids.len() != layers.len() {
                return Err(StoreError::invalid(
                    what,
                    format!(
                        "{} layers but the config lists {} diff_ids",
                        layers.len(),
                        diff_ids.len()
                    ),
                ));
            }
            let from_base = opts
                .base_diff_ids
                .iter()
                .map(|b| b.iter().zip(&diff_ids).take_while(|(a, b)| a == b).count())
                .max()
                .unwrap_or(0);
            let mut new_diff_ids = Vec::new();
            for (i, (l, diff_id)) in layers.iter().zip(&diff_ids).enumerate() {
                let mt: &str = l.media_type().as_ref();
                let Some(stored) = Compression::of_media_type(mt) else {
                    new_layers.push(doc["layers"][i].clone());
                    new_diff_ids.push(diff_id.clone());
                    compressions.push(None);
                    continue;
                };
                if media::is_foreign_layer(mt) {
                    new_layers.push(doc["layers"][i].clone());
                    new_diff_ids.push(diff_id.clone());
                    compressions.push(Some(stored));
                    continue;
                }
                let target = match (opts.compression, stored) {
                    (Some(c), _) => c,
                    (None, Compression::None) => opts.uncompressed_to.unwrap_or(stored),
                    (None, _) => stored,
                };
                let spec = VariantSpec {
                    compression: target,
                    level: opts.level,
                    clamp_mtime: opts.clamp_mtime.filter(|_| i >= from_base),
                };
                let info = self.layer_variant(l, diff_id, &spec, !opts.force)?;
                let mut entry = doc["layers"][i].clone();
                entry["digest"] = info.digest.to_string().into();
                entry["size"] = info.size.into();
                entry["mediaType"] = info.compression.oci_media_type().into();
                diff_ids_changed |= info.diff_id != *diff_id;
                new_diff_ids.push(info.diff_id);
                compressions.push(Some(info.compression));
                new_layers.push(entry);
            }
            if diff_ids_changed {
                let mut cfg = cfg;
                cfg["rootfs"]["diff_ids"] = serde_json::to_value(&new_diff_ids)
                    .map_err(|e| StoreError::json(format!("config {config_digest}"), e))?;
                config_doc = Some(cfg);
            }
            doc["layers"] = Value::Array(new_layers);
        } else {
            for l in &layers {
                compressions.push(Compression::of_media_type(l.media_type().as_ref()));
            }
        }
        let mut oci = match opts.oci_media_types {
            Some(o) => o,
            None => !stored_type.contains("docker"),
        };
        let zstd = compressions.contains(&Some(Compression::Zstd));
        if !oci && zstd && opts.oci_for_zstd {
            oci = true;
        }
        if !oci && zstd {
            return Err(StoreError::invalid(
                what,
                "zstd layers need OCI media types (oci-mediatypes=true); Docker schema 2 has no zstd layer type",
            ));
        }
        // Media types: the manifest, its config and every layer we know.
        let oci_asked = opts.oci_media_types.is_some();
        let (manifest_type, config_type) = if oci {
            (media::OCI_MANIFEST, media::OCI_CONFIG)
        } else {
            (media::DOCKER_MANIFEST, media::DOCKER_CONFIG)
        };
        if oci_asked {
            // An OCI manifest may leave its type out; keep it so when it stays OCI.
            if doc.get("mediaType").is_some() || !oci {
                doc["mediaType"] = manifest_type.into();
            }
            if media::is_config(doc["config"]["mediaType"].as_str().unwrap_or("")) {
                doc["config"]["mediaType"] = config_type.into();
            }
            if let Some(layers) = doc["layers"].as_array_mut() {
                for (l, c) in layers.iter_mut().zip(&compressions) {
                    let mt = l["mediaType"].as_str().unwrap_or("").to_string();
                    if media::is_foreign_layer(&mt) || mt.contains("nondistributable") {
                        continue;
                    }
                    if let Some(c) = c {
                        l["mediaType"] = layer_type(*c, oci).into();
                    }
                }
            }
        } else if let Some(layers) = doc["layers"].as_array_mut() {
            // Keep the manifest's family for re-encoded layers.
            for (l, c) in layers.iter_mut().zip(&compressions) {
                if let Some(c) = c {
                    let mt = l["mediaType"].as_str().unwrap_or("").to_string();
                    if !media::is_foreign_layer(&mt) && !mt.contains("nondistributable") {
                        l["mediaType"] = layer_type(*c, oci).into();
                    }
                }
            }
        }
        if let Some(cfg) = config_doc {
            let c = self.write_blob(&canonical_json(&cfg)?)?;
            doc["config"]["digest"] = c.digest.to_string().into();
            doc["config"]["size"] = c.size.into();
        }
        let a = &opts.annotations;
        let platform = if a.manifest_for.is_empty() {
            None
        } else {
            self.manifest_platform(desc, &doc)?
        };
        let ann = Annotations::for_platform(&a.manifest, &a.manifest_for, platform.as_ref());
        annotate_doc(&mut doc, &ann);
        let manifest_type = if oci_asked {
            manifest_type
        } else {
            static_type(&stored_type)
        };
        self.write_doc(desc, &doc, bytes, manifest_type)
    }

    /// A manifest's platform: its descriptor's, else its config's.
    fn manifest_platform(&self, desc: &Descriptor, doc: &Value) -> Result<Option<Platform>> {
        if let Some(p) = desc.platform() {
            return Ok(Some(Platform::from(p)));
        }
        let Some(d) = doc["config"]["digest"].as_str() else {
            return Ok(None);
        };
        let digest: Digest = d.parse()?;
        let bytes = self.read_blob(&digest, MAX_JSON_BLOB)?;
        let cfg = image::ImageConfig::parse(&bytes, &format!("config {digest}"))?;
        Ok(Some(cfg.platform()))
    }

    /// The descriptor of `doc`: `desc` itself when `doc` is what `bytes` held.
    fn write_doc(
        &self,
        desc: &Descriptor,
        doc: &Value,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<Descriptor> {
        let original: Value =
            serde_json::from_slice(bytes).map_err(|e| StoreError::json("manifest", e))?;
        if original == *doc {
            return Ok(desc.clone());
        }
        let c = self.write_blob(&canonical_json(doc)?)?;
        let mut out = image::descriptor(media_type, &c.digest, c.size);
        if let Some(p) = desc.platform() {
            out.set_platform(Some(p.clone()));
        }
        Ok(out)
    }
}

fn layer_type(c: Compression, oci: bool) -> &'static str {
    match (c, oci) {
        (c, true) => c.oci_media_type(),
        (Compression::None, false) => media::DOCKER_LAYER,
        (_, false) => media::DOCKER_LAYER_GZIP,
    }
}

/// The known media type equal to `s` (so descriptors get a `'static` string).
fn static_type(s: &str) -> &'static str {
    [
        media::OCI_MANIFEST,
        media::OCI_INDEX,
        media::DOCKER_MANIFEST,
        media::DOCKER_MANIFEST_LIST,
    ]
    .into_iter()
    .find(|t| *t == s)
    .unwrap_or(media::OCI_MANIFEST)
}

fn annotate_doc(doc: &mut Value, ann: &BTreeMap<String, String>) {
    if ann.is_empty() {
        return;
    }
    let Some(obj) = doc.as_object_mut() else {
        return;
    };
    let entry = obj
        .entry("annotations")
        .or_insert_with(|| Value::Object(Default::default()));
    if let Value::Object(m) = entry {
        for (k, v) in ann {
            m.insert(k.clone(), v.clone().into());
        }
    }
}

fn add_annotations(desc: &mut Descriptor, ann: &BTreeMap<String, String>) {
    if ann.is_empty() {
        return;
    }
    let mut all = desc.annotations().clone().unwrap_or_default();
    all.extend(ann.iter().map(|(k, v)| (k.clone(), v.clone())));
    desc.set_annotations(Some(all.into_iter().collect()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::ImportOptions;
    use crate::ImageRef;

    fn image(dir: &std::path::Path) -> (Store, Descriptor) {
        let store = Store::open(dir.join("store")).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_mtime(2_000_000_000);
        h.set_cksum();
        b.append_data(&mut h, "f", &b"abc"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let desc = store
            .import_rootfs(
                &tar[..],
                &ImageRef::parse("x:1").unwrap(),
                ImportOptions::for_test(),
            )
            .unwrap();
        (store, desc)
    }

    fn doc(store: &Store, d: &Descriptor) -> Value {
        let digest = image::descriptor_digest(d).unwrap();
        serde_json::from_slice(&store.read_blob(&digest, MAX_JSON_BLOB).unwrap()).unwrap()
    }

    #[test]
    fn nothing_asked_is_the_stored_image() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, desc) = image(tmp.path());
        let same = store
            .convert_image(
                &desc,
                &ConvertOptions {
                    oci_media_types: Some(true),
                    compression: Some(Compression::Gzip),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(same.digest(), desc.digest());
    }

    #[test]
    fn docker_types_zstd_refusal_and_annotations() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, desc) = image(tmp.path());
        let mut opts = ConvertOptions {
            oci_media_types: Some(false),
            ..Default::default()
        };
        opts.annotations.manifest.insert("k".into(), "v".into());
        opts.annotations
            .manifest_descriptor
            .insert("d".into(), "1".into());
        let out = store.convert_image(&desc, &opts).unwrap();
        assert_eq!(out.media_type().to_string(), media::DOCKER_MANIFEST);
        assert_eq!(out.annotations().as_ref().unwrap()["d"], "1");
        let m = doc(&store, &out);
        assert_eq!(m["mediaType"], media::DOCKER_MANIFEST);
        assert_eq!(m["config"]["mediaType"], media::DOCKER_CONFIG);
        assert_eq!(m["layers"][0]["mediaType"], media::DOCKER_LAYER_GZIP);
        assert_eq!(m["annotations"]["k"], "v");
        // The config is the same blob: only the manifest changed.
        assert_eq!(
            m["config"]["digest"],
            doc(&store, &desc)["config"]["digest"]
        );
        let e = store
            .convert_image(
                &desc,
                &ConvertOptions {
                    oci_media_types: Some(false),
                    compression: Some(Compression::Zstd),
                    ..Default::default()
                },
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("zstd"), "{e}");
        // BuildKit's default-types rule: zstd turns OCI types on.
        let out = store
            .convert_image(
                &desc,
                &ConvertOptions {
                    oci_media_types: Some(false),
                    oci_for_zstd: true,
                    compression: Some(Compression::Zstd),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(
            doc(&store, &out)["layers"][0]["mediaType"],
            media::OCI_LAYER_ZSTD
        );
        let mut index_ann = ConvertOptions::default();
        index_ann.annotations.index.insert("i".into(), "1".into());
        let e = store
            .convert_image(&desc, &index_ann)
            .unwrap_err()
            .to_string();
        assert!(e.contains("index annotations"), "{e}");
    }

    #[test]
    fn clamping_changes_diff_ids_but_not_base_layers() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, desc) = image(tmp.path());
        let base = doc(&store, &desc);
        let img = store.load_image(&desc).unwrap();
        let opts = ConvertOptions {
            clamp_mtime: Some(1_000),
            ..Default::default()
        };
        let out = store.convert_image(&desc, &opts).unwrap();
        let clamped = store.load_image(&out).unwrap();
        assert_ne!(clamped.config.rootfs.diff_ids, img.config.rootfs.diff_ids);
        // The same layer as the base's: left alone.
        let kept = store
            .convert_image(
                &desc,
                &ConvertOptions {
                    base_diff_ids: vec![img.config.rootfs.diff_ids.clone()],
                    ..opts
                },
            )
            .unwrap();
        assert_eq!(doc(&store, &kept)["layers"], base["layers"]);
    }
}
