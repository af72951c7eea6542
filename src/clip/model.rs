//! The CLIP backbone. It knows no prompt-tuning method: methods reach it only through explicit
//! inputs — token embeddings, per-layer replacement tokens (deep prompts) and extra vision tokens.
//! Field names mirror the HF checkpoint keys, which are what [`WeightSource`] is asked for. The
//! towers are `text.rs` and `vision.rs`, their shared blocks `blocks.rs`.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

pub(crate) use super::blocks::Encoder;
use super::blocks::*;
pub use super::blocks::{DeepPrompts, PromptSlot};
use super::config::ClipConfig;
pub use super::text::ids_tensor;
pub(crate) use super::text::TextTransformer;
use super::tokenizer::ClipTokenizer;
pub use super::vision::VisionPrompts;
pub(crate) use super::vision::VisionTransformer;
use super::weights::WeightSource;
use crate::error::Result;

#[derive(Module, Debug)]
pub struct Clip<B: Backend> {
    pub text_model: TextTransformer<B>,
    pub vision_model: VisionTransformer<B>,
    /// Stored `[width, embed]`: features are `pooled @ text_projection`.
    pub text_projection: Param<Tensor<B, 2>>,
    pub visual_projection: Param<Tensor<B, 2>>,
    pub logit_scale: Param<Tensor<B, 1>>,
}

impl ClipConfig {
    /// Builds the backbone from `src` (a checkpoint or a random init) and checks nothing in the
    /// source was left unused.
    pub fn init<B: Backend>(&self, src: &mut dyn WeightSource, device: &B::Device) -> Result<Clip<B>> {
        self.check()?;
        let e = self.projection_dim;
        let proj = |src: &mut dyn WeightSource, name: &str, w: usize| -> Result<Param<Tensor<B, 2>>> {
            Ok(Param::from_tensor(transposed(src, name, w, e, device)?))
        };
        let clip = Clip {
            text_model: TextTransformer::init(&self.text, src, device)?,
            vision_model: VisionTransformer::init(&self.vision, src, device)?,
            text_projection: proj(src, "text_projection.weight", self.text.hidden_size)?,
            visual_projection: proj(src, "visual_projection.weight", self.vision.hidden_size)?,
            logit_scale: param(src, "logit_scale", [1], device)?,
        };
        src.finish()?;
        Ok(clip)
    }
}

fn l2_normalize<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let n = x.clone().powf_scalar(2.0).sum_dim(1).sqrt();
    x / n
}

impl<B: Backend> Clip<B> {
    /// Marks every backbone parameter as constant: under autodiff no gradient reaches them, so no
    /// optimizer can move them. Prompt-tuning methods train only their own tensors.
    pub fn freeze(self) -> Self {
        self.no_grad()
    }

    /// The float format the backbone's weights are stored (and computed) in.
    pub fn dtype(&self) -> DType {
        self.logit_scale.val().dtype()
    }

    /// The same backbone at f32: itself (a clone sharing the weights) when it is f32 already, else
    /// every weight cast up. Upstream computes some frozen references in fp32 inside an fp16 run
    /// (ProGrad's zero-shot teacher: `CLIP` with `clip_model.float()`; PromptSRC's text anchors:
    /// `load_clip_to_cpu(cfg, True).float()`); their fp32 weights are the fp16 checkpoint's values
    /// widened, which is what casting this one's gives.
    pub fn at_f32(&self) -> Self {
        struct Widen;
        impl<B: Backend> ModuleMapper<B> for Widen {
            fn map_float<const D: usize>(&mut self, p: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
                let (id, t, mapper) = p.consume();
                Param::from_mapped_value(id, at_dtype(t, DType::F32), mapper)
            }
        }
        if self.dtype() == DType::F32 {
            self.clone()
        } else {
            self.clone().map(&mut Widen)
        }
    }

    /// Projected (not normalized) image features.
    pub(crate) fn image_features(&self, pooled: Tensor<B, 2>) -> Tensor<B, 2> {
        pooled.matmul(self.visual_projection.val())
    }

    /// Projected (not normalized) text features.
    /// Projected (not normalized) features of `texts`: tokenized by `tok`, run only up to the last
    /// EOS (`TextTransformer::forward_pooled`), pooled and projected.
    pub fn encode_text(&self, tok: &ClipTokenizer, texts: &[impl AsRef<str>]) -> Result<Tensor<B, 2>> {
        let device = self.logit_scale.val().device();
        let ids = tok.encode_padded(texts)?;
        let eos = self.text_model.eos_positions(&ids);
        let embeds = self.text_model.embed_tokens(ids_tensor(&ids, &device));
        Ok(self.text_features(self.text_model.forward_pooled(embeds, &eos, None)))
    }

    pub fn text_features(&self, pooled: Tensor<B, 2>) -> Tensor<B, 2> {
        pooled.matmul(self.text_projection.val())
    }

    pub fn encode_image(&self, pixels: Tensor<B, 4>, prompts: &VisionPrompts<B>) -> Tensor<B, 2> {
        self.image_features(self.vision_model.forward(pixels, prompts, false).pooled)
    }

    /// exp(logit_scale): what cosine similarities are multiplied by.
    pub(crate) fn logit_scale_value(&self) -> f32 {
        use burn::tensor::ElementConversion;
        self.logit_scale.val().exp().into_scalar().elem()
    }

    /// The same model with `logit_scale = ln(scale)` (temperature calibration).
    pub(crate) fn with_logit_scale(mut self, scale: f64) -> Self {
        let device = self.logit_scale.val().device();
        let v = burn::tensor::TensorData::new(vec![scale.ln() as f32], [1]);
        self.logit_scale = Param::from_tensor(Tensor::from_data(v, &device));
        self
    }

    /// `logits_per_image = exp(logit_scale) · norm(image) · norm(text)ᵀ`, `[images, texts]`.
    pub fn logits_per_image(&self, image_features: Tensor<B, 2>, text_features: Tensor<B, 2>) -> Tensor<B, 2> {
        let scale = self.logit_scale.val().exp().unsqueeze::<2>();
        l2_normalize(image_features).matmul(l2_normalize(text_features).transpose()) * scale
    }

    pub fn normalize(x: Tensor<B, 2>) -> Tensor<B, 2> {
        l2_normalize(x)
    }
}
