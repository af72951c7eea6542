//! KgCoOp (Yao et al., CVPR'23): CoOp's prompt learner plus a knowledge-guided prior.

use burn::tensor::backend::AutodiffBackend;

use super::coop::{CoOp, Prior};
use super::spec::{BuildInputs, MethodSpec, Training};
use super::{PromptMethod, PromptRole};
use crate::error::Result;

crate::coop_family!(
    /// KgCoOp: CoOp plus `weight` × (1 − mean cosine between learned and hand-crafted class
    /// features); the paper's λ is 8.0 (`TRAINER.COOP.W`).
    KgCoOpConfig {
        weight: f64,
    }
);

impl KgCoOpConfig {
    pub fn prior(&self) -> Prior {
        Prior::KnowledgeGuided { weight: self.weight }
    }
}

impl MethodSpec for KgCoOpConfig {
    const PAPER_NAME: &'static str = "KgCoOp";

    fn validate(&self) -> std::result::Result<(), String> {
        if !(self.weight >= 0.0) {
            return Err("weight must be >= 0".into());
        }
        self.coop().validate()
    }

    fn prompt_layout(&self) -> Option<Vec<(PromptRole, usize)>> {
        self.coop().prompt_layout()
    }

    fn training(&self) -> Training<'_> {
        Training::sgd(&self.optim, &self.epochs, self.batch_size)
    }

    fn build<B: AutodiffBackend>(&self, i: &BuildInputs<B>) -> Result<Box<dyn PromptMethod<B>>> {
        let m = CoOp::with_prior(
            self.coop(),
            self.prior(),
            i.clip,
            i.tok,
            i.classnames,
            i.template,
            i.seed,
        )?;
        Ok(Box::new(m))
    }
}
