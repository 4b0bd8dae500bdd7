//! Base images answered from the local store: the planner's [`BaseInfo`] over a
//! [`Store`], asking a [`BaseFetch`] (the registry side, which the caller owns) to
//! make each image available first; named contexts seen through
//! ([`ContextBases`]); the images a plan copies from ([`copied_images`]).

use std::cell::RefCell;
use std::collections::BTreeMap;

use layer_cache::image::ContainerConfig;
use layer_cache::oci_spec::image::Descriptor;
use layer_cache::Store;

use crate::plan::{reference, BaseInfo, NamedContext, Platform, Source, StepGraph, StepKind};

/// Makes a base image available in the store (pulling it when needed). Failures are
/// the fetcher's to keep: a base the store still lacks fails at its FROM.
pub trait BaseFetch {
    fn ensure(&self, reference: &str, platform: &Platform);
}

/// Answers the planner's questions about base images from the local store,
/// fetching images that are missing or stored for another platform, and remembers
/// which manifest each (name, platform) resolved to.
pub struct StoreBases<'a> {
    store: &'a Store,
    fetch: &'a dyn BaseFetch,
    resolved: RefCell<BTreeMap<(String, String), Option<Descriptor>>>,
}

impl<'a> StoreBases<'a> {
    pub fn new(store: &'a Store, fetch: &'a dyn BaseFetch) -> StoreBases<'a> {
        StoreBases {
            store,
            fetch,
            resolved: RefCell::new(BTreeMap::new()),
        }
    }

    /// The manifests found, keyed by (reference, platform), for
    /// [`BuildRequest::base_images`](crate::exec::BuildRequest::base_images).
    pub fn into_resolved(self) -> BTreeMap<(String, String), Descriptor> {
        self.resolved
            .into_inner()
            .into_iter()
            .filter_map(|(k, d)| Some((k, d?)))
            .collect()
    }

    /// The stored manifest of `reference` for `platform`, fetched when needed; `None`
    /// when the store has no image of that name for that platform.
    fn resolve(&self, reference: &str, platform: &Platform) -> Option<Descriptor> {
        let key = (reference.to_string(), platform.to_string());
        if let Some(d) = self.resolved.borrow().get(&key) {
            return d.clone();
        }
        self.fetch.ensure(reference, platform);
        // Another platform's image under this name is not used (the build then
        // says which platform the store has).
        let desc = self.store.resolve(reference).ok().filter(|d| {
            self.store
                .load_image(d)
                .is_ok_and(|img| img.config.is_for(platform))
        });
        self.resolved.borrow_mut().insert(key, desc.clone());
        desc
    }

    fn config(&self, reference: &str, platform: Option<&Platform>) -> Option<ContainerConfig> {
        let platform = platform.cloned().unwrap_or_else(Platform::host);
        let desc = self.resolve(reference, &platform)?;
        self.store.load_image(&desc).ok()?.config.config
    }
}

/// An image's `Env` as (name, value) pairs.
fn env_pairs(c: &ContainerConfig) -> Vec<(String, String)> {
    c.env
        .iter()
        .filter_map(|e| {
            e.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

impl BaseInfo for StoreBases<'_> {
    fn onbuild(&self, image: &str, platform: Option<&Platform>) -> Vec<String> {
        self.config(image, platform)
            .and_then(|c| c.on_build)
            .unwrap_or_default()
    }
    fn env(&self, image: &str, platform: Option<&Platform>) -> Vec<(String, String)> {
        self.config(image, platform)
            .map(|c| env_pairs(&c))
            .unwrap_or_default()
    }
}

/// The base images a plan resolved, for the build checks: they ask without a
/// platform, and must neither fetch nor re-resolve (that could retag a name).
pub struct PlannedBases<'a>(pub &'a StoreBases<'a>);

impl BaseInfo for PlannedBases<'_> {
    fn env(&self, image: &str, _platform: Option<&Platform>) -> Vec<(String, String)> {
        let found = self
            .0
            .resolved
            .borrow()
            .iter()
            .find(|((name, _), d)| name == image && d.is_some())
            .and_then(|(_, d)| d.clone());
        found
            .and_then(|d| self.0.store.load_image(&d).ok())
            .and_then(|img| img.config.config)
            .map(|c| env_pairs(&c))
            .unwrap_or_default()
    }
}

/// The `docker-image://` contexts the plan reads files from (`COPY --from`, mounts);
/// bases are pulled while planning, these are not.
pub fn copied_images<'g>(
    graph: &'g StepGraph,
    named: &BTreeMap<String, NamedContext>,
) -> Vec<&'g str> {
    let mut out: Vec<&str> = Vec::new();
    for step in graph.stages.iter().flat_map(|s| &s.steps) {
        let froms: Vec<&Source> = match &step.kind {
            StepKind::Copy(c) | StepKind::Add(c) => vec![&c.from],
            StepKind::Run { mounts, .. } => mounts.iter().filter_map(|m| m.from.as_ref()).collect(),
            _ => Vec::new(),
        };
        for f in froms {
            let Source::Image { reference } = f else {
                continue;
            };
            let named_image = named
                .values()
                .any(|n| matches!(n, NamedContext::Image { reference: r } if r == reference));
            if named_image && !out.contains(&reference.as_str()) {
                out.push(reference);
            }
        }
    }
    out
}

/// A [`BaseInfo`] that sees names through the named contexts, as the planner does
/// (for the build checks, which read the Dockerfile's own base names): an image
/// context is asked about by its reference, a directory or scratch is no image.
pub struct ContextBases<'a> {
    pub inner: &'a dyn BaseInfo,
    pub named: &'a BTreeMap<String, NamedContext>,
}

impl ContextBases<'_> {
    fn image<'r>(&'r self, image: &'r str) -> Option<&'r str> {
        match reference::context_name(image).and_then(|n| self.named.get(&n)) {
            None => Some(image),
            Some(NamedContext::Image { reference }) => Some(reference),
            Some(NamedContext::Local | NamedContext::Scratch) => None,
        }
    }
}

impl BaseInfo for ContextBases<'_> {
    fn onbuild(&self, image: &str, platform: Option<&Platform>) -> Vec<String> {
        self.image(image)
            .map(|i| self.inner.onbuild(i, platform))
            .unwrap_or_default()
    }
    fn env(&self, image: &str, platform: Option<&Platform>) -> Vec<(String, String)> {
        self.image(image)
            .map(|i| self.inner.env(i, platform))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers with the name it was asked about.
    struct Echo;
    impl BaseInfo for Echo {
        fn env(&self, image: &str, _platform: Option<&Platform>) -> Vec<(String, String)> {
            vec![("IMAGE".to_string(), image.to_string())]
        }
    }

    #[test]
    fn named_contexts_are_asked_about_by_their_image_or_not_at_all() {
        let named = BTreeMap::from([
            (
                "base".to_string(),
                NamedContext::Image {
                    reference: "alpine:3.18".to_string(),
                },
            ),
            ("src".to_string(), NamedContext::Local),
        ]);
        let bases = ContextBases {
            inner: &Echo,
            named: &named,
        };
        let asked = |name: &str| {
            bases
                .env(name, None)
                .into_iter()
                .map(|(_, v)| v)
                .collect::<Vec<_>>()
        };
        assert_eq!(asked("base"), ["alpine:3.18"]);
        assert!(asked("src").is_empty());
        assert_eq!(asked("busybox"), ["busybox"]);
    }
}
