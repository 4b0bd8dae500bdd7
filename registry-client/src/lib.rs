//! registry-client: the OCI distribution protocol (references, auth, manifests,
//! blob streams, retries). It knows nothing of the store or the builder: blobs
//! stream from readers into writers.

pub mod auth;
mod client;
pub mod error;
pub mod manifest;
pub mod reference;
pub mod transfer;

pub use client::{BlobSource, Client, ClientOptions, PushOutcome};
pub use error::{Error, Result};
pub use manifest::{Descriptor, Manifest, ManifestBody, Platform};
pub use reference::Reference;
