//! The embedded world: a procedural image–caption generator, deterministic from a seed, so the whole
//! pipeline runs with no downloads. (Step 2 builds its datasets and micro-CLIP on top of this.)

pub mod concepts;
pub mod render;

pub use concepts::{Colour, Concept, Domain, Position, Shape, Size, Texture};
pub use render::render;
