//! Suite files: one declarative TOML file per paper table. Every hyper-parameter is written out
//! (nothing falls back to a code default), unknown keys are errors with file:line, and the file
//! carries its own version, which is part of every cell's key.

mod bounds;
pub mod cells;
pub mod finding;
pub mod methods;
pub mod protocol;
pub mod row;
mod validate;

pub(crate) use protocol::{Metric, Protocol, Scope};
pub(crate) use row::RowId;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::backend::Precision;
use crate::data::catalog::UserDataset;
use crate::error::{Error, Result};
use crate::world::WorldConfig;
use methods::MethodConfig;

/// The suite file format this build reads.
pub(crate) const SCHEMA: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suite {
    /// Suite file format (`SCHEMA`).
    pub schema: u32,
    pub name: String,
    /// The suite's own version: bump it to invalidate every cell it produced.
    pub version: u32,
    pub description: String,
    pub backbone: BackboneSpec,
    pub precision: PrecisionSpec,
    /// The embedded world; required when the backbone is `micro-clip`.
    #[serde(default)]
    pub world: Option<WorldConfig>,
    pub eval: EvalConfig,
    /// How data are read: where few-shot subsets come from, what a corrupt image does.
    pub data: DataConfig,
    /// Datasets in CoOp's split-file layout this suite declares itself (as `[user_datasets]` in
    /// datasets.lock does), so a suite file alone can name a new dataset.
    #[serde(default)]
    pub datasets: BTreeMap<String, UserDataset>,
    /// Methods by the name cells and reports use.
    pub methods: BTreeMap<String, MethodConfig>,
    /// GRAM meta-training runs, by the name `kind = "gram"` methods refer to.
    #[serde(default)]
    pub gram: BTreeMap<String, crate::gram::GramSpec>,
    #[serde(rename = "experiment")]
    pub experiments: Vec<Experiment>,
    /// Paired comparisons the report adds to each GRAM method against its host (e.g. UNIGRAM
    /// against the uni-modal GRAM methods).
    #[serde(default, rename = "compare")]
    pub comparisons: Vec<Comparison>,
    /// Published tables (files under `baselines/`) the report compares against.
    #[serde(default)]
    pub published: Vec<String>,
    pub check: CheckConfig,
    /// The literature's findings the report tests on this suite's numbers.
    #[serde(default, rename = "finding")]
    pub findings: Vec<finding::Finding>,
}

/// `[[compare]]`: `method` against `against`, paired by seed in the report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Comparison {
    pub method: String,
    pub against: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackboneSpec {
    /// `micro-clip` (the embedded world's model) or a backbone key in `datasets.lock` (checked when
    /// the suite is planned or run, against the lock file given there).
    pub name: String,
}

/// `[precision]`: the float format each method's cells compute in (`f32`, `f16`, `bf16`; see
/// [`Precision`]). Upstream trains every prompt method at `PREC "fp16"` but VPT (fp32).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrecisionSpec {
    /// Every method not named in `methods`, and GRAM's meta-training.
    pub default: Precision,
    /// Methods that compute at another precision, by name.
    #[serde(default)]
    pub methods: BTreeMap<String, Precision>,
}

impl PrecisionSpec {
    /// The precision of `method`'s cells.
    pub fn of(&self, method: &str) -> Precision {
        self.methods.get(method).copied().unwrap_or(self.default)
    }

    /// The precision `cell` computes in (GRAM's meta-training: the default).
    pub(crate) fn of_cell(&self, cell: &cells::CellSpec) -> Precision {
        match cell.phase {
            cells::Phase::Meta => self.default,
            _ => self.of(&cell.method),
        }
    }
}

/// Where a train cell's K-shot subset comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FewShotSource {
    /// gram-bench's seeded sampler (Dassl's grouping; not bit-identical to Python's `random`).
    Sample,
    /// CoOp's cached `split_fewshot/shot_K-seed_S.pkl`, required: a cell without one fails.
    Coop,
    /// CoOp's cached file when the dataset has one, else the sampler.
    CoopIfPresent,
}

/// What an image that cannot be decoded does to its cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnCorrupt {
    /// The cell fails, naming the image.
    Fail,
    /// The image is left out; the record counts and names what was skipped.
    Skip,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    pub fewshot: FewShotSource,
    pub on_corrupt: OnCorrupt,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    pub batch_size: usize,
}

/// Regression rule of `gram-bench check`: a metric regresses when it falls below the baseline by
/// more than `max(abs_tolerance, std_factor × baseline std over seeds)` points; with
/// `fail_on = "any-change"` a rise by as much fails too (where results are reproducible bit for bit,
/// an unexplained gain is as much a fault as a loss: a leak, the wrong split).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    pub abs_tolerance: f64,
    pub std_factor: f64,
    pub fail_on: FailOn,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailOn {
    /// Only a fall beyond the tolerance (and a missing metric) fails.
    Regression,
    /// A fall or a rise beyond the tolerance (and a missing metric) fails.
    AnyChange,
}

/// One table's worth of cells.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    pub protocol: Protocol,
    pub methods: Vec<String>,
    /// Datasets trained (and tested) on; for cross-dataset/-domain, the single source.
    pub datasets: Vec<String>,
    /// Test-only targets (cross-dataset, cross-domain).
    #[serde(default)]
    pub targets: Vec<String>,
    pub shots: Vec<usize>,
    pub seeds: Vec<u64>,
    /// Released prompt checkpoints to evaluate instead of training: a path template with
    /// `{method}`, `{dataset}`, `{shots}` and `{seed}` (and `${VAR}`), e.g.
    /// `"${RELEASED}/coop/{dataset}/seed{seed}/prompt_learner/model.pth.tar-50"`. Its cells are
    /// `checkpoint` cells: the file's tensors are loaded into the method and evaluated.
    #[serde(default)]
    pub checkpoint: Option<String>,
}

impl Experiment {
    /// The checkpoint path of one cell, placeholders filled and variables expanded.
    pub(crate) fn checkpoint_path(&self, method: &str, dataset: &str, shots: usize, seed: u64) -> Option<String> {
        self.checkpoint.as_ref().map(|t| {
            let filled = t
                .replace("{method}", method)
                .replace("{dataset}", dataset)
                .replace("{shots}", &shots.to_string())
                .replace("{seed}", &seed.to_string());
            crate::files::expand(&filled).unwrap_or(filled)
        })
    }
}

impl Suite {
    /// The config that trains a method: a gram method's host, else the method itself.
    pub(crate) fn trained_as<'a>(&'a self, m: &'a MethodConfig) -> &'a MethodConfig {
        match m {
            MethodConfig::Gram(g) => self.methods.get(&g.host).unwrap_or(m),
            _ => m,
        }
    }

    /// Reads and validates a suite file.
    pub fn load(path: &Path) -> Result<Suite> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Suite> {
        let suite: Suite = crate::files::parse_toml(path, text)?;
        let raw: toml::Value = crate::files::parse_toml(path, text)?;
        bounds::check(&raw)
            .and_then(|()| suite.validate())
            .map_err(|m| Error::Config(format!("{}: {m}", path.display())))?;
        Ok(suite)
    }
}

/// Suites shipped in `suites/`, for `gram-bench list`.
pub(crate) fn list_suites(dir: &Path) -> Result<Vec<(PathBuf, Result<Suite>)>> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    for p in paths {
        let s = Suite::load(&p);
        out.push((p, s));
    }
    Ok(out)
}

/// What unit tests of suites share: a valid suite up to its methods — a tiny embedded world, eval,
/// data — with the `[check]` table given.
#[cfg(test)]
pub(crate) fn test_suite_head(name: &str, check: &str) -> String {
    format!(
        r#"
schema = 1
name = "{name}"
version = 1
description = "{name} unit tests"
[backbone]
name = "micro-clip"
[precision]
default = "f32"
[world]
seed = 3
test_images = 128
image_size = 16
patch_size = 8
width = 32
layers = 1
context_length = 32
corpus_size = 64
steps = 2
batch_size = 16
lr = 0.001
weight_decay = 0.1
warmup_steps = 1
[eval]
batch_size = 8
[data]
fewshot = "sample"
on_corrupt = "fail"
[check]
{check}
"#
    )
}

/// The `[check]` body of most unit-test suites.
#[cfg(test)]
pub(crate) const TEST_CHECK: &str = "abs_tolerance = 1.0\nstd_factor = 2.0\nfail_on = \"regression\"";

/// Zero-shot CLIP (`zs`) and a one-epoch CoOp (`coop`), the methods most unit-test suites need.
#[cfg(test)]
pub(crate) const TEST_ZS_COOP: &str = r#"
[methods.zs]
kind = "zeroshot"
templates = "dataset"
[methods.coop]
kind = "coop"
n_ctx = 4
ctx_init = ""
init_std = 0.02
csc = false
class_token_position = "end"
batch_size = 8
epochs = 1
optim = { lr = 0.002, momentum = 0.9, weight_decay = 5e-4, warmup_epochs = 0, warmup_lr = 1e-5 }
"#;
