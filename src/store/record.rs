//! The record of one cell: what ran (the spec and the resolved config), on what (the digests of
//! every input), what came out (metrics, per-class accuracy, the training summary), where and how
//! long. Every field is typed; `Record`'s documentation lists them (docs/records.md, "Record
//! schema", points there and describes the store on disk), and this file is the reference.
//!
//! Format versions (`schema`):
//! - 1: the format since records exist; this build writes it and reads it. Records written before
//!   the record was typed are schema 1 with the same shape, so they are read as they are
//!   (`tests/fixtures/records/` holds such records and a test reads them).
//!
//! A record of another schema is refused with a message saying what to do (never silently
//! recomputed).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::data::images::BadImage;
use crate::error::{Error, Result};
use crate::methods::linear_probe::LinearProbeFit;
use crate::suite::cells::CellSpec;
use crate::suite::methods::MethodConfig;
use crate::suite::{BackboneSpec, DataConfig, EvalConfig};
use crate::world::WorldConfig;

/// The record format this build writes and reads.
pub(crate) const RECORD_SCHEMA: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// `ok`: the cell finished; its numbers are in `metrics`.
    Ok,
    /// `failed`: the cell stopped on an error or a panic; `error` says why. The suite's run goes on
    /// (and exits 1 at the end); `run --overwrite only-missing`, the default, computes the cell again.
    Failed,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassAccuracy {
    pub class: String,
    pub n: usize,
    pub correct: usize,
    pub accuracy: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Top-1 accuracy in percent over all test images (micro average, as Dassl reports).
    pub accuracy: f64,
    pub correct: usize,
    pub total: usize,
    /// Mean of the per-class accuracies (macro average).
    pub macro_accuracy: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    pub load_s: f64,
    pub train_s: f64,
    pub eval_s: f64,
    pub total_s: f64,
    /// Of `eval_s`: computing the test split's image features (0 when the feature cache had them).
    #[serde(default)]
    pub features_s: f64,
}

/// Where an evaluation's image features came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FeatureOrigin {
    /// The method changes the image encoder, or the cache is off: images encoded for this cell.
    Encoded,
    /// Computed by this cell and stored in the feature cache.
    Computed,
    /// Read from the feature cache.
    Cached,
}

/// What a meta-training cell's fit ended with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetaFit {
    /// Mean query loss of the last meta step.
    pub final_query_loss: Option<f64>,
    /// Mean mixing coefficient of the textual / visual regulator at the last step (None without one).
    pub final_text_coefficient: Option<f64>,
    pub final_vision_coefficient: Option<f64>,
    /// The cell continued from a checkpoint of an interrupted run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resumed_from_checkpoint: bool,
}

/// What a fit chose, for cells that are not (only) SGD steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FitSummary {
    /// A method fitted on frozen features (the linear probe's C).
    Features(LinearProbeFit),
    /// A GRAM meta-training run.
    Meta(MetaFit),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainSummary {
    pub epochs: usize,
    pub steps: usize,
    pub images: usize,
    /// Mean loss of each epoch (meta cells: the query loss of each meta step).
    pub epoch_loss: Vec<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fit: Option<FitSummary>,
    /// The epoch an interrupted run of this cell was resumed at, from its epoch checkpoint (the
    /// numbers are those of an uninterrupted run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_at_epoch: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    pub crate_version: String,
    pub git_commit: String,
    pub backend: String,
    pub device: String,
    pub os: String,
    /// The size of the thread pool the cell ran on (rayon's, which `RAYON_NUM_THREADS` sets), not
    /// the number of cores.
    pub threads: usize,
    /// Cells its run computed at once on that pool (`run --jobs`): its timings were taken with
    /// that many beside it. Absent: one.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub cells_at_once: usize,
    /// The machine's host name (absent in records made before it was recorded).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// The Slurm job the cell ran in, when it ran in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm: Option<SlurmJob>,
}

fn one() -> usize {
    1
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

/// Where in Slurm a cell ran: an array task is (array job id, task id) — Slurm gives the last task
/// to start the array's base id as its `SLURM_JOB_ID`, so that alone does not name a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlurmJob {
    /// `SLURM_ARRAY_JOB_ID`, or `SLURM_JOB_ID` for a job that is not an array task.
    pub job_id: String,
    /// `SLURM_ARRAY_TASK_ID`.
    pub array_task_id: Option<String>,
}

impl SlurmJob {
    /// From this process's environment (None outside Slurm).
    pub(crate) fn from_env() -> Option<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        match (var("SLURM_ARRAY_JOB_ID"), var("SLURM_ARRAY_TASK_ID")) {
            (Some(job_id), Some(task)) => Some(Self {
                job_id,
                array_task_id: Some(task),
            }),
            _ => var("SLURM_JOB_ID").map(|job_id| Self {
                job_id,
                array_task_id: None,
            }),
        }
    }

    /// `JOB_TASK` as Slurm's `%A_%a` spells it (`JOB` for a plain job).
    pub fn id(&self) -> String {
        match &self.array_task_id {
            Some(t) => format!("{}_{t}", self.job_id),
            None => self.job_id.clone(),
        }
    }
}

/// This machine's host name.
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default()
}

/// The configuration a cell ran with, as the suite resolved it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellConfig {
    pub backbone: BackboneSpec,
    /// The float format the cell computed in (absent: a record made before precision was a
    /// setting, which computed in f32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<crate::backend::Precision>,
    pub data: DataConfig,
    pub eval: EvalConfig,
    /// The method's config (None for a meta-training cell, whose config is its `[gram.NAME]` run,
    /// part of its key).
    pub method: Option<MethodConfig>,
    pub world: Option<WorldConfig>,
}

/// The released checkpoint a checkpoint cell loaded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointDigest {
    pub path: String,
    pub sha256: String,
}

/// The meta-training cell a gram cell took θ₀ and ψ_φ from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetaDigest {
    /// Its key.
    pub cell: String,
    /// SHA-256 of its artifact file.
    pub artifact_sha256: String,
    pub corpus_sha256: String,
}

/// Digests of everything a cell read (`{}` in a failed cell's record, which holds what the cell
/// ran with, where, and its error).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CellDigests {
    /// `micro-clip@world-<key>` or `<lock name>@sha256:<pin>`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub backbone: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointDigest>,
    /// Meta-training cells: the corpus's content digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corpus_sha256: Option<String>,
    /// Each dataset read (trained on, tested on) and its digest.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<MetaDigest>,
    /// SHA-256 of the weights file(s) as loaded.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub weights_sha256: String,
}

/// Where a train cell's K-shot subset came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FewShotSourceKind {
    /// gram-bench's seeded sampler.
    Sampled,
    /// CoOp's cached `split_fewshot/shot_K-seed_S.pkl`.
    CoopPkl,
    /// (`val_source` only) CoOp's file, which held a validation subset.
    File,
}

/// A train cell's K-shot subset: indices into the dataset's train and val splits, and their origin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FewShotOrigin {
    pub train: Vec<usize>,
    pub val: Vec<usize>,
    pub source: FewShotSourceKind,
    /// CoOp's file and its SHA-256 (source `coop-pkl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// `file`, or `sampled` for files without a validation subset (ImageNet-style).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_source: Option<FewShotSourceKind>,
}

/// Everything a finished (or failed) cell leaves behind: the record schema.
///
/// One JSON file per cell, `results/<suite>/records/<key>.json` (`results/` is the default store;
/// `--store` names another). Records are written to a temporary file, fsynced and renamed, so a
/// killed run leaves whole records or none. A record that cannot be read is an error, never
/// silently overwritten.
///
/// `schema` is the record format: this build writes and reads schema 1, the format every earlier
/// record already had. Records written before the record was typed are read as they are:
/// `tests/records.rs` reads such records from `tests/fixtures/records/` and writes them back
/// unchanged. A record of another schema is refused with a message saying what to do, never
/// recomputed silently.
///
/// The fields, by what they say:
///
/// - the cell and its outcome: `schema` (the format), `key`, `status` (`ok` / `failed`), `error`
///   (why it failed), `suite`, `suite_version`, `cell` (method, phase, dataset, classes, shots,
///   seed, target, checkpoint), `depends_on`;
/// - what it ran with: `config` (`backbone`, `precision`, `data`, `eval`, `method`, `world`;
///   `method` null for meta cells; `precision` absent in records made before it was a setting: f32);
/// - every input, pinned: `digests` (`backbone`, `weights_sha256`, `data` {dataset: digest},
///   `checkpoint` {`path`, `sha256`}, `meta` {`cell`, `artifact_sha256`, `corpus_sha256`},
///   `corpus_sha256`);
/// - the numbers: `metrics` (`accuracy`, `correct`, `total`, `macro_accuracy`), `per_class`;
/// - the K-shot subset: `fewshot` (`train`, `val` indices, `source` sampled / coop-pkl, `file`,
///   `sha256`, `val_source`);
/// - the training: `train` (`epochs`, `steps`, `images`, `epoch_loss`, `resumed_at_epoch` when an
///   interrupted cell resumed from its epoch checkpoint, `fit`: linear probe {`c`, `train_images`,
///   `val_images`} or meta {`final_query_loss`, `final_text_coefficient`,
///   `final_vision_coefficient`, `resumed_from_checkpoint`});
/// - how and where: `skipped_images`, `features` (computed / cached / encoded), `timings`,
///   `environment` (crate version, git commit, backend, device, OS, threads, `host`, `slurm`
///   {`job_id`, `array_task_id`} when run by Slurm), `started_at`, `finished_at`.
///
/// Each field's own documentation below says more.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The record format, `RECORD_SCHEMA`: 1 in this build, which refuses records of any other.
    pub schema: u32,
    /// The cell's key (its file name in `records/`): the SHA-256 of what the cell computes (resolved
    /// method config, phase, classes, shots, seed, target, the digests of the data and weights it
    /// touches, the evaluation config, the suite's name and version, and the precision when it is not
    /// f32). A record whose key is not its file name is refused.
    pub key: String,
    /// `ok` or `failed`.
    pub status: Status,
    /// The suite's name.
    pub suite: String,
    /// The suite's own `version` (bumping it invalidates every cell the suite produced).
    pub suite_version: u32,
    /// Which cell: `method`, `phase` (`train`, `eval`, `checkpoint`), `dataset`, `train_classes`,
    /// `shots`, `seed`, and for eval cells `target` and `target_classes`; `checkpoint` for cells of a
    /// released checkpoint.
    pub cell: CellSpec,
    /// The key of the cell it needs first (an eval cell's train cell, a gram cell's meta cell).
    pub depends_on: Option<String>,
    /// What the cell ran with, as the suite resolved it: `backbone`, `precision` (the float format it
    /// computed in; absent in records made before precision was a setting, which computed in f32),
    /// `data`, `eval`, `method` (null for meta-training cells) and `world`.
    pub config: CellConfig,
    /// Every input, pinned: `backbone` (`micro-clip@world-<key>` or `<lock name>@sha256:<pin>`),
    /// `weights_sha256`, `data` (each dataset read and its digest), `checkpoint` (`path`, `sha256`),
    /// `meta` (`cell`, `artifact_sha256`, `corpus_sha256`: the meta-training a gram cell took θ₀ and
    /// ψ_φ from) and `corpus_sha256` (meta-training cells). `{}` for a failed cell: its findings
    /// (digests, few-shot subset, training, skipped images, timings but the total) are not written;
    /// its `error` says why it failed, naming the images left out when they are the cause.
    pub digests: CellDigests,
    /// The numbers, at full precision: `accuracy` (micro top-1 in percent, as Dassl reports),
    /// `correct`, `total` and `macro_accuracy` (the mean of the per-class accuracies). None for a
    /// failed cell and for a meta-training cell, which tests nothing.
    pub metrics: Option<Metrics>,
    /// Each test class's `class`, `n`, `correct` and `accuracy`.
    pub per_class: Vec<ClassAccuracy>,
    /// The K-shot subset of a train cell: `train` and `val` indices into the dataset's splits,
    /// `source` (`sampled`: gram-bench's seeded sampler; `coop-pkl`: CoOp's
    /// `split_fewshot/shot_K-seed_S.pkl`), and for that file its `file`, `sha256` and `val_source`.
    pub fewshot: Option<FewShotOrigin>,
    /// The training: `epochs`, `steps`, `images`, `epoch_loss` (the mean loss of each epoch;
    /// meta-training cells: the query loss of each meta step), `resumed_at_epoch` when an interrupted
    /// cell resumed from its epoch checkpoint, and `fit`: the linear probe's (`c`, `train_images`,
    /// `val_images`) or a meta-training run's (`final_query_loss`, `final_text_coefficient`,
    /// `final_vision_coefficient`, `resumed_from_checkpoint`).
    pub train: Option<TrainSummary>,
    /// Images left out because they did not decode (`on_corrupt = "skip"`), by path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_images: Vec<BadImage>,
    /// Where the cell's image features came from: `computed` (by this cell, and stored in the
    /// feature cache), `cached` (read from the feature cache), or `encoded` (the method changes the
    /// image encoder, or `run --no-feature-cache` was given).
    #[serde(default)]
    pub features: Option<FeatureOrigin>,
    /// Seconds: `load_s`, `train_s`, `eval_s` (of which `features_s` computed the test split's image
    /// features), `total_s`.
    pub timings: Timings,
    /// How and where it ran: `crate_version`, `git_commit`, `backend`, `device`, `os`, `threads`
    /// (rayon's pool), `host`, and `slurm` (`job_id`, `array_task_id`) when Slurm ran it.
    pub environment: Environment,
    /// RFC 3339 UTC.
    pub started_at: String,
    /// RFC 3339 UTC.
    pub finished_at: String,
    /// Why a failed cell failed.
    pub error: Option<String>,
}

impl Record {
    /// Parses a record file's bytes: the schema is read first, so a record of another format gets
    /// a message saying so rather than a field-level parse error.
    pub fn from_json(path: &std::path::Path, bytes: &[u8]) -> Result<Record> {
        #[derive(Deserialize)]
        struct Head {
            schema: u32,
        }
        let unreadable = |e: serde_json::Error| {
            Error::Store(format!(
                "{}: unreadable record ({e}); move it away to rerun the cell",
                path.display()
            ))
        };
        let head: Head = serde_json::from_slice(bytes).map_err(unreadable)?;
        if head.schema != RECORD_SCHEMA {
            return Err(Error::Store(format!(
                "{}: record schema {} (this build reads schema {RECORD_SCHEMA}); use the gram-bench that wrote it, \
                 or move the store's records away to recompute them",
                path.display(),
                head.schema
            )));
        }
        serde_json::from_slice(bytes).map_err(unreadable)
    }
}
