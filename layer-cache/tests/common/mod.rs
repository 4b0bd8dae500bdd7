//! Helpers shared by the store's integration tests.

#![allow(dead_code)] // Each test file uses its own subset.

use layer_cache::image::{self, ImageConfig};
use layer_cache::layer::{LayerInfo, LayerOptions};
use layer_cache::oci_spec::image::Descriptor;
use layer_cache::Store;

/// An image of one layer written in a store.
pub struct OneLayer {
    /// The manifest's descriptor.
    pub manifest: Descriptor,
    pub layer: LayerInfo,
    /// The config as written: `base` with the layer's diff_id as its rootfs.
    pub config: ImageConfig,
}

/// Writes `content` as a gzip layer and an image of it whose config is `base`
/// with the layer as its rootfs.
pub fn one_layer_image(store: &Store, content: &[u8], base: ImageConfig) -> OneLayer {
    let layer = store
        .write_layer(&mut &content[..], LayerOptions::default())
        .expect("layer");
    let config = ImageConfig {
        rootfs: image::RootFs {
            kind: "layers".into(),
            diff_ids: vec![layer.diff_id.clone()],
        },
        ..base
    };
    let manifest = store
        .write_image(&config, &[layer.descriptor()])
        .expect("image");
    OneLayer {
        manifest,
        layer,
        config,
    }
}
