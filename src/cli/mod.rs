//! The `gram-bench` command line.

use std::path::PathBuf;

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::backend::{dispatch, BackendKind, WithBackend};
use crate::clip::preprocess::load_rgb;
use crate::clip::{load_clip, Layout, LoadOptions, VisionPrompts};
use crate::error::{Error, Result};
use crate::run::Overwrite;

mod commands;

#[derive(Parser, Debug)]
#[command(name = "gram-bench", version, about = "Reproducibility suite for CLIP prompt tuning")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List the suites in a directory (default: suites/).
    List(ListArgs),
    /// Check a suite file: strict schema, references, protocols.
    Validate(SuiteArg),
    /// Show a suite's cells: done, missing or failed, and the estimated cost of the rest.
    Plan(PlanArgs),
    /// Run a suite's cells (resuming: cells with a record are skipped).
    Run(RunArgs),
    /// Aggregate a suite's records and write reports/<suite>/{report.md, aggregate.csv, aggregate.json}.
    Report(ReportArgs),
    /// Save baselines from our own runs (baselines/NAME.json).
    #[command(subcommand)]
    Baseline(BaselineCommand),
    /// Compare a suite's records with a saved baseline; non-zero exit on any regression or missing metric.
    Check(CheckArgs),
    /// Build (once) and describe the embedded world and its micro-CLIP.
    World(WorldArgs),
    /// datasets.lock helpers.
    #[command(subcommand)]
    Lock(LockCommand),
    /// Pin and check the CoOp datasets under a data root.
    #[command(subcommand)]
    Datasets(DatasetsCommand),
    /// Work with a CLIP checkpoint directly.
    #[command(subcommand)]
    Clip(ClipCommand),
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[arg(default_value = "suites")]
    pub dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct SuiteArg {
    pub suite: PathBuf,
    /// The lock file that pins backbones.
    #[arg(long, default_value = "datasets.lock")]
    pub lock: PathBuf,
    /// CoOp's data folder (default: $GRAM_BENCH_DATA, else $DATA).
    #[arg(long)]
    pub data_root: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// Results store (one folder per suite inside).
    #[arg(long, default_value = "results")]
    pub store: PathBuf,
    /// Cache for built worlds (default: $GRAM_BENCH_CACHE, else ~/.cache/gram-bench).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// The lock file that pins backbones.
    #[arg(long, default_value = "datasets.lock")]
    pub lock: PathBuf,
    /// CoOp's data folder (default: $GRAM_BENCH_DATA, else $DATA).
    #[arg(long)]
    pub data_root: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    pub suite: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Only cells matching FIELD=VALUE (fields: method, dataset, target, phase, shots, seed; repeatable).
    #[arg(long, value_parser = parse_filter)]
    pub only: Vec<(String, String)>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    pub suite: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
    /// cpu, wgpu or cuda (the last two need the matching cargo feature).
    #[arg(long, default_value = "cpu")]
    pub backend: BackendKind,
    /// Only cells matching FIELD=VALUE (fields: method, dataset, target, phase, shots, seed; repeatable).
    #[arg(long, value_parser = parse_filter)]
    pub only: Vec<(String, String)>,
    /// Which existing records to recompute.
    #[arg(long, value_enum, default_value = "only-missing")]
    pub overwrite: Overwrite,
    /// Where the report written after the run goes.
    #[arg(long, default_value = "reports")]
    pub out: PathBuf,
    /// Do not write the report after the run.
    #[arg(long)]
    pub no_report: bool,
    /// Run even when a dataset's split definition differs from its datasets.lock pin.
    #[arg(long)]
    pub allow_changed_data: bool,
    /// Encode test images in every cell instead of reusing cached image features of the frozen
    /// encoder (same numbers, slower; for timing the cache's saving).
    #[arg(long)]
    pub no_feature_cache: bool,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    pub suite: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Where reports go.
    #[arg(long, default_value = "reports")]
    pub out: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum BaselineCommand {
    /// Save the current aggregate of SUITE as baselines/NAME.json.
    Save(BaselineSaveArgs),
}

#[derive(Args, Debug)]
pub struct BaselineSaveArgs {
    pub name: String,
    pub suite: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
    #[arg(long, default_value = "baselines")]
    pub dir: PathBuf,
    /// Replace an existing baseline of that name.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    pub suite: PathBuf,
    /// A saved baseline name (baselines/NAME.json) or a path to one.
    #[arg(long)]
    pub baseline: String,
    #[command(flatten)]
    pub store: StoreArgs,
    #[arg(long, default_value = "baselines")]
    pub dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct WorldArgs {
    /// The suite whose [world] table to build.
    pub suite: PathBuf,
    #[arg(long)]
    pub cache: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum LockCommand {
    /// Print the SHA-256 that datasets.lock pins for a checkpoint (HF directory or .safetensors).
    Digest { path: PathBuf },
}

#[derive(Subcommand, Debug)]
pub enum DatasetsCommand {
    /// Pin the named datasets (default: every CoOp dataset found) in datasets.lock.
    Lock(DatasetsArgs),
    /// Check datasets against datasets.lock and for layout problems; non-zero exit on any finding.
    Verify(DatasetsArgs),
    /// Describe one dataset: where it is read from, its template, classes, splits and pin.
    Describe(DatasetsArgs),
}

#[derive(Args, Debug)]
pub struct DatasetsArgs {
    pub names: Vec<String>,
    /// CoOp's data folder (default: $GRAM_BENCH_DATA, else $DATA).
    #[arg(long)]
    pub data_root: Option<PathBuf>,
    #[arg(long, default_value = "datasets.lock")]
    pub lock: PathBuf,
    /// Also read every image a split lists: verify checks each exists, decodes and matches the
    /// pinned image digest; lock pins that digest.
    #[arg(long)]
    pub deep: bool,
    /// Include the datasets this suite file declares in its [datasets] table.
    #[arg(long)]
    pub suite: Option<PathBuf>,
}

fn parse_filter(s: &str) -> std::result::Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: expected FIELD=VALUE"))?;
    if !crate::suite::cells::FILTER_FIELDS.contains(&k) {
        return Err(format!(
            "`{k}` is not a cell field (fields: {})",
            crate::suite::cells::FILTER_FIELDS.join(", ")
        ));
    }
    Ok((k.to_string(), v.to_string()))
}

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
}

#[derive(Serialize, Debug)]
pub struct EmbedOutput {
    pub model: String,
    pub layout: &'static str,
    /// Where the architecture came from (config file, or the named checkpoint the shapes matched).
    pub config: String,
    pub backend: String,
    pub images: Vec<String>,
    pub texts: Vec<String>,
    pub image_embeds: Vec<Vec<f32>>,
    pub text_embeds: Vec<Vec<f32>>,
    /// `[images][texts]`; empty when either side is.
    pub logits_per_image: Vec<Vec<f32>>,
}

fn rows<B: Backend>(t: Tensor<B, 2>) -> Result<Vec<Vec<f32>>> {
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
        let pixels = a.images.iter().map(|p| load_rgb(p)).collect::<Result<Vec<_>>>()?;
        let clip = load_clip::<B>(&a.model, &opts, &device)?;
        if clip.config_source.starts_with("inferred") {
            eprintln!(
                "note: architecture {}; for an open_clip model trained with GELU pass --config",
                clip.config_source
            );
        }
        let model = &clip.model;
        let image_features = (!pixels.is_empty()).then(|| {
            let crops: Vec<_> = pixels.iter().map(|p| clip.preprocess.eval_u8(p)).collect();
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
    dispatch(args.backend, Embed(args))?
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::List(a) => commands::list(&a.dir),
        Command::Validate(a) => commands::validate(&a.suite, &a.lock, a.data_root),
        Command::Datasets(DatasetsCommand::Lock(a)) => commands::datasets_lock(&a),
        Command::Datasets(DatasetsCommand::Verify(a)) => commands::datasets_verify(&a),
        Command::Datasets(DatasetsCommand::Describe(a)) => commands::datasets_describe(&a),
        Command::Lock(LockCommand::Digest { path }) => {
            println!("{}", crate::lock::weights_digest(&path)?);
            Ok(())
        }
        Command::Plan(a) => commands::plan(&a),
        Command::Run(a) => commands::run(&a),
        Command::Report(a) => commands::report(&a),
        Command::Baseline(BaselineCommand::Save(a)) => commands::baseline_save(&a),
        Command::Check(a) => commands::check(&a),
        Command::World(a) => commands::world(&a),
        Command::Clip(ClipCommand::Embed(args)) => {
            let out = embed(&args)?;
            let json = serde_json::to_string(&out).map_err(|e| Error::Internal(e.to_string()))?;
            println!("{json}");
            Ok(())
        }
    }
}
