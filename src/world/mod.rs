//! The embedded world: a procedural image–caption generator, deterministic from a seed, its
//! downstream datasets in CoOp's on-disk layout, and a micro-CLIP pretrained on it, so the whole
//! pipeline runs with no downloads.

pub mod build;
pub mod concepts;
pub mod datasets;
pub mod digest;
pub mod pinned;
pub mod pretrain;
pub mod render;

use serde::{Deserialize, Serialize};

pub(crate) use build::{ensure_world, WorldArtifacts};
pub(crate) use concepts::Concept;
pub use concepts::{Colour, Domain, Position, Shape, Size, Texture};
pub(crate) use datasets::{world_dataset, WORLD_DATASETS};

pub use render::render;

/// Bumped whenever the generator, renderer, datasets or pretraining change what they produce, so
/// cached worlds and every cell that used one are rebuilt.
pub(crate) const WORLD_VERSION: u32 = 5;

impl WorldConfig {
    /// Whether `other` pretrains the same micro-CLIP (every key but the datasets' `test_images`).
    pub(crate) fn same_pretraining(&self, other: &WorldConfig) -> bool {
        let other = WorldConfig {
            test_images: self.test_images,
            ..other.clone()
        };
        *self == other
    }
}

/// The backbone name suites use for the embedded micro-CLIP.
pub(crate) const BACKBONE: &str = "micro-clip";

/// Everything that decides the embedded world and its micro-CLIP (a suite's `[world]` table).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorldConfig {
    /// Seed of the datasets' images and of the pretraining.
    pub seed: u64,
    /// Images in each dataset's test split (rounded up to whole classes): 4,608 puts one
    /// accuracy's 95% binomial interval within ±1.45 pt. Datasets only; pretraining ignores it.
    /// Required in a suite (validation says so); absent only in records of worlds made before it
    /// existed, which are read, never rebuilt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_images: Option<usize>,
    /// Side of every rendered image, and the micro-CLIP's input size.
    pub image_size: usize,
    pub patch_size: usize,
    /// Transformer width of both towers (heads = width / 32) and the joint embedding size.
    pub width: usize,
    pub layers: usize,
    /// Transformer blocks of the text tower alone; absent: `layers`. A deeper text tower lets a
    /// learned context act on each class name differently.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_layers: Option<usize>,
    pub context_length: usize,
    /// Images in the pretraining corpus.
    pub corpus_size: usize,
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub warmup_steps: usize,
    /// The scale range (area fraction, as torchvision's `RandomResizedCrop`) of the random crop,
    /// with a flip, that pretraining sees each image through, drawn anew at every use; absent: the
    /// rendered image as is. A micro-CLIP pretrained on whole renders has never seen the partial
    /// views prompt learners train on (Dassl's crops, scale 0.08–1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretrain_crop_scale: Option<[f64; 2]>,
    /// The fraction of pretraining images seen through those crops (each image drawn anew at every
    /// use); the others are seen whole. Absent: all of them. Needs `pretrain_crop_scale`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretrain_crop_share: Option<f64>,
    /// The fraction of pretraining captions written as a downstream dataset's hand-written
    /// template filled with the concept's class name in that dataset (`world`, `shapes` or
    /// `patterns`, one drawn at random): the phrasing zero-shot prompts use, which the other
    /// captions never take for `patterns` (`{} texture.`) or `shapes`. Absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_caption_share: Option<f64>,
}
