//! Store commands: images, inspect, tag, rmi, prune, fsck.

use std::io::Write;

use anyhow::Result;
use layer_cache::ImageRef;

use crate::Globals;

#[derive(clap::Args, Debug)]
pub struct ImagesArgs {
    /// Only images whose name matches (REPO or REPO:TAG; `*`, `?` and `[...]` as Docker's reference filter)
    #[arg(value_name = "REPO[:TAG]")]
    reference: Option<String>,
    /// Show all images (no intermediate images are kept, so the same list)
    #[arg(short, long)]
    all: bool,
    /// Show digests
    #[arg(long)]
    digests: bool,
    /// Filter: reference=PATTERN, label=KEY[=VALUE], dangling=true|false, before=IMAGE, since=IMAGE (repeatable)
    #[arg(short, long, value_name = "FILTER")]
    filter: Vec<String>,
    /// table (default), json (one object per line) or a Go template such as '{{.Repository}}:{{.Tag}}'
    #[arg(long, value_name = "FORMAT")]
    format: Option<String>,
    /// Show only image ids
    #[arg(short, long)]
    quiet: bool,
    /// Show full digests
    #[arg(long)]
    no_trunc: bool,
}

const IMAGES_HEADERS: &[(&str, &str)] = &[
    ("Repository", "REPOSITORY"),
    ("Tag", "TAG"),
    ("ID", "IMAGE ID"),
    ("Digest", "DIGEST"),
    ("CreatedSince", "CREATED"),
    ("CreatedAt", "CREATED AT"),
    ("Size", "SIZE"),
    ("Containers", "CONTAINERS"),
    ("SharedSize", "SHARED SIZE"),
    ("UniqueSize", "UNIQUE SIZE"),
    ("VirtualSize", "VIRTUAL SIZE"),
];

pub fn images(g: &Globals, a: &ImagesArgs) -> Result<i32> {
    use crate::format::{self, Format, Layout};
    let default = match (a.quiet, a.digests) {
        (true, _) => "{{.ID}}",
        (false, false) => "table {{.Repository}}\\t{{.Tag}}\\t{{.ID}}\\t{{.CreatedSince}}\\t{{.Size}}",
        (false, true) => {
            "table {{.Repository}}\\t{{.Tag}}\\t{{.Digest}}\\t{{.ID}}\\t{{.CreatedSince}}\\t{{.Size}}"
        }
    };
    // As Docker: -q wins over --format.
    let spec = if a.quiet { None } else { a.format.as_deref() };
    let fmt = Format::parse(
        spec,
        &Layout {
            default,
            headers: IMAGES_HEADERS,
        },
    )?;
    let store = g.store()?;
    let mut filters = ops::images::ImageFilters::parse(&store, &a.filter)?;
    if let Some(r) = &a.reference {
        filters.add_reference(r)?;
    }
    let rows: Vec<serde_json::Value> = ops::images::list(&store, &filters)?
        .into_iter()
        .map(|i| {
            let id = if a.no_trunc {
                i.id.to_string()
            } else {
                i.id.hex().get(..12).unwrap_or(i.id.hex()).to_string()
            };
            let size = i.size.map_or_else(|| "N/A".to_string(), format::human_size);
            let since = match &i.created {
                _ if i.size.is_none() => "<damaged: run mybuild fsck>".to_string(),
                Some(c) => format::since(Some(c)),
                None => "N/A".to_string(),
            };
            serde_json::json!({
                "Containers": "N/A",
                "CreatedAt": i.created.as_deref().map(format::go_time).unwrap_or_default(),
                "CreatedSince": since,
                "Digest": i.id.to_string(),
                "ID": id,
                "Repository": i.repository,
                "SharedSize": "N/A",
                "Size": size,
                "Tag": i.tag,
                "UniqueSize": "N/A",
                "VirtualSize": size,
            })
        })
        .collect();
    let text = fmt.render(&rows)?;
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(0)
}

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// Image name, name@digest or id (prefix); an image the store lacks is read from its registry
    image: String,
    /// json (one line) or a Go template into the document, e.g. '{{.Config.config.Env}}' or '{{json .RepoTags}}'
    #[arg(short, long, value_name = "FORMAT")]
    format: Option<String>,
}

pub fn inspect(g: &Globals, a: &InspectArgs) -> Result<i32> {
    let doc = super::remote::inspect_doc(g, &a.image)?;
    let mut out = std::io::stdout().lock();
    if let Some(spec) = &a.format {
        let layout = crate::format::Layout {
            default: "json",
            headers: &[],
        };
        let text = crate::format::Format::parse(Some(spec), &layout)?.render_one(&doc)?;
        out.write_all(text.as_bytes())?;
        return Ok(0);
    }
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
    /// Untag even when a container uses the image (the container keeps it); with an id, remove every tag of it
    #[arg(short, long)]
    force: bool,
    /// Image names or ids (unique id prefixes) to remove
    #[arg(required = true)]
    images: Vec<String>,
}

pub fn rmi(g: &Globals, a: &RmiArgs) -> Result<i32> {
    let store = g.store()?;
    let mut code = 0;
    for name in &a.images {
        let in_use = |c: layer_cache::containers::Container| {
            eprintln!(
                "error: unable to remove image {name}: it is used by container {} ({}); remove the container or use -f",
                c.short_id(),
                c.name
            );
        };
        let id_tags = match ops::images::tags_of_id(&store, name) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {e}");
                code = 1;
                continue;
            }
        };
        if let Some((id, refs)) = id_tags {
            // By id, as Docker: every tag goes, which several tags need -f for.
            let short = id.hex().get(..12).unwrap_or(id.hex());
            if refs.len() > 1 && !a.force {
                eprintln!(
                    "error: conflict: unable to delete {short} (must be forced) - image is referenced in multiple repositories"
                );
                code = 1;
                continue;
            }
            if !a.force {
                if let Some(c) = container_using(&store, name, true)? {
                    in_use(c);
                    code = 1;
                    continue;
                }
            }
            for r in &refs {
                if store.remove_tag(r)? {
                    println!("Untagged: {}", r.tagged_name());
                }
            }
            continue;
        }
        let r = ImageRef::parse(name)?;
        if !a.force {
            if let Some(c) = container_using(&store, name, false)? {
                in_use(c);
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

/// A container created from the image `name` names, if any, when removing `name`
/// removes the image: it is its only tag, or `every_tag` goes (removal by id).
fn container_using(
    store: &layer_cache::Store,
    name: &str,
    every_tag: bool,
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
    if !every_tag && store.tag_names(&top)?.len() > 1 {
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
