//! The text tower: token and position embeddings, the causal encoder, EOT pooling and projection;
//! prompts enter as token embeddings and deep prompts.

use burn::module::{Module, Param};
use burn::nn::LayerNorm;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use super::blocks::*;
use super::config::ClipTextConfig;
use super::weights::WeightSource;
use crate::error::Result;

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
        let last_hidden = super::blocks::norm(&self.final_layer_norm, x);
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
