//! Prompt-tuning methods. The backbone is frozen and knows no method; a method says what it
//! computes and injects prompts only through the backbone's explicit inputs (token embeddings,
//! deep prompts, visual prompt tokens). By how it learns, a method is one of three kinds:
//! [`SgdMethod`] (a module and its loss; the training loop in `run/` owns the optimizer, the
//! schedule, the checkpoints and GRAM's gradient hook), [`FeatureFit`] (a closed-form fit on frozen
//! features) or [`Frozen`] (nothing to learn). Every kind ends in a [`Scorer`].

// Shared pieces.
pub mod coop_family;
pub mod gpa;
pub mod init;
pub mod multimodal;
pub mod optim;
pub mod released;
pub mod scorer;
pub mod spec;
pub mod text_prompts;

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

use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor};

pub use cocoop::{CoCoOp, CoCoOpConfig};

pub use coop::{CoOp, CoOpConfig};
pub use ivlp::IvlpConfig;
pub use kgcoop::KgCoOpConfig;
pub use linear_probe::{LinearProbe, LinearProbeConfig};
pub use maple::MapleConfig;

pub use optim::{Epochs, PerCell, SgdConfig};
pub use prograd::ProGradConfig;
pub use promptsrc::PromptSrcConfig;
pub(crate) use scorer::Scorer;
pub use spec::{BuildInputs, MethodSpec};
pub(crate) use spec::{Builder, EncoderUse, SgdSchedule, Training};
pub use text_prompts::{ClassTokenPosition, ContextSource, TransferTemplate};
pub use vpt::{Vpt, VptConfig};

pub use zeroshot::{TemplateSet, ZeroShotConfig};

use crate::clip::{Clip, ClipTokenizer};
use crate::error::{Error, Result};

/// A training batch: normalized pixels and labels in the training label space.
pub struct Batch<B: Backend> {
    pub pixels: Tensor<B, 4>,
    pub labels: Tensor<B, 1, Int>,
}

/// A tensor's shape and values on the host, as artifacts store them.
pub(crate) fn host_tensor<B: Backend, const D: usize>(t: Tensor<B, D>) -> (Vec<usize>, Vec<f32>) {
    let d = t.into_data().convert::<f32>();
    (d.shape.to_vec(), d.to_vec::<f32>().expect("converted to f32"))
}

/// A loss's value and its gradients for `module`'s parameters.
pub(crate) fn loss_grads<B: AutodiffBackend, M: burn::module::AutodiffModule<B>>(
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
    /// The dataset the classes are of (a method may keep per-dataset words).
    pub dataset: &'a str,
    pub names: &'a [String],
    /// The dataset's hand-crafted template.
    pub template: &'a str,
}

/// A method that learns by SGD: the module it learns and the loss it computes. The training loop
/// (`run/`) owns the module between steps, the optimizer, the schedule, the epoch checkpoints and
/// the gradient hook GRAM plugs into; the method never sees an optimizer.
pub trait SgdMethod<B: AutodiffBackend> {
    /// The learnable parameters (the loop hands them to the optimizer, which returns them updated).
    type Module: AutodiffModule<B> + 'static;

    /// The loss on `batch` and its gradients for `module`'s parameters.
    fn loss(&self, module: &Self::Module, clip: &Clip<B>, batch: Batch<B>) -> Result<(f32, GradientsParams)>;

    /// The module's prompt tensors (not meta-nets or projections): what GRAM initialises from θ₀
    /// and whose gradients it regulates.
    fn prompt_params(&self, module: &Self::Module) -> Vec<PromptParam>;

    /// The learned parameters by name (the reference implementation's state-dict names).
    fn artifact(&self, module: &Self::Module) -> PromptArtifact;

    /// `module` with its parameters replaced by saved ones (names and shapes must match).
    fn load(&self, module: &Self::Module, artifact: &PromptArtifact) -> Result<Self::Module>;

    /// The scorer of a class set with the learned parameters.
    fn scorer(
        &self,
        module: &<Self::Module as AutodiffModule<B>>::InnerModule,
        clip: &Clip<B::InnerBackend>,
        tok: &ClipTokenizer,
        classes: &ClassSet,
    ) -> Result<Scorer<B::InnerBackend>>;

    /// Called after the last step of each epoch (`epoch` 0-based of `epochs`); returns the module
    /// to go on with. PromptSRC's Gaussian prompt aggregation happens here.
    fn end_epoch(&mut self, module: Self::Module, _epoch: usize, _epochs: usize) -> Result<Self::Module> {
        Ok(module)
    }

    /// What the method carries across epochs besides the module (PromptSRC's running aggregate),
    /// for the loop's epoch checkpoint.
    fn epoch_state(&self) -> PromptArtifact {
        PromptArtifact::new()
    }

    /// Puts back what `epoch_state` returned.
    fn restore_epoch_state(&mut self, state: &PromptArtifact) -> Result<()> {
        no_epoch_state(state)
    }
}

/// What a method that keeps nothing across epochs restores: nothing, and it refuses a checkpoint
/// that holds something.
pub(crate) fn no_epoch_state(state: &PromptArtifact) -> Result<()> {
    match state.is_empty() {
        true => Ok(()),
        false => Err(Error::Store(
            "a training checkpoint holds state across epochs this method does not keep".into(),
        )),
    }
}

/// A method fitted in closed form on frozen image features (the linear probe).
pub trait FeatureFit<B: Backend> {
    /// Fits on the frozen features (`[n × dim]`, labels in the training label space) of the
    /// training and validation images; returns what the record keeps about the fit.
    fn fit(
        &mut self,
        train: linear_probe::Labelled,
        val: linear_probe::Labelled,
        device: &B::Device,
    ) -> Result<linear_probe::LinearProbeFit>;

    /// The fitted parameters by name.
    fn artifact(&self) -> PromptArtifact;

    /// Replaces the fitted parameters with saved ones.
    fn load(&mut self, artifact: &PromptArtifact) -> Result<()>;

    /// The scorer of a class set (only the classes it was fitted on), its head on `device`.
    fn scorer(&self, classes: &ClassSet, device: &B::Device) -> Result<Scorer<B>>;
}

/// A method with nothing to learn (zero-shot CLIP): a scorer from the frozen model alone.
pub trait Frozen<B: Backend> {
    fn scorer(&self, clip: &Clip<B>, tok: &ClipTokenizer, classes: &ClassSet) -> Result<Scorer<B>>;
}
