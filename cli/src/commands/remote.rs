//! Reading registry images and combining them: manifest, config, index create and
//! inspect, inspect's registry fallback, and the mirroring forms of copy and pull
//! (`--all-tags`, archive and layout ends). [`ops::remote`], [`ops::index`] and
//! [`ops::mirror`] do the work; this file parses arguments and prints.

use std::io::Write;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use registry_client::transfer::{Action, TransferEvent, TransferReporter};
use registry_client::Reference;

use super::registry::{
    client, until_interrupted, uploading_until_interrupted, ProgressMode, RegistryOpts,
};
use crate::progress::Event;
use crate::transfer_view::TransferView;
use crate::Globals;

#[derive(clap::Args, Debug)]
pub struct ManifestArgs {
    /// Image in a registry (name[:tag][@digest])
    reference: String,
    /// For an index: print this platform's manifest instead (os/arch[/variant])
    #[arg(long)]
    platform: Option<String>,
    /// Print the bytes exactly as the registry serves them
    #[arg(long)]
    raw: bool,
    #[command(flatten)]
    opts: RegistryOpts,
}

#[derive(clap::Args, Debug)]
pub struct ConfigArgs {
    /// Image in a registry (name[:tag][@digest])
    reference: String,
    /// Platform to pick from a multi-platform image (default: this machine's)
    #[arg(long)]
    platform: Option<String>,
    /// Print the bytes exactly as the registry serves them
    #[arg(long)]
    raw: bool,
    #[command(flatten)]
    opts: RegistryOpts,
}

/// JSON bytes as asked: exact, or pretty with a final newline.
fn print_json(bytes: &[u8], raw: bool, what: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if raw {
        out.write_all(bytes)?;
    } else {
        let v: serde_json::Value =
            serde_json::from_slice(bytes).with_context(|| format!("{what} is not JSON"))?;
        serde_json::to_writer_pretty(&mut out, &v)?;
        writeln!(out)?;
    }
    out.flush()?;
    Ok(())
}

pub fn manifest(a: &ManifestArgs) -> Result<i32> {
    let r = Reference::parse(&a.reference)?;
    let platform = a
        .platform
        .as_deref()
        .map(registry_client::Platform::parse)
        .transpose()?;
    let m = ops::registry::runtime()?.block_on(ops::remote::manifest(
        &client(&a.opts),
        &r,
        platform.as_ref(),
    ))?;
    print_json(&m.bytes, a.raw, "the manifest")?;
    Ok(0)
}

pub fn config(a: &ConfigArgs) -> Result<i32> {
    let r = Reference::parse(&a.reference)?;
    let platform = ops::registry::want_platform(a.platform.as_deref())?;
    let (_, bytes) =
        ops::registry::runtime()?.block_on(ops::remote::config(&client(&a.opts), &r, &platform))?;
    print_json(&bytes, a.raw, "the config")?;
    Ok(0)
}

/// `inspect`'s document: the store's when it holds the image, else, when the
/// name writes its registry, the registry's (said on standard error, and
/// `"Remote": true` in the document).
pub fn inspect_doc(g: &Globals, image: &str) -> Result<serde_json::Value> {
    let store_err = match ops::store::inspect(&g.store()?, image) {
        Ok(doc) => return Ok(doc),
        Err(e) if ops::remote::is_not_in_store(&e) => e,
        Err(e) => return Err(e.into()),
    };
    let r = match Reference::parse(image) {
        Ok(r) if ops::remote::names_registry(image) => r,
        _ => return Err(store_err.into()),
    };
    let doc = ops::registry::runtime()?
        .block_on(ops::remote::inspect(&client(&RegistryOpts::default()), &r))
        .with_context(|| {
            format!(
                "{image}: not in the store, and reading it from {} failed",
                r.registry
            )
        })?;
    eprintln!("{image}: not in the store; read from {}", r.registry);
    Ok(doc)
}

#[derive(clap::Args, Debug)]
pub struct IndexArgs {
    #[command(subcommand)]
    command: IndexCommand,
}

#[derive(clap::Subcommand, Debug)]
enum IndexCommand {
    /// Combine images into one multi-platform index (as docker buildx imagetools create)
    Create(IndexCreateArgs),
    /// Print an index and its platforms (the store's, else the registry's)
    Inspect(IndexInspectArgs),
}

#[derive(clap::Args, Debug)]
pub struct IndexCreateArgs {
    /// Name of the new index
    #[arg(short = 't', long = "tag", required = true)]
    tag: String,
    /// Images to combine: store images (one the store lacks is read from the registry its name writes), or registry images with --push; an index contributes each of its platforms
    #[arg(required = true, value_name = "SRC")]
    sources: Vec<String>,
    /// Read the sources from their registries and push the index to the tag's registry (copying or mounting what it lacks) instead of storing it
    #[arg(long)]
    push: bool,
    /// Annotation on the index ([index:]K=V) or on each of its entries (manifest-descriptor:K=V); repeatable
    #[arg(long = "annotation", value_name = "[TYPE:]K=V")]
    annotations: Vec<String>,
    #[command(flatten)]
    opts: RegistryOpts,
}

#[derive(clap::Args, Debug)]
pub struct IndexInspectArgs {
    /// Index in the store or in a registry
    reference: String,
    /// Print the index's bytes exactly as stored or served
    #[arg(long)]
    raw: bool,
    #[command(flatten)]
    opts: RegistryOpts,
}

pub fn index(g: &Globals, a: &IndexArgs) -> Result<i32> {
    match &a.command {
        IndexCommand::Create(c) => index_create(g, c),
        IndexCommand::Inspect(i) => index_inspect(g, i),
    }
}

fn index_create(g: &Globals, a: &IndexCreateArgs) -> Result<i32> {
    let ann = ops::index::Annotations::parse(&a.annotations)?;
    let created = if a.push {
        let dest = Reference::parse(&a.tag)?;
        let sources = a
            .sources
            .iter()
            .map(|s| Reference::parse(s))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let client = client(&a.opts);
        let view = Arc::new(TransferView::new(ProgressMode::Plain));
        let work = ops::index::create_in_registry(&client, &sources, &dest, &ann, view.clone());
        let made = match uploading_until_interrupted(&ops::registry::runtime()?, &client, work)? {
            Ok(made) => made,
            Err(code) => {
                view.event(TransferEvent::Interrupted {
                    action: Action::Push,
                    reference: &dest,
                    left: "the index was not written; images already copied stay",
                });
                return Ok(code);
            }
        };
        view.event(TransferEvent::Finish {
            action: Action::Push,
            reference: &dest,
            digest: &made.digest,
            size: made.size,
        });
        made
    } else {
        let client = client(&a.opts);
        let view = Arc::new(TransferView::new(ProgressMode::Plain));
        let store = g.store()?;
        let work = ops::index::create_in_store(&store, &client, &a.sources, &a.tag, &ann, view);
        let made = match until_interrupted(&ops::registry::runtime()?, work)? {
            Ok(made) => made,
            Err(code) => {
                eprintln!("interrupted: {} was not tagged", a.tag);
                return Ok(code);
            }
        };
        for e in &made.entries {
            eprintln!("{:<16} {} (from {})", platform_text(e), e.digest, e.source);
        }
        made
    };
    println!("{}", created.digest);
    Ok(0)
}

fn platform_text(e: &ops::index::Entry) -> String {
    e.platform
        .as_ref()
        .map_or_else(|| "-".to_string(), |p| p.to_string())
}

fn index_inspect(g: &Globals, a: &IndexInspectArgs) -> Result<i32> {
    let view = match ops::index::view_in_store(&g.store()?, &a.reference)? {
        Some(v) => v,
        None => {
            let r = Reference::parse(&a.reference)?;
            let v = ops::registry::runtime()?
                .block_on(ops::index::view_in_registry(&client(&a.opts), &r))?;
            eprintln!(
                "{}: not in the store; read from {}",
                a.reference, r.registry
            );
            v
        }
    };
    if a.raw {
        let mut out = std::io::stdout().lock();
        out.write_all(&view.bytes)?;
        out.flush()?;
        return Ok(0);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "Name:      {}", a.reference)?;
    writeln!(
        out,
        "Source:    {}",
        if view.in_store { "store" } else { "registry" }
    )?;
    writeln!(out, "MediaType: {}", view.media_type)?;
    writeln!(out, "Digest:    {}", view.digest)?;
    for (k, v) in &view.annotations {
        writeln!(out, "Annotation: {k}={v}")?;
    }
    writeln!(out)?;
    writeln!(out, "{:<16} DIGEST", "PLATFORM")?;
    for e in &view.entries {
        writeln!(out, "{:<16} {}", platform_text(e), e.digest)?;
    }
    Ok(0)
}

/// `copy` with a file or layout end: through [`ops::mirror`]. `Ok(None)` when
/// both ends are registries (the caller's streaming copy).
pub fn copy_ends(
    src: &str,
    dst: &str,
    platform: Option<&str>,
    all_platforms: bool,
    opts: &RegistryOpts,
) -> Result<Option<i32>> {
    let (s, d) = (ops::mirror::End::parse(src)?, ops::mirror::End::parse(dst)?);
    if s.registry().is_some() && d.registry().is_some() {
        return Ok(None);
    }
    let want = ops::registry::want_platform(platform)?;
    let client = client(opts);
    let view = Arc::new(TransferView::new(ProgressMode::Plain));
    view.say(Event::Copy {
        reference: s.to_string(),
        dest: d.to_string(),
    });
    let work = ops::mirror::copy(&client, &s, &d, &want, all_platforms, view.clone());
    let digest = match uploading_until_interrupted(&ops::registry::runtime()?, &client, work)? {
        Ok(d) => d,
        Err(code) => {
            view.say(Event::Interrupted {
                action: "copy",
                reference: s.to_string(),
                left: format!("{d} was not written"),
            });
            return Ok(Some(code));
        }
    };
    view.say(Event::Copied {
        reference: s.to_string(),
        dest: d.to_string(),
        digest: digest.clone(),
    });
    println!("{digest}");
    Ok(Some(0))
}

/// `copy --all-tags SRC_REPO DST_REPO`: every tag, each whole; prints `TAG DIGEST`.
pub fn copy_all_tags(src: &str, dst: &str, opts: &RegistryOpts) -> Result<i32> {
    let registry_only = |s: &str| -> Result<Reference> {
        match ops::mirror::End::parse(s)? {
            ops::mirror::End::Registry(r) => Ok(r),
            other => bail!("--all-tags copies between registries; {other} is not one"),
        }
    };
    let src = ops::mirror::repository(&registry_only(src)?, "source")?;
    let dst = ops::mirror::repository(&registry_only(dst)?, "destination")?;
    let client = client(opts);
    let view = Arc::new(TransferView::new(ProgressMode::Plain));
    view.say(Event::copy(&src, &dst));
    let each = |tag: &str, d: &layer_cache::Digest| println!("{tag} {d}");
    let work = ops::mirror::copy_all_tags(&client, &src, &dst, view.clone(), &each);
    let done = match uploading_until_interrupted(&ops::registry::runtime()?, &client, work)? {
        Ok(done) => done,
        Err(code) => {
            view.event(TransferEvent::Interrupted {
                action: Action::Copy,
                reference: &src,
                left: "the tags printed were copied; the one in progress was not written",
            });
            return Ok(code);
        }
    };
    eprintln!("copied {} tags of {src} to {dst}", done.len());
    Ok(0)
}

/// `pull --all-tags REPO`: every tag into the store; prints each name pulled.
pub fn pull_all_tags(
    g: &Globals,
    repo: &str,
    platform: Option<&str>,
    mode: ProgressMode,
    opts: &RegistryOpts,
) -> Result<i32> {
    let repo = ops::mirror::repository(&Reference::parse(repo)?, "repository")?;
    let platform = ops::registry::want_platform(platform)?;
    let store = g.store()?;
    let client = client(opts);
    let view = Arc::new(TransferView::new(mode));
    let each = |r: &Reference, _: &layer_cache::Digest| {
        println!("{}", ops::store_io::local_name(r));
    };
    let work = ops::mirror::pull_all_tags(&store, &client, &repo, &platform, view.clone(), &each);
    if let Err(code) = until_interrupted(&ops::registry::runtime()?, work)? {
        view.event(TransferEvent::Interrupted {
            action: Action::Pull,
            reference: &repo,
            left: "the tags printed were pulled; the one in progress was not tagged",
        });
        return Ok(code);
    }
    Ok(0)
}
