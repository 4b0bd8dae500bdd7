//! The OCI vocabulary shared by the store (`layer-cache`), the registry client and the
//! builder: one `Digest` type, one image reference grammar (Docker's), one platform
//! normaliser and matcher (containerd's rules) and one media-type table. It depends on
//! no other crate of the workspace, so both libraries can use it without depending on
//! each other.

pub mod digest;
pub mod media;
pub mod platform;
pub mod reference;

pub use digest::{Digest, DigestError};
pub use platform::{image_is_for, Only, Platform, PlatformError};
pub use reference::{Reference, ReferenceError, ReferenceErrorKind};
