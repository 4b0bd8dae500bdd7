//! Layer variants: a stored layer re-encoded in another codec (and, when asked,
//! with its file times clamped to an epoch, BuildKit's `rewrite-timestamp`).
//!
//! One streamed pass per layer: stored blob → verify → decode → (clamp tar
//! headers) → encoder ([`crate::layer::LayerWriter`]: parallel gzip or zstd) →
//! ingest, hashed once as it is written. Each variant is remembered by the
//! source's diff_id, the codec, the level and the clamp under `variants-v1/`, so a
//! second export, save or push of the same layer reuses the blob instead of
//! encoding it again. A record whose blob `prune` removed is simply redone.

use std::io::{self, Read, Write};
use std::path::PathBuf;

use oci_spec::image::Descriptor;
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{AtPath, Result, StoreError};
use crate::image::{self, Compression};
use crate::layer::{LayerInfo, LayerOptions};
use crate::store::Store;

/// The directory of variant records, one file per (diff_id, codec, level, clamp).
pub const VARIANTS_DIR: &str = "variants-v1";

/// The directory of export codecs, one file per stored image manifest.
pub const EXPORT_CODECS_DIR: &str = "export-codecs-v1";

/// How a locally built image's layers leave the machine: the build's
/// `--compression` and `--compression-level`, kept so that a later `push` or
/// `save` of the image compresses the way the build was asked to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportCodec {
    pub compression: Compression,
    pub level: Option<u32>,
}

impl ExportCodec {
    /// What is wrong with the level for the codec, if anything.
    pub fn level_error(&self) -> Option<&'static str> {
        match (self.compression, self.level) {
            (Compression::Gzip, Some(l)) if l > 9 => Some("gzip takes 0-9"),
            (Compression::Zstd, Some(l)) if !(1..=22).contains(&l) => Some("zstd takes 1-22"),
            _ => None,
        }
    }
}

impl Default for ExportCodec {
    /// gzip at its default level: what every registry and runtime reads.
    fn default() -> Self {
        ExportCodec {
            compression: Compression::Gzip,
            level: None,
        }
    }
}

/// What a layer should become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VariantSpec {
    pub compression: Compression,
    /// gzip 0-9 or zstd 1-22; `None` is the codec's default (gzip 6, zstd 3).
    pub level: Option<u32>,
    /// Clamp every entry's mtime, atime and ctime to at most this Unix time.
    pub clamp_mtime: Option<i64>,
}

impl VariantSpec {
    /// The level actually used: what names the variant.
    pub fn effective_level(&self) -> u32 {
        match (self.compression, self.level) {
            (Compression::None, _) => 0,
            (Compression::Gzip, l) => l.unwrap_or(6).min(9),
            (Compression::Zstd, l) => l.unwrap_or(3).clamp(1, 22),
        }
    }

    fn record_name(&self, diff_id: &Digest) -> String {
        let codec = match self.compression {
            Compression::None => "plain",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        };
        let mut name = format!("{}-{codec}-{}", diff_id.hex(), self.effective_level());
        if let Some(t) = self.clamp_mtime {
            name.push_str(&format!("-clamp{t}"));
        }
        name
    }
}

/// A remembered variant: the blob and its uncompressed digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VariantRecord {
    pub digest: Digest,
    pub size: u64,
    pub diff_id: Digest,
}

impl Store {
    pub fn variants_dir(&self) -> PathBuf {
        self.root().join(VARIANTS_DIR)
    }

    /// Where the record of `spec` for the layer whose diff_id is `diff_id` lives.
    pub fn variant_record_path(&self, diff_id: &Digest, spec: &VariantSpec) -> PathBuf {
        self.variants_dir().join(spec.record_name(diff_id))
    }

    /// The recorded variant, when its blob is still in the store.
    pub fn find_variant(&self, diff_id: &Digest, spec: &VariantSpec) -> Result<Option<LayerInfo>> {
        let path = self.variant_record_path(diff_id, spec);
        let bytes = match fs_err::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        // A damaged record is only a lost shortcut: encode again.
        let Ok(rec) = serde_json::from_slice::<VariantRecord>(&bytes) else {
            return Ok(None);
        };
        if self.blob_size(&rec.digest)? != Some(rec.size) {
            return Ok(None);
        }
        Ok(Some(LayerInfo {
            digest: rec.digest,
            size: rec.size,
            diff_id: rec.diff_id,
            compression: spec.compression,
        }))
    }

    /// `layer` (whose uncompressed digest is `diff_id`) as `spec` asks: the stored
    /// blob itself when it already is that (same codec, no clamp, `keep_same_codec`),
    /// else the remembered variant, else a new one encoded now and remembered.
    /// Without a clamp the new blob must decode to the same diff_id.
    pub fn layer_variant(
        &self,
        layer: &Descriptor,
        diff_id: &Digest,
        spec: &VariantSpec,
        keep_same_codec: bool,
    ) -> Result<LayerInfo> {
        let digest = image::descriptor_digest(layer)?;
        let stored = self.stored_compression(layer, &digest)?;
        if keep_same_codec && stored == spec.compression && spec.clamp_mtime.is_none() {
            return Ok(LayerInfo {
                digest,
                size: layer.size(),
                diff_id: diff_id.clone(),
                compression: stored,
            });
        }
        if let Some(found) = self.find_variant(diff_id, spec)? {
            return Ok(found);
        }
        let _usage = self.usage_lock()?;
        let mut w = self.layer_writer(LayerOptions {
            compression: spec.compression,
            level: Some(spec.effective_level()),
        })?;
        // A plain blob is its own tar: verified as it is read, it needs no second hash.
        if stored == Compression::None && digest == *diff_id && spec.clamp_mtime.is_none() {
            w = w.with_known_diff_id(diff_id.clone());
        }
        let mut plain = self.open_layer(layer)?;
        let what = format!("layer {digest}");
        match spec.clamp_mtime {
            None => {
                io::copy(&mut plain, &mut w).map_err(|e| read_error(&what, e))?;
            }
            Some(epoch) => clamp_times(plain, &mut w, epoch).map_err(|e| read_error(&what, e))?,
        }
        let mut info = w.finish()?;
        if spec.clamp_mtime.is_none() && info.diff_id != *diff_id {
            return Err(StoreError::DiffIdMismatch {
                what,
                expected: diff_id.clone(),
                actual: info.diff_id,
            });
        }
        // Nothing was newer than the epoch: the layer is unchanged, so keep its
        // blob (and digest) when the codec is the same.
        if info.diff_id == *diff_id && stored == spec.compression && keep_same_codec {
            info = LayerInfo {
                digest,
                size: layer.size(),
                diff_id: diff_id.clone(),
                compression: stored,
            };
        }
        let rec = VariantRecord {
            digest: info.digest.clone(),
            size: info.size,
            diff_id: info.diff_id.clone(),
        };
        let bytes = serde_json::to_vec(&rec).map_err(|e| StoreError::json("variant record", e))?;
        fs_err::create_dir_all(self.variants_dir())?;
        self.replace_file(&self.variant_record_path(diff_id, spec), &bytes)?;
        Ok(info)
    }

    /// Remembers how the image whose manifest is `manifest` should leave the machine.
    /// Nothing is written when that is already what [`Store::export_codec`] says (a
    /// rebuild, or the default), so a no-op build writes no file for it.
    pub fn set_export_codec(&self, manifest: &Digest, codec: &ExportCodec) -> Result<()> {
        if self.export_codec(manifest)? == *codec {
            return Ok(());
        }
        let bytes = serde_json::to_vec(codec).map_err(|e| StoreError::json("export codec", e))?;
        let dir = self.root().join(EXPORT_CODECS_DIR);
        fs_err::create_dir_all(&dir)?;
        self.replace_file(&dir.join(manifest.hex()), &bytes)
    }

    /// The codec remembered for `manifest`, or the default (gzip) when none was.
    pub fn export_codec(&self, manifest: &Digest) -> Result<ExportCodec> {
        let path = self.root().join(EXPORT_CODECS_DIR).join(manifest.hex());
        match fs_err::read(&path) {
            // A damaged record is only a lost preference.
            Ok(b) => Ok(serde_json::from_slice(&b).unwrap_or_default()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(ExportCodec::default()),
            Err(e) => Err(e.into()),
        }
    }

    /// For `prune`: drops the export codecs of manifests that are no longer live.
    pub(crate) fn prune_export_codecs(
        &self,
        live: &std::collections::BTreeSet<Digest>,
    ) -> Result<()> {
        let dir = self.root().join(EXPORT_CODECS_DIR);
        let entries = match fs_err::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        for entry in entries {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if Digest::from_hex(name).is_ok_and(|d| live.contains(&d)) {
                continue;
            }
            match fs_err::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// For `prune`: the blobs of variants whose source layer is in `live_diff_ids`;
    /// the records of other layers (and of blobs already gone) are removed.
    pub(crate) fn prune_variant_records(
        &self,
        live_diff_ids: &std::collections::BTreeSet<Digest>,
    ) -> Result<Vec<Digest>> {
        let dir = self.variants_dir();
        let entries = match fs_err::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut keep = Vec::new();
        for entry in entries {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let source = name
                .split('-')
                .next()
                .and_then(|h| Digest::from_hex(h).ok());
            let record = fs_err::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<VariantRecord>(&b).ok());
            match (source, record) {
                (Some(s), Some(r)) if live_diff_ids.contains(&s) && self.has_blob(&r.digest) => {
                    keep.push(r.digest);
                }
                _ => match fs_err::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                },
            }
        }
        Ok(keep)
    }

    /// A layer's codec: its media type's, or sniffed when the type says nothing.
    fn stored_compression(&self, layer: &Descriptor, digest: &Digest) -> Result<Compression> {
        if let Some(c) = Compression::of_media_type(layer.media_type().as_ref()) {
            return Ok(c);
        }
        let mut head = [0u8; 4];
        let mut f = self.open_blob(digest, Some(layer.size()))?;
        let n = crate::codec::read_up_to(&mut f, &mut head).at(self.blob_path(digest))?;
        Ok(crate::codec::layer_compression(&head[..n]))
    }
}

fn read_error(what: &str, e: io::Error) -> StoreError {
    StoreError::invalid(what, e.to_string())
}

/// Copies a tar stream, clamping every entry's times (the header's mtime, GNU
/// atime/ctime, and PAX `mtime`/`atime`/`ctime` records) to at most `epoch`.
/// Entries are copied raw (GNU long-name and PAX members pass through as members),
/// so names and links are written exactly as they came.
pub fn clamp_times(input: impl Read, out: &mut impl Write, epoch: i64) -> io::Result<()> {
    let mut archive = tar::Archive::new(input);
    let mut builder = tar::Builder::new(out);
    for entry in archive.entries()?.raw(true) {
        let mut entry = entry?;
        let mut header = entry.header().clone();
        let kind = header.entry_type();
        if kind.is_pax_local_extensions() || kind.is_pax_global_extensions() {
            let mut data = Vec::new();
            entry.read_to_end(&mut data)?;
            let data = clamp_pax(&data, epoch);
            header.set_size(data.len() as u64);
            header.set_cksum();
            builder.append(&header, &data[..])?;
            continue;
        }
        if header.mtime().is_ok_and(|t| t as i64 > epoch) {
            header.set_mtime(epoch.max(0) as u64);
        }
        if let Some(gnu) = header.as_gnu_mut() {
            if gnu.atime().is_ok_and(|t| t as i64 > epoch) {
                gnu.set_atime(epoch.max(0) as u64);
            }
            if gnu.ctime().is_ok_and(|t| t as i64 > epoch) {
                gnu.set_ctime(epoch.max(0) as u64);
            }
        }
        header.set_cksum();
        builder.append(&header, &mut entry)?;
    }
    builder.into_inner()?.flush()
}

/// PAX records (`LEN key=value\n`) with time values above `epoch` set to it.
fn clamp_pax(data: &[u8], epoch: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut rest = data;
    while !rest.is_empty() {
        let Some(space) = rest.iter().position(|b| *b == b' ') else {
            out.extend_from_slice(rest);
            break;
        };
        let len = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|l| *l > space && *l <= rest.len());
        let Some(len) = len else {
            // Not a record we can read: keep the rest as it is.
            out.extend_from_slice(rest);
            break;
        };
        let record = &rest[..len];
        rest = &rest[len..];
        let body = &record[space + 1..record.len().saturating_sub(1)];
        let clamped = match body.iter().position(|b| *b == b'=') {
            Some(eq) if matches!(&body[..eq], b"mtime" | b"atime" | b"ctime") => {
                let value = std::str::from_utf8(&body[eq + 1..]).unwrap_or("");
                let secs = value.split('.').next().and_then(|s| s.parse::<i64>().ok());
                match secs {
                    Some(s) if s > epoch || (s == epoch && value.contains('.')) => {
                        let key = String::from_utf8_lossy(&body[..eq]).into_owned();
                        Some(pax_record(&key, &epoch.to_string()))
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        match clamped {
            Some(r) => out.extend_from_slice(&r),
            None => out.extend_from_slice(record),
        }
    }
    out
}

/// One PAX record; its length counts its own digits.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + body.to_string().len();
    if len.to_string().len() + body != len {
        len = body + len.to_string().len();
    }
    format!("{len} {key}={value}\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(mtime: u64, pax_mtime: Option<&str>) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        if let Some(m) = pax_mtime {
            b.append_pax_extensions([("mtime", m.as_bytes())]).unwrap();
        }
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_mtime(mtime);
        h.set_cksum();
        b.append_data(&mut h, "dir/a-file-with-a-name.txt", &b"hello"[..])
            .unwrap();
        let long = "x".repeat(150);
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mtime(mtime);
        h.set_cksum();
        b.append_data(&mut h, &long, io::empty()).unwrap();
        b.into_inner().unwrap()
    }

    fn entries(data: &[u8]) -> Vec<(String, u64, Vec<u8>)> {
        let mut a = tar::Archive::new(data);
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let mut body = Vec::new();
                e.read_to_end(&mut body).unwrap();
                let mtime = e.header().mtime().unwrap();
                let pax = e
                    .pax_extensions()
                    .ok()
                    .flatten()
                    .and_then(|p| {
                        p.flatten()
                            .find(|x| x.key() == Ok("mtime"))
                            .map(|x| x.value().unwrap().to_string())
                    })
                    .and_then(|v| v.split('.').next().and_then(|s| s.parse().ok()));
                (
                    e.path().unwrap().display().to_string(),
                    pax.unwrap_or(mtime),
                    body,
                )
            })
            .collect()
    }

    #[test]
    fn clamps_times_and_keeps_names_and_content() {
        let src = tar_with(2_000_000_000, Some("2000000000.5"));
        let mut out = Vec::new();
        clamp_times(&src[..], &mut out, 1_000_000).unwrap();
        let got = entries(&out);
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0],
            (
                "dir/a-file-with-a-name.txt".into(),
                1_000_000,
                b"hello".to_vec()
            )
        );
        assert_eq!(got[1].0, "x".repeat(150));
        assert_eq!(got[1].1, 1_000_000);
        // Older times stay.
        let src = tar_with(500, None);
        let mut out = Vec::new();
        clamp_times(&src[..], &mut out, 1_000_000).unwrap();
        assert!(entries(&out).iter().all(|e| e.1 == 500));
    }

    #[test]
    fn pax_records_keep_their_lengths_right() {
        for (k, v) in [("mtime", "9"), ("mtime", "1234567890"), ("ctime", "12345")] {
            let r = pax_record(k, v);
            let s = String::from_utf8(r.clone()).unwrap();
            let n: usize = s.split(' ').next().unwrap().parse().unwrap();
            assert_eq!(n, r.len(), "{s:?}");
        }
    }

    fn store_with_layer(dir: &std::path::Path) -> (Store, Descriptor, Digest) {
        let store = Store::open(dir.join("store")).unwrap();
        let src = tar_with(2_000_000_000, None);
        let gzip = LayerOptions {
            compression: Compression::Gzip,
            level: None,
        };
        let info = store.write_layer(&mut &src[..], gzip).unwrap();
        (store, info.descriptor(), info.diff_id)
    }

    #[test]
    fn a_variant_is_encoded_once_and_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, desc, diff_id) = store_with_layer(tmp.path());
        let spec = VariantSpec {
            compression: Compression::Zstd,
            level: None,
            clamp_mtime: None,
        };
        assert!(store.find_variant(&diff_id, &spec).unwrap().is_none());
        let first = store.layer_variant(&desc, &diff_id, &spec, true).unwrap();
        assert_eq!(first.diff_id, diff_id);
        assert_eq!(first.compression, Compression::Zstd);
        let blob = store.blob_path(&first.digest);
        assert_eq!(
            &fs_err::read(&blob).unwrap()[..4],
            &[0x28, 0xb5, 0x2f, 0xfd]
        );
        let record = store.variant_record_path(&diff_id, &spec);
        assert!(record.is_file());
        // The second call reads the record: the blob is not written again.
        let before = fs_err::metadata(&blob).unwrap().modified().unwrap();
        let ingest_before = fs_err::read_dir(store.ingest_dir()).unwrap().count();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let second = store.layer_variant(&desc, &diff_id, &spec, true).unwrap();
        assert_eq!(second, first);
        assert_eq!(fs_err::metadata(&blob).unwrap().modified().unwrap(), before);
        assert_eq!(
            fs_err::read_dir(store.ingest_dir()).unwrap().count(),
            ingest_before
        );
        // A record whose blob is gone is redone.
        fs_err::remove_file(&blob).unwrap();
        assert!(store.find_variant(&diff_id, &spec).unwrap().is_none());
        let third = store.layer_variant(&desc, &diff_id, &spec, true).unwrap();
        assert_eq!(third, first);
        // Same codec without force: the stored blob itself.
        let gz = VariantSpec {
            compression: Compression::Gzip,
            ..spec
        };
        let same = store.layer_variant(&desc, &diff_id, &gz, true).unwrap();
        assert_eq!(same.digest.to_string(), desc.digest().to_string());
    }

    #[test]
    fn prune_keeps_a_variant_while_its_layer_lives() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path().join("store")).unwrap();
        let src = tar_with(2_000_000_000, None);
        let name = crate::ImageRef::parse("v:1").unwrap();
        let desc = store
            .import_rootfs(&src[..], &name, crate::import::ImportOptions::for_test())
            .unwrap();
        let img = store.load_image(&desc).unwrap();
        let layer = img.manifest.layers()[0].clone();
        let diff_id = img.config.rootfs.diff_ids[0].clone();
        let spec = VariantSpec {
            compression: Compression::Zstd,
            level: None,
            clamp_mtime: None,
        };
        let v = store.layer_variant(&layer, &diff_id, &spec, true).unwrap();
        store.prune(&[]).unwrap();
        assert!(store.has_blob(&v.digest));
        assert_eq!(
            store.find_variant(&diff_id, &spec).unwrap(),
            Some(v.clone())
        );
        // Untagged, the layer goes, and its variant and record with it.
        store.remove_tag(&name).unwrap();
        store.prune(&[]).unwrap();
        assert!(!store.has_blob(&v.digest));
        assert!(!store.variant_record_path(&diff_id, &spec).exists());
    }

    #[test]
    fn a_clamped_variant_has_new_diff_id() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, desc, diff_id) = store_with_layer(tmp.path());
        let spec = VariantSpec {
            compression: Compression::None,
            level: None,
            clamp_mtime: Some(1_000_000),
        };
        let v = store.layer_variant(&desc, &diff_id, &spec, true).unwrap();
        assert_ne!(v.diff_id, diff_id);
        assert_eq!(v.digest, v.diff_id);
        let data = store.read_blob(&v.digest, 1 << 20).unwrap();
        assert!(entries(&data).iter().all(|e| e.1 == 1_000_000));
    }
}
