//! `--build-context NAME=VALUE`, BuildKit's named contexts: a local directory,
//! `docker-image://REF`, or `oci-layout://DIR[:TAG][@DIGEST]`. The planner sees every
//! name ([`NamedContext`]); directories go to the executor, images to the store.

use std::collections::BTreeMap;
use std::path::Path;

use builder::context::NamedDir;
use builder::plan::{reference, NamedContext};
use layer_cache::{Digest, Store};

use crate::{OpsError, Result};

#[derive(Default)]
pub struct NamedContexts {
    /// Every name, for the planner.
    pub plan: BTreeMap<String, NamedContext>,
    /// Local directories, for the executor.
    pub dirs: BTreeMap<String, NamedDir>,
}

/// Parses the flags; an `oci-layout://` image is copied into the store now, so hold
/// the store's usage lock until the build has run.
pub fn parse(store: &Store, list: &[String]) -> Result<NamedContexts> {
    let mut out = NamedContexts::default();
    for item in list {
        let (raw, value) = item
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| {
                OpsError::invalid(format!("--build-context {item:?}: expected NAME=VALUE"))
            })?;
        let name = reference::context_name(raw).ok_or_else(|| {
            OpsError::invalid(format!("--build-context {item:?}: invalid context name {raw:?} (a name is an image reference: lowercase letters, digits, separators, an optional tag)"))
        })?;
        let bad = |why: &str| OpsError::invalid(format!("--build-context {item:?}: {why}"));
        let nc = if let Some(r) = value.strip_prefix("docker-image://") {
            if r == "scratch" {
                NamedContext::Scratch
            } else {
                reference::validate(r).map_err(|e| bad(&format!("image {r:?}: {e}")))?;
                NamedContext::Image {
                    reference: r.to_string(),
                }
            }
        } else if let Some(spec) = value.strip_prefix("oci-layout://") {
            // As buildx splits it: DIR, then :TAG (default latest), then @DIGEST.
            let (rest, digest) = match spec.split_once('@') {
                Some((r, d)) => (
                    r,
                    Some(
                        d.parse::<Digest>()
                            .map_err(|e| bad(&format!("digest {d:?}: {e}")))?,
                    ),
                ),
                None => (spec, None),
            };
            let (dir, tag) = rest.split_once(':').unwrap_or((rest, "latest"));
            if dir.is_empty() {
                return Err(bad("oci-layout:// needs a directory"));
            }
            let desc = store
                .copy_from_layout(Path::new(dir), tag, digest.as_ref())
                .map_err(|e| bad(&e.to_string()))?;
            let digest = layer_cache::image::descriptor_digest(&desc)?;
            NamedContext::Image {
                reference: format!("{}@{digest}", repository(&name)),
            }
        } else if value.starts_with("target:") {
            return Err(bad(
                "target: contexts name a bake target; mybuild has no bake (build that target and use docker-image://)",
            ));
        } else if is_remote(value) {
            return Err(bad(
                "git repositories and http(s) URLs are not supported as named contexts; clone or download into a directory and name that",
            ));
        } else if let Some((scheme, _)) = value.split_once("://") {
            return Err(bad(&format!(
                "unsupported context source {scheme}:// (expected a directory, docker-image:// or oci-layout://)"
            )));
        } else {
            let dir = NamedDir::open(Path::new(value))
                .map_err(|e| OpsError::invalid_because(format!("--build-context {item:?}"), e))?;
            out.dirs.insert(name.clone(), dir);
            NamedContext::Local
        };
        out.plan.insert(name, nc);
    }
    Ok(out)
}

/// What buildx sends as a remote context: git and http(s) URLs.
fn is_remote(value: &str) -> bool {
    ["http://", "https://", "git://", "git@", "ssh://"]
        .iter()
        .any(|p| value.starts_with(p))
}

/// `name[:tag][@digest]` without its tag and digest.
fn repository(name: &str) -> &str {
    let name = name.split('@').next().unwrap_or(name);
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_slash..].rfind(':') {
        Some(i) => &name[..last_slash + i],
        None => name,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn repository_drops_tag_and_digest() {
        assert_eq!(super::repository("alpine:3.18"), "alpine");
        assert_eq!(
            super::repository("localhost:5000/a/b:1"),
            "localhost:5000/a/b"
        );
        assert_eq!(super::repository("base"), "base");
    }
}
