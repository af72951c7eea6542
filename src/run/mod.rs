//! Running a suite's cells: skip what the store already holds (per the overwrite policy), build
//! the world and load the backbone once, then lock, compute and record each cell. A cell that
//! fails (an error or a panic) records its error and the run goes on; a cell killed mid-way leaves
//! no record and runs again next time.
//!
//! `session.rs` holds the state one run shares, `cell.rs` a cell's record and phases, `train.rs`
//! the SGD loop and feature fits, `eval.rs` evaluation, `meta.rs` GRAM's meta-training cells.

mod cell;
mod eval;
pub(crate) mod interrupt;
pub mod learner;
mod meta;
mod outcome;
mod queue;
pub mod resume;
mod session;
pub mod shard;
#[cfg(test)]
mod tests;
mod train;

use std::collections::{BTreeMap, HashSet};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

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

/// `--jobs`: how many cells a run computes at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jobs {
    /// On the CPU, the embedded world's micro-CLIP cells, each too small to keep more than about
    /// one core busy, run one per core of the thread pool (at most [`Jobs::AUTO_MAX`]); anything
    /// else — a full-size backbone, whose cells fill the machine and its memory, or a GPU — one
    /// at a time.
    Auto,
    Count(usize),
}

impl Jobs {
    pub const AUTO_MAX: usize = 8;

    /// The number of cells at once for `suite` on `backend`.
    pub fn resolve(self, suite: &Suite, backend: BackendKind) -> usize {
        match self {
            Jobs::Count(n) => n.max(1),
            Jobs::Auto if backend == BackendKind::Cpu && suite.backbone.name == BACKBONE => {
                rayon::current_num_threads().clamp(1, Jobs::AUTO_MAX)
            }
            Jobs::Auto => 1,
        }
    }
}

impl std::str::FromStr for Jobs {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Jobs::Auto),
            _ => match s.parse::<usize>() {
                Ok(n) if n > 0 => Ok(Jobs::Count(n)),
                _ => Err(format!("`{s}`: give a number of cells (1 or more) or `auto`")),
            },
        }
    }
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
    /// Cells computed at once, each by a worker with its own session (loaded backbone, image
    /// cache); the workers share one thread pool, and a cell's numbers do not depend on how many
    /// run beside it.
    pub jobs: usize,
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
    /// Cells of the suite outside `--only` that have no finished record: what the selection left.
    pub unselected: usize,
    /// Selected cells that other shards own and have not finished: (shard, cells), by shard.
    pub other_shards: Vec<(usize, usize)>,
    /// Failed records `--overwrite never` kept as they are.
    pub kept_failed: usize,
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
    let (selected, others): (Vec<Cell>, Vec<Cell>) = selected.into_iter().partition(|c| owns(c));
    // Only now, with the suite accepted, is its results folder created.
    let store = Store::open(&opts.store, &suite.name)?;
    let mut summary = RunSummary::default();
    // What a partial run leaves, so that it can say so and how to run it: cells outside `--only`,
    // and other shards' cells, that have no finished record.
    let finished = |c: &Cell| -> Result<bool> { Ok(store.get(&c.key)?.is_some_and(|r| r.status == Status::Ok)) };
    if !opts.only.is_empty() {
        let chosen: HashSet<&str> = selected.iter().chain(&others).map(|c| c.key.as_str()).collect();
        for c in &resolved.plan.cells {
            if !chosen.contains(c.key.as_str()) && !finished(c)? {
                summary.unselected += 1;
            }
        }
    }
    if let Some(sh) = opts.shard {
        let mut by_shard: BTreeMap<usize, usize> = BTreeMap::new();
        for c in &others {
            if !finished(c)? {
                *by_shard.entry(shard::Shard::owner(c, sh.count)).or_default() += 1;
            }
        }
        summary.other_shards = by_shard.into_iter().collect();
    }
    // Decide what to run before building anything.
    let mut todo = Vec::new();
    for c in &selected {
        let existing = store.get(&c.key)?;
        let run = matches!(
            (opts.overwrite, existing.as_ref().map(|r| r.status)),
            (_, None) | (Overwrite::Always, _) | (Overwrite::OnlyMissing, Some(Status::Failed))
        );
        if !run {
            summary.skipped += 1;
            if existing.is_some_and(|r| r.status == Status::Failed) {
                summary.kept_failed += 1;
            }
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
        jobs: opts.jobs.clamp(1, todo.len()),
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
    jobs: usize,
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
    fn upstream_busy(&self, cell: &Cell, deferred: &HashSet<String>) -> Result<bool> {
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
        if self.jobs > 1 {
            eprintln!("computing {} cells at once", self.jobs);
        }
        let queue = queue::Queue::new(self.todo, &self.resolved.plan.cells);
        let shared = Shared {
            summary: Mutex::new(RunSummary::default()),
            deferred: Mutex::new(HashSet::new()),
            dealt: AtomicUsize::new(0),
            probing: Mutex::new(()),
        };
        let results: Vec<Result<()>> = if self.jobs == 1 {
            vec![self.worker::<B>(device, &queue, &shared, bar.as_ref())]
        } else {
            std::thread::scope(|s| {
                let workers: Vec<_> = (0..self.jobs)
                    .map(|_| {
                        let (device, queue, shared, bar) = (device.clone(), &queue, &shared, bar.as_ref());
                        let work = &self;
                        // The main thread's stack size: a cell's autodiff graph is walked recursively.
                        std::thread::Builder::new()
                            .stack_size(WORKER_STACK)
                            .spawn_scoped(s, move || work.worker::<B>(device, queue, shared, bar))
                    })
                    .collect();
                workers
                    .into_iter()
                    .map(|w| match w {
                        Ok(handle) => handle.join().unwrap_or_else(|panic| {
                            Err(Error::Internal(format!(
                                "a run's worker panicked: {}",
                                panic_message(&*panic)
                            )))
                        }),
                        Err(e) => Err(Error::Run(format!("starting a worker thread: {e}"))),
                    })
                    .collect()
            })
        };
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        results.into_iter().collect::<Result<Vec<()>>>()?;
        Ok(shared.summary.into_inner().unwrap_or_else(|p| p.into_inner()))
    }
}

/// A cell a worker holds: given back to the queue however the worker leaves it — and if by a
/// panic outside the cell's own guard (the store, a lock), the run stops, so no other worker waits
/// for it forever.
struct Taken<'q, 'a> {
    queue: &'q queue::Queue<'a>,
    cell: &'a Cell,
}

impl Drop for Taken<'_, '_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.queue.stop();
        }
        self.queue.finish(self.cell);
    }
}

/// What a panic said (its `String` or `&str` payload).
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

/// The stack each worker thread gets (the main thread's usual 8 MiB).
const WORKER_STACK: usize = 8 << 20;

/// What a run's workers count together.
struct Shared {
    summary: Mutex<RunSummary>,
    /// Cells this run left to another runner (busy): what depends on them waits too.
    deferred: Mutex<HashSet<String>>,
    /// Cells dealt with so far, for the progress lines.
    dealt: AtomicUsize,
    /// Held while a worker takes or probes a cell lock: a probe takes a lock for an instant, and
    /// two workers of one run must not read each other's instant as another runner.
    probing: Mutex<()>,
}

impl Shared {
    fn count(&self, f: impl FnOnce(&mut RunSummary)) {
        f(&mut self.summary.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn deferred(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.deferred.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn probing(&self) -> std::sync::MutexGuard<'_, ()> {
        self.probing.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl RunWork<'_> {
    /// One worker: a session of its own, and the queue's cells until none is left. An error of
    /// the store (not of a cell, which its record holds) stops every worker.
    fn worker<B: Backend>(
        &self,
        device: B::Device,
        queue: &queue::Queue,
        shared: &Shared,
        bar: Option<&ProgressBar>,
    ) -> Result<()> {
        let result = self.work::<B>(device, queue, shared, bar);
        if result.is_err() {
            queue.stop();
        }
        result
    }

    fn work<B: Backend>(
        &self,
        device: B::Device,
        queue: &queue::Queue,
        shared: &Shared,
        bar: Option<&ProgressBar>,
    ) -> Result<()> {
        let mut session = Session::<B>::new(
            self.resolved,
            self.model,
            self.world,
            self.store,
            self.features.clone(),
            device,
            self.backend,
            self.precision,
            self.jobs,
        )?;
        while let Some(cell) = queue.next()? {
            if let Some(b) = bar {
                b.set_message(cell_label(cell));
            }
            let taken = Taken { queue, cell };
            let outcome = self.compute(&mut session, cell, shared);
            drop(taken);
            let line = outcome?;
            // One line per cell, whatever became of it; the bar counts every cell dealt with.
            let msg = format!(
                "[{}/{}] {}: {line}",
                shared.dealt.fetch_add(1, Ordering::SeqCst) + 1,
                self.todo.len(),
                cell_label(cell)
            );
            match bar {
                Some(b) => {
                    b.println(msg);
                    b.inc(1);
                }
                None => eprintln!("{msg}"),
            }
        }
        Ok(())
    }

    /// Locks, computes and records one cell, or says why another runner has it; the progress
    /// line's outcome.
    fn compute<B: Backend>(&self, session: &mut Session<B>, cell: &Cell, shared: &Shared) -> Result<String> {
        // Under `probing`: another worker's probe of this cell's lock (below) must not read as a
        // runner computing it.
        let lock = {
            let _probing = shared.probing();
            self.store.try_lock(&cell.key)?
        };
        let Some(_lock) = lock else {
            shared.deferred().insert(cell.key.clone());
            shared.count(|s| s.busy += 1);
            return Ok("another runner is computing it; skipped".into());
        };
        // Another runner may have finished it since this run made its list.
        if self.overwrite != Overwrite::Always && self.store.get(&cell.key)?.is_some_and(|r| r.status == Status::Ok) {
            shared.count(|s| s.skipped += 1);
            return Ok("recorded by another runner".into());
        }
        // A cell it depends on, however deep (eval → train → GRAM's meta-training), is being
        // computed elsewhere or was left to another runner earlier in this run: leave this
        // one to that runner's turn rather than record a false failure.
        let busy = {
            let deferred = shared.deferred().clone();
            let _probing = shared.probing();
            self.upstream_busy(cell, &deferred)?
        };
        if busy {
            shared.deferred().insert(cell.key.clone());
            shared.count(|s| s.busy += 1);
            return Ok("a cell it depends on is being computed by another runner; skipped".into());
        }
        let record = session.run_cell(cell);
        self.store.put_finished(&record)?;
        self.progress.recorded_one();
        shared.count(|s| s.ran += 1);
        Ok(match (&record.status, &record.metrics) {
            (Status::Ok, Some(m)) => format!("{:.2}% ({:.1} s)", m.accuracy, record.timings.total_s),
            (Status::Ok, None) => format!("done ({:.1} s)", record.timings.total_s),
            _ => {
                shared.count(|s| s.failed += 1);
                format!("FAILED: {}", record.error.as_deref().unwrap_or("unknown error"))
            }
        })
    }
}
