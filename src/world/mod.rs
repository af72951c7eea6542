//! The embedded world: a procedural image–caption generator, deterministic from a seed, its
//! downstream datasets in CoOp's on-disk layout, and a micro-CLIP pretrained on it, so the whole
//! pipeline runs with no downloads.

pub mod build;
pub mod concepts;
pub mod datasets;
pub mod digest;
pub mod pretrain;
pub mod render;

use serde::{Deserialize, Serialize};

pub use build::{ensure_world, WorldArtifacts};
pub use concepts::{Colour, Concept, Domain, Position, Shape, Size, Texture};
pub use datasets::{world_dataset, WorldDataset, WORLD_DATASETS};
pub use digest::WorldDigests;
pub use render::render;

/// Bumped whenever the generator, renderer, datasets or pretraining change what they produce, so
/// cached worlds and every cell that used one are rebuilt.
pub const WORLD_VERSION: u32 = 1;

/// The backbone name suites use for the embedded micro-CLIP.
pub const BACKBONE: &str = "micro-clip";

/// Everything that decides the embedded world and its micro-CLIP (a suite's `[world]` table).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorldConfig {
    /// Seed of the datasets' images and of the pretraining.
    pub seed: u64,
    /// Side of every rendered image, and the micro-CLIP's input size.
    pub image_size: usize,
    pub patch_size: usize,
    /// Transformer width of both towers (heads = width / 32) and the joint embedding size.
    pub width: usize,
    pub layers: usize,
    pub context_length: usize,
    /// Images in the pretraining corpus.
    pub corpus_size: usize,
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub warmup_steps: usize,
}
