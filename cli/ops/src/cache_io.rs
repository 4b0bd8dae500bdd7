//! `build --cache-to` / `--cache-from`: step-cache records carried to another machine
//! as one OCI artifact ([`layer_cache::cache_artifact`]), in an OCI image layout
//! directory (`type=local`) or a registry (`type=registry`). Imported records are
//! found by the same lookups as local ones; their layer blobs are fetched (and
//! verified) only when a record is used.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use builder::exec::{CacheMountSource, LayerSource, UsedKeys};
use layer_cache::cache_artifact::{
    Added, CacheArtifact, CacheContents, CacheManifest, MountExport, MountPart,
};
use layer_cache::image::descriptor_digest;
use layer_cache::image::Compression;
use layer_cache::layer::LayerOptions;
use layer_cache::layout::LayoutDir;
use layer_cache::oci_spec::image::Descriptor as OciDescriptor;
use layer_cache::unpack::UnpackOptions;
use layer_cache::variant::ExportCodec;
use layer_cache::Store;
use registry_client::manifest::OCI_MANIFEST;
use registry_client::transfer::{ImageSource, Registry, TransferError};
use registry_client::{Client, Manifest, Reference};

use crate::registry;
use crate::{chain_text, Event, OpsError, Reporter, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    Registry(Reference),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The records making up the final image (BuildKit's default).
    Min,
    /// Every built stage's records.
    Max,
}

#[derive(Debug, Clone)]
pub struct CacheSpec {
    pub location: Location,
    pub mode: Mode,
    /// `--cache-to ignore-error=true`: a failed export is a warning.
    pub ignore_error: bool,
    /// `--cache-to cache-mounts=true`: the build's `type=cache` directories too.
    pub cache_mounts: bool,
}

impl std::fmt::Display for CacheSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.location {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::Registry(r) => write!(f, "{r}"),
        }
    }
}

/// Parses a `--cache-to` (`export`) or `--cache-from` value as BuildKit does:
/// `type=local,dest=DIR|src=DIR`, `type=registry,ref=REF`, or a bare `REF`.
pub fn parse(value: &str, export: bool) -> Result<CacheSpec> {
    let flag = if export { "--cache-to" } else { "--cache-from" };
    if !value.contains('=') {
        if value.is_empty() {
            return Err(OpsError::invalid(format!("{flag}: empty value")));
        }
        return Ok(CacheSpec {
            location: Location::Registry(
                Reference::parse(value)
                    .map_err(|e| OpsError::invalid_because(format!("{flag} {value}"), e))?,
            ),
            mode: Mode::Min,
            ignore_error: false,
            cache_mounts: false,
        });
    }
    let mut kv = BTreeMap::new();
    for part in value.split(',') {
        let (k, v) = part.split_once('=').ok_or_else(|| {
            OpsError::invalid(format!(
                "{flag} {value:?}: expected KEY=VALUE, got {part:?}"
            ))
        })?;
        kv.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let kind = kv.remove("type").ok_or_else(|| {
        OpsError::invalid(format!(
            "{flag} {value:?}: type= is required (local or registry)"
        ))
    })?;
    let dir_key = if export { "dest" } else { "src" };
    let location = match kind.as_str() {
        "local" => {
            let dir = kv
                .remove(dir_key)
                .filter(|d| !d.is_empty())
                .ok_or_else(|| {
                    OpsError::invalid(format!("{flag} {value:?}: type=local needs {dir_key}=DIR"))
                })?;
            Location::Local(PathBuf::from(dir))
        }
        "registry" => {
            let r = kv.remove("ref").filter(|r| !r.is_empty()).ok_or_else(|| {
                OpsError::invalid(format!("{flag} {value:?}: type=registry needs ref=REF"))
            })?;
            Location::Registry(
                Reference::parse(&r)
                    .map_err(|e| OpsError::invalid_because(format!("{flag} {value}"), e))?,
            )
        }
        other => {
            return Err(OpsError::invalid(format!(
                "{flag}: cache type {other:?} is not supported (mybuild supports type=local and \
                 type=registry)"
            )))
        }
    };
    let mut spec = CacheSpec {
        location,
        mode: Mode::Min,
        ignore_error: false,
        cache_mounts: false,
    };
    for (k, v) in kv {
        match k.as_str() {
            "mode" if export => {
                spec.mode = match v.as_str() {
                    "min" => Mode::Min,
                    "max" => Mode::Max,
                    _ => {
                        return Err(OpsError::invalid(format!(
                            "{flag} {value:?}: mode must be min or max, not {v:?}"
                        )))
                    }
                }
            }
            "ignore-error" | "cache-mounts" if export => {
                let on = match v.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(OpsError::invalid(format!(
                            "{flag} {value:?}: {k} must be true or false"
                        )))
                    }
                };
                if k == "ignore-error" {
                    spec.ignore_error = on;
                } else {
                    spec.cache_mounts = on;
                }
            }
            // BuildKit's switches for registries that need an image manifest: ours
            // always is one.
            "image-manifest" | "oci-mediatype" if export => {}
            _ => {
                return Err(OpsError::invalid(format!(
                    "{flag} {value:?}: unknown option {k:?}"
                )))
            }
        }
    }
    Ok(spec)
}

/// One imported cache: where its layers are.
struct Source {
    spec: CacheSpec,
    /// Layer digest → size, as its manifest lists them.
    layers: BTreeMap<layer_cache::Digest, u64>,
    /// Cache mounts exported with it.
    mounts: Vec<MountExport>,
}

/// The imported caches, serving their layer blobs to the build on first use.
pub struct Imported {
    store: Store,
    sources: Vec<Source>,
    remote: Option<(Arc<Client>, tokio::runtime::Runtime)>,
    /// Layers fetched (count, bytes).
    fetched: Mutex<(u64, u64)>,
    warnings: Mutex<Vec<String>>,
}

impl Imported {
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// Whether any source carries cache mounts.
    pub fn has_mounts(&self) -> bool {
        self.sources.iter().any(|s| !s.mounts.is_empty())
    }

    fn warn(&self, text: String) {
        if let Ok(mut w) = self.warnings.lock() {
            w.push(text);
        }
    }

    /// Unpacks `mount`'s parts into `dir`, fetching each from `src` when the
    /// store lacks it; returns the bytes fetched.
    fn restore_from(&self, src: &Source, mount: &MountExport, dir: &Path) -> Result<u64> {
        let mut fetched = 0;
        for part in &mount.parts {
            let digest = descriptor_digest(&part.layer)?;
            if !self.store.has_blob(&digest) {
                self.fetch_from(src, &part.layer)?;
                fetched += part.layer.size();
            }
            let tar = self.store.open_layer(&part.layer)?;
            layer_cache::unpack::unpack(tar, dir, &UnpackOptions::default()).map_err(|source| {
                OpsError::CacheMountPart {
                    digest: digest.clone(),
                    source,
                }
            })?;
        }
        Ok(fetched)
    }

    /// What the build fetched, and what failed, after the build.
    pub fn report(&self, say: &dyn Reporter) {
        if let Ok(w) = self.warnings.lock() {
            for w in w.iter() {
                say.event(Event::warning(w.as_str()));
            }
        }
        let (n, bytes) = self.fetched.lock().map(|f| *f).unwrap_or_default();
        if n > 0 {
            say.event(Event::CacheFetched {
                layers: n,
                size: bytes,
            });
        }
    }

    fn fetch_from(&self, src: &Source, d: &OciDescriptor) -> Result<()> {
        let digest = descriptor_digest(d)?;
        match &src.spec.location {
            Location::Local(dir) => {
                let path = LayoutDir::open(dir).blob_path(&digest);
                let f = std::fs::File::open(&path).map_err(OpsError::io("opening", &path))?;
                let mut w = self.store.ingest()?;
                // One byte more than expected, so a longer file fails the size check.
                std::io::copy(&mut f.take(d.size().saturating_add(1)), &mut w)
                    .map_err(OpsError::io("reading", &path))?;
                w.commit(Some(&digest), Some(d.size()))?;
            }
            Location::Registry(r) => {
                let (client, rt) = self.remote.as_ref().ok_or(OpsError::NoRegistryClient)?;
                let rd = registry_client::Descriptor {
                    media_type: d.media_type().to_string(),
                    digest: digest.clone(),
                    size: d.size(),
                    platform: None,
                    urls: Vec::new(),
                };
                rt.block_on(registry::pull_blob_quietly(&self.store, client, r, &rd))?;
            }
        }
        Ok(())
    }
}

impl LayerSource for Imported {
    fn fetch(&self, layer: &OciDescriptor) -> bool {
        let Ok(digest) = descriptor_digest(layer) else {
            return false;
        };
        for src in &self.sources {
            if src.layers.get(&digest) != Some(&layer.size()) {
                continue;
            }
            match self.fetch_from(src, layer) {
                Ok(()) => {
                    if let Ok(mut f) = self.fetched.lock() {
                        f.0 += 1;
                        f.1 += layer.size();
                    }
                    return true;
                }
                Err(e) => self.warn(format!(
                    "cache layer {digest} from {}: {}; the step ran instead",
                    src.spec,
                    chain_text(&e)
                )),
            }
        }
        false
    }
}

impl CacheMountSource for Imported {
    fn restore(&self, id: &str, dir: &Path) -> bool {
        for src in &self.sources {
            let Some(mount) = src.mounts.iter().find(|m| m.id == id) else {
                continue;
            };
            match self.restore_from(src, mount, dir) {
                Ok(bytes) => {
                    if let Ok(mut f) = self.fetched.lock() {
                        f.0 += mount.parts.len() as u64;
                        f.1 += bytes;
                    }
                    return true;
                }
                Err(e) => {
                    self.warn(format!(
                        "cache mount {id:?} from {}: {}; it starts empty",
                        src.spec,
                        chain_text(&e)
                    ));
                    empty_dir(dir);
                }
            }
        }
        false
    }
}

/// Removes what a failed restore left in `dir`, keeping `dir`.
fn empty_dir(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in rd.flatten() {
        let path = entry.path();
        let removed = match entry.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
            _ => std::fs::remove_file(&path),
        };
        if let Err(e) = removed {
            tracing::debug!("emptying {}: {e}", path.display());
        }
    }
}

/// Reads every `--cache-from` and adds their records to the store's cache index.
/// A source that is missing or unreadable is a warning: the build runs without it.
pub fn import(
    store: &Store,
    specs: &[CacheSpec],
    insecure: &[String],
    say: &dyn Reporter,
) -> Imported {
    let needs_remote = specs
        .iter()
        .any(|s| matches!(s.location, Location::Registry(_)));
    let mut imported = Imported {
        store: store.clone(),
        sources: Vec::new(),
        remote: None,
        fetched: Mutex::new((0, 0)),
        warnings: Mutex::new(Vec::new()),
    };
    if needs_remote {
        match registry::runtime() {
            Ok(rt) => imported.remote = Some((registry::client(insecure), rt)),
            Err(e) => say.event(Event::warning(format!(
                "importing cache: {}",
                chain_text(&e)
            ))),
        }
    }
    for spec in specs {
        match read_cache(&imported, spec).and_then(|contents| {
            let layers = contents.layers.clone();
            let mounts = contents.mounts.clone();
            Ok((contents.add_to(store)?, layers, mounts))
        }) {
            Ok((Added { records, skipped }, layers, mounts)) => {
                let bytes: u64 = layers.values().sum();
                say.event(Event::CacheImport {
                    source: spec.to_string(),
                    records,
                    layers: layers.len() as u64,
                    size: bytes,
                    skipped,
                });
                imported.sources.push(Source {
                    spec: spec.clone(),
                    layers,
                    mounts,
                });
            }
            Err(e) => say.event(Event::warning(format!(
                "importing cache from {spec}: {}; building without it",
                chain_text(&e)
            ))),
        }
    }
    imported
}

/// The records and the layer list of one cache source.
fn read_cache(imp: &Imported, spec: &CacheSpec) -> Result<CacheContents> {
    match &spec.location {
        Location::Local(dir) => Ok(CacheContents::read_local(dir)?),
        Location::Registry(r) => {
            let (client, rt) = imp.remote.as_ref().ok_or(OpsError::NoRegistryClient)?;
            let source = Registry::new(client.clone());
            rt.block_on(async {
                let m = match source.manifest(r, None).await {
                    Ok(m) => m,
                    Err(TransferError::Registry(registry_client::Error::NotFound { .. })) => {
                        return Err(OpsError::CacheNotFound)
                    }
                    Err(e) => return Err(e.into()),
                };
                let m = CacheManifest::parse(&m.bytes, &r.to_string())?;
                let config = m.records_blob()?;
                let config = registry_client::Descriptor {
                    media_type: config.media_type().to_string(),
                    digest: descriptor_digest(config)?,
                    size: config.size(),
                    platform: None,
                    urls: Vec::new(),
                };
                // read_blob checks size and digest.
                let mut bytes = Vec::new();
                source.read_blob(r, &config, &mut bytes, &|_| {}).await?;
                Ok(m.contents(&bytes)?)
            })
        }
    }
}

/// Writes the records the build used (`mode=min`: the final image's, `max`: every
/// stage's) with their layers to `spec`.
pub fn export(
    store: &Store,
    spec: &CacheSpec,
    keys: &UsedKeys,
    codec: &ExportCodec,
    insecure: &[String],
    say: &dyn Reporter,
) -> Result<()> {
    let result = export_inner(store, spec, keys, codec, insecure, say);
    match result {
        Err(e) if spec.ignore_error => {
            say.event(Event::warning(format!(
                "exporting cache to {spec}: {} (ignore-error=true)",
                chain_text(&e)
            )));
            Ok(())
        }
        r => r.map_err(|e| OpsError::CacheExport {
            dest: spec.to_string(),
            source: Box::new(e),
        }),
    }
}

fn export_inner(
    store: &Store,
    spec: &CacheSpec,
    keys: &UsedKeys,
    codec: &ExportCodec,
    insecure: &[String],
    say: &dyn Reporter,
) -> Result<()> {
    // Nothing written to the store below may be pruned before it is referenced.
    let _usage = store.usage_lock()?;
    let used = keys;
    let keys = match spec.mode {
        Mode::Min => &keys.image,
        Mode::Max => &keys.all,
    };
    let mounts = if spec.cache_mounts {
        export_mounts(store, &used.cache_mounts)?
    } else {
        Vec::new()
    };
    let artifact = CacheArtifact::collect(store, keys, mounts, Some(codec))?;
    for step in &artifact.left_out {
        say.event(Event::warning(format!(
            "exporting cache: the layer of {step:?} is not in the store; its record is left out"
        )));
    }
    let n = artifact.records;
    let layers = &artifact.layers;
    let bytes = artifact.layer_bytes();
    let mode = match spec.mode {
        Mode::Min => "min",
        Mode::Max => "max",
    };
    say.event(Event::CacheExport {
        dest: spec.to_string(),
        mode,
        records: n,
        layers: layers.len() as u64,
        size: bytes,
    });
    let digest = match &spec.location {
        Location::Local(dir) => artifact.write_local(store, dir)?,
        Location::Registry(r) => {
            let mut dest = r.clone();
            if dest.tag.is_none() && dest.digest.is_none() {
                dest.tag = Some("latest".into());
            }
            store.write_blob(&artifact.config)?;
            let m = Manifest::new(artifact.manifest, Some(OCI_MANIFEST))?;
            let client = registry::client(insecure);
            let rt = registry::runtime()?;
            rt.block_on(registry::push_manifest(
                store,
                &client,
                &dest,
                &m,
                say.transfer(),
            ))?;
            m.digest
        }
    };
    say.event(Event::CacheExported {
        dest: spec.to_string(),
        digest,
    });
    Ok(())
}

/// The build's cache-mount directories as layers, in parts (see
/// [`builder::layer::write_dir_parts`]): zstd, quick to write and to unpack.
/// Ids without a directory (never opened on this machine) are passed over.
fn export_mounts(store: &Store, ids: &[String]) -> Result<Vec<MountExport>> {
    let opts = LayerOptions {
        compression: Compression::Zstd,
        level: None,
    };
    let mut out = Vec::new();
    for id in ids {
        let Some(cache) = store.existing_cache_mount(id)? else {
            continue;
        };
        let parts =
            builder::layer::write_dir_parts(store, cache.path(), opts).map_err(|source| {
                OpsError::CacheMountExport {
                    id: id.clone(),
                    source,
                }
            })?;
        out.push(MountExport {
            id: id.clone(),
            parts: parts
                .into_iter()
                .map(|(name, info)| MountPart {
                    name,
                    layer: info.descriptor(),
                })
                .collect(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_buildkit_cache_options() {
        let s = parse("type=local,dest=/tmp/c,mode=max", true).unwrap();
        assert_eq!(s.location, Location::Local("/tmp/c".into()));
        assert_eq!(s.mode, Mode::Max);
        let s = parse("type=local,src=/tmp/c", false).unwrap();
        assert_eq!(s.location, Location::Local("/tmp/c".into()));
        let s = parse("localhost:5000/app:cache", false).unwrap();
        assert!(
            matches!(s.location, Location::Registry(ref r) if r.tag.as_deref() == Some("cache"))
        );
        let s = parse(
            "type=registry,ref=localhost:5000/c:1,mode=min,ignore-error=true",
            true,
        )
        .unwrap();
        assert!(s.ignore_error);
        assert_eq!(s.mode, Mode::Min);
        for t in ["gha", "s3", "azblob", "inline"] {
            let e = parse(&format!("type={t}"), true).unwrap_err().to_string();
            assert!(
                e.contains(&format!("cache type \"{t}\" is not supported")),
                "{e}"
            );
        }
        let e = parse("type=local,src=/x", true).unwrap_err().to_string();
        assert!(e.contains("needs dest=DIR"), "{e}");
        let e = parse("type=local,src=/x,mode=max", false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown option \"mode\""), "{e}");
        let e = parse("type=local,dest=/x,mode=all", true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("mode must be min or max"), "{e}");
    }
}
