//! VPT (Jia et al., ECCV'22) as the MaPLe repository runs it on CLIP: `n_ctx` learnable visual
//! tokens N(0, σ²) appended after the patch tokens at the input (shallow, `depth = 1`), and for
//! `depth > 1` each block `1 … depth−1` replaces those tokens with its own learnable ones (deep).
//! The text side is CLIP's, frozen, on a fixed hand-crafted prompt.

use burn::module::{Module, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::loss::cross_entropy_with_logits;
use burn::tensor::{DType, Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::init::normal;
use super::optim::{Epochs, SgdConfig};
use super::spec::{layers, BuildInputs, EncoderUse, MethodSpec, Training};
use super::zeroshot::class_features;
use super::{
    host_tensor, loss_grads, Batch, Builder, ClassSet, PromptArtifact, PromptParam, PromptRole, Scorer, SgdMethod,
};
use crate::clip::{Clip, ClipTokenizer, VisionPrompts};
use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VptConfig {
    /// Visual prompt tokens per layer.
    pub n_ctx: usize,
    /// Layers with prompts: 1 = shallow; up to the vision encoder's depth (12 for ViT-B/16) = deep.
    pub depth: usize,
    pub init_std: f64,
    /// The frozen text prompt, `{}` = the class name (the reference: "a photo of a {}.").
    pub text_template: String,
    /// Round the prompt tokens to f16 where they join the patch tokens, their gradient included,
    /// as the MaPLe repository's VPT does in its f32 runs (clip/model.py `.half()` on `VPT` and
    /// `VPT_shallow`; the concatenation promotes back to f32). Absent: false, the prompts as learned.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub f16_prompt_tokens: bool,
    pub batch_size: usize,
    pub epochs: Epochs,
    pub optim: SgdConfig,
}

impl MethodSpec for VptConfig {
    const PAPER_NAME: &'static str = "VPT";
    const ENCODERS: EncoderUse = EncoderUse::VISUAL_PROMPTS;

    fn validate(&self) -> std::result::Result<(), String> {
        if self.n_ctx == 0 || self.depth == 0 || self.batch_size == 0 {
            return Err("n_ctx, depth and batch_size must be positive".into());
        }
        super::zeroshot::check_template(&self.text_template).map_err(|e| format!("text_template: {e}"))?;
        self.epochs.validate()?;
        self.optim.validate()
    }

    fn prompt_layout(&self) -> Option<Vec<(PromptRole, usize)>> {
        Some(layers((0, 0), (self.n_ctx, self.depth)))
    }

    fn training(&self) -> Training<'_> {
        Training::sgd(&self.optim, &self.epochs, self.batch_size)
    }

    fn build<B: AutodiffBackend, V: Builder<B>>(&self, i: &BuildInputs<B>, to: V) -> Result<V::Out> {
        let (method, prompts) = Vpt::new(self.clone(), i.clip, i.tok, i.classnames, i.seed)?;
        Ok(to.sgd(method, prompts))
    }
}

/// `layers[0]` is the input (shallow) prompt, `layers[i]` the one entering block `i`; each `[1, n, width]`.
#[derive(Module, Debug)]
pub struct VisualPrompts<B: Backend> {
    pub layers: Vec<Param<Tensor<B, 3>>>,
}

impl<B: Backend> VisualPrompts<B> {
    /// The tokens each layer takes; `f16_tokens`: rounded to f16 and back (see
    /// [`VptConfig::f16_prompt_tokens`]; nothing to round when they are f16 already).
    pub fn inputs(&self, f16_tokens: bool) -> VisionPrompts<B> {
        let val = |p: &Param<Tensor<B, 3>>| {
            let t = p.val();
            match t.dtype() {
                DType::F32 if f16_tokens => t.cast(DType::F16).cast(DType::F32),
                _ => t,
            }
        };
        VisionPrompts {
            shallow: self.layers.first().map(val),
            deep: (0..self.layers.len())
                .map(|i| (i > 0).then(|| val(&self.layers[i])))
                .collect(),
        }
    }
}

/// Artifact name of layer `i`'s prompt (the MaPLe repository's parameter names).
fn layer_name(i: usize) -> String {
    if i == 0 {
        "image_encoder.VPT".into()
    } else {
        format!("image_encoder.transformer.resblocks.{i}.VPT_shallow")
    }
}

pub struct Vpt<B: AutodiffBackend> {
    config: VptConfig,
    /// Normalized text features of the training classes (frozen).
    train_text: Tensor<B, 2>,
}

impl<B: AutodiffBackend> Vpt<B> {
    /// The method and its initial prompts.
    pub fn new(
        config: VptConfig,
        clip: &Clip<B>,
        tok: &ClipTokenizer,
        classnames: &[String],
        seed: u64,
    ) -> Result<(Self, VisualPrompts<B>)> {
        let layers = clip.vision_model.encoder.layers.len();
        if config.depth > layers {
            return Err(Error::Config(format!(
                "vpt: depth {} exceeds the vision encoder's {layers} layers",
                config.depth
            )));
        }
        let device = clip.logit_scale.val().device();
        let width = clip.vision_model.class_embedding.dims()[0];
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let layers = (0..config.depth)
            .map(|_| {
                let data = TensorData::new(
                    normal(&mut rng, config.n_ctx * width, config.init_std),
                    [1, config.n_ctx, width],
                );
                Param::from_tensor(Tensor::<B, 3>::from_data(data, &device).require_grad())
            })
            .collect();
        let train_text = class_features(clip, tok, std::slice::from_ref(&config.text_template), classnames)?.detach();
        Ok((Self { config, train_text }, VisualPrompts { layers }))
    }
}

impl<B: AutodiffBackend> SgdMethod<B> for Vpt<B> {
    type Module = VisualPrompts<B>;

    fn loss(&self, prompts: &VisualPrompts<B>, clip: &Clip<B>, batch: Batch<B>) -> Result<(f32, GradientsParams)> {
        let img = clip.encode_image(batch.pixels, &prompts.inputs(self.config.f16_prompt_tokens));
        let logits = clip.logits_per_image(img, self.train_text.clone());
        let n = logits.dims()[1];
        let loss = cross_entropy_with_logits(logits, batch.labels.one_hot(n).float());
        Ok(loss_grads(loss, prompts))
    }

    fn scorer(
        &self,
        prompts: &VisualPrompts<B::InnerBackend>,
        clip: &Clip<B::InnerBackend>,
        tok: &ClipTokenizer,
        classes: &ClassSet,
    ) -> Result<Scorer<B::InnerBackend>> {
        let text = class_features(
            clip,
            tok,
            std::slice::from_ref(&self.config.text_template),
            classes.names,
        )?;
        let (prompts, f16) = (prompts.clone(), self.config.f16_prompt_tokens);
        Ok(Scorer::Pixels(Box::new(move |clip, pixels| {
            clip.logits_per_image(clip.encode_image(pixels, &prompts.inputs(f16)), text.clone())
        })))
    }

    fn prompt_params(&self, prompts: &VisualPrompts<B>) -> Vec<PromptParam> {
        prompts
            .layers
            .iter()
            .enumerate()
            .map(|(i, p)| PromptParam {
                id: p.id,
                name: layer_name(i),
                shape: p.dims().to_vec(),
                role: PromptRole::Vision(i),
            })
            .collect()
    }

    fn artifact(&self, prompts: &VisualPrompts<B>) -> PromptArtifact {
        prompts
            .layers
            .iter()
            .enumerate()
            .map(|(i, p)| (layer_name(i), host_tensor(p.val().inner())))
            .collect()
    }

    fn load(&self, prompts: &VisualPrompts<B>, artifact: &PromptArtifact) -> Result<VisualPrompts<B>> {
        let device = self.train_text.device();
        let mut layers = Vec::new();
        for (i, p) in prompts.layers.iter().enumerate() {
            let name = layer_name(i);
            let (shape, data) = artifact
                .get(&name)
                .ok_or_else(|| Error::Input(format!("vpt artifact has no `{name}`")))?;
            let cur = p.dims();
            if shape.as_slice() != cur {
                return Err(Error::Input(format!(
                    "vpt artifact `{name}` has shape {shape:?}, this prompt needs {cur:?}"
                )));
            }
            let t = Tensor::<B, 3>::from_data(TensorData::new(data.clone(), cur), &device);
            layers.push(Param::from_tensor(t.require_grad()));
        }
        Ok(VisualPrompts { layers })
    }
}
