//! The method registry: `[methods.NAME]` entries tagged by `kind`, one line per method below. A
//! method's config type, its checks, prompt layout, training and construction live in its own
//! file (`methods/<kind>.rs`, implementing `MethodSpec`); `gram` wraps a host method with a GRAM
//! meta-training run and is resolved against the suite (`Suite::trained_as`).

use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::gram::GramConfig;
use crate::methods::{
    BuildInputs, Builder, CoCoOpConfig, CoOpConfig, EncoderUse, IvlpConfig, KgCoOpConfig, LinearProbeConfig,
    MapleConfig, MethodSpec, ProGradConfig, PromptRole, PromptSrcConfig, Training, VptConfig, ZeroShotConfig,
};

macro_rules! registry {
    ($($kind:literal => $variant:ident($config:ty),)*) => {
        /// A method entry of a suite (`[methods.NAME]`), tagged by `kind`.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "kind")]
        pub enum MethodConfig {
            $(#[serde(rename = $kind)] $variant($config),)*
            /// A host method with GRAM; resolved against the suite (its host and meta-training run).
            #[serde(rename = "gram")]
            Gram(GramConfig),
        }

        impl MethodConfig {
            /// Every kind a suite may name.
            #[cfg(test)]
            const KINDS: &'static [&'static str] = &[$($kind,)* "gram"];

            pub fn kind(&self) -> &'static str {
                match self {
                    $(MethodConfig::$variant(_) => $kind,)*
                    MethodConfig::Gram(_) => "gram",
                }
            }

            /// The name published tables give the method (None for GRAM-wrapped hosts, which the
            /// report compares with their host instead).
            pub(crate) fn paper_name(&self) -> Option<&'static str> {
                match self {
                    $(MethodConfig::$variant(_) => Some(<$config as MethodSpec>::PAPER_NAME),)*
                    MethodConfig::Gram(_) => None,
                }
            }

            /// Whether the method scores classes it was not trained on (a gram method: its host's).
            pub(crate) fn open_vocabulary(&self) -> bool {
                match self {
                    $(MethodConfig::$variant(_) => <$config as MethodSpec>::OPEN_VOCABULARY,)*
                    MethodConfig::Gram(_) => true,
                }
            }

            pub fn validate(&self) -> std::result::Result<(), String> {
                match self {
                    $(MethodConfig::$variant(c) => c.validate(),)*
                    // Checked against its host and run by `Suite::validate`.
                    MethodConfig::Gram(_) => Ok(()),
                }
            }

            /// See `MethodSpec::check_cell` (a gram method: its host's, checked through `trained_as`).
            pub(crate) fn check_cell(&self, dataset: &str, shots: usize) -> std::result::Result<(), String> {
                match self {
                    $(MethodConfig::$variant(c) => c.check_cell(dataset, shots),)*
                    MethodConfig::Gram(_) => Ok(()),
                }
            }

            /// How the method uses the encoders (see `MethodSpec::ENCODERS`); None for a gram
            /// method, which trains as its host (`Suite::trained_as`).
            pub fn encoders(&self) -> Option<EncoderUse> {
                match self {
                    $(MethodConfig::$variant(_) => Some(<$config as MethodSpec>::ENCODERS),)*
                    MethodConfig::Gram(_) => None,
                }
            }

            /// The prompt tensors the method learns (see `MethodSpec::prompt_layout`).
            pub(crate) fn prompt_layout(&self) -> Option<Vec<(PromptRole, usize)>> {
                match self {
                    $(MethodConfig::$variant(c) => c.prompt_layout(),)*
                    MethodConfig::Gram(_) => None,
                }
            }

            /// How the method learns. A gram method trains as its host: ask `Suite::trained_as`.
            pub fn training(&self) -> Training<'_> {
                match self {
                    $(MethodConfig::$variant(c) => c.training(),)*
                    MethodConfig::Gram(_) => Training::None,
                }
            }

            /// Instantiates the method for one training label space.
            /// Builds the method and hands it to `to` by kind (see [`Builder`]).
            pub fn build<B: AutodiffBackend, V: Builder<B>>(&self, inputs: &BuildInputs<B>, to: V) -> Result<V::Out> {
                match self {
                    $(MethodConfig::$variant(c) => c.build(inputs, to),)*
                    MethodConfig::Gram(_) => Err(Error::Internal(
                        "a gram method is built from its host and meta-training run, not on its own".into(),
                    )),
                }
            }
        }
    };
}

// kind => variant(config type in methods/<kind>.rs)
registry! {
    "zeroshot" => Zeroshot(ZeroShotConfig),
    "linear-probe" => LinearProbe(LinearProbeConfig),
    "coop" => Coop(CoOpConfig),
    "kgcoop" => Kgcoop(KgCoOpConfig),
    "prograd" => Prograd(ProGradConfig),
    "cocoop" => Cocoop(CoCoOpConfig),
    "vpt" => Vpt(VptConfig),
    "maple" => Maple(MapleConfig),
    "ivlp" => Ivlp(IvlpConfig),
    "promptsrc" => Promptsrc(PromptSrcConfig),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_its_tag() {
        for kind in MethodConfig::KINDS {
            // An unknown kind is refused by name; a known one gets as far as its fields.
            let e = toml::from_str::<MethodConfig>(&format!("kind = \"{kind}\""))
                .unwrap_err()
                .to_string();
            assert!(!e.contains("unknown variant"), "{kind}: {e}");
        }
        let e = toml::from_str::<MethodConfig>("kind = \"tip-adapter\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown variant `tip-adapter`"), "{e}");
    }
}
