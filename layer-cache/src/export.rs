//! An image's filesystem out of the store (`-o type=local|tar`): every layer applied
//! bottom first, whiteouts applied, into a directory or streamed as one tar. For a
//! multi-platform index each platform goes in its own subdirectory
//! (`linux_amd64/`, `linux_arm_v7/`), as buildx writes them.

use std::io::Write;
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageIndex};

use crate::digest::Digest;
use crate::error::StoreError;
use crate::image::{descriptor_digest, MAX_JSON_BLOB, OCI_INDEX};
use crate::snapshot::ScratchDir;
use crate::store::Store;
use crate::unpack::{unpack_limited, UnpackError, UnpackOptions, WhiteoutMode};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("reading index {digest}")]
    Index {
        digest: Digest,
        #[source]
        source: serde_json::Error,
    },
    #[error("index {digest}: an entry has no platform")]
    NoPlatform { digest: Digest },
    #[error("creating {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unpacking layer {layer} into {}", path.display())]
    Unpack {
        layer: Digest,
        path: PathBuf,
        #[source]
        source: Box<UnpackError>,
    },
    #[error("reading {}", path.display())]
    Walk {
        path: PathBuf,
        #[source]
        source: walkdir::Error,
    },
    #[error("adding {} to the tar", path.display())]
    Append {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("finishing the tar")]
    Finish(#[source] std::io::Error),
}

pub type Result<T, E = ExportError> = std::result::Result<T, E>;

/// The filesystem(s) of a stored image or index.
#[derive(Debug, Clone)]
pub struct ImageFs {
    manifest: Descriptor,
    /// For an index: each child manifest with its directory name
    /// (`os_arch[_variant]`).
    platforms: Option<Vec<(String, Descriptor)>>,
}

impl ImageFs {
    pub fn new(store: &Store, manifest: &Descriptor) -> Result<ImageFs> {
        Ok(ImageFs {
            manifest: manifest.clone(),
            platforms: platform_children(store, manifest)?,
        })
    }

    /// Whether the image is an index (one filesystem per platform).
    pub fn is_multi_platform(&self) -> bool {
        self.platforms.is_some()
    }

    /// The platforms' subdirectory names and manifests, for an index.
    pub fn platforms(&self) -> Option<&[(String, Descriptor)]> {
        self.platforms.as_deref()
    }

    /// Unpacks the filesystem into `dest` (created when missing), or each platform's
    /// into its subdirectory.
    pub fn unpack_into(&self, store: &Store, dest: &Path) -> Result<()> {
        let one = [(String::new(), self.manifest.clone())];
        for (dir, child) in self.platforms().unwrap_or(&one) {
            let dest = dest.join(dir);
            std::fs::create_dir_all(&dest).map_err(|source| ExportError::CreateDir {
                path: dest.clone(),
                source,
            })?;
            apply_layers(store, child, &dest)?;
        }
        Ok(())
    }

    /// Unpacks into a scratch directory of the store, to be streamed as one tar.
    pub fn flatten(&self, store: &Store) -> Result<Flattened> {
        let scratch = store.scratch_dir("output")?;
        self.unpack_into(store, scratch.path())?;
        Ok(Flattened { scratch })
    }
}

/// A flattened filesystem in the store's scratch space, removed when dropped.
#[derive(Debug)]
pub struct Flattened {
    scratch: ScratchDir,
}

impl Flattened {
    pub fn path(&self) -> &Path {
        self.scratch.path()
    }

    /// Writes the tree as one tar: entries in path order, directories before their
    /// contents, symlinks as links, full headers (owners, modes, times).
    pub fn write_tar(&self, w: &mut dyn Write) -> Result<()> {
        let root = self.path();
        let mut b = tar::Builder::new(w);
        b.follow_symlinks(false);
        b.mode(tar::HeaderMode::Complete);
        let mut entries: Vec<_> = walkdir::WalkDir::new(root)
            .min_depth(1)
            .sort_by_file_name()
            .into_iter()
            .collect::<std::result::Result<_, _>>()
            .map_err(|source| ExportError::Walk {
                path: root.to_path_buf(),
                source,
            })?;
        // Directories before their contents, in a stable order.
        entries.sort_by(|a, b| a.path().cmp(b.path()));
        for e in entries {
            // Every entry is under the walk's root.
            let rel = e.path().strip_prefix(root).unwrap_or(e.path());
            b.append_path_with_name(e.path(), rel)
                .map_err(|source| ExportError::Append {
                    path: rel.to_path_buf(),
                    source,
                })?;
        }
        b.finish().map_err(ExportError::Finish)
    }
}

fn platform_children(
    store: &Store,
    desc: &Descriptor,
) -> Result<Option<Vec<(String, Descriptor)>>> {
    if desc.media_type().to_string() != OCI_INDEX {
        return Ok(None);
    }
    let digest = descriptor_digest(desc)?;
    let bytes = store.read_blob(&digest, MAX_JSON_BLOB)?;
    let index: ImageIndex =
        serde_json::from_slice(&bytes).map_err(|source| ExportError::Index {
            digest: digest.clone(),
            source,
        })?;
    let mut out = Vec::new();
    for child in index.manifests() {
        let p = child
            .platform()
            .as_ref()
            .ok_or_else(|| ExportError::NoPlatform {
                digest: digest.clone(),
            })?;
        let mut dir = format!("{}_{}", p.os(), p.architecture());
        if let Some(v) = p.variant() {
            dir = format!("{dir}_{v}");
        }
        out.push((dir, child.clone()));
    }
    Ok(Some(out))
}

/// Applies every layer of the image, bottom first, with whiteouts applied.
fn apply_layers(store: &Store, manifest: &Descriptor, dest: &Path) -> Result<()> {
    let img = store.load_image(manifest)?;
    let opts = UnpackOptions {
        whiteouts: WhiteoutMode::Apply,
        ..UnpackOptions::default()
    };
    for layer in img.manifest.layers() {
        let digest = descriptor_digest(layer)?;
        let reader = store.open_layer(layer)?;
        let limits = store.layer_unpack_limits(layer.size());
        unpack_limited(reader, dest, &opts, limits).map_err(|source| ExportError::Unpack {
            layer: digest,
            path: dest.to_path_buf(),
            source: Box::new(source),
        })?;
    }
    Ok(())
}
