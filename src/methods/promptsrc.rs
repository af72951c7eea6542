//! PromptSRC (Khattak et al., ICCV'23): IVLP prompts with self-regulating constraints and Gaussian
//! prompt aggregation (the model is `multimodal.rs`'s).

use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use super::ivlp::IvlpConfig;
use super::multimodal::MultiModal;
use super::optim::{Epochs, SgdConfig};
use super::spec::{BuildInputs, MethodSpec, Training};
use super::{PromptMethod, PromptRole};
use crate::error::Result;

/// PromptSRC (Khattak et al., ICCV'23): IVLP prompts trained with self-regulating constraints
/// towards the frozen model — L1 between prompted and frozen text features (`text_loss_weight`, 25)
/// and image features (`image_loss_weight`, 10), and a KL between prompted and frozen logits — and
/// Gaussian prompt aggregation: the evaluated prompt is the average of each epoch's prompt weighted
/// by N(epoch; `gpa_mean`, `gpa_std`²), normalized (mean 15, std 1 for 20 epochs in the paper).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptSrcConfig {
    pub n_ctx_text: usize,
    pub ctx_init: String,
    pub text_depth: usize,
    pub n_ctx_vision: usize,
    pub vision_depth: usize,
    pub init_std: f64,
    pub text_loss_weight: f64,
    pub image_loss_weight: f64,
    /// Templates whose mean frozen text feature anchors each class (the reference averages the
    /// unnormalized features of its `IMAGENET_TEMPLATES`, then normalizes).
    pub text_templates: Vec<String>,
    pub gpa_mean: f64,
    pub gpa_std: f64,
    pub batch_size: usize,
    pub epochs: Epochs,
    pub optim: SgdConfig,
}

impl PromptSrcConfig {
    pub fn ivlp(&self) -> IvlpConfig {
        IvlpConfig {
            n_ctx_text: self.n_ctx_text,
            ctx_init: self.ctx_init.clone(),
            text_depth: self.text_depth,
            n_ctx_vision: self.n_ctx_vision,
            vision_depth: self.vision_depth,
            init_std: self.init_std,
            batch_size: self.batch_size,
            epochs: self.epochs.clone(),
            optim: self.optim.clone(),
        }
    }
}

/// GPA's weight of each epoch (1-based e = 1 … epochs): the normal density at e, normalized.
pub fn gpa_weights(epochs: usize, mean: f64, std: f64) -> Vec<f64> {
    let pdf = |x: f64| (-(x - mean).powi(2) / (2.0 * std * std)).exp() / (std * (std::f64::consts::TAU).sqrt());
    let w: Vec<f64> = (1..=epochs).map(|e| pdf(e as f64)).collect();
    let sum: f64 = w.iter().sum();
    w.iter().map(|x| x / sum).collect()
}

impl MethodSpec for PromptSrcConfig {
    const PAPER_NAME: &'static str = "PromptSRC";

    fn validate(&self) -> std::result::Result<(), String> {
        if self.text_templates.is_empty() || self.text_templates.iter().any(|t| !t.contains("{}")) {
            return Err("text_templates must list templates with {} for the class name".into());
        }
        if !(self.gpa_std > 0.0 && self.text_loss_weight >= 0.0 && self.image_loss_weight >= 0.0) {
            return Err("gpa_std > 0 and non-negative loss weights are required".into());
        }
        self.ivlp().validate()
    }

    fn prompt_layout(&self) -> Option<Vec<(PromptRole, usize)>> {
        self.ivlp().prompt_layout()
    }

    fn training(&self) -> Training<'_> {
        Training::sgd(&self.optim, &self.epochs, self.batch_size)
    }

    fn build<B: AutodiffBackend>(&self, i: &BuildInputs<B>) -> Result<Box<dyn PromptMethod<B>>> {
        Ok(Box::new(MultiModal::promptsrc(
            self,
            i.clip,
            i.tok,
            i.classnames,
            i.seed,
        )?))
    }
}
