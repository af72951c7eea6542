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
            $($(#[$fm])* pub $f: $t,)*
        }

        impl $name {
            /// The CoOp prompt learner's part.
            pub fn coop(&self) -> $crate::methods::CoOpConfig {
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
        }
    };
}
