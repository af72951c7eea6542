//! Prompt-tuning methods. The backbone is frozen and knows no method; each method owns its
//! parameters and its training step behind [`PromptMethod`], and injects prompts only through the
//! backbone's explicit inputs (token embeddings, deep prompts, visual prompt tokens).
//!
//! Wrappers (GRAM) plug in through two seams: [`PromptMethod::load_artifact`] initialises a
//! method's prompt parameters from a saved artifact, and a step is split burn-style into
//! [`PromptMethod::step`] (loss and gradients) and [`PromptMethod::apply`] (the optimizer), so a
//! wrapper rewrites the gradients between the two.

// Shared pieces.
pub mod coop_family;
pub mod init;
pub mod multimodal;
pub mod optim;
pub mod released;
pub mod resume;
pub mod spec;
pub mod text_prompts;
pub mod torch_zip;

// One file per method (each registered with one line in `suite/methods.rs`).
pub mod cocoop;
pub mod coop;
pub mod ivlp;
pub mod kgcoop;
pub mod linear_probe;
pub mod maple;
pub mod prograd;
pub mod promptsrc;
pub mod vpt;
pub mod zeroshot;

use std::collections::BTreeMap;

use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor};

pub use cocoop::{CoCoOp, CoCoOpConfig};
pub use coop::{CoOp, CoOpConfig, Prior};
pub use ivlp::IvlpConfig;
pub use kgcoop::KgCoOpConfig;
pub use linear_probe::{LinearProbe, LinearProbeConfig};
pub use maple::MapleConfig;
pub use multimodal::MultiModal;
pub use optim::{Epochs, PerCell, SgdConfig};
pub use prograd::ProGradConfig;
pub use promptsrc::PromptSrcConfig;
pub use spec::{BuildInputs, EncoderUse, MethodSpec, SgdSchedule, Training};
pub use text_prompts::{ClassTokenPosition, ContextSource};
pub use vpt::{Vpt, VptConfig};
pub use zeroshot::{TemplateSet, ZeroShot, ZeroShotConfig};

use crate::clip::{Clip, ClipTokenizer};
use crate::error::{Error, Result};

/// Logits `[images, classes]` of normalized pixels against class features, for methods that leave
/// the image encoder as it is (`logits_per_image` normalizes both sides).
pub fn image_logits<B: Backend>(clip: &Clip<B>, pixels: Tensor<B, 4>, classes: Tensor<B, 2>) -> Tensor<B, 2> {
    clip.logits_per_image(clip.encode_image(pixels, &Default::default()), classes)
}

/// A training batch: normalized pixels and labels in the training label space.
pub struct Batch<B: Backend> {
    pub pixels: Tensor<B, 4>,
    pub labels: Tensor<B, 1, Int>,
}

/// A tensor's shape and values on the host, as artifacts store them.
pub fn host_tensor<B: Backend, const D: usize>(t: Tensor<B, D>) -> (Vec<usize>, Vec<f32>) {
    let d = t.into_data().convert::<f32>();
    (d.shape.to_vec(), d.to_vec::<f32>().expect("converted to f32"))
}

/// A loss's value and its gradients for `module`'s parameters.
pub fn loss_grads<B: AutodiffBackend, M: burn::module::AutodiffModule<B>>(
    loss: Tensor<B, 1>,
    module: &M,
) -> (f32, GradientsParams) {
    use burn::tensor::ElementConversion;
    let value: f32 = loss.clone().into_scalar().elem();
    (value, GradientsParams::from_grads(loss.backward(), module))
}

/// A prompt tensor of a method (not a meta-net or projection): what GRAM initialises from θ₀ and
/// whose gradient it regulates. `name` is its artifact name; the last dimension of `shape` is the
/// token width.
#[derive(Clone, Debug, PartialEq)]
pub struct PromptParam {
    pub id: burn::module::ParamId,
    pub name: String,
    pub shape: Vec<usize>,
    pub role: PromptRole,
}

/// Where a prompt tensor enters the backbone: what GRAM matches θ₀ by and which regulator (textual
/// or visual) its gradient goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PromptRole {
    /// Text tokens entering text block `n` (0: the input context, CoOp's `ctx`).
    Text(usize),
    /// Visual tokens entering vision block `n` (0: the input prompt, VPT-shallow's).
    Vision(usize),
}

impl PromptRole {
    /// θ₀'s name for a tensor in this role (`text.0`, `vision.3`, …).
    pub fn theta0_name(&self) -> String {
        match self {
            PromptRole::Text(n) => format!("text.{n}"),
            PromptRole::Vision(n) => format!("vision.{n}"),
        }
    }

    pub fn is_text(&self) -> bool {
        matches!(self, PromptRole::Text(_))
    }
}

/// A method's learned prompt parameters, by name, on the host: what a cell saves and a wrapper loads.
pub type PromptArtifact = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// The class set an evaluation scores against.
pub struct ClassSet<'a> {
    pub names: &'a [String],
    /// The dataset's hand-crafted template.
    pub template: &'a str,
}

pub trait PromptMethod<B: AutodiffBackend> {
    /// The loss on `batch` and its gradients for the method's parameters; nothing is updated
    /// (GRAM regulates the gradients between this and `apply`). SGD methods only: the spec's
    /// `Training` says which methods the runner steps.
    fn step(&mut self, _clip: &Clip<B>, _batch: Batch<B>) -> Result<(f32, GradientsParams)> {
        Err(Error::Internal("this method does not train by SGD steps".into()))
    }

    /// One optimizer step with `grads` at learning rate `lr`.
    fn apply(&mut self, _grads: GradientsParams, _lr: f64) -> Result<()> {
        Err(Error::Internal("this method does not train by SGD steps".into()))
    }

    /// `step` then `apply`; returns the loss.
    fn train_step(&mut self, clip: &Clip<B>, batch: Batch<B>, lr: f64) -> Result<f32> {
        let (loss, grads) = self.step(clip, batch)?;
        self.apply(grads, lr)?;
        Ok(loss)
    }

    /// Methods whose spec trains on `Training::Features` (the linear probe): fits in closed form on
    /// frozen features (`[n × dim]`, labels in the training label space) of the training and
    /// validation images; returns what the record keeps about the fit (the chosen regularization).
    fn fit_features(
        &mut self,
        _train: linear_probe::Labelled,
        _val: linear_probe::Labelled,
        _device: &burn::tensor::Device<B::InnerBackend>,
    ) -> Result<linear_probe::LinearProbeFit> {
        Err(crate::error::Error::Internal(
            "this method trains by SGD, not on features".into(),
        ))
    }

    /// Called after the last step of each epoch (`epoch` 0-based of `epochs`); PromptSRC's Gaussian
    /// prompt aggregation happens here.
    fn end_epoch(&mut self, _epoch: usize, _epochs: usize) -> Result<()> {
        Ok(())
    }

    /// Prepares scoring against `classes` (for example, encodes the class prompts once).
    fn begin_eval(&mut self, clip: &Clip<B::InnerBackend>, tok: &ClipTokenizer, classes: &ClassSet) -> Result<()>;

    /// Logits `[batch, classes]` of normalized pixels against the classes of `begin_eval`.
    fn eval_logits(
        &self,
        clip: &Clip<B::InnerBackend>,
        pixels: Tensor<B::InnerBackend, 4>,
    ) -> Tensor<B::InnerBackend, 2>;

    /// Whether evaluation reads only the frozen image encoder's features (then
    /// `eval_logits_from_features` gives its logits and the feature cache serves it).
    fn image_encoder_frozen(&self) -> bool {
        false
    }

    /// Logits from image features of the frozen encoder (`Clip::encode_image` of normalized
    /// pixels), for methods that leave the image encoder as it is, so the runner can compute a test
    /// split's features once and reuse them (the feature cache). `None`: the method changes the
    /// image encoder (visual prompts), and is evaluated through `eval_logits`.
    fn eval_logits_from_features(
        &self,
        _clip: &Clip<B::InnerBackend>,
        _image_features: Tensor<B::InnerBackend, 2>,
    ) -> Option<Tensor<B::InnerBackend, 2>> {
        None
    }

    /// The method's prompt tensors (empty for methods without prompts).
    fn prompt_params(&self) -> Vec<PromptParam> {
        Vec::new()
    }

    /// The training state at an epoch's end (learned module, optimizer state, anything kept across
    /// epochs), for a checkpoint inside the cell; `None`: the method keeps no such state, and an
    /// interrupted cell starts over.
    fn train_state(&self) -> Result<Option<resume::TrainState>> {
        Ok(None)
    }

    /// Puts back a state `train_state` returned.
    fn restore_train_state(&mut self, _state: &resume::TrainState) -> Result<()> {
        Err(Error::Internal("this method keeps no training state".into()))
    }

    /// The learned parameters (empty for methods without any).
    fn save_artifact(&self) -> PromptArtifact;

    /// Replaces the learned parameters with saved ones (shapes must match).
    fn load_artifact(&mut self, artifact: &PromptArtifact) -> Result<()>;
}
