//! The vision tower: patch embedding, class token, the encoder and pooling; prompts enter as extra
//! vision tokens (shallow and deep).

use burn::module::{Module, Param};
use burn::nn::LayerNorm;
use burn::tensor::backend::Backend;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::Tensor;

use super::blocks::*;
use super::config::ClipVisionConfig;
use super::weights::WeightSource;
use crate::error::Result;

/// Extra vision tokens. `shallow` (`[1|batch, n, width]`) is appended after the patch tokens before
/// `ln_pre`; `deep` replaces the last tokens entering later blocks.
#[derive(Clone, Debug)]
pub struct VisionPrompts<B: Backend> {
    pub shallow: Option<Tensor<B, 3>>,
    pub deep: Vec<Option<Tensor<B, 3>>>,
}

impl<B: Backend> Default for VisionPrompts<B> {
    fn default() -> Self {
        Self {
            shallow: None,
            deep: Vec::new(),
        }
    }
}

pub struct VisionOutput<B: Backend> {
    /// Encoder output before `post_layernorm`, `[batch, tokens, width]`.
    pub last_hidden: Tensor<B, 3>,
    /// `post_layernorm` of the class token, `[batch, width]`.
    pub pooled: Tensor<B, 2>,
    pub hidden_states: Vec<Tensor<B, 3>>,
}

#[derive(Module, Debug)]
pub struct VisionTransformer<B: Backend> {
    pub class_embedding: Param<Tensor<B, 1>>,
    pub patch_embedding: Param<Tensor<B, 4>>,
    pub position_embedding: Param<Tensor<B, 2>>,
    pub pre_layrnorm: LayerNorm<B>,
    pub encoder: Encoder<B>,
    pub post_layernorm: LayerNorm<B>,
    pub patch_size: usize,
    pub image_size: usize,
}

impl<B: Backend> VisionTransformer<B> {
    pub fn init(cfg: &ClipVisionConfig, src: &mut dyn WeightSource, device: &B::Device) -> Result<Self> {
        let w = cfg.hidden_size;
        let p = cfg.patch_size;
        Ok(Self {
            class_embedding: param(src, "vision_model.embeddings.class_embedding", [w], device)?,
            patch_embedding: param(
                src,
                "vision_model.embeddings.patch_embedding.weight",
                [w, 3, p, p],
                device,
            )?,
            position_embedding: param(
                src,
                "vision_model.embeddings.position_embedding.weight",
                [cfg.num_positions(), w],
                device,
            )?,
            pre_layrnorm: layer_norm(src, "vision_model.pre_layrnorm", w, cfg.layer_norm_eps, device)?,
            encoder: Encoder::init(
                src,
                "vision_model",
                BlockShape {
                    width: w,
                    mlp: cfg.intermediate_size,
                    layers: cfg.num_hidden_layers,
                    heads: cfg.num_attention_heads,
                    act: cfg.hidden_act,
                    eps: cfg.layer_norm_eps,
                },
                device,
            )?,
            post_layernorm: layer_norm(src, "vision_model.post_layernorm", w, cfg.layer_norm_eps, device)?,
            patch_size: p,
            image_size: cfg.image_size,
        })
    }

    /// `pixels`: `[batch, 3, image_size, image_size]`, already normalized.
    pub fn forward(&self, pixels: Tensor<B, 4>, prompts: &VisionPrompts<B>, keep_hidden: bool) -> VisionOutput<B> {
        let [b, c, h, wd] = pixels.dims();
        assert!(
            c == 3 && h == self.image_size && wd == self.image_size,
            "pixels {:?} do not match the model's [_, 3, {s}, {s}]",
            [b, c, h, wd],
            s = self.image_size
        );
        // The tower's own format, as CLIP's `image.type(self.dtype)`: pixels stay f32 until here, so a
        // teacher at f32 inside a cell at f16 sees the same values as upstream's.
        let pixels = super::blocks::at_dtype(pixels, self.patch_embedding.val().dtype());
        let p = self.patch_size;
        let opts = ConvOptions::new([p, p], [0, 0], [1, 1], 1);
        let patches = conv2d(pixels, self.patch_embedding.val(), None, opts); // [b, w, g, g]
        let [_, w, g, _] = patches.dims();
        let patches = patches.reshape([b, w, g * g]).swap_dims(1, 2);
        let cls = self.class_embedding.val().reshape([1, 1, w]).expand([b, 1, w]);
        let mut x = Tensor::cat(vec![cls, patches], 1) + self.position_embedding.val().unsqueeze::<3>();
        if let Some(s) = &prompts.shallow {
            let [pb, n, _] = s.dims();
            let s = if pb == b {
                s.clone()
            } else {
                s.clone().expand([b, n, w])
            };
            x = Tensor::cat(vec![x, s], 1);
        }
        let x = super::blocks::norm(&self.pre_layrnorm, x);
        let deep = DeepPrompts {
            slot: PromptSlot::Tail,
            layers: prompts.deep.clone(),
        };
        let mut hidden = Vec::new();
        let has_deep = prompts.deep.iter().any(Option::is_some);
        let x = self
            .encoder
            .forward(x, false, has_deep.then_some(&deep), keep_hidden.then_some(&mut hidden));
        let cls_out = x.clone().narrow(1, 0, 1).reshape([b, w]);
        VisionOutput {
            pooled: super::blocks::norm(&self.post_layernorm, cls_out),
            last_hidden: x,
            hidden_states: hidden,
        }
    }
}
