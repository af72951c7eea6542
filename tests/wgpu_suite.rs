//! The backend-check suite (zero-shot CLIP, CoOp and CoOp + GRAM on `world`, 4 shots, seed 1) run
//! on the wgpu backend and on the CPU: every cell's accuracy agrees within one test image. Built
//! only with `--features wgpu`; `.ci/run` runs it on Mesa's lavapipe (a software Vulkan device),
//! which executes the same cubecl kernels a GPU would. Without a Vulkan device it fails, saying so.
#![cfg(feature = "wgpu")]

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::suite_env::{stderr, Env};

/// (accuracy, correct, total) of every record in `store`, by cell key.
fn accuracies(env: &Env, store: &str) -> BTreeMap<String, (f64, u64, u64)> {
    let dir = env.path(&format!("{store}/backend-check/records"));
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| {
            let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            let m = r["metrics"].as_object()?.clone();
            Some((
                r["key"].as_str().unwrap().to_string(),
                (
                    m["accuracy"].as_f64().unwrap(),
                    m["correct"].as_u64().unwrap(),
                    m["total"].as_u64().unwrap(),
                ),
            ))
        })
        .collect()
}

#[test]
fn the_backend_check_suite_gives_the_cpus_accuracies_on_wgpu() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let suite = root.join("suites/backend-check.toml");
    let lock = root.join("datasets.lock");
    let env = Env::new();
    for (backend, store) in [("cpu", "store-cpu"), ("wgpu", "store-wgpu")] {
        let out = env.run(&[
            "run",
            suite.to_str().unwrap(),
            "--store",
            store,
            "--lock",
            lock.to_str().unwrap(),
            "--backend",
            backend,
            "--no-report",
        ]);
        assert!(
            out.status.success(),
            "{backend} run failed (is a Vulkan driver installed? .ci/run installs Mesa's lavapipe):\n{}",
            stderr(&out)
        );
    }
    let (cpu, wgpu) = (accuracies(&env, "store-cpu"), accuracies(&env, "store-wgpu"));
    assert_eq!(cpu.len(), 3, "zero-shot, CoOp and CoOp + GRAM evaluated: {cpu:?}");
    assert_eq!(
        cpu.keys().collect::<Vec<_>>(),
        wgpu.keys().collect::<Vec<_>>(),
        "the same cells"
    );
    for (key, (acc, correct, total)) in &cpu {
        let (w_acc, w_correct, w_total) = wgpu[key];
        eprintln!("{key}: cpu {acc:.2}% ({correct}/{total}), wgpu {w_acc:.2}% ({w_correct}/{w_total})");
        assert_eq!(*total, w_total);
        assert!(
            correct.abs_diff(w_correct) <= 1,
            "{key}: cpu {correct}/{total} vs wgpu {w_correct}/{w_total}: more than one test image apart"
        );
    }
}
