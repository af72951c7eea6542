//! The method registry of a suite: `[methods.NAME]` entries tagged by `kind`, one variant per
//! method (its config type lives in the method's own file), plus `gram`, which wraps a host method
//! with a GRAM meta-training run and is resolved against the suite.

use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::clip::{Clip, ClipTokenizer};
use crate::error::Result;
use crate::methods::{
    CoCoOp, CoCoOpConfig, CoOp, CoOpConfig, Epochs, IvlpConfig, KgCoOpConfig, LinearProbe, LinearProbeConfig,
    MapleConfig, MultiModal, ProGradConfig, PromptMethod, PromptRole, PromptSrcConfig, SgdConfig, Vpt, VptConfig,
    ZeroShot, ZeroShotConfig,
};

/// A method entry of a suite (`[methods.NAME]`), tagged by `kind`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum MethodConfig {
    Zeroshot(ZeroShotConfig),
    Coop(CoOpConfig),
    Kgcoop(KgCoOpConfig),
    Prograd(ProGradConfig),
    Cocoop(CoCoOpConfig),
    Vpt(VptConfig),
    Maple(MapleConfig),
    Ivlp(IvlpConfig),
    Promptsrc(PromptSrcConfig),
    #[serde(rename = "linear-probe")]
    LinearProbe(LinearProbeConfig),
    /// A host method with GRAM; resolved against the suite (its host and meta-training run).
    Gram(crate::gram::GramConfig),
}

impl MethodConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            MethodConfig::Zeroshot(_) => "zeroshot",
            MethodConfig::Coop(_) => "coop",
            MethodConfig::Kgcoop(_) => "kgcoop",
            MethodConfig::Prograd(_) => "prograd",
            MethodConfig::Cocoop(_) => "cocoop",
            MethodConfig::Vpt(_) => "vpt",
            MethodConfig::Maple(_) => "maple",
            MethodConfig::Ivlp(_) => "ivlp",
            MethodConfig::Promptsrc(_) => "promptsrc",
            MethodConfig::LinearProbe(_) => "linear-probe",
            MethodConfig::Gram(_) => "gram",
        }
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        match self {
            MethodConfig::Zeroshot(_) => Ok(()),
            MethodConfig::Coop(c) => c.validate(),
            MethodConfig::Kgcoop(c) => c.validate(),
            MethodConfig::Prograd(c) => c.validate(),
            MethodConfig::Cocoop(c) => c.validate(),
            MethodConfig::Vpt(c) => c.validate(),
            MethodConfig::Maple(c) => c.validate(),
            MethodConfig::Ivlp(c) => c.validate(),
            MethodConfig::Promptsrc(c) => c.validate(),
            MethodConfig::LinearProbe(c) => c.validate(),
            MethodConfig::Gram(_) => Ok(()),
        }
    }

    /// The prompt tensors a method learns, by role, with their token counts (what GRAM must
    /// supply θ₀ and regulators for); `None` for methods without shared prompt tokens — CSC
    /// contexts (one per class) included. Mirrors each method's `prompt_params`.
    pub fn prompt_layout(&self) -> Option<Vec<(PromptRole, usize)>> {
        let layers = |text: (usize, usize), vision: (usize, usize)| {
            (0..text.1)
                .map(|l| (PromptRole::Text(l), text.0))
                .chain((0..vision.1).map(|l| (PromptRole::Vision(l), vision.0)))
                .collect::<Vec<_>>()
        };
        match self {
            MethodConfig::Coop(c) => (!c.csc).then(|| layers((c.n_ctx, 1), (0, 0))),
            MethodConfig::Kgcoop(c) => (!c.csc).then(|| layers((c.n_ctx, 1), (0, 0))),
            MethodConfig::Prograd(c) => (!c.csc).then(|| layers((c.n_ctx, 1), (0, 0))),
            MethodConfig::Cocoop(c) => Some(layers((c.n_ctx, 1), (0, 0))),
            MethodConfig::Vpt(c) => Some(layers((0, 0), (c.n_ctx, c.depth))),
            MethodConfig::Maple(c) => Some(layers((c.n_ctx, c.depth), (0, 0))),
            MethodConfig::Ivlp(c) => Some(layers((c.n_ctx_text, c.text_depth), (c.n_ctx_vision, c.vision_depth))),
            MethodConfig::Promptsrc(c) => Some(layers((c.n_ctx_text, c.text_depth), (c.n_ctx_vision, c.vision_depth))),
            MethodConfig::Zeroshot(_) | MethodConfig::LinearProbe(_) | MethodConfig::Gram(_) => None,
        }
    }

    /// SGD training schedule, or None for methods that do not train by SGD.
    pub fn training(&self) -> Option<(&SgdConfig, &Epochs, usize)> {
        match self {
            MethodConfig::Zeroshot(_) | MethodConfig::LinearProbe(_) | MethodConfig::Gram(_) => None,
            MethodConfig::Coop(c) => Some((&c.optim, &c.epochs, c.batch_size)),
            MethodConfig::Kgcoop(c) => Some((&c.optim, &c.epochs, c.batch_size)),
            MethodConfig::Prograd(c) => Some((&c.optim, &c.epochs, c.batch_size)),
            MethodConfig::Cocoop(c) => Some((&c.optim, &c.epochs, c.batch_size)),
            MethodConfig::Vpt(c) => Some((&c.optim, &c.epochs, c.batch_size)),
            MethodConfig::Maple(c) => Some((&c.optim, &c.epochs, c.batch_size)),
            MethodConfig::Ivlp(c) => Some((&c.optim, &c.epochs, c.batch_size)),
            MethodConfig::Promptsrc(c) => Some((&c.optim, &c.epochs, c.batch_size)),
        }
    }

    /// Instantiates the method for `classnames` (the training label space) of a dataset whose
    /// hand-crafted template is `template`.
    pub fn build<B: AutodiffBackend>(
        &self,
        clip: &Clip<B>,
        tok: &ClipTokenizer,
        classnames: &[String],
        template: &str,
        imagenet_like: bool,
        seed: u64,
    ) -> Result<Box<dyn PromptMethod<B>>> {
        Ok(match self {
            MethodConfig::Zeroshot(c) => Box::new(ZeroShot::new(c.clone(), imagenet_like)),
            MethodConfig::Coop(c) => Box::new(CoOp::new(c.clone(), clip, tok, classnames, seed)?),
            MethodConfig::Kgcoop(c) => Box::new(CoOp::with_prior(
                c.coop(),
                c.prior(),
                clip,
                tok,
                classnames,
                template,
                seed,
            )?),
            MethodConfig::Prograd(c) => Box::new(CoOp::with_prior(
                c.coop(),
                c.prior(),
                clip,
                tok,
                classnames,
                template,
                seed,
            )?),
            MethodConfig::Cocoop(c) => Box::new(CoCoOp::new(c.clone(), clip, tok, classnames, seed)?),
            MethodConfig::Vpt(c) => Box::new(Vpt::new(c.clone(), clip, tok, classnames, seed)?),
            MethodConfig::Maple(c) => Box::new(MultiModal::maple(c, clip, tok, classnames, seed)?),
            MethodConfig::Ivlp(c) => Box::new(MultiModal::ivlp(c, clip, tok, classnames, seed)?),
            MethodConfig::Promptsrc(c) => Box::new(MultiModal::promptsrc(c, clip, tok, classnames, seed)?),
            MethodConfig::LinearProbe(c) => Box::new(LinearProbe::new(c.clone(), classnames)),
            MethodConfig::Gram(_) => {
                return Err(crate::error::Error::Config(
                    "a gram method is built by the runner from its host and meta-training run".into(),
                ))
            }
        })
    }
}
