//! The CLIP backbone. It knows no prompt-tuning method: methods reach it only through explicit
//! inputs — token embeddings, per-layer replacement tokens (deep prompts) and extra vision tokens.
//! Field names mirror the HF checkpoint keys, which are what [`WeightSource`] is asked for.

use burn::module::{Module, Param};
use burn::nn::{LayerNorm, LayerNormConfig, Linear};
use burn::tensor::activation::{gelu, sigmoid};
use burn::tensor::backend::Backend;
use burn::tensor::module::{attention, conv2d};
use burn::tensor::ops::{AttentionModuleOptions, ConvOptions};
use burn::tensor::{Int, Tensor, TensorData};

use super::config::{Activation, ClipConfig, ClipTextConfig, ClipVisionConfig};
use super::tokenizer::ClipTokenizer;
use super::weights::{transpose, WeightSource};
use crate::error::Result;

fn param<B: Backend, const D: usize>(
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
fn transposed<B: Backend>(
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

fn linear<B: Backend>(
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

fn layer_norm<B: Backend>(
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
fn dense<B: Backend>(lin: &Linear<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
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
            Activation::QuickGelu => h.clone() * sigmoid(h * 1.702),
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
        let split = |t: Tensor<B, 3>| t.reshape([b, l, h, d / h]).swap_dims(1, 2);
        let q = split(dense(&self.q_proj, x.clone()));
        let k = split(dense(&self.k_proj, x.clone()));
        let v = split(dense(&self.v_proj, x));
        let opts = AttentionModuleOptions {
            is_causal: causal,
            ..Default::default()
        };
        let o = attention(q, k, v, None, None, opts);
        dense(&self.out_proj, o.swap_dims(1, 2).reshape([b, l, d]))
    }
}

#[derive(Module, Debug)]
pub struct EncoderLayer<B: Backend> {
    pub layer_norm1: LayerNorm<B>,
    pub self_attn: SelfAttention<B>,
    pub layer_norm2: LayerNorm<B>,
    pub mlp: Mlp<B>,
}

impl<B: Backend> EncoderLayer<B> {
    fn forward(&self, x: Tensor<B, 3>, causal: bool) -> Tensor<B, 3> {
        let x = x.clone() + self.self_attn.forward(self.layer_norm1.forward(x), causal);
        x.clone() + self.mlp.forward(self.layer_norm2.forward(x))
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

fn replace_tokens<B: Backend>(x: Tensor<B, 3>, p: &Tensor<B, 3>, slot: PromptSlot) -> Tensor<B, 3> {
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
struct BlockShape {
    width: usize,
    mlp: usize,
    layers: usize,
    heads: usize,
    act: Activation,
    eps: f64,
}

impl<B: Backend> Encoder<B> {
    fn init(src: &mut dyn WeightSource, prefix: &str, shape: BlockShape, device: &B::Device) -> Result<Self> {
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
            });
        }
        Ok(Self { layers: out })
    }

    /// Runs the blocks. `hidden` (when given) receives the input of every block and the final output,
    /// as HF's `hidden_states` does.
    fn forward(
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

pub struct TextOutput<B: Backend> {
    /// After `final_layer_norm`, `[batch, seq, width]`.
    pub last_hidden: Tensor<B, 3>,
    /// The EOS rows of `last_hidden`, `[batch, width]`.
    pub pooled: Tensor<B, 2>,
    /// Input of every block, then the encoder output (before the final norm); empty unless asked.
    pub hidden_states: Vec<Tensor<B, 3>>,
}

#[derive(Module, Debug)]
pub struct TextTransformer<B: Backend> {
    pub token_embedding: Param<Tensor<B, 2>>,
    pub position_embedding: Param<Tensor<B, 2>>,
    pub encoder: Encoder<B>,
    pub final_layer_norm: LayerNorm<B>,
    pub eos_token_id: u32,
}

impl<B: Backend> TextTransformer<B> {
    pub fn init(cfg: &ClipTextConfig, src: &mut dyn WeightSource, device: &B::Device) -> Result<Self> {
        let w = cfg.hidden_size;
        Ok(Self {
            token_embedding: param(
                src,
                "text_model.embeddings.token_embedding.weight",
                [cfg.vocab_size, w],
                device,
            )?,
            position_embedding: param(
                src,
                "text_model.embeddings.position_embedding.weight",
                [cfg.max_position_embeddings, w],
                device,
            )?,
            encoder: Encoder::init(
                src,
                "text_model",
                BlockShape {
                    width: w,
                    mlp: cfg.intermediate_size,
                    layers: cfg.num_hidden_layers,
                    heads: cfg.num_attention_heads,
                    act: cfg.hidden_act,
                    eps: cfg.layer_norm_eps,
                },
                device,
            )?,
            final_layer_norm: layer_norm(src, "text_model.final_layer_norm", w, cfg.layer_norm_eps, device)?,
            eos_token_id: cfg.eos_token_id,
        })
    }

    pub fn context_length(&self) -> usize {
        self.position_embedding.dims()[0]
    }

    pub fn vocab_size(&self) -> usize {
        self.token_embedding.dims()[0]
    }

    /// Token embeddings (no positions) for `[batch, seq]` ids: the input methods edit.
    pub fn embed_tokens(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [b, l] = ids.dims();
        let w = self.token_embedding.dims()[1];
        self.token_embedding
            .val()
            .select(0, ids.reshape([b * l]))
            .reshape([b, l, w])
    }

    /// The pooling position of each id row: the first `eos_token_id`, or, for legacy configs whose
    /// `eos_token_id` is 2, the argmax of the ids (the first one on ties), as HF CLIP does.
    pub fn eos_positions(&self, ids: &[Vec<u32>]) -> Vec<usize> {
        ids.iter()
            .map(|row| {
                if self.eos_token_id == 2 {
                    let max = row.iter().copied().max().unwrap_or(0);
                    row.iter().position(|&t| t == max).unwrap_or(0)
                } else {
                    row.iter()
                        .position(|&t| t == self.eos_token_id)
                        .unwrap_or(row.len().saturating_sub(1))
                }
            })
            .collect()
    }

    /// Encodes token embeddings `[batch, seq, width]` and pools at `eos_positions`.
    pub fn forward_embeds(
        &self,
        embeds: Tensor<B, 3>,
        eos_positions: &[usize],
        deep: Option<&DeepPrompts<B>>,
        keep_hidden: bool,
    ) -> TextOutput<B> {
        let [b, l, w] = embeds.dims();
        assert!(
            l <= self.context_length(),
            "sequence of {l} tokens exceeds context {}",
            self.context_length()
        );
        assert_eq!(eos_positions.len(), b, "one pooling position per sequence");
        let pos = self.position_embedding.val().narrow(0, 0, l).unsqueeze::<3>();
        let mut hidden = Vec::new();
        let x = self
            .encoder
            .forward(embeds + pos, true, deep, keep_hidden.then_some(&mut hidden));
        let last_hidden = self.final_layer_norm.forward(x);
        let device = last_hidden.device();
        let rows: Vec<i64> = eos_positions
            .iter()
            .enumerate()
            .map(|(i, &p)| (i * l + p) as i64)
            .collect();
        let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(rows, [b]), &device);
        let pooled = last_hidden.clone().reshape([b * l, w]).select(0, idx);
        TextOutput {
            last_hidden,
            pooled,
            hidden_states: hidden,
        }
    }

    /// Pooled outputs only, computed on the shortest prefix that holds every pooling position (and
    /// every deep-prompt slot). Under the causal mask no position attends to a later one, so the
    /// padding after the last EOS cannot change a pooled row: the result equals `forward_embeds`'s
    /// (tested), while CLIP's 77-token context usually shrinks several-fold.
    pub fn forward_pooled(
        &self,
        embeds: Tensor<B, 3>,
        eos_positions: &[usize],
        deep: Option<&DeepPrompts<B>>,
    ) -> Tensor<B, 2> {
        let l = embeds.dims()[1];
        let mut keep = eos_positions.iter().max().map_or(l, |&m| m + 1);
        if let Some(d) = deep {
            let n = d.layers.iter().flatten().map(|p| p.dims()[1]).max().unwrap_or(0);
            keep = match d.slot {
                PromptSlot::At(s) => keep.max(s + n),
                // A tail slot is defined by the full length: keep it.
                PromptSlot::Tail => l,
            };
        }
        let embeds = if keep < l { embeds.narrow(1, 0, keep) } else { embeds };
        self.forward_embeds(embeds, eos_positions, deep, false).pooled
    }

    /// Convenience: ids in, pooled features out.
    pub fn forward_ids(&self, ids: &[Vec<u32>], device: &B::Device, keep_hidden: bool) -> TextOutput<B> {
        let eos = self.eos_positions(ids);
        let embeds = self.embed_tokens(ids_tensor(ids, device));
        self.forward_embeds(embeds, &eos, None, keep_hidden)
    }
}

/// `[batch, seq]` id tensor from rows of equal length.
pub fn ids_tensor<B: Backend>(ids: &[Vec<u32>], device: &B::Device) -> Tensor<B, 2, Int> {
    let l = ids.first().map_or(0, Vec::len);
    assert!(ids.iter().all(|r| r.len() == l), "id rows must have equal length");
    let flat: Vec<i64> = ids.iter().flatten().map(|&t| t as i64).collect();
    Tensor::from_data(TensorData::new(flat, [ids.len(), l]), device)
}

/// Extra vision tokens. `shallow` (`[1|batch, n, width]`) is appended after the patch tokens before
/// `ln_pre`; `deep` replaces the last tokens entering later blocks.
#[derive(Clone, Debug)]
pub struct VisionPrompts<B: Backend> {
    pub shallow: Option<Tensor<B, 3>>,
    pub deep: Vec<Option<Tensor<B, 3>>>,
}

impl<B: Backend> Default for VisionPrompts<B> {
    fn default() -> Self {
        Self {
            shallow: None,
            deep: Vec::new(),
        }
    }
}

pub struct VisionOutput<B: Backend> {
    /// Encoder output before `post_layernorm`, `[batch, tokens, width]`.
    pub last_hidden: Tensor<B, 3>,
    /// `post_layernorm` of the class token, `[batch, width]`.
    pub pooled: Tensor<B, 2>,
    pub hidden_states: Vec<Tensor<B, 3>>,
}

#[derive(Module, Debug)]
pub struct VisionTransformer<B: Backend> {
    pub class_embedding: Param<Tensor<B, 1>>,
    pub patch_embedding: Param<Tensor<B, 4>>,
    pub position_embedding: Param<Tensor<B, 2>>,
    pub pre_layrnorm: LayerNorm<B>,
    pub encoder: Encoder<B>,
    pub post_layernorm: LayerNorm<B>,
    pub patch_size: usize,
    pub image_size: usize,
}

impl<B: Backend> VisionTransformer<B> {
    pub fn init(cfg: &ClipVisionConfig, src: &mut dyn WeightSource, device: &B::Device) -> Result<Self> {
        let w = cfg.hidden_size;
        let p = cfg.patch_size;
        Ok(Self {
            class_embedding: param(src, "vision_model.embeddings.class_embedding", [w], device)?,
            patch_embedding: param(
                src,
                "vision_model.embeddings.patch_embedding.weight",
                [w, 3, p, p],
                device,
            )?,
            position_embedding: param(
                src,
                "vision_model.embeddings.position_embedding.weight",
                [cfg.num_positions(), w],
                device,
            )?,
            pre_layrnorm: layer_norm(src, "vision_model.pre_layrnorm", w, cfg.layer_norm_eps, device)?,
            encoder: Encoder::init(
                src,
                "vision_model",
                BlockShape {
                    width: w,
                    mlp: cfg.intermediate_size,
                    layers: cfg.num_hidden_layers,
                    heads: cfg.num_attention_heads,
                    act: cfg.hidden_act,
                    eps: cfg.layer_norm_eps,
                },
                device,
            )?,
            post_layernorm: layer_norm(src, "vision_model.post_layernorm", w, cfg.layer_norm_eps, device)?,
            patch_size: p,
            image_size: cfg.image_size,
        })
    }

    /// `pixels`: `[batch, 3, image_size, image_size]`, already normalized.
    pub fn forward(&self, pixels: Tensor<B, 4>, prompts: &VisionPrompts<B>, keep_hidden: bool) -> VisionOutput<B> {
        let [b, c, h, wd] = pixels.dims();
        assert!(
            c == 3 && h == self.image_size && wd == self.image_size,
            "pixels {:?} do not match the model's [_, 3, {s}, {s}]",
            [b, c, h, wd],
            s = self.image_size
        );
        let p = self.patch_size;
        let opts = ConvOptions::new([p, p], [0, 0], [1, 1], 1);
        let patches = conv2d(pixels, self.patch_embedding.val(), None, opts); // [b, w, g, g]
        let [_, w, g, _] = patches.dims();
        let patches = patches.reshape([b, w, g * g]).swap_dims(1, 2);
        let cls = self.class_embedding.val().reshape([1, 1, w]).expand([b, 1, w]);
        let mut x = Tensor::cat(vec![cls, patches], 1) + self.position_embedding.val().unsqueeze::<3>();
        if let Some(s) = &prompts.shallow {
            let [pb, n, _] = s.dims();
            let s = if pb == b {
                s.clone()
            } else {
                s.clone().expand([b, n, w])
            };
            x = Tensor::cat(vec![x, s], 1);
        }
        let x = self.pre_layrnorm.forward(x);
        let deep = DeepPrompts {
            slot: PromptSlot::Tail,
            layers: prompts.deep.clone(),
        };
        let mut hidden = Vec::new();
        let has_deep = prompts.deep.iter().any(Option::is_some);
        let x = self
            .encoder
            .forward(x, false, has_deep.then_some(&deep), keep_hidden.then_some(&mut hidden));
        let cls_out = x.clone().narrow(1, 0, 1).reshape([b, w]);
        VisionOutput {
            pooled: self.post_layernorm.forward(cls_out),
            last_hidden: x,
            hidden_states: hidden,
        }
    }
}

#[derive(Module, Debug)]
pub struct Clip<B: Backend> {
    pub text_model: TextTransformer<B>,
    pub vision_model: VisionTransformer<B>,
    /// Stored `[width, embed]`: features are `pooled @ text_projection`.
    pub text_projection: Param<Tensor<B, 2>>,
    pub visual_projection: Param<Tensor<B, 2>>,
    pub logit_scale: Param<Tensor<B, 1>>,
}

impl ClipConfig {
    /// Builds the backbone from `src` (a checkpoint or a random init) and checks nothing in the
    /// source was left unused.
    pub fn init<B: Backend>(&self, src: &mut dyn WeightSource, device: &B::Device) -> Result<Clip<B>> {
        self.check()?;
        let e = self.projection_dim;
        let proj = |src: &mut dyn WeightSource, name: &str, w: usize| -> Result<Param<Tensor<B, 2>>> {
            Ok(Param::from_tensor(transposed(src, name, w, e, device)?))
        };
        let clip = Clip {
            text_model: TextTransformer::init(&self.text, src, device)?,
            vision_model: VisionTransformer::init(&self.vision, src, device)?,
            text_projection: proj(src, "text_projection.weight", self.text.hidden_size)?,
            visual_projection: proj(src, "visual_projection.weight", self.vision.hidden_size)?,
            logit_scale: param(src, "logit_scale", [1], device)?,
        };
        src.finish()?;
        Ok(clip)
    }
}

fn l2_normalize<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let n = x.clone().powf_scalar(2.0).sum_dim(1).sqrt();
    x / n
}

impl<B: Backend> Clip<B> {
    /// Marks every backbone parameter as constant: under autodiff no gradient reaches them, so no
    /// optimizer can move them. Prompt-tuning methods train only their own tensors.
    pub fn freeze(self) -> Self {
        self.no_grad()
    }

    /// Projected (not normalized) image features.
    pub fn image_features(&self, pooled: Tensor<B, 2>) -> Tensor<B, 2> {
        pooled.matmul(self.visual_projection.val())
    }

    /// Projected (not normalized) text features.
    /// Projected (not normalized) features of `texts`: tokenized by `tok`, run only up to the last
    /// EOS (`TextTransformer::forward_pooled`), pooled and projected.
    pub fn encode_text(&self, tok: &ClipTokenizer, texts: &[impl AsRef<str>]) -> Result<Tensor<B, 2>> {
        let device = self.logit_scale.val().device();
        let ids = tok.encode_padded(texts)?;
        let eos = self.text_model.eos_positions(&ids);
        let embeds = self.text_model.embed_tokens(ids_tensor(&ids, &device));
        Ok(self.text_features(self.text_model.forward_pooled(embeds, &eos, None)))
    }

    pub fn text_features(&self, pooled: Tensor<B, 2>) -> Tensor<B, 2> {
        pooled.matmul(self.text_projection.val())
    }

    pub fn encode_image(&self, pixels: Tensor<B, 4>, prompts: &VisionPrompts<B>) -> Tensor<B, 2> {
        self.image_features(self.vision_model.forward(pixels, prompts, false).pooled)
    }

    /// `logits_per_image = exp(logit_scale) · norm(image) · norm(text)ᵀ`, `[images, texts]`.
    pub fn logits_per_image(&self, image_features: Tensor<B, 2>, text_features: Tensor<B, 2>) -> Tensor<B, 2> {
        let scale = self.logit_scale.val().exp().unsqueeze::<2>();
        l2_normalize(image_features).matmul(l2_normalize(text_features).transpose()) * scale
    }

    pub fn normalize(x: Tensor<B, 2>) -> Tensor<B, 2> {
        l2_normalize(x)
    }
}
