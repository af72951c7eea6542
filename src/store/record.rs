//! The record of one cell: what ran (the spec and the resolved config), on what (the digests of
//! every input), what came out (metrics, per-class accuracy, the training summary), where and how
//! long. Every field is typed; the README's "Record schema" section lists them, and this file is
//! the reference.
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
    Ok,
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
    /// The machine's host name (absent in records made before it was recorded).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// The Slurm job the cell ran in, when it ran in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm: Option<SlurmJob>,
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

/// Digests of everything a cell read. A failed cell may have none or some of them (`{}`).
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

/// Everything a finished (or failed) cell leaves behind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// `RECORD_SCHEMA`.
    pub schema: u32,
    /// The cell's key (its file name in `records/`).
    pub key: String,
    pub status: Status,
    pub suite: String,
    pub suite_version: u32,
    pub cell: CellSpec,
    /// The key of the cell it needs first (an eval cell's train cell, a gram cell's meta cell).
    pub depends_on: Option<String>,
    pub config: CellConfig,
    pub digests: CellDigests,
    pub metrics: Option<Metrics>,
    pub per_class: Vec<ClassAccuracy>,
    pub fewshot: Option<FewShotOrigin>,
    pub train: Option<TrainSummary>,
    /// Images left out because they did not decode (`on_corrupt = "skip"`), by path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_images: Vec<BadImage>,
    #[serde(default)]
    pub features: Option<FeatureOrigin>,
    pub timings: Timings,
    pub environment: Environment,
    /// RFC 3339 UTC.
    pub started_at: String,
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
