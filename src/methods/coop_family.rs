//! The suite entry shape of the CoOp-family methods (KgCoOp, ProGrad) that keep CoOp's prompt
//! learner and add a prior to its step: every CoOp field, flat and written out, plus the method's
//! own; and their shared spec parts.

#[macro_export]
#[doc(hidden)]
macro_rules! coop_family {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $f:ident : $t:ty),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            pub n_ctx: usize,
            pub ctx_init: String,
            pub init_std: f64,
            pub csc: bool,
            pub class_token_position: $crate::methods::ClassTokenPosition,
            pub batch_size: usize,
            pub epochs: $crate::methods::Epochs,
            pub optim: $crate::methods::SgdConfig,
            /// The prior's hand-crafted template by dataset, where the method's reference code
            /// uses another than the dataset's own (CoOp's CUSTOM_TEMPLATES); `{}` for none.
            pub prior_templates: std::collections::BTreeMap<String, String>,
            $($(#[$fm])* pub $f: $t,)*
        }

        impl $crate::methods::coop_family::FamilyFields for $name {
            fn coop(&self) -> $crate::methods::CoOpConfig {
                $crate::methods::CoOpConfig {
                    n_ctx: self.n_ctx,
                    ctx_init: self.ctx_init.clone(),
                    init_std: self.init_std,
                    csc: self.csc,
                    class_token_position: self.class_token_position,
                    batch_size: self.batch_size,
                    epochs: self.epochs.clone(),
                    optim: self.optim.clone(),
                }
            }

            fn prior_templates(&self) -> &std::collections::BTreeMap<String, String> {
                &self.prior_templates
            }

            fn schedule(&self) -> $crate::methods::Training<'_> {
                $crate::methods::Training::sgd(&self.optim, &self.epochs, self.batch_size)
            }
        }
    };
}

use burn::tensor::backend::AutodiffBackend;

use super::coop::{CoOp, CoOpConfig, Prior};
use super::spec::{BuildInputs, Builder, EncoderUse, MethodSpec, Training};
use super::text_prompts::{ClassTokenPosition, Context};
use super::PromptRole;
use crate::error::Result;

/// What `coop_family!` generates: the CoOp part of the entry and its schedule.
pub(crate) trait FamilyFields {
    /// The CoOp prompt learner's part of the config.
    fn coop(&self) -> CoOpConfig;
    fn prior_templates(&self) -> &std::collections::BTreeMap<String, String>;
    fn schedule(&self) -> Training<'_>;
}

/// A CoOp-family method: CoOp's prompt learner and schedule plus a prior on its step. Its spec
/// (layout, training, build) is CoOp's with the prior; the method adds its name and own checks.
pub(crate) trait CoopFamily: FamilyFields {
    const PAPER_NAME: &'static str;
    /// CoOp's: text prompts, the image encoder frozen (ProGrad adds its second text backward).
    const ENCODERS: EncoderUse = EncoderUse::TEXT_PROMPTS;
    fn prior(&self) -> Prior;
    /// Where the context comes from (CoOp's `ctx_init` unless the method says otherwise).
    fn context(&self) -> Context<'_> {
        Context::CtxInit
    }
    /// The method's own fields (CoOp's are checked as CoOp's).
    fn check_own(&self) -> std::result::Result<(), String>;
}

impl<T: CoopFamily> MethodSpec for T {
    const PAPER_NAME: &'static str = <T as CoopFamily>::PAPER_NAME;
    const ENCODERS: EncoderUse = <T as CoopFamily>::ENCODERS;

    fn validate(&self) -> std::result::Result<(), String> {
        self.check_own()?;
        for (d, t) in self.prior_templates() {
            super::zeroshot::check_template(t).map_err(|e| format!("prior_templates.{d}: {e}"))?;
        }
        let coop = self.coop();
        if matches!(self.context(), Context::Template { .. })
            && (!coop.ctx_init.is_empty() || coop.csc || coop.class_token_position != ClassTokenPosition::End)
        {
            return Err("a context from the template needs ctx_init = \"\", csc = false and class_token_position = \"end\" (its phrase sits before the class name)".into());
        }
        coop.validate()
    }

    fn prompt_layout(&self) -> Option<Vec<(PromptRole, usize)>> {
        self.coop().prompt_layout()
    }

    fn training(&self) -> Training<'_> {
        self.schedule()
    }

    fn build<B: AutodiffBackend, V: Builder<B>>(&self, i: &BuildInputs<B>, to: V) -> Result<V::Out> {
        let (method, prompt) = CoOp::with_prior(
            self.coop(),
            self.prior(),
            self.context(),
            i.clip,
            i.tok,
            i.classnames,
            Context::template_on(self.prior_templates(), i.dataset, i.template),
            i.seed,
        )?;
        Ok(to.sgd(method, prompt))
    }
}
