//! Where backbone weights come from. The model is built by asking a [`WeightSource`] for each tensor
//! by its HF key (the single naming the model code knows); sources translate that key to their file
//! layout, check shapes, convert dtypes, and refuse to finish while any file tensor is left unused.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use safetensors::{Dtype, SafeTensors};

use super::config::{Activation, ClipConfig, ClipTextConfig, ClipVisionConfig};
use crate::error::{Error, Result};

/// A source of named f32 tensors for building the backbone.
pub trait WeightSource {
    /// The tensor for HF key `name`, which must have `shape` (row-major data).
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>>;
    /// Called once the model is built: an error if the file held tensors the model did not use.
    fn finish(&mut self) -> Result<()>;
}

struct Entry {
    file: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Range<usize>,
}

/// The tensors of one or more safetensors files, read once.
pub struct SafetensorsStore {
    files: Vec<(PathBuf, Vec<u8>)>,
    index: BTreeMap<String, Entry>,
}

impl SafetensorsStore {
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::new();
        let mut index = BTreeMap::new();
        for (i, path) in paths.iter().enumerate() {
            let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            let (header, meta) = SafeTensors::read_metadata(&bytes)
                .map_err(|e| Error::Weights(format!("{}: not a safetensors file ({e})", path.display())))?;
            let base = 8 + header;
            for (name, info) in meta.tensors() {
                let (a, b) = info.data_offsets;
                index.insert(
                    name,
                    Entry {
                        file: i,
                        dtype: info.dtype,
                        shape: info.shape.clone(),
                        bytes: base + a..base + b,
                    },
                );
            }
            files.push((path.clone(), bytes));
        }
        // Checkpoints saved from a DistributedDataParallel wrapper carry a `module.` prefix on every key.
        if !index.is_empty() && index.keys().all(|k| k.starts_with("module.")) {
            index = index
                .into_iter()
                .map(|(k, v)| (k["module.".len()..].to_string(), v))
                .collect();
        }
        Ok(Self { files, index })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.index.get(name).map(|e| e.shape.as_slice())
    }

    fn describe(&self) -> String {
        self.files
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Reads a tensor as f32, whatever its stored float type.
    pub fn read(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let e = self
            .index
            .get(name)
            .ok_or_else(|| Error::Weights(format!("missing tensor `{name}` in {}", self.describe())))?;
        let raw = &self.files[e.file].1[e.bytes.clone()];
        let data: Vec<f32> = match e.dtype {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::F64 => raw
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("chunks_exact(8)")) as f32)
                .collect(),
            other => {
                return Err(Error::Weights(format!(
                    "tensor `{name}` has dtype {other:?}; only F32, F16, BF16 and F64 weights load"
                )))
            }
        };
        let n: usize = e.shape.iter().product();
        if data.len() != n {
            return Err(Error::Weights(format!(
                "tensor `{name}`: {} bytes do not hold shape {:?} of {:?}",
                raw.len(),
                e.shape,
                e.dtype
            )));
        }
        Ok((e.shape.clone(), data))
    }
}

/// Shapes agree, counting a 0-dim scalar (HF's `logit_scale`) and a `[1]` tensor as the same.
fn same_shape(found: &[usize], expected: &[usize]) -> bool {
    found == expected || (found.iter().product::<usize>() == 1 && expected.iter().product::<usize>() == 1)
}

fn shape_error(name: &str, found: &[usize], expected: &[usize]) -> Error {
    Error::Weights(format!("tensor `{name}` has shape {found:?}, expected {expected:?}"))
}

fn unexpected_error(left: &[String]) -> Error {
    let shown: Vec<&str> = left.iter().take(8).map(String::as_str).collect();
    let more = if left.len() > 8 {
        format!(" (and {} more)", left.len() - 8)
    } else {
        String::new()
    };
    Error::Weights(format!(
        "{} unexpected tensor(s) the model does not use: {}{more}",
        left.len(),
        shown.join(", ")
    ))
}

/// Buffers some HF checkpoints persist that carry no learned value.
fn is_ignorable_hf_buffer(name: &str) -> bool {
    name.ends_with("embeddings.position_ids")
}

/// An HF `CLIPModel` checkpoint: keys are used as they are.
pub(crate) struct HfLayout {
    store: SafetensorsStore,
    used: BTreeSet<String>,
}

impl HfLayout {
    pub fn new(store: SafetensorsStore) -> Self {
        Self {
            store,
            used: BTreeSet::new(),
        }
    }
}

impl WeightSource for HfLayout {
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (found, data) = self.store.read(name)?;
        if !same_shape(&found, shape) {
            return Err(shape_error(name, &found, shape));
        }
        self.used.insert(name.to_string());
        Ok(data)
    }

    fn finish(&mut self) -> Result<()> {
        let left: Vec<String> = self
            .store
            .names()
            .filter(|n| !self.used.contains(*n) && !is_ignorable_hf_buffer(n))
            .map(str::to_string)
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(unexpected_error(&left))
        }
    }
}

/// How an HF key is read from an OpenAI/open_clip state dict.
enum Map {
    Same(String),
    /// `x @ proj` layouts: the HF Linear weight is the transpose.
    Transposed(String),
    /// One of q/k/v out of a fused `in_proj_*` tensor (cat along dim 0).
    Chunk(String, usize),
}

/// An OpenAI / open_clip state dict (`visual.conv1.weight`, `transformer.resblocks.N.attn.in_proj_weight`, ...).
pub(crate) struct OpenAiLayout {
    store: SafetensorsStore,
    used: BTreeSet<String>,
}

impl OpenAiLayout {
    pub fn new(store: SafetensorsStore) -> Self {
        Self {
            store,
            used: BTreeSet::new(),
        }
    }

    fn map(name: &str) -> Result<Map> {
        let none = || Error::Weights(format!("no OpenAI-layout equivalent for `{name}`"));
        let (tower, rest) = if let Some(r) = name.strip_prefix("text_model.") {
            ("", r)
        } else if let Some(r) = name.strip_prefix("vision_model.") {
            ("visual.", r)
        } else {
            return Ok(match name {
                "logit_scale" => Map::Same("logit_scale".into()),
                "text_projection.weight" => Map::Transposed("text_projection".into()),
                "visual_projection.weight" => Map::Transposed("visual.proj".into()),
                _ => return Err(none()),
            });
        };
        if let Some(layer) = rest.strip_prefix("encoder.layers.") {
            let (n, key) = layer.split_once('.').ok_or_else(none)?;
            let p = format!("{tower}transformer.resblocks.{n}.");
            let qkv = key.strip_prefix("self_attn.").and_then(|k| k.split_once("_proj."));
            if let Some((which @ ("q" | "k" | "v"), param)) = qkv {
                let i = "qkv".find(which).expect("matched q|k|v");
                return Ok(Map::Chunk(format!("{p}attn.in_proj_{param}"), i));
            }
            let key = key
                .replace("self_attn.out_proj", "attn.out_proj")
                .replace("layer_norm1", "ln_1")
                .replace("layer_norm2", "ln_2")
                .replace("mlp.fc1", "mlp.c_fc")
                .replace("mlp.fc2", "mlp.c_proj");
            return Ok(Map::Same(format!("{p}{key}")));
        }
        let key = match rest {
            "embeddings.token_embedding.weight" => "token_embedding.weight",
            "embeddings.position_embedding.weight" => "positional_embedding",
            "final_layer_norm.weight" => "ln_final.weight",
            "final_layer_norm.bias" => "ln_final.bias",
            "embeddings.class_embedding" => "class_embedding",
            "embeddings.patch_embedding.weight" => "conv1.weight",
            "pre_layrnorm.weight" => "ln_pre.weight",
            "pre_layrnorm.bias" => "ln_pre.bias",
            "post_layernorm.weight" => "ln_post.weight",
            "post_layernorm.bias" => "ln_post.bias",
            _ => return Err(none()),
        };
        Ok(Map::Same(format!("{tower}{key}")))
    }

    /// Infers the architecture from tensor shapes; see [`infer_openai_config`].
    pub(crate) fn infer_config(&self) -> Result<(&'static str, ClipConfig)> {
        let names: Vec<&str> = self.store.names().collect();
        infer_openai_config(&names, |n| self.store.shape(n).map(<[usize]>::to_vec))
    }
}

/// Infers the architecture from the shapes of an OpenAI-layout state dict, as OpenAI's `build_model`
/// does, except the head count: that is not in the file, so the shapes must match a named
/// checkpoint config exactly, or the caller must supply a config.
/// Returns the matched checkpoint name with its config.
pub(crate) fn infer_openai_config(
    names: &[&str],
    shape: impl Fn(&str) -> Option<Vec<usize>>,
) -> Result<(&'static str, ClipConfig)> {
    let dim = |name: &str, i: usize| -> Result<usize> {
        shape(name)
            .and_then(|sh| sh.get(i).copied())
            .ok_or_else(|| Error::Weights(format!("OpenAI-layout checkpoint lacks `{name}`")))
    };
    let count = |prefix: &str| {
        names
            .iter()
            .filter(|n| n.starts_with(prefix) && n.ends_with(".attn.in_proj_weight"))
            .count()
    };
    let v_width = dim("visual.conv1.weight", 0)?;
    let patch = dim("visual.conv1.weight", 3)?;
    let grid = ((dim("visual.positional_embedding", 0)?.saturating_sub(1)) as f64)
        .sqrt()
        .round() as usize;
    let t_width = dim("ln_final.weight", 0)?;
    let vocab = dim("token_embedding.weight", 0)?;
    let inferred = ClipConfig::new(
        ClipTextConfig::new(
            vocab,
            t_width,
            dim("transformer.resblocks.0.mlp.c_fc.weight", 0)?,
            count("transformer.resblocks."),
            t_width / 64,
            dim("positional_embedding", 0)?,
            Activation::QuickGelu,
            1e-5,
            vocab.saturating_sub(1) as u32,
        ),
        ClipVisionConfig::new(
            v_width,
            dim("visual.transformer.resblocks.0.mlp.c_fc.weight", 0)?,
            count("visual.transformer.resblocks."),
            v_width / 64,
            patch * grid,
            patch,
            Activation::QuickGelu,
            1e-5,
        ),
        dim("text_projection", 1)?,
    );
    let same_shapes = |c: &ClipConfig| {
        let mut a = c.clone();
        a.text.num_attention_heads = inferred.text.num_attention_heads;
        a.vision.num_attention_heads = inferred.vision.num_attention_heads;
        a.text.eos_token_id = inferred.text.eos_token_id;
        a == inferred
    };
    ClipConfig::named()
        .into_iter()
        .find(|(_, c)| same_shapes(c))
        .map(|(n, c)| (n[0], c))
        .ok_or_else(|| {
            Error::Config(format!(
                "this OpenAI-layout checkpoint (text width {}, vision width {}, patch {}, image {}) matches none of \
             ViT-B/32, ViT-B/16, ViT-L/14, ViT-L/14@336, and attention head counts are not stored in the file: \
             pass --config with an HF config.json or an open_clip model config",
                inferred.text.hidden_size,
                inferred.vision.hidden_size,
                patch,
                patch * grid
            ))
        })
}

/// Row-major `[rows, cols]` to row-major `[cols, rows]`.
pub(crate) fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

impl WeightSource for OpenAiLayout {
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (key, data) = match Self::map(name)? {
            Map::Same(key) => {
                let (found, data) = self.store.read(&key)?;
                if !same_shape(&found, shape) {
                    return Err(shape_error(&key, &found, shape));
                }
                (key, data)
            }
            Map::Transposed(key) => {
                let (found, data) = self.store.read(&key)?;
                let want = [shape[1], shape[0]];
                if found != want {
                    return Err(shape_error(&key, &found, &want));
                }
                (key, transpose(&data, want[0], want[1]))
            }
            Map::Chunk(key, i) => {
                let (found, data) = self.store.read(&key)?;
                let mut want = shape.to_vec();
                want[0] *= 3;
                if found != want {
                    return Err(shape_error(&key, &found, &want));
                }
                let n = data.len() / 3;
                (key, data[i * n..(i + 1) * n].to_vec())
            }
        };
        self.used.insert(key);
        Ok(data)
    }

    fn finish(&mut self) -> Result<()> {
        // open_clip keeps the causal mask as a buffer in some versions, and OpenAI's TorchScript
        // archives carry their config as scalars (OpenAI's own `build_model` deletes them before
        // loading): none holds anything learned, and the named config fixes the shapes.
        const NOT_WEIGHTS: [&str; 4] = ["attn_mask", "input_resolution", "context_length", "vocab_size"];
        let left: Vec<String> = self
            .store
            .names()
            .filter(|n| !self.used.contains(*n) && !NOT_WEIGHTS.contains(n))
            .map(str::to_string)
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(unexpected_error(&left))
        }
    }
}

/// Seeded random weights with CLIP-like scales, for benchmarks and for training from scratch.
pub struct RandomInit {
    rng: rand_chacha::ChaCha8Rng,
}

impl RandomInit {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed),
        }
    }
}

impl WeightSource for RandomInit {
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let n: usize = shape.iter().product();
        let is_norm = name.contains("norm") || name.contains("layrnorm");
        if name == "logit_scale" {
            return Ok(vec![(1.0f32 / 0.07).ln()]);
        }
        if is_norm {
            return Ok(vec![if name.ends_with("weight") { 1.0 } else { 0.0 }; n]);
        }
        if name.ends_with("bias") {
            return Ok(vec![0.0; n]);
        }
        let fan_in = if shape.len() > 1 {
            shape[1..].iter().product::<usize>()
        } else {
            shape[0]
        };
        let std = if name.contains("embedding") {
            0.02
        } else {
            (fan_in as f32).powf(-0.5)
        };
        // Box-Muller keeps this free of extra distribution crates.
        Ok((0..n)
            .map(|_| {
                let u1: f32 = self.rng.random::<f32>().max(1e-7);
                let u2: f32 = self.rng.random::<f32>();
                std * (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
            })
            .collect())
    }

    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

/// The layout of a checkpoint, found from the tensor names it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    HuggingFace,
    OpenAi,
}

pub(crate) fn detect_layout(store: &SafetensorsStore) -> Result<Layout> {
    if store.contains("vision_model.embeddings.patch_embedding.weight") {
        Ok(Layout::HuggingFace)
    } else if store.contains("visual.conv1.weight") {
        Ok(Layout::OpenAi)
    } else {
        let sample: Vec<&str> = store.names().take(5).collect();
        Err(Error::Weights(format!(
            "not a CLIP checkpoint in HF or OpenAI layout: neither `vision_model.embeddings.patch_embedding.weight` \
             nor `visual.conv1.weight` is present (first keys: {})",
            sample.join(", ")
        )))
    }
}

/// Rejects PyTorch pickles with a message that says how to convert them.
pub(crate) fn reject_pickle(path: &Path) -> Result<()> {
    let mut head = [0u8; 9];
    let mut len = 0u64;
    if let Ok(mut f) = std::fs::File::open(path) {
        use std::io::Read;
        let _ = f.read(&mut head);
        len = f.metadata().map(|m| m.len()).unwrap_or(0);
    }
    let is_zip = head[..4] == *b"PK\x03\x04";
    let is_pickle = is_pickle_head(&head, len);
    if !is_zip && !is_pickle {
        return Ok(());
    }
    let torchscript = is_zip && zip_mentions(path, b"constants.pkl");
    let what = if torchscript {
        "an OpenAI TorchScript archive (.pt)"
    } else {
        "a PyTorch pickle"
    };
    let load = if torchscript {
        "torch.jit.load(p, map_location='cpu').state_dict()"
    } else {
        "torch.load(p, map_location='cpu', weights_only=True)"
    };
    Err(Error::Weights(format!(
        "{} is {what}, which cannot be read without executing Python code; convert it once with: \
         python -c \"import torch, safetensors.torch as st; p='{}'; sd={load}; \
         st.save_file({{k: v.contiguous() for k, v in sd.items()}}, p.rsplit('.', 1)[0] + '.safetensors')\"",
        path.display(),
        path.display()
    )))
}

/// A pickle opens with PROTO (0x80) and a protocol number 2–5; a safetensors file opens with its
/// header's length (u64, little endian) and the header's `{`. Both can start `80 02`: a header of
/// 640 bytes does (about one file in 32 has a length whose low byte is 0x80), so a head that reads as
/// a safetensors header that fits in the file is not a pickle.
fn is_pickle_head(head: &[u8; 9], file_len: u64) -> bool {
    let header_len = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
    let safetensors = head[8] == b'{' && header_len.saturating_add(8) <= file_len;
    head[0] == 0x80 && (2..=5).contains(&head[1]) && !safetensors
}

fn zip_mentions(path: &Path, needle: &[u8]) -> bool {
    // The central directory lists member names in plain bytes at the end of the archive: read only
    // the last MiB, not a checkpoint that may be gigabytes.
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if f.seek(SeekFrom::Start(len.saturating_sub(1 << 20))).is_err() {
        return false;
    }
    let mut tail = Vec::new();
    if f.read_to_end(&mut tail).is_err() {
        return false;
    }
    tail.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_safetensors_header_of_640_bytes_is_not_taken_for_a_pickle() {
        // 640 = 0x0280: the file opens `80 02`, as a protocol-2 pickle does.
        let mut st = 640u64.to_le_bytes().to_vec();
        st.push(b'{');
        let head: [u8; 9] = st.try_into().unwrap();
        assert!(!is_pickle_head(&head, 648 + 4));
        // The same bytes in a file too short for that header are no safetensors file.
        assert!(is_pickle_head(&head, 100));
        assert!(is_pickle_head(b"\x80\x02}q\x00.\0\0\0", 6));
        assert!(is_pickle_head(b"\x80\x04\x95\x10\0\0\0\0\0", 1000));
        assert!(!is_pickle_head(b"\x80\x09}q\x00.\0\0\0", 9));
    }

    #[test]
    fn openai_key_mapping_matches_the_documented_table() {
        let m = |n: &str| match OpenAiLayout::map(n).unwrap() {
            Map::Same(k) => format!("same {k}"),
            Map::Transposed(k) => format!("T {k}"),
            Map::Chunk(k, i) => format!("chunk{i} {k}"),
        };
        assert_eq!(
            m("text_model.encoder.layers.3.self_attn.k_proj.weight"),
            "chunk1 transformer.resblocks.3.attn.in_proj_weight"
        );
        assert_eq!(
            m("vision_model.encoder.layers.0.self_attn.v_proj.bias"),
            "chunk2 visual.transformer.resblocks.0.attn.in_proj_bias"
        );
        assert_eq!(
            m("vision_model.encoder.layers.0.self_attn.out_proj.bias"),
            "same visual.transformer.resblocks.0.attn.out_proj.bias"
        );
        assert_eq!(
            m("text_model.encoder.layers.11.mlp.fc2.weight"),
            "same transformer.resblocks.11.mlp.c_proj.weight"
        );
        assert_eq!(
            m("text_model.encoder.layers.1.layer_norm2.bias"),
            "same transformer.resblocks.1.ln_2.bias"
        );
        assert_eq!(m("visual_projection.weight"), "T visual.proj");
        assert_eq!(m("text_projection.weight"), "T text_projection");
        assert_eq!(m("vision_model.pre_layrnorm.weight"), "same visual.ln_pre.weight");
        assert_eq!(
            m("text_model.embeddings.position_embedding.weight"),
            "same positional_embedding"
        );
        assert!(OpenAiLayout::map("text_model.nonsense").is_err());
    }

    /// The shapes of an OpenAI ViT-B/16 state dict (docs/clip-layouts.md).
    fn vit_b_16_shapes() -> BTreeMap<String, Vec<usize>> {
        let mut m = BTreeMap::new();
        for (n, s) in [
            ("visual.conv1.weight", vec![768, 3, 16, 16]),
            ("visual.positional_embedding", vec![197, 768]),
            ("ln_final.weight", vec![512]),
            ("token_embedding.weight", vec![49408, 512]),
            ("positional_embedding", vec![77, 512]),
            ("text_projection", vec![512, 512]),
        ] {
            m.insert(n.to_string(), s);
        }
        for i in 0..12 {
            m.insert(
                format!("transformer.resblocks.{i}.attn.in_proj_weight"),
                vec![1536, 512],
            );
            m.insert(format!("transformer.resblocks.{i}.mlp.c_fc.weight"), vec![2048, 512]);
            m.insert(
                format!("visual.transformer.resblocks.{i}.attn.in_proj_weight"),
                vec![2304, 768],
            );
            m.insert(
                format!("visual.transformer.resblocks.{i}.mlp.c_fc.weight"),
                vec![3072, 768],
            );
        }
        m
    }

    #[test]
    fn openai_shapes_of_a_named_checkpoint_give_its_config() {
        let m = vit_b_16_shapes();
        let names: Vec<&str> = m.keys().map(String::as_str).collect();
        let (name, c) = infer_openai_config(&names, |n| m.get(n).cloned()).unwrap();
        assert_eq!((name, c), ("ViT-B/16", ClipConfig::vit_b_16()));
    }

    #[test]
    fn openai_shapes_of_an_unknown_model_ask_for_a_config() {
        let mut m = vit_b_16_shapes();
        m.insert("visual.positional_embedding".into(), vec![257, 768]); // 256px: no named config
        let names: Vec<&str> = m.keys().map(String::as_str).collect();
        let e = infer_openai_config(&names, |n| m.get(n).cloned())
            .unwrap_err()
            .to_string();
        assert!(e.contains("pass --config") && e.contains("image 256"), "{e}");
        m.remove("ln_final.weight");
        let names: Vec<&str> = m.keys().map(String::as_str).collect();
        let e = infer_openai_config(&names, |n| m.get(n).cloned())
            .unwrap_err()
            .to_string();
        assert!(e.contains("ln_final.weight"), "{e}");
    }

    #[test]
    fn transpose_is_a_transpose() {
        assert_eq!(transpose(&[1., 2., 3., 4., 5., 6.], 2, 3), vec![1., 4., 2., 5., 3., 6.]);
    }
}
