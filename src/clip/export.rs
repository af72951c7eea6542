//! Writing a backbone as an HF CLIP directory (`config.json` + `model.safetensors`), so a model the
//! project trains itself (the embedded micro-CLIP) is read back by the same loader as any checkpoint.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Param;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde_json::json;

use super::config::{Activation, ClipConfig};
use super::model::{Clip, Encoder};
use super::weights::transpose;
use crate::error::{Error, Result};

/// Tensors keyed by their HF name, in HF's orientation (`[out, in]` for linear weights).
pub(crate) type NamedTensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

fn host<B: Backend, const D: usize>(t: &Tensor<B, D>) -> (Vec<usize>, Vec<f32>) {
    let data = t.to_data().convert::<f32>();
    (
        data.shape.to_vec(),
        data.to_vec::<f32>().expect("converted to f32 above"),
    )
}

fn put<B: Backend, const D: usize>(out: &mut NamedTensors, name: String, p: &Param<Tensor<B, D>>) {
    out.insert(name, host(&p.val()));
}

/// burn keeps linear weights as `[in, out]`; HF stores `[out, in]`.
fn put_t<B: Backend>(out: &mut NamedTensors, name: String, w: &Param<Tensor<B, 2>>) {
    let (shape, data) = host(&w.val());
    out.insert(name, (vec![shape[1], shape[0]], transpose(&data, shape[0], shape[1])));
}

fn put_linear<B: Backend>(out: &mut NamedTensors, name: &str, lin: &Linear<B>) {
    put_t(out, format!("{name}.weight"), &lin.weight);
    if let Some(b) = &lin.bias {
        put(out, format!("{name}.bias"), b);
    }
}

fn put_ln<B: Backend>(out: &mut NamedTensors, name: &str, ln: &LayerNorm<B>) {
    put(out, format!("{name}.weight"), &ln.gamma);
    if let Some(b) = &ln.beta {
        put(out, format!("{name}.bias"), b);
    }
}

fn put_encoder<B: Backend>(out: &mut NamedTensors, tower: &str, enc: &Encoder<B>) {
    for (i, l) in enc.layers.iter().enumerate() {
        let p = format!("{tower}.encoder.layers.{i}");
        put_ln(out, &format!("{p}.layer_norm1"), &l.layer_norm1);
        put_ln(out, &format!("{p}.layer_norm2"), &l.layer_norm2);
        for (n, lin) in [
            ("q_proj", &l.self_attn.q_proj),
            ("k_proj", &l.self_attn.k_proj),
            ("v_proj", &l.self_attn.v_proj),
            ("out_proj", &l.self_attn.out_proj),
        ] {
            put_linear(out, &format!("{p}.self_attn.{n}"), lin);
        }
        put_linear(out, &format!("{p}.mlp.fc1"), &l.mlp.fc1);
        put_linear(out, &format!("{p}.mlp.fc2"), &l.mlp.fc2);
    }
}

impl<B: Backend> Clip<B> {
    /// Every parameter under its HF `CLIPModel` key: the inverse of loading an HF checkpoint.
    pub fn to_hf_tensors(&self) -> NamedTensors {
        let mut out = NamedTensors::new();
        let t = &self.text_model;
        put(
            &mut out,
            "text_model.embeddings.token_embedding.weight".into(),
            &t.token_embedding,
        );
        put(
            &mut out,
            "text_model.embeddings.position_embedding.weight".into(),
            &t.position_embedding,
        );
        put_encoder(&mut out, "text_model", &t.encoder);
        put_ln(&mut out, "text_model.final_layer_norm", &t.final_layer_norm);
        let v = &self.vision_model;
        put(
            &mut out,
            "vision_model.embeddings.class_embedding".into(),
            &v.class_embedding,
        );
        put(
            &mut out,
            "vision_model.embeddings.patch_embedding.weight".into(),
            &v.patch_embedding,
        );
        put(
            &mut out,
            "vision_model.embeddings.position_embedding.weight".into(),
            &v.position_embedding,
        );
        put_ln(&mut out, "vision_model.pre_layrnorm", &v.pre_layrnorm);
        put_encoder(&mut out, "vision_model", &v.encoder);
        put_ln(&mut out, "vision_model.post_layernorm", &v.post_layernorm);
        put_t(&mut out, "text_projection.weight".into(), &self.text_projection);
        put_t(&mut out, "visual_projection.weight".into(), &self.visual_projection);
        put(&mut out, "logit_scale".into(), &self.logit_scale);
        out
    }
}

fn act(a: Activation) -> &'static str {
    match a {
        Activation::QuickGelu => "quick_gelu",
        Activation::Gelu => "gelu",
    }
}

impl ClipConfig {
    /// The HF `config.json` that [`ClipConfig::from_hf_json`] reads back to `self`.
    pub(crate) fn to_hf_json(&self) -> serde_json::Value {
        let (t, v) = (&self.text, &self.vision);
        json!({
            "architectures": ["CLIPModel"],
            "model_type": "clip",
            "projection_dim": self.projection_dim,
            "text_config": {
                "vocab_size": t.vocab_size,
                "hidden_size": t.hidden_size,
                "intermediate_size": t.intermediate_size,
                "num_hidden_layers": t.num_hidden_layers,
                "num_attention_heads": t.num_attention_heads,
                "max_position_embeddings": t.max_position_embeddings,
                "hidden_act": act(t.hidden_act),
                "layer_norm_eps": t.layer_norm_eps,
                "eos_token_id": t.eos_token_id,
                "projection_dim": self.projection_dim,
            },
            "vision_config": {
                "hidden_size": v.hidden_size,
                "intermediate_size": v.intermediate_size,
                "num_hidden_layers": v.num_hidden_layers,
                "num_attention_heads": v.num_attention_heads,
                "image_size": v.image_size,
                "patch_size": v.patch_size,
                "hidden_act": act(v.hidden_act),
                "layer_norm_eps": v.layer_norm_eps,
                "projection_dim": self.projection_dim,
            },
        })
    }
}

/// Writes `dir/config.json`, the HF `CLIPModel` config of `config` (the directory must exist).
pub(crate) fn write_hf_config(dir: &Path, config: &ClipConfig) -> Result<()> {
    let text = serde_json::to_string_pretty(&config.to_hf_json()).expect("a JSON value always serializes");
    crate::files::write_atomic(&dir.join("config.json"), text.as_bytes())
}

/// Writes `dir/config.json` and `dir/model.safetensors` (f32).
pub(crate) fn save_hf_dir<B: Backend>(dir: &Path, config: &ClipConfig, model: &Clip<B>) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    write_hf_config(dir, config)?;
    let tensors = model.to_hf_tensors();
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(k, (shape, data))| (k, shape, data.iter().flat_map(|v| v.to_le_bytes()).collect()))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(k, shape, b)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                .map_err(|e| Error::Weights(format!("{k}: {e}")))?;
            Ok((k.clone(), view))
        })
        .collect::<Result<_>>()?;
    let path = dir.join("model.safetensors");
    safetensors::serialize_to_file(views, None, &path).map_err(|e| Error::Weights(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clip::{load_clip, ClipTextConfig, ClipVisionConfig, LoadOptions, RandomInit};

    type B = crate::backend::Cpu;

    fn tiny() -> ClipConfig {
        ClipConfig::new(
            ClipTextConfig::new(49408, 32, 64, 1, 2, 16, Activation::QuickGelu, 1e-5, 49407),
            ClipVisionConfig::new(32, 64, 1, 2, 16, 8, Activation::Gelu, 1e-5),
            24,
        )
    }

    #[test]
    fn a_saved_model_loads_back_identical_through_the_hf_loader() {
        let cfg = tiny();
        let dev = Default::default();
        let model = cfg.init::<B>(&mut RandomInit::new(3), &dev).unwrap();
        let dir = tempfile::tempdir().unwrap();
        save_hf_dir(dir.path(), &cfg, &model).unwrap();
        let loaded = load_clip::<B>(dir.path(), &LoadOptions::default(), &dev).unwrap();
        assert_eq!(loaded.config, cfg);
        assert_eq!(loaded.model.to_hf_tensors(), model.to_hf_tensors());
    }
}
