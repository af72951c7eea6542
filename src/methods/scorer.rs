//! What a trained method evaluates with: logits `[images, classes]` against the class set it was
//! prepared for. A scorer that reads only the frozen image encoder's features can be served a test
//! split's cached features; one that prompts the image encoder needs the pixels.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

use crate::clip::Clip;

/// A function of a batch's frozen image features or pixels to its logits.
type Head<B, const D: usize> = Box<dyn Fn(&Clip<B>, Tensor<B, D>) -> Tensor<B, 2>>;

pub enum Scorer<B: Backend> {
    /// Cosine logits (`logit_scale` applied) of the frozen image features against normalized class
    /// features `[classes, e]`: zero-shot CLIP, CoOp, KgCoOp and ProGrad.
    Classes(Tensor<B, 2>),
    /// A linear head `x W + b` on the frozen image features, computed in f32 (the fit is f32),
    /// the features normalized first if `normalize`: the linear probe. `weight` is `[dim, classes]`.
    Linear {
        weight: Tensor<B, 2>,
        bias: Tensor<B, 1>,
        normalize: bool,
    },
    /// Another function of the frozen image features (CoCoOp's image-conditioned prompts).
    Features(Head<B, 2>),
    /// Encodes the normalized pixels itself: the image encoder is prompted (VPT, MaPLe, IVLP,
    /// PromptSRC), so cached features cannot serve it.
    Pixels(Head<B, 4>),
}

impl<B: Backend> Scorer<B> {
    /// Whether the scorer reads only the frozen image encoder's features.
    pub fn reads_frozen_features(&self) -> bool {
        !matches!(self, Scorer::Pixels(_))
    }

    /// Logits of normalized pixels.
    pub fn logits(&self, clip: &Clip<B>, pixels: Tensor<B, 4>) -> Tensor<B, 2> {
        match self {
            Scorer::Pixels(f) => f(clip, pixels),
            _ => self
                .logits_from_features(clip, clip.encode_image(pixels, &Default::default()))
                .expect("every other scorer reads frozen features"),
        }
    }

    /// Logits of the frozen image encoder's features (`Clip::encode_image` of normalized pixels);
    /// `None` for a scorer that prompts the image encoder.
    pub fn logits_from_features(&self, clip: &Clip<B>, features: Tensor<B, 2>) -> Option<Tensor<B, 2>> {
        Some(match self {
            Scorer::Classes(text) => clip.logits_per_image(features, text.clone()),
            Scorer::Linear {
                weight,
                bias,
                normalize,
            } => {
                let x = if *normalize {
                    Clip::normalize(features)
                } else {
                    features
                };
                x.cast(DType::F32).matmul(weight.clone()) + bias.clone().unsqueeze::<2>()
            }
            Scorer::Features(f) => f(clip, features),
            Scorer::Pixels(_) => return None,
        })
    }
}
