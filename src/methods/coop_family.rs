//! Suite entries of the CoOp-family methods that keep CoOp's prompt learner and add a prior to its
//! step: every CoOp field, flat and written out, plus the method's own.

use serde::{Deserialize, Serialize};

use super::coop::{CoOpConfig, Prior};
use super::optim::{Epochs, SgdConfig};
use super::text_prompts::ClassTokenPosition;

macro_rules! coop_family {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $f:ident : $t:ty),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            pub n_ctx: usize,
            pub ctx_init: String,
            pub init_std: f64,
            pub csc: bool,
            pub class_token_position: ClassTokenPosition,
            pub batch_size: usize,
            pub epochs: Epochs,
            pub optim: SgdConfig,
            $($(#[$fm])* pub $f: $t,)*
        }

        impl $name {
            /// The CoOp prompt learner's part.
            pub fn coop(&self) -> CoOpConfig {
                CoOpConfig {
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
        }
    };
}

coop_family!(
    /// KgCoOp: CoOp plus `weight` × (1 − mean cosine between learned and hand-crafted class
    /// features); the paper's λ is 8.0 (`TRAINER.COOP.W`).
    KgCoOpConfig {
        weight: f64,
    }
);

coop_family!(
    /// ProGrad: CoOp whose cross-entropy gradient is projected off the zero-shot distillation
    /// gradient where they conflict; the paper's `LOSS.LAMBDA` = 1.0 and `LOSS.T` = 1.0.
    ProGradConfig {
        lambda: f64,
        temperature: f64,
    }
);

impl KgCoOpConfig {
    pub fn prior(&self) -> Prior {
        Prior::KnowledgeGuided { weight: self.weight }
    }

    pub fn validate(&self) -> Result<(), String> {
        if !(self.weight >= 0.0) {
            return Err("weight must be >= 0".into());
        }
        self.coop().validate()
    }
}

impl ProGradConfig {
    pub fn prior(&self) -> Prior {
        Prior::Projected {
            lambda: self.lambda,
            temperature: self.temperature,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if !(self.lambda >= 0.0 && self.temperature > 0.0) {
            return Err("lambda >= 0 and temperature > 0 are required".into());
        }
        self.coop().validate()
    }
}
