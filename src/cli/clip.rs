//! `gram-bench clip embed`: embed images and texts with a CLIP checkpoint directly.

use std::path::PathBuf;

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::backend::{dispatch, BackendKind, Precision, WithBackend};
use crate::clip::preprocess::{load_rgb_for, Processor};
use crate::clip::{load_clip, Layout, LoadOptions, VisionPrompts};
use crate::error::{Error, Result};

#[derive(Subcommand, Debug)]
pub enum ClipCommand {
    /// Embed images and texts; prints one JSON object with L2-normalized embeds and logits.
    Embed(EmbedArgs),
}

#[derive(Args, Debug)]
pub struct EmbedArgs {
    /// HF checkpoint directory, or an OpenAI/open_clip state dict saved as .safetensors.
    #[arg(long)]
    pub model: PathBuf,
    /// Config overriding the checkpoint's (HF config.json or open_clip model config JSON).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// tokenizer.json or bpe_simple_vocab_16e6.txt.gz.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// An image file to embed (repeatable).
    #[arg(long = "image")]
    pub images: Vec<PathBuf>,
    /// A text to embed (repeatable).
    #[arg(long = "text")]
    pub texts: Vec<String>,
    /// cpu, wgpu or cuda (the last two need the matching cargo feature).
    #[arg(long, default_value = "cpu")]
    pub backend: BackendKind,
    /// Whose image preprocessing to follow: dassl (CoOp/Dassl and open_clip's torchvision transform,
    /// which the papers used: alpha dropped, crop offset rounded) or transformers
    /// (CLIPImageProcessor: transparency composited onto white, crop offset floored).
    #[arg(long, value_enum, default_value = "dassl")]
    pub processor: Processor,
    /// The float format the model computes in: f32, f16 or bf16 (outputs are written as f32).
    #[arg(long, default_value = "f32")]
    pub precision: Precision,
}

#[derive(Serialize, Debug)]
pub struct EmbedOutput {
    pub model: String,
    pub layout: &'static str,
    /// Where the architecture came from (config file, or the named checkpoint the shapes matched).
    pub config: String,
    pub backend: String,
    pub precision: String,
    /// Whose image preprocessing was followed ("dassl" or "transformers").
    pub processor: String,
    pub images: Vec<String>,
    pub texts: Vec<String>,
    pub image_embeds: Vec<Vec<f32>>,
    pub text_embeds: Vec<Vec<f32>>,
    /// `[images][texts]`; empty when either side is.
    pub logits_per_image: Vec<Vec<f32>>,
}

pub(super) fn rows<B: Backend>(t: Tensor<B, 2>) -> Result<Vec<Vec<f32>>> {
    let [r, c] = t.dims();
    let flat: Vec<f32> = t
        .into_data()
        .convert::<f32>()
        .into_vec()
        .map_err(|e| Error::Internal(format!("reading a tensor back: {e:?}")))?;
    Ok((0..r).map(|i| flat[i * c..(i + 1) * c].to_vec()).collect())
}

struct Embed<'a>(&'a EmbedArgs);

impl WithBackend for Embed<'_> {
    type Output = Result<EmbedOutput>;
    fn run<B: Backend>(self, device: B::Device) -> Result<EmbedOutput> {
        let a = self.0;
        let opts = LoadOptions {
            config: a.config.clone(),
            tokenizer: a.tokenizer.clone(),
        };
        // Decode every image before the model loads, so a bad file fails fast.
        let pixels = a
            .images
            .iter()
            .map(|p| load_rgb_for(p, a.processor))
            .collect::<Result<Vec<_>>>()?;
        let clip = load_clip::<B>(&a.model, &opts, &device)?;
        if clip.config_source.starts_with("inferred") {
            eprintln!(
                "note: architecture {}; for an open_clip model trained with GELU pass --config",
                clip.config_source
            );
        }
        let model = &clip.model;
        let image_features = (!pixels.is_empty()).then(|| {
            let crops: Vec<_> = pixels
                .iter()
                .map(|p| clip.preprocess.eval_u8_for(p, a.processor))
                .collect();
            model.encode_image(clip.preprocess.batch::<B>(&crops, &device), &VisionPrompts::default())
        });
        let text_features = if a.texts.is_empty() {
            None
        } else {
            Some(model.encode_text(&clip.tokenizer, &a.texts)?)
        };
        let logits = match (&image_features, &text_features) {
            (Some(i), Some(t)) => rows(model.logits_per_image(i.clone(), t.clone()))?,
            _ => Vec::new(),
        };
        let norm = |f: Option<Tensor<B, 2>>| f.map(|f| rows(crate::clip::Clip::<B>::normalize(f))).transpose();
        Ok(EmbedOutput {
            model: a.model.display().to_string(),
            layout: match clip.layout {
                Layout::HuggingFace => "huggingface",
                Layout::OpenAi => "openai",
            },
            config: clip.config_source.clone(),
            backend: a.backend.to_string(),
            precision: a.precision.to_string(),
            processor: format!("{:?}", a.processor).to_lowercase(),
            images: a.images.iter().map(|p| p.display().to_string()).collect(),
            texts: a.texts.clone(),
            image_embeds: norm(image_features)?.unwrap_or_default(),
            text_embeds: norm(text_features)?.unwrap_or_default(),
            logits_per_image: logits,
        })
    }
}

pub fn embed(args: &EmbedArgs) -> Result<EmbedOutput> {
    if args.images.is_empty() && args.texts.is_empty() {
        return Err(Error::Input(
            "nothing to embed: give at least one --image or --text".into(),
        ));
    }
    if let Some(bad) = args.texts.iter().find(|t| t.len() > 1 << 16) {
        return Err(Error::Input(format!(
            "--text of {} bytes is too long to be a prompt",
            bad.len()
        )));
    }
    dispatch(args.backend, args.precision, Embed(args))?
}
