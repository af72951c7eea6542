//! GRAM on a host method: the host's prompt tensors start from the meta-learned θ₀ of matching
//! role and token shape (`theta0_init`, applied when the host is built), and every prompt gradient
//! passes through the frozen ψ_φ of its modality (`RegulatedGradients`, the training loop's
//! gradient hook; UNIGRAM's textual and visual prompts each have their own) before the optimizer
//! step. Everything else — the host's loss, schedule, meta-nets, evaluation — is the host's own.

use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;

use super::Regulator;
use crate::error::{Error, Result};
use crate::methods::{PromptArtifact, PromptParam, PromptRole};

/// The frozen ψ_φ applied to a host's prompt gradients: the gradient hook the training loop calls
/// between a step's gradients and its optimizer step.
pub struct RegulatedGradients<B: AutodiffBackend> {
    /// For textual prompt tensors.
    pub text: Option<Regulator<B::InnerBackend>>,
    /// For visual prompt tensors.
    pub vision: Option<Regulator<B::InnerBackend>>,
    /// The task embedding the mixing coefficient is computed from.
    pub task: Tensor<B::InnerBackend, 1>,
}

fn regulate<B: burn::tensor::backend::Backend, const D: usize>(
    grads: &mut GradientsParams,
    p: &PromptParam,
    reg: &Regulator<B>,
    task: &Tensor<B, 1>,
) {
    if let Some(g) = grads.remove::<B, D>(p.id) {
        let dims: [usize; D] = g.dims();
        let width = dims[D - 1];
        let rows = dims.iter().product::<usize>() / width;
        let (out, _) = reg.forward(g.reshape([rows, width]), task.clone());
        grads.register(p.id, out.reshape(dims));
    }
}

impl<B: AutodiffBackend> RegulatedGradients<B> {
    fn regulator(&self, role: PromptRole) -> Option<&Regulator<B::InnerBackend>> {
        if role.is_text() {
            self.text.as_ref()
        } else {
            self.vision.as_ref()
        }
    }

    /// Fails unless every prompt of `params` has a regulator of its modality and token width.
    pub fn check(&self, params: &[PromptParam]) -> Result<()> {
        for p in host_prompts(params)? {
            let reg = self.regulator(p.role).ok_or_else(|| {
                Error::Config(format!(
                    "gram: no {} gradient regulator for the prompt `{}`",
                    if p.role.is_text() { "textual" } else { "visual" },
                    p.name
                ))
            })?;
            let width = *p.shape.last().unwrap_or(&0);
            if reg.width() != width {
                return Err(Error::Config(format!(
                    "gram: the regulator is {} wide, the prompt `{}` {width}",
                    reg.width(),
                    p.name
                )));
            }
        }
        Ok(())
    }

    /// Every prompt gradient of `params` through its modality's frozen ψ_φ (others unchanged).
    pub fn regulate(&self, mut grads: GradientsParams, params: &[PromptParam]) -> GradientsParams {
        for p in params {
            let Some(reg) = self.regulator(p.role) else {
                continue;
            };
            match p.shape.len() {
                2 => regulate::<B::InnerBackend, 2>(&mut grads, p, reg, &self.task),
                3 => regulate::<B::InnerBackend, 3>(&mut grads, p, reg, &self.task),
                _ => {}
            }
        }
        grads
    }
}

/// A host's prompt tensors; GRAM on a host without any would change nothing, so it is refused.
fn host_prompts(params: &[PromptParam]) -> Result<&[PromptParam]> {
    match params.is_empty() {
        true => Err(Error::Config("gram: the host method has no prompt tensors".into())),
        false => Ok(params),
    }
}

/// Shapes equal once unit dimensions are dropped (CoOp's `[1, M, w]` context takes θ₀'s `[M, w]`).
fn same_tokens(a: &[usize], b: &[usize]) -> bool {
    let strip = |s: &[usize]| s.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
    strip(a) == strip(b)
}

/// The host's parameters (`artifact`, with prompt tensors `params`) with each prompt tensor
/// replaced by θ₀'s tensor of the same role (`text.0` for CoOp's `ctx`, `vision.i` for VPT's layer
/// `i`, …). Anything else the host learns (CoCoOp's meta-net, MaPLe's couplings) keeps its own init.
pub fn theta0_init(
    params: &[PromptParam],
    artifact: &PromptArtifact,
    theta0: &PromptArtifact,
) -> Result<PromptArtifact> {
    let mut art = artifact.clone();
    for p in host_prompts(params)? {
        let key = p.role.theta0_name();
        let (shape, data) = theta0.get(&key).ok_or_else(|| {
            Error::Config(format!(
                "gram: the host's prompt `{}` needs a meta-learned `{key}`, which this meta-training run \
                 does not learn (it has: {}); meta-train prompts of this modality and depth",
                p.name,
                theta0.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?;
        if !same_tokens(shape, &p.shape) {
            return Err(Error::Config(format!(
                "gram: the meta-learned `{key}` is {shape:?}, the host's `{}` is {:?}",
                p.name, p.shape
            )));
        }
        art.insert(p.name.clone(), (p.shape.clone(), data.clone()));
    }
    Ok(art)
}
