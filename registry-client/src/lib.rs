//! registry-client: the OCI distribution protocol (references, auth, manifests,
//! blob streams, retries). It knows nothing of the store or the builder: blobs
//! stream from readers into writers.

pub mod auth;
pub mod blob;
mod client;
pub mod error;
pub mod http;
pub mod manifest;
pub mod reference;
pub mod transfer;
mod transport;

pub use blob::push::{BlobSource, PushOutcome};
pub use client::{Client, ClientOptions};
pub use error::{Error, ErrorResponse, RegistryError, Result};
pub use manifest::{Descriptor, Manifest, ManifestBody, Platform};
pub use reference::Reference;
