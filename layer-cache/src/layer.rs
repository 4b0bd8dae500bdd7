//! Layers: one streaming pass from an uncompressed tar to a stored, compressed blob.
//! tar bytes → sha256 (diff_id) → compressor → sha256 (digest) → ingest file → commit.

use std::io::{self, BufReader, Read, Write};

use oci_spec::image::{Descriptor, ImageManifest};

use crate::digest::{Digest, Hasher};
use crate::error::{AtPath, Result, StoreError};
use crate::image::{self, Compression, ImageConfig, ParsedManifest, MAX_JSON_BLOB};
use crate::ingest::BlobWriter;
use crate::store::Store;
pub use crate::unpack::decompress;

/// A layer as written: the blob's digest and size and the uncompressed diff_id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    pub digest: Digest,
    pub size: u64,
    pub diff_id: Digest,
    pub compression: Compression,
}

impl LayerInfo {
    pub fn descriptor(&self) -> Descriptor {
        image::descriptor(self.compression.oci_media_type(), &self.digest, self.size)
    }
}

/// How new layers are compressed.
#[derive(Debug, Clone, Copy)]
pub struct LayerOptions {
    pub compression: Compression,
    /// gzip 0-9 or zstd 1-22; `None` picks the tool's default (gzip 6, zstd 3).
    pub level: Option<u32>,
}

impl Default for LayerOptions {
    /// Uncompressed: the store keeps the layers it makes as plain tar (hashed once,
    /// digest = diff_id); they are compressed when they leave the machine.
    fn default() -> Self {
        LayerOptions {
            compression: Compression::None,
            level: None,
        }
    }
}

enum Encoder {
    Plain(BlobWriter),
    Gzip(crate::pgzip::ParGzEncoder<BlobWriter>),
    Zstd(zstd::stream::write::Encoder<'static, BlobWriter>),
}

/// Accepts uncompressed tar bytes; `finish` stores the compressed layer.
pub struct LayerWriter {
    encoder: Encoder,
    /// `None` for uncompressed layers, whose diff_id is the blob digest.
    diff: Option<Hasher>,
    compression: Compression,
    ingest: std::path::PathBuf,
    known_diff_id: Option<Digest>,
}

impl LayerWriter {
    /// The input's digest is already known (a stored plain layer whose blob is
    /// verified as it is read): it is not hashed a second time.
    pub fn with_known_diff_id(mut self, diff_id: Digest) -> LayerWriter {
        self.diff = None;
        self.known_diff_id = Some(diff_id);
        self
    }

    pub fn finish(self) -> Result<LayerInfo> {
        let blob = match self.encoder {
            Encoder::Plain(b) => b,
            Encoder::Gzip(e) => e.finish().at(&self.ingest)?,
            Encoder::Zstd(e) => e.finish().at(&self.ingest)?,
        };
        let committed = blob.commit(None, None)?;
        Ok(LayerInfo {
            diff_id: match (self.diff, self.known_diff_id) {
                (Some(h), _) => h.finish(),
                (None, Some(known)) => known,
                (None, None) => committed.digest.clone(),
            },
            digest: committed.digest,
            size: committed.size,
            compression: self.compression,
        })
    }
}

impl Write for LayerWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match &mut self.encoder {
            Encoder::Plain(w) => w.write(buf)?,
            Encoder::Gzip(w) => w.write(buf)?,
            Encoder::Zstd(w) => w.write(buf)?,
        };
        if let Some(h) = &mut self.diff {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.encoder {
            Encoder::Plain(w) => w.flush(),
            Encoder::Gzip(w) => w.flush(),
            Encoder::Zstd(w) => w.flush(),
        }
    }
}

/// Bytes of input per zstd worker job.
const ZSTD_JOB_SIZE: u32 = 2 << 20;

impl Store {
    pub fn layer_writer(&self, opts: LayerOptions) -> Result<LayerWriter> {
        let blob = self.ingest()?;
        let ingest = self.ingest_dir();
        let threads = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1);
        let encoder = match opts.compression {
            Compression::None => Encoder::Plain(blob),
            Compression::Gzip => Encoder::Gzip(
                crate::pgzip::ParGzEncoder::new(blob, opts.level.unwrap_or(6), threads as usize)
                    .at(&ingest)?,
            ),
            Compression::Zstd => {
                let level = opts.level.unwrap_or(3).clamp(1, 22) as i32;
                let mut enc = zstd::stream::write::Encoder::new(blob, level).at(&ingest)?;
                if threads > 1 {
                    enc.multithread(threads).at(&ingest)?;
                    // Each worker holds a job's input and output; libzstd's default job
                    // (4 windows) puts two workers near 64 MiB of RSS. Smaller jobs keep
                    // the peak low at a small cost in ratio.
                    enc.set_parameter(zstd::stream::raw::CParameter::JobSize(ZSTD_JOB_SIZE))
                        .at(&ingest)?;
                }
                Encoder::Zstd(enc)
            }
        };
        Ok(LayerWriter {
            diff: (!matches!(encoder, Encoder::Plain(_))).then(Hasher::new),
            encoder,
            compression: opts.compression,
            ingest,
            known_diff_id: None,
        })
    }

    /// Stores an uncompressed tar stream as a layer in one pass.
    pub fn write_layer(&self, tar: &mut dyn Read, opts: LayerOptions) -> Result<LayerInfo> {
        let mut w = self.layer_writer(opts)?;
        io::copy(tar, &mut w).at(self.ingest_dir())?;
        w.finish()
    }

    /// Opens a stored layer as its uncompressed tar stream, verifying the blob digest.
    pub fn open_layer(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send>> {
        let digest = image::descriptor_digest(desc)?;
        let reader = BufReader::new(self.open_blob(&digest, Some(desc.size()))?);
        decompress(reader).at(self.blob_path(&digest))
    }

    /// Loads an image by manifest descriptor; an index resolves to the host platform.
    pub fn load_image(&self, desc: &Descriptor) -> Result<Image> {
        let mut digest = image::descriptor_digest(desc)?;
        for _ in 0..4 {
            let bytes = self.read_blob(&digest, MAX_JSON_BLOB)?;
            match image::parse_manifest(&bytes, &format!("manifest {digest}"))? {
                ParsedManifest::Index(index) => {
                    digest = pick_platform(&index, &digest)?;
                }
                ParsedManifest::Image(manifest) => {
                    let config_digest = image::descriptor_digest(manifest.config())?;
                    let config_bytes = self.read_blob(&config_digest, MAX_JSON_BLOB)?;
                    let config =
                        ImageConfig::parse(&config_bytes, &format!("config {config_digest}"))?;
                    return Ok(Image {
                        manifest_digest: digest,
                        manifest_bytes: bytes,
                        manifest: *manifest,
                        config_digest,
                        config_bytes,
                        config,
                    });
                }
            }
        }
        Err(StoreError::invalid(
            format!("manifest {digest}"),
            "indexes nested too deeply",
        ))
    }
}

pub(crate) fn pick_platform(
    index: &oci_spec::image::ImageIndex,
    digest: &Digest,
) -> Result<Digest> {
    let host = image::Platform::host();
    let found = oci_vocab::Only::new(&host).select(index.manifests(), |m| {
        m.platform().as_ref().map(image::Platform::from)
    });
    match found {
        Some(m) => image::descriptor_digest(m),
        None => Err(StoreError::invalid(
            format!("index {digest}"),
            format!("no manifest for platform {host}"),
        )),
    }
}

/// A single-platform image read from the store, with the exact bytes of its documents.
#[derive(Debug, Clone)]
pub struct Image {
    pub manifest_digest: Digest,
    pub manifest_bytes: Vec<u8>,
    pub manifest: ImageManifest,
    pub config_digest: Digest,
    pub config_bytes: Vec<u8>,
    pub config: ImageConfig,
}
