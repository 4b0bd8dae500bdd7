//! import, save and load: images in and out of the store as tar files.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use layer_cache::image::{self, Compression};
use layer_cache::import::ImportOptions;
use layer_cache::layer::LayerOptions;
use layer_cache::ImageRef;

use crate::Globals;

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// Rootfs tarball (plain, gzip or zstd), or - for standard input
    source: String,
    /// Name for the new image
    reference: String,
    /// Apply a Dockerfile instruction to the config (CMD, ENTRYPOINT, ENV, EXPOSE, HEALTHCHECK, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR)
    #[arg(short = 'c', long = "change")]
    changes: Vec<String>,
    /// Set the commit message in the history
    #[arg(short, long)]
    message: Option<String>,
    /// Layer compression
    #[arg(long, value_parser = ["gzip", "zstd", "uncompressed"], default_value = "gzip")]
    compression: String,
}

pub fn import(g: &Globals, a: &ImportArgs) -> Result<i32> {
    let name = ImageRef::parse(&a.reference)?;
    if name.digest.is_some() {
        bail!(
            "cannot import as {:?}: a name takes a tag, not a digest",
            a.reference
        );
    }
    let config = builder::exec::config::from_changes(&a.changes)?;
    let compression = match a.compression.as_str() {
        "zstd" => Compression::Zstd,
        "uncompressed" => Compression::None,
        _ => Compression::Gzip,
    };
    let store = g.store()?;
    let opts = ImportOptions {
        config,
        created: image::rfc3339(image::build_time()),
        source: a.message.clone().unwrap_or_else(|| a.source.clone()),
        layer: LayerOptions {
            compression,
            level: None,
        },
    };
    let desc = if a.source == "-" {
        store.import_rootfs(std::io::stdin(), &name, opts)?
    } else {
        let f = File::open(&a.source).with_context(|| format!("opening {}", a.source))?;
        store.import_rootfs(f, &name, opts)?
    };
    println!("{}", image::descriptor_digest(&desc)?);
    Ok(0)
}

#[derive(clap::Args, Debug)]
pub struct SaveArgs {
    /// Write to this file instead of standard output
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Images to save
    #[arg(required = true)]
    images: Vec<String>,
}

pub fn save(g: &Globals, a: &SaveArgs) -> Result<i32> {
    let store = g.store()?;
    let mut images = Vec::new();
    for name in &a.images {
        let desc = store.resolve(name)?;
        // An id or digest names no repository; the image is saved untagged.
        images.push((
            ImageRef::parse(name).ok().filter(|r| r.digest.is_none()),
            desc,
        ));
    }
    write_tar_to(a.output.as_deref(), |w| Ok(store.save(&images, w)?))?;
    Ok(0)
}

/// Streams a tar to `dest`, or to standard output when `dest` is `None` or `-`
/// ([`layer_cache::write_to`] says how a path is written).
pub fn write_tar_to(
    dest: Option<&std::path::Path>,
    write: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    match dest.filter(|p| p.as_os_str() != "-") {
        Some(path) => layer_cache::write_to::write_to_path(path, write),
        None => {
            let stdout = std::io::stdout();
            if std::io::IsTerminal::is_terminal(&stdout) {
                bail!("refusing to write an archive to a terminal; name a file or redirect");
            }
            let mut w = BufWriter::new(stdout.lock());
            write(&mut w)?;
            w.flush()?;
            Ok(())
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// Read from this file instead of standard input
    #[arg(short, long)]
    input: Option<PathBuf>,
    /// Print only the loaded names
    #[arg(short, long)]
    quiet: bool,
}

pub fn load(g: &Globals, a: &LoadArgs) -> Result<i32> {
    let store = g.store()?;
    let loaded = match &a.input {
        Some(p) => {
            let f = File::open(p).with_context(|| format!("opening {}", p.display()))?;
            store.load(f, &p.display().to_string())?
        }
        None => store.load(std::io::stdin(), "-")?,
    };
    for l in loaded {
        let digest = image::descriptor_digest(&l.descriptor)?;
        match l.name {
            Some(n) if a.quiet => println!(
                "{}",
                ImageRef::parse(&n).map(|r| r.tagged_name()).unwrap_or(n)
            ),
            Some(n) => println!(
                "Loaded image: {} ({digest})",
                ImageRef::parse(&n).map(|r| r.tagged_name()).unwrap_or(n)
            ),
            None => println!("Loaded image ID: {digest}"),
        }
    }
    Ok(0)
}
