//! `build --cache-to` / `--cache-from`: step-cache records carried to another machine
//! as one OCI artifact, in an OCI image layout directory (`type=local`) or a registry
//! (`type=registry`). The artifact is an OCI image manifest whose config (media type
//! [`CACHE_CONFIG`]) is the JSON list of records and whose layers are the records'
//! layer blobs with their own media types. Keys are content-based and
//! machine-independent, so imported records are found by the same lookups as local
//! ones; their layer blobs are fetched (and verified) only when a record is used.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use builder::exec::{LayerSource, UsedKeys};
use layer_cache::cache_index::CacheRecord;
use layer_cache::image::descriptor_digest;
use layer_cache::oci_spec::image::Descriptor as OciDescriptor;
use layer_cache::{Digest, Store};
use registry_client::manifest::{OCI_INDEX, OCI_MANIFEST};
use registry_client::transfer::{ImageSource, Registry, TransferError};
use registry_client::{Client, Manifest, ManifestBody, Reference};
use serde::{Deserialize, Serialize};

use super::registry::{self, ProgressMode, RegistryOpts};

/// The artifact's config media type (also its `artifactType`). Distribution 2.8
/// (Debian's docker-registry) stores OCI manifests with any config media type, so
/// the artifact needs no disguise as an image.
pub const CACHE_CONFIG: &str = "application/vnd.mybuild.cache.v1+json";

/// The records list is read into memory; a bigger one is refused.
const MAX_RECORDS_BLOB: u64 = 64 << 20;

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
}

impl std::fmt::Display for CacheSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.location {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::Registry(r) => write!(f, "{r}"),
        }
    }
}

/// The config blob.
#[derive(Serialize, Deserialize)]
struct CacheFile {
    records: Vec<CacheRecord>,
}

/// Parses a `--cache-to` (`export`) or `--cache-from` value as BuildKit does:
/// `type=local,dest=DIR|src=DIR`, `type=registry,ref=REF`, or a bare `REF`.
pub fn parse(value: &str, export: bool) -> Result<CacheSpec> {
    let flag = if export { "--cache-to" } else { "--cache-from" };
    if !value.contains('=') {
        if value.is_empty() {
            bail!("{flag}: empty value");
        }
        return Ok(CacheSpec {
            location: Location::Registry(
                Reference::parse(value).with_context(|| format!("{flag} {value}"))?,
            ),
            mode: Mode::Min,
            ignore_error: false,
        });
    }
    let mut kv = BTreeMap::new();
    for part in value.split(',') {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| anyhow!("{flag} {value:?}: expected KEY=VALUE, got {part:?}"))?;
        kv.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let kind = kv
        .remove("type")
        .ok_or_else(|| anyhow!("{flag} {value:?}: type= is required (local or registry)"))?;
    let dir_key = if export { "dest" } else { "src" };
    let location = match kind.as_str() {
        "local" => {
            let dir = kv
                .remove(dir_key)
                .filter(|d| !d.is_empty())
                .ok_or_else(|| anyhow!("{flag} {value:?}: type=local needs {dir_key}=DIR"))?;
            Location::Local(PathBuf::from(dir))
        }
        "registry" => {
            let r = kv
                .remove("ref")
                .filter(|r| !r.is_empty())
                .ok_or_else(|| anyhow!("{flag} {value:?}: type=registry needs ref=REF"))?;
            Location::Registry(Reference::parse(&r).with_context(|| format!("{flag} {value}"))?)
        }
        other => bail!(
            "{flag}: cache type {other:?} is not supported (mybuild supports type=local and \
             type=registry)"
        ),
    };
    let mut spec = CacheSpec {
        location,
        mode: Mode::Min,
        ignore_error: false,
    };
    for (k, v) in kv {
        match k.as_str() {
            "mode" if export => {
                spec.mode = match v.as_str() {
                    "min" => Mode::Min,
                    "max" => Mode::Max,
                    _ => bail!("{flag} {value:?}: mode must be min or max, not {v:?}"),
                }
            }
            "ignore-error" if export => {
                spec.ignore_error = match v.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => bail!("{flag} {value:?}: ignore-error must be true or false"),
                }
            }
            // BuildKit's switches for registries that need an image manifest: ours
            // always is one.
            "image-manifest" | "oci-mediatype" if export => {}
            _ => bail!("{flag} {value:?}: unknown option {k:?}"),
        }
    }
    Ok(spec)
}

/// How cache transfers talk: plain lines, JSON events, or (quiet) warnings only.
#[derive(Clone, Copy)]
pub struct Say(pub ProgressMode);

impl Say {
    fn line(&self, event: serde_json::Value, text: String) {
        match self.0 {
            ProgressMode::Quiet => {}
            ProgressMode::Json => crate::progress::Json::emit(&event),
            _ => eprintln!("{text}"),
        }
    }

    pub fn warn(&self, text: &str) {
        match self.0 {
            ProgressMode::Json => crate::progress::Json::emit(&serde_json::json!({
                "event": "warning", "message": text,
            })),
            _ => eprintln!("warning: {text}"),
        }
    }
}

/// One imported cache: where its layers are.
struct Source {
    spec: CacheSpec,
    /// Layer digest → size, as its manifest lists them.
    layers: BTreeMap<String, u64>,
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

    /// What the build fetched, and what failed, after the build.
    pub fn report(&self, say: Say) {
        if let Ok(w) = self.warnings.lock() {
            for w in w.iter() {
                say.warn(w);
            }
        }
        let (n, bytes) = self.fetched.lock().map(|f| *f).unwrap_or_default();
        if n > 0 {
            say.line(
                serde_json::json!({"event": "cache-fetched", "layers": n, "size": bytes}),
                format!(
                    "imported cache: fetched {n} layer{} ({}) used by cached steps",
                    plural(n),
                    super::human_size(bytes)
                ),
            );
        }
    }

    fn fetch_from(&self, src: &Source, d: &OciDescriptor) -> Result<()> {
        let digest = descriptor_digest(d)?;
        match &src.spec.location {
            Location::Local(dir) => {
                let path = blob_path(dir, &digest);
                let f = std::fs::File::open(&path)
                    .with_context(|| format!("opening {}", path.display()))?;
                let mut w = self.store.ingest()?;
                // One byte more than expected, so a longer file fails the size check.
                std::io::copy(&mut f.take(d.size().saturating_add(1)), &mut w)
                    .with_context(|| format!("reading {}", path.display()))?;
                w.commit(Some(&digest), Some(d.size()))?;
            }
            Location::Registry(r) => {
                let (client, rt) = self
                    .remote
                    .as_ref()
                    .ok_or_else(|| anyhow!("no registry client"))?;
                let rd = registry_client::Descriptor {
                    media_type: d.media_type().to_string(),
                    digest: digest.to_string(),
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
        let digest = layer.digest().to_string();
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
                Err(e) => {
                    if let Ok(mut w) = self.warnings.lock() {
                        w.push(format!(
                            "cache layer {digest} from {}: {e:#}; the step ran instead",
                            src.spec
                        ));
                    }
                }
            }
        }
        false
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn blob_path(dir: &Path, digest: &Digest) -> PathBuf {
    dir.join("blobs").join("sha256").join(digest.hex())
}

/// A small blob of an OCI layout, checked against its descriptor.
fn read_layout_blob(dir: &Path, digest: &str, size: u64, limit: u64) -> Result<Vec<u8>> {
    let d: Digest = digest.parse().map_err(|e| anyhow!("{e}"))?;
    if size > limit {
        bail!("blob {digest} is {size} bytes, more than {limit}");
    }
    let path = blob_path(dir, &d);
    let mut bytes = Vec::new();
    std::fs::File::open(&path)
        .and_then(|f| f.take(limit + 1).read_to_end(&mut bytes))
        .with_context(|| format!("reading {}", path.display()))?;
    let actual = Digest::of(&bytes);
    if actual != d || bytes.len() as u64 != size {
        bail!(
            "blob {digest} is corrupt: its content has digest {actual} ({} bytes)",
            bytes.len()
        );
    }
    Ok(bytes)
}

/// Reads every `--cache-from` and adds their records to the store's cache index.
/// A source that is missing or unreadable is a warning: the build runs without it.
pub fn import(store: &Store, specs: &[CacheSpec], opts: &RegistryOpts, say: Say) -> Imported {
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
            Ok(rt) => imported.remote = Some((registry::client(opts), rt)),
            Err(e) => say.warn(&format!("importing cache: {e:#}")),
        }
    }
    for spec in specs {
        match read_cache(&imported, spec).and_then(|(file, layers)| {
            let n = add_records(store, file, &layers)?;
            Ok((n, layers))
        }) {
            Ok(((records, skipped), layers)) => {
                let bytes: u64 = layers.values().sum();
                say.line(
                    serde_json::json!({
                        "event": "cache-import", "source": spec.to_string(),
                        "records": records, "layers": layers.len(), "size": bytes,
                    }),
                    format!(
                        "importing cache from {spec}: {records} record{}, {} layer{} ({}), \
                         fetched when used{}",
                        plural(records),
                        layers.len(),
                        plural(layers.len() as u64),
                        super::human_size(bytes),
                        if skipped > 0 {
                            format!(" ({skipped} records without their layer skipped)")
                        } else {
                            String::new()
                        }
                    ),
                );
                imported.sources.push(Source {
                    spec: spec.clone(),
                    layers,
                });
            }
            Err(e) => say.warn(&format!(
                "importing cache from {spec}: {e:#}; building without it"
            )),
        }
    }
    imported
}

/// The records and the layer list (digest → size) of one cache source.
fn read_cache(imp: &Imported, spec: &CacheSpec) -> Result<(CacheFile, BTreeMap<String, u64>)> {
    let (config, layers, config_bytes) = match &spec.location {
        Location::Local(dir) => {
            let index_path = dir.join("index.json");
            let index = match std::fs::read(&index_path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    bail!("not found ({} does not exist)", index_path.display())
                }
                Err(e) => return Err(e).context(format!("reading {}", index_path.display())),
            };
            let index: serde_json::Value =
                serde_json::from_slice(&index).context("index.json is not JSON")?;
            let desc = index["manifests"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| m["mediaType"] == OCI_MANIFEST)
                .ok_or_else(|| anyhow!("index.json lists no OCI manifest"))?;
            let (digest, size) = match (desc["digest"].as_str(), desc["size"].as_u64()) {
                (Some(d), Some(s)) => (d, s),
                _ => bail!("index.json: manifest descriptor without digest or size"),
            };
            let bytes =
                read_layout_blob(dir, digest, size, registry_client::manifest::MAX_MANIFEST)?;
            let m = Manifest::new(bytes, Some(OCI_MANIFEST))?;
            let (config, layers) = cache_parts(&m, &format!("manifest {digest}"))?;
            let bytes = read_layout_blob(dir, &config.digest, config.size, MAX_RECORDS_BLOB)?;
            (config, layers, bytes)
        }
        Location::Registry(r) => {
            let (client, rt) = imp
                .remote
                .as_ref()
                .ok_or_else(|| anyhow!("no registry client"))?;
            let source = Registry::new(client.clone());
            rt.block_on(async {
                let m = match source.manifest(r, None).await {
                    Ok(m) => m,
                    Err(TransferError::Registry(registry_client::Error::NotFound { .. })) => {
                        bail!("not found")
                    }
                    Err(e) => return Err(e.into()),
                };
                let (config, layers) = cache_parts(&m, &r.to_string())?;
                if config.size > MAX_RECORDS_BLOB {
                    bail!("its records blob is {} bytes, too large", config.size);
                }
                // read_blob checks size and digest.
                let mut bytes = Vec::new();
                source.read_blob(r, &config, &mut bytes, &|_| {}).await?;
                Ok((config, layers, bytes))
            })?
        }
    };
    let file: CacheFile = serde_json::from_slice(&config_bytes)
        .with_context(|| format!("records blob {} is not a cache record list", config.digest))?;
    let layers = layers.into_iter().map(|l| (l.digest, l.size)).collect();
    Ok((file, layers))
}

/// A cache manifest's records blob and layers; anything else is refused.
fn cache_parts(
    m: &Manifest,
    what: &str,
) -> Result<(
    registry_client::Descriptor,
    Vec<registry_client::Descriptor>,
)> {
    let ManifestBody::Image { config, layers } = m.body()? else {
        bail!("{what} is an index, not a mybuild cache");
    };
    if config.media_type != CACHE_CONFIG {
        bail!(
            "not a mybuild cache (config media type {})",
            config.media_type
        );
    }
    Ok((config, layers))
}

/// Adds the records whose layer the cache holds; a local record that still has its
/// blob is kept. Returns (records added or already present, records skipped).
fn add_records(
    store: &Store,
    file: CacheFile,
    layers: &BTreeMap<String, u64>,
) -> Result<(u64, u64)> {
    let (mut added, mut skipped) = (0, 0);
    for rec in file.records {
        let layer_ok = match &rec.layer {
            Some(l) => layers.get(&l.digest().to_string()) == Some(&l.size()),
            None => true,
        };
        if !layer_ok || rec.manifest.is_some() {
            skipped += 1;
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
        added += 1;
    }
    Ok((added, skipped))
}

/// Writes the records the build used (`mode=min`: the final image's, `max`: every
/// stage's) with their layers to `spec`.
pub fn export(
    store: &Store,
    spec: &CacheSpec,
    keys: &UsedKeys,
    opts: &RegistryOpts,
    say: Say,
) -> Result<()> {
    let result = export_inner(store, spec, keys, opts, say);
    match result {
        Err(e) if spec.ignore_error => {
            say.warn(&format!(
                "exporting cache to {spec}: {e:#} (ignore-error=true)"
            ));
            Ok(())
        }
        r => r.with_context(|| format!("exporting cache to {spec}")),
    }
}

fn export_inner(
    store: &Store,
    spec: &CacheSpec,
    keys: &UsedKeys,
    opts: &RegistryOpts,
    say: Say,
) -> Result<()> {
    // Nothing written to the store below may be pruned before it is referenced.
    let _usage = store.usage_lock()?;
    let keys = match spec.mode {
        Mode::Min => &keys.image,
        Mode::Max => &keys.all,
    };
    let mut records = Vec::new();
    let mut layers: Vec<OciDescriptor> = Vec::new();
    let mut seen = BTreeSet::new();
    for key in keys {
        let Some(rec) = store.cache_get(key)? else {
            continue;
        };
        if rec.manifest.is_some() {
            continue;
        }
        if let Some(l) = &rec.layer {
            let d = descriptor_digest(l)?;
            if !store.has_blob(&d) {
                say.warn(&format!(
                    "exporting cache: the layer of {:?} is not in the store; its record is left out",
                    rec.step
                ));
                continue;
            }
            if seen.insert(d) {
                layers.push(l.clone());
            }
        }
        records.push(rec);
    }
    let config = serde_json::to_vec(&CacheFile { records })?;
    let config_digest = Digest::of(&config);
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
            "digest": config_digest.to_string(),
            "size": config.len(),
        },
        "layers": layer_json,
    }))?;
    let n = serde_json::from_slice::<CacheFile>(&config)?.records.len() as u64;
    let bytes: u64 = layers.iter().map(|l| l.size()).sum();
    let mode = match spec.mode {
        Mode::Min => "min",
        Mode::Max => "max",
    };
    say.line(
        serde_json::json!({
            "event": "cache-export", "dest": spec.to_string(), "mode": mode,
            "records": n, "layers": layers.len(), "size": bytes,
        }),
        format!(
            "exporting cache to {spec} (mode={mode}): {n} record{}, {} layer{} ({})",
            plural(n),
            layers.len(),
            plural(layers.len() as u64),
            super::human_size(bytes)
        ),
    );
    let digest = match &spec.location {
        Location::Local(dir) => write_layout(store, dir, &config, &manifest, &layers)?,
        Location::Registry(r) => {
            let mut dest = r.clone();
            if dest.tag.is_none() && dest.digest.is_none() {
                dest.tag = Some("latest".into());
            }
            store.write_blob(&config)?;
            let m = Manifest::new(manifest, Some(OCI_MANIFEST))?;
            let client = registry::client(opts);
            let rt = registry::runtime()?;
            rt.block_on(registry::push_manifest(store, &client, &dest, &m, say.0))?;
            m.digest
        }
    };
    say.line(
        serde_json::json!({"event": "cache-exported", "dest": spec.to_string(), "digest": digest}),
        format!("exporting cache to {spec}: done ({digest})"),
    );
    Ok(())
}

/// Writes the artifact into an OCI layout at `dir`: blobs first (each via a temp file
/// and rename), `index.json` last by rename, so an interrupted export leaves the
/// previous one readable. Blobs no longer referenced are removed afterwards.
fn write_layout(
    store: &Store,
    dir: &Path,
    config: &[u8],
    manifest: &[u8],
    layers: &[OciDescriptor],
) -> Result<String> {
    let blobs = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).with_context(|| format!("creating {}", blobs.display()))?;
    // Two exports to one directory would remove each other's blobs.
    let _lock = layer_cache::lock::FileLock::exclusive(&dir.join(".mybuild-cache.lock"))?;
    let mut keep = BTreeSet::new();
    for l in layers {
        let d = descriptor_digest(l)?;
        let dest = blob_path(dir, &d);
        keep.insert(d.hex().to_string());
        if file_has_digest(&dest, &d) {
            continue;
        }
        // The store's reader fails at EOF on a corrupt blob, so none is exported.
        let mut r = store.open_blob(&d, Some(l.size()))?;
        write_atomically(&dest, |f| {
            std::io::copy(&mut r, f)?;
            Ok(())
        })?;
    }
    let mut put = |data: &[u8]| -> Result<Digest> {
        let d = Digest::of(data);
        keep.insert(d.hex().to_string());
        let dest = blob_path(dir, &d);
        if !file_has_digest(&dest, &d) {
            write_atomically(&dest, |f| f.write_all(data))?;
        }
        Ok(d)
    };
    put(config)?;
    let manifest_digest = put(manifest)?;
    let layout = dir.join("oci-layout");
    if !layout.is_file() {
        write_atomically(&layout, |f| {
            f.write_all(br#"{"imageLayoutVersion":"1.0.0"}"#)
        })?;
    }
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": OCI_MANIFEST,
            "artifactType": CACHE_CONFIG,
            "digest": manifest_digest.to_string(),
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        }],
    }))?;
    write_atomically(&dir.join("index.json"), |f| f.write_all(&index))?;
    // The new index is in place: what only the old one used can go.
    if let Ok(rd) = std::fs::read_dir(&blobs) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if Digest::from_hex(&name).is_ok() && !keep.contains(&name) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(manifest_digest.to_string())
}

fn file_has_digest(path: &Path, d: &Digest) -> bool {
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let mut h = layer_cache::digest::Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(_) => return false,
        }
    }
    h.finish() == *d
}

/// Writes `path` through a temp file beside it, fsync and rename.
fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let res = std::fs::File::create(&tmp).and_then(|mut f| {
        fill(&mut f)?;
        f.sync_all()
    });
    if let Err(e) = res.and_then(|_| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", path.display()));
    }
    if let Some(parent) = path.parent() {
        if let Ok(d) = std::fs::File::open(parent) {
            let _ = d.sync_all();
        }
    }
    Ok(())
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
