//! import, save and load: images in and out of the store as tar files.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use layer_cache::image;
use layer_cache::import::ImportOptions;
use layer_cache::layer::LayerOptions;
use layer_cache::{Digest, ImageRef, Store};

use crate::{OpsError, Result};

/// Opens the caller's standard output for an archive (`dest` `-`), or refuses to.
pub type Stdout<'a> = &'a dyn Fn() -> Result<Box<dyn Write>>;

/// `import`: a one-layer image from a rootfs tarball.
pub struct Import<'a> {
    /// The tarball (plain, gzip or zstd), or `-` for standard input.
    pub source: &'a str,
    /// The new image's name.
    pub reference: &'a str,
    /// Dockerfile instructions applied to the config.
    pub changes: &'a [String],
    /// The history's commit message (default: the source).
    pub message: Option<&'a str>,
    /// `gzip`, `zstd` or `uncompressed`.
    pub compression: &'a str,
    /// `os/arch[/variant]` the config names (default: this machine's).
    pub platform: Option<&'a str>,
}

/// Imports the tarball `i` names and tags it; returns the manifest's digest.
pub fn import(store: &Store, i: &Import<'_>) -> Result<Digest> {
    let name = ImageRef::parse(i.reference)?;
    if name.digest.is_some() {
        return Err(OpsError::ImportWithDigest {
            name: i.reference.to_string(),
        });
    }
    let config = builder::exec::config::from_changes(i.changes)?;
    let compression = crate::output::codec_name(i.compression);
    let opts = ImportOptions {
        config,
        created: image::rfc3339(image::build_time()),
        source: i.message.unwrap_or(i.source).to_string(),
        layer: LayerOptions {
            compression,
            level: None,
        },
        platform: i.platform.map(oci_vocab::Platform::parse).transpose()?,
    };
    let desc = if i.source == "-" {
        store.import_rootfs(std::io::stdin(), &name, opts)?
    } else {
        let f = File::open(i.source).map_err(OpsError::io("opening", i.source))?;
        store.import_rootfs(f, &name, opts)?
    };
    Ok(image::descriptor_digest(&desc)?)
}

/// `save`: the named images as one tar, to `output` or standard output: as
/// stored (so digests stay those `images` shows), or with the layers built here
/// compressed when `compression` asks.
pub fn save(
    store: &Store,
    names: &[String],
    compression: Option<layer_cache::image::Compression>,
    output: Option<&Path>,
    stdout: Stdout<'_>,
) -> Result<()> {
    // The converted documents are untagged blobs until written out.
    let _usage = store.usage_lock()?;
    let mut images = Vec::new();
    for name in names {
        let mut desc = store.resolve(name)?;
        if let Some(c) = compression {
            let asked = crate::output::ExportOpts {
                compression: Some(c),
                ..Default::default()
            };
            desc = store.convert_image(&desc, &asked.leaving(&Default::default()))?;
        }
        // An id (prefix) or digest names no repository; the image is saved untagged.
        let tag = match store.resolve_id(name)? {
            Some(_) => None,
            None => ImageRef::parse(name).ok().filter(|r| r.digest.is_none()),
        };
        images.push((tag, desc));
    }
    write_tar_to(output, stdout, |w| Ok(store.save(&images, w)?))
}

/// Streams a tar to `dest`, or to `stdout` when `dest` is `None` or `-`
/// ([`layer_cache::write_to`] says how a path is written).
pub fn write_tar_to(
    dest: Option<&Path>,
    stdout: Stdout<'_>,
    write: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    match dest.filter(|p| p.as_os_str() != "-") {
        Some(path) => layer_cache::write_to::write_to_path(path, write),
        None => {
            let mut w = stdout()?;
            write(&mut w)?;
            w.flush().map_err(OpsError::Stdout)?;
            Ok(())
        }
    }
}

/// An image `load` stored: its name as tagged (none for an untagged one).
pub struct Loaded {
    pub name: Option<String>,
    pub digest: Digest,
}

/// `load`: the images of a Docker or OCI archive at `input` (else standard input).
pub fn load(store: &Store, input: Option<&Path>) -> Result<Vec<Loaded>> {
    let loaded = match input {
        Some(p) => {
            let f = File::open(p).map_err(OpsError::io("opening", p))?;
            store.load(f, &p.display().to_string())?
        }
        None => store.load(std::io::stdin(), "-")?,
    };
    loaded
        .into_iter()
        .map(|l| {
            Ok(Loaded {
                digest: image::descriptor_digest(&l.descriptor)?,
                name: l
                    .name
                    .map(|n| ImageRef::parse(&n).map(|r| r.tagged_name()).unwrap_or(n)),
            })
        })
        .collect()
}
