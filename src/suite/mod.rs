//! Suite files: one declarative TOML file per paper table. Every hyper-parameter is written out
//! (nothing falls back to a code default), unknown keys are errors with file:line, and the file
//! carries its own version, which is part of every cell's key.

pub mod cells;
pub mod methods;
pub mod protocol;

pub use protocol::{Metric, Protocol};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::catalog::{check_user_dataset, UserDataset};
use crate::error::{Error, Result};
use crate::methods::Training;
use crate::world::WorldConfig;
use methods::MethodConfig;

/// The suite file format this build reads.
pub const SCHEMA: u32 = 1;

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
/// more than `max(abs_tolerance, std_factor × baseline std over seeds)` points.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    pub abs_tolerance: f64,
    pub std_factor: f64,
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
    pub fn checkpoint_path(&self, method: &str, dataset: &str, shots: usize, seed: u64) -> Option<String> {
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
    pub fn trained_as<'a>(&'a self, m: &'a MethodConfig) -> &'a MethodConfig {
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
        suite
            .validate()
            .map_err(|m| Error::Config(format!("{}: {m}", path.display())))?;
        Ok(suite)
    }

    /// Checks what the types cannot: references resolve, lists are non-empty, protocols get the
    /// fields they need.
    fn validate(&self) -> std::result::Result<(), String> {
        if self.schema != SCHEMA {
            return Err(format!(
                "schema {} is not supported (this build reads schema {SCHEMA})",
                self.schema
            ));
        }
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "name `{}` must be non-empty ASCII letters, digits, - or _",
                self.name
            ));
        }
        let embedded = self
            .experiments
            .iter()
            .flat_map(|x| x.datasets.iter().chain(&x.targets))
            .any(|d| crate::world::world_dataset(d).is_some());
        if self.world.is_none() && (embedded || self.backbone.name == crate::world::BACKBONE) {
            return Err("the embedded datasets and the micro-clip backbone need a [world] table".into());
        }
        if self.backbone.name.is_empty() {
            return Err("backbone.name is empty".into());
        }
        for (name, u) in &self.datasets {
            check_user_dataset(name, u).map_err(|e| format!("datasets.{name}: {e}"))?;
        }
        if self.eval.batch_size == 0 {
            return Err("eval.batch_size must be positive".into());
        }
        for (name, m) in &self.methods {
            m.validate().map_err(|e| format!("methods.{name}: {e}"))?;
            if let MethodConfig::Gram(g) = m {
                let host = self
                    .methods
                    .get(&g.host)
                    .ok_or_else(|| format!("methods.{name}: unknown host `{}`", g.host))?;
                let spec = self
                    .gram
                    .get(&g.meta)
                    .ok_or_else(|| format!("methods.{name}: no [gram.{}] meta-training run", g.meta))?;
                let layout = host.prompt_layout().ok_or_else(|| {
                    format!(
                        "methods.{name}: host `{}` ({}) has no shared prompt tokens for GRAM (hosts: coop, kgcoop, \
                         prograd without csc, cocoop, vpt, maple, ivlp, promptsrc)",
                        g.host,
                        host.kind()
                    )
                })?;
                for (role, n) in layout {
                    let what = if role.is_text() { "text" } else { "vision" };
                    if g.init {
                        match spec.train.provides(role) {
                            Some(m) if m == n => {}
                            Some(m) => {
                                return Err(format!(
                                    "methods.{name}: host `{}` has {n} {what} tokens per layer but [gram.{}] \
                                     meta-learns {m}",
                                    g.host, g.meta
                                ))
                            }
                            None => {
                                return Err(format!(
                                    "methods.{name}: host `{}` needs θ₀ `{}` but [gram.{}] does not meta-learn it \
                                     (set train.{what} with enough depth, or init = false)",
                                    g.host,
                                    role.theta0_name(),
                                    g.meta
                                ))
                            }
                        }
                    }
                    let has = if role.is_text() {
                        &spec.train.text
                    } else {
                        &spec.train.vision
                    };
                    if g.regulate && has.is_none() {
                        return Err(format!(
                            "methods.{name}: host `{}` has {what} prompts but [gram.{}] has no {what} regulator \
                             (set train.{what}, or regulate = false)",
                            g.host, g.meta
                        ));
                    }
                }
            }
        }
        for (name, g) in &self.gram {
            g.validate().map_err(|e| format!("gram.{name}: {e}"))?;
        }
        for c in &self.comparisons {
            for m in [&c.method, &c.against] {
                if !self.methods.contains_key(m) {
                    return Err(format!("compare: unknown method `{m}`"));
                }
            }
            if c.method == c.against {
                return Err(format!("compare: `{}` against itself", c.method));
            }
        }
        if self.experiments.is_empty() {
            return Err("no [[experiment]]".into());
        }
        for (i, x) in self.experiments.iter().enumerate() {
            let at = format!("experiment #{} ({})", i + 1, x.protocol.as_str());
            for m in &x.methods {
                if !self.methods.contains_key(m) {
                    let known: Vec<_> = self.methods.keys().cloned().collect();
                    return Err(format!("{at}: unknown method `{m}` (defined: {})", known.join(", ")));
                }
            }
            // Dataset names are resolved against the catalog and datasets.lock when the suite is
            // planned (`ResolvedSuite::new`), since the lock may declare user datasets.
            if x.methods.is_empty() || x.datasets.is_empty() || x.shots.is_empty() || x.seeds.is_empty() {
                return Err(format!(
                    "{at}: methods, datasets, shots and seeds must each list at least one"
                ));
            }
            if x.shots.contains(&0) {
                return Err(format!("{at}: shots must be positive"));
            }
            if x.protocol != Protocol::FewShot {
                if let Some(m) = x.methods.iter().find(|m| !self.methods[*m].open_vocabulary()) {
                    return Err(format!(
                        "{at}: `{m}` ({}) scores only its training classes (few-shot only)",
                        self.methods[m].kind()
                    ));
                }
            }
            if x.checkpoint.is_some() {
                if let Some(m) = x
                    .methods
                    .iter()
                    .find(|m| !matches!(self.trained_as(&self.methods[*m]).training(), Training::Sgd(_)))
                {
                    return Err(format!("{at}: `{m}` has no parameters to load from a checkpoint"));
                }
            }
            // A schedule that has no epoch count for a cell is an error now, not mid-run.
            for m in &x.methods {
                if let Training::Sgd(s) = self.trained_as(&self.methods[m]).training() {
                    let epochs = s.epochs;
                    for d in &x.datasets {
                        for &k in &x.shots {
                            epochs.resolve(d, k).map_err(|e| format!("{at}: methods.{m}: {e}"))?;
                        }
                    }
                }
            }
            x.protocol
                .check_fields(&x.datasets, &x.targets)
                .map_err(|e| format!("{at}: {e}"))?;
        }
        Ok(())
    }
}

/// Suites shipped in `suites/`, for `gram-bench list`.
pub fn list_suites(dir: &Path) -> Result<Vec<(PathBuf, Result<Suite>)>> {
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
