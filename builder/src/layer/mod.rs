//! Layers from filesystem changes: the overlay upperdir of a step *is* its diff.
pub mod diff;

use std::path::Path;

use layer_cache::layer::{LayerInfo, LayerOptions};
use layer_cache::{Store, StoreError};

/// Why an upper directory could not be stored as a layer.
#[derive(Debug, thiserror::Error)]
pub enum WriteLayerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Diff(#[from] diff::DiffError),
}

/// Diffs `upper` (an overlay upper directory) into a layer blob in the store in one
/// streaming pass: the path every RUN, COPY and WORKDIR layer and a container's
/// commit take.
pub fn write_layer(
    store: &Store,
    upper: &Path,
    layer: LayerOptions,
    opts: &diff::DiffOptions,
) -> Result<LayerInfo, WriteLayerError> {
    let mut writer = store.layer_writer(layer)?;
    diff::write_upperdir(upper, &mut writer, opts)?;
    Ok(writer.finish()?)
}

/// `dir` as layers that unpack, in order, into a copy of it: the top-level files
/// together, then one layer per top-level directory. A part whose files did not
/// change gives the same layer again, so exporting it again moves only the parts
/// that changed. Returns each part's first entry name (empty for the files) and
/// its layer.
pub fn write_dir_parts(
    store: &Store,
    dir: &Path,
    layer: LayerOptions,
) -> Result<Vec<(String, LayerInfo)>, WriteLayerError> {
    let names = diff::sorted_children(dir)?;
    let (dirs, files): (Vec<_>, Vec<_>) = names.into_iter().partition(|n| {
        std::fs::symlink_metadata(dir.join(n)).is_ok_and(|m| m.file_type().is_dir())
    });
    let mut parts = Vec::new();
    let opts = diff::DiffOptions::default();
    if !files.is_empty() {
        let mut writer = store.layer_writer(layer)?;
        diff::write_upperdir_part(dir, files, &mut writer, &opts)?;
        parts.push((String::new(), writer.finish()?));
    }
    for d in dirs {
        let name = d.to_string_lossy().into_owned();
        let mut writer = store.layer_writer(layer)?;
        diff::write_upperdir_part(dir, vec![d], &mut writer, &opts)?;
        parts.push((name, writer.finish()?));
    }
    Ok(parts)
}
