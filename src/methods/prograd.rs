//! ProGrad (Zhu et al., ICCV'23): CoOp's prompt learner with prompt-aligned gradients.

use super::coop::Prior;
use super::coop_family::CoopFamily;
use super::spec::EncoderUse;
use super::text_prompts::{Context, ContextSource, TransferTemplate};

crate::coop_family!(
    /// ProGrad: CoOp whose cross-entropy gradient is projected off the zero-shot distillation
    /// gradient where they conflict; the paper's `LOSS.LAMBDA` = 1.0 and `LOSS.T` = 1.0.
    ProGradConfig {
        lambda: f64,
        temperature: f64,
        /// "template": upstream's context (16 slots, zeros, then the dataset's ProGrad template
        /// less " {}."); "ctx_init": CoOp's.
        ctx_source: ContextSource,
        /// With `ctx_source = "template"` (and only then): whose template a prompt evaluated on a
        /// transfer target takes, "target" (upstream's) or "source".
        #[serde(default, skip_serializing_if = "Option::is_none")]
        transfer_template: Option<TransferTemplate>,
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

    fn context(&self) -> Context<'_> {
        match (self.ctx_source, self.transfer_template) {
            (ContextSource::Template, Some(on_targets)) => Context::Template {
                templates: &self.prior_templates,
                on_targets,
            },
            // `check_own` refuses a template context without its transfer rule; unchecked, it
            // keeps the training words everywhere, as before the rule existed.
            (ContextSource::Template, None) => Context::Template {
                templates: &self.prior_templates,
                on_targets: TransferTemplate::Source,
            },
            (ContextSource::CtxInit, _) => Context::CtxInit,
        }
    }

    fn check_own(&self) -> std::result::Result<(), String> {
        if !(self.lambda >= 0.0 && self.temperature > 0.0) {
            return Err("lambda >= 0 and temperature > 0 are required".into());
        }
        match (self.ctx_source, self.transfer_template) {
            (ContextSource::Template, None) => Err(
                "ctx_source = \"template\" needs transfer_template = \"target\" (upstream's: a prompt evaluated on \
                 another dataset takes that dataset's template words) or \"source\""
                    .into(),
            ),
            (ContextSource::CtxInit, Some(_)) => Err(
                "transfer_template applies to ctx_source = \"template\" only: a ctx_init context has no dataset words"
                    .into(),
            ),
            _ => Ok(()),
        }
    }
}
