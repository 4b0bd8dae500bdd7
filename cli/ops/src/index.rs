//! `index create`: an OCI image index from existing images, as
//! `docker buildx imagetools create` makes one. Each source gives its entries: a
//! single image one, whose platform is read from its config; an index each of its
//! entries, as written (annotations and `os.version` kept). Two entries for one
//! platform are refused, naming both sources (entries without a platform, or
//! `unknown/unknown` attestations, are not compared).
//!
//! Two places, one rule each, so a user never wonders which was read:
//! - in the store (the default): sources are store images, the index is written
//!   to the store and tagged, as `build --platform a,b` does. A source the store
//!   lacks is read from its registry when its name writes one (as `inspect`
//!   decides), copied in whole and left untagged;
//! - in a registry (`--push`): sources are registry references, as imagetools
//!   reads them. An entry missing from the destination repository is copied there
//!   first (mounted when it lives on the same registry), then the index is put.
//!
//! One source that is itself an index, with no annotation, is a carbon copy (the
//! same digest), as imagetools does.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use layer_cache::image::{canonical_json, descriptor_digest};
use layer_cache::{Digest, ImageRef, Store};
use registry_client::transfer::{
    self, BlobOutcome, BlobWrite, ImageSink, Registry, Transfer, TransferReporter,
};
use registry_client::{Client, Manifest, ManifestBody, Platform, Reference};
use serde_json::{Map, Value};

use crate::store_io::StoreIo;
use crate::{OpsError, Result};

/// `--annotation` values, split by where they go.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Annotations {
    /// `index:K=V` and plain `K=V`: on the index itself.
    pub index: BTreeMap<String, String>,
    /// `manifest-descriptor:K=V`: on every entry of the index.
    pub descriptor: BTreeMap<String, String>,
}

impl Annotations {
    /// Parses `[index:|manifest-descriptor:]KEY=VALUE` (imagetools' types; a
    /// type that names a manifest is refused, as no manifest is written).
    pub fn parse(values: &[String]) -> Result<Annotations> {
        let mut a = Annotations::default();
        for v in values {
            let (kind, kv) = match v.split_once(':') {
                Some((k, rest)) if !k.contains('=') => (k, rest),
                _ => ("index", v.as_str()),
            };
            let Some((key, value)) = kv.split_once('=').filter(|(k, _)| !k.is_empty()) else {
                return Err(OpsError::invalid(format!(
                    "--annotation {v:?}: expected [index:|manifest-descriptor:]KEY=VALUE"
                )));
            };
            let map = match kind {
                "index" => &mut a.index,
                "manifest-descriptor" => &mut a.descriptor,
                "manifest" | "index-descriptor" => {
                    return Err(OpsError::invalid(format!(
                        "--annotation {v:?}: index create writes no manifest and no descriptor of the index; use index: or manifest-descriptor:"
                    )))
                }
                other => {
                    return Err(OpsError::invalid(format!(
                        "--annotation {v:?}: unknown type {other:?} (index or manifest-descriptor)"
                    )))
                }
            };
            map.insert(key.to_string(), value.to_string());
        }
        Ok(a)
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty() && self.descriptor.is_empty()
    }
}

/// One entry of the index being made: the descriptor as it will be written.
#[derive(Debug, Clone)]
pub struct Entry {
    pub descriptor: Map<String, Value>,
    pub digest: Digest,
    pub platform: Option<Platform>,
    /// The source it came from (for messages).
    pub source: String,
}

/// What was made: the index's digest and its entries.
#[derive(Debug, Clone)]
pub struct Created {
    pub digest: Digest,
    pub size: u64,
    pub entries: Vec<Entry>,
}

fn entry(
    source: &str,
    media_type: &str,
    digest: &Digest,
    size: u64,
    platform: Option<Platform>,
) -> Entry {
    let mut d = Map::new();
    d.insert("mediaType".into(), media_type.into());
    d.insert("digest".into(), digest.to_string().into());
    d.insert("size".into(), size.into());
    if let Some(p) = &platform {
        d.insert("platform".into(), platform_json(p));
    }
    Entry {
        descriptor: d,
        digest: digest.clone(),
        platform,
        source: source.to_string(),
    }
}

fn platform_json(p: &Platform) -> Value {
    let mut v = serde_json::json!({"architecture": p.architecture, "os": p.os});
    if let Some(variant) = &p.variant {
        v["variant"] = variant.clone().into();
    }
    v
}

/// An index's own entries, as its bytes write them.
fn entries_of(source: &str, index_bytes: &[u8]) -> Result<Vec<Entry>> {
    let v: Value = serde_json::from_slice(index_bytes).map_err(|source| OpsError::Json {
        what: "index",
        source,
    })?;
    let list = v
        .get("manifests")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    list.into_iter()
        .map(|m| {
            let Value::Object(descriptor) = m else {
                return Err(OpsError::invalid(format!(
                    "{source}: an index entry is not an object"
                )));
            };
            let digest = descriptor
                .get("digest")
                .and_then(Value::as_str)
                .and_then(|d| d.parse::<Digest>().ok())
                .ok_or_else(|| {
                    OpsError::invalid(format!("{source}: an index entry has no valid digest"))
                })?;
            let platform = descriptor
                .get("platform")
                .and_then(|p| serde_json::from_value::<Platform>(p.clone()).ok());
            Ok(Entry {
                descriptor,
                digest,
                platform,
                source: source.to_string(),
            })
        })
        .collect()
}

/// Refuses two entries for one platform (normalised, so `arm64/v8` is `arm64`).
pub fn check_duplicates(entries: &[Entry]) -> Result<()> {
    let mut seen: BTreeMap<String, &Entry> = BTreeMap::new();
    for e in entries {
        let Some(p) = &e.platform else { continue };
        if p.os == "unknown" || p.os.is_empty() {
            continue;
        }
        let key = p.normalized().to_string();
        if let Some(first) = seen.get(&key) {
            return Err(OpsError::invalid(format!(
                "platform {key} is given twice: by {} and by {}",
                first.source, e.source
            )));
        }
        seen.insert(key, e);
    }
    Ok(())
}

/// The index document: sorted keys, so equal inputs give equal digests.
pub fn index_bytes(entries: &[Entry], ann: &Annotations) -> Result<Vec<u8>> {
    let manifests: Vec<Value> = entries
        .iter()
        .map(|e| {
            let mut d = e.descriptor.clone();
            if !ann.descriptor.is_empty() {
                let mut a = d
                    .get("annotations")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                for (k, v) in &ann.descriptor {
                    a.insert(k.clone(), v.clone().into());
                }
                d.insert("annotations".into(), Value::Object(a));
            }
            Value::Object(d)
        })
        .collect();
    let mut doc = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": layer_cache::image::OCI_INDEX,
        "manifests": manifests,
    });
    if !ann.index.is_empty() {
        doc["annotations"] = serde_json::to_value(&ann.index).map_err(OpsError::Serialize)?;
    }
    Ok(canonical_json(&doc)?)
}

/// `index create` in the store: `sources` are store images; the index is
/// stored and tagged `dest`. A source the store lacks whose name writes its
/// registry is copied into the store from there (every platform of an index),
/// untagged: only the new index names it.
pub async fn create_in_store(
    store: &Store,
    client: &Arc<Client>,
    sources: &[String],
    dest: &str,
    ann: &Annotations,
    reporter: Arc<dyn TransferReporter>,
) -> Result<Created> {
    let name = ImageRef::parse(dest)?;
    if name.digest.is_some() {
        return Err(OpsError::TagWithDigest {
            name: dest.to_string(),
        });
    }
    // Held from the first blob written until the tag names it.
    let _usage = store.usage_lock()?;
    let mut entries = Vec::new();
    let mut only_index = None;
    for src in sources {
        let desc = match store.resolve(src) {
            Ok(d) => d,
            Err(layer_cache::StoreError::ImageNotFound(_))
                if crate::remote::names_registry(src) =>
            {
                fetch_untagged(store, client, &Reference::parse(src)?, reporter.clone()).await?
            }
            Err(layer_cache::StoreError::ImageNotFound(_)) => {
                return Err(OpsError::invalid(format!(
                    "{src}: not in the store (name its registry, e.g. localhost:5000/{src}, to read it from there)"
                )))
            }
            Err(e) => return Err(e.into()),
        };
        if let Some((bytes, _)) = store.index_children(&desc)? {
            only_index = Some(desc.clone());
            entries.extend(entries_of(src, &bytes)?);
        } else {
            let img = store.load_image(&desc)?;
            entries.push(entry(
                src,
                desc.media_type().as_ref(),
                &img.manifest_digest,
                desc.size(),
                Some(img.config.platform()),
            ));
        }
    }
    check_duplicates(&entries)?;
    let desc = match only_index.filter(|_| sources.len() == 1 && ann.is_empty()) {
        Some(desc) => desc,
        None => {
            let bytes = index_bytes(&entries, ann)?;
            let c = store.write_blob(&bytes)?;
            layer_cache::image::descriptor(layer_cache::image::OCI_INDEX, &c.digest, c.size)
        }
    };
    store.set_tag(&name, &desc)?;
    Ok(Created {
        digest: descriptor_digest(&desc)?,
        size: desc.size(),
        entries,
    })
}

/// Copies the image `r` names (an index whole) from its registry into the store
/// without tagging anything; returns its descriptor.
async fn fetch_untagged(
    store: &Store,
    client: &Arc<Client>,
    r: &Reference,
    reporter: Arc<dyn TransferReporter>,
) -> Result<layer_cache::oci_spec::image::Descriptor> {
    let t = Transfer::new(reporter, client.options().max_concurrent_per_host);
    let sink = Arc::new(Untagged(StoreIo::new(store), store.clone()));
    let source = Arc::new(Registry::new(client.clone()));
    let digest = transfer::copy(&t, source, sink.clone(), r, r, &Platform::host(), true).await?;
    sink.0.save_sources();
    let bytes = store.read_blob(&digest, registry_client::manifest::MAX_MANIFEST)?;
    let m = Manifest::new(bytes, None)?;
    Ok(layer_cache::image::descriptor(
        &m.media_type,
        &m.digest,
        m.bytes.len() as u64,
    ))
}

/// The store as a sink that keeps manifests without naming them.
struct Untagged(StoreIo, Store);

impl ImageSink for Untagged {
    fn verifies_digests(&self) -> bool {
        self.0.verifies_digests()
    }

    fn has_blob<'a>(
        &'a self,
        to: &'a Reference,
        blob: &'a registry_client::Descriptor,
    ) -> BoxFuture<'a, transfer::Result<bool>> {
        self.0.has_blob(to, blob)
    }

    fn has_manifest<'a>(
        &'a self,
        to: &'a Reference,
        digest: &'a Digest,
    ) -> BoxFuture<'a, transfer::Result<bool>> {
        self.0.has_manifest(to, digest)
    }

    fn write_blob<'a>(
        &'a self,
        to: &'a Reference,
        w: BlobWrite<'a>,
    ) -> BoxFuture<'a, transfer::Result<BlobOutcome>> {
        self.0.write_blob(to, w)
    }

    fn write_manifest<'a>(
        &'a self,
        to: &'a Reference,
        m: &'a Manifest,
        _upstream_index: Option<&'a Digest>,
    ) -> BoxFuture<'a, transfer::Result<()>> {
        Box::pin(async move {
            let stored = (|| {
                let c = self.1.write_blob(&m.bytes)?;
                if c.digest != m.digest {
                    return Err(OpsError::ManifestDigestMismatch {
                        reference: to.to_string(),
                    });
                }
                Ok(())
            })();
            stored.map_err(|e| match e {
                OpsError::Transfer(t) => t,
                e => transfer::TransferError::endpoint(e),
            })
        })
    }

    fn record_pulled(&self, from: &Reference, digests: &[Digest]) {
        self.0.record_pulled(from, digests)
    }
}

/// `index create --push`: `sources` are read from their registries; each entry
/// the destination's repository lacks is copied there (mounted from a source on
/// the same registry), then the index is put under `dest`.
pub async fn create_in_registry(
    client: &Arc<Client>,
    sources: &[Reference],
    dest: &Reference,
    ann: &Annotations,
    reporter: Arc<dyn TransferReporter>,
) -> Result<Created> {
    let mut dest = dest.clone();
    if dest.tag.is_none() && dest.digest.is_none() {
        dest.tag = Some("latest".into());
    }
    let mut entries = Vec::new();
    let mut tops = Vec::new();
    for src in sources {
        let top = client.get_manifest(src).await?;
        let shown = src.to_string();
        if let ManifestBody::Index { .. } = top.body()? {
            for e in entries_of(&shown, &top.bytes)? {
                tops.push((src.clone(), e.digest.clone()));
                entries.push(e);
            }
        } else {
            let config = crate::remote::config_of(client, src, &top).await?;
            let platform = crate::remote::config_platform(&config, &format!("config of {src}"))?;
            tops.push((src.clone(), top.digest.clone()));
            entries.push(entry(
                &shown,
                &top.media_type,
                &top.digest,
                top.bytes.len() as u64,
                Some(platform),
            ));
        }
        if sources.len() == 1 && ann.is_empty() && top.is_index() {
            // A carbon copy, as imagetools makes of one index.
            let t = Transfer::new(reporter, client.options().max_concurrent_per_host);
            let registry = Arc::new(Registry::new(client.clone()));
            let digest = transfer::copy(
                &t,
                registry.clone(),
                registry,
                src,
                &dest,
                &Platform::host(),
                true,
            )
            .await?;
            return Ok(Created {
                digest,
                size: top.bytes.len() as u64,
                entries,
            });
        }
    }
    check_duplicates(&entries)?;
    let t = Transfer::new(reporter, client.options().max_concurrent_per_host);
    let registry = Arc::new(Registry::new(client.clone()));
    for (src, digest) in &tops {
        if client.has_manifest(&dest, digest).await? {
            continue;
        }
        let from = src.with_reference(None, Some(digest.clone()));
        let to = dest.with_reference(None, Some(digest.clone()));
        transfer::copy(
            &t,
            registry.clone(),
            registry.clone(),
            &from,
            &to,
            &Platform::host(),
            true,
        )
        .await?;
    }
    let bytes = index_bytes(&entries, ann)?;
    let m = Manifest::new(bytes, Some(layer_cache::image::OCI_INDEX))?;
    client.put_manifest(&dest, &m).await?;
    Ok(Created {
        digest: m.digest.clone(),
        size: m.bytes.len() as u64,
        entries,
    })
}

/// An index as `index inspect` shows it.
#[derive(Debug, Clone)]
pub struct IndexView {
    /// Read from the store (else from the registry).
    pub in_store: bool,
    pub digest: Digest,
    pub media_type: String,
    /// As stored or served.
    pub bytes: Vec<u8>,
    pub entries: Vec<Entry>,
    pub annotations: BTreeMap<String, String>,
}

fn view(in_store: bool, name: &str, media_type: String, bytes: Vec<u8>) -> Result<IndexView> {
    let entries = entries_of(name, &bytes)?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|source| OpsError::Json {
        what: "index",
        source,
    })?;
    let annotations = v
        .get("annotations")
        .and_then(Value::as_object)
        .map(|a| {
            a.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default();
    Ok(IndexView {
        in_store,
        digest: Digest::of(&bytes),
        media_type,
        bytes,
        entries,
        annotations,
    })
}

fn not_an_index(name: &str) -> OpsError {
    OpsError::invalid(format!(
        "{name} is a single image, not an index (see inspect or manifest)"
    ))
}

/// The index `name` names in the store; `None` when the store has no such image.
pub fn view_in_store(store: &Store, name: &str) -> Result<Option<IndexView>> {
    let desc = match store.resolve(name) {
        Ok(d) => d,
        Err(layer_cache::StoreError::ImageNotFound(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let Some((bytes, _)) = store.index_children(&desc)? else {
        return Err(not_an_index(name));
    };
    view(true, name, desc.media_type().to_string(), bytes).map(Some)
}

/// The index `r` names in its registry.
pub async fn view_in_registry(client: &Arc<Client>, r: &Reference) -> Result<IndexView> {
    let m = client.get_manifest(r).await?;
    if !m.is_index() {
        return Err(not_an_index(&r.to_string()));
    }
    view(false, &r.to_string(), m.media_type, m.bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_split_by_type_and_refuse_manifest() {
        let a = Annotations::parse(&[
            "org.example.a=1".into(),
            "index:org.example.b=x=y".into(),
            "manifest-descriptor:org.example.c=3".into(),
        ])
        .unwrap();
        assert_eq!(a.index.get("org.example.a").unwrap(), "1");
        assert_eq!(a.index.get("org.example.b").unwrap(), "x=y");
        assert_eq!(a.descriptor.get("org.example.c").unwrap(), "3");
        let e = Annotations::parse(&["manifest:k=v".into()]).unwrap_err();
        assert!(e.to_string().contains("writes no manifest"), "{e}");
        assert!(Annotations::parse(&["novalue".into()]).is_err());
    }

    #[test]
    fn duplicate_platforms_are_refused_by_name() {
        let d = Digest::of(b"a");
        let p = |s: &str| Some(Platform::parse(s).unwrap());
        let es = vec![
            entry("a:1", "m", &d, 1, p("linux/arm64")),
            entry("b:1", "m", &d, 1, p("linux/arm64/v8")),
        ];
        let e = check_duplicates(&es).unwrap_err().to_string();
        assert_eq!(e, "platform linux/arm64 is given twice: by a:1 and by b:1");
        let attest = Platform::new("unknown", "unknown", None);
        let es = vec![
            entry("a:1", "m", &d, 1, Some(attest.clone())),
            entry("b:1", "m", &d, 1, Some(attest)),
        ];
        check_duplicates(&es).unwrap();
    }
}
