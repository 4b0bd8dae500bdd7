//! builder: Dockerfile → step graph → executed steps → layers and image config.
pub mod diagnostic;
pub mod dockerfile;
pub mod lint;
pub mod plan;
pub mod ignore;
pub mod exec;
pub mod sandbox;
pub mod layer;
pub mod users;
