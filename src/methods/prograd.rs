//! ProGrad (Zhu et al., ICCV'23): CoOp's prompt learner with prompt-aligned gradients.

use super::coop::Prior;
use super::coop_family::CoopFamily;
use super::spec::EncoderUse;
use super::text_prompts::ContextSource;

crate::coop_family!(
    /// ProGrad: CoOp whose cross-entropy gradient is projected off the zero-shot distillation
    /// gradient where they conflict; the paper's `LOSS.LAMBDA` = 1.0 and `LOSS.T` = 1.0.
    ProGradConfig {
        lambda: f64,
        temperature: f64,
        /// "template": upstream's context (16 slots, zeros, then the dataset's ProGrad template
        /// less " {}."); "ctx_init": CoOp's.
        ctx_source: ContextSource,
    }
);

impl CoopFamily for ProGradConfig {
    const PAPER_NAME: &'static str = "ProGrad";
    const ENCODERS: EncoderUse = EncoderUse {
        second_text_backward: true,
        ..EncoderUse::TEXT_PROMPTS
    };

    fn prior(&self) -> Prior {
        Prior::Projected {
            lambda: self.lambda,
            temperature: self.temperature,
        }
    }

    fn context_source(&self) -> ContextSource {
        self.ctx_source
    }

    fn check_own(&self) -> std::result::Result<(), String> {
        if !(self.lambda >= 0.0 && self.temperature > 0.0) {
            return Err("lambda >= 0 and temperature > 0 are required".into());
        }
        Ok(())
    }
}
