//! builder: Dockerfile → step graph → executed steps → layers and image config.
pub mod diagnostic;
pub mod dockerfile;
pub mod exec;
pub mod ignore;
pub mod layer;
pub mod lint;
pub mod plan;
pub mod sandbox;
pub mod users;
