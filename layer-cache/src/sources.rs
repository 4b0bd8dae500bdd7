//! Which registry repositories hold which blobs, so a push to another repository of
//! the same registry can mount a blob instead of uploading it. A hint only: a lost
//! or stale entry costs an upload, never a wrong image.
//!
//! Kept in `registry-sources-v1.json` at the store root: blobs oldest use first,
//! each with its repositories (`registry/name`) oldest first. Saving re-reads the
//! file under `locks/registry-sources.lock` and adds this process's entries, so
//! concurrent pushes and pulls lose nothing; the file is replaced by rename. It is
//! bounded: the least recently added blobs and repositories beyond the caps go.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Result, StoreError};
use crate::lock::FileLock;
use crate::store::Store;

const FILE: &str = "registry-sources-v1.json";
/// The unversioned file of earlier releases: read while the new one is missing,
/// removed by the first save.
const OLD_FILE: &str = "registry-sources.json";
/// Blobs remembered; the least recently added beyond it are dropped.
pub const MAX_BLOBS: usize = 8192;
/// Repositories remembered per blob (a push tries only a few mounts).
pub const MAX_REPOS_PER_BLOB: usize = 8;
/// A bigger file is not read (it cannot have been written by the caps above).
const MAX_FILE: u64 = 16 << 20;

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    blobs: Vec<Entry>,
}

/// `digest` stays a string here so one bad entry costs that entry, not the file.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    digest: String,
    repos: Vec<String>,
}

/// Blob digest → (recency, repositories oldest first).
type Map = BTreeMap<Digest, (u64, Vec<String>)>;

/// The hints as loaded, plus what this process added since.
#[derive(Debug)]
pub struct RegistrySources {
    store: Store,
    lock: PathBuf,
    map: Map,
    next: u64,
    added: Vec<(Digest, String)>,
}

impl RegistrySources {
    /// Reads the store's hints; a missing or unreadable file is no hints.
    pub fn load(store: &Store) -> RegistrySources {
        let map = read(store.root());
        RegistrySources {
            next: map.len() as u64,
            store: store.clone(),
            lock: store.locks_dir().join("registry-sources.lock"),
            map,
            added: Vec::new(),
        }
    }

    /// Repositories on `registry` known to hold `digest`, by name without the
    /// registry, sorted.
    pub fn repos_on(&self, digest: &Digest, registry: &str) -> Vec<String> {
        let prefix = format!("{registry}/");
        let mut out: Vec<String> = self
            .map
            .get(digest)
            .map(|(_, repos)| {
                repos
                    .iter()
                    .filter_map(|n| n.strip_prefix(&prefix).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// Notes that `repo` (`registry/name`) holds `digest`; kept by [`Self::save`].
    pub fn add(&mut self, digest: &Digest, repo: &str) {
        self.next += 1;
        insert(&mut self.map, self.next, digest, repo);
        self.added.push((digest.clone(), repo.to_string()));
    }

    /// Adds this handle's new entries to the file as it is now, under the lock.
    pub fn save(&mut self) -> Result<()> {
        if self.added.is_empty() {
            return Ok(());
        }
        let _lock = FileLock::exclusive(&self.lock)?;
        let root = self.store.root();
        let mut map = read(root);
        let mut next = map.values().map(|(n, _)| *n).max().unwrap_or(0);
        for (digest, repo) in &self.added {
            next += 1;
            insert(&mut map, next, digest, repo);
        }
        let mut blobs: Vec<(u64, Digest, Vec<String>)> = map
            .into_iter()
            .map(|(digest, (n, repos))| (n, digest, repos))
            .collect();
        blobs.sort();
        let drop = blobs.len().saturating_sub(MAX_BLOBS);
        let file = File {
            blobs: blobs
                .into_iter()
                .skip(drop)
                .map(|(_, digest, repos)| Entry {
                    digest: digest.to_string(),
                    repos,
                })
                .collect(),
        };
        let bytes = serde_json::to_vec(&file).map_err(|e| StoreError::json(FILE, e))?;
        self.store.replace_file(&root.join(FILE), &bytes)?;
        let old = root.join(OLD_FILE);
        match fs_err::remove_file(&old) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        self.added.clear();
        Ok(())
    }
}

fn insert(map: &mut Map, n: u64, digest: &Digest, repo: &str) {
    let (when, repos) = map.entry(digest.clone()).or_default();
    *when = n;
    repos.retain(|r| r != repo);
    repos.push(repo.to_string());
    let over = repos.len().saturating_sub(MAX_REPOS_PER_BLOB);
    repos.drain(..over);
}

/// The current file, else the old one; anything unreadable is empty.
fn read(root: &Path) -> Map {
    let mut map = Map::new();
    if let Some(bytes) = read_small(&root.join(FILE)) {
        if let Ok(file) = serde_json::from_slice::<File>(&bytes) {
            for (n, e) in file.blobs.into_iter().enumerate() {
                let Ok(digest) = e.digest.parse::<Digest>() else {
                    continue;
                };
                let mut repos = e.repos;
                let over = repos.len().saturating_sub(MAX_REPOS_PER_BLOB);
                repos.drain(..over);
                map.insert(digest, (n as u64 + 1, repos));
            }
        }
    } else if let Some(bytes) = read_small(&root.join(OLD_FILE)) {
        let old: BTreeMap<String, Vec<String>> = serde_json::from_slice(&bytes).unwrap_or_default();
        for (n, (digest, repos)) in old.into_iter().enumerate() {
            let Ok(digest) = digest.parse::<Digest>() else {
                continue;
            };
            for repo in repos {
                insert(&mut map, n as u64 + 1, &digest, &repo);
            }
        }
    }
    map
}

fn read_small(path: &Path) -> Option<Vec<u8>> {
    crate::layout::read_file(path, MAX_FILE).ok()
}
