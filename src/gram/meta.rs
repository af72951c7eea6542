//! GRAM's first-order meta-training step, reconstruction \[U\] after SUPMER's bi-level loop
//! (docs/gram.md, "The reconstruction"), for textual prompts, visual prompts or both (UNIGRAM):
//!
//! ```text
//! g_s = ∇_θ L_CE(support; θ₀)                  (a constant: first order)
//! θ'  = θ₀ − α · ψ_φ(g_s, e)                   (each prompt tensor through its modality's ψ)
//! L_q = L_CE(query; θ')
//! θ₀, φ ← their optimizers on ∇ L_q, each gradient clipped to norm `clip`
//! ```
//!
//! With `inner_steps` > 1 the inner loop repeats from the adapted prompts, each step's support
//! gradient again held constant. The task embedding (`TaskEmbedding`) is by default the mean
//! L2-normalized frozen image feature of the support images (SUPMER uses the encoder's mean hidden
//! state of the support batch). With textual and visual prompts the
//! support and query losses run through both at once, so each modality's adapted prompt is scored
//! together with the other's — the "mutually enhanced" joint tuning of UNIGRAM, as reconstructed.

use burn::module::{AutodiffModule, Module, Param};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, Optimizer};
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder, RecorderError};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::loss::cross_entropy_with_logits;
use burn::tensor::{ElementConversion, Int, Tensor};

use super::Regulator;
use crate::clip::{Clip, DeepPrompts, PromptSlot, VisionPrompts};
use crate::error::{Error, Result};
use crate::methods::text_prompts::{assemble, ClassPrompts, ClassTokenPosition};

/// The meta-learned prompts θ₀, each `[tokens, width]`: `text[0]` is the input context (CoOp's
/// `ctx`), `text[i]` replaces the context tokens entering text block `i`; `vision[0]` is appended
/// after the patch tokens (VPT-shallow), `vision[i]` replaces them entering vision block `i`.
#[derive(Module, Debug)]
pub struct MetaPrompt<B: Backend> {
    pub text: Vec<Param<Tensor<B, 2>>>,
    pub vision: Vec<Param<Tensor<B, 2>>>,
}

/// ψ_φ per modality (UNIGRAM: one each).
#[derive(Module, Debug)]
pub struct MetaRegulators<B: Backend> {
    pub text: Option<Regulator<B>>,
    pub vision: Option<Regulator<B>>,
}

/// How an episode's classes are scored on the text side.
pub enum ClassText<'a, B: Backend> {
    /// Class prompts that take the learned text context.
    Prompts(&'a ClassPrompts<B>),
    /// Frozen class features (visual-prompt-only runs).
    Frozen(Tensor<B, 2>),
}

/// One side of an episode: frozen image features (unnormalized), the normalized pixels when visual
/// prompts are learned, labels in the episode's label space, and the classes' text.
pub struct EpisodeSet<'a, B: Backend> {
    pub features: Tensor<B, 2>,
    pub pixels: Option<Tensor<B, 4>>,
    pub labels: Tensor<B, 1, Int>,
    pub classes: ClassText<'a, B>,
}

/// Normalized class features of CoOp-style prompts with `text[0]` as context and `text[1..]` as
/// deep prompts at the context's position.
pub(crate) fn prompted_text<B: Backend>(clip: &Clip<B>, text: &[Tensor<B, 2>], p: &ClassPrompts<B>) -> Tensor<B, 2> {
    let embeds = assemble(text[0].clone().unsqueeze::<3>(), p, ClassTokenPosition::End);
    let deep = (text.len() > 1).then(|| {
        let mut layers = vec![None];
        layers.extend(text[1..].iter().map(|t| Some(t.clone().unsqueeze::<3>())));
        DeepPrompts {
            slot: PromptSlot::At(1),
            layers,
        }
    });
    Clip::normalize(clip.text_features(clip.text_model.forward_pooled(embeds, &p.eos, deep.as_ref())))
}

/// VPT-style vision inputs from `vision[0]` (shallow) and `vision[1..]` (deep).
pub(crate) fn vision_inputs<B: Backend>(vision: &[Tensor<B, 2>]) -> VisionPrompts<B> {
    VisionPrompts {
        shallow: vision.first().map(|v| v.clone().unsqueeze::<3>()),
        deep: (0..vision.len())
            .map(|i| (i > 0).then(|| vision[i].clone().unsqueeze::<3>()))
            .collect(),
    }
}

/// Cross-entropy of a set under prompts `text` (may be empty) and `vision` (may be empty).
pub(crate) fn prompt_loss<B: Backend>(
    clip: &Clip<B>,
    text: &[Tensor<B, 2>],
    vision: &[Tensor<B, 2>],
    set: &EpisodeSet<B>,
) -> Tensor<B, 1> {
    let class_features = match &set.classes {
        ClassText::Prompts(p) if !text.is_empty() => prompted_text(clip, text, p),
        ClassText::Frozen(f) => f.clone(),
        ClassText::Prompts(_) => panic!("class prompts without a learned text context"),
    };
    let images = match (&set.pixels, vision.is_empty()) {
        (Some(px), false) => clip.encode_image(px.clone(), &vision_inputs(vision)),
        _ => set.features.clone(),
    };
    let logits = clip.logits_per_image(images, class_features);
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

fn state_error(e: RecorderError) -> Error {
    Error::Store(format!("meta-training state: {e}"))
}

/// What ψ_φ's mixing coefficient is computed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskEmbedding {
    /// The mean L2-normalized frozen image feature of the task's training (support) images
    /// [U: SUPMER uses the encoder's mean hidden state of the support batch].
    ImageMean,
    /// A zero vector: the coefficient is one learned constant (the ablation without task
    /// conditioning).
    None,
}

impl TaskEmbedding {
    /// The embedding of a task from its images' frozen features `[n, dim]`.
    pub fn of<B: Backend>(&self, features: Tensor<B, 2>) -> Tensor<B, 1> {
        let dim = features.dims()[1];
        match self {
            TaskEmbedding::ImageMean => Clip::normalize(features).mean_dim(0).reshape([dim]),
            TaskEmbedding::None => Tensor::zeros([dim], &features.device()),
        }
    }
}

/// The meta-parameters and their optimizers (one for θ₀, one for φ, as SUPMER).
pub struct MetaLearner<B: AutodiffBackend> {
    pub prompt: MetaPrompt<B>,
    pub regulators: MetaRegulators<B>,
    prompt_opt: OptimizerAdaptor<AdamW, MetaPrompt<B>, B>,
    reg_opt: OptimizerAdaptor<AdamW, MetaRegulators<B>, B>,
    pub inner_lr: f64,
    /// Regulated inner steps on the support set (SUPMER: 1), each from a fresh support gradient
    /// held constant.
    pub inner_steps: usize,
    pub task_embedding: TaskEmbedding,
    pub clip: f64,
}

/// What one meta step measured.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MetaStep {
    pub support_loss: f32,
    pub query_loss: f32,
    /// The textual regulator's mixing coefficient on this task (when text prompts are learned).
    pub text_coefficient: Option<f32>,
    /// The visual regulator's.
    pub vision_coefficient: Option<f32>,
}

fn params<B: AutodiffBackend>(ts: Vec<Tensor<B, 2>>) -> Vec<Param<Tensor<B, 2>>> {
    ts.into_iter()
        .map(|t| Param::from_tensor(t.detach().require_grad()))
        .collect()
}

impl<B: AutodiffBackend> MetaLearner<B> {
    /// θ₀ from `text` and `vision` (either may be empty, not both); each modality with prompts
    /// needs its regulator. θ₀ and φ each get an AdamW with `weight_decay` and `epsilon`.
    pub fn new(
        text: Vec<Tensor<B, 2>>,
        vision: Vec<Tensor<B, 2>>,
        regulators: MetaRegulators<B>,
        inner_lr: f64,
        clip: f64,
        weight_decay: f32,
        epsilon: f32,
    ) -> Self {
        assert!(
            (text.is_empty() || regulators.text.is_some()) && (vision.is_empty() || regulators.vision.is_some()),
            "each learned modality needs its regulator"
        );
        // Adam's ε is the suite's (`adam_epsilon`): burn's default (1e-5) is not torch's (1e-8), which
        // SUPMER's optimizers use, and it moves a first step's update by ~7% where a gradient
        // element is ~1e-4 (docs/gram-supmer.md).
        let opt = || AdamWConfig::new().with_weight_decay(weight_decay).with_epsilon(epsilon);
        Self {
            prompt: MetaPrompt {
                text: params(text),
                vision: params(vision),
            },
            regulators,
            prompt_opt: opt().init(),
            reg_opt: opt().init(),
            inner_lr,
            inner_steps: 1,
            task_embedding: TaskEmbedding::ImageMean,
            clip,
        }
    }

    /// θ₀, φ and both optimizers' moments as bytes (burn's bincode records), for checkpoints.
    pub fn state(&self) -> Result<Vec<Vec<u8>>> {
        let rec = BinBytesRecorder::<FullPrecisionSettings>::default();
        Ok(vec![
            Recorder::<B>::record(&rec, self.prompt.clone().into_record(), ()).map_err(state_error)?,
            Recorder::<B>::record(&rec, self.regulators.clone().into_record(), ()).map_err(state_error)?,
            Recorder::<B>::record(&rec, self.prompt_opt.to_record(), ()).map_err(state_error)?,
            Recorder::<B>::record(&rec, self.reg_opt.to_record(), ()).map_err(state_error)?,
        ])
    }

    /// Restores what `state` saved (the learner must have been built with the same shapes).
    pub(crate) fn load_state(mut self, state: &[Vec<u8>], device: &B::Device) -> Result<Self> {
        let [prompt, regulators, prompt_opt, reg_opt] = state else {
            return Err(Error::Store(format!(
                "meta-training state has {} parts, not 4",
                state.len()
            )));
        };
        let rec = BinBytesRecorder::<FullPrecisionSettings>::default();
        self.prompt = self
            .prompt
            .load_record(Recorder::<B>::load(&rec, prompt.clone(), device).map_err(state_error)?);
        self.regulators = self
            .regulators
            .load_record(Recorder::<B>::load(&rec, regulators.clone(), device).map_err(state_error)?);
        self.prompt_opt = self
            .prompt_opt
            .load_record(Recorder::<B>::load(&rec, prompt_opt.clone(), device).map_err(state_error)?);
        self.reg_opt = self
            .reg_opt
            .load_record(Recorder::<B>::load(&rec, reg_opt.clone(), device).map_err(state_error)?);
        Ok(self)
    }

    /// One first-order meta step on one task; `outer_lr` for both optimizers.
    pub fn step(&mut self, clip: &Clip<B>, support: &EpisodeSet<B>, query: &EpisodeSet<B>, outer_lr: f64) -> MetaStep {
        self.step_tasks(clip, &[(support, query)], outer_lr)
    }

    /// One first-order meta step on a batch of tasks (support, query): each task adapts θ₀ from
    /// its own support gradient, and θ₀ and φ take one update on the mean query loss. The
    /// returned losses and coefficients are means over the tasks.
    pub fn step_tasks(
        &mut self,
        clip: &Clip<B>,
        tasks: &[(&EpisodeSet<B>, &EpisodeSet<B>)],
        outer_lr: f64,
    ) -> MetaStep {
        assert!(!tasks.is_empty(), "a meta step needs at least one task");
        let vals = |ps: &[Param<Tensor<B, 2>>]| ps.iter().map(|p| p.val()).collect::<Vec<_>>();
        let (text0, vision0) = (vals(&self.prompt.text), vals(&self.prompt.vision));
        let inner_lr = self.inner_lr;
        let (mut support_sum, mut query_sum) = (0f32, 0f32);
        let (mut text_c, mut vision_c) = (Vec::new(), Vec::new());
        let mut total: Option<Tensor<B, 1>> = None;
        for (support, query) in tasks {
            let task = self.task_embedding.of(support.features.clone()).detach();
            let (mut text1, mut vision1) = (text0.clone(), vision0.clone());
            for k in 0..self.inner_steps.max(1) {
                // The support gradient at the current prompts, computed on detached copies and
                // then held constant (first order).
                let probe =
                    |ts: &[Tensor<B, 2>]| ts.iter().map(|t| t.clone().detach().require_grad()).collect::<Vec<_>>();
                let (tp, vp) = (probe(&text1), probe(&vision1));
                let ls = prompt_loss(clip, &tp, &vp, support);
                if k == 0 {
                    support_sum += ls.clone().into_scalar().elem::<f32>();
                }
                let gs = ls.backward();
                let adapt = |theta: Vec<Tensor<B, 2>>,
                             probes: &[Tensor<B, 2>],
                             reg: Option<&Regulator<B>>,
                             coefficients: &mut Vec<f32>|
                 -> Vec<Tensor<B, 2>> {
                    let mut coefficient = None;
                    let out = theta
                        .into_iter()
                        .zip(probes)
                        .map(|(t0, p)| {
                            let g = Tensor::<B, 2>::from_inner(p.grad(&gs).expect("the prompts require grad"));
                            let reg = reg.expect("each learned modality has its regulator");
                            let (step, c) = reg.forward(g, task.clone());
                            coefficient = Some(c.into_scalar().elem::<f32>());
                            t0 - step.mul_scalar(inner_lr)
                        })
                        .collect();
                    if k == 0 {
                        coefficients.extend(coefficient);
                    }
                    out
                };
                text1 = adapt(text1, &tp, self.regulators.text.as_ref(), &mut text_c);
                vision1 = adapt(vision1, &vp, self.regulators.vision.as_ref(), &mut vision_c);
            }
            let lq = prompt_loss(clip, &text1, &vision1, query);
            query_sum += lq.clone().into_scalar().elem::<f32>();
            total = Some(match total {
                None => lq,
                Some(t) => t + lq,
            });
        }
        let n = tasks.len();
        let loss = total.expect("at least one task");
        let loss = if n == 1 { loss } else { loss.div_scalar(n as f64) };
        let mut grads = loss.backward();
        let gp = clip_norm(
            &self.prompt,
            GradientsParams::from_module(&mut grads, &self.prompt),
            self.clip,
        );
        let gr = clip_norm(
            &self.regulators,
            GradientsParams::from_module(&mut grads, &self.regulators),
            self.clip,
        );
        self.prompt = self.prompt_opt.step(outer_lr, self.prompt.clone(), gp);
        self.regulators = self.reg_opt.step(outer_lr, self.regulators.clone(), gr);
        let mean = |v: &[f32]| (!v.is_empty()).then(|| v.iter().sum::<f32>() / v.len() as f32);
        MetaStep {
            support_loss: support_sum / n as f32,
            query_loss: query_sum / n as f32,
            text_coefficient: mean(&text_c),
            vision_coefficient: mean(&vision_c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;
    use burn::tensor::TensorData;

    #[test]
    fn task_embeddings() {
        let dev = Default::default();
        let f = Tensor::<Cpu, 2>::from_data(TensorData::new(vec![3.0f32, 4.0, 0.0, 2.0], [2, 2]), &dev);
        let mean = TaskEmbedding::ImageMean
            .of(f.clone())
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        // Rows normalized first: (0.6, 0.8) and (0, 1).
        assert!((mean[0] - 0.3).abs() < 1e-6 && (mean[1] - 0.9).abs() < 1e-6, "{mean:?}");
        let none = TaskEmbedding::None.of(f).into_data().to_vec::<f32>().unwrap();
        assert_eq!(none, vec![0.0, 0.0]);
    }
}
