//! `slurm submit / status` against a real single-node Slurm (munged + slurmctld + slurmd on
//! localhost, started by tests/slurm/cluster.sh with more CPUs than the machine has): a suite of
//! 25 cells in dependent stages computes each cell exactly once and records what a single-process
//! run records; a failing cell shows in `slurm status` with its message and its task's log; a task
//! cancelled mid-cell leaves no record, and the next submit computes the cell.
//!
//! Needs root and Debian's slurmctld, slurmd, slurm-client and munge (`.ci/run` installs them).
//! Without them the test says so and passes, except under CI (`CI` set), where it fails.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::suite_env::*;

struct Cluster {
    dir: PathBuf,
    conf: PathBuf,
}

impl Cluster {
    fn start(dir: &Path, cpus: usize) -> Cluster {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slurm/cluster.sh");
        let out = Command::new("bash")
            .arg(&script)
            .args(["start", &dir.to_string_lossy(), &cpus.to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cluster.sh start: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Cluster {
            dir: dir.to_path_buf(),
            conf: dir.join("slurm.conf"),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slurm/cluster.sh");
        let _ = Command::new("bash")
            .arg(&script)
            .args(["stop", &self.dir.to_string_lossy()])
            .status();
    }
}

fn slurm_installed() -> bool {
    ["slurmctld", "slurmd", "sbatch", "munged"]
        .iter()
        .all(|p| ["/usr/sbin", "/usr/bin"].iter().any(|d| Path::new(d).join(p).is_file()))
}

/// TINY at six seeds, and CoOp "released" on `patterns` from a file that does not exist (a cell
/// that fails): 12 few-shot cells, 6 base-to-new train cells and their 6 evaluations, 1 failing.
fn suite() -> String {
    TINY.replace("seeds = [1, 2]", "seeds = [1, 2, 3, 4, 5, 6]")
        .replace("seeds = [1]", "seeds = [1, 2, 3, 4, 5, 6]")
        + r#"
[[experiment]]
protocol = "few-shot"
methods = ["coop"]
datasets = ["patterns"]
shots = [1]
seeds = [1]
checkpoint = "/nonexistent/{method}-{seed}.pth"
"#
}

/// The suite with a slow CoOp cell besides (the other cells' keys stay the same).
fn suite_with_slow_cell() -> String {
    suite().replacen(
        "[[experiment]]",
        "[methods.slow]\nkind = \"coop\"\nn_ctx = 4\nctx_init = \"a photo of a\"\ninit_std = 0.02\ncsc = false\n\
         class_token_position = \"end\"\nbatch_size = 1\nepochs = 1500\n\
         optim = { lr = 0.002, momentum = 0.9, weight_decay = 5e-4, warmup_epochs = 1, warmup_lr = 1e-5 }\n\n[[experiment]]",
        1,
    ) + "\n[[experiment]]\nprotocol = \"few-shot\"\nmethods = [\"slow\"]\ndatasets = [\"shapes\"]\nshots = [1]\nseeds = [1]\n"
}

fn queue_empty(conf: &Path) -> bool {
    let out = Command::new("squeue")
        .args(["-h"])
        .env("SLURM_CONF", conf)
        .output()
        .unwrap();
    out.status.success() && String::from_utf8_lossy(&out.stdout).trim().is_empty()
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool, logs: &Path) {
    let t = Instant::now();
    while !done() {
        if t.elapsed() > timeout {
            let mut text = String::new();
            for e in std::fs::read_dir(logs).into_iter().flatten().flatten() {
                text += &format!(
                    "== {}\n{}\n",
                    e.path().display(),
                    std::fs::read_to_string(e.path()).unwrap_or_default()
                );
            }
            panic!("timed out waiting for {what}\n{text}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// key → (status, metrics) of a store's records.
fn outcomes(env: &Env, store: &str) -> BTreeMap<String, (String, serde_json::Value)> {
    let dir = env.path(&format!("{store}/tiny/records"));
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            (
                r["key"].as_str().unwrap().to_string(),
                (r["status"].as_str().unwrap().to_string(), r["metrics"].clone()),
            )
        })
        .collect()
}

/// Every task log of the store's submissions, concatenated.
fn all_logs(env: &Env) -> String {
    let mut text = String::new();
    for sub in std::fs::read_dir(env.path("results/tiny/slurm")).unwrap().flatten() {
        for log in std::fs::read_dir(sub.path().join("logs"))
            .into_iter()
            .flatten()
            .flatten()
        {
            text += &std::fs::read_to_string(log.path()).unwrap();
        }
    }
    text
}

#[test]
fn a_suite_runs_as_job_arrays_on_a_real_slurm() {
    if !slurm_installed() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have Slurm (.ci/run installs it)"
        );
        eprintln!("skipped: Slurm is not installed (slurmctld, slurmd, sbatch, munged)");
        return;
    }
    let env = Env::new();
    let cluster = Cluster::start(&env.path("slurm"), 8);
    let conf = cluster.conf.to_string_lossy().into_owned();
    let vars = [("SLURM_CONF", conf.as_str())];
    let text = suite();
    let s = env.write_suite("tiny.toml", &text);
    let s = s.to_str().unwrap();

    // The single-process run to compare with (its released-checkpoint cell fails).
    let out = env.run(&["run", s, "--store", "single", "--no-report"]);
    assert!(
        stderr(&out).contains("the released checkpoint is not there"),
        "{}",
        stderr(&out)
    );
    let single = outcomes(&env, "single");
    assert_eq!(single.len(), 25);

    // Submitted as arrays: 2 cells a task, 6 at a time on a node claiming 8 CPUs of 2.
    let out = env.run_with(
        &[
            "slurm",
            "submit",
            s,
            "--cells-per-task",
            "2",
            "--max-parallel",
            "6",
            "--time",
            "10:00",
        ],
        &vars,
    );
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("25 cells to submit") && err.contains("train stage") && err.contains("eval stage"),
        "{err}"
    );
    let logs = env.path("results/tiny/slurm");
    wait_until(
        "the arrays to finish",
        Duration::from_secs(600),
        || queue_empty(&cluster.conf),
        &logs,
    );

    // Every cell once, with the single run's numbers; the failing one failed.
    let got = outcomes(&env, "results");
    assert_eq!(got, single);
    let ran: usize = all_logs(&env)
        .lines()
        .filter_map(|l| l.strip_prefix("ran ")?.split(' ').next()?.parse::<usize>().ok())
        .sum();
    assert_eq!(ran, 25, "cells computed across all tasks");
    for r in record_values(&env, "tiny") {
        let slurm = &r["environment"]["slurm"];
        assert!(
            slurm["job_id"].as_str().is_some() && slurm["array_task_id"].as_str().is_some(),
            "{r}"
        );
        assert!(!r["environment"]["host"].as_str().unwrap().is_empty());
    }

    // `slurm status`: everything done but the failing cell, shown with its message and its log.
    let out = env.run_with(&["slurm", "status", s], &vars);
    let status = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        status.contains("| train | 18   | 0       | 0      | 1      | 0       |"),
        "{status}"
    );
    assert!(
        status.contains("| eval  | 6    | 0       | 0      | 0      | 0       |"),
        "{status}"
    );
    let failed = status
        .lines()
        .find(|l| l.contains("the released checkpoint is not there"))
        .unwrap_or_else(|| panic!("{status}"));
    let log = failed.rsplit('|').nth(1).unwrap().trim();
    assert!(log.ends_with(".out") && Path::new(log).is_file(), "{failed}");

    // Submitting again runs nothing recorded: only the failed cell goes again.
    let out = env.run_with(&["slurm", "submit", s, "--dry-run"], &vars);
    assert!(
        stderr(&out).contains("1 cells to submit, 24 recorded"),
        "{}",
        stderr(&out)
    );

    // A task cancelled mid-cell: no record, no temp file; the next submit computes the cell.
    let s = env.write_suite("tiny.toml", &suite_with_slow_cell());
    let s = s.to_str().unwrap();
    let out = env.run_with(&["slurm", "submit", s, "--only", "method=slow"], &vars);
    assert!(
        out.status.success() && stderr(&out).contains("1 cells to submit"),
        "{}",
        stderr(&out)
    );
    let locks = env.path("results/tiny/locks");
    let slow_running = || {
        // The slow cell's lock is held once its task computes it.
        std::fs::read_dir(&locks).into_iter().flatten().flatten().any(|e| {
            let f = std::fs::File::open(e.path()).unwrap();
            matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock))
        })
    };
    wait_until("the slow cell to start", Duration::from_secs(120), slow_running, &logs);
    std::thread::sleep(Duration::from_secs(2));
    let jobs = Command::new("squeue")
        .args(["-h", "-o", "%F"])
        .env("SLURM_CONF", &cluster.conf)
        .output()
        .unwrap();
    let job = String::from_utf8_lossy(&jobs.stdout).trim().to_string();
    assert!(!job.is_empty());
    assert!(Command::new("scancel")
        .arg(&job)
        .env("SLURM_CONF", &cluster.conf)
        .status()
        .unwrap()
        .success());
    wait_until(
        "the cancelled task to leave",
        Duration::from_secs(120),
        || queue_empty(&cluster.conf),
        &logs,
    );
    assert_eq!(outcomes(&env, "results").len(), 25, "the cancelled cell left no record");
    let tmp = std::fs::read_dir(env.path("results/tiny/records"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .count();
    assert_eq!(tmp, 0, "no partial record");
    let out = env.run_with(&["slurm", "submit", s, "--only", "method=slow"], &vars);
    assert!(stderr(&out).contains("1 cells to submit"), "{}", stderr(&out));
    wait_until(
        "the resubmitted cell",
        Duration::from_secs(600),
        || queue_empty(&cluster.conf),
        &logs,
    );
    let after = outcomes(&env, "results");
    assert_eq!(after.len(), 26);
    assert_eq!(after.values().filter(|(st, _)| st == "ok").count(), 25, "{after:?}");
    drop(cluster);
}
