//! layer-cache: the content-addressed store on disk.
pub mod unpack;
