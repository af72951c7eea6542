//! Opening a CLIP checkpoint as users have it: an HF directory (`config.json`, `model.safetensors`,
//! `tokenizer.json`) or an OpenAI/open_clip state dict saved as safetensors.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;

use super::config::ClipConfig;
use super::model::Clip;
use super::preprocess::{Preprocess, CLIP_MEAN, CLIP_STD};
use super::tokenizer::ClipTokenizer;
use super::weights::{detect_layout, reject_pickle, HfLayout, Layout, OpenAiLayout, SafetensorsStore, WeightSource};
use crate::error::{Error, Result};

#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Overrides the checkpoint's own config (HF config.json or open_clip model config).
    pub config: Option<PathBuf>,
    /// `tokenizer.json` or `bpe_simple_vocab_16e6.txt.gz`; default: the checkpoint's, else OpenAI's.
    pub tokenizer: Option<PathBuf>,
}

pub struct LoadedClip<B: Backend> {
    pub config: ClipConfig,
    pub model: Clip<B>,
    pub tokenizer: ClipTokenizer,
    pub preprocess: Preprocess,
    pub layout: Layout,
    /// Where the architecture came from: a config file, or the named checkpoint its shapes matched.
    pub config_source: String,
}

fn not_found(path: &Path) -> Error {
    Error::io(
        path,
        std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
    )
}

/// The safetensors files of an HF directory: one file, or the shards its index names.
fn hf_weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::Weights(format!("{}: not valid JSON: {e}", index.display())))?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| Error::Weights(format!("{}: no `weight_map`", index.display())))?;
        let mut files: Vec<PathBuf> = map.values().filter_map(|f| f.as_str()).map(|f| dir.join(f)).collect();
        files.sort();
        files.dedup();
        return Ok(files);
    }
    for legacy in ["pytorch_model.bin", "open_clip_pytorch_model.bin"] {
        let p = dir.join(legacy);
        if p.is_file() {
            reject_pickle(&p)?;
        }
    }
    Err(Error::Weights(format!(
        "{}: no model.safetensors (or model.safetensors.index.json) in this directory",
        dir.display()
    )))
}

/// CLIP mean/std from `preprocessor_config.json` when the checkpoint ships one.
fn preprocess_for(dir: Option<&Path>, image_size: usize) -> Result<Preprocess> {
    let mut p = Preprocess {
        image_size,
        mean: CLIP_MEAN,
        std: CLIP_STD,
    };
    let Some(path) = dir.map(|d| d.join("preprocessor_config.json")).filter(|p| p.is_file()) else {
        return Ok(p);
    };
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::Config(format!("{}: not valid JSON: {e}", path.display())))?;
    let triple = |key: &str| -> Result<Option<[f32; 3]>> {
        match v.get(key) {
            None => Ok(None),
            Some(x) => serde_json::from_value::<[f32; 3]>(x.clone())
                .map(Some)
                .map_err(|e| Error::Config(format!("{}: `{key}` must be three numbers ({e})", path.display()))),
        }
    };
    if let Some(m) = triple("image_mean")? {
        p.mean = m;
    }
    if let Some(s) = triple("image_std")? {
        p.std = s;
    }
    Ok(p)
}

/// Opens `path` (an HF directory or a safetensors file in either layout) on `device`.
pub fn load_clip<B: Backend>(path: &Path, opts: &LoadOptions, device: &B::Device) -> Result<LoadedClip<B>> {
    if !path.exists() {
        return Err(not_found(path));
    }
    let explicit = match opts.config.as_deref() {
        Some(p) => Some((ClipConfig::from_json_file(p)?, p.display().to_string())),
        None => None,
    };
    let dir = path.is_dir().then_some(path);
    let (store, config_json) = match dir {
        Some(d) => (
            SafetensorsStore::open(&hf_weight_files(d)?)?,
            Some(d.join("config.json")),
        ),
        None => {
            reject_pickle(path)?;
            (SafetensorsStore::open(&[path.to_path_buf()])?, None)
        }
    };
    let layout = detect_layout(&store)?;
    let (config, config_source, mut source): (ClipConfig, String, Box<dyn WeightSource>) = match layout {
        Layout::HuggingFace => {
            let (config, from) = match (explicit, config_json) {
                (Some(c), _) => c,
                (None, Some(cj)) if cj.is_file() => (ClipConfig::from_json_file(&cj)?, cj.display().to_string()),
                (None, Some(cj)) => return Err(Error::Config(format!("{} is missing; pass --config", cj.display()))),
                (None, None) => {
                    return Err(Error::Config(
                        "an HF-layout safetensors file carries no config: pass --config config.json".into(),
                    ))
                }
            };
            (config, from, Box::new(HfLayout::new(store)))
        }
        Layout::OpenAi => {
            let src = OpenAiLayout::new(store);
            let (config, from) = match explicit {
                Some(c) => c,
                None => {
                    // The weights cannot tell QuickGELU (OpenAI) from GELU (most LAION open_clip
                    // models); the source string says which was assumed.
                    let (name, c) = src.infer_config()?;
                    (c, format!("inferred from tensor shapes: OpenAI {name} (QuickGELU)"))
                }
            };
            (config, from, Box::new(src))
        }
    };
    let model = config.init::<B>(source.as_mut(), device)?.freeze();
    let context = config.text.max_position_embeddings;
    let tokenizer = match (&opts.tokenizer, dir.map(|d| d.join("tokenizer.json")).filter(|p| p.is_file())) {
        (Some(t), _) => ClipTokenizer::from_file(t, context)?,
        (None, Some(t)) => ClipTokenizer::from_file(&t, context)?,
        (None, None) if config.text.vocab_size == 49408 => ClipTokenizer::openai(context)?,
        (None, None) => {
            return Err(Error::Tokenizer(format!(
                "the model's vocabulary has {} tokens, not OpenAI's 49408, and no tokenizer.json was found: pass --tokenizer",
                config.text.vocab_size
            )))
        }
    };
    if tokenizer.vocab_size() > config.text.vocab_size {
        return Err(Error::Tokenizer(format!(
            "tokenizer has {} tokens but the model's vocabulary has {}: they do not belong together",
            tokenizer.vocab_size(),
            config.text.vocab_size
        )));
    }
    let preprocess = preprocess_for(dir, config.vision.image_size)?;
    Ok(LoadedClip {
        config,
        model,
        tokenizer,
        preprocess,
        layout,
        config_source,
    })
}
