//! What a method's suite entry (`[methods.NAME]`) must say about itself. Each method's config type
//! implements [`MethodSpec`] in the method's own file; `suite/methods.rs` registers it with one line
//! (its `kind`), and everything else — validation, GRAM's host check, the runner's phases, the
//! report's published name — asks the spec rather than matching on the kind.

use burn::tensor::backend::AutodiffBackend;

use super::optim::{Epochs, SgdConfig};
use super::{FeatureFit, Frozen, PromptRole, SgdMethod};
use crate::clip::{Clip, ClipTokenizer};
use crate::error::Result;

/// How a method learns its parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Training<'a> {
    /// Nothing to learn (zero-shot CLIP): results do not depend on the shots.
    None,
    /// SGD steps over the few-shot images, on this schedule.
    Sgd(SgdSchedule<'a>),
    /// A fit on frozen image features of the few-shot train and val images (the linear probe).
    Features,
}

/// An SGD method's schedule, as its suite entry writes it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdSchedule<'a> {
    pub optim: &'a SgdConfig,
    pub epochs: &'a Epochs,
    pub batch_size: usize,
}

impl<'a> Training<'a> {
    /// SGD on the schedule of a config's `optim`, `epochs` and `batch_size` fields.
    pub fn sgd(optim: &'a SgdConfig, epochs: &'a Epochs, batch_size: usize) -> Self {
        Training::Sgd(SgdSchedule {
            optim,
            epochs,
            batch_size,
        })
    }

    /// Whether the method has parameters a train cell saves and an eval cell loads.
    pub fn learns(&self) -> bool {
        !matches!(self, Training::None)
    }
}

/// What a method is built for: one training label space of one dataset.
pub struct BuildInputs<'a, B: AutodiffBackend> {
    pub clip: &'a Clip<B>,
    pub tok: &'a ClipTokenizer,
    /// The training label space's class names.
    pub classnames: &'a [String],
    /// The dataset's hand-crafted template (`{}` = the class name).
    pub template: &'a str,
    /// ImageNet and its variants (the template ensemble adds no dataset template for them).
    pub imagenet_like: bool,
    /// The dataset trained on and the shots per class (settings may depend on them: `PerCell`).
    pub dataset: &'a str,
    pub shots: usize,
    pub seed: u64,
}

/// How a method's step and evaluation use the two encoders: what a cost estimate counts and a
/// device check times, stated by each method beside its training (one rule, not a list of kinds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncoderUse {
    /// Training runs backward through the text encoder (text prompts are learned).
    pub text_backward: bool,
    /// Training runs backward through the image encoder (visual prompts are learned); otherwise
    /// the image encoder is frozen and a test split's features serve every cell (feature cache).
    pub image_backward: bool,
    /// Prompts are conditioned on each image, so the text encoder runs once per image (CoCoOp).
    pub text_per_image: bool,
    /// Each step also encodes its images with the frozen model (PromptSRC's self-regulating teacher).
    pub teacher_images: bool,
    /// Each step takes a second backward through the text graph (ProGrad's zero-shot KL gradient).
    pub second_text_backward: bool,
}

impl EncoderUse {
    /// Both encoders frozen: zero-shot CLIP and the linear probe.
    pub(crate) const FROZEN: EncoderUse = EncoderUse {
        text_backward: false,
        image_backward: false,
        text_per_image: false,
        teacher_images: false,
        second_text_backward: false,
    };
    /// Text prompts learned, the image encoder frozen: CoOp and its family.
    pub(crate) const TEXT_PROMPTS: EncoderUse = EncoderUse {
        text_backward: true,
        ..EncoderUse::FROZEN
    };
    /// Visual prompts learned, the text encoder frozen (VPT).
    pub(crate) const VISUAL_PROMPTS: EncoderUse = EncoderUse {
        image_backward: true,
        ..EncoderUse::FROZEN
    };
    /// Prompts in both encoders (MaPLe, IVLP, PromptSRC).
    pub(crate) const BOTH_PROMPTS: EncoderUse = EncoderUse {
        text_backward: true,
        image_backward: true,
        ..EncoderUse::FROZEN
    };

    /// Whether evaluation reads the frozen image encoder's features.
    pub fn frozen_image(self) -> bool {
        !self.image_backward
    }
}

/// A method's suite entry.
pub trait MethodSpec {
    /// The name the papers' tables give the method (matched against `baselines/published/`).
    const PAPER_NAME: &'static str;

    /// Whether the method can score classes it was not trained on (the linear probe cannot, so
    /// it is few-shot only).
    const OPEN_VOCABULARY: bool = true;

    /// How its step and evaluation use the encoders.
    const ENCODERS: EncoderUse;

    /// Checks what the types cannot (positive counts, consistent switches).
    fn validate(&self) -> std::result::Result<(), String>;

    /// Checks that every per-dataset setting has a value for a cell training on `dataset` with
    /// `shots` per class (so a missing entry is an error when the suite loads, not mid-run).
    fn check_cell(&self, _dataset: &str, _shots: usize) -> std::result::Result<(), String> {
        Ok(())
    }

    /// The prompt tensors the method learns, by role, with their token counts (what GRAM must
    /// supply θ₀ and regulators for); `None` for methods without shared prompt tokens — CSC
    /// contexts (one per class) included. Mirrors the built method's `prompt_params`.
    fn prompt_layout(&self) -> Option<Vec<(PromptRole, usize)>> {
        None
    }

    fn training(&self) -> Training<'_>;

    /// Builds the method for one training label space and hands it to `to` by kind (its
    /// `training` says which kind it is).
    fn build<B: AutodiffBackend, V: Builder<B>>(&self, inputs: &BuildInputs<B>, to: V) -> Result<V::Out>;
}

/// What receives a built method, by how it learns: the runner, which trains each kind its own way
/// (the SGD loop is generic over the method's module, so it gets the method's own type).
pub trait Builder<B: AutodiffBackend> {
    type Out;
    /// A method trained by SGD, with its initial module (the optimizer and schedule are the
    /// runner's, from the spec's `training`).
    fn sgd<M: SgdMethod<B> + 'static>(self, method: M, module: M::Module) -> Self::Out;
    /// A method fitted on frozen features.
    fn features(self, method: Box<dyn FeatureFit<B::InnerBackend>>) -> Self::Out;
    /// A method with nothing to learn.
    fn frozen(self, method: Box<dyn Frozen<B::InnerBackend>>) -> Self::Out;
}

/// A layout of `text.0 … text.(depth−1)` with `n_text` tokens each, then `vision.0 …` likewise.
pub fn layers(text: (usize, usize), vision: (usize, usize)) -> Vec<(PromptRole, usize)> {
    (0..text.1)
        .map(|l| (PromptRole::Text(l), text.0))
        .chain((0..vision.1).map(|l| (PromptRole::Vision(l), vision.0)))
        .collect()
}
