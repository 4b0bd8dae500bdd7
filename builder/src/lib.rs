//! builder: Dockerfile → step graph → executed steps → layers and image config.
pub mod dockerfile;
