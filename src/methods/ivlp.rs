//! IVLP: independent deep text and visual prompts, MaPLe's baseline (the model is
//! `multimodal.rs`'s).

use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use super::multimodal::{check, Coupling, MultiModal, MultiModalPrompts};
use super::optim::{Epochs, SgdConfig};
use super::spec::{layers, BuildInputs, Builder, EncoderUse, MethodSpec, Training};
use super::PromptRole;
use crate::clip::{Clip, ClipTokenizer};
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

    fn build<B: AutodiffBackend, V: Builder<B>>(&self, i: &BuildInputs<B>, to: V) -> Result<V::Out> {
        let (method, prompts) = model(self, i.clip, i.tok, i.classnames, i.seed)?;
        Ok(to.sgd(method, prompts))
    }
}

/// IVLP's model and initial prompts (PromptSRC's too).
pub(super) fn model<B: AutodiffBackend>(
    c: &IvlpConfig,
    clip: &Clip<B>,
    tok: &ClipTokenizer,
    classnames: &[String],
    seed: u64,
) -> Result<(MultiModal<B>, MultiModalPrompts<B>)> {
    let common = (c.n_ctx_text, c.ctx_init.as_str(), c.text_depth, c.init_std);
    let coupling = Coupling::Independent {
        n_vision: c.n_ctx_vision,
        vision_depth: c.vision_depth,
    };
    MultiModal::new("ivlp", common, coupling, clip, tok, classnames, seed)
}
