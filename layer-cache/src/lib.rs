//! layer-cache: the content-addressed store on disk.
//!
//! Blobs by digest in an OCI image layout (so skopeo and umoci read our images),
//! tags in the layout's `index.json`, verified reads, garbage collection and
//! consistency checks, safe unpacking of layers, and image archives (save/load).
//! It knows nothing of Dockerfiles or HTTP.

pub mod archive;
pub mod atomic;
pub mod cache_artifact;
pub mod cache_index;
pub mod cache_mounts;
pub mod codec;
pub mod containers;
pub mod convert;
pub mod digest;
pub mod error;
pub mod export;
pub mod fsck;
pub mod gc;
pub mod image;
pub mod import;
pub mod ingest;
pub mod layer;
pub mod layout;
pub mod listing;
pub mod lock;
pub mod overlay;
pub mod pgzip;
pub mod refs;
pub mod snapshot;
pub mod sources;
pub mod stat_cache;
pub mod store;
pub mod unpack;
pub mod url_cache;
pub mod variant;
pub mod write_to;

pub use digest::Digest;
pub use error::StoreError;
pub use oci_spec;
pub use refs::ImageRef;
pub use store::Store;
