//! Running a suite's cells: skip what the store already holds (per the overwrite policy), build
//! the world and load the backbone once, then lock, compute and record each cell. A cell that
//! fails (an error or a panic) records its error and the run goes on; a cell killed mid-way leaves
//! no record and runs again next time.
//!
//! `session.rs` holds the state one run shares, `cell.rs` a cell's record and phases, `train.rs`
//! the SGD loop and feature fits, `eval.rs` evaluation, `meta.rs` GRAM's meta-training cells.

mod cell;
mod eval;
mod interrupt;
pub mod learner;
mod meta;
mod outcome;
pub mod resume;
mod session;
pub mod shard;
#[cfg(test)]
mod tests;
mod train;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use indicatif::{ProgressBar, ProgressStyle};

use self::session::Session;
use crate::backend::{dispatch, BackendKind, Precision, WithBackend};
use crate::clip::LoadOptions;
use crate::error::{Error, Result};
use crate::resolve::{needs_world, ResolvedSuite};
use crate::store::{Status, Store};
use crate::suite::cells::{inputs, Cell, Phase};
use crate::suite::Suite;
use crate::world::{ensure_world, WorldArtifacts, BACKBONE};

type Ad<B> = Autodiff<B>;

pub use learner::{CellMethod, Learner};

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

/// How to run: where records and caches go, on which backend, which cells.
pub struct RunOptions {
    pub store: PathBuf,
    /// Run although a dataset's split definition differs from its pin.
    pub allow_changed_data: bool,
    pub cache: PathBuf,
    pub backend: BackendKind,
    pub only: Vec<(String, String)>,
    pub overwrite: Overwrite,
    /// Reuse test-split image features of frozen encoders across cells and runs.
    pub feature_cache: bool,
    /// Run only the cells this shard owns (`shard::Shard`).
    pub shard: Option<shard::Shard>,
    /// Run only these cells (a Slurm array task's); an input not among them waits like a shard's.
    pub keys: Option<std::collections::HashSet<String>>,
    /// Run only the cells of this precision. None: those of the suite's default precision (or,
    /// when none of those is left to run, of the first other one), and count the rest in
    /// [`RunSummary::later`]: a process computes at one precision (`backend::set_precision`).
    pub precision: Option<Precision>,
}

#[derive(Debug, Default)]
pub struct RunSummary {
    pub ran: usize,
    pub failed: usize,
    pub skipped: usize,
    pub busy: usize,
    /// Cells of this shard whose input another shard has not recorded yet.
    pub waiting: usize,
    /// The precision this run computed at.
    pub precision: Option<Precision>,
    /// Cells left to run at other precisions, each in a process of its own, after this one (the
    /// default precision runs first: GRAM's meta-training cells are at it).
    pub later: Vec<(Precision, usize)>,
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

/// Runs the selected cells of a resolved suite.
pub fn run_suite(resolved: &ResolvedSuite, opts: &RunOptions) -> Result<RunSummary> {
    // Say so before anything runs, even when every selected cell is already recorded.
    opts.backend.ensure_compiled()?;
    let suite = &resolved.suite;
    resolved.check_pins(opts.allow_changed_data)?;
    let selected: Vec<Cell> = resolved
        .plan
        .select(&opts.only)
        .map_err(|e| Error::Input(format!("{e} of suite `{}`", suite.name)))?
        .into_iter()
        .cloned()
        .collect();
    let by_key = resolved.plan.by_key();
    // A partial run (a shard, a Slurm task's cells) runs only the cells it owns.
    let owns =
        |c: &Cell| opts.shard.is_none_or(|sh| sh.owns(c)) && opts.keys.as_ref().is_none_or(|k| k.contains(&c.key));
    let selected: Vec<Cell> = selected.into_iter().filter(|c| owns(c)).collect();
    // Only now, with the suite accepted, is its results folder created.
    let store = Store::open(&opts.store, &suite.name)?;
    // Decide what to run before building anything.
    let mut todo = Vec::new();
    let mut summary = RunSummary::default();
    for c in &selected {
        let existing = store.get(&c.key)?;
        let run = matches!(
            (opts.overwrite, existing.as_ref().map(|r| r.status)),
            (_, None) | (Overwrite::Always, _) | (Overwrite::OnlyMissing, Some(Status::Failed))
        );
        if !run {
            summary.skipped += 1;
            continue;
        }
        if opts.shard.is_some() || opts.keys.is_some() {
            // An input another runner owns and has not recorded yet: this one cannot run the cell
            // now, and must not compute that input itself (it would run twice).
            let mut waits_for = None;
            for d in inputs(c, &by_key) {
                if !owns(d) && !store.get(&d.key)?.is_some_and(|r| r.status == Status::Ok) {
                    waits_for = Some(d);
                    break;
                }
            }
            if let Some(d) = waits_for {
                match opts.shard {
                    Some(sh) => eprintln!(
                        "{}: waits for `{}` (shard {}/{}), not recorded yet; run shard {sh} again after it",
                        cell_label(c),
                        cell_label(d),
                        shard::Shard::owner(d, sh.count),
                        sh.count
                    ),
                    None => eprintln!(
                        "{}: waits for `{}`, not recorded yet (another task's, or it failed); the next submit runs it",
                        cell_label(c),
                        cell_label(d),
                    ),
                }
                summary.waiting += 1;
                continue;
            }
        }
        todo.push(c.clone());
    }
    eprintln!(
        "suite {} v{}{}: {} cells selected, {} to run, {} already recorded{}",
        suite.name,
        suite.version,
        opts.shard.map_or(String::new(), |sh| format!(", shard {sh}")),
        selected.len(),
        todo.len(),
        summary.skipped,
        if summary.waiting > 0 {
            format!(", {} waiting on other shards", summary.waiting)
        } else {
            String::new()
        }
    );
    let precision = opts.precision.unwrap_or_else(|| {
        let default = suite.precision.default;
        let mut present: Vec<Precision> = todo.iter().map(|c| suite.precision.of_cell(&c.spec)).collect();
        present.sort_by_key(|p| (*p != default, p.as_str()));
        present.first().copied().unwrap_or(default)
    });
    let mut later: BTreeMap<&str, (Precision, usize)> = BTreeMap::new();
    todo.retain(|c| {
        let p = suite.precision.of_cell(&c.spec);
        if p != precision && opts.precision.is_none() {
            later.entry(p.as_str()).or_insert((p, 0)).1 += 1;
        }
        p == precision
    });
    summary.later = later.into_values().collect();
    summary.precision = Some(precision);
    if todo.is_empty() {
        return Ok(summary);
    }
    if suite.precision.methods.values().any(|p| *p != suite.precision.default) || !precision.is_f32() {
        eprintln!(
            "precision {precision}: {} cells{}",
            todo.len(),
            summary
                .later
                .iter()
                .map(|(p, n)| format!("; {n} at {p} after them, in a process of their own"))
                .collect::<String>()
        );
    }
    let command: Vec<String> = std::env::args().collect();
    let progress = interrupt::install(todo.len(), command.join(" "));
    if let (Some(w), true, false) = (&suite.world, needs_world(suite), precision.is_f32()) {
        // Pretraining is f32, and fixes this process's device at it (`backend::set_precision`).
        if crate::world::build::would_pretrain(&opts.cache, w)? {
            return Err(Error::Input(format!(
                "suite `{}`: its cells compute at {precision}, and its world's micro-CLIP must first be \
                 pretrained (at f32) in a process of its own: run `gram-bench world build SUITE` once, \
                 then this command again",
                suite.name
            )));
        }
    }
    let world = match (&suite.world, needs_world(suite)) {
        (Some(w), true) => Some(ensure_world(&opts.cache, w, &mut |m| eprintln!("{m}"))?),
        (None, true) => return Err(Error::Config(format!("suite `{}` has no [world] table", suite.name))),
        (_, false) => None,
    };
    if world.is_some() && opts.backend == BackendKind::Cpu && !crate::backend::cpu_kernels_match_the_baselines() {
        eprintln!("{}", crate::backend::OTHER_KERNELS_WARNING);
    }
    let model = resolve_backbone(suite, resolved, world.as_ref())?;
    let work = RunWork {
        resolved,
        overwrite: opts.overwrite,
        model: &model,
        world: world.as_ref(),
        features: opts.feature_cache.then(|| opts.cache.join("features")),
        store: &store,
        todo: &todo,
        tty: std::io::stderr().is_terminal(),
        backend: opts.backend,
        precision,
        progress,
    };
    let s = dispatch(opts.backend, precision, work)??;
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
    /// The pinned digest, verified before the first cell: datasets.lock's for lock backbones, the
    /// world build's record for the micro-CLIP (None: a world built before digests were recorded).
    pub sha256: Option<String>,
    /// Where the pin comes from and what to do when the weights differ from it.
    pub pinned_by: String,
    /// The digest as cell keys spell it.
    pub id: String,
}

/// The backbone's checkpoint and pin; its identity is the resolution's (the one cell keys spell).
fn resolve_backbone(suite: &Suite, resolved: &ResolvedSuite, world: Option<&WorldArtifacts>) -> Result<BackboneSource> {
    let (lock, id) = (&resolved.lock, resolved.inputs.backbone.clone());
    if suite.backbone.name == BACKBONE {
        let world = world.ok_or_else(|| Error::Config("micro-clip needs the embedded world".into()))?;
        return Ok(BackboneSource {
            path: world.model_dir.clone(),
            options: LoadOptions::default(),
            sha256: world.manifest.digests.as_ref().map(|d| d.weights_sha256.clone()),
            pinned_by: format!(
                "the world's build recorded (the cached world is damaged: delete {} to rebuild it)",
                world.model_dir.parent().unwrap_or(&world.model_dir).display()
            ),
            id,
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
        pinned_by: "datasets.lock pins".into(),
        id,
    })
}

/// The cells to run and what a session needs, handed to the chosen backend.
struct RunWork<'a> {
    resolved: &'a ResolvedSuite,
    overwrite: Overwrite,
    model: &'a BackboneSource,
    world: Option<&'a WorldArtifacts>,
    /// The feature cache's directory (None: off).
    features: Option<PathBuf>,
    store: &'a Store,
    todo: &'a [Cell],
    tty: bool,
    backend: BackendKind,
    precision: Precision,
    progress: interrupt::Progress,
}

impl RunWork<'_> {
    /// Whether a cell `cell` depends on, at any depth, has no record yet and is either locked by
    /// another runner now or was deferred to one earlier in this run.
    fn upstream_busy(&self, cell: &Cell, deferred: &std::collections::HashSet<String>) -> Result<bool> {
        for d in inputs(cell, &self.resolved.plan.by_key()) {
            let k = &d.key;
            if self.store.get(k)?.is_none() && (deferred.contains(k) || self.store.try_lock(k)?.is_none()) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

impl WithBackend for RunWork<'_> {
    type Output = Result<RunSummary>;
    fn run<B: Backend>(self, device: B::Device) -> Result<RunSummary> {
        let mut session = Session::<B>::new(
            self.resolved,
            self.model,
            self.world,
            self.store,
            self.features.clone(),
            device,
            self.backend,
            self.precision,
        )?;
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
        // Cells this run left to another runner (busy): what depends on them waits too.
        let mut deferred = std::collections::HashSet::new();
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
                deferred.insert(cell.key.clone());
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
            // A cell it depends on, however deep (eval → train → GRAM's meta-training), is being
            // computed elsewhere or was left to another runner earlier in this run: leave this
            // one to that runner's turn rather than record a false failure.
            if self.upstream_busy(cell, &deferred)? {
                deferred.insert(cell.key.clone());
                summary.busy += 1;
                done("a cell it depends on is being computed by another runner; skipped");
                continue;
            }
            let record = session.run_cell(cell);
            self.store.put_finished(&record)?;
            self.progress.recorded_one();
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
