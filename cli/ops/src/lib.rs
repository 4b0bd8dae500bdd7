//! mybuild's operations as library code: the store as a transfer source and sink,
//! pulls, pushes and copies into and out of it, build cache import and export,
//! the `-o` exporters, the build's orchestration around the builder, and the one
//! event schema every operation reports in. The `mybuild` binary parses
//! arguments, handles signals and renders the events; this crate never prints.

pub mod archive;
pub mod build;
pub mod build_context;
pub mod cache_io;
pub mod docker;
mod error;
pub mod event;
pub mod fetch;
pub mod images;
pub mod index;
pub mod mirror;
pub mod output;
pub mod registry;
pub mod remote;
pub mod secrets;
pub mod ssh;
pub mod store;
pub mod store_io;

pub use error::{chain_text, OpsError, Result};
pub use event::{Event, Reporter};
