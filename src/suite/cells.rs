//! Expanding a suite into cells, and each cell's key: the hash of what decides its result (the
//! method's resolved config, the data and weights digests, the phase, shots, seed, and the suite's
//! name and version), computed from the parsed values, so reformatting a suite changes no key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::methods::MethodConfig;
use super::{Metric, Protocol, Suite};
use crate::data::Subsample;
use crate::error::{Error, Result};

/// Bumped when what a cell computes changes for the same inputs (so old records stop matching).
pub(crate) const CELL_FORMAT: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Train on `dataset` (its `subsample` half) and test on the same label space.
    Train,
    /// Test a trained cell's prompt on `target` (another half, dataset or domain).
    Eval,
    /// Load a released prompt checkpoint (no training) and test it like a train cell.
    Checkpoint,
    /// GRAM meta-training on a corpus (`method` = the `[gram.NAME]` run); gram train cells depend
    /// on it.
    Meta,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Train => "train",
            Phase::Eval => "eval",
            Phase::Checkpoint => "checkpoint",
            Phase::Meta => "meta",
        }
    }
}

/// What one cell computes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellSpec {
    pub method: String,
    pub phase: Phase,
    /// The dataset trained on.
    pub dataset: String,
    pub train_classes: Subsample,
    pub shots: usize,
    pub seed: u64,
    /// Eval cells: the dataset and classes tested.
    pub target: Option<String>,
    pub target_classes: Subsample,
    /// Checkpoint cells (and cells evaluating them): the released checkpoint's path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
}

/// A cell with its key and the key of the train cell it depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cell {
    pub key: String,
    pub spec: CellSpec,
    pub depends_on: Option<String>,
}

/// Where a cell's number goes in a report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    pub protocol: Protocol,
    pub method: String,
    /// The dataset the number is about (the target for transfer cells).
    pub dataset: String,
    pub shots: usize,
    pub seed: u64,
    pub metric: Metric,
    /// For transfer rows: the source dataset.
    pub source: Option<String>,
    pub key: String,
}

/// The digests that pin a suite's inputs: the backbone weights and each dataset.
pub trait Digests {
    fn backbone(&self) -> String;
    fn dataset(&self, name: &str) -> String;
    /// Where a train cell's K-shot subset comes from: `sampled`, or CoOp's cached file and its
    /// digest (so a cell trained on the reference's images never shares a key with a sampled one).
    fn fewshot(&self, dataset: &str, shots: usize, seed: u64) -> String;
    /// A file's digest (`sha256:…`, or `missing`), for released checkpoints.
    fn file(&self, path: &str) -> String {
        match crate::files::file_sha256(std::path::Path::new(path)) {
            Ok(d) => format!("sha256:{d}"),
            Err(_) => "missing".into(),
        }
    }
}

/// The plan of a suite: unique cells in run order (train before eval), and report slots.
#[derive(Clone, Debug)]
pub struct Plan {
    pub cells: Vec<Cell>,
    pub slots: Vec<Slot>,
}

fn hash(value: &serde_json::Value) -> String {
    // serde_json's Value keeps object keys sorted (BTreeMap), so this is a canonical form.
    let bytes = serde_json::to_vec(value).expect("JSON values serialize");
    Sha256::digest(bytes)
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The key of a cell.
pub(crate) fn cell_key(
    suite: &Suite,
    method: &MethodConfig,
    spec: &CellSpec,
    depends_on: Option<&str>,
    digests: &dyn Digests,
) -> String {
    let mut data = BTreeMap::new();
    data.insert(spec.dataset.clone(), digests.dataset(&spec.dataset));
    if let Some(t) = &spec.target {
        data.insert(t.clone(), digests.dataset(t));
    }
    let v = json!({
        "cell_format": CELL_FORMAT,
        "suite": suite.name,
        "suite_version": suite.version,
        "method": method,
        "phase": spec.phase,
        "dataset": spec.dataset,
        "train_classes": spec.train_classes,
        "shots": spec.shots,
        // Zero-shot results do not depend on the sampled shots, but the seed stays in the key so
        // every (method, seed) slot has its own record.
        "seed": spec.seed,
        "target": spec.target,
        "target_classes": spec.target_classes,
        "eval": suite.eval,
        "data_policy": suite.data,
        "fewshot": digests.fewshot(&spec.dataset, spec.shots, spec.seed),
        "backbone": digests.backbone(),
        "data": data,
        "depends_on": depends_on,
    });
    let mut v = v;
    // A gram method's result depends on its host's whole config.
    if let MethodConfig::Gram(g) = method {
        v["host"] = json!(suite.methods.get(&g.host));
    }
    // f32 cells keep the keys they had before precision was a setting (records made then were f32).
    let precision = suite.precision.of_cell(spec);
    if !precision.is_f32() {
        v["precision"] = json!(precision);
    }
    // Only checkpoint cells carry the field, so every other key stays as it was.
    if let Some(p) = &spec.checkpoint {
        v["checkpoint"] = json!(digests.file(p));
    }
    hash(&v)
}

/// The key and spec of the meta-training cell of `[gram.NAME]`.
pub(crate) fn meta_cell(suite: &Suite, name: &str, digests: &dyn Digests) -> Option<Cell> {
    let spec = suite.gram.get(name)?;
    let corpus = match &spec.corpus {
        crate::gram::CorpusSpec::World { .. } => json!({ "world": suite.world }),
        crate::gram::CorpusSpec::Csv { path, .. } => {
            let p = crate::files::expand(path).unwrap_or_else(|_| path.clone());
            json!({ "csv": digests.file(&p) })
        }
    };
    let v = json!({
        "cell_format": CELL_FORMAT,
        "suite": suite.name,
        "suite_version": suite.version,
        "gram": spec,
        "corpus": corpus,
        // Whether pairs whose image does not decode fail the run or are left out.
        "on_corrupt": suite.data.on_corrupt,
        "backbone": digests.backbone(),
    });
    let mut v = v;
    if !suite.precision.default.is_f32() {
        v["precision"] = json!(suite.precision.default);
    }
    Some(Cell {
        key: hash(&v),
        spec: CellSpec {
            method: name.to_string(),
            phase: Phase::Meta,
            dataset: "corpus".into(),
            train_classes: Subsample::All,
            shots: 0,
            seed: spec.seed,
            target: None,
            target_classes: Subsample::All,
            checkpoint: None,
        },
        depends_on: None,
    })
}

impl Plan {
    pub fn new(suite: &Suite, digests: &dyn Digests) -> Plan {
        let mut cells: Vec<Cell> = Vec::new();
        let mut slots = Vec::new();
        let push = |cells: &mut Vec<Cell>, cell: Cell| {
            if !cells.iter().any(|c| c.key == cell.key) {
                cells.push(cell);
            }
        };
        for x in &suite.experiments {
            for m in &x.methods {
                let mc = &suite.methods[m];
                for d in &x.datasets {
                    for &shots in &x.shots {
                        for &seed in &x.seeds {
                            let train_classes = x.protocol.train_classes();
                            let checkpoint = x.checkpoint_path(m, d, shots, seed);
                            let spec = CellSpec {
                                method: m.clone(),
                                phase: if checkpoint.is_some() {
                                    Phase::Checkpoint
                                } else {
                                    Phase::Train
                                },
                                checkpoint,
                                dataset: d.clone(),
                                train_classes,
                                shots,
                                seed,
                                target: None,
                                target_classes: train_classes,
                            };
                            // A gram method's train cell needs its meta-training cell first.
                            let meta = match mc {
                                MethodConfig::Gram(g) => meta_cell(suite, &g.meta, digests),
                                _ => None,
                            };
                            let dep = meta.as_ref().map(|c| c.key.clone());
                            if let Some(c) = meta {
                                push(&mut cells, c);
                            }
                            let key = cell_key(suite, mc, &spec, dep.as_deref(), digests);
                            push(
                                &mut cells,
                                Cell {
                                    key: key.clone(),
                                    spec: spec.clone(),
                                    depends_on: dep,
                                },
                            );
                            for e in x.protocol.evaluations(d, &x.targets) {
                                let key = match e.target {
                                    None => key.clone(),
                                    Some((target, classes)) => {
                                        let espec = CellSpec {
                                            phase: Phase::Eval,
                                            target: Some(target),
                                            target_classes: classes,
                                            ..spec.clone()
                                        };
                                        let ekey = cell_key(suite, mc, &espec, Some(&key), digests);
                                        push(
                                            &mut cells,
                                            Cell {
                                                key: ekey.clone(),
                                                spec: espec,
                                                depends_on: Some(key.clone()),
                                            },
                                        );
                                        ekey
                                    }
                                };
                                slots.push(Slot {
                                    protocol: x.protocol,
                                    method: m.clone(),
                                    dataset: e.dataset,
                                    shots,
                                    seed,
                                    metric: e.metric,
                                    source: e.source,
                                    key,
                                });
                            }
                        }
                    }
                }
            }
        }
        // Two experiments naming the same cell (a table that repeats another's row) give one slot:
        // a duplicate would count its seeds twice in the aggregates.
        let mut unique: Vec<Slot> = Vec::with_capacity(slots.len());
        for s in slots {
            if !unique.contains(&s) {
                unique.push(s);
            }
        }
        Plan { cells, slots: unique }
    }

    /// Cells selected by `--only FIELD=VALUE` filters (`method`, `dataset`, `target`, `phase`,
    /// `shots`, `seed`): values of one field are alternatives, different fields must all hold
    /// (`--only method=a --only method=b --only seed=1`: a's and b's cells of seed 1). An eval
    /// cell also pulls in the cells it needs. Filters that select nothing are an error, for
    /// `plan` as for `run`.
    /// Each cell by its key.
    pub(crate) fn by_key(&self) -> BTreeMap<&str, &Cell> {
        self.cells.iter().map(|c| (c.key.as_str(), c)).collect()
    }

    pub(crate) fn select(&self, filters: &[(String, String)]) -> Result<Vec<&Cell>> {
        let mut by_field: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (k, v) in filters {
            by_field.entry(k.as_str()).or_default().push(v.as_str());
        }
        let matches = |c: &Cell| {
            by_field.iter().all(|(k, vs)| {
                let s = &c.spec;
                let value = match *k {
                    "method" => Some(s.method.clone()),
                    "dataset" => Some(s.dataset.clone()),
                    "target" => s.target.clone(),
                    "phase" => Some(s.phase.as_str().to_string()),
                    "shots" => Some(s.shots.to_string()),
                    "seed" => Some(s.seed.to_string()),
                    _ => None,
                };
                value.is_some_and(|v| vs.contains(&v.as_str()))
            })
        };
        // A selected cell brings every cell it depends on, however deep (eval → train → meta).
        let by_key = self.by_key();
        let mut keys: Vec<&str> = Vec::new();
        for c in self.cells.iter().filter(|c| matches(c)) {
            keys.push(&c.key);
            keys.extend(inputs(c, &by_key).into_iter().map(|d| d.key.as_str()));
        }
        let picked: Vec<&Cell> = self.cells.iter().filter(|c| keys.contains(&c.key.as_str())).collect();
        if picked.is_empty() {
            let only: Vec<String> = filters.iter().map(|(k, v)| format!("{k}={v}")).collect();
            return Err(Error::Input(format!(
                "--only {} selects no cell",
                only.join(" --only ")
            )));
        }
        Ok(picked)
    }
}

/// The fields `--only` accepts.
pub(crate) const FILTER_FIELDS: &[&str] = &["method", "dataset", "target", "phase", "shots", "seed"];

/// The cells `cell` needs, nearest first, however deep (eval → train → GRAM meta-training), from
/// a plan's `Plan::by_key`.
pub fn inputs<'a>(cell: &Cell, by_key: &BTreeMap<&str, &'a Cell>) -> Vec<&'a Cell> {
    let mut out = Vec::new();
    let mut next = cell.depends_on.as_deref().and_then(|k| by_key.get(k).copied());
    while let Some(d) = next {
        out.push(d);
        next = d.depends_on.as_deref().and_then(|k| by_key.get(k).copied());
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::resolve::Unresolved;

    const EXPERIMENTS: &str = r#"
[[experiment]]
protocol = "base-to-new"
methods = ["zs", "coop"]
datasets = ["shapes"]
shots = [1]
seeds = [1, 2]
[[experiment]]
protocol = "cross-domain"
methods = ["coop"]
datasets = ["world"]
targets = ["sketch", "cartoon"]
shots = [1]
seeds = [1]
"#;

    /// A plan with base-to-new and cross-domain cells (evaluations depending on trainings).
    pub(crate) fn plan() -> Plan {
        let text =
            crate::suite::test_suite_head("cells", crate::suite::TEST_CHECK) + crate::suite::TEST_ZS_COOP + EXPERIMENTS;
        let suite = Suite::parse(std::path::Path::new("cells.toml"), &text).unwrap();
        Plan::new(&suite, &Unresolved)
    }

    #[test]
    fn base_to_new_slots_are_the_train_cell_and_its_new_half_eval_cell() {
        let p = plan();
        let train = p
            .cells
            .iter()
            .find(|c| c.spec.method == "coop" && c.spec.dataset == "shapes" && c.spec.seed == 1)
            .unwrap();
        assert_eq!(
            (train.spec.phase, train.spec.train_classes),
            (Phase::Train, Subsample::Base)
        );
        let eval = p
            .cells
            .iter()
            .find(|c| c.depends_on.as_deref() == Some(&train.key))
            .unwrap();
        assert_eq!(
            (eval.spec.phase, eval.spec.target_classes),
            (Phase::Eval, Subsample::New)
        );
        let slots: Vec<(Metric, &str)> = p
            .slots
            .iter()
            .filter(|s| s.method == "coop" && s.protocol == Protocol::BaseToNew && s.seed == 1)
            .map(|s| (s.metric, s.key.as_str()))
            .collect();
        assert_eq!(
            slots,
            [(Metric::Base, train.key.as_str()), (Metric::New, eval.key.as_str())]
        );
        // Every eval cell comes after the train cell it needs.
        for (i, c) in p.cells.iter().enumerate() {
            if let Some(d) = &c.depends_on {
                assert!(p.cells[..i].iter().any(|t| &t.key == d), "{:?}", c.spec);
            }
        }
    }

    #[test]
    fn transfer_slots_name_their_source_and_selecting_an_eval_cell_pulls_in_its_train_cell() {
        let p = plan();
        let targets: Vec<(&str, Option<&str>)> = p
            .slots
            .iter()
            .filter(|s| s.protocol == Protocol::CrossDomain)
            .map(|s| (s.dataset.as_str(), s.source.as_deref()))
            .collect();
        assert_eq!(
            targets,
            [("world", None), ("sketch", Some("world")), ("cartoon", Some("world"))]
        );
        let only = [("target".to_string(), "sketch".to_string())];
        let picked = p.select(&only).unwrap();
        assert_eq!(picked.len(), 2);
        assert_eq!(
            (picked[0].spec.phase, picked[1].spec.phase),
            (Phase::Train, Phase::Eval)
        );
        assert_eq!(picked[1].depends_on.as_ref(), Some(&picked[0].key));
    }

    #[test]
    fn only_filters_of_one_field_are_alternatives_and_an_empty_selection_is_an_error() {
        let p = plan();
        let f = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let zs = p.select(&f(&[("method", "zs")])).unwrap().len();
        let coop = p.select(&f(&[("method", "coop")])).unwrap().len();
        let both = p.select(&f(&[("method", "zs"), ("method", "coop")])).unwrap().len();
        assert_eq!(both, zs + coop);
        let e = p.select(&f(&[("method", "nope")])).unwrap_err().to_string();
        assert!(e.contains("--only method=nope selects no cell"), "{e}");
    }
}
