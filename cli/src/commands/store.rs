//! Store commands: images, inspect, tag, rmi, prune, fsck.

use std::io::Write;

use anyhow::Result;
use layer_cache::ImageRef;

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
    for row in ops::store::images(&store, !a.quiet)? {
        let id = if a.no_trunc {
            row.digest.to_string()
        } else {
            row.digest.short().to_string()
        };
        if a.quiet {
            writeln!(out, "{id}")?;
            continue;
        }
        let (created, size) = row
            .summary
            .unwrap_or_else(|| ("<damaged: run mybuild fsck>".to_string(), 0));
        writeln!(
            out,
            "{:<40} {:<16} {id:<14} {:<22} {}",
            row.repository,
            row.tag,
            created.get(..20).unwrap_or(&created),
            super::human_size(size)
        )?;
    }
    Ok(0)
}

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// Image name, name@digest or id (an image the store lacks is read from its registry)
    image: String,
}

pub fn inspect(g: &Globals, a: &InspectArgs) -> Result<i32> {
    let doc = super::remote::inspect_doc(g, &a.image)?;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &doc)?;
    writeln!(out)?;
    Ok(0)
}

#[derive(clap::Args, Debug)]
pub struct TagArgs {
    /// Existing image
    source: String,
    /// New name
    target: String,
}

pub fn tag(g: &Globals, a: &TagArgs) -> Result<i32> {
    ops::store::tag(&g.store()?, &a.source, &a.target)?;
    Ok(0)
}

#[derive(clap::Args, Debug)]
pub struct RmiArgs {
    /// Untag even when a container uses the image (the container keeps it)
    #[arg(short, long)]
    force: bool,
    /// Image names to untag
    #[arg(required = true)]
    images: Vec<String>,
}

pub fn rmi(g: &Globals, a: &RmiArgs) -> Result<i32> {
    let store = g.store()?;
    let mut code = 0;
    for name in &a.images {
        let r = ImageRef::parse(name)?;
        if !a.force {
            if let Some(c) = container_using(&store, name)? {
                eprintln!(
                    "error: unable to remove image {name}: it is used by container {} ({}); remove the container or use -f",
                    c.short_id(),
                    c.name
                );
                code = 1;
                continue;
            }
        }
        if store.remove_tag(&r)? {
            println!("Untagged: {}", r.tagged_name());
        } else {
            eprintln!("error: no such image: {name}");
            code = 1;
        }
    }
    Ok(code)
}

/// A container created from the image `name` names, if any.
fn container_using(
    store: &layer_cache::Store,
    name: &str,
) -> Result<Option<layer_cache::containers::Container>> {
    let Ok(desc) = store.resolve(name) else {
        return Ok(None);
    };
    let img = match store.load_image(&desc) {
        Ok(img) => img,
        Err(_) => return Ok(None),
    };
    let top = layer_cache::image::descriptor_digest(&desc)?;
    // As Docker: untagging one of several names leaves the image in place.
    if store.tag_names(&top)?.len() > 1 {
        return Ok(None);
    }
    let mut users = layer_cache::containers::users_of(store.root(), &img.manifest_digest)?;
    users.extend(layer_cache::containers::users_of(store.root(), &top)?);
    Ok(users.into_iter().next())
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
        let opts = ops::store::prune_options(a.keep_storage.as_deref(), &a.filter)?;
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
