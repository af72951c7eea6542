//! A suite resolved against the files it names, once: the lock with the suite's own datasets, the
//! digests every cell key is made of (world, backbone pin, each dataset's split definition, CoOp's
//! few-shot files), the datasets read to make them, and the plan. `run`, `plan`, `report`,
//! `check` and `baseline save` all read one `ResolvedSuite`, so a command reads each dataset once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::data::{check_dataset_name, dataset_def, Dataset};
use crate::error::{Error, Result};
use crate::lock::Lock;
use crate::suite::cells::{Digests, Plan};
use crate::suite::{FewShotSource, Suite};
use crate::world::BACKBONE;

/// The pins of a suite's inputs and what was read to make them: the world's key (it decides every
/// embedded image and the micro-CLIP), the backbone's identity, the CoOp (and user) datasets, the
/// data root and the few-shot policy.
pub struct Inputs {
    pub world_key: Option<String>,
    /// `micro-clip@world-<key>`, or `<lock name>@sha256:<pinned digest>`.
    pub backbone: String,
    /// The CoOp (and user) datasets the suite names, read once to digest their split definitions;
    /// a run reuses them rather than reading them again.
    pub datasets: BTreeMap<String, Arc<Dataset>>,
    pub data_root: Option<PathBuf>,
    pub fewshot_source: FewShotSource,
}

/// Where a cell's K-shot subset comes from, decided from the suite's policy and the files on disk.
pub(crate) enum FewShotFrom {
    Sampled,
    /// CoOp's cached file (present or, under `fewshot = "coop"`, required but absent).
    Coop(PathBuf),
}

impl Inputs {
    pub(crate) fn fewshot_from(&self, dataset: &str, shots: usize, seed: u64) -> FewShotFrom {
        let (Some(ds), Some(root)) = (self.datasets.get(dataset), &self.data_root) else {
            return FewShotFrom::Sampled;
        };
        let path = crate::data::fewshot_pkl::pkl_path(&root.join(&ds.def.folder), shots, seed);
        match self.fewshot_source {
            FewShotSource::Sample => FewShotFrom::Sampled,
            FewShotSource::Coop => FewShotFrom::Coop(path),
            FewShotSource::CoopIfPresent if path.is_file() => FewShotFrom::Coop(path),
            FewShotSource::CoopIfPresent => FewShotFrom::Sampled,
        }
    }
}

impl Digests for Inputs {
    fn fewshot(&self, dataset: &str, shots: usize, seed: u64) -> String {
        match self.fewshot_from(dataset, shots, seed) {
            FewShotFrom::Sampled => "sampled".into(),
            FewShotFrom::Coop(p) => match crate::files::file_sha256(&p) {
                Ok(d) => format!("coop-pkl@sha256:{d}"),
                // The cell fails when it runs, saying which file it needs.
                Err(_) => "coop-pkl@missing".into(),
            },
        }
    }
    fn backbone(&self) -> String {
        self.backbone.clone()
    }
    fn dataset(&self, name: &str) -> String {
        match (self.datasets.get(name), &self.world_key) {
            (Some(d), _) => format!("{name}@sha256:{}", d.digest()),
            (None, Some(k)) => format!("world-{k}/{name}"),
            (None, None) => format!("{name}@unpinned"),
        }
    }
}

/// Digests for counting cells when the real ones cannot be read (no data root, backbone not
/// pinned): the plan's shape is right, its keys are not.
pub(crate) struct Unresolved;

impl Digests for Unresolved {
    fn backbone(&self) -> String {
        "unresolved".into()
    }
    fn dataset(&self, name: &str) -> String {
        format!("{name}@unresolved")
    }
    fn fewshot(&self, _: &str, _: usize, _: u64) -> String {
        "unresolved".into()
    }
}

/// The datasets a suite names.
pub(crate) fn suite_datasets(suite: &Suite) -> Vec<String> {
    let mut names: Vec<String> = suite
        .experiments
        .iter()
        .flat_map(|x| x.datasets.iter().chain(&x.targets).cloned())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Whether a suite needs the embedded world built (its backbone or one of its datasets).
pub(crate) fn needs_world(suite: &Suite) -> bool {
    suite.backbone.name == BACKBONE
        || suite_datasets(suite)
            .iter()
            .any(|d| crate::world::world_dataset(d).is_some())
}

/// Every dataset `suite` names is known: built in, or declared by `lock` (which holds the suite's
/// own declarations, `Lock::with_datasets`).
pub(crate) fn check_dataset_names(suite: &Suite, lock: &Lock) -> Result<()> {
    for name in suite_datasets(suite) {
        check_dataset_name(&name, &lock.user_datasets)
            .map_err(|e| Error::Config(format!("suite `{}`: {e}", suite.name)))?;
    }
    Ok(())
}

/// A suite with everything its cell keys depend on read from disk, and its plan.
pub struct ResolvedSuite {
    pub suite: Suite,
    /// The lock file's pins plus the datasets the suite declares itself.
    pub lock: Lock,
    pub inputs: Inputs,
    pub plan: Plan,
}

impl ResolvedSuite {
    /// Resolves `suite` against `lock` and the CoOp data under `data_root`: the world's key from
    /// its config (nothing is built), the backbone's pin from the lock, and each CoOp dataset's
    /// split digest (read now, so a key always reflects the data on disk).
    pub fn new(suite: Suite, lock: &Lock, data_root: Option<&Path>) -> Result<ResolvedSuite> {
        let lock = lock.with_datasets(&suite.name, &suite.datasets)?;
        check_dataset_names(&suite, &lock)?;
        let world_key = suite.world.as_ref().map(crate::world::build::world_key);
        let backbone = if suite.backbone.name == BACKBONE {
            let key = world_key
                .as_ref()
                .ok_or_else(|| Error::Config(format!("suite `{}`: micro-clip needs a [world] table", suite.name)))?;
            format!("{BACKBONE}@world-{key}")
        } else {
            format!(
                "{}@sha256:{}",
                suite.backbone.name,
                lock.backbone(&suite.backbone.name)?.sha256
            )
        };
        let mut datasets = BTreeMap::new();
        for name in suite_datasets(&suite) {
            let def = dataset_def(&name, &lock.user_datasets)?;
            if def.embedded {
                continue;
            }
            let root = data_root.ok_or_else(|| {
                Error::Input(format!(
                    "dataset `{name}` needs CoOp's data folder: pass --data-root DIR (or set GRAM_BENCH_DATA)"
                ))
            })?;
            datasets.insert(name.clone(), Arc::new(Dataset::load(root, &def)?));
        }
        let inputs = Inputs {
            world_key,
            backbone,
            datasets,
            data_root: data_root.map(Path::to_path_buf),
            fewshot_source: suite.data.fewshot,
        };
        let plan = Plan::new(&suite, &inputs);
        Ok(ResolvedSuite {
            suite,
            lock,
            inputs,
            plan,
        })
    }

    /// The suite with nothing read (no data, no pins): cells counted under placeholder keys, for
    /// a plan when the real inputs are not on this machine.
    pub(crate) fn unresolved(suite: Suite, lock: Lock) -> ResolvedSuite {
        let inputs = Inputs {
            world_key: suite.world.as_ref().map(crate::world::build::world_key),
            backbone: Unresolved.backbone(),
            datasets: BTreeMap::new(),
            data_root: None,
            fewshot_source: suite.data.fewshot,
        };
        let plan = Plan::new(&suite, &Unresolved);
        ResolvedSuite {
            suite,
            lock,
            inputs,
            plan,
        }
    }

    /// Refuses datasets whose split definition, class names or counts differ from what
    /// datasets.lock pins (unless `allow_changed`).
    pub(crate) fn check_pins(&self, allow_changed: bool) -> Result<()> {
        for (name, ds) in &self.inputs.datasets {
            if let Some(pin) = self.lock.datasets.get(name) {
                let diff = crate::lock::verify::pin_mismatches(name, pin, ds);
                if !diff.is_empty() && !allow_changed {
                    return Err(Error::Input(format!(
                        "dataset `{name}` differs from what datasets.lock pins: {}; `gram-bench datasets verify {name}` \
                         says more; --allow-changed-data runs anyway",
                        diff.join("; ")
                    )));
                }
            }
        }
        Ok(())
    }
}
