//! Store commands: images, inspect, tag, rmi, prune, fsck.

use std::io::Write;

use anyhow::{Context, Result};
use layer_cache::image::descriptor_digest;
use layer_cache::ImageRef;
use serde_json::Value;

use crate::Globals;

#[derive(clap::Args, Debug)]
pub struct ImagesArgs {
    /// Show only image ids
    #[arg(short, long)]
    quiet: bool,
    /// Show full digests
    #[arg(long)]
    no_trunc: bool,
}

pub fn images(g: &Globals, a: &ImagesArgs) -> Result<i32> {
    let store = g.store()?;
    let mut out = std::io::stdout().lock();
    if !a.quiet {
        writeln!(
            out,
            "{:<40} {:<16} {:<14} {:<22} SIZE",
            "REPOSITORY", "TAG", "IMAGE ID", "CREATED"
        )?;
    }
    for t in store.tags()? {
        let (repo, tag) = t.name.rsplit_once(':').unwrap_or((&t.name, ""));
        let digest = descriptor_digest(&t.descriptor)?;
        let id = if a.no_trunc {
            digest.to_string()
        } else {
            digest.short().to_string()
        };
        if a.quiet {
            writeln!(out, "{id}")?;
            continue;
        }
        let (created, size) = store
            .image_summary(&t.descriptor)
            .unwrap_or_else(|_| ("<damaged: run mybuild fsck>".to_string(), 0));
        writeln!(
            out,
            "{repo:<40} {tag:<16} {id:<14} {:<22} {}",
            created.get(..20).unwrap_or(&created),
            super::human_size(size)
        )?;
    }
    Ok(0)
}

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// Image name, name@digest or id
    image: String,
}

pub fn inspect(g: &Globals, a: &InspectArgs) -> Result<i32> {
    let store = g.store()?;
    let desc = store.resolve(&a.image)?;
    if let Some((bytes, children)) = store.index_children(&desc)? {
        return inspect_index(&store, &desc, &bytes, &children);
    }
    let img = store.load_image(&desc)?;
    let manifest: Value = serde_json::from_slice(&img.manifest_bytes).context("manifest")?;
    let config: Value = serde_json::from_slice(&img.config_bytes).context("config")?;
    let top = descriptor_digest(&desc)?;
    let names = store.tag_names(&top)?;
    let doc = serde_json::json!({
        "Id": img.manifest_digest.to_string(),
        "RepoTags": names,
        "Digest": top.to_string(),
        "MediaType": desc.media_type().to_string(),
        "ConfigDigest": img.config_digest.to_string(),
        "UpstreamIndex": desc
            .annotations()
            .as_ref()
            .and_then(|a| a.get(layer_cache::store::UPSTREAM_INDEX_ANNOTATION)),
        "Manifest": manifest,
        "Config": config,
    });
    print_json(&doc)
}

/// A multi-platform index: the index itself and its platforms, each with whether
/// the store holds that image.
fn inspect_index(
    store: &layer_cache::Store,
    desc: &layer_cache::oci_spec::image::Descriptor,
    bytes: &[u8],
    children: &[layer_cache::oci_spec::image::Descriptor],
) -> Result<i32> {
    let top = descriptor_digest(desc)?;
    let names = store.tag_names(&top)?;
    let mut platforms = Vec::new();
    for c in children {
        // As the index writes it, not normalised.
        let platform = c
            .platform()
            .as_ref()
            .map(|p| registry_client::Platform::from(p).to_string());
        let digest = descriptor_digest(c)?;
        platforms.push(serde_json::json!({
            "Platform": platform,
            "Digest": digest.to_string(),
            "Present": store.has_blob(&digest),
        }));
    }
    let index: Value = serde_json::from_slice(bytes).context("index")?;
    let doc = serde_json::json!({
        "Id": top.to_string(),
        "RepoTags": names,
        "Digest": top.to_string(),
        "MediaType": desc.media_type().to_string(),
        "Platforms": platforms,
        "Index": index,
    });
    print_json(&doc)
}

#[derive(clap::Args, Debug)]
pub struct TagArgs {
    /// Existing image
    source: String,
    /// New name
    target: String,
}

pub fn tag(g: &Globals, a: &TagArgs) -> Result<i32> {
    let store = g.store()?;
    let desc = store.resolve(&a.source)?;
    let target = ImageRef::parse(&a.target)?;
    if target.digest.is_some() {
        anyhow::bail!(
            "cannot tag {:?}: a new name takes a tag, not a digest",
            a.target
        );
    }
    store.set_tag(&target, &desc)?;
    Ok(0)
}

#[derive(clap::Args, Debug)]
pub struct RmiArgs {
    /// Image names to untag
    #[arg(required = true)]
    images: Vec<String>,
}

pub fn rmi(g: &Globals, a: &RmiArgs) -> Result<i32> {
    let store = g.store()?;
    let mut code = 0;
    for name in &a.images {
        let r = ImageRef::parse(name)?;
        if store.remove_tag(&r)? {
            println!("Untagged: {}", r.tagged_name());
        } else {
            eprintln!("error: no such image: {name}");
            code = 1;
        }
    }
    Ok(code)
}

#[derive(clap::Args, Debug)]
pub struct PruneArgs {
    /// Also remove step cache records, least recently used first (then their blobs)
    #[arg(long)]
    cache: bool,
    /// With --cache: keep the most recently used records up to this size (e.g. 10GB)
    #[arg(long, requires = "cache", value_name = "SIZE")]
    keep_storage: Option<String>,
    /// With --cache: until=DURATION removes only records unused for that long (e.g. 24h)
    #[arg(long, requires = "cache", value_name = "FILTER")]
    filter: Vec<String>,
}

pub fn prune(g: &Globals, a: &PruneArgs) -> Result<i32> {
    let store = g.store()?;
    if a.cache {
        let opts = super::cache::prune_options(a.keep_storage.as_deref(), &a.filter)?;
        let c = store.cache_prune(&opts)?;
        println!(
            "Deleted {} cache records ({} of layers released)",
            c.records_removed,
            super::human_size(c.bytes_released)
        );
        // Cache mounts carry no usage times; only an unlimited prune removes them.
        if a.keep_storage.is_none() && a.filter.is_empty() {
            let n = store.prune_cache_mounts()?;
            println!("Deleted {n} RUN --mount=type=cache directories");
        }
    }
    let s = store.prune(&[])?;
    println!(
        "Deleted {} blobs and {} stale ingest files, reclaimed {}",
        s.blobs_removed,
        s.ingests_removed,
        super::human_size(s.bytes_removed)
    );
    println!(
        "Deleted {} unused snapshots and {} leftover build directories",
        s.snapshots_removed, s.scratch_removed
    );
    Ok(0)
}

#[derive(clap::Args, Debug)]
pub struct FsckArgs {}

pub fn fsck(g: &Globals, _a: &FsckArgs) -> Result<i32> {
    let store = g.store()?;
    let r = store.fsck()?;
    for p in &r.problems {
        println!("{p}");
    }
    // Blobs a concurrent prune removed before they were read are not damage.
    let vanished = match r.blobs_vanished {
        0 => String::new(),
        n => format!(", {n} removed meanwhile"),
    };
    println!(
        "checked {} blobs ({}{vanished}) and {} tags: {}",
        r.blobs_checked,
        super::human_size(r.bytes_checked),
        r.tags_checked,
        if r.is_ok() {
            "ok".to_string()
        } else {
            format!("{} problems", r.problems.len())
        }
    );
    Ok(if r.is_ok() { 0 } else { 1 })
}

/// Writes `doc` as pretty JSON and a newline to standard output.
fn print_json(doc: &Value) -> Result<i32> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, doc)?;
    writeln!(out)?;
    Ok(0)
}
