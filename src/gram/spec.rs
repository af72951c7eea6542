//! How a suite declares GRAM: `[gram.NAME]` meta-training runs (corpus, seed, every training
//! choice) and `kind = "gram"` methods naming a host method and a meta-training run, with the
//! ablation switches.

use serde::{Deserialize, Serialize};

use super::MetaTrainConfig;

/// Where the meta-training pairs come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum CorpusSpec {
    /// The embedded world's corpus: `size` seeded pairs at the world's image size.
    World { size: usize },
    /// An open_clip-style CSV/TSV: `path` (`${VAR}` expands), the two column names, the separator.
    Csv {
        path: String,
        image_column: String,
        caption_column: String,
        separator: String,
    },
}

/// One meta-training run (`[gram.NAME]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GramSpec {
    pub seed: u64,
    pub corpus: CorpusSpec,
    pub train: MetaTrainConfig,
}

impl GramSpec {
    pub fn validate(&self) -> std::result::Result<(), String> {
        if let CorpusSpec::Csv { separator, .. } = &self.corpus {
            if separator.chars().count() != 1 {
                return Err("corpus.csv.separator must be one character (\"\\t\" for TSV)".into());
            }
        }
        self.train.validate()
    }
}

/// A host method with GRAM (`kind = "gram"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GramConfig {
    /// The host: another method of the suite with prompts (CoOp, KgCoOp, ProGrad, CoCoOp, VPT,
    /// MaPLe, IVLP, PromptSRC). IVLP on a run that learns text and vision prompts is UNIGRAM.
    pub host: String,
    /// The `[gram.NAME]` run whose θ₀ and ψ_φ it uses.
    pub meta: String,
    /// Start the host's prompt from θ₀ (off: the host's own init).
    pub init: bool,
    /// Pass prompt gradients through ψ_φ (off: raw gradients).
    pub regulate: bool,
}
