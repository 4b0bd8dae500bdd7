//! Reading an image in a registry without storing it: its manifest (an index's
//! entry for a platform), its config, and the document `inspect` prints for an
//! image the store does not hold. Bytes are returned exactly as the registry
//! served them, so a caller can print them and their digest still holds.

use std::sync::Arc;

use registry_client::manifest::select_platform;
use registry_client::{Client, Descriptor, Manifest, ManifestBody, Platform, Reference};
use serde_json::Value;

use crate::{OpsError, Result};

/// Configs larger than this are refused rather than held in memory (the
/// store's own bound for JSON blobs).
pub const MAX_CONFIG: u64 = layer_cache::image::MAX_JSON_BLOB;

/// The manifest `r` names; when that is an index and `platform` is given, the
/// index's entry for that platform (containerd's matcher, as pull picks).
pub async fn manifest(
    client: &Arc<Client>,
    r: &Reference,
    platform: Option<&Platform>,
) -> Result<Manifest> {
    let top = client.get_manifest(r).await?;
    match platform {
        Some(want) if top.is_index() => Ok(platform_manifest(client, r, &top, want).await?.1),
        _ => Ok(top),
    }
}

/// The entry of the index `index` for `want`, and its manifest.
async fn platform_manifest(
    client: &Arc<Client>,
    r: &Reference,
    index: &Manifest,
    want: &Platform,
) -> Result<(Descriptor, Manifest)> {
    let ManifestBody::Index { manifests } = index.body()? else {
        return Err(OpsError::invalid(format!("{r}: expected an index")));
    };
    let chosen = select_platform(&manifests, want).cloned().ok_or_else(|| {
        let have: Vec<String> = manifests
            .iter()
            .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
            .collect();
        registry_client::transfer::TransferError::NoPlatform {
            reference: r.to_string(),
            want: want.to_string(),
            have: have.join(", "),
        }
    })?;
    let m = client
        .get_manifest(&r.with_reference(None, Some(chosen.digest.clone())))
        .await?;
    Ok((chosen, m))
}

/// An image's manifest (picked for `platform` from an index) and its config's
/// bytes as served, verified against the manifest's digest for them.
pub async fn config(
    client: &Arc<Client>,
    r: &Reference,
    platform: &Platform,
) -> Result<(Manifest, Vec<u8>)> {
    let m = manifest(client, r, Some(platform)).await?;
    let bytes = config_of(client, r, &m).await?;
    Ok((m, bytes))
}

/// The config blob the image manifest `m` of `r`'s repository names.
pub async fn config_of(client: &Arc<Client>, r: &Reference, m: &Manifest) -> Result<Vec<u8>> {
    let ManifestBody::Image { config, .. } = m.body()? else {
        return Err(OpsError::invalid(format!(
            "{r}: {} is an index, not an image (pick a platform)",
            m.digest
        )));
    };
    if config.size > MAX_CONFIG {
        return Err(OpsError::invalid(format!(
            "{r}: config {} is {} bytes, more than {MAX_CONFIG}",
            config.digest, config.size
        )));
    }
    let mut bytes = Vec::with_capacity(config.size as usize);
    client.pull_blob(r, &config, &mut bytes, &|_| {}).await?;
    Ok(bytes)
}

/// The platform an image config names (os, architecture, variant), as written.
pub fn config_platform(config: &[u8], what: &str) -> Result<Platform> {
    let c = layer_cache::image::ImageConfig::parse(config, what)?;
    Ok(c.platform())
}

fn json(bytes: &[u8], what: &'static str) -> Result<Value> {
    serde_json::from_slice(bytes).map_err(|source| OpsError::Json { what, source })
}

/// `inspect`'s document for an image in a registry: the fields the store's
/// document has (an image's manifest and config, or an index and its
/// platforms), `RepoTags` empty, and `"Remote": true` with the reference read.
pub async fn inspect(client: &Arc<Client>, r: &Reference) -> Result<Value> {
    let top = client.get_manifest(r).await?;
    if let ManifestBody::Index { manifests } = top.body()? {
        let platforms: Vec<Value> = manifests
            .iter()
            .map(|c| {
                serde_json::json!({
                    "Platform": c.platform.as_ref().map(|p| p.to_string()),
                    "Digest": c.digest.to_string(),
                })
            })
            .collect();
        return Ok(serde_json::json!({
            "Id": top.digest.to_string(),
            "RepoTags": Vec::<String>::new(),
            "Digest": top.digest.to_string(),
            "MediaType": top.media_type,
            "Platforms": platforms,
            "Index": json(&top.bytes, "index")?,
            "Remote": true,
            "Reference": r.to_string(),
        }));
    }
    let config = config_of(client, r, &top).await?;
    let ManifestBody::Image { config: cd, .. } = top.body()? else {
        return Err(OpsError::invalid(format!("{r}: expected an image")));
    };
    Ok(serde_json::json!({
        "Id": top.digest.to_string(),
        "RepoTags": Vec::<String>::new(),
        "Digest": top.digest.to_string(),
        "MediaType": top.media_type,
        "ConfigDigest": cd.digest.to_string(),
        "Manifest": json(&top.bytes, "manifest")?,
        "Config": json(&config, "config")?,
        "Remote": true,
        "Reference": r.to_string(),
    }))
}

/// Whether `name` writes its registry (`localhost:5000/app`, `docker.io/x/y`), as
/// Docker tells a domain: a first path component with a `.` or `:`, or `localhost`.
/// Only such names are read from a registry when the store lacks them: a familiar
/// name (`app:1`) is mostly a local one, and a typo should not reach Docker Hub.
pub fn names_registry(name: &str) -> bool {
    name.split_once('/')
        .is_some_and(|(host, _)| host.contains(['.', ':']) || host == "localhost")
}

/// Whether `e` says the store has no image by that name (so a registry may).
pub fn is_not_in_store(e: &OpsError) -> bool {
    matches!(
        e,
        OpsError::Store(layer_cache::StoreError::ImageNotFound(_))
    )
}
