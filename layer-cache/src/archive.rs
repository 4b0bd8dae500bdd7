//! Image archives. `save` writes one tar that is both an OCI layout (`oci-layout`,
//! `index.json`, `blobs/sha256/`) and a `docker load` archive (`manifest.json` whose
//! paths point into `blobs/sha256/`), as Docker 25+ does; a multi-platform index is
//! whole in `index.json`, its host platform alone in `manifest.json`. `load` reads
//! either form.
//! Blobs are streamed and verified; nothing from the archive is written by path.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, BufReader, Read, Write};

use oci_spec::image::Descriptor;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::digest::Digest;
use crate::error::{AtPath, Result, StoreError};
use crate::image::{self, canonical_json, Compression, ImageConfig, MAX_JSON_BLOB};
use crate::layer::decompress;
use crate::refs::ImageRef;
use crate::store::{Store, OCI_LAYOUT};
use oci_vocab::media;

/// Archive members up to this size that are not blobs are held in memory while
/// loading (Docker's `<id>.json` configs, `VERSION` files), ...
const SMALL_FILE: u64 = 1 << 20;
/// ... as long as they add up to no more than this; later ones go to the store.
const SMALL_TOTAL: u64 = 16 << 20;
/// `index.json` and `manifest.json` are read into memory; larger ones are refused.
/// 4 MiB is the manifest limit of distribution and containerd.
pub const MAX_ARCHIVE_JSON: u64 = 4 << 20;
/// Files and links an archive may hold (the paths are remembered until the
/// manifests are read).
const MAX_MEMBERS: usize = 100_000;

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default, deserialize_with = "null_vec")]
    repo_tags: Vec<String>,
    layers: Vec<String>,
}

fn null_vec<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

/// An image loaded from an archive: its name (if the archive gave one) and manifest.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub name: Option<String>,
    /// An OCI archive's `org.opencontainers.image.ref.name` as written (a bare
    /// tag such as `latest` included, which names no image by itself).
    pub ref_name: Option<String>,
    pub descriptor: Descriptor,
}

impl Store {
    /// Writes the images as one tar to `out`; an image without a name is listed
    /// untagged.
    pub fn save(&self, images: &[(Option<ImageRef>, Descriptor)], out: impl Write) -> Result<()> {
        let mut builder = tar::Builder::new(out);
        append_bytes(&mut builder, "oci-layout", OCI_LAYOUT).at("archive")?;
        let mut written = BTreeSet::new();
        let mut index = Vec::new();
        let mut docker = Vec::new();
        for (name, desc) in images {
            let mut blobs = BTreeSet::new();
            self.reachable_from(desc, &mut blobs)?;
            for d in &blobs {
                if written.insert(d.clone()) {
                    let size = self
                        .blob_size(d)?
                        .ok_or_else(|| StoreError::BlobNotFound(d.clone()))?;
                    let reader = self.open_blob(d, Some(size))?;
                    let mut header = tar_header(size);
                    builder
                        .append_data(&mut header, format!("blobs/sha256/{}", d.hex()), reader)
                        .map_err(|e| {
                            StoreError::invalid(format!("saving blob {d}"), e.to_string())
                        })?;
                }
            }
            let mut entry = desc.clone();
            if let Some(name) = name {
                let mut ann = entry.annotations().clone().unwrap_or_default();
                ann.insert(image::REF_NAME_ANNOTATION.into(), name.tagged_name());
                ann.insert(image::IMAGE_NAME_ANNOTATION.into(), name.full_name());
                entry.set_annotations(Some(ann));
            }
            index.push(entry);
            // manifest.json holds single images: for a multi-platform index, the
            // host's platform when the store has it (what `docker load` can run).
            let is_index = media::is_index(desc.media_type().as_ref());
            let img = match self.load_image(desc) {
                Ok(img) => img,
                Err(_) if is_index => continue,
                Err(e) => return Err(e),
            };
            docker.push(DockerManifestEntry {
                config: format!("blobs/sha256/{}", img.config_digest.hex()),
                repo_tags: name.iter().map(ImageRef::tagged_name).collect(),
                layers: img
                    .manifest
                    .layers()
                    .iter()
                    .map(|l| {
                        image::descriptor_digest(l).map(|d| format!("blobs/sha256/{}", d.hex()))
                    })
                    .collect::<Result<_>>()?,
            });
        }
        let index_doc = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": image::OCI_INDEX,
            "manifests": index,
        });
        append_bytes(&mut builder, "index.json", &canonical_json(&index_doc)?).at("archive")?;
        let manifest_json =
            serde_json::to_vec(&docker).map_err(|e| StoreError::json("manifest.json", e))?;
        append_bytes(&mut builder, "manifest.json", &manifest_json).at("archive")?;
        builder
            .into_inner()
            .and_then(|mut w| w.flush())
            .at("archive")?;
        Ok(())
    }

    /// Reads an OCI or Docker archive and tags what it names. Holds the usage lock so
    /// `prune` cannot sweep blobs between ingest and tagging.
    pub fn load(&self, input: impl Read + Send, source: &str) -> Result<Vec<Loaded>> {
        let _usage = self.usage_lock()?;
        let plain = decompress(BufReader::with_capacity(1 << 20, input))
            .map_err(|e| bad_archive(source, e.to_string()))?;
        let members = self.read_members(plain, source)?;
        let loaded = if let Some(index_bytes) = members.small.get("index.json") {
            self.load_oci(index_bytes, source)?
        } else if let Some(mbytes) = members.small.get("manifest.json") {
            self.load_docker(mbytes, &members, source)?
        } else {
            return Err(bad_archive(
                source,
                "neither index.json (OCI) nor manifest.json (Docker) found".into(),
            ));
        };
        for l in &loaded {
            if let Some(n) = &l.name {
                self.set_tag(&ImageRef::parse(n)?, &l.descriptor)?;
            }
        }
        Ok(loaded)
    }

    /// Streams every member into the store (blobs verified by their names), keeping
    /// small metadata in memory and links as a map.
    fn read_members(&self, plain: impl Read, source: &str) -> Result<Members> {
        let bad = |reason: String| bad_archive(source, reason);
        let mut archive = tar::Archive::new(plain);
        // path in archive → (digest, size, compression of the content)
        let mut files: BTreeMap<String, (Digest, u64, Compression)> = BTreeMap::new();
        let mut small: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut links: BTreeMap<String, String> = BTreeMap::new();
        let (mut recorded, mut small_bytes) = (0usize, 0u64);
        for entry in archive.entries().map_err(|e| bad(e.to_string()))? {
            let mut entry = entry.map_err(|e| bad(format!("not a valid tar archive: {e}")))?;
            let path = clean(
                &entry
                    .path()
                    .map_err(|e| bad(e.to_string()))?
                    .to_string_lossy(),
            );
            let kind = entry.header().entry_type();
            if kind.is_symlink() || kind.is_hard_link() {
                if let Some(target) = entry.link_name().map_err(|e| bad(e.to_string()))? {
                    let t = target.to_string_lossy();
                    let resolved = if kind.is_symlink() {
                        match path.rsplit_once('/') {
                            Some((dir, _)) => clean(&format!("{dir}/{t}")),
                            None => clean(&t),
                        }
                    } else {
                        clean(&t)
                    };
                    if recorded >= MAX_MEMBERS {
                        return Err(bad(format!(
                            "more than {MAX_MEMBERS} files and links; no image archive has that many"
                        )));
                    }
                    recorded += 1;
                    links.insert(path, resolved);
                }
                continue;
            }
            if !kind.is_file() {
                continue;
            }
            let size = entry.size();
            if recorded >= MAX_MEMBERS {
                return Err(bad(format!(
                    "more than {MAX_MEMBERS} files and links; no image archive has that many"
                )));
            }
            recorded += 1;
            if path == "index.json" || path == "manifest.json" {
                if size > MAX_ARCHIVE_JSON {
                    return Err(StoreError::TooLarge {
                        what: format!("archive {source}: {path}"),
                        size,
                        limit: MAX_ARCHIVE_JSON,
                    });
                }
                small.insert(path.clone(), read_member(&mut entry, size, &path, &bad)?);
                continue;
            }
            let expected = path
                .strip_prefix("blobs/sha256/")
                .and_then(|h| Digest::from_hex(h).ok());
            // Small metadata stays in memory, up to a total, and enters the store
            // only if a manifest names it; the rest is streamed into the store
            // (what no manifest names is left for `prune`).
            if expected.is_none() && size <= SMALL_FILE && small_bytes + size <= SMALL_TOTAL {
                small_bytes += size;
                small.insert(path.clone(), read_member(&mut entry, size, &path, &bad)?);
                continue;
            }
            let mut w = self.ingest()?;
            let ingest = self.ingest_dir();
            let mut head = Vec::with_capacity(4);
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = entry
                    .read(&mut buf)
                    .map_err(|e| bad(format!("{path}: {e}")))?;
                if n == 0 {
                    break;
                }
                let want = 4 - head.len();
                head.extend_from_slice(&buf[..n.min(want)]);
                w.write_all(&buf[..n]).at(&ingest)?;
            }
            let c = w.commit(expected.as_ref(), Some(size))?;
            files.insert(
                path,
                (c.digest, c.size, crate::codec::layer_compression(&head)),
            );
        }
        Ok(Members {
            files,
            small,
            links,
            source: source.to_string(),
        })
    }

    /// The images an OCI layout's index.json names, checked complete.
    fn load_oci(&self, index_bytes: &[u8], source: &str) -> Result<Vec<Loaded>> {
        let mut loaded = Vec::new();
        let index: Value =
            serde_json::from_slice(index_bytes).map_err(|e| StoreError::json("index.json", e))?;
        let manifests: Vec<Descriptor> = serde_json::from_value(
            index
                .get("manifests")
                .cloned()
                .unwrap_or(Value::Array(Vec::new())),
        )
        .map_err(|e| StoreError::json("index.json", e))?;
        for m in manifests {
            self.check_descriptors(&m, source)?;
            let ann = m.annotations().clone().unwrap_or_default();
            let name = ann
                .get(image::IMAGE_NAME_ANNOTATION)
                .or_else(|| {
                    ann.get(image::REF_NAME_ANNOTATION)
                        .filter(|n| n.contains(':') || n.contains('/'))
                })
                .cloned();
            let mut plain = m.clone();
            plain.set_annotations(None);
            // Prove the image is complete before tagging it.
            self.load_image(&plain)?;
            loaded.push(Loaded {
                name,
                ref_name: ann.get(image::REF_NAME_ANNOTATION).cloned(),
                descriptor: plain,
            });
        }
        Ok(loaded)
    }

    /// The images a Docker archive's manifest.json names, as OCI manifests of the
    /// members (layers checked against the config's diff_ids).
    fn load_docker(&self, mbytes: &[u8], members: &Members, source: &str) -> Result<Vec<Loaded>> {
        let bad = |reason: String| bad_archive(source, reason);
        let lookup = |p: &str| members.lookup(self, p);
        let mut loaded = Vec::new();
        let entries: Vec<DockerManifestEntry> =
            serde_json::from_slice(mbytes).map_err(|e| StoreError::json("manifest.json", e))?;
        for e in entries {
            let (cfg_digest, cfg_size, _) = lookup(&e.config)?;
            let cfg_bytes = self.read_blob(&cfg_digest, MAX_JSON_BLOB)?;
            let config = ImageConfig::parse(&cfg_bytes, &format!("config {}", e.config))?;
            if config.rootfs.diff_ids.len() != e.layers.len() {
                return Err(bad(format!(
                    "config {} lists {} diff_ids but manifest.json names {} layers",
                    e.config,
                    config.rootfs.diff_ids.len(),
                    e.layers.len()
                )));
            }
            let mut layers = Vec::new();
            for (path, diff_id) in e.layers.iter().zip(&config.rootfs.diff_ids) {
                let (d, size, comp) = lookup(path)?;
                let actual = if comp == Compression::None {
                    d.clone()
                } else {
                    self.diff_id_of(&d, size)?
                };
                if actual != *diff_id {
                    return Err(bad(format!(
                        "layer {path} hashes to {actual} uncompressed, but the config says {diff_id}"
                    )));
                }
                layers.push(image::descriptor(comp.oci_media_type(), &d, size));
            }
            let manifest = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": image::OCI_MANIFEST,
                "config": image::descriptor(image::OCI_CONFIG, &cfg_digest, cfg_size),
                "layers": layers,
            });
            let c = self.write_blob(&canonical_json(&manifest)?)?;
            let desc = image::descriptor(image::OCI_MANIFEST, &c.digest, c.size);
            if e.repo_tags.is_empty() {
                loaded.push(Loaded {
                    name: None,
                    ref_name: None,
                    descriptor: desc.clone(),
                });
            }
            for t in &e.repo_tags {
                loaded.push(Loaded {
                    name: Some(t.clone()),
                    ref_name: None,
                    descriptor: desc.clone(),
                });
            }
        }
        Ok(loaded)
    }

    /// Every blob reachable from an index.json entry must be there (an index's
    /// absent platforms excepted) with the size its descriptor gives: a wrong size
    /// would load and then fail `fsck`, push and every size-checked read.
    fn check_descriptors(&self, top: &Descriptor, source: &str) -> Result<()> {
        let bad = |reason: String| StoreError::Archive {
            path: source.into(),
            reason,
        };
        // (descriptor, who names it, whether it must be present); a stack, not
        // recursion, so nesting depth costs no stack.
        let mut todo = vec![(top.clone(), "index.json".to_string(), true)];
        let mut seen = BTreeSet::new();
        while let Some((desc, named_by, required)) = todo.pop() {
            let digest = image::descriptor_digest(&desc)?;
            if !seen.insert((digest.clone(), desc.size())) {
                continue;
            }
            let media_type = desc.media_type().to_string();
            let actual = match self.blob_size(&digest)? {
                Some(a) => a,
                None if required => {
                    return Err(bad(format!(
                        "{named_by} names {media_type} {digest}, which the archive lacks"
                    )))
                }
                None => continue,
            };
            if actual != desc.size() {
                return Err(bad(format!(
                    "{named_by} gives {digest} a size of {} bytes, but the blob has {actual} bytes",
                    desc.size()
                )));
            }
            let is_manifest = media::is_manifest(&media_type) || media::is_index(&media_type);
            if !is_manifest {
                continue;
            }
            let what = format!("manifest {digest}");
            match image::parse_manifest(&self.read_blob(&digest, MAX_JSON_BLOB)?, &what)? {
                image::ParsedManifest::Image(m) => {
                    todo.push((m.config().clone(), what.clone(), true));
                    for l in m.layers() {
                        todo.push((l.clone(), what.clone(), true));
                    }
                }
                image::ParsedManifest::Index(idx) => {
                    // Platforms never fetched may be absent; present ones must agree.
                    for child in idx.manifests() {
                        todo.push((child.clone(), what.clone(), false));
                    }
                }
            }
        }
        Ok(())
    }

    /// sha256 of a stored layer's uncompressed content.
    pub fn diff_id_of(&self, digest: &Digest, size: u64) -> Result<Digest> {
        let reader = BufReader::new(self.open_blob(digest, Some(size))?);
        let mut plain =
            crate::digest::HashingReader::new(decompress(reader).at(self.blob_path(digest))?);
        io::copy(&mut plain, &mut io::sink())
            .map_err(|e| crate::store::verify_error(digest, &self.blob_path(digest), e))?;
        Ok(plain.finish().1)
    }
}

/// Reads one member whose size the header gave (already checked against a limit).
fn read_member(
    entry: &mut impl Read,
    size: u64,
    path: &str,
    bad: &impl Fn(String) -> StoreError,
) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(size as usize);
    entry
        .take(size)
        .read_to_end(&mut buf)
        .map_err(|e| bad(format!("{path}: {e}")))?;
    Ok(buf)
}

fn tar_header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h
}

fn append_bytes<W: Write>(b: &mut tar::Builder<W>, path: &str, data: &[u8]) -> io::Result<()> {
    let mut h = tar_header(data.len() as u64);
    b.append_data(&mut h, path, data)
}

/// Normalises an archive path: no leading `./` or `/`, `.`/`..` folded.
fn clean(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            x => out.push(x),
        }
    }
    out.join("/")
}

/// An archive's members as read: blobs in the store, small files in memory, links.
struct Members {
    /// Path in the archive → (digest, size, compression of the content).
    files: BTreeMap<String, (Digest, u64, Compression)>,
    small: BTreeMap<String, Vec<u8>>,
    links: BTreeMap<String, String>,
    source: String,
}

impl Members {
    /// The blob at archive path `p` (following up to 8 links); a small member is
    /// written to the store when first named.
    fn lookup(&self, store: &Store, p: &str) -> Result<(Digest, u64, Compression)> {
        let mut p = clean(p);
        for _ in 0..8 {
            if let Some(f) = self.files.get(&p) {
                return Ok(f.clone());
            }
            if let Some(buf) = self.small.get(&p) {
                let c = store.write_blob(buf)?;
                return Ok((c.digest, c.size, crate::codec::layer_compression(buf)));
            }
            match self.links.get(&p) {
                Some(t) => p = t.clone(),
                None => break,
            }
        }
        Err(bad_archive(
            &self.source,
            format!("{p} is named by the archive's manifest but not present"),
        ))
    }
}

fn bad_archive(source: &str, reason: String) -> StoreError {
    StoreError::Archive {
        path: source.into(),
        reason,
    }
}
