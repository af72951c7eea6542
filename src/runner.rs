//! Running a suite's cells: resolve the backbone and data, skip what the store already holds (per
//! the overwrite policy), lock, compute and record each cell. A cell that fails (an error or a
//! panic) records its error and the run goes on; a cell killed mid-way leaves no record and runs
//! again next time.

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use crate::backend::{dispatch, BackendKind, WithBackend};
use crate::clip::{load_clip, Clip, ClipTokenizer, LoadOptions, Preprocess};
use crate::data::images::{check_decodable, stream, BadImage, ImageCache, Transform};
use crate::data::{dataset_def, few_shot_indices, relabel, subsample_labels, Dataset, Datum};
use crate::error::{Error, Result};
use crate::features::{encode_images, FeatureCache, FeatureSet, FeatureSource};
use crate::gram::{meta_train, Corpus, CorpusSpec, RegulatedGradients, WithGram};
use crate::lock::{weights_digest, Lock};
use crate::methods::linear_probe::Labelled;
use crate::methods::{Batch, ClassSet, PromptMethod};
use crate::provenance::{git_commit, now_utc};
use crate::store::{
    ClassAccuracy, Environment, FeatureOrigin, Metrics, Record, Status, Store, Timings, TrainSummary, RECORD_SCHEMA,
};
use crate::suite::cells::{Cell, Digests, Phase, Plan};
use crate::suite::methods::MethodConfig;
use crate::suite::{FewShotSource, OnCorrupt, Suite};
use crate::world::{ensure_world, WorldArtifacts, BACKBONE};

/// What to do with cells that already have a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Overwrite {
    /// Run cells with no record or a failed one.
    OnlyMissing,
    /// Run every selected cell again.
    Always,
    /// Run only cells with no record at all (failed ones stay failed).
    Never,
}

/// The pins of a suite's inputs: the world's key (it decides every embedded image and the
/// micro-CLIP), the backbone's identity, and the digest of each CoOp dataset's split definition.
pub struct SuiteDigests {
    pub world_key: Option<String>,
    /// `micro-clip@world-<key>`, or `<lock name>@sha256:<pinned digest>`.
    pub backbone: String,
    /// The CoOp (and user) datasets the suite names, read once to digest their split definitions;
    /// a run reuses them rather than reading them again.
    pub datasets: BTreeMap<String, Dataset>,
    pub data_root: Option<PathBuf>,
    pub fewshot_source: FewShotSource,
}

/// Where a cell's K-shot subset comes from, decided from the suite's policy and the files on disk.
pub enum FewShotFrom {
    Sampled,
    /// CoOp's cached file (present or, under `fewshot = "coop"`, required but absent).
    Coop(PathBuf),
}

impl SuiteDigests {
    pub fn fewshot_from(&self, dataset: &str, shots: usize, seed: u64) -> FewShotFrom {
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

impl Digests for SuiteDigests {
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

/// The datasets a suite names.
fn suite_datasets(suite: &Suite) -> Vec<String> {
    let mut names: Vec<String> = suite
        .experiments
        .iter()
        .flat_map(|x| x.datasets.iter().chain(&x.targets).cloned())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The digests a suite's cell keys use: the world's from its config (nothing is built), the
/// backbone's from the lock, and each CoOp dataset's from its split file or folder listing under
/// `data_root` (read now, so a key always reflects the data on disk).
pub fn digests_for(suite: &Suite, lock: &Lock, data_root: Option<&Path>) -> Result<SuiteDigests> {
    let lock = &lock.with_datasets(&suite.name, &suite.datasets)?;
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
    for name in suite_datasets(suite) {
        let def = dataset_def(&name, &lock.user_datasets)
            .map_err(|e| Error::Input(format!("suite `{}`: {}", suite.name, e)))?;
        if def.embedded {
            continue;
        }
        let root = data_root.ok_or_else(|| {
            Error::Input(format!(
                "dataset `{name}` needs CoOp's data folder: pass --data-root DIR (or set GRAM_BENCH_DATA)"
            ))
        })?;
        datasets.insert(name.clone(), Dataset::load(root, &def)?);
    }
    Ok(SuiteDigests {
        world_key,
        backbone,
        datasets,
        data_root: data_root.map(Path::to_path_buf),
        fewshot_source: suite.data.fewshot,
    })
}

/// Whether a suite needs the embedded world built (its backbone or one of its datasets).
pub fn needs_world(suite: &Suite) -> bool {
    suite.backbone.name == BACKBONE
        || suite_datasets(suite)
            .iter()
            .any(|d| crate::world::world_dataset(d).is_some())
}

pub struct RunOptions {
    pub store: PathBuf,
    pub lock: Lock,
    pub data_root: Option<PathBuf>,
    /// Run although a dataset's split definition differs from its pin.
    pub allow_changed_data: bool,
    pub cache: PathBuf,
    pub backend: BackendKind,
    pub only: Vec<(String, String)>,
    pub overwrite: Overwrite,
    /// Reuse test-split image features of frozen encoders across cells and runs.
    pub feature_cache: bool,
}

#[derive(Debug, Default)]
pub struct RunSummary {
    pub ran: usize,
    pub failed: usize,
    pub skipped: usize,
    pub busy: usize,
}

/// Human-readable cell label for progress lines.
pub fn cell_label(c: &Cell) -> String {
    let s = &c.spec;
    let target = match (&s.target, s.phase) {
        (Some(t), Phase::Eval) => format!(" → {t} ({})", s.target_classes.as_str()),
        (_, Phase::Checkpoint) => " (released checkpoint)".to_string(),
        (_, Phase::Meta) => return format!("gram meta-training `{}`", s.method),
        _ => String::new(),
    };
    format!(
        "{} {} [{}] {}-shot seed {}{target}",
        s.method,
        s.dataset,
        s.train_classes.as_str(),
        s.shots,
        s.seed
    )
}

/// Runs the selected cells of `suite`; `log` gets one line per event when there is no terminal.
pub fn run_suite(suite: &Suite, opts: &RunOptions) -> Result<RunSummary> {
    // Say so before anything runs, even when every selected cell is already recorded.
    opts.backend.ensure_compiled()?;
    let store = Store::open(&opts.store, &suite.name)?;
    let lock = opts.lock.with_datasets(&suite.name, &suite.datasets)?;
    let digests = digests_for(suite, &lock, opts.data_root.as_deref())?;
    for (name, ds) in &digests.datasets {
        if let Some(pin) = lock.datasets.get(name) {
            let diff = crate::lock::verify::pin_mismatches(name, pin, ds);
            if !diff.is_empty() && !opts.allow_changed_data {
                return Err(Error::Input(format!(
                    "dataset `{name}` differs from what datasets.lock pins: {}; `gram-bench datasets verify {name}` \
                     says more; --allow-changed-data runs anyway",
                    diff.join("; ")
                )));
            }
        }
    }
    let plan = Plan::new(suite, &digests);
    let selected: Vec<Cell> = plan.select(&opts.only).into_iter().cloned().collect();
    if selected.is_empty() {
        let only: Vec<String> = opts.only.iter().map(|(k, v)| format!("{k}={v}")).collect();
        return Err(Error::Input(format!(
            "--only {} selects no cell of suite `{}`",
            only.join(" --only "),
            suite.name
        )));
    }
    // Decide what to run before building anything.
    let mut todo = Vec::new();
    let mut summary = RunSummary::default();
    for c in &selected {
        let existing = store.get(&c.key)?;
        let run = matches!(
            (opts.overwrite, existing.as_ref().map(|r| r.status)),
            (_, None) | (Overwrite::Always, _) | (Overwrite::OnlyMissing, Some(Status::Failed))
        );
        if run {
            todo.push(c.clone());
        } else {
            summary.skipped += 1;
        }
    }
    let tty = std::io::stderr().is_terminal();
    let say = |msg: &str| eprintln!("{msg}");
    say(&format!(
        "suite {} v{}: {} cells selected, {} to run, {} already recorded",
        suite.name,
        suite.version,
        selected.len(),
        todo.len(),
        summary.skipped
    ));
    if todo.is_empty() {
        return Ok(summary);
    }
    let world = match (&suite.world, needs_world(suite)) {
        (Some(w), true) => Some(ensure_world(&opts.cache, w, &mut |m| say(m))?),
        (None, true) => return Err(Error::Config(format!("suite `{}` has no [world] table", suite.name))),
        (_, false) => None,
    };
    let model = resolve_backbone(suite, &lock, world.as_ref())?;
    let work = RunWork {
        overwrite: opts.overwrite,
        lock: &lock,
        suite,
        model: &model,
        world: world.as_ref(),
        data_root: opts.data_root.as_deref(),
        digests,
        features: opts.feature_cache.then(|| opts.cache.join("features")),
        store: &store,
        todo: &todo,
        tty,
        backend: opts.backend,
    };
    let s = dispatch(opts.backend, work)??;
    summary.ran = s.ran;
    summary.failed = s.failed;
    summary.busy = s.busy;
    summary.skipped += s.skipped;
    Ok(summary)
}

/// Where the backbone's checkpoint is and what it must hash to.
pub struct BackboneSource {
    pub path: PathBuf,
    pub options: LoadOptions,
    /// The pinned digest (lock backbones), verified before the first cell.
    pub sha256: Option<String>,
    /// The digest as cell keys spell it.
    pub id: String,
}

fn resolve_backbone(suite: &Suite, lock: &Lock, world: Option<&WorldArtifacts>) -> Result<BackboneSource> {
    if suite.backbone.name == BACKBONE {
        let world = world.ok_or_else(|| Error::Config("micro-clip needs the embedded world".into()))?;
        return Ok(BackboneSource {
            path: world.model_dir.clone(),
            options: LoadOptions::default(),
            sha256: None,
            id: format!("{BACKBONE}@world-{}", world.manifest.key),
        });
    }
    let e = lock.backbone(&suite.backbone.name)?;
    let opt = |p: &Option<String>| p.as_deref().map(|p| lock.resolve(p)).transpose();
    Ok(BackboneSource {
        path: lock.resolve(&e.path)?,
        options: LoadOptions {
            config: opt(&e.config)?,
            tokenizer: opt(&e.tokenizer)?,
        },
        sha256: Some(e.sha256.clone()),
        id: format!("{}@sha256:{}", suite.backbone.name, e.sha256),
    })
}

struct RunWork<'a> {
    overwrite: Overwrite,
    lock: &'a Lock,
    suite: &'a Suite,
    model: &'a BackboneSource,
    world: Option<&'a WorldArtifacts>,
    data_root: Option<&'a Path>,
    /// Datasets already read (to key the cells), and where few-shot subsets come from.
    digests: SuiteDigests,
    /// The feature cache's directory (None: off).
    features: Option<PathBuf>,
    store: &'a Store,
    todo: &'a [Cell],
    tty: bool,
    backend: BackendKind,
}

impl WithBackend for RunWork<'_> {
    type Output = Result<RunSummary>;
    fn run<B: Backend>(self, device: B::Device) -> Result<RunSummary> {
        let sources = Sources {
            suite: self.suite,
            lock: self.lock,
            model: self.model,
            world: self.world,
            data_root: self.data_root,
            digests: self.digests,
            features: self.features,
        };
        let mut ctx = CellContext::<B>::new(sources, device, self.backend)?;
        let mut summary = RunSummary::default();
        let bar = if self.tty {
            let b = ProgressBar::new(self.todo.len() as u64);
            b.set_style(
                ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} cells, ETA {eta} {msg}")
                    .expect("static template")
                    .progress_chars("=> "),
            );
            Some(b)
        } else {
            None
        };
        for (i, cell) in self.todo.iter().enumerate() {
            let label = cell_label(cell);
            if let Some(b) = &bar {
                b.set_message(label.clone());
            }
            // One line per cell, whatever became of it; the bar counts every cell dealt with.
            let done = |outcome: &str| {
                let msg = format!("[{}/{}] {label}: {outcome}", i + 1, self.todo.len());
                match &bar {
                    Some(b) => {
                        b.println(msg);
                        b.inc(1);
                    }
                    None => eprintln!("{msg}"),
                }
            };
            let Some(_lock) = self.store.try_lock(&cell.key)? else {
                summary.busy += 1;
                done("another runner is computing it; skipped");
                continue;
            };
            // Another runner may have finished it since this run made its list.
            if self.overwrite != Overwrite::Always && self.store.get(&cell.key)?.is_some_and(|r| r.status == Status::Ok)
            {
                summary.skipped += 1;
                done("recorded by another runner");
                continue;
            }
            // Its train cell is being computed elsewhere: leave this one to that runner's turn.
            if let Some(dep) = &cell.depends_on {
                if self.store.get(dep)?.is_none() && self.store.try_lock(dep)?.is_none() {
                    summary.busy += 1;
                    done("its train cell is being computed by another runner; skipped");
                    continue;
                }
            }
            let record = ctx.run_cell(self.store, cell);
            self.store.put(&record)?;
            summary.ran += 1;
            match (&record.status, &record.metrics) {
                (Status::Ok, Some(m)) => done(&format!("{:.2}% ({:.1} s)", m.accuracy, record.timings.total_s)),
                (Status::Ok, None) => done(&format!("done ({:.1} s)", record.timings.total_s)),
                _ => {
                    summary.failed += 1;
                    done(&format!(
                        "FAILED: {}",
                        record.error.as_deref().unwrap_or("unknown error")
                    ));
                }
            }
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        Ok(summary)
    }
}

type Ad<B> = Autodiff<B>;

/// Where a run's inputs come from.
struct Sources<'a> {
    suite: &'a Suite,
    lock: &'a Lock,
    model: &'a BackboneSource,
    world: Option<&'a WorldArtifacts>,
    data_root: Option<&'a Path>,
    digests: SuiteDigests,
    features: Option<PathBuf>,
}

/// What all cells of a run share: the backbone, tokenizer, datasets and decoded images.
struct CellContext<'a, B: Backend> {
    suite: &'a Suite,
    lock: &'a Lock,
    model: &'a BackboneSource,
    world: Option<&'a WorldArtifacts>,
    data_root: Option<&'a Path>,
    device: B::Device,
    backend: BackendKind,
    clip: Clip<Ad<B>>,
    clip_eval: Clip<B>,
    tok: ClipTokenizer,
    pre: Preprocess,
    weights_digest: String,
    datasets: HashMap<String, Dataset>,
    digests: SuiteDigests,
    images: ImageCache,
    features: FeatureCache,
    /// Whether the feature cache is used at all (off: every evaluation encodes its images).
    use_features: bool,
}

/// Decoded images kept across cells (the embedded world fits whole).
const IMAGE_CACHE_BYTES: usize = 2 << 30;

impl<'a, B: Backend> CellContext<'a, B> {
    fn new(sources: Sources<'a>, device: B::Device, backend: BackendKind) -> Result<Self> {
        let Sources {
            suite,
            lock,
            model,
            world,
            data_root,
            digests,
            features,
        } = sources;
        let digest = weights_digest(&model.path)?;
        if let Some(pinned) = &model.sha256 {
            if &digest != pinned {
                return Err(Error::Weights(format!(
                    "{}: SHA-256 {digest} does not match the {pinned} datasets.lock pins for backbone `{}`",
                    model.path.display(),
                    suite.backbone.name
                )));
            }
        }
        let loaded = load_clip::<Ad<B>>(&model.path, &model.options, &device)?;
        let clip_eval = loaded.model.valid();
        Ok(Self {
            suite,
            lock,
            model,
            world,
            data_root,
            device,
            backend,
            clip: loaded.model,
            clip_eval,
            tok: loaded.tokenizer,
            pre: loaded.preprocess,
            weights_digest: digest,
            datasets: digests.datasets.clone().into_iter().collect(),
            digests,
            images: ImageCache::new(IMAGE_CACHE_BYTES),
            use_features: features.is_some(),
            features: FeatureCache::new(features),
        })
    }

    fn dataset(&mut self, name: &str) -> Result<Dataset> {
        if let Some(d) = self.datasets.get(name) {
            return Ok(d.clone());
        }
        let def = dataset_def(name, &self.lock.user_datasets)?;
        let root = if def.embedded {
            self.world.map(|w| w.data_root.clone())
        } else {
            self.data_root.map(Path::to_path_buf)
        }
        .ok_or_else(|| Error::Input(format!("no data root for dataset `{name}`")))?;
        let d = Dataset::load(&root, &def)?;
        self.datasets.insert(name.to_string(), d.clone());
        Ok(d)
    }

    fn run_cell(&mut self, store: &Store, cell: &Cell) -> Record {
        let started_at = now_utc();
        let t0 = Instant::now();
        let mut record = Record {
            schema: RECORD_SCHEMA,
            key: cell.key.clone(),
            status: Status::Failed,
            suite: self.suite.name.clone(),
            suite_version: self.suite.version,
            cell: cell.spec.clone(),
            depends_on: cell.depends_on.clone(),
            config: json!({
                "method": self.suite.methods.get(&cell.spec.method),
                "eval": self.suite.eval,
                "backbone": self.suite.backbone,
                "world": self.suite.world,
                "data": self.suite.data,
            }),
            digests: json!({}),
            metrics: None,
            per_class: Vec::new(),
            fewshot: None,
            train: None,
            skipped_images: Vec::new(),
            features: None,
            timings: Timings::default(),
            environment: Environment {
                crate_version: env!("CARGO_PKG_VERSION").to_string(),
                git_commit: git_commit(),
                backend: self.backend.to_string(),
                device: format!("{:?}", self.device),
                os: std::env::consts::OS.to_string(),
                threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            },
            started_at,
            finished_at: String::new(),
            error: None,
        };
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| self.compute(store, cell, &mut record)));
        match result {
            Ok(Ok(())) => record.status = Status::Ok,
            Ok(Err(e)) => record.error = Some(e.to_string()),
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                record.error = Some(format!("panicked: {msg}"));
            }
        }
        record.timings.total_s = t0.elapsed().as_secs_f64();
        record.finished_at = now_utc();
        record
    }

    /// The K-shot subset of a train cell: CoOp's cached file when the suite says so, else sampled.
    fn fewshot(&self, ds: &Dataset, shots: usize, seed: u64) -> Result<(Vec<usize>, Vec<usize>, serde_json::Value)> {
        let sampled_val = || few_shot_indices(&ds.val, shots.min(4), seed);
        match self.digests.fewshot_from(&ds.def.name, shots, seed) {
            FewShotFrom::Sampled => Ok((
                few_shot_indices(&ds.train, shots, seed),
                sampled_val(),
                json!({ "source": "sampled" }),
            )),
            FewShotFrom::Coop(path) => {
                if !path.is_file() {
                    return Err(Error::Input(format!(
                        "{}: CoOp's few-shot file is not there, and the suite's [data] fewshot = \"coop\" requires \
                         it (\"coop-if-present\" samples instead)",
                        path.display()
                    )));
                }
                let root = self
                    .data_root
                    .ok_or_else(|| Error::Input("CoOp few-shot files need a data root".into()))?;
                let c = crate::data::fewshot_pkl::read(&path, root, ds)?;
                let val_source = if c.val.is_some() { "file" } else { "sampled" };
                Ok((
                    c.train,
                    c.val.unwrap_or_else(sampled_val),
                    json!({ "source": "coop-pkl", "file": path, "sha256": c.sha256, "val_source": val_source }),
                ))
            }
        }
    }

    /// Applies the suite's `on_corrupt` policy to images that did not decode.
    fn corrupt(&self, bad: Vec<BadImage>, record: &mut Record) -> Result<()> {
        if bad.is_empty() {
            return Ok(());
        }
        match self.suite.data.on_corrupt {
            OnCorrupt::Fail => Err(Error::Input(format!(
                "{} (and {} more images that do not decode); `on_corrupt = \"skip\"` in the suite's [data] leaves \
                 such images out",
                bad[0].error,
                bad.len() - 1
            ))),
            OnCorrupt::Skip => {
                for b in bad {
                    if !record.skipped_images.contains(&b) {
                        record.skipped_images.push(b);
                    }
                }
                Ok(())
            }
        }
    }

    /// A meta-training cell: the corpus, `meta_train`, the artifact beside the records.
    fn meta(&mut self, store: &Store, cell: &Cell, record: &mut Record) -> Result<()> {
        let name = &cell.spec.method;
        let spec = self
            .suite
            .gram
            .get(name)
            .ok_or_else(|| Error::Config(format!("no [gram.{name}]")))?
            .clone();
        let t = Instant::now();
        let corpus = match &spec.corpus {
            CorpusSpec::World { size } => Corpus::world(*size, self.pre.image_size as u32, spec.seed),
            CorpusSpec::Csv {
                path,
                image_column,
                caption_column,
                separator,
            } => {
                let sep = separator.chars().next().unwrap_or('\t');
                Corpus::from_csv(
                    &crate::files::expand(path).map(PathBuf::from)?,
                    image_column,
                    caption_column,
                    sep,
                )?
            }
        };
        record.timings.load_s = t.elapsed().as_secs_f64();
        // The corpus's frozen features go through the feature cache like a test split's.
        let corpus_digest = corpus.digest()?;
        // Keyed by the corpus's content, so every meta run on one corpus shares them.
        let source = |split: &str| FeatureSource {
            weights_sha256: self.weights_digest.clone(),
            dataset: "gram-corpus".into(),
            split: split.into(),
            split_digest: corpus_digest.clone(),
            transform: self.pre.clone(),
            backend: self.backend.to_string(),
            batch_size: self.suite.eval.batch_size,
        };
        let (si, sc) = (source("images"), source("captions"));
        let features = match (self.features.get(&si), self.features.get(&sc)) {
            (Some(i), Some(c)) => {
                record.features = Some(FeatureOrigin::Cached);
                (i, c)
            }
            _ => {
                let (i, c) = crate::gram::train::corpus_features(
                    &self.clip_eval,
                    &self.tok,
                    &self.pre,
                    &corpus,
                    &self.images,
                    self.suite.eval.batch_size,
                )?;
                record.timings.features_s = i.compute_s;
                record.features = Some(FeatureOrigin::Computed);
                (self.features.put(&si, i)?, self.features.put(&sc, c)?)
            }
        };
        // Pairs whose image does not decode: the suite's on_corrupt decides (fail, or leave out).
        self.corrupt(features.0.bad.clone(), record)?;
        let (corpus, features) = if features.0.ok.iter().all(|&ok| ok) {
            (corpus, (features.0.clone(), features.1.clone()))
        } else {
            let keep: Vec<usize> = (0..corpus.len()).filter(|&i| features.0.ok[i]).collect();
            (
                corpus.subset(&keep),
                (
                    std::sync::Arc::new(crate::gram::train::feature_rows(&features.0, &keep)),
                    std::sync::Arc::new(crate::gram::train::feature_rows(&features.1, &keep)),
                ),
            )
        };
        let t = Instant::now();
        let checkpoint = crate::gram::train::Checkpointing {
            path: store.meta_checkpoint_path(&cell.key),
            every_steps: None,
            every_secs: Some(60.0),
        };
        let resumed_from = checkpoint.path.exists();
        let steps = spec.train.steps;
        let mut last = Instant::now();
        let art = meta_train(
            &self.clip,
            &self.tok,
            &self.pre,
            &corpus,
            (&features.0, &features.1),
            &spec.train,
            spec.seed,
            Some(&checkpoint),
            // Long runs say where they are, at most twice a minute.
            &mut |step, s| {
                if last.elapsed().as_secs_f64() >= 30.0 {
                    eprintln!(
                        "  gram meta-training `{name}`: step {}/{steps}, query loss {:.4}",
                        step + 1,
                        s.query_loss
                    );
                    last = Instant::now();
                }
            },
        )?;
        record.timings.train_s = t.elapsed().as_secs_f64();
        record.digests = json!({
            "backbone": self.model.id,
            "weights_sha256": self.weights_digest,
            "corpus_sha256": art.corpus_digest,
        });
        let last = art.trace.last();
        let mut fit = json!({
            "final_query_loss": last.map(|t| t.query_loss),
            "final_text_coefficient": last.and_then(|t| t.text_coefficient),
            "final_vision_coefficient": last.and_then(|t| t.vision_coefficient),
        });
        if resumed_from {
            fit["resumed_from_checkpoint"] = json!(true);
        }
        record.train = Some(TrainSummary {
            epochs: 0,
            steps: art.trace.len(),
            images: corpus.len(),
            epoch_loss: art.trace.iter().map(|t| t.query_loss).collect(),
            fit: Some(fit),
        });
        store.put_meta(&cell.key, &art)?;
        match std::fs::remove_file(&checkpoint.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(&checkpoint.path, e)),
            _ => Ok(()),
        }
    }

    /// Wraps a gram method's host with θ₀ and ψ_φ from its meta-training cell.
    fn with_gram(
        &mut self,
        store: &Store,
        cell: &Cell,
        g: &crate::gram::GramConfig,
        host: Box<dyn PromptMethod<Ad<B>>>,
        train_items: &[Datum],
        record: &mut Record,
    ) -> Result<Box<dyn PromptMethod<Ad<B>>>> {
        let dep = cell
            .depends_on
            .as_ref()
            .ok_or_else(|| Error::Input("a gram cell without its meta-training cell".into()))?;
        match store.get(dep)? {
            Some(r) if r.status == Status::Ok => {}
            _ => return Err(Error::Input(format!("its meta-training cell {dep} has not succeeded"))),
        }
        let (art, artifact_sha256) = store.get_meta(dep)?;
        let regulate = if g.regulate {
            // The task embedding downstream is the meta run's, over the cell's training images
            // (meta-training used the support images' the same way).
            let (f, rows) = self.frozen_features(train_items, record)?;
            let kept: Vec<f32> = rows.iter().flat_map(|&i| f.row(i).to_vec()).collect();
            let features = Tensor::<B, 2>::from_data(TensorData::new(kept, [rows.len(), f.dim]), &self.device);
            Some(RegulatedGradients::<Ad<B>> {
                text: art.regulator::<B>(true, &self.device)?,
                vision: art.regulator::<B>(false, &self.device)?,
                task: art.config.task_embedding.of(features),
                params: Vec::new(),
            })
        } else {
            None
        };
        record.digests["meta"] = json!({
            "cell": dep,
            "artifact_sha256": artifact_sha256,
            "corpus_sha256": art.corpus_digest,
        });
        Ok(Box::new(WithGram::new(host, g.init.then_some(&art.theta0), regulate)?))
    }

    fn compute(&mut self, store: &Store, cell: &Cell, record: &mut Record) -> Result<()> {
        if cell.spec.phase == Phase::Meta {
            return self.meta(store, cell, record);
        }
        let s = &cell.spec;
        let mc = self
            .suite
            .methods
            .get(&s.method)
            .ok_or_else(|| Error::Config(format!("unknown method `{}`", s.method)))?
            .clone();
        let t_load = Instant::now();
        let ds = self.dataset(&s.dataset)?;
        let labels = subsample_labels(ds.classnames.len(), s.train_classes);
        let classnames: Vec<String> = labels.iter().map(|&l| ds.classnames[l].clone()).collect();
        let mut digests = json!({
            "backbone": self.model.id,
            "weights_sha256": self.weights_digest,
            "data": { s.dataset.clone(): ds.digest() },
        });
        let gram = match &mc {
            MethodConfig::Gram(g) => Some(g.clone()),
            _ => None,
        };
        let mc = self.suite.trained_as(&mc).clone();
        let mut method = mc.build(
            &self.clip,
            &self.tok,
            &classnames,
            &ds.def.template,
            ds.def.imagenet_like,
            s.seed,
        )?;
        record.timings.load_s = t_load.elapsed().as_secs_f64();

        let (eval_ds, eval_labels) = match s.phase {
            Phase::Train => {
                if method.trainable() {
                    let (train_idx, val_idx, source) = self.fewshot(&ds, s.shots, s.seed)?;
                    let mut fewshot = json!({ "train": train_idx, "val": val_idx });
                    if let (Some(f), Some(src)) = (fewshot.as_object_mut(), source.as_object()) {
                        f.extend(src.clone());
                    }
                    record.fewshot = Some(fewshot);
                    let picked: Vec<Datum> = train_idx.iter().map(|&i| ds.train[i].clone()).collect();
                    let mut train_items = relabel(&picked, &labels);
                    // Decode the subset once up front: corrupt images are dealt with before any
                    // batch is drawn, and the decoded images stay cached for every epoch.
                    let paths: Vec<&Path> = train_items.iter().map(|d| d.path.as_path()).collect();
                    let bad = check_decodable(&self.images, &paths);
                    train_items.retain(|d| !bad.iter().any(|b| b.path == d.path));
                    self.corrupt(bad, record)?;
                    if train_items.is_empty() {
                        return Err(Error::Input(format!("{}: the training split is empty", s.dataset)));
                    }
                    if let Some(g) = &gram {
                        method = self.with_gram(store, cell, g, method, &train_items, record)?;
                    }
                    let t = Instant::now();
                    if method.fits_features() {
                        let picked: Vec<Datum> = val_idx.iter().map(|&i| ds.val[i].clone()).collect();
                        let val_items = relabel(&picked, &labels);
                        record.train = Some(self.fit(method.as_mut(), &train_items, &val_items, record)?);
                    } else {
                        record.train =
                            Some(self.train(method.as_mut(), &mc, &train_items, &s.dataset, s.shots, s.seed)?);
                    }
                    record.timings.train_s = t.elapsed().as_secs_f64();
                    store.put_artifact(&cell.key, &method.save_artifact())?;
                }
                (ds.clone(), labels)
            }
            Phase::Checkpoint => {
                let path = s
                    .checkpoint
                    .as_deref()
                    .ok_or_else(|| Error::Input("a checkpoint cell without a checkpoint".into()))?;
                let loaded = crate::methods::released::read(Path::new(path), &method.save_artifact())?;
                method.load_artifact(&loaded)?;
                store.put_artifact(&cell.key, &method.save_artifact())?;
                digests["checkpoint"] = json!({
                    "path": path,
                    "sha256": crate::files::file_sha256(Path::new(path))?,
                });
                (ds.clone(), labels)
            }
            Phase::Meta => unreachable!("meta cells are computed by `meta`"),
            Phase::Eval => {
                let dep = cell
                    .depends_on
                    .as_ref()
                    .ok_or_else(|| Error::Input("an eval cell without a train cell".into()))?;
                match store.get(dep)? {
                    Some(r) if r.status == Status::Ok => {}
                    Some(_) => return Err(Error::Input(format!("its train cell {dep} failed"))),
                    None => return Err(Error::Input(format!("its train cell {dep} has not run"))),
                }
                if method.trainable() {
                    method.load_artifact(&store.get_artifact(dep)?)?;
                }
                let target = s.target.clone().unwrap_or_else(|| s.dataset.clone());
                let tds = self.dataset(&target)?;
                digests["data"][target.as_str()] = json!(tds.digest());
                let tl = subsample_labels(tds.classnames.len(), s.target_classes);
                (tds, tl)
            }
        };
        // A gram train cell noted its meta-training cell while building the method.
        let meta = record.digests.get("meta").cloned();
        record.digests = digests;
        if let Some(m) = meta {
            record.digests["meta"] = m;
        }
        let t = Instant::now();
        let (metrics, per_class) = self.evaluate(method.as_mut(), &eval_ds, &eval_labels, record)?;
        record.timings.eval_s = t.elapsed().as_secs_f64();
        record.metrics = Some(metrics);
        record.per_class = per_class;
        Ok(())
    }

    fn train(
        &mut self,
        method: &mut dyn PromptMethod<Ad<B>>,
        mc: &crate::suite::methods::MethodConfig,
        items: &[Datum],
        dataset: &str,
        shots: usize,
        seed: u64,
    ) -> Result<TrainSummary> {
        let (optim, epochs, batch_size) = mc
            .training()
            .ok_or_else(|| Error::Input("this method does not train".into()))?;
        let epochs = epochs.resolve(dataset, shots).map_err(Error::Config)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xa09_5eed);
        let mut order: Vec<usize> = (0..items.len()).collect();
        // Dassl drops the last incomplete batch when the data hold at least one full batch.
        let drop_last = items.len() >= batch_size;
        // The whole schedule is drawn first (it depends only on the seed), so the pipeline can
        // prepare batches ahead; each crop has its own seed.
        let mut batches = Vec::new();
        let mut batch_epoch = Vec::new();
        let mut batch_labels = Vec::new();
        for epoch in 0..epochs {
            order.shuffle(&mut rng);
            for chunk in order.chunks(batch_size) {
                if drop_last && chunk.len() < batch_size {
                    continue;
                }
                batches.push(
                    chunk
                        .iter()
                        .map(|&i| (items[i].path.clone(), Transform::Train { seed: rng.random() }))
                        .collect::<Vec<_>>(),
                );
                batch_labels.push(chunk.iter().map(|&i| items[i].label as i64).collect::<Vec<_>>());
                batch_epoch.push(epoch);
            }
        }
        let mut sums = vec![(0.0f32, 0usize); epochs];
        let s = self.pre.image_size;
        let (clip, device) = (&self.clip, &self.device);
        stream(&self.images, &self.pre, batches, |b, prepared| {
            if let Some(bad) = prepared.bad.first() {
                // Checked before training: an image that decoded then and not now is an I/O fault.
                return Err(Error::Input(bad.error.clone()));
            }
            let n = prepared.kept.len();
            let batch = Batch {
                pixels: Tensor::<Ad<B>, 4>::from_data(TensorData::new(prepared.pixels, [n, 3, s, s]), device),
                labels: Tensor::<Ad<B>, 1, Int>::from_data(TensorData::new(batch_labels[b].clone(), [n]), device),
            };
            let epoch = batch_epoch[b];
            let lr = optim.lr_at(epoch, epochs);
            let loss = method.train_step(clip, batch, lr, None)?;
            if !loss.is_finite() {
                return Err(Error::Input(format!("training diverged: loss {loss} at epoch {epoch}")));
            }
            sums[epoch].0 += loss;
            sums[epoch].1 += 1;
            if batch_epoch.get(b + 1) != Some(&epoch) {
                method.end_epoch(epoch, epochs)?;
            }
            Ok(())
        })?;
        let steps = sums.iter().map(|x| x.1).sum();
        Ok(TrainSummary {
            epochs,
            steps,
            images: items.len(),
            epoch_loss: sums.iter().filter(|x| x.1 > 0).map(|(l, n)| l / *n as f32).collect(),
            fit: None,
        })
    }

    /// The frozen encoder's features (eval transform, the suite's batch size) of `items`.
    fn encode(&self, items: &[Datum]) -> Result<FeatureSet> {
        let paths: Vec<PathBuf> = items.iter().map(|d| d.path.clone()).collect();
        encode_images(
            &self.clip_eval,
            &self.pre,
            &self.images,
            &paths,
            self.suite.eval.batch_size,
            &self.device,
        )
    }

    /// The frozen encoder's features (eval transform) of `items`, and which of them decoded (the
    /// others go through the suite's corrupt-image policy).
    fn frozen_features(&self, items: &[Datum], record: &mut Record) -> Result<(FeatureSet, Vec<usize>)> {
        let set = self.encode(items)?;
        self.corrupt(set.bad.clone(), record)?;
        let keep = (0..items.len()).filter(|&i| set.ok[i]).collect();
        Ok((set, keep))
    }

    /// Fits a feature-fitted method on the frozen features (eval transform) of its training and
    /// validation images.
    fn fit(
        &mut self,
        method: &mut dyn PromptMethod<Ad<B>>,
        train: &[Datum],
        val: &[Datum],
        record: &mut Record,
    ) -> Result<TrainSummary> {
        let labelled = |items: &[Datum], record: &mut Record| -> Result<Labelled> {
            let (set, keep) = self.frozen_features(items, record)?;
            Ok(Labelled {
                x: keep.iter().flat_map(|&i| set.row(i).to_vec()).collect(),
                y: keep.iter().map(|&i| items[i].label).collect(),
                dim: set.dim,
            })
        };
        let tr = labelled(train, record)?;
        let va = labelled(val, record)?;
        let images = tr.y.len();
        let fit = method.fit_features(tr, va, &self.device)?;
        Ok(TrainSummary {
            epochs: 0,
            steps: 0,
            images,
            epoch_loss: Vec::new(),
            fit: Some(fit),
        })
    }

    /// The image features of `ds`'s whole test split, from the feature cache or computed now.
    fn test_features(&mut self, ds: &Dataset, record: &mut Record) -> Result<Arc<FeatureSet>> {
        let source = FeatureSource {
            weights_sha256: self.weights_digest.clone(),
            dataset: ds.def.name.clone(),
            split: "test".into(),
            split_digest: ds.digest(),
            transform: self.pre.clone(),
            backend: self.backend.to_string(),
            batch_size: self.suite.eval.batch_size,
        };
        if let Some(f) = self.features.get(&source) {
            record.features = Some(FeatureOrigin::Cached);
            return Ok(f);
        }
        let set = self.encode(&ds.test)?;
        record.timings.features_s = set.compute_s;
        record.features = Some(FeatureOrigin::Computed);
        self.features.put(&source, set)
    }

    fn evaluate(
        &mut self,
        method: &mut dyn PromptMethod<Ad<B>>,
        ds: &Dataset,
        labels: &[usize],
        record: &mut Record,
    ) -> Result<(Metrics, Vec<ClassAccuracy>)> {
        let names: Vec<String> = labels.iter().map(|&l| ds.classnames[l].clone()).collect();
        let map: BTreeMap<usize, usize> = labels.iter().enumerate().map(|(i, &l)| (l, i)).collect();
        // (position in the test split, label in the evaluated label space)
        let items: Vec<(usize, usize)> = ds
            .test
            .iter()
            .enumerate()
            .filter_map(|(i, d)| map.get(&d.label).map(|&l| (i, l)))
            .collect();
        if items.is_empty() {
            return Err(Error::Input(format!(
                "{}: no test images in the selected classes",
                ds.def.name
            )));
        }
        method.begin_eval(
            &self.clip_eval,
            &self.tok,
            &ClassSet {
                names: &names,
                template: &ds.def.template,
            },
        )?;
        let mut correct = vec![0usize; names.len()];
        let mut total = vec![0usize; names.len()];
        let mut tally = |batch: &[(usize, usize)], logits: Tensor<B, 2>| {
            let pred = logits.argmax(1).into_data().convert::<i64>();
            let pred = pred.to_vec::<i64>().expect("converted to i64 above");
            for (&(_, label), p) in batch.iter().zip(pred) {
                total[label] += 1;
                if p as usize == label {
                    correct[label] += 1;
                }
            }
        };
        let bs = self.suite.eval.batch_size;
        if self.use_features && method.image_encoder_frozen() {
            let feats = self.test_features(ds, record)?;
            let bad: Vec<BadImage> = feats
                .bad
                .iter()
                .filter(|b| items.iter().any(|&(i, _)| ds.test[i].path == b.path))
                .cloned()
                .collect();
            self.corrupt(bad, record)?;
            let kept: Vec<(usize, usize)> = items.iter().copied().filter(|&(i, _)| feats.ok[i]).collect();
            for chunk in kept.chunks(bs) {
                let rows: Vec<f32> = chunk.iter().flat_map(|&(i, _)| feats.row(i).to_vec()).collect();
                let f = Tensor::<B, 2>::from_data(TensorData::new(rows, [chunk.len(), feats.dim]), &self.device);
                let logits = method
                    .eval_logits_from_features(&self.clip_eval, f)
                    .ok_or_else(|| Error::Input("the method scores image features but gave no logits".into()))?;
                tally(chunk, logits);
            }
        } else {
            record.features = Some(FeatureOrigin::Encoded);
            let batches: Vec<Vec<(PathBuf, Transform)>> = items
                .chunks(bs)
                .map(|c| {
                    c.iter()
                        .map(|&(i, _)| (ds.test[i].path.clone(), Transform::Eval))
                        .collect()
                })
                .collect();
            let s = self.pre.image_size;
            let mut bad_all = Vec::new();
            let (clip, device) = (&self.clip_eval, &self.device);
            stream(&self.images, &self.pre, batches, |b, prepared| {
                bad_all.extend(prepared.bad);
                let chunk = &items[b * bs..(b * bs + bs).min(items.len())];
                let kept: Vec<(usize, usize)> = prepared.kept.iter().map(|&k| chunk[k]).collect();
                if !kept.is_empty() {
                    let pixels =
                        Tensor::<B, 4>::from_data(TensorData::new(prepared.pixels, [kept.len(), 3, s, s]), device);
                    tally(&kept, method.eval_logits(clip, pixels));
                }
                Ok(())
            })?;
            self.corrupt(bad_all, record)?;
        }
        let (c, t): (usize, usize) = (correct.iter().sum(), total.iter().sum());
        if t == 0 {
            return Err(Error::Input(format!("{}: no test image decoded", ds.def.name)));
        }
        // Classes with no test image have no accuracy; they are left out.
        let per_class: Vec<ClassAccuracy> = names
            .iter()
            .enumerate()
            .filter(|(i, _)| total[*i] > 0)
            .map(|(i, n)| ClassAccuracy {
                class: n.clone(),
                n: total[i],
                correct: correct[i],
                accuracy: 100.0 * correct[i] as f64 / total[i] as f64,
            })
            .collect();
        let present: Vec<f64> = per_class.iter().map(|p| p.accuracy).collect();
        Ok((
            Metrics {
                accuracy: 100.0 * c as f64 / t as f64,
                correct: c,
                total: t,
                macro_accuracy: present.iter().sum::<f64>() / present.len() as f64,
            },
            per_class,
        ))
    }
}
