//! GRAM on a host method: the host's prompt tensors start from the meta-learned θ₀ of matching
//! role and token shape, and every prompt gradient passes through the frozen ψ_φ of its modality
//! (so UNIGRAM's textual and visual prompts each have their own) before the host's
//! optimizer step. Everything else — the host's loss, schedule, meta-nets, evaluation — is the
//! host's own.

use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;

use super::Regulator;
use crate::clip::{Clip, ClipTokenizer};
use crate::error::{Error, Result};
use crate::methods::linear_probe::Labelled;
use crate::methods::{Batch, ClassSet, PromptArtifact, PromptMethod, PromptParam, PromptRole};

/// The frozen ψ_φ applied to a host's prompt gradients.
pub struct RegulatedGradients<B: AutodiffBackend> {
    /// For textual prompt tensors.
    pub text: Option<Regulator<B::InnerBackend>>,
    /// For visual prompt tensors.
    pub vision: Option<Regulator<B::InnerBackend>>,
    /// The task embedding the mixing coefficient is computed from.
    pub task: Tensor<B::InnerBackend, 1>,
    /// Refreshed before each step (a host's parameter ids change when it reloads them).
    pub params: Vec<PromptParam>,
}

impl<B: AutodiffBackend> RegulatedGradients<B> {
    fn regulator(&self, role: PromptRole) -> Option<&Regulator<B::InnerBackend>> {
        if role.is_text() {
            self.text.as_ref()
        } else {
            self.vision.as_ref()
        }
    }
}

fn regulate<B: burn::tensor::backend::Backend, const D: usize>(
    grads: &mut GradientsParams,
    p: &PromptParam,
    reg: &Regulator<B>,
    task: &Tensor<B, 1>,
) {
    if let Some(g) = grads.remove::<B, D>(p.id) {
        let dims: [usize; D] = g.dims();
        let width = dims[D - 1];
        let rows = dims.iter().product::<usize>() / width;
        let (out, _) = reg.forward(g.reshape([rows, width]), task.clone());
        grads.register(p.id, out.reshape(dims));
    }
}

impl<B: AutodiffBackend> RegulatedGradients<B> {
    /// Every prompt gradient through its modality's frozen ψ_φ (others unchanged).
    pub fn regulate(&self, mut grads: GradientsParams) -> GradientsParams {
        for p in &self.params {
            let Some(reg) = self.regulator(p.role) else {
                continue;
            };
            match p.shape.len() {
                2 => regulate::<B::InnerBackend, 2>(&mut grads, p, reg, &self.task),
                3 => regulate::<B::InnerBackend, 3>(&mut grads, p, reg, &self.task),
                _ => {}
            }
        }
        grads
    }
}

/// Shapes equal once unit dimensions are dropped (CoOp's `[1, M, w]` context takes θ₀'s `[M, w]`).
fn same_tokens(a: &[usize], b: &[usize]) -> bool {
    let strip = |s: &[usize]| s.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
    strip(a) == strip(b)
}

/// A host method with GRAM: `theta0` (if any) replaces the host's initial prompt tensors — each
/// from θ₀'s tensor of the same role (`text.0` for CoOp's `ctx`, `vision.i` for VPT's layer `i`, …)
/// — and `regulate` (if any) passes their gradients through the textual or visual ψ_φ. Anything
/// else the host learns (CoCoOp's meta-net, MaPLe's couplings) keeps its own init and raw
/// gradients. Neither: the host itself (the ablation baseline).
pub struct WithGram<B: AutodiffBackend> {
    host: Box<dyn PromptMethod<B>>,
    regulate: Option<RegulatedGradients<B>>,
}

impl<B: AutodiffBackend> WithGram<B> {
    pub fn new(
        mut host: Box<dyn PromptMethod<B>>,
        theta0: Option<&PromptArtifact>,
        regulate: Option<RegulatedGradients<B>>,
    ) -> Result<Self> {
        let params = host.prompt_params();
        if params.is_empty() {
            return Err(Error::Config("gram: the host method has no prompt tensors".into()));
        }
        if let Some(t0) = theta0 {
            let mut art = host.save_artifact();
            for p in &params {
                let key = p.role.theta0_name();
                let (shape, data) = t0.get(&key).ok_or_else(|| {
                    Error::Config(format!(
                        "gram: the host's prompt `{}` needs a meta-learned `{key}`, which this meta-training run \
                         does not learn (it has: {}); meta-train prompts of this modality and depth",
                        p.name,
                        t0.keys().cloned().collect::<Vec<_>>().join(", ")
                    ))
                })?;
                if !same_tokens(shape, &p.shape) {
                    return Err(Error::Config(format!(
                        "gram: the meta-learned `{key}` is {shape:?}, the host's `{}` is {:?}",
                        p.name, p.shape
                    )));
                }
                art.insert(p.name.clone(), (p.shape.clone(), data.clone()));
            }
            host.load_artifact(&art)?;
        }
        if let Some(r) = &regulate {
            for p in &params {
                let reg = r.regulator(p.role).ok_or_else(|| {
                    Error::Config(format!(
                        "gram: no {} gradient regulator for the prompt `{}`",
                        if p.role.is_text() { "textual" } else { "visual" },
                        p.name
                    ))
                })?;
                let width = *p.shape.last().unwrap_or(&0);
                if reg.width() != width {
                    return Err(Error::Config(format!(
                        "gram: the regulator is {} wide, the prompt `{}` {width}",
                        reg.width(),
                        p.name
                    )));
                }
            }
        }
        Ok(Self { host, regulate })
    }
}

impl<B: AutodiffBackend> PromptMethod<B> for WithGram<B> {
    fn step(&mut self, clip: &Clip<B>, batch: Batch<B>) -> Result<(f32, GradientsParams)> {
        let (loss, grads) = self.host.step(clip, batch)?;
        Ok(match self.regulate.as_mut() {
            Some(r) => {
                r.params = self.host.prompt_params();
                (loss, r.regulate(grads))
            }
            None => (loss, grads),
        })
    }

    fn apply(&mut self, grads: GradientsParams, lr: f64) -> Result<()> {
        self.host.apply(grads, lr)
    }

    fn end_epoch(&mut self, epoch: usize, epochs: usize) -> Result<()> {
        self.host.end_epoch(epoch, epochs)
    }

    fn fit_features(
        &mut self,
        train: Labelled,
        val: Labelled,
        device: &burn::tensor::Device<B::InnerBackend>,
    ) -> Result<crate::methods::linear_probe::LinearProbeFit> {
        self.host.fit_features(train, val, device)
    }

    fn begin_eval(&mut self, clip: &Clip<B::InnerBackend>, tok: &ClipTokenizer, classes: &ClassSet) -> Result<()> {
        self.host.begin_eval(clip, tok, classes)
    }

    fn eval_logits(
        &self,
        clip: &Clip<B::InnerBackend>,
        pixels: Tensor<B::InnerBackend, 4>,
    ) -> Tensor<B::InnerBackend, 2> {
        self.host.eval_logits(clip, pixels)
    }

    fn image_encoder_frozen(&self) -> bool {
        self.host.image_encoder_frozen()
    }

    fn eval_logits_from_features(
        &self,
        clip: &Clip<B::InnerBackend>,
        image_features: Tensor<B::InnerBackend, 2>,
    ) -> Option<Tensor<B::InnerBackend, 2>> {
        self.host.eval_logits_from_features(clip, image_features)
    }

    fn prompt_params(&self) -> Vec<PromptParam> {
        self.host.prompt_params()
    }

    fn train_state(&self) -> Result<Option<crate::methods::resume::TrainState>> {
        self.host.train_state()
    }

    fn restore_train_state(&mut self, state: &crate::methods::resume::TrainState) -> Result<()> {
        self.host.restore_train_state(state)
    }

    fn save_artifact(&self) -> PromptArtifact {
        self.host.save_artifact()
    }

    fn load_artifact(&mut self, artifact: &PromptArtifact) -> Result<()> {
        self.host.load_artifact(artifact)
    }
}
