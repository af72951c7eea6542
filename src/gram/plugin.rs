//! GRAM on a host method: the host's prompt tensors start from the meta-learned θ₀ of matching
//! name and shape, and every prompt gradient passes through the frozen ψ_φ (one regulator per
//! prompt width, so UNIGRAM's textual and visual prompts each have their own) before the host's
//! optimizer step. Everything else — the host's loss, schedule, meta-nets, evaluation — is the
//! host's own.

use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;

use super::Regulator;
use crate::clip::{Clip, ClipTokenizer};
use crate::error::{Error, Result};
use crate::methods::linear_probe::Labelled;
use crate::methods::{Batch, ClassSet, GradientTransform, PromptArtifact, PromptMethod, PromptParam};

/// The frozen ψ_φ applied to a host's prompt gradients.
pub struct RegulatedGradients<B: AutodiffBackend> {
    /// By prompt width.
    pub regulators: Vec<(usize, Regulator<B::InnerBackend>)>,
    /// The task embedding the mixing coefficient is computed from.
    pub task: Tensor<B::InnerBackend, 1>,
    /// Refreshed before each step (a host's parameter ids change when it reloads them).
    pub params: Vec<PromptParam>,
}

impl<B: AutodiffBackend> RegulatedGradients<B> {
    fn regulator(&self, width: usize) -> Option<&Regulator<B::InnerBackend>> {
        self.regulators.iter().find(|(w, _)| *w == width).map(|(_, r)| r)
    }
}

impl<B: AutodiffBackend> GradientTransform<B> for RegulatedGradients<B> {
    fn transform(&mut self, mut grads: GradientsParams) -> GradientsParams {
        for p in &self.params {
            let width = *p.shape.last().expect("prompt tensors have a width");
            let Some(reg) = self.regulator(width) else {
                continue;
            };
            let rows = p.shape.iter().product::<usize>() / width;
            match p.shape.len() {
                2 => {
                    if let Some(g) = grads.remove::<B::InnerBackend, 2>(p.id) {
                        let (out, _) = reg.forward(g.reshape([rows, width]), self.task.clone());
                        grads.register(p.id, out.reshape([p.shape[0], p.shape[1]]));
                    }
                }
                3 => {
                    if let Some(g) = grads.remove::<B::InnerBackend, 3>(p.id) {
                        let (out, _) = reg.forward(g.reshape([rows, width]), self.task.clone());
                        grads.register(p.id, out.reshape([p.shape[0], p.shape[1], p.shape[2]]));
                    }
                }
                _ => {}
            }
        }
        grads
    }
}

/// A host method with GRAM: `theta0` (if any) replaces the host's initial prompt tensors, and
/// `regulate` (if any) rewrites their gradients. Neither: the host itself (the ablation baseline).
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
        if let Some(t0) = theta0 {
            let mut art = host.save_artifact();
            for p in host.prompt_params() {
                let (shape, data) = t0.get(&p.name).ok_or_else(|| {
                    Error::Input(format!(
                        "gram: the meta-learned initialisation has no `{}` for this host (it has: {}); meta-train \
                         prompts of this shape",
                        p.name,
                        t0.keys().cloned().collect::<Vec<_>>().join(", ")
                    ))
                })?;
                if shape != &p.shape {
                    return Err(Error::Input(format!(
                        "gram: the meta-learned `{}` is {shape:?}, this host's is {:?}",
                        p.name, p.shape
                    )));
                }
                art.insert(p.name.clone(), (shape.clone(), data.clone()));
            }
            host.load_artifact(&art)?;
        }
        if let Some(r) = &regulate {
            for p in host.prompt_params() {
                let w = *p.shape.last().unwrap_or(&0);
                if r.regulator(w).is_none() {
                    return Err(Error::Input(format!(
                        "gram: no gradient regulator for the {w}-wide prompt `{}`",
                        p.name
                    )));
                }
            }
        }
        Ok(Self { host, regulate })
    }
}

impl<B: AutodiffBackend> PromptMethod<B> for WithGram<B> {
    fn trainable(&self) -> bool {
        self.host.trainable()
    }

    fn train_step(
        &mut self,
        clip: &Clip<B>,
        batch: Batch<B>,
        lr: f64,
        transform: Option<&mut dyn GradientTransform<B>>,
    ) -> Result<f32> {
        if transform.is_some() {
            return Err(Error::Input(
                "gram: a second gradient transform cannot be stacked".into(),
            ));
        }
        match self.regulate.as_mut() {
            Some(r) => {
                r.params = self.host.prompt_params();
                self.host.train_step(clip, batch, lr, Some(r))
            }
            None => self.host.train_step(clip, batch, lr, None),
        }
    }

    fn end_epoch(&mut self, epoch: usize, epochs: usize) -> Result<()> {
        self.host.end_epoch(epoch, epochs)
    }

    fn fits_features(&self) -> bool {
        self.host.fits_features()
    }

    fn fit_features(
        &mut self,
        train: Labelled,
        val: Labelled,
        device: &burn::tensor::Device<B::InnerBackend>,
    ) -> Result<serde_json::Value> {
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

    fn save_artifact(&self) -> PromptArtifact {
        self.host.save_artifact()
    }

    fn load_artifact(&mut self, artifact: &PromptArtifact) -> Result<()> {
        self.host.load_artifact(artifact)
    }
}
