//! Resume, failed cells and concurrent runners on one store.

use std::process::{Command, Output};

use crate::common::suite_env::*;

#[test]
fn a_run_resumes_only_missing_cells_and_leaves_finished_ones_identical() {
    let env = Env::new();
    let suite = env.write_suite("tiny.toml", TINY);
    let s = suite.to_str().unwrap();
    let out = env.run(&["run", s]);
    assert!(out.status.success(), "{}", stderr(&out));
    let first = env.records("tiny");
    assert_eq!(first.len(), 6);
    for (name, bytes) in &first {
        let r: serde_json::Value = serde_json::from_slice(bytes).unwrap();
        assert_eq!(r["status"], "ok", "{name}");
        assert!(r["metrics"]["accuracy"].as_f64().unwrap() >= 0.0);
        assert!(!r["per_class"].as_array().unwrap().is_empty());
        assert_eq!(r["environment"]["backend"], "cpu");
    }

    // A run killed mid-way: two records never written, one temp file and a lock left behind.
    let victims: Vec<String> = first.keys().take(2).cloned().collect();
    for v in &victims {
        std::fs::remove_file(env.path(&format!("results/tiny/records/{v}"))).unwrap();
    }
    std::fs::write(env.path("results/tiny/records/.half-written.json.tmp-1"), b"{").unwrap();
    let out = env.run(&["plan", s]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("4 done, 2 missing"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = env.run(&["run", s]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("ran 2 cells"), "{}", stderr(&out));
    let second = env.records("tiny");
    assert_eq!(second.len(), 6);
    for (name, bytes) in &first {
        if !victims.contains(name) {
            assert_eq!(&second[name], bytes, "{name} was rewritten");
        }
    }
    // Nothing left to do; `never` and `only-missing` both skip; `always` recomputes the selection.
    let out = env.run(&["run", s, "--overwrite", "never"]);
    assert!(stderr(&out).contains("0 to run"), "{}", stderr(&out));
    let out = env.run(&[
        "run",
        s,
        "--only",
        "method=zs",
        "--only",
        "seed=1",
        "--overwrite",
        "always",
    ]);
    assert!(stderr(&out).contains("1 to run"), "{}", stderr(&out));

    // Report, baseline and check.
    let out = env.run(&["report", s]);
    assert!(out.status.success(), "{}", stderr(&out));
    let md = std::fs::read_to_string(env.path("reports/tiny/report.md")).unwrap();
    assert!(
        md.contains("## few-shot") && md.contains("## base-to-new") && md.contains("| hm "),
        "{md}"
    );
    assert!(env.path("reports/tiny/aggregate.csv").is_file());
    let out = env.run(&["baseline", "save", "nightly", s]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.run(&["check", s, "--baseline", "nightly"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // A baseline 50 points better than reality is a regression; a missing cell is too.
    let path = env.path("baselines/nightly.json");
    let mut b: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let rows = b["rows"].as_array_mut().unwrap();
    let m = rows[0]["mean"].as_f64().unwrap();
    rows[0]["mean"] = serde_json::json!(m + 50.0);
    std::fs::write(&path, serde_json::to_vec(&b).unwrap()).unwrap();
    let out = env.run(&["check", s, "--baseline", "nightly"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("REGRESSED"));
    assert!(stderr(&out).contains("check failed"), "{}", stderr(&out));
}

#[test]
fn a_failing_cell_records_its_error_and_runs_again_next_time() {
    let env = Env::new();
    // "a photo of a" is four tokens: n_ctx = 3 cannot hold it, which only tokenizing shows.
    let text = TINY
        .replace("n_ctx = 4", "n_ctx = 3")
        .replace("methods = [\"coop\"]\ndatasets", "methods = [\"zs\"]\ndatasets");
    let suite = env.write_suite("tiny.toml", &text);
    let s = suite.to_str().unwrap();
    let out = env.run(&["run", s]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("2 cells failed"), "{}", stderr(&out));
    let failed: Vec<serde_json::Value> = env
        .records("tiny")
        .values()
        .map(|b| serde_json::from_slice(b).unwrap())
        .filter(|r: &serde_json::Value| r["status"] == "failed")
        .collect();
    assert_eq!(failed.len(), 2);
    assert!(
        failed[0]["error"].as_str().unwrap().contains("n_ctx = 3"),
        "{}",
        failed[0]["error"]
    );
    let out = env.run(&["run", s]);
    assert!(stderr(&out).contains("2 to run"), "{}", stderr(&out));
}

#[test]
fn two_runners_on_one_store_share_the_cells_and_compute_each_once() {
    let env = Env::new();
    let suite = env.write_suite("tiny.toml", TINY);
    let s = suite.to_str().unwrap();
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_gram-bench"))
            .args(["run", s, "--no-report"])
            .current_dir(env.dir.path())
            .env("GRAM_BENCH_CACHE", env.path("cache"))
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success(), "{}", stderr(&a));
    assert!(b.status.success(), "{}", stderr(&b));
    let ran = |o: &Output| -> usize {
        let e = stderr(o);
        let line = e
            .lines()
            .find(|l| l.starts_with("ran "))
            .unwrap_or_else(|| panic!("{e}"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    assert_eq!(ran(&a) + ran(&b), 6, "A:\n{}\nB:\n{}", stderr(&a), stderr(&b));
    let records = env.records("tiny");
    assert_eq!(records.len(), 6);
    for bytes in records.values() {
        let r: serde_json::Value = serde_json::from_slice(bytes).unwrap();
        assert_eq!(r["status"], "ok");
    }
}

#[test]
fn one_thread_and_the_default_build_the_same_world_and_write_the_same_records() {
    // What a cell computes, without when, how long and on how many threads.
    let results = |threads: Option<&str>| {
        let env = Env::new();
        let suite = env.write_suite("tiny.toml", TINY);
        let s = suite.to_str().unwrap();
        let vars: Vec<(&str, &str)> = threads.map(|t| ("RAYON_NUM_THREADS", t)).into_iter().collect();
        let world = env.run_with(&["world", "build", s], &vars);
        assert!(world.status.success(), "{}", stderr(&world));
        let manifest: serde_json::Value = serde_json::from_slice(&world.stdout).unwrap();
        let out = env.run_with(&["run", s, "--no-report"], &vars);
        assert!(out.status.success(), "{}", stderr(&out));
        let records: Vec<serde_json::Value> = record_values(&env, "tiny")
            .into_iter()
            .map(|r| {
                serde_json::json!({
                    "key": r["key"], "metrics": r["metrics"], "per_class": r["per_class"],
                    "fewshot": r["fewshot"], "loss": r["train"]["epoch_loss"], "digests": r["digests"],
                })
            })
            .collect();
        (manifest["digests"].clone(), records)
    };
    let (world_1, records_1) = results(Some("1"));
    let (world_n, records_n) = results(None);
    assert_eq!(world_1, world_n, "the world's datasets and weights");
    assert_eq!(records_1.len(), 6);
    assert_eq!(records_1, records_n);
}

/// Three runners on a suite whose GRAM method evaluates cross-domain: while one meta-trains, the
/// others must not record the eval cells two levels down as failed ("its train cell has not run");
/// every runner exits 0 and every record is ok.
#[test]
fn three_runners_never_record_a_false_failure_below_a_meta_cell_another_is_computing() {
    let env = Env::new();
    let suite = env.write_suite("gram.toml", &tiny_gram_suite());
    let s = suite.to_str().unwrap();
    // The world is built first so that the runners race for cells, not for the world.
    let built = env.run(&["world", "build", s]);
    assert!(built.status.success(), "{}", stderr(&built));
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_gram-bench"))
            .args(["run", s, "--no-report"])
            .current_dir(env.dir.path())
            .env("GRAM_BENCH_CACHE", env.path("cache"))
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let runners = [spawn(), spawn(), spawn()];
    for (i, r) in runners.into_iter().enumerate() {
        let out = r.wait_with_output().unwrap();
        assert!(out.status.success(), "runner {i}:\n{}", stderr(&out));
        assert!(!stderr(&out).contains("FAILED"), "runner {i}:\n{}", stderr(&out));
    }
    let records = env.records("tiny");
    // 1 meta + 2 seeds × (1 train cell, which evaluates on the source, + 2 target evals).
    assert_eq!(records.len(), 7);
    for bytes in records.values() {
        let r: serde_json::Value = serde_json::from_slice(bytes).unwrap();
        assert_eq!(r["status"], "ok", "{r}");
    }
}
