//! Base images answered from the local store: the planner's [`BaseInfo`] over a
//! [`Store`], asking a [`BaseFetch`] (the registry side, which the caller owns) to
//! make each image available first.

use std::cell::RefCell;
use std::collections::BTreeMap;

use layer_cache::image::ContainerConfig;
use layer_cache::oci_spec::image::Descriptor;
use layer_cache::Store;

use crate::plan::{BaseInfo, Platform};

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
                .is_ok_and(|img| img.config.is_for(&platform.oci()))
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
