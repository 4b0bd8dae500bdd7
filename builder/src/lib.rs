//! builder: Dockerfile → step graph → executed steps → layers and image config.
// Parse and plan errors carry the rendered source location; they are cold paths.
#![allow(clippy::result_large_err)]
pub mod diagnostic;
pub mod dockerfile;
pub mod exec;
pub mod ignore;
pub mod layer;
pub mod lint;
pub mod plan;
pub mod sandbox;
pub mod users;
