//! The transformer blocks both towers share (attention, MLP, encoder layers), the prompt slots of
//! deep prompts, and the weight readers that build them from HF checkpoint keys.

use burn::module::{Module, Param, ParamId};
use burn::nn::{LayerNorm, LayerNormConfig, Linear};
use burn::tensor::activation::gelu;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};

use super::config::Activation;
use super::weights::{transpose, WeightSource};
use crate::error::Result;

pub(super) fn param<B: Backend, const D: usize>(
    src: &mut dyn WeightSource,
    name: &str,
    shape: [usize; D],
    device: &B::Device,
) -> Result<Param<Tensor<B, D>>> {
    let data = src.take(name, &shape)?;
    Ok(Param::from_tensor(Tensor::from_data(
        TensorData::new(data, shape),
        device,
    )))
}

/// An HF `[out, in]` weight as burn's `[in, out]`, transposed on the host so the stored tensor is
/// contiguous (a transposed view costs a strided copy in every forward on the CPU backend).
pub(super) fn transposed<B: Backend>(
    src: &mut dyn WeightSource,
    name: &str,
    d_in: usize,
    d_out: usize,
    device: &B::Device,
) -> Result<Tensor<B, 2>> {
    let w = src.take(name, &[d_out, d_in])?;
    Ok(Tensor::from_data(
        TensorData::new(transpose(&w, d_out, d_in), [d_in, d_out]),
        device,
    ))
}

pub(super) fn linear<B: Backend>(
    src: &mut dyn WeightSource,
    name: &str,
    d_in: usize,
    d_out: usize,
    bias: bool,
    device: &B::Device,
) -> Result<Linear<B>> {
    let weight = transposed(src, &format!("{name}.weight"), d_in, d_out, device)?;
    let bias = if bias {
        Some(param(src, &format!("{name}.bias"), [d_out], device)?)
    } else {
        None
    };
    Ok(Linear {
        weight: Param::from_tensor(weight),
        bias,
    })
}

/// `x` at `dtype`: itself when it is already there (no cast node under autodiff, so an all-f32
/// computation keeps its graph and its bits), else cast.
pub fn at_dtype<B: Backend, const D: usize>(x: Tensor<B, D>, dtype: DType) -> Tensor<B, D> {
    if x.dtype() == dtype {
        x
    } else {
        x.cast(dtype)
    }
}

/// `ln(x)` computed in f32 whatever `x`'s precision, and cast back: CLIP's `LayerNorm` does this
/// (`super().forward(x.type(torch.float32)).type(orig_type)`), so its fp16 models normalize in f32.
pub(crate) fn norm<B: Backend, const D: usize>(ln: &LayerNorm<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    let dtype = x.dtype();
    if dtype == DType::F32 {
        return ln.forward(x);
    }
    let up = |p: &Param<Tensor<B, 1>>| Param::initialized(ParamId::new(), p.val().cast(DType::F32));
    let mut wide = ln.clone();
    wide.gamma = up(&ln.gamma);
    wide.beta = ln.beta.as_ref().map(up);
    wide.forward(x.cast(DType::F32)).cast(dtype)
}

pub(super) fn layer_norm<B: Backend>(
    src: &mut dyn WeightSource,
    name: &str,
    d: usize,
    eps: f64,
    device: &B::Device,
) -> Result<LayerNorm<B>> {
    let mut ln = LayerNormConfig::new(d).with_epsilon(eps).init(device);
    ln.gamma = param(src, &format!("{name}.weight"), [d], device)?;
    ln.beta = Some(param(src, &format!("{name}.bias"), [d], device)?);
    Ok(ln)
}

/// `x @ W + b` over the flattened tokens. A 2-D matmul and a row-broadcast bias take burn-flex's
/// contiguous SIMD paths; `Linear::forward` on 3-D input was measured to fall into a strided
/// element-by-element bias add.
pub(super) fn dense<B: Backend>(lin: &Linear<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    let [b, l, d] = x.dims();
    let w = lin.weight.val();
    let out = w.dims()[1];
    let y = x.reshape([b * l, d]).matmul(w);
    let y = match &lin.bias {
        Some(bias) => y + bias.val().unsqueeze::<2>(),
        None => y,
    };
    y.reshape([b, l, out])
}

#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
    #[module(skip)]
    pub act: Activation,
}

impl<B: Backend> Mlp<B> {
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let h = dense(&self.fc1, x);
        let h = match self.act {
            Activation::QuickGelu => super::fused::quick_gelu(h),
            Activation::Gelu => gelu(h),
        };
        dense(&self.fc2, h)
    }
}

#[derive(Module, Debug)]
pub struct SelfAttention<B: Backend> {
    pub q_proj: Linear<B>,
    pub k_proj: Linear<B>,
    pub v_proj: Linear<B>,
    pub out_proj: Linear<B>,
    pub num_heads: usize,
}

impl<B: Backend> SelfAttention<B> {
    fn forward(&self, x: Tensor<B, 3>, causal: bool) -> Tensor<B, 3> {
        let [b, l, d] = x.dims();
        let h = self.num_heads;
        let split = |t: Tensor<B, 3>| super::fused::swap_middle(t.reshape([b, l, h, d / h]));
        let q = split(dense(&self.q_proj, x.clone()));
        let k = split(dense(&self.k_proj, x.clone()));
        let v = split(dense(&self.v_proj, x));
        let o = super::fused::attention(q, k, v, causal);
        dense(&self.out_proj, super::fused::swap_middle(o).reshape([b, l, d]))
    }
}

#[derive(Module, Debug)]
pub struct EncoderLayer<B: Backend> {
    pub layer_norm1: LayerNorm<B>,
    pub self_attn: SelfAttention<B>,
    pub layer_norm2: LayerNorm<B>,
    pub mlp: Mlp<B>,
    /// The layer norms' ε (burn keeps a `LayerNorm`'s own private), for `fused::layer_norm`.
    #[module(skip)]
    pub eps: f64,
}

impl<B: Backend> EncoderLayer<B> {
    fn forward(&self, x: Tensor<B, 3>, causal: bool) -> Tensor<B, 3> {
        let x = x.clone() + self.self_attn.forward(self.norm(&self.layer_norm1, x), causal);
        x.clone() + self.mlp.forward(self.norm(&self.layer_norm2, x))
    }

    fn norm(&self, ln: &LayerNorm<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
        super::fused::layer_norm(ln, self.eps, x).unwrap_or_else(|x| norm(ln, x))
    }
}

/// Where per-layer prompt tokens go in the sequence entering a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PromptSlot {
    /// Tokens `[start, start + n)` are replaced (text: after SOS, as MaPLe/IVLP do).
    At(usize),
    /// The last `n` tokens are replaced (vision: prompts appended after the patches).
    Tail,
}

/// Deep prompts: `layers[i]`, when present, replaces `n` tokens of the sequence entering block `i`.
/// Each tensor is `[1, n, width]` (shared across the batch) or `[batch, n, width]`.
#[derive(Clone, Debug)]
pub struct DeepPrompts<B: Backend> {
    pub slot: PromptSlot,
    pub layers: Vec<Option<Tensor<B, 3>>>,
}

pub(super) fn replace_tokens<B: Backend>(x: Tensor<B, 3>, p: &Tensor<B, 3>, slot: PromptSlot) -> Tensor<B, 3> {
    let [b, l, d] = x.dims();
    let [pb, n, pd] = p.dims();
    assert_eq!(pd, d, "deep prompt width {pd} != model width {d}");
    let start = match slot {
        PromptSlot::At(s) => s,
        PromptSlot::Tail => l - n,
    };
    assert!(
        start + n <= l,
        "deep prompt of {n} tokens at {start} overruns a sequence of {l}"
    );
    let p = if pb == b {
        p.clone()
    } else {
        p.clone().expand([b, n, d])
    };
    let mut parts = Vec::with_capacity(3);
    if start > 0 {
        parts.push(x.clone().narrow(1, 0, start));
    }
    parts.push(p);
    if start + n < l {
        parts.push(x.narrow(1, start + n, l - start - n));
    }
    Tensor::cat(parts, 1)
}

#[derive(Module, Debug)]
pub struct Encoder<B: Backend> {
    pub layers: Vec<EncoderLayer<B>>,
}

/// The per-tower block hyper-parameters, taken from the text or vision config.
pub(super) struct BlockShape {
    pub(super) width: usize,
    pub(super) mlp: usize,
    pub(super) layers: usize,
    pub(super) heads: usize,
    pub(super) act: Activation,
    pub(super) eps: f64,
}

impl<B: Backend> Encoder<B> {
    pub(super) fn init(
        src: &mut dyn WeightSource,
        prefix: &str,
        shape: BlockShape,
        device: &B::Device,
    ) -> Result<Self> {
        let BlockShape {
            width,
            mlp,
            layers,
            heads,
            act,
            eps,
        } = shape;
        let mut out = Vec::with_capacity(layers);
        for i in 0..layers {
            let p = format!("{prefix}.encoder.layers.{i}");
            let lin = |src: &mut dyn WeightSource, n: &str, a, b| linear(src, &format!("{p}.{n}"), a, b, true, device);
            out.push(EncoderLayer {
                layer_norm1: layer_norm(src, &format!("{p}.layer_norm1"), width, eps, device)?,
                self_attn: SelfAttention {
                    q_proj: lin(src, "self_attn.q_proj", width, width)?,
                    k_proj: lin(src, "self_attn.k_proj", width, width)?,
                    v_proj: lin(src, "self_attn.v_proj", width, width)?,
                    out_proj: lin(src, "self_attn.out_proj", width, width)?,
                    num_heads: heads,
                },
                layer_norm2: layer_norm(src, &format!("{p}.layer_norm2"), width, eps, device)?,
                mlp: Mlp {
                    fc1: lin(src, "mlp.fc1", width, mlp)?,
                    fc2: lin(src, "mlp.fc2", mlp, width)?,
                    act,
                },
                eps,
            });
        }
        Ok(Self { layers: out })
    }

    /// Runs the blocks. `hidden` (when given) receives the input of every block and the final output,
    /// as HF's `hidden_states` does.
    pub(super) fn forward(
        &self,
        mut x: Tensor<B, 3>,
        causal: bool,
        deep: Option<&DeepPrompts<B>>,
        mut hidden: Option<&mut Vec<Tensor<B, 3>>>,
    ) -> Tensor<B, 3> {
        for (i, layer) in self.layers.iter().enumerate() {
            if let Some((Some(p), slot)) = deep.and_then(|d| d.layers.get(i).map(|p| (p, d.slot))) {
                x = replace_tokens(x, p, slot);
            }
            if let Some(h) = hidden.as_deref_mut() {
                h.push(x.clone());
            }
            x = layer.forward(x, causal);
        }
        if let Some(h) = hidden {
            h.push(x.clone());
        }
        x
    }
}
