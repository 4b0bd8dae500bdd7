//! builder: Dockerfile → step graph → executed steps → layers and image config.
pub mod diagnostic;
pub mod dockerfile;
pub mod plan;
