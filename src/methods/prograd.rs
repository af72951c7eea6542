//! ProGrad (Zhu et al., ICCV'23): CoOp's prompt learner with prompt-aligned gradients.

use burn::tensor::backend::AutodiffBackend;

use super::coop::{CoOp, Prior};
use super::spec::{BuildInputs, MethodSpec, Training};
use super::{PromptMethod, PromptRole};
use crate::error::Result;

crate::coop_family!(
    /// ProGrad: CoOp whose cross-entropy gradient is projected off the zero-shot distillation
    /// gradient where they conflict; the paper's `LOSS.LAMBDA` = 1.0 and `LOSS.T` = 1.0.
    ProGradConfig {
        lambda: f64,
        temperature: f64,
    }
);

impl ProGradConfig {
    pub fn prior(&self) -> Prior {
        Prior::Projected {
            lambda: self.lambda,
            temperature: self.temperature,
        }
    }
}

impl MethodSpec for ProGradConfig {
    const PAPER_NAME: &'static str = "ProGrad";

    fn validate(&self) -> std::result::Result<(), String> {
        if !(self.lambda >= 0.0 && self.temperature > 0.0) {
            return Err("lambda >= 0 and temperature > 0 are required".into());
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
