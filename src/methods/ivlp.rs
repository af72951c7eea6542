//! IVLP: independent deep text and visual prompts, MaPLe's baseline (the model is
//! `multimodal.rs`'s).

use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use super::multimodal::{check, MultiModal};
use super::optim::{Epochs, SgdConfig};
use super::spec::{layers, BuildInputs, EncoderUse, MethodSpec, Training};
use super::{PromptMethod, PromptRole};
use crate::error::Result;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
/// IVLP's suite entry.
pub struct IvlpConfig {
    pub n_ctx_text: usize,
    pub ctx_init: String,
    pub text_depth: usize,
    pub n_ctx_vision: usize,
    pub vision_depth: usize,
    pub init_std: f64,
    pub batch_size: usize,
    pub epochs: Epochs,
    pub optim: SgdConfig,
}

impl MethodSpec for IvlpConfig {
    const PAPER_NAME: &'static str = "IVLP";
    const ENCODERS: EncoderUse = EncoderUse::BOTH_PROMPTS;

    fn validate(&self) -> std::result::Result<(), String> {
        check(
            self.n_ctx_text.min(self.n_ctx_vision),
            &[self.text_depth, self.vision_depth],
            self.batch_size,
            &self.epochs,
            &self.optim,
        )
    }

    fn prompt_layout(&self) -> Option<Vec<(PromptRole, usize)>> {
        Some(layers(
            (self.n_ctx_text, self.text_depth),
            (self.n_ctx_vision, self.vision_depth),
        ))
    }

    fn training(&self) -> Training<'_> {
        Training::sgd(&self.optim, &self.epochs, self.batch_size)
    }

    fn build<B: AutodiffBackend>(&self, i: &BuildInputs<B>) -> Result<Box<dyn PromptMethod<B>>> {
        Ok(Box::new(MultiModal::ivlp(self, i.clip, i.tok, i.classnames, i.seed)?))
    }
}
