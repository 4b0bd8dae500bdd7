//! A container's writable layer against its image: what changed (`diff`), and a
//! new image made of the image plus those changes (`commit`).
//!
//! A container is an image in the store and an overlay upper directory of the same
//! kind a RUN step writes. Its changes are read from the upper directory alone, as
//! Docker's overlay driver does: a whiteout (0/0 character device) or an opaque
//! directory is a deletion, an entry the image also has is a change, anything else
//! an addition. A commit turns the upper directory into one layer through the same
//! differ and layer writer as RUN ([`crate::layer::write_layer`]) and edits the
//! config with the same code as a build's config instructions
//! ([`crate::exec::config::apply_changes`]).

use std::collections::HashSet;
use std::ffi::OsString;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use layer_cache::image::{self, ContainerConfig, History, ImageConfig};
use layer_cache::layer::LayerOptions;
use layer_cache::oci_spec::image::Descriptor;
use layer_cache::{Digest, Store, StoreError};

use crate::exec::config::{self, ChangeError};
use crate::layer::{self, diff::DiffOptions, WriteLayerError};

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("image {digest}: {source}")]
    Image {
        digest: Digest,
        #[source]
        source: StoreError,
    },
    #[error("image {digest}: {layers} layers but {diff_ids} diff_ids in its config")]
    LayerCount {
        digest: Digest,
        layers: usize,
        diff_ids: usize,
    },
    #[error("container layer {}: not a directory", path.display())]
    NoUpper { path: PathBuf },
    #[error("container layer {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("committing {}: {source}", upper.display())]
    Layer {
        upper: PathBuf,
        #[source]
        source: WriteLayerError,
    },
    #[error(transparent)]
    Change(#[from] ChangeError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What happened to a path, as `docker diff` letters it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// `A`: not in the image.
    Added,
    /// `C`: in the image and in the container's layer.
    Changed,
    /// `D`: removed (a whiteout), or a directory whose image contents are hidden.
    Deleted,
}

impl ChangeKind {
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Added => 'A',
            ChangeKind::Changed => 'C',
            ChangeKind::Deleted => 'D',
        }
    }
}

/// One line of `docker diff`: `A /path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: ChangeKind,
    /// Absolute path inside the container.
    pub path: PathBuf,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind.letter(), self.path.display())
    }
}

/// A stored image as a container sees it: its layers and their snapshots.
#[derive(Debug, Clone)]
pub struct ImageLayers {
    pub manifest_digest: Digest,
    pub config: ImageConfig,
    pub layers: Vec<Descriptor>,
    /// Snapshot directories, bottom layer first (unpacked when missing).
    pub snapshots: Vec<PathBuf>,
}

impl ImageLayers {
    /// The snapshots topmost first, as overlay's lowerdir lists them.
    pub fn lowerdirs(&self) -> Vec<PathBuf> {
        self.snapshots.iter().rev().cloned().collect()
    }
}

/// Loads the image with manifest `digest` (an index resolves to the host's
/// platform) and makes sure each of its layers has a snapshot.
pub fn image_layers(store: &Store, digest: &Digest) -> Result<ImageLayers, ContainerError> {
    let at = |source| ContainerError::Image {
        digest: digest.clone(),
        source,
    };
    let size = store.blob_size(digest).map_err(at)?.ok_or_else(|| {
        at(StoreError::invalid(
            format!("manifest {digest}"),
            "not in the store",
        ))
    })?;
    let img = store
        .load_image(&image::descriptor(image::OCI_MANIFEST, digest, size))
        .map_err(at)?;
    let layers = img.manifest.layers().clone();
    let diff_ids = &img.config.rootfs.diff_ids;
    if layers.len() != diff_ids.len() {
        return Err(ContainerError::LayerCount {
            digest: digest.clone(),
            layers: layers.len(),
            diff_ids: diff_ids.len(),
        });
    }
    let mut snapshots = Vec::with_capacity(layers.len());
    for (l, d) in layers.iter().zip(diff_ids) {
        snapshots.push(store.ensure_snapshot(l, d).map_err(at)?);
    }
    Ok(ImageLayers {
        manifest_digest: img.manifest_digest,
        config: img.config,
        layers,
        snapshots,
    })
}

/// `docker diff`: the changes in `upper` over the image with manifest `image`.
pub fn changes(store: &Store, image: &Digest, upper: &Path) -> Result<Vec<Change>, ContainerError> {
    let img = image_layers(store, image)?;
    changes_over(&img.lowerdirs(), upper)
}

/// The changes in `upper` over `lowers` (snapshot directories, topmost first), in
/// the order `docker diff` prints them: depth first, names sorted bytewise within a
/// directory. As Docker's overlay driver: a directory the image has with the same
/// mode, size and time is left out unless a child of it is added or deleted, in
/// which case it is listed as changed just before that child. The walk keeps its
/// stack on the heap, so a deep tree cannot exhaust the thread's stack.
pub fn changes_over(lowers: &[PathBuf], upper: &Path) -> Result<Vec<Change>, ContainerError> {
    if !std::fs::symlink_metadata(upper).is_ok_and(|m| m.is_dir()) {
        return Err(ContainerError::NoUpper {
            path: upper.to_path_buf(),
        });
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ContainerError::Io { path, source }
    };
    let opaque_attr = layer_cache::overlay::namespace().opaque();
    let mut out = Vec::new();
    // Directories already listed, so that a parent is listed once.
    let mut listed_dirs: HashSet<PathBuf> = HashSet::new();
    struct Frame {
        rel: PathBuf,
        names: std::vec::IntoIter<OsString>,
    }
    let mut stack = vec![Frame {
        rel: PathBuf::new(),
        names: sorted_names(upper).map_err(io(upper))?.into_iter(),
    }];
    while let Some(top) = stack.last_mut() {
        let Some(name) = top.names.next() else {
            stack.pop();
            continue;
        };
        let rel = top.rel.join(&name);
        let abs = upper.join(&rel);
        let md = std::fs::symlink_metadata(&abs).map_err(io(&abs))?;
        let is_dir = md.is_dir();
        let whiteout = md.file_type().is_char_device() && md.rdev() == 0;
        let opaque = is_dir && crate::xattrs::is(&abs, opaque_attr, b"y");
        let kind = if whiteout || opaque {
            Some(ChangeKind::Deleted)
        } else {
            match crate::exec::merged::lookup(lowers, &rel) {
                None => Some(ChangeKind::Added),
                Some(lower) => {
                    let same_dir = is_dir
                        && std::fs::symlink_metadata(&lower)
                            .is_ok_and(|l| l.is_dir() && same_dir_metadata(&md, &l));
                    (!same_dir).then_some(ChangeKind::Changed)
                }
            }
        };
        if is_dir {
            stack.push(Frame {
                rel: rel.clone(),
                names: sorted_names(&abs).map_err(io(&abs))?.into_iter(),
            });
        }
        let Some(kind) = kind else { continue };
        let path = Path::new("/").join(&rel);
        if is_dir {
            listed_dirs.insert(path.clone());
        }
        if kind != ChangeKind::Changed {
            if let Some(parent) = path.parent().filter(|p| *p != Path::new("/")) {
                if listed_dirs.insert(parent.to_path_buf()) {
                    out.push(Change {
                        kind: ChangeKind::Changed,
                        path: parent.to_path_buf(),
                    });
                }
            }
        }
        out.push(Change { kind, path });
    }
    Ok(out)
}

/// Docker's test for a directory the copy-up left as it was: same mode, size and
/// modification time (a time without nanoseconds matches any within its second).
fn same_dir_metadata(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    let same_time = a.mtime() == b.mtime()
        && (a.mtime_nsec() == b.mtime_nsec() || a.mtime_nsec() == 0 || b.mtime_nsec() == 0);
    a.mode() == b.mode() && a.len() == b.len() && same_time
}

fn sorted_names(dir: &Path) -> std::io::Result<Vec<OsString>> {
    let mut names = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<Vec<_>, _>>()?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

/// `docker commit`'s options.
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    /// `-c`/`--change`: Dockerfile instructions among CMD, ENTRYPOINT, ENV, EXPOSE,
    /// HEALTHCHECK, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME and WORKDIR, applied in
    /// order on top of the container's config.
    pub changes: Vec<String>,
    /// `-m`: the new history entry's comment.
    pub message: Option<String>,
    /// `-a`: the new image's author (Docker leaves it empty when not given).
    pub author: Option<String>,
    /// The container's config (command, environment, ... as it was run); `None`
    /// takes the image's. Docker's commit makes it the new image's config.
    pub config: Option<ContainerConfig>,
    /// How the new layer is compressed.
    pub layer: LayerOptions,
    /// Creation time, seconds since the epoch; `None` is now (or SOURCE_DATE_EPOCH).
    pub created: Option<i64>,
}

/// `docker commit`: the image with manifest `image` plus one layer made of the
/// container's upper directory `upper`, its config edited by `opts`. Writes the
/// layer, config and manifest into the store and returns the manifest's
/// descriptor; tagging it is the caller's. An empty upper directory still makes a
/// new image, whose history records an empty layer, as Docker's does. The `-c`
/// lines are checked before anything is written.
///
/// The store's usage lock is held while writing; a caller that tags the result
/// and must not lose it to a concurrent `prune` holds [`Store::usage_lock`] across
/// both.
pub fn commit(
    store: &Store,
    image: &Digest,
    upper: &Path,
    opts: &CommitOptions,
) -> Result<Descriptor, ContainerError> {
    let _usage = store.usage_lock()?;
    if !std::fs::symlink_metadata(upper).is_ok_and(|m| m.is_dir()) {
        return Err(ContainerError::NoUpper {
            path: upper.to_path_buf(),
        });
    }
    let img = image_layers(store, image)?;
    let mut config = img.config.clone();
    if let Some(c) = &opts.config {
        config.config = Some(c.clone());
    }
    // Docker's commit names the command the container ran (its Cmd alone).
    let created_by = config
        .config
        .as_ref()
        .and_then(|c| c.cmd.as_ref())
        .map(|cmd| cmd.join(" "))
        .unwrap_or_default();
    // The classic builder Docker's commit dispatches with leaves ArgsEscaped as it was.
    let escaped = config.config.as_ref().and_then(|c| c.args_escaped);
    config::apply_changes(&mut config, &opts.changes)?;
    if let Some(c) = config.config.as_mut() {
        c.args_escaped = escaped;
    }
    let empty = std::fs::read_dir(upper)
        .map_err(|source| ContainerError::Io {
            path: upper.to_path_buf(),
            source,
        })?
        .next()
        .is_none();
    let mut layers = img.layers;
    if !empty {
        let info = layer::write_layer(store, upper, opts.layer, &DiffOptions::default()).map_err(
            |source| ContainerError::Layer {
                upper: upper.to_path_buf(),
                source,
            },
        )?;
        layers.push(info.descriptor());
        config.rootfs.diff_ids.push(info.diff_id);
    }
    let created = image::rfc3339(opts.created.unwrap_or_else(image::build_time));
    config.created = Some(created.clone());
    config.author = opts.author.clone().filter(|a| !a.is_empty());
    config.history.push(History {
        created: Some(created),
        created_by: Some(created_by),
        author: config.author.clone(),
        comment: opts.message.clone().filter(|m| !m.is_empty()),
        empty_layer: empty,
        ..History::default()
    });
    Ok(store.write_image(&config, &layers)?)
}
