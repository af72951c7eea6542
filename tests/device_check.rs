//! `gram-bench device-check` on the CPU backend at tiny batches: every part runs and reports, and a
//! backbone that computes something else fails the check with a non-zero exit. (On a GPU machine the
//! same command runs at `--batch 256`; CI runs its parity and suite parts on wgpu in
//! tests/wgpu_suite.rs's way, through the backend-check suite.)

mod common;

use std::path::Path;

use common::suite_env::{stderr, Env};

/// Only the parity part, at f32.
const PARITY_ONLY: &[&str] = &[
    "--precision",
    "f32",
    "--skip",
    "encoders",
    "--skip",
    "methods",
    "--skip",
    "suite",
];

/// `device-check` at tiny sizes, its JSON written to `out` (relative to the test's folder).
fn device_check(env: &Env, fixtures: &Path, out: &str, extra: &[&str]) -> std::process::Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let s = |p: &str| root.join(p).to_string_lossy().into_owned();
    let mut args = vec![
        "device-check".to_string(),
        "--batch".into(),
        "1".into(),
        "--classes".into(),
        "2".into(),
        "--repeats".into(),
        "1".into(),
        "--methods-from".into(),
        s("suites/cross-domain.toml"),
        "--suite".into(),
        s("suites/backend-check.toml"),
        "--lock".into(),
        s("datasets.lock"),
        "--fixtures".into(),
        fixtures.to_string_lossy().into_owned(),
        "--work".into(),
        env.path("work").to_string_lossy().into_owned(),
        "--out".into(),
        env.path(out).to_string_lossy().into_owned(),
    ];
    args.extend(extra.iter().map(|e| e.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    env.run(&refs)
}

#[test]
fn every_part_reports_and_the_json_holds_the_tables() {
    let env = Env::new();
    let out = device_check(&env, &common::fixture(""), "check.json", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(env.path("check.json")).unwrap()).unwrap();
    assert_eq!(r["passed"], true);
    // Parts 1–3 at f32 and at f16 (each in a process of its own).
    let runs = r["runs"].as_array().unwrap();
    let precisions: Vec<&str> = runs.iter().map(|run| run["precision"].as_str().unwrap()).collect();
    assert_eq!(precisions, ["f32", "f16"]);
    for (run, tol, floor) in [(&runs[0], 1e-4, 0.0), (&runs[1], 1e-2, 1e-5)] {
        assert_eq!(run["parity_tolerance"].as_f64().unwrap() as f32, tol as f32);
        let parity = run["parity"].as_array().unwrap();
        assert_eq!(parity.len(), 6, "3 outputs × 2 layouts");
        // Within the tolerance, and (f16) farther than f32 gets: the model did compute in f16.
        assert!(
            parity.iter().all(|p| {
                let d = p["max_abs_diff"].as_f64().unwrap();
                p["ok"] == true && d < tol && d >= floor
            }),
            "{parity:?}"
        );
        let enc = run["encoders"].as_array().unwrap();
        assert_eq!(enc.len(), 4);
        assert!(enc.iter().all(|t| t["tflops_per_s"].as_f64().unwrap() > 0.0));
        // cross-domain's SGD methods: CoOp, KgCoOp, ProGrad, CoCoOp, VPT, MaPLe, PromptSRC.
        let methods: Vec<&str> = run["methods"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["kind"].as_str().unwrap())
            .collect();
        assert_eq!(
            methods,
            ["cocoop", "coop", "kgcoop", "maple", "prograd", "promptsrc", "vpt"]
        );
    }
    let suite = r["suite"].as_array().unwrap();
    assert_eq!(suite.len(), 3, "zero-shot, CoOp, CoOp + GRAM");
    assert!(suite.iter().all(|c| c["images_apart"] == 0));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("TFLOP/s") && printed.contains("Images apart") && printed.contains("## f16"),
        "{printed}"
    );
}

#[test]
fn a_backbone_that_computes_otherwise_fails_the_check() {
    let env = Env::new();
    // The fixtures with the OpenAI-layout model declared GELU instead of QuickGELU.
    let fixtures = env.path("fixtures");
    std::fs::create_dir_all(fixtures.join("tiny-clip-hf")).unwrap();
    for f in ["reference.safetensors", "tiny-clip-openai.safetensors"] {
        std::fs::copy(common::fixture(f), fixtures.join(f)).unwrap();
    }
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(
            common::fixture(&format!("tiny-clip-hf/{f}")),
            fixtures.join("tiny-clip-hf").join(f),
        )
        .unwrap();
    }
    let cfg = std::fs::read_to_string(common::fixture("tiny-clip-openai.json")).unwrap();
    std::fs::write(
        fixtures.join("tiny-clip-openai.json"),
        cfg.replace("\"quick_gelu\": true", "\"quick_gelu\": false"),
    )
    .unwrap();
    let out = device_check(&env, &fixtures, "check.json", PARITY_ONLY);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("does not match"), "{err}");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(env.path("check.json")).unwrap()).unwrap();
    assert_eq!(r["passed"], false);
    let bad: Vec<_> = r["runs"][0]["parity"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["ok"] == false)
        .collect();
    assert!(
        !bad.is_empty() && bad.iter().all(|p| p["layout"] == "openai"),
        "{bad:?}"
    );
}

#[test]
fn an_unknown_part_is_one_clear_error() {
    let env = Env::new();
    let out = device_check(&env, &common::fixture(""), "check.json", &["--skip", "everything"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("possible values: parity, encoders, methods, suite"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_report_lands_in_a_folder_that_did_not_exist() {
    // The JSON is written after a long run: a missing folder must not lose it at the end.
    let env = Env::new();
    let out = env.path("new/folder/check.json");
    let o = device_check(&env, &common::fixture(""), "new/folder/check.json", PARITY_ONLY);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(r["runs"][0]["parity"].as_array().unwrap().len(), 6);
}
