//! PromptSRC's Gaussian prompt aggregation (GPA): the evaluated prompt is `Σ_e w_e · prompt_e` over
//! the epochs, `w` the normalized normal density at each epoch.
//!
//! Upstream (PromptSRC trainers/promptsrc.py:322-335, `state_dict_weighting` and `state_dict_add`
//! with `prompt_only=False`) aggregates the model's whole state dict, not only the prompts, in each
//! tensor's own format, and loads the aggregate before the final test. For the frozen backbone every
//! epoch's term is the same tensor, so the aggregate is `x` altered by rounding:
//! `fold(x) = ((x·w₁) + x·w₂) + … ` with each product and sum rounded to the tensor's format. In an
//! fp16 run that format is fp16 for what CLIP's `convert_weights` halves (convolutions, linear
//! layers, attention projections, the two output projections) and fp32 for the rest (layer norms,
//! embeddings, the logit scale). [`whole_model`] reproduces that; [`Fold`] is the arithmetic, for
//! the prompts too.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};

use crate::clip::Clip;

/// GPA's weight of each epoch (1-based e = 1 … epochs): the normal density at e, normalized.
pub fn gpa_weights(epochs: usize, mean: f64, std: f64) -> Vec<f64> {
    let pdf = |x: f64| (-(x - mean).powi(2) / (2.0 * std * std)).exp() / (std * (std::f64::consts::TAU).sqrt());
    let w: Vec<f64> = (1..=epochs).map(|e| pdf(e as f64)).collect();
    let sum: f64 = w.iter().sum();
    w.iter().map(|x| x / sum).collect()
}

/// Rounding of GPA's products and sums: to the format the tensor is stored in, as torch computes
/// `half_tensor * python_float` (in f32, rounded once) and `half + half`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fold(DType);

impl Fold {
    /// Rounding to `dtype` (f32, f16 or bf16; any other format folds at f32).
    pub fn at(dtype: DType) -> Self {
        Self(dtype)
    }

    fn round(self, x: f32) -> f32 {
        match self.0 {
            DType::F16 => half::f16::from_f32(x).to_f32(),
            DType::BF16 => half::bf16::from_f32(x).to_f32(),
            _ => x,
        }
    }

    /// `x · w`, rounded.
    pub fn term(self, x: f32, w: f32) -> f32 {
        self.round(x * w)
    }

    /// `acc + term`, rounded.
    pub fn add(self, acc: f32, term: f32) -> f32 {
        self.round(acc + term)
    }

    /// `Σ_e w_e · x` in epoch order, every product and sum rounded: what aggregating a tensor that
    /// stayed `x` through every epoch gives.
    pub fn constant(self, x: f32, weights: &[f32]) -> f32 {
        let mut it = weights.iter();
        let first = it.next().map_or(0.0, |&w| self.term(x, w));
        it.fold(first, |acc, &w| self.add(acc, self.term(x, w)))
    }
}

/// `clip` as upstream's GPA leaves it after `epochs` with `weights`: every tensor folded
/// ([`Fold::constant`]) in its upstream format — the layer norms at f32 (and kept at f32 here,
/// where `blocks::norm` computes), the embeddings and logit scale at f32 then stored at the
/// backbone's format (upstream casts them to it where they are used), everything else at the
/// backbone's format. At f32 every tensor folds at f32: upstream alters an fp32 run's backbone too,
/// by f32 rounding.
pub fn whole_model<B: Backend>(clip: &Clip<B>, weights: &[f64]) -> Clip<B> {
    let weights: Vec<f32> = weights.iter().map(|&w| w as f32).collect();
    let mut m = Alter {
        weights,
        at: clip.dtype(),
        stack: Vec::new(),
    };
    clip.clone().map(&mut m)
}

/// The upstream-f32 tensors that CLIP's `convert_weights` leaves alone and PromptSRC's state dict
/// holds, by field name. Not the token embedding: the state dict holds the class-name rows taken
/// from it at the run's format (the `token_prefix`/`token_suffix` buffers, promptsrc.py:117,131-132).
const KEPT_F32: [&str; 3] = ["position_embedding", "class_embedding", "logit_scale"];

struct Alter {
    weights: Vec<f32>,
    at: DType,
    /// (field, the struct it is a field of) from the root to the tensor being mapped.
    stack: Vec<(String, String)>,
}

impl<B: Backend> ModuleMapper<B> for Alter {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack.push((name.to_string(), container_type.to_string()));
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.pop();
    }

    fn map_float<const D: usize>(&mut self, p: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (field, parent) = self.stack.last().cloned().unwrap_or_default();
        let layer_norm = parent == "Struct:LayerNorm";
        let (fold, store) = if layer_norm {
            (DType::F32, DType::F32)
        } else if KEPT_F32.contains(&field.as_str()) {
            (DType::F32, self.at)
        } else {
            (self.at, self.at)
        };
        let (id, t, mapper) = p.consume();
        let device = t.device();
        let dims = t.dims();
        let data = t.into_data().convert::<f32>();
        let fold = Fold::at(fold);
        let values: Vec<f32> = data
            .as_slice::<f32>()
            .expect("converted to f32")
            .iter()
            .map(|&x| fold.constant(x, &self.weights))
            .collect();
        let t = Tensor::<B, D>::from_data(TensorData::new(values, dims), (&device, store));
        Param::from_mapped_value(id, t, mapper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpa_weights_are_the_normalized_gaussian_over_epochs() {
        let w = gpa_weights(20, 15.0, 1.0);
        assert_eq!(w.len(), 20);
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        let top = w.iter().cloned().fold(0.0, f64::max);
        assert_eq!(w[14], top, "epoch 15 weighs most");
        assert!((w[13] - w[15]).abs() < 1e-15, "symmetric around the mean");
        assert!(w[0] < 1e-30);
    }

    #[test]
    fn folding_a_constant_alters_it_by_the_formats_rounding() {
        let w: Vec<f32> = gpa_weights(20, 15.0, 1.0).iter().map(|&w| w as f32).collect();
        let x = 0.123_456_78_f32;
        let f32_fold = Fold::at(DType::F32).constant(x, &w);
        assert!((f32_fold - x).abs() <= 4.0 * f32::EPSILON * x, "{f32_fold} vs {x}");
        let x16 = half::f16::from_f32(x).to_f32();
        let f16_fold = Fold::at(DType::F16).constant(x16, &w);
        assert!(
            (f16_fold - x16).abs() <= 4.0 * 2f32.powi(-11) * x16.abs(),
            "{f16_fold} vs {x16}"
        );
        // Tiny weights underflow in f16: those terms add nothing.
        assert_eq!(Fold::at(DType::F16).term(x16, 1e-30), 0.0);
        assert_eq!(
            Fold::at(DType::F16).add(1.0, 2f32.powi(-12)),
            1.0,
            "half an f16 ulp at 1 rounds to even"
        );
    }
}
