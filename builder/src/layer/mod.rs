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
