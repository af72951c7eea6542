//! GRAM's first-order meta-training step for textual prompts (CoOp-shaped θ₀ `[1, M, width]`),
//! reconstruction [U] after SUPMER's bi-level loop (shared/reference/gram.md §1.2):
//!
//! ```text
//! g_s = ∇_θ L_CE(support; θ₀)                  (a constant: first order)
//! θ'  = θ₀ − α · ψ_φ(g_s, e)                   (e: the task embedding)
//! L_q = L_CE(query; θ')
//! θ₀, φ ← their optimizers on ∇ L_q, each gradient clipped to norm `clip`
//! ```
//!
//! The task embedding is the mean L2-normalized image feature of the support images (SUPMER uses
//! the encoder's mean hidden state of the support batch).

use burn::module::{AutodiffModule, Module, Param};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::loss::cross_entropy_with_logits;
use burn::tensor::{ElementConversion, Int, Tensor};

use super::Regulator;
use crate::clip::Clip;
use crate::methods::coop::{encode_prompts, ClassPrompts, ClassTokenPosition};

/// The meta-learned text context θ₀.
#[derive(Module, Debug)]
pub struct MetaPrompt<B: Backend> {
    pub ctx: Param<Tensor<B, 3>>,
}

/// One side of an episode: image features (frozen encoder, unnormalized) and labels in the
/// episode's label space, with the class prompts of that label space.
pub struct EpisodeSet<'a, B: Backend> {
    pub features: Tensor<B, 2>,
    pub labels: Tensor<B, 1, Int>,
    pub prompts: &'a ClassPrompts<B>,
}

/// Cross-entropy of CoOp-style class prompts with context `ctx` on a set.
pub fn prompt_loss<B: Backend>(clip: &Clip<B>, ctx: Tensor<B, 3>, set: &EpisodeSet<B>) -> Tensor<B, 1> {
    let text = encode_prompts(clip, ctx, set.prompts, ClassTokenPosition::End);
    let logits = clip.logits_per_image(set.features.clone(), text);
    let n = logits.dims()[1];
    cross_entropy_with_logits(logits, set.labels.clone().one_hot(n).float())
}

/// Scales `grads` of `module` so their joint L2 norm is at most `max_norm`.
fn clip_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: GradientsParams,
    max_norm: f64,
) -> GradientsParams {
    struct Norm<'a, B: AutodiffBackend> {
        grads: &'a GradientsParams,
        sq: f64,
        _b: std::marker::PhantomData<B>,
    }
    impl<B: AutodiffBackend> burn::module::ModuleVisitor<B> for Norm<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
                self.sq += g.powi_scalar(2).sum().into_scalar().elem::<f64>();
            }
        }
    }
    struct Scale<'a, B: AutodiffBackend> {
        grads: &'a mut GradientsParams,
        factor: f64,
        _b: std::marker::PhantomData<B>,
    }
    impl<B: AutodiffBackend> burn::module::ModuleVisitor<B> for Scale<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
                self.grads.register(param.id, g.mul_scalar(self.factor));
            }
        }
    }
    let mut n = Norm::<B> {
        grads: &grads,
        sq: 0.0,
        _b: std::marker::PhantomData,
    };
    module.visit(&mut n);
    let norm = n.sq.sqrt();
    if norm <= max_norm || norm == 0.0 {
        return grads;
    }
    let mut grads = grads;
    let mut s = Scale::<B> {
        grads: &mut grads,
        factor: max_norm / norm,
        _b: std::marker::PhantomData,
    };
    module.visit(&mut s);
    grads
}

/// The meta-parameters and their optimizers.
pub struct MetaLearner<B: AutodiffBackend> {
    pub prompt: MetaPrompt<B>,
    pub regulator: Regulator<B>,
    prompt_opt: OptimizerAdaptor<AdamW, MetaPrompt<B>, B>,
    reg_opt: OptimizerAdaptor<AdamW, Regulator<B>, B>,
    pub inner_lr: f64,
    pub clip: f64,
}

/// What one meta step measured.
#[derive(Clone, Debug, PartialEq)]
pub struct MetaStep {
    pub support_loss: f32,
    pub query_loss: f32,
    /// The regulator's mixing coefficient on this task.
    pub coefficient: f32,
}

impl<B: AutodiffBackend> MetaLearner<B> {
    pub fn new(ctx: Tensor<B, 3>, regulator: Regulator<B>, inner_lr: f64, clip: f64, weight_decay: f32) -> Self {
        let opt = || AdamWConfig::new().with_weight_decay(weight_decay);
        Self {
            prompt: MetaPrompt {
                ctx: Param::from_tensor(ctx.detach().require_grad()),
            },
            regulator,
            prompt_opt: opt().init(),
            reg_opt: opt().init(),
            inner_lr,
            clip,
        }
    }

    /// One first-order meta step on one task; `outer_lr` for both optimizers.
    pub fn step(&mut self, clip: &Clip<B>, support: &EpisodeSet<B>, query: &EpisodeSet<B>, outer_lr: f64) -> MetaStep {
        let ctx0 = self.prompt.ctx.val();
        let shape = ctx0.dims();
        // The support gradient, computed on a detached copy and then held constant.
        let probe = ctx0.clone().detach().require_grad();
        let ls = prompt_loss(clip, probe.clone(), support);
        let support_loss: f32 = ls.clone().into_scalar().elem();
        let g_s = probe.grad(&ls.backward()).expect("the context requires grad");
        let rows = shape[0] * shape[1];
        let g_s = Tensor::<B, 2>::from_inner(g_s.reshape([rows, shape[2]]));
        let task = Clip::normalize(support.features.clone())
            .mean_dim(0)
            .reshape([support.features.dims()[1]])
            .detach();
        let (step, c) = self.regulator.forward(g_s, task);
        let ctx1 = ctx0 - step.reshape(shape).mul_scalar(self.inner_lr);
        let lq = prompt_loss(clip, ctx1, query);
        let query_loss: f32 = lq.clone().into_scalar().elem();
        let coefficient: f32 = c.into_scalar().elem();
        let mut grads = lq.backward();
        let gp = clip_norm(
            &self.prompt,
            GradientsParams::from_module(&mut grads, &self.prompt),
            self.clip,
        );
        let gr = clip_norm(
            &self.regulator,
            GradientsParams::from_module(&mut grads, &self.regulator),
            self.clip,
        );
        self.prompt = self.prompt_opt.step(outer_lr, self.prompt.clone(), gp);
        self.regulator = self.reg_opt.step(outer_lr, self.regulator.clone(), gr);
        MetaStep {
            support_loss,
            query_loss,
            coefficient,
        }
    }
}
