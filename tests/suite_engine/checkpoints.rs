//! Released prompt checkpoints evaluated as their own cells.

use std::path::Path;
use std::process::Command;

use crate::common::suite_env::*;

#[test]
fn released_checkpoints_are_evaluated_as_their_own_cells() {
    let env = Env::new();
    eurosat_replica(&env.path("DATA"));
    tiny_lock(&env);
    let released = env.path("released");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/released");
    for m in ["coop", "cocoop"] {
        let rel = format!("{m}/eurosat/seed1/prompt_learner/model.pth.tar-2");
        std::fs::create_dir_all(released.join(&rel).parent().unwrap()).unwrap();
        std::fs::copy(fixtures.join(&rel), released.join(&rel)).unwrap();
    }
    let text = eurosat_fewshot_suite("sample", "fail", "[\"coop\", \"cocoop\"]", "[1]")
        .replace(
            "seeds = [1]\n",
            "seeds = [1]\ncheckpoint = \"${GB_RELEASED}/{method}/{dataset}/seed{seed}/prompt_learner/model.pth.tar-2\"\n",
        )
        .replace(
            "[[experiment]]",
            "[methods.cocoop]\nkind = \"cocoop\"\nn_ctx = 4\nctx_init = \"\"\ninit_std = 0.02\nmeta_net_reduction = 16\n\
             batch_size = 4\nepochs = 1\noptim = { lr = 0.002, momentum = 0.9, weight_decay = 5e-4, warmup_epochs = 1, \
             warmup_lr = 1e-5 }\n\n[[experiment]]",
        );
    let suite = env.write_suite("released.toml", &text);
    let s = suite.to_str().unwrap();
    let run = |env: &Env| {
        Command::new(env!("CARGO_BIN_EXE_gram-bench"))
            .args(["run", s, "--data-root", "DATA"])
            .current_dir(env.dir.path())
            .env("GRAM_BENCH_CACHE", env.path("cache"))
            .env("GB_RELEASED", &released)
            .output()
            .unwrap()
    };
    let out = run(&env);
    assert!(out.status.success(), "{}", stderr(&out));
    let expected = gram_bench::clip::weights::SafetensorsStore::open(&[fixtures.join("expected.safetensors")]).unwrap();
    let records = record_values(&env, "tiny");
    assert_eq!(records.len(), 2);
    for r in &records {
        assert_eq!(r["cell"]["phase"], "checkpoint");
        assert_eq!(r["status"], "ok", "{}", r["error"]);
        assert!(r["train"].is_null(), "nothing is trained");
        assert_eq!(r["digests"]["checkpoint"]["sha256"].as_str().unwrap().len(), 64);
        // The loaded parameters are the checkpoint's, to the bit.
        let key = r["key"].as_str().unwrap();
        let art: serde_json::Value =
            serde_json::from_slice(&std::fs::read(env.path(&format!("results/tiny/artifacts/{key}.json"))).unwrap())
                .unwrap();
        let method = r["cell"]["method"].as_str().unwrap();
        for (name, v) in art.as_object().unwrap() {
            let (shape, data) = expected.read(&format!("{method}.{name}")).unwrap();
            assert_eq!(v[0], serde_json::json!(shape), "{method}.{name}");
            let got: Vec<f32> = v[1]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            assert_eq!(got, data, "{method}.{name}");
        }
    }
    // Another file is another cell; a missing one fails its cell with the path.
    std::fs::remove_file(released.join("coop/eurosat/seed1/prompt_learner/model.pth.tar-2")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gram-bench"))
        .args(["plan", s, "--data-root", "DATA"])
        .current_dir(env.dir.path())
        .env("GB_RELEASED", &released)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 done, 1 missing"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = run(&env);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("the released checkpoint is not there"),
        "{}",
        stderr(&out)
    );
}

/// A prompt learner as Dassl's `save_checkpoint` writes it after training — its optimizer state
/// keyed by integers, its scheduler pickling the successor scheduler and the optimizer's
/// `defaultdict` (tests/reference/dassl_checkpoint.py) — evaluates, with the checkpoint's `ctx`
/// to the bit.
#[test]
fn a_checkpoint_with_dassls_optimizer_and_scheduler_evaluates() {
    let env = Env::new();
    eurosat_replica(&env.path("DATA"));
    tiny_lock(&env);
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/released/trained");
    let text = eurosat_fewshot_suite("sample", "fail", "[\"coop\"]", "[1]").replace(
        "seeds = [1]\n",
        "seeds = [1]\ncheckpoint = \"${GB_RELEASED}/{method}/{dataset}/seed{seed}/prompt_learner/model.pth.tar-50\"\n",
    );
    let suite = env.write_suite("released.toml", &text);
    let out = Command::new(env!("CARGO_BIN_EXE_gram-bench"))
        .args(["run", suite.to_str().unwrap(), "--data-root", "DATA"])
        .current_dir(env.dir.path())
        .env("GRAM_BENCH_CACHE", env.path("cache"))
        .env("GB_RELEASED", &fixtures)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let records = record_values(&env, "tiny");
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(
        (r["cell"]["phase"].as_str(), r["status"].as_str()),
        (Some("checkpoint"), Some("ok"))
    );
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures.join("expected.json")).unwrap()).unwrap();
    let key = r["key"].as_str().unwrap();
    let art: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.path(&format!("results/tiny/artifacts/{key}.json"))).unwrap())
            .unwrap();
    let as_f32 = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    assert_eq!(as_f32(&art["ctx"][1]), as_f32(&expected["ctx"]["values"]));
}
