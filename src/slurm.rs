//! A suite's cells as Slurm job arrays. A submission splits the cells still to compute into stages
//! by dependency — GRAM meta-training, then train (and released-checkpoint) cells, then evaluations
//! — and each stage (per precision: a process computes at one) into tasks of a few cells, one array
//! per stage (several when a stage exceeds the cluster's `MaxArraySize`). A stage's arrays start
//! `afterany` the previous stage's, never `afterok`: an array with one failed task would leave an
//! `afterok` dependant pending forever; the runner itself decides, cell by cell, whether a cell's
//! inputs are recorded (a cell whose input failed waits, without a record, for the next submit).
//!
//! Everything a task needs is in the submission's manifest (`<store>/<suite>/slurm/<id>/`), beside
//! its sbatch scripts and one log per task (`logs/%A_%a.out`); `gram-bench slurm task` runs one
//! task's cells. Cells of a submission still queued or running are not submitted again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::backend::{BackendKind, Precision};
use crate::error::{Error, Result};
use crate::files::write_atomic;
use crate::resolve::ResolvedSuite;
use crate::store::{Status, Store};
use crate::suite::cells::{Cell, Phase};

/// Slurm's `MaxArraySize` when `scontrol` does not say (its default: indices 0..1000).
pub(crate) const DEFAULT_MAX_ARRAY_SIZE: usize = 1001;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Stage {
    Meta,
    Train,
    Eval,
}

impl Stage {
    pub fn of(cell: &Cell) -> Stage {
        match cell.spec.phase {
            Phase::Meta => Stage::Meta,
            Phase::Train | Phase::Checkpoint => Stage::Train,
            Phase::Eval => Stage::Eval,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Meta => "meta",
            Stage::Train => "train",
            Stage::Eval => "eval",
        }
    }
}

/// One submitted array: tasks `offset .. offset + count` of its stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct ArrayJob {
    pub job_id: String,
    pub offset: usize,
    pub count: usize,
}

/// The tasks of one stage at one precision, each a list of cell keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct StagePlan {
    pub stage: Stage,
    pub precision: Precision,
    pub tasks: Vec<Vec<String>>,
    #[serde(default)]
    pub arrays: Vec<ArrayJob>,
}

/// What the tasks of a submission run: the suite and where its inputs and records are (absolute
/// paths: tasks start wherever the cluster starts them), and the stages.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub id: String,
    pub suite: PathBuf,
    pub store: PathBuf,
    pub cache: PathBuf,
    pub lock: PathBuf,
    pub data_root: Option<PathBuf>,
    pub backend: BackendKind,
    pub stages: Vec<StagePlan>,
}

impl Manifest {
    pub fn dir(store: &Path, suite: &str, id: &str) -> PathBuf {
        store.join(suite).join("slurm").join(id)
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::Internal(e.to_string()))?;
        write_atomic(&dir.join("manifest.json"), &json)
    }

    pub fn load(path: &Path) -> Result<Manifest> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| Error::Store(format!("{}: unreadable manifest ({e})", path.display())))
    }

    /// Every submission of `suite` in `store`, oldest first, with its directory.
    pub fn all(store: &Path, suite: &str) -> Result<Vec<(PathBuf, Manifest)>> {
        let root = store.join(suite).join("slurm");
        let Ok(entries) = std::fs::read_dir(&root) else {
            return Ok(Vec::new());
        };
        let mut dirs: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join("manifest.json").is_file())
            .collect();
        dirs.sort();
        dirs.into_iter()
            .map(|d| Ok((d.clone(), Manifest::load(&d.join("manifest.json"))?)))
            .collect()
    }

    /// Every task of this submission still in the queue: its stage, its array, its index in the
    /// array and its state.
    fn queued_tasks<'q>(
        &'q self,
        queue: &'q Queue,
    ) -> impl Iterator<Item = (&'q StagePlan, &'q ArrayJob, usize, &'q str)> {
        self.stages.iter().flat_map(move |s| {
            s.arrays.iter().flat_map(move |a| {
                (0..a.count).filter_map(move |t| queue.state(&a.job_id, t).map(|state| (s, a, t, state)))
            })
        })
    }
}

/// Splits `cells` (in plan order) into stages, per precision, and tasks of at most
/// `cells_per_task` cells; an evaluation goes in a task with the others of the same train cell
/// where they fit.
pub(crate) fn stage_plans(resolved: &ResolvedSuite, cells: &[&Cell], cells_per_task: usize) -> Vec<StagePlan> {
    let mut groups: BTreeMap<(Stage, &str), (Precision, Vec<&Cell>)> = BTreeMap::new();
    for c in cells {
        let p = resolved.suite.precision.of_cell(&c.spec);
        // The default precision first within a stage (the order relaunches run in).
        let order = if p == resolved.suite.precision.default {
            ""
        } else {
            p.as_str()
        };
        groups.entry((Stage::of(c), order)).or_insert((p, Vec::new())).1.push(c);
    }
    groups
        .into_iter()
        .map(|((stage, _), (precision, mut cs))| {
            cs.sort_by_key(|c| c.depends_on.clone().unwrap_or_default());
            StagePlan {
                stage,
                precision,
                tasks: cs
                    .chunks(cells_per_task.max(1))
                    .map(|t| t.iter().map(|c| c.key.clone()).collect())
                    .collect(),
                arrays: Vec::new(),
            }
        })
        .collect()
}

/// The cells of `resolved` to submit: selected, neither recorded ok nor queued in an earlier
/// submission (`queued`: key → job).
pub(crate) fn cells_to_submit<'a>(
    resolved: &'a ResolvedSuite,
    store: &Store,
    only: &[(String, String)],
    queued: &HashMap<String, String>,
) -> Result<(Vec<&'a Cell>, usize, usize)> {
    let (mut out, mut done, mut in_queue) = (Vec::new(), 0, 0);
    for c in resolved.plan.select(only)? {
        if store.get(&c.key)?.is_some_and(|r| r.status == Status::Ok) {
            done += 1;
        } else if queued.contains_key(&c.key) {
            in_queue += 1;
        } else {
            out.push(c);
        }
    }
    Ok((out, done, in_queue))
}

/// sbatch settings of a submission.
#[derive(Clone, Debug, Default)]
pub struct Sbatch {
    pub partition: Option<String>,
    pub gres: Option<String>,
    pub gpus: Option<String>,
    pub cpus_per_task: Option<usize>,
    pub mem: Option<String>,
    pub time: Option<String>,
    pub max_parallel: Option<usize>,
    /// Passed through as they are (`--account=x`, `--qos=y`, …).
    pub extra: Vec<String>,
}

impl Sbatch {
    /// Refuses a value that would not stay inside its `#SBATCH` line: a control character (a
    /// newline starts a shell line, and sbatch stops reading directives at the first non-`#SBATCH`
    /// line, dropping later ones such as `--dependency`), whitespace in a single-value option, an
    /// extra argument that is not an option, and a log folder no `--output` line can name.
    pub fn check(&self, logs: &Path) -> Result<()> {
        let bad =
            |what: &str, v: &str, why: &str| Err(Error::Input(format!("slurm {what} `{}`: {why}", v.escape_debug())));
        let control = |v: &str| v.chars().any(char::is_control);
        let single = [
            ("--partition", &self.partition),
            ("--gres", &self.gres),
            ("--gpus", &self.gpus),
            ("--mem", &self.mem),
            ("--time", &self.time),
        ];
        for (flag, v) in single {
            if let Some(v) = v {
                if v.is_empty() || control(v) || v.chars().any(char::is_whitespace) {
                    return bad(flag, v, "one word without spaces or control characters");
                }
            }
        }
        for e in &self.extra {
            if control(e) {
                return bad(
                    "--sbatch-arg",
                    e,
                    "has a control character (a newline would end the #SBATCH block)",
                );
            }
            if !e.starts_with('-') {
                return bad("--sbatch-arg", e, "is not an sbatch option (it starts with `-`)");
            }
        }
        let l = logs.to_string_lossy();
        if control(&l) || l.chars().any(char::is_whitespace) {
            return bad(
                "log folder",
                &l,
                "has whitespace or a control character, which an #SBATCH --output line cannot hold",
            );
        }
        Ok(())
    }
}

/// The sbatch script of one array: `count` tasks from `offset` of stage `stage_index`, after
/// `after` (job ids) when given.
#[allow(clippy::too_many_arguments)]
pub fn script(
    exe: &Path,
    manifest: &Path,
    name: &str,
    stage_index: usize,
    offset: usize,
    count: usize,
    after: &[String],
    s: &Sbatch,
    logs: &Path,
) -> String {
    let mut lines = vec!["#!/bin/bash".to_string(), format!("#SBATCH --job-name={name}")];
    let throttle = s.max_parallel.map_or(String::new(), |k| format!("%{k}"));
    lines.push(format!("#SBATCH --array=0-{}{throttle}", count - 1));
    lines.push(format!("#SBATCH --output={}/%A_%a.out", logs.display()));
    let opt = |flag: &str, v: &Option<String>| v.as_ref().map(|v| format!("#SBATCH --{flag}={v}"));
    lines.extend(opt("partition", &s.partition));
    lines.extend(opt("gres", &s.gres));
    lines.extend(opt("gpus", &s.gpus));
    lines.extend(opt("cpus-per-task", &s.cpus_per_task.map(|c| c.to_string())));
    lines.extend(opt("mem", &s.mem));
    lines.extend(opt("time", &s.time));
    if !after.is_empty() {
        lines.push(format!("#SBATCH --dependency=afterany:{}", after.join(":")));
    }
    lines.extend(s.extra.iter().map(|e| format!("#SBATCH {e}")));
    lines.push(String::new());
    lines.push(format!(
        "exec {} slurm task {} --stage-index {stage_index} --offset {offset}",
        shell_quote(&exe.to_string_lossy()),
        shell_quote(&manifest.to_string_lossy())
    ));
    lines.join("\n") + "\n"
}

fn shell_quote(s: &str) -> String {
    if s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+=:,".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Runs a Slurm client command; its stdout, or an error naming it.
fn slurm_cmd(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program).args(args).output().map_err(|e| {
        Error::Run(format!(
            "`{program}` could not be started ({e}): is this a Slurm submit host (slurm-client installed, on PATH)?"
        ))
    })?;
    if !out.status.success() {
        return Err(Error::Run(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `sbatch --parsable SCRIPT`: the job id.
pub fn sbatch(script: &Path) -> Result<String> {
    let out = slurm_cmd("sbatch", &["--parsable", &script.to_string_lossy()])?;
    // --parsable prints `id` or `id;cluster`.
    let id = out.trim().split(';').next().unwrap_or_default().to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        return Err(Error::Run(format!("sbatch printed `{}`, not a job id", out.trim())));
    }
    Ok(id)
}

/// The cluster's `MaxArraySize` (`scontrol show config`), or Slurm's default when it cannot be read.
pub(crate) fn max_array_size() -> usize {
    slurm_cmd("scontrol", &["show", "config"])
        .ok()
        .and_then(|out| {
            out.lines()
                .find(|l| l.trim_start().starts_with("MaxArraySize"))
                .and_then(|l| l.split('=').nth(1))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(DEFAULT_MAX_ARRAY_SIZE)
}

/// The queue as `squeue` shows it: (array job id, task index) → state.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    tasks: HashMap<(String, Option<usize>), String>,
}

impl Queue {
    /// `squeue`'s jobs, array tasks one per line (callers look up their own job ids).
    pub fn read() -> Result<Queue> {
        let out = slurm_cmd("squeue", &["-h", "-r", "-o", "%F %K %T"])?;
        Ok(Queue::parse(&out))
    }

    /// Lines of `%F %K %T`: array job id, task index (`N/A` for a plain job), state.
    pub fn parse(out: &str) -> Queue {
        let mut tasks = HashMap::new();
        for l in out.lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            if let [job, task, state] = f[..] {
                tasks.insert((job.to_string(), task.parse().ok()), state.to_string());
            }
        }
        Queue { tasks }
    }

    /// The state of task `task` of array `job`, if it is in the queue (a pending array can show as
    /// one line for its tasks not yet started: `%K` is then a range such as `3-9%2`).
    pub fn state(&self, job: &str, task: usize) -> Option<&str> {
        if let Some(s) = self.tasks.get(&(job.to_string(), Some(task))) {
            return Some(s);
        }
        // Pending ranges were parsed as None (not a number): count them as the array's.
        self.tasks.get(&(job.to_string(), None)).map(String::as_str)
    }
}

/// The keys of the cells of submissions still in the queue → "job_task STATE".
pub(crate) fn queued_cells(manifests: &[(PathBuf, Manifest)], queue: &Queue) -> HashMap<String, String> {
    manifests
        .iter()
        .flat_map(|(_, m)| m.queued_tasks(queue))
        .flat_map(|(s, a, t, state)| {
            s.tasks[a.offset + t]
                .iter()
                .map(move |k| (k.clone(), format!("{}_{t} {state}", a.job_id)))
        })
        .collect()
}

/// Every array job id of the submissions still in the queue (each once).
pub(crate) fn queued_jobs(manifests: &[(PathBuf, Manifest)], queue: &Queue) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (_, a, _, _) in manifests.iter().flat_map(|(_, m)| m.queued_tasks(queue)) {
        if !out.contains(&a.job_id) {
            out.push(a.job_id.clone());
        }
    }
    out
}

/// Splits `tasks` tasks into arrays of at most `max` (`MaxArraySize`: indices below it).
pub(crate) fn array_chunks(tasks: usize, max: usize) -> Vec<(usize, usize)> {
    let max = max.max(1);
    (0..tasks).step_by(max).map(|o| (o, max.min(tasks - o))).collect()
}

/// The key sets of a task, for the runner.
/// The task an array's task `index` runs (`offset + index` of stage `stage_index`) and its cells.
pub(crate) fn task_keys(
    m: &Manifest,
    stage_index: usize,
    offset: usize,
    index: usize,
) -> Result<(usize, HashSet<String>)> {
    let s = m
        .stages
        .get(stage_index)
        .ok_or_else(|| Error::Input(format!("submission {}: no stage {stage_index}", m.id)))?;
    let task = offset.checked_add(index).ok_or_else(|| {
        Error::Input(format!(
            "submission {}: task {index} at offset {offset} is past every task",
            m.id
        ))
    })?;
    let t = s.tasks.get(task).ok_or_else(|| {
        Error::Input(format!(
            "submission {}: stage {} has no task {task}",
            m.id,
            s.stage.as_str()
        ))
    })?;
    Ok((task, t.iter().cloned().collect()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_task_index_past_the_submission_is_an_error_not_an_overflow() {
        let m = Manifest {
            id: "7".into(),
            suite: "s.toml".into(),
            store: "/s".into(),
            cache: "/c".into(),
            lock: "datasets.lock".into(),
            data_root: None,
            backend: BackendKind::Cpu,
            stages: vec![StagePlan {
                stage: Stage::Train,
                precision: Precision::F32,
                tasks: vec![vec!["a".into()], vec!["b".into()]],
                arrays: Vec::new(),
            }],
        };
        let (task, keys) = task_keys(&m, 0, 1, 0).unwrap();
        assert_eq!((task, keys), (1, HashSet::from(["b".to_string()])));
        assert!(task_keys(&m, 0, 1, 1).unwrap_err().to_string().contains("no task 2"));
        assert!(task_keys(&m, 0, usize::MAX, 1)
            .unwrap_err()
            .to_string()
            .contains("past every task"));
        assert!(task_keys(&m, 1, 0, 0).is_err());
    }

    #[test]
    fn sbatch_values_that_would_leave_their_line_are_refused() {
        let logs = Path::new("/s/logs");
        assert!(Sbatch::default().check(logs).is_ok());
        let ok = Sbatch {
            partition: Some("gpu".into()),
            time: Some("1-00:00:00".into()),
            extra: vec!["--account=lab".into(), "--comment=a b".into()],
            ..Default::default()
        };
        assert!(ok.check(logs).is_ok());
        let injected = Sbatch {
            partition: Some("gpu\nrm -rf ~".into()),
            ..Default::default()
        };
        let e = injected.check(logs).unwrap_err().to_string();
        assert!(e.contains("--partition") && e.contains("\\n"), "{e}");
        for extra in ["--qos=x\n#SBATCH --dependency=none", "qos=x"] {
            let s = Sbatch {
                extra: vec![extra.into()],
                ..Default::default()
            };
            assert!(s.check(logs).is_err(), "{extra}");
        }
        assert!(Sbatch {
            mem: Some("4 G".into()),
            ..Default::default()
        }
        .check(logs)
        .is_err());
        assert!(Sbatch::default().check(Path::new("/s/my logs")).is_err());
    }

    use super::*;

    #[test]
    fn arrays_stay_under_the_max_array_size() {
        assert_eq!(array_chunks(2500, 1001), vec![(0, 1001), (1001, 1001), (2002, 498)]);
        assert_eq!(array_chunks(3, 1001), vec![(0, 3)]);
        assert_eq!(array_chunks(0, 1001), vec![]);
    }

    #[test]
    fn the_queue_reads_tasks_and_pending_ranges() {
        let q = Queue::parse("17 0 RUNNING\n17 1 COMPLETING\n17 2-9%2 PENDING\n18 N/A PENDING\n");
        assert_eq!(q.state("17", 0), Some("RUNNING"));
        assert_eq!(q.state("17", 1), Some("COMPLETING"));
        assert_eq!(q.state("17", 5), Some("PENDING"));
        assert_eq!(q.state("19", 0), None);
    }

    #[test]
    fn a_script_chains_afterany_and_throttles() {
        let s = Sbatch {
            partition: Some("gpu".into()),
            gpus: Some("1".into()),
            max_parallel: Some(4),
            extra: vec!["--account=lab".into()],
            ..Default::default()
        };
        let text = script(
            Path::new("/opt/gram bench/gram-bench"),
            Path::new("/s/manifest.json"),
            "gram-x-eval",
            2,
            1001,
            10,
            &["5".into(), "6".into()],
            &s,
            Path::new("/s/logs"),
        );
        assert!(text.contains("#SBATCH --array=0-9%4\n"), "{text}");
        assert!(text.contains("#SBATCH --dependency=afterany:5:6\n"), "{text}");
        assert!(!text.contains("afterok"));
        assert!(text.contains("#SBATCH --partition=gpu\n#SBATCH --gpus=1\n"), "{text}");
        assert!(text.contains("#SBATCH --output=/s/logs/%A_%a.out"));
        assert!(text.contains("#SBATCH --account=lab\n"));
        assert!(text.ends_with(
            "exec '/opt/gram bench/gram-bench' slurm task /s/manifest.json --stage-index 2 --offset 1001\n"
        ));
    }
}
