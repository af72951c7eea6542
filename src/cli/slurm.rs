//! `gram-bench slurm submit | status | task`: a suite's cells as Slurm job arrays (`crate::slurm`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::common::*;
use crate::backend::BackendKind;
use crate::error::{Error, Result};
use crate::report::markdown_table;
use crate::run::{cell_label, run_suite, Overwrite, RunOptions};
use crate::slurm::{
    array_chunks, cells_to_submit, max_array_size, queued_cells, queued_jobs, script, stage_plans, task_keys, Manifest,
    Queue, Sbatch, Stage,
};
use crate::store::{Status, Store};
use crate::suite::Suite;

#[derive(Subcommand, Debug)]
pub enum SlurmCommand {
    /// Submit the suite's missing and failed cells as job arrays, one per dependency stage.
    Submit(Box<SubmitArgs>),
    /// Per stage: cells done, running, queued, failed and missing, from the store and squeue.
    Status(StatusArgs),
    /// Run one array task's cells (what the submitted scripts call).
    #[command(hide = true)]
    Task(TaskArgs),
}

#[derive(Args, Debug)]
pub struct SubmitArgs {
    pub suite: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
    /// cpu, wgpu or cuda: the backend the tasks run on.
    #[arg(long, default_value = "cpu")]
    pub backend: BackendKind,
    /// Only cells matching FIELD=VALUE (as `run --only`; repeatable).
    #[arg(long, value_parser = parse_filter)]
    pub only: Vec<(String, String)>,
    #[arg(long)]
    pub partition: Option<String>,
    /// Generic resources per task, e.g. `gpu:1`.
    #[arg(long)]
    pub gres: Option<String>,
    /// GPUs per task (`--gpus` of sbatch).
    #[arg(long)]
    pub gpus: Option<String>,
    #[arg(long)]
    pub cpus_per_task: Option<usize>,
    /// Memory per node, as sbatch takes it (e.g. `32G`).
    #[arg(long)]
    pub mem: Option<String>,
    /// Time limit per task, as sbatch takes it (e.g. `4:00:00`).
    #[arg(long)]
    pub time: Option<String>,
    /// At most K tasks of an array at once (the array's `%K` throttle).
    #[arg(long)]
    pub max_parallel: Option<usize>,
    /// Cells per array task (short cells: several per task, fewer jobs).
    #[arg(long, default_value_t = 1)]
    pub cells_per_task: usize,
    /// Tasks per array at most (default: the cluster's MaxArraySize from `scontrol show config`).
    #[arg(long)]
    pub max_array_size: Option<usize>,
    /// Print the sbatch scripts and submit nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Extra sbatch arguments, passed through (repeatable), e.g. `--sbatch-arg=--account=lab`.
    #[arg(long = "sbatch-arg", allow_hyphen_values = true)]
    pub sbatch_args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    pub suite: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Args, Debug)]
pub struct TaskArgs {
    /// The submission's manifest.json.
    pub manifest: PathBuf,
    #[arg(long)]
    pub stage_index: usize,
    /// The task index of the array's first task within its stage (added to SLURM_ARRAY_TASK_ID).
    #[arg(long)]
    pub offset: usize,
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).map_err(|e| Error::io(p, e))
}

pub fn submit(a: &SubmitArgs) -> Result<()> {
    if a.cells_per_task == 0 || a.max_parallel == Some(0) || a.max_array_size == Some(0) {
        return Err(Error::Input(
            "--cells-per-task, --max-parallel and --max-array-size must be positive".into(),
        ));
    }
    a.backend.ensure_compiled()?;
    let resolved = resolve(Suite::load(&a.suite)?, &a.store)?;
    resolved.check_pins(false)?;
    let name = resolved.suite.name.clone();
    let store = Store::open(&a.store.store, &name)?;
    let earlier = Manifest::all(&a.store.store, &name)?;
    // Cells of earlier submissions still in the queue are left to them; without a queue to ask
    // (a dry run off the cluster) every cell not recorded is listed.
    let queue = match Queue::read() {
        Ok(q) => q,
        Err(e) if a.dry_run => {
            eprintln!("note: {e}; listing every cell not recorded");
            Queue::default()
        }
        Err(e) => return Err(e),
    };
    let queued = queued_cells(&earlier, &queue);
    let (cells, done, in_queue) = cells_to_submit(&resolved, &store, &a.only, &queued)?;
    eprintln!(
        "suite {name}: {} cells to submit, {done} recorded, {in_queue} queued or running in earlier submissions",
        cells.len()
    );
    if cells.is_empty() {
        return Ok(());
    }
    let max = a.max_array_size.unwrap_or_else(max_array_size);
    let id = format!(
        "{}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        std::process::id()
    );
    let dir = Manifest::dir(&absolute(&a.store.store)?, &name, &id);
    let logs = dir.join("logs");
    let mut m = Manifest {
        id: id.clone(),
        suite: absolute(&a.suite)?,
        store: absolute(&a.store.store)?,
        cache: absolute(&cache_of(&a.store))?,
        lock: absolute(&a.store.lock)?,
        data_root: crate::data::coop::data_root(a.store.data_root.clone())
            .map(|p| absolute(&p))
            .transpose()?,
        backend: a.backend,
        stages: stage_plans(&resolved, &cells, a.cells_per_task),
    };
    let exe = super::common::this_binary()?;
    let sb = Sbatch {
        partition: a.partition.clone(),
        gres: a.gres.clone(),
        gpus: a.gpus.clone(),
        cpus_per_task: a.cpus_per_task,
        mem: a.mem.clone(),
        time: a.time.clone(),
        max_parallel: a.max_parallel,
        extra: a.sbatch_args.clone(),
    };
    sb.check(&logs)?;
    if !a.dry_run {
        std::fs::create_dir_all(&logs).map_err(|e| Error::io(&logs, e))?;
        m.save(&dir)?;
    }
    // Each stage after every array of the stages before it, and after earlier submissions still
    // queued (their cells may be this one's inputs).
    let mut before: Vec<String> = queued_jobs(&earlier, &queue);
    let mut current_stage = None;
    let mut this_stage: Vec<String> = Vec::new();
    let manifest_path = dir.join("manifest.json");
    for si in 0..m.stages.len() {
        let stage = m.stages[si].stage;
        if current_stage != Some(stage) {
            before.append(&mut this_stage);
            current_stage = Some(stage);
        }
        let precision = m.stages[si].precision;
        for (offset, count) in array_chunks(m.stages[si].tasks.len(), max) {
            let job_name = format!("gram-{name}-{}-{precision}", stage.as_str());
            let text = script(&exe, &manifest_path, &job_name, si, offset, count, &before, &sb, &logs);
            if a.dry_run {
                let after = if before.is_empty() {
                    String::new()
                } else {
                    " (job ids are placeholders until submitted)".into()
                };
                println!(
                    "# {} stage at {precision}: tasks {offset}..{} of {}{after}\n{text}",
                    stage.as_str(),
                    offset + count,
                    m.stages[si].tasks.len()
                );
                this_stage.push(format!("<{}-{offset}>", stage.as_str()));
                continue;
            }
            let path = dir.join(format!("{}-{precision}-{offset}.sbatch", stage.as_str()));
            std::fs::write(&path, &text).map_err(|e| Error::io(&path, e))?;
            let job = crate::slurm::sbatch(&path)?;
            eprintln!(
                "submitted {} ({} stage at {precision}, {count} tasks, {} cells): job {job}",
                path.display(),
                stage.as_str(),
                m.stages[si].tasks[offset..offset + count]
                    .iter()
                    .map(Vec::len)
                    .sum::<usize>()
            );
            m.stages[si].arrays.push(crate::slurm::ArrayJob {
                job_id: job.clone(),
                offset,
                count,
            });
            m.save(&dir)?;
            this_stage.push(job);
        }
    }
    if !a.dry_run {
        eprintln!(
            "submission {id}: logs in {}; `gram-bench slurm status {}` follows it",
            logs.display(),
            a.suite.display()
        );
    }
    Ok(())
}

pub fn task(a: &TaskArgs) -> Result<()> {
    let m = Manifest::load(&a.manifest)?;
    let index: usize = std::env::var("SLURM_ARRAY_TASK_ID")
        .map_err(|_| Error::Input("SLURM_ARRAY_TASK_ID is not set: `slurm task` runs inside a Slurm array".into()))?
        .parse()
        .map_err(|_| Error::Input("SLURM_ARRAY_TASK_ID is not a number".into()))?;
    let (task_index, keys) = task_keys(&m, a.stage_index, a.offset, index)?;
    let stage = &m.stages[a.stage_index];
    let store_args = StoreArgs {
        store: m.store.clone(),
        cache: Some(m.cache.clone()),
        lock: m.lock.clone(),
        data_root: m.data_root.clone(),
    };
    let resolved = resolve(Suite::load(&m.suite)?, &store_args)?;
    eprintln!(
        "submission {}, {} stage at {}, task {}: {} cells",
        m.id,
        stage.stage.as_str(),
        stage.precision,
        task_index,
        keys.len()
    );
    let opts = RunOptions {
        store: m.store.clone(),
        allow_changed_data: false,
        cache: m.cache.clone(),
        backend: m.backend,
        only: Vec::new(),
        overwrite: Overwrite::OnlyMissing,
        feature_cache: true,
        shard: None,
        keys: Some(keys),
        precision: Some(stage.precision),
        jobs: crate::run::Jobs::Auto.resolve(&resolved.suite, m.backend),
    };
    let s = run_suite(&resolved, &opts)?;
    eprintln!(
        "ran {} cells ({} failed), skipped {} already recorded, {} busy in another runner, {} waiting",
        s.ran, s.failed, s.skipped, s.busy, s.waiting
    );
    if s.failed > 0 {
        return Err(Error::Run(format!(
            "{} cells failed; their records hold the errors",
            s.failed
        )));
    }
    Ok(())
}

pub fn status(a: &StatusArgs) -> Result<()> {
    let resolved = resolve(Suite::load(&a.suite)?, &a.store)?;
    let name = &resolved.suite.name;
    let store = Store::open_read(&a.store.store, name);
    let manifests = Manifest::all(&absolute(&a.store.store)?, name)?;
    let queue = match Queue::read() {
        Ok(q) => Some(q),
        Err(e) => {
            eprintln!("note: {e}; queued cells are not told apart from missing ones");
            None
        }
    };
    let queued: HashMap<String, String> = queue
        .as_ref()
        .map_or_else(HashMap::new, |q| queued_cells(&manifests, q));
    // Slurm job id → its submission's directory, for the logs of failed cells.
    let mut job_dirs = HashMap::new();
    for (dir, m) in &manifests {
        for s in &m.stages {
            for arr in &s.arrays {
                job_dirs.insert(arr.job_id.clone(), dir.clone());
            }
        }
    }
    let mut counts: BTreeMap<Stage, [usize; 5]> = BTreeMap::new();
    let mut failures = Vec::new();
    for c in &resolved.plan.cells {
        let stage = Stage::of(c);
        let row = counts.entry(stage).or_default();
        let record = store.get(&c.key)?;
        let i = match record.as_ref().map(|r| r.status) {
            Some(Status::Ok) => 0,
            _ if is_running(&store, &c.key)? => 1,
            _ if queued.contains_key(&c.key) => 2,
            Some(Status::Failed) => {
                let r = record.as_ref().expect("matched Some");
                let log = r
                    .environment
                    .slurm
                    .as_ref()
                    .map_or("not run by Slurm".to_string(), |j| {
                        job_dirs
                            .get(&j.job_id)
                            .map_or(format!("job {} (submission not found)", j.id()), |d| {
                                d.join("logs").join(format!("{}.out", j.id())).display().to_string()
                            })
                    });
                failures.push(vec![
                    cell_label(c),
                    r.error
                        .clone()
                        .unwrap_or_default()
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                    log,
                ]);
                3
            }
            _ => 4,
        };
        row[i] += 1;
    }
    let rows = counts
        .iter()
        .map(|(s, n)| {
            let mut r = vec![s.as_str().to_string()];
            r.extend(n.iter().map(|x| x.to_string()));
            r
        })
        .collect();
    println!(
        "{}",
        markdown_table(&["Stage", "Done", "Running", "Queued", "Failed", "Missing"], rows)
    );
    println!(
        "\n{} submissions; {} cells queued or running in Slurm.",
        manifests.len(),
        queued.len()
    );
    if !failures.is_empty() {
        println!(
            "\nFailed cells:\n\n{}",
            markdown_table(&["Cell", "Error", "Log"], failures)
        );
    }
    Ok(())
}

/// Whether a runner holds `key`'s lock now (computing it).
fn is_running(store: &Store, key: &str) -> Result<bool> {
    if !store.root.join("locks").join(format!("{key}.lock")).is_file() {
        return Ok(false);
    }
    Ok(store.try_lock(key)?.is_none())
}
