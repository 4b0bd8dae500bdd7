//! Layers from filesystem changes: the overlay upperdir of a step *is* its diff.
pub mod diff;
