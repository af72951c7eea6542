//! MaPLe (Khattak et al., CVPR'23): deep text prompts with visual prompts projected from them
//! (the model is `multimodal.rs`'s).

use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use super::multimodal::{check, Coupling, MultiModal};
use super::optim::{Epochs, SgdConfig};
use super::spec::{layers, BuildInputs, Builder, EncoderUse, MethodSpec, Training};
use super::PromptRole;
use crate::error::Result;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
/// MaPLe's suite entry.
pub struct MapleConfig {
    /// Text context tokens (and visual tokens, projected from them).
    pub n_ctx: usize,
    /// Init phrase of the text context ("" = N(0, init_std²)); the prompt is `"{ctx_init} {name}."`.
    pub ctx_init: String,
    /// Layers with prompts, on both sides (9 in the paper; 3 in its cross-dataset setting).
    pub depth: usize,
    pub init_std: f64,
    pub batch_size: usize,
    pub epochs: Epochs,
    pub optim: SgdConfig,
}

impl MethodSpec for MapleConfig {
    const PAPER_NAME: &'static str = "MaPLe";
    const ENCODERS: EncoderUse = EncoderUse::BOTH_PROMPTS;

    fn validate(&self) -> std::result::Result<(), String> {
        check(self.n_ctx, &[self.depth], self.batch_size, &self.epochs, &self.optim)
    }

    fn prompt_layout(&self) -> Option<Vec<(PromptRole, usize)>> {
        Some(layers((self.n_ctx, self.depth), (0, 0)))
    }

    fn training(&self) -> Training<'_> {
        Training::sgd(&self.optim, &self.epochs, self.batch_size)
    }

    fn build<B: AutodiffBackend, V: Builder<B>>(&self, i: &BuildInputs<B>, to: V) -> Result<V::Out> {
        let common = (self.n_ctx, self.ctx_init.as_str(), self.depth, self.init_std);
        let (method, prompts) = MultiModal::new("maple", common, Coupling::Maple, i.clip, i.tok, i.classnames, i.seed)?;
        Ok(to.sgd(method, prompts))
    }
}
