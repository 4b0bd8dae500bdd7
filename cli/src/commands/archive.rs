//! import, save and load: images in and out of the store as tar files
//! ([`ops::archive`] does the work).

use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Result;

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
    /// Layer compression in the store (a push or save compresses an uncompressed layer with gzip)
    #[arg(long, value_parser = ["gzip", "zstd", "uncompressed"], default_value = "uncompressed")]
    compression: String,
    /// Platform the image's config names (os/arch[/variant]; default: this machine's)
    #[arg(long)]
    platform: Option<String>,
}

pub fn import(g: &Globals, a: &ImportArgs) -> Result<i32> {
    let import = ops::archive::Import {
        source: &a.source,
        reference: &a.reference,
        changes: &a.changes,
        message: a.message.as_deref(),
        compression: &a.compression,
        platform: a.platform.as_deref(),
    };
    println!("{}", ops::archive::import(&g.store()?, &import)?);
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
    /// Compress the layers built here (which the store keeps uncompressed): gzip or zstd; by default the images are saved as stored, digests unchanged
    #[arg(long, value_parser = ["gzip", "zstd"])]
    compression: Option<String>,
}

pub fn save(g: &Globals, a: &SaveArgs) -> Result<i32> {
    let compression = a.compression.as_deref().map(ops::output::codec_name);
    ops::archive::save(
        &g.store()?,
        &a.images,
        compression,
        a.output.as_deref(),
        &stdout,
    )?;
    Ok(0)
}

/// Standard output for an archive, unless it is a terminal.
pub fn stdout() -> ops::Result<Box<dyn Write>> {
    let stdout = std::io::stdout();
    if stdout.is_terminal() {
        return Err(ops::OpsError::ArchiveToTerminal);
    }
    Ok(Box::new(BufWriter::new(stdout.lock())))
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
    for l in ops::archive::load(&g.store()?, a.input.as_deref())? {
        match l.name {
            Some(n) if a.quiet => println!("{n}"),
            Some(n) => println!("Loaded image: {n} ({})", l.digest),
            None => println!("Loaded image ID: {}", l.digest),
        }
    }
    Ok(0)
}
