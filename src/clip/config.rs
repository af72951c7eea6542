//! CLIP architecture configs: constructors named after the real checkpoints, and readers for the
//! two config formats users have (HF `config.json`, open_clip model config JSON).

use std::path::Path;

use burn::config::Config;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// MLP non-linearity. OpenAI's checkpoints use QuickGELU; some LAION/HF models use exact GELU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    QuickGelu,
    Gelu,
}

impl Activation {
    fn from_hf(name: &str) -> Result<Self> {
        match name {
            "quick_gelu" => Ok(Self::QuickGelu),
            "gelu" => Ok(Self::Gelu),
            other => Err(Error::Config(format!(
                "hidden_act `{other}` is not supported (supported: quick_gelu, gelu)"
            ))),
        }
    }
}

#[derive(Config, Debug, PartialEq)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
    /// Pooling token. The legacy value 2 (old HF configs) means "pool at argmax(input_ids)".
    pub eos_token_id: u32,
}

#[derive(Config, Debug, PartialEq)]
pub struct ClipVisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
}

#[derive(Config, Debug, PartialEq)]
pub struct ClipConfig {
    pub text: ClipTextConfig,
    pub vision: ClipVisionConfig,
    pub projection_dim: usize,
}

impl ClipVisionConfig {
    pub(crate) fn num_patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }
    pub(crate) fn num_positions(&self) -> usize {
        self.num_patches() + 1
    }
}

const OPENAI_EOS: u32 = 49407;

fn openai_text(width: usize, heads: usize) -> ClipTextConfig {
    ClipTextConfig::new(
        49408,
        width,
        4 * width,
        12,
        heads,
        77,
        Activation::QuickGelu,
        1e-5,
        OPENAI_EOS,
    )
}

fn openai_vision(width: usize, layers: usize, heads: usize, image: usize, patch: usize) -> ClipVisionConfig {
    ClipVisionConfig::new(
        width,
        4 * width,
        layers,
        heads,
        image,
        patch,
        Activation::QuickGelu,
        1e-5,
    )
}

impl ClipConfig {
    /// OpenAI ViT-B/32 (`openai/clip-vit-base-patch32`).
    pub(crate) fn vit_b_32() -> Self {
        Self::new(openai_text(512, 8), openai_vision(768, 12, 12, 224, 32), 512)
    }
    /// OpenAI ViT-B/16 (`openai/clip-vit-base-patch16`).
    pub fn vit_b_16() -> Self {
        Self::new(openai_text(512, 8), openai_vision(768, 12, 12, 224, 16), 512)
    }
    /// OpenAI ViT-L/14 (`openai/clip-vit-large-patch14`).
    pub(crate) fn vit_l_14() -> Self {
        Self::new(openai_text(768, 12), openai_vision(1024, 24, 16, 224, 14), 768)
    }
    /// OpenAI ViT-L/14@336px (`openai/clip-vit-large-patch14-336`).
    pub(crate) fn vit_l_14_336() -> Self {
        Self::new(openai_text(768, 12), openai_vision(1024, 24, 16, 336, 14), 768)
    }

    /// The named checkpoint configs, with the names users type (OpenAI and open_clip spellings).
    pub fn named() -> Vec<(&'static [&'static str], ClipConfig)> {
        vec![
            (&["ViT-B/32", "ViT-B-32"][..], Self::vit_b_32()),
            (&["ViT-B/16", "ViT-B-16"][..], Self::vit_b_16()),
            (&["ViT-L/14", "ViT-L-14"][..], Self::vit_l_14()),
            (
                &["ViT-L/14@336px", "ViT-L/14@336", "ViT-L-14-336"][..],
                Self::vit_l_14_336(),
            ),
        ]
    }

    /// A named config, the name's case, `/`, `-`, `_` and `@` ignored: the names a lock file's
    /// keys use (`vit-b16`, `clip-vit-b16` is not one).
    pub(crate) fn by_loose_name(name: &str) -> Option<Self> {
        let squash = |s: &str| -> String {
            s.chars()
                .filter(|c| !matches!(c, '/' | '-' | '_' | '@'))
                .flat_map(char::to_lowercase)
                .collect()
        };
        let want = squash(name);
        Self::named()
            .into_iter()
            .find(|(names, _)| names.iter().any(|n| squash(n) == want))
            .map(|(_, c)| c)
    }

    /// Reads either an HF `config.json` or an open_clip model config (`embed_dim`, `vision_cfg`,
    /// `text_cfg`), whichever the file is.
    pub(crate) fn from_json_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::Config(format!("{}: not valid JSON: {e}", path.display())))?;
        let parsed = if value.get("vision_cfg").is_some() || value.get("embed_dim").is_some() {
            Self::from_open_clip_json(value)
        } else {
            Self::from_hf_json(value)
        };
        parsed.map_err(|e| match e {
            Error::Config(m) => Error::Config(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// HF `CLIPConfig` JSON. Missing keys take transformers' own `CLIPTextConfig` /
    /// `CLIPVisionConfig` defaults, exactly as `CLIPModel.from_pretrained` would.
    pub(crate) fn from_hf_json(value: serde_json::Value) -> Result<Self> {
        let cfg: HfClipConfig =
            serde_json::from_value(value).map_err(|e| Error::Config(format!("not an HF CLIP config: {e}")))?;
        // transformers rebuilds each tower from `*_config_dict` (with its defaults) when present and lets
        // that override `*_config` entirely, so the legacy key wins here too.
        let t = cfg
            .text_config_dict
            .or(cfg.text_config)
            .ok_or_else(|| Error::Config("HF CLIP config has no `text_config`".into()))?;
        let v = cfg
            .vision_config_dict
            .or(cfg.vision_config)
            .ok_or_else(|| Error::Config("HF CLIP config has no `vision_config`".into()))?;
        let text = ClipTextConfig::new(
            t.vocab_size,
            t.hidden_size,
            t.intermediate_size,
            t.num_hidden_layers,
            t.num_attention_heads,
            t.max_position_embeddings,
            Activation::from_hf(&t.hidden_act)?,
            t.layer_norm_eps,
            t.eos_token_id,
        );
        let vision = ClipVisionConfig::new(
            v.hidden_size,
            v.intermediate_size,
            v.num_hidden_layers,
            v.num_attention_heads,
            v.image_size,
            v.patch_size,
            Activation::from_hf(&v.hidden_act)?,
            v.layer_norm_eps,
        );
        let out = Self::new(text, vision, cfg.projection_dim);
        out.check()?;
        Ok(out)
    }

    /// open_clip model config (`ViT-B-16.json` style). open_clip derives the vision head count as
    /// width / head_width; both are explicit here when the file says so.
    pub(crate) fn from_open_clip_json(value: serde_json::Value) -> Result<Self> {
        let cfg: OpenClipConfig =
            serde_json::from_value(value).map_err(|e| Error::Config(format!("not an open_clip model config: {e}")))?;
        let v = cfg.vision_cfg;
        let t = cfg.text_cfg;
        let act = if cfg.quick_gelu {
            Activation::QuickGelu
        } else {
            Activation::Gelu
        };
        if !v.width.is_multiple_of(v.head_width) {
            return Err(Error::Config(format!(
                "vision_cfg.width {} is not a multiple of head_width {}",
                v.width, v.head_width
            )));
        }
        let text = ClipTextConfig::new(
            t.vocab_size,
            t.width,
            (t.width as f64 * t.mlp_ratio).round() as usize,
            t.layers,
            t.heads,
            t.context_length,
            act,
            1e-5,
            // open_clip pools at argmax(ids): the end-of-text token is the highest id.
            (t.vocab_size - 1) as u32,
        );
        let vision = ClipVisionConfig::new(
            v.width,
            (v.width as f64 * v.mlp_ratio).round() as usize,
            v.layers,
            v.width / v.head_width,
            v.image_size,
            v.patch_size,
            act,
            1e-5,
        );
        let out = Self::new(text, vision, cfg.embed_dim);
        out.check()?;
        Ok(out)
    }

    /// Structural sanity: a config that cannot describe a CLIP is rejected before any weight is read.
    pub fn check(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        for (tower, width, heads) in [
            ("text", self.text.hidden_size, self.text.num_attention_heads),
            ("vision", self.vision.hidden_size, self.vision.num_attention_heads),
        ] {
            if width == 0 || heads == 0 || width % heads != 0 {
                return bad(format!(
                    "{tower} hidden_size {width} is not divisible by num_attention_heads {heads}"
                ));
            }
        }
        if self.vision.patch_size == 0 || !self.vision.image_size.is_multiple_of(self.vision.patch_size) {
            return bad(format!(
                "vision image_size {} is not a multiple of patch_size {}",
                self.vision.image_size, self.vision.patch_size
            ));
        }
        if self.text.max_position_embeddings < 2 || self.text.vocab_size < 2 || self.projection_dim == 0 {
            return bad("text max_position_embeddings, vocab_size and projection_dim must be positive".into());
        }
        Ok(())
    }
}

// transformers' defaults for CLIPTextConfig / CLIPVisionConfig (used only where config.json is silent).
fn d_vocab() -> usize {
    49408
}
fn d_text_hidden() -> usize {
    512
}
fn d_text_mlp() -> usize {
    2048
}
fn d_text_heads() -> usize {
    8
}
fn d_vision_hidden() -> usize {
    768
}
fn d_vision_mlp() -> usize {
    3072
}
fn d_vision_heads() -> usize {
    12
}
fn d_layers() -> usize {
    12
}
fn d_max_pos() -> usize {
    77
}
fn d_act() -> String {
    "quick_gelu".into()
}
fn d_eps() -> f64 {
    1e-5
}
fn d_eos() -> u32 {
    49407
}
fn d_image() -> usize {
    224
}
fn d_patch() -> usize {
    32
}
fn d_proj() -> usize {
    512
}

#[derive(Deserialize)]
struct HfTextConfig {
    #[serde(default = "d_vocab")]
    vocab_size: usize,
    #[serde(default = "d_text_hidden")]
    hidden_size: usize,
    #[serde(default = "d_text_mlp")]
    intermediate_size: usize,
    #[serde(default = "d_layers")]
    num_hidden_layers: usize,
    #[serde(default = "d_text_heads")]
    num_attention_heads: usize,
    #[serde(default = "d_max_pos")]
    max_position_embeddings: usize,
    #[serde(default = "d_act")]
    hidden_act: String,
    #[serde(default = "d_eps")]
    layer_norm_eps: f64,
    #[serde(default = "d_eos")]
    eos_token_id: u32,
}

#[derive(Deserialize)]
struct HfVisionConfig {
    #[serde(default = "d_vision_hidden")]
    hidden_size: usize,
    #[serde(default = "d_vision_mlp")]
    intermediate_size: usize,
    #[serde(default = "d_layers")]
    num_hidden_layers: usize,
    #[serde(default = "d_vision_heads")]
    num_attention_heads: usize,
    #[serde(default = "d_image")]
    image_size: usize,
    #[serde(default = "d_patch")]
    patch_size: usize,
    #[serde(default = "d_act")]
    hidden_act: String,
    #[serde(default = "d_eps")]
    layer_norm_eps: f64,
}

// HF config.json carries many keys this crate has no use for (architectures, torch_dtype, ...):
// unknown keys are accepted here on purpose, unlike the project's own suite files.
#[derive(Deserialize)]
struct HfClipConfig {
    text_config: Option<HfTextConfig>,
    text_config_dict: Option<HfTextConfig>,
    vision_config: Option<HfVisionConfig>,
    vision_config_dict: Option<HfVisionConfig>,
    #[serde(default = "d_proj")]
    projection_dim: usize,
}

fn d_head_width() -> usize {
    64
}
fn d_mlp_ratio() -> f64 {
    4.0
}

#[derive(Deserialize)]
struct OpenClipVision {
    image_size: usize,
    layers: usize,
    width: usize,
    #[serde(default = "d_head_width")]
    head_width: usize,
    patch_size: usize,
    #[serde(default = "d_mlp_ratio")]
    mlp_ratio: f64,
}

#[derive(Deserialize)]
struct OpenClipText {
    #[serde(default = "d_max_pos")]
    context_length: usize,
    #[serde(default = "d_vocab")]
    vocab_size: usize,
    width: usize,
    heads: usize,
    layers: usize,
    #[serde(default = "d_mlp_ratio")]
    mlp_ratio: f64,
}

#[derive(Deserialize)]
struct OpenClipConfig {
    embed_dim: usize,
    /// open_clip's own default: GELU unless the config says `"quick_gelu": true` (the `-quickgelu`
    /// configs that OpenAI's weights need).
    #[serde(default)]
    quick_gelu: bool,
    vision_cfg: OpenClipVision,
    text_cfg: OpenClipText,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_configs_have_real_head_counts() {
        let l14 = ClipConfig::by_loose_name("ViT-L/14").unwrap();
        assert_eq!(l14.vision.num_attention_heads, 16);
        assert_eq!(l14.text.num_attention_heads, 12);
        assert_eq!(
            ClipConfig::by_loose_name("ViT-L/14@336px")
                .unwrap()
                .vision
                .num_positions(),
            577
        );
        assert_eq!(ClipConfig::vit_b_16().vision.num_positions(), 197);
        assert_eq!(ClipConfig::vit_b_32().vision.num_positions(), 50);
        assert!(ClipConfig::by_loose_name("ViT-H/14").is_none());
    }

    #[test]
    fn hf_json_reads_heads_from_the_file_and_applies_hf_defaults() {
        let v = serde_json::json!({
            "text_config": {"hidden_size": 64, "num_attention_heads": 4, "eos_token_id": 2},
            "vision_config": {"hidden_size": 64, "num_attention_heads": 2, "patch_size": 8, "image_size": 32},
            "projection_dim": 32, "architectures": ["CLIPModel"]
        });
        let c = ClipConfig::from_hf_json(v).unwrap();
        assert_eq!(c.text.num_attention_heads, 4);
        assert_eq!(c.vision.num_attention_heads, 2);
        assert_eq!(c.text.eos_token_id, 2);
        assert_eq!(c.text.vocab_size, 49408);
        assert_eq!(c.vision.num_hidden_layers, 12);
    }

    #[test]
    fn legacy_config_dicts_override_the_configs_as_transformers_does() {
        // The shape of openai/clip-vit-base-patch32's config.json: both keys, the `_dict` partial.
        let v = serde_json::json!({
            "text_config": {"hidden_size": 512, "num_attention_heads": 8, "eos_token_id": 2, "vocab_size": 49408},
            "text_config_dict": {"hidden_size": 512, "num_attention_heads": 8},
            "vision_config": {"hidden_size": 768, "num_attention_heads": 12, "patch_size": 32, "image_size": 224},
            "vision_config_dict": {"hidden_size": 768, "num_attention_heads": 12, "patch_size": 16},
            "projection_dim": 512
        });
        let c = ClipConfig::from_hf_json(v).unwrap();
        assert_eq!(c.vision.patch_size, 16);
        // eos_token_id absent from text_config_dict: CLIPTextConfig's default, not text_config's 2.
        assert_eq!(c.text.eos_token_id, 49407);
    }

    #[test]
    fn open_clip_configs_default_to_gelu_as_open_clip_does() {
        let base = serde_json::json!({
            "embed_dim": 512,
            "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12}
        });
        let c = ClipConfig::from_open_clip_json(base.clone()).unwrap();
        assert_eq!(c.text.hidden_act, Activation::Gelu);
        assert_eq!(c.vision.num_attention_heads, 12, "width / head_width (64)");
        let mut quick = base;
        quick["quick_gelu"] = serde_json::json!(true);
        let q = ClipConfig::from_open_clip_json(quick).unwrap();
        assert_eq!(
            q,
            ClipConfig::vit_b_32(),
            "ViT-B-32-quickgelu.json is OpenAI's ViT-B/32"
        );
    }

    #[test]
    fn bad_configs_are_rejected_with_the_reason() {
        let v = serde_json::json!({"text_config": {"hidden_size": 64, "num_attention_heads": 5}, "vision_config": {}});
        let e = ClipConfig::from_hf_json(v).unwrap_err().to_string();
        assert!(e.contains("not divisible"), "{e}");
        let v = serde_json::json!({"text_config": {"hidden_act": "relu"}, "vision_config": {}});
        assert!(ClipConfig::from_hf_json(v).unwrap_err().to_string().contains("relu"));
        let v = serde_json::json!({"vision_config": {}});
        assert!(ClipConfig::from_hf_json(v)
            .unwrap_err()
            .to_string()
            .contains("text_config"));
    }
}
