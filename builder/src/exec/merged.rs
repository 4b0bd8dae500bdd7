//! Reading a stack of snapshot directories (topmost first) as the overlay would show
//! it, without mounting: whiteouts (0/0 devices) hide lower entries, opaque
//! directories hide lower directories' contents. A build context is a stack of one.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

fn is_whiteout(md: &std::fs::Metadata) -> bool {
    md.file_type().is_char_device() && md.rdev() == 0
}

fn is_opaque(path: &Path) -> bool {
    crate::xattrs::is(path, layer_cache::overlay::namespace().opaque(), b"y")
}

/// The real path backing `rel` in the merged view, or `None` when absent.
/// `rel` is relative (no leading `/`), already cleaned.
pub fn lookup(layers: &[PathBuf], rel: &Path) -> Option<PathBuf> {
    let comps: Vec<_> = rel.components().collect();
    if comps.is_empty() {
        return layers.first().cloned();
    }
    for layer in layers {
        let mut cur = layer.clone();
        let mut opaque_above = false;
        for (j, c) in comps.iter().enumerate() {
            cur.push(c);
            let Ok(md) = std::fs::symlink_metadata(&cur) else {
                break;
            };
            if is_whiteout(&md) {
                return None;
            }
            if j + 1 == comps.len() {
                return Some(cur);
            }
            if !md.is_dir() {
                return None;
            }
            opaque_above |= is_opaque(&cur);
        }
        if opaque_above {
            return None;
        }
    }
    None
}

/// The file backing image path `path` (absolute or not) in the merged view of
/// `layers`, after following the image's symlinks inside its root, as a process in
/// the image would. With [`lookup`] on an already resolved path, this is how the
/// host reads an image path: never `Path::join` and `std::fs` on a path that may
/// hold the image's symlinks.
pub fn resolve(layers: &[PathBuf], path: &str) -> Option<PathBuf> {
    let resolved = crate::sandbox::resolve_in_layers(layers, path);
    lookup(layers, Path::new(resolved.trim_start_matches('/')))
}

/// Names in directory `rel` of the merged view, sorted.
pub fn list(layers: &[PathBuf], rel: &Path) -> Vec<OsString> {
    entries(layers, rel).into_iter().map(|e| e.name).collect()
}

/// One entry of a merged directory: the file backing it (in the topmost layer that
/// has it) and that file's metadata (of the entry itself, never a link's target).
pub struct Entry {
    pub name: OsString,
    pub real: PathBuf,
    pub md: std::fs::Metadata,
}

/// The entries of directory `rel` of the merged view, sorted by name. One stat per
/// entry: walking a context of thousands of files costs no more lookups than that.
pub fn entries(layers: &[PathBuf], rel: &Path) -> Vec<Entry> {
    let mut found: Vec<Entry> = Vec::new();
    // Names an upper layer showed or whited out; only needed with a layer below.
    let mut seen = BTreeSet::new();
    for (i, layer) in layers.iter().enumerate() {
        let dir = layer.join(rel);
        let Ok(md) = std::fs::symlink_metadata(&dir) else {
            continue;
        };
        if !md.is_dir() {
            break;
        }
        let more = i + 1 < layers.len();
        let upper = found.len();
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                let name = e.file_name();
                if seen.contains(&name) {
                    continue;
                }
                // Stat relative to the open directory, not following links: no
                // walk of the full path per entry.
                match e.metadata() {
                    Ok(m) if is_whiteout(&m) => {
                        if more {
                            seen.insert(name);
                        }
                    }
                    Ok(md) => {
                        let real = e.path();
                        found.push(Entry { name, real, md });
                    }
                    Err(_) => {}
                }
            }
        }
        if !more || is_opaque(&dir) {
            break;
        }
        seen.extend(found[upper..].iter().map(|e| e.name.clone()));
    }
    found.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    found
}

/// Lists directories of a merged view ahead of a walk, on a second thread: a walk
/// that would otherwise stat every entry of a large context on one core hands
/// the directories it is about to enter here ([`Ahead::queue`]) and finds them
/// listed ([`Ahead::entries`]). The walk thread lists a directory itself when the
/// helper has not started it, and helps with the queue while it waits, so the
/// result and its order never depend on the helper. Listings held ahead are
/// bounded, so memory stays small however far the helper could run.
pub struct Ahead<'a> {
    layers: &'a [PathBuf],
    state: std::sync::Mutex<AheadState>,
    ready: std::sync::Condvar,
}

#[derive(Default)]
struct AheadState {
    /// Directories to list, the next the walk enters first.
    queue: std::collections::VecDeque<PathBuf>,
    running: BTreeSet<PathBuf>,
    done: std::collections::HashMap<PathBuf, Vec<Entry>>,
    /// Entries in `done`.
    held: usize,
    stop: bool,
}

/// Entries listed ahead at most (about 1 MB of metadata; a few directories).
const AHEAD_MAX: usize = 4 * 1024;

type Guard<'g> = std::sync::MutexGuard<'g, AheadState>;

impl<'a> Ahead<'a> {
    pub fn new(layers: &'a [PathBuf]) -> Ahead<'a> {
        Ahead {
            layers,
            state: Default::default(),
            ready: Default::default(),
        }
    }

    fn lock(&self) -> Guard<'_> {
        // A panic while holding the lock leaves only listings behind: still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// [`entries`] of `rel`, listed ahead when it was.
    pub fn entries(&self, rel: &Path) -> Vec<Entry> {
        let mut st = self.lock();
        loop {
            if let Some(v) = st.done.remove(rel) {
                st.held -= v.len();
                self.ready.notify_all();
                return v;
            }
            if !st.running.contains(rel) {
                st.queue.retain(|q| q != rel);
                drop(st);
                return entries(self.layers, rel);
            }
            // The helper is listing it: list the next one meanwhile, or wait.
            st = match st.queue.pop_front() {
                Some(job) => self.run(st, job),
                None => self.ready.wait(st).unwrap_or_else(|e| e.into_inner()),
            };
        }
    }

    /// Directories the walk will enter, in the order it will: listed before any
    /// queued earlier.
    pub fn queue(&self, dirs: impl DoubleEndedIterator<Item = PathBuf>) {
        let mut st = self.lock();
        for d in dirs.rev() {
            st.queue.push_front(d);
        }
        self.ready.notify_all();
    }

    fn run<'g>(&'g self, mut st: Guard<'g>, job: PathBuf) -> Guard<'g> {
        st.running.insert(job.clone());
        drop(st);
        let v = entries(self.layers, &job);
        let mut st = self.lock();
        st.running.remove(&job);
        st.held += v.len();
        st.done.insert(job, v);
        self.ready.notify_all();
        st
    }

    /// The helper thread's loop, until [`Ahead::stop`].
    pub fn help(&self) {
        let mut st = self.lock();
        while !st.stop {
            let job = (st.held < AHEAD_MAX)
                .then(|| st.queue.pop_front())
                .flatten();
            st = match job {
                Some(job) => self.run(st, job),
                None => self.ready.wait(st).unwrap_or_else(|e| e.into_inner()),
            };
        }
    }

    pub fn stop(&self) {
        self.lock().stop = true;
        self.ready.notify_all();
    }
}
