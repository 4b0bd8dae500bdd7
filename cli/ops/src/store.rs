//! The store commands' data: the images list, inspect's document, tag.

use std::time::Duration;

use layer_cache::cache_index::CachePruneOptions;
use layer_cache::image::descriptor_digest;
use layer_cache::oci_spec::image::Descriptor;
use layer_cache::{Digest, ImageRef, Store};
use serde_json::Value;

use crate::{OpsError, Result};

macro_rules! bail {
    ($($t:tt)*) => {
        return Err(OpsError::invalid(format!($($t)*)))
    };
}

/// One tagged image, as `images` lists it.
pub struct ImageRow {
    pub repository: String,
    pub tag: String,
    pub digest: Digest,
    /// When it was created (RFC 3339) and its size; `None` when it cannot be read.
    pub summary: Option<(String, u64)>,
}

/// Every tag; `summaries`: also read each image's creation time and size.
pub fn images(store: &Store, summaries: bool) -> Result<Vec<ImageRow>> {
    let mut rows = Vec::new();
    for t in store.tags()? {
        let (repo, tag) = t.name.rsplit_once(':').unwrap_or((&t.name, ""));
        rows.push(ImageRow {
            repository: repo.to_string(),
            tag: tag.to_string(),
            digest: descriptor_digest(&t.descriptor)?,
            summary: summaries
                .then(|| store.image_summary(&t.descriptor).ok())
                .flatten(),
        });
    }
    Ok(rows)
}

fn json(bytes: &[u8], what: &'static str) -> Result<Value> {
    serde_json::from_slice(bytes).map_err(|source| OpsError::Json { what, source })
}

/// `inspect`: an image's manifest and config, or an index and its platforms.
pub fn inspect(store: &Store, image: &str) -> Result<Value> {
    let desc = store.resolve(image)?;
    if let Some((bytes, children)) = store.index_children(&desc)? {
        return inspect_index(store, &desc, &bytes, &children);
    }
    let img = store.load_image(&desc)?;
    let manifest = json(&img.manifest_bytes, "manifest")?;
    let config = json(&img.config_bytes, "config")?;
    let top = descriptor_digest(&desc)?;
    let names = store.tag_names(&top)?;
    Ok(serde_json::json!({
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
    }))
}

/// A multi-platform index: the index itself and its platforms, each with whether
/// the store holds that image.
fn inspect_index(
    store: &Store,
    desc: &Descriptor,
    bytes: &[u8],
    children: &[Descriptor],
) -> Result<Value> {
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
    let index = json(bytes, "index")?;
    Ok(serde_json::json!({
        "Id": top.to_string(),
        "RepoTags": names,
        "Digest": top.to_string(),
        "MediaType": desc.media_type().to_string(),
        "Platforms": platforms,
        "Index": index,
    }))
}

/// `tag`: names the image `source` resolves to `target` as well.
pub fn tag(store: &Store, source: &str, target: &str) -> Result<()> {
    let desc = store.resolve(source)?;
    let name = ImageRef::parse(target)?;
    if name.digest.is_some() {
        return Err(OpsError::TagWithDigest {
            name: target.to_string(),
        });
    }
    store.set_tag(&name, &desc)?;
    Ok(())
}

/// `--keep-storage` and `--filter until=…` as store options.
pub fn prune_options(keep_storage: Option<&str>, filters: &[String]) -> Result<CachePruneOptions> {
    let mut opts = CachePruneOptions {
        keep_storage: keep_storage.map(parse_size).transpose()?,
        until: None,
    };
    for f in filters {
        match f.split_once('=') {
            Some(("until", d)) => opts.until = Some(parse_duration(d)?),
            _ => bail!("--filter {f:?}: only until=DURATION (e.g. until=24h) is supported"),
        }
    }
    Ok(opts)
}

/// `512MB`, `10GB`, `1.5GiB`, `100` (bytes); docker's units, 1000- or 1024-based.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = match num.parse() {
        Ok(n) => n,
        Err(_) => bail!("invalid size {s:?}: expected a number with an optional unit (e.g. 10GB)"),
    };
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        u => bail!("invalid size {s:?}: unknown unit {u:?}"),
    };
    Ok((n * mult) as u64)
}

/// `24h`, `90m`, `7d`, `1h30m`, `45s`.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let mut total = 0u64;
    let mut num = String::new();
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = match num.parse() {
            Ok(n) => n,
            Err(_) => bail!("invalid duration {s:?}: expected e.g. 24h, 30m, 7d"),
        };
        num.clear();
        total += n * match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => bail!("invalid duration {s:?}: unknown unit {c:?} (use s, m, h or d)"),
        };
    }
    if !num.is_empty() {
        bail!("invalid duration {s:?}: a number needs a unit (s, m, h or d)");
    }
    if total == 0 && !s.trim().starts_with('0') {
        bail!("invalid duration {s:?}: expected e.g. 24h, 30m, 7d");
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_size("10GB").unwrap(), 10_000_000_000);
        assert_eq!(parse_size("1.5KiB").unwrap(), 1536);
        assert_eq!(parse_size("42").unwrap(), 42);
        assert!(parse_size("ten").is_err());
        assert_eq!(parse_duration("24h").unwrap().as_secs(), 86400);
        assert_eq!(parse_duration("1h30m").unwrap().as_secs(), 5400);
        assert!(parse_duration("24").is_err());
        assert!(parse_duration("3y").is_err());
    }
}
