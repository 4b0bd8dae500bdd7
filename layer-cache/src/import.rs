//! `import`: a one-layer image from a rootfs tarball, as `docker import` makes.

use std::io::{self, BufReader, Read, Write};
use std::path::{Component, Path};

use crate::error::{AtPath, Result, StoreError};
use crate::image::{self, canonical_json, ContainerConfig, History, ImageConfig, RootFs};
use crate::layer::{decompress, LayerOptions};
use crate::refs::ImageRef;
use crate::store::Store;

/// Copies every byte read into a writer, so the tar parser and the layer writer see
/// the same stream in one pass.
struct Tee<R, W> {
    inner: R,
    sink: W,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sink.write_all(&buf[..n])?;
        Ok(n)
    }
}

pub struct ImportOptions {
    pub config: ContainerConfig,
    /// RFC 3339 creation time.
    pub created: String,
    /// Where the tarball came from, for the history comment.
    pub source: String,
    pub layer: LayerOptions,
    /// The platform the config names (default: this machine's).
    pub platform: Option<image::Platform>,
}

#[cfg(test)]
impl ImportOptions {
    /// Fixed options for unit tests' images: one gzip layer, as a pulled image has.
    pub(crate) fn for_test() -> ImportOptions {
        ImportOptions {
            config: Default::default(),
            created: "2020-01-01T00:00:00Z".into(),
            source: "test".into(),
            layer: LayerOptions {
                compression: crate::image::Compression::Gzip,
                level: None,
            },
            platform: None,
        }
    }
}

/// A name inside a layer must stay inside the root: relative, no `..`.
pub fn check_entry_name(name: &Path, entry: &str) -> Result<()> {
    for c in name.components() {
        match c {
            Component::ParentDir => {
                return Err(StoreError::TarEntry {
                    entry: entry.to_string(),
                    reason: "path leaves the root through ..".into(),
                })
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(StoreError::TarEntry {
                    entry: entry.to_string(),
                    reason: "absolute path (create the tarball with tar -C DIR -c .)".into(),
                })
            }
            _ => {}
        }
    }
    Ok(())
}

impl Store {
    /// Reads a rootfs tarball (plain, gzip or zstd), checks every entry, and stores it
    /// as a one-layer image tagged `name`. Returns the manifest descriptor.
    pub fn import_rootfs(
        &self,
        input: impl Read + Send,
        name: &ImageRef,
        opts: ImportOptions,
    ) -> Result<oci_spec::image::Descriptor> {
        let _usage = self.usage_lock()?;
        let plain = decompress(BufReader::with_capacity(1 << 20, input)).at(&opts.source)?;
        let mut writer = self.layer_writer(opts.layer)?;
        {
            let mut tee = Tee {
                inner: plain,
                sink: &mut writer,
            };
            let mut archive = tar::Archive::new(&mut tee);
            let mut count = 0u64;
            for entry in archive.entries().at(&opts.source)? {
                let mut entry = entry.map_err(|e| bad_tar(&opts.source, e))?;
                let path = entry
                    .path()
                    .map_err(|e| bad_tar(&opts.source, e))?
                    .into_owned();
                let shown = path.display().to_string();
                check_entry_name(&path, &shown)?;
                if entry.header().entry_type().is_hard_link() {
                    if let Some(target) = entry.link_name().map_err(|e| bad_tar(&opts.source, e))? {
                        check_entry_name(&target, &shown)?;
                    }
                }
                io::copy(&mut entry, &mut io::sink()).map_err(|e| bad_tar(&opts.source, e))?;
                count += 1;
            }
            if count == 0 {
                return Err(StoreError::Archive {
                    path: opts.source.clone().into(),
                    reason: "not a tar archive, or an empty one".into(),
                });
            }
            // Keep the end-of-archive blocks so the layer is the input byte for byte.
            io::copy(&mut tee, &mut io::sink()).at(&opts.source)?;
        }
        let layer = writer.finish()?;
        // Normalised, so only arm carries a variant (`arm64/v8` is `arm64`).
        let host = opts.platform.clone().unwrap_or_else(image::Platform::host);
        let config = ImageConfig {
            created: Some(opts.created.clone()),
            architecture: host.architecture,
            os: host.os,
            variant: host.variant,
            config: Some(opts.config),
            rootfs: RootFs {
                kind: "layers".into(),
                diff_ids: vec![layer.diff_id.clone()],
            },
            history: vec![History {
                created: Some(opts.created),
                created_by: Some("mybuild import".into()),
                comment: Some(format!("Imported from {}", opts.source)),
                ..History::default()
            }],
            ..ImageConfig::default()
        };
        let manifest_desc = self.write_image(&config, &[layer.descriptor()])?;
        self.set_tag(name, &manifest_desc)?;
        Ok(manifest_desc)
    }

    /// Writes a config and an OCI manifest over stored layers; returns the manifest descriptor.
    pub fn write_image(
        &self,
        config: &ImageConfig,
        layers: &[oci_spec::image::Descriptor],
    ) -> Result<oci_spec::image::Descriptor> {
        let config_bytes = canonical_json(config)?;
        let cfg = self.write_blob(&config_bytes)?;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": image::OCI_MANIFEST,
            "config": image::descriptor(image::OCI_CONFIG, &cfg.digest, cfg.size),
            "layers": layers,
        });
        let bytes = canonical_json(&manifest)?;
        let m = self.write_blob(&bytes)?;
        Ok(image::descriptor(image::OCI_MANIFEST, &m.digest, m.size))
    }
}

fn bad_tar(source: &str, e: io::Error) -> StoreError {
    StoreError::Archive {
        path: source.into(),
        reason: format!("not a valid tar archive: {e}"),
    }
}
