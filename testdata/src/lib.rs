//! Test fixtures: busybox base images, hostile tars, a registry on a free port.
pub mod tars;
