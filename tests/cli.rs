//! `gram-bench clip embed` as a user runs it: output against transformers end to end, both layouts,
//! and one clear line with a non-zero exit for every kind of bad input.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use safetensors::Dtype;

fn gram_bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gram-bench"))
        .args(args)
        .output()
        .expect("binary runs")
}

fn json_ok(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON object")
}

fn matrix(v: &serde_json::Value) -> Vec<Vec<f32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

fn max_abs(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(r, s)| {
            assert_eq!(r.len(), s.len());
            r.iter().zip(s).map(|(x, y)| (x - y).abs())
        })
        .fold(0.0, f32::max)
}

fn expected() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("embed_expected.json")).unwrap()).unwrap()
}

fn embed_args<'a>(model: &'a str, images: &'a [String], texts: &'a [String]) -> Vec<&'a str> {
    let mut args = vec!["clip", "embed", "--model", model];
    for i in images {
        args.extend(["--image", i.as_str()]);
    }
    for t in texts {
        args.extend(["--text", t.as_str()]);
    }
    args
}

fn check_against_transformers(out: &serde_json::Value) {
    let want = expected();
    for key in ["image_embeds", "text_embeds", "logits_per_image"] {
        let d = max_abs(&matrix(&out[key]), &matrix(&want[key]));
        assert!(d <= 1e-4, "{key} differs from transformers by {d:e}");
    }
    for row in matrix(&out["image_embeds"]).iter().chain(&matrix(&out["text_embeds"])) {
        let n: f32 = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-5, "embeds are L2-normalized");
    }
}

fn cli_inputs() -> (Vec<String>, Vec<String>) {
    let want = expected();
    let images = want["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            fixture(&format!("images/{}", f.as_str().unwrap()))
                .display()
                .to_string()
        })
        .collect();
    let texts = want["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    (images, texts)
}

#[test]
fn embed_an_hf_directory_it_has_never_seen() {
    // A fresh directory under a new name, with its own preprocessor_config.json, as a hub download has.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("some-org--clip-tiny-finetune");
    copy_hf_dir(&dir);
    std::fs::write(
        dir.join("preprocessor_config.json"),
        r#"{"image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711], "crop_size": 32}"#,
    )
    .unwrap();
    let (images, texts) = cli_inputs();
    let model = dir.display().to_string();
    let out = json_ok(&gram_bench(&embed_args(&model, &images, &texts)));
    assert_eq!(out["layout"], "huggingface");
    assert!(out["config"].as_str().unwrap().ends_with("config.json"));
    check_against_transformers(&out);
}

#[test]
fn embed_an_openai_layout_state_dict() {
    let (images, texts) = cli_inputs();
    let model = fixture("tiny-clip-openai.safetensors").display().to_string();
    let cfg = fixture("tiny-clip-openai.json").display().to_string();
    let tok = fixture("tiny-clip-hf/tokenizer.json").display().to_string();
    let mut args = embed_args(&model, &images, &texts);
    args.extend(["--config", &cfg, "--tokenizer", &tok]);
    let out = json_ok(&gram_bench(&args));
    assert_eq!(out["layout"], "openai");
    assert_eq!(out["config"].as_str().unwrap(), cfg);
    check_against_transformers(&out);
}

#[test]
fn texts_only_or_images_only_work() {
    let (images, texts) = cli_inputs();
    let model = fixture("tiny-clip-hf").display().to_string();
    let out = json_ok(&gram_bench(&embed_args(&model, &[], &texts)));
    assert_eq!(matrix(&out["text_embeds"]).len(), 2);
    assert_eq!(out["image_embeds"].as_array().unwrap().len(), 0);
    assert_eq!(out["logits_per_image"].as_array().unwrap().len(), 0);
    let out = json_ok(&gram_bench(&embed_args(&model, &images[..1], &[])));
    assert_eq!(matrix(&out["image_embeds"]).len(), 1);
}

/// A failure is exactly one line on stderr, no panic, a non-zero exit, nothing on stdout.
fn assert_clear_failure(out: &Output, must_mention: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "should fail: {err}");
    assert!(!err.contains("panicked"), "panicked: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line expected, got: {err}");
    assert!(err.contains(must_mention), "`{must_mention}` not in: {err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn bad_input_is_one_clear_line_and_a_non_zero_exit() {
    let tmp = tempfile::tempdir().unwrap();
    let hf = fixture("tiny-clip-hf").display().to_string();
    let img = fixture("images/hopper.jpg").display().to_string();

    assert_clear_failure(
        &gram_bench(&["clip", "embed", "--model", "/no/such/model", "--text", "x"]),
        "/no/such/model: no such file or directory",
    );
    assert_clear_failure(&gram_bench(&["clip", "embed", "--model", &hf]), "nothing to embed");
    assert_clear_failure(
        &gram_bench(&["clip", "embed", "--model", &hf, "--image", "/no/such.jpg"]),
        "/no/such.jpg",
    );

    let broken = tmp.path().join("broken.jpg");
    std::fs::write(&broken, b"\xff\xd8\xff\xe0\x00\x10JFIF garbage").unwrap();
    let broken_s = broken.display().to_string();
    assert_clear_failure(
        &gram_bench(&["clip", "embed", "--model", &hf, "--image", &broken_s]),
        "broken.jpg",
    );
    let text_file = tmp.path().join("notes.png");
    std::fs::write(&text_file, "just text").unwrap();
    let text_s = text_file.display().to_string();
    assert_clear_failure(
        &gram_bench(&["clip", "embed", "--model", &hf, "--image", &text_s]),
        "notes.png",
    );

    let bad_cfg = tmp.path().join("config.json");
    std::fs::write(&bad_cfg, "{ this is not json").unwrap();
    let bad_cfg_s = bad_cfg.display().to_string();
    assert_clear_failure(
        &gram_bench(&["clip", "embed", "--model", &hf, "--config", &bad_cfg_s, "--image", &img]),
        "not valid JSON",
    );
    std::fs::write(
        &bad_cfg,
        r#"{"text_config": {"hidden_size": 64, "num_attention_heads": 3}, "vision_config": {}}"#,
    )
    .unwrap();
    assert_clear_failure(
        &gram_bench(&["clip", "embed", "--model", &hf, "--config", &bad_cfg_s, "--image", &img]),
        "not divisible",
    );

    let shaped = tmp.path().join("shaped");
    copy_hf_dir(&shaped);
    rewrite(
        &fixture("tiny-clip-hf/model.safetensors"),
        &shaped.join("model.safetensors"),
        Dtype::F32,
        |n, (s, v)| {
            if n == "visual_projection.weight" {
                vec![(n.into(), (vec![64, 32], v))]
            } else {
                vec![(n.into(), (s, v))]
            }
        },
    );
    let shaped_s = shaped.display().to_string();
    assert_clear_failure(
        &gram_bench(&["clip", "embed", "--model", &shaped_s, "--image", &img]),
        "`visual_projection.weight` has shape [64, 32], expected [32, 64]",
    );

    let openai = fixture("tiny-clip-openai.safetensors").display().to_string();
    assert_clear_failure(
        &gram_bench(&["clip", "embed", "--model", &openai, "--text", "x"]),
        "pass --config",
    );

    #[cfg(not(feature = "wgpu"))]
    assert_clear_failure(
        &gram_bench(&["clip", "embed", "--model", &hf, "--text", "x", "--backend", "wgpu"]),
        "--features wgpu",
    );
}

#[test]
fn nothing_is_written_next_to_the_model() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    copy_hf_dir(&dir);
    let before: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let model = dir.display().to_string();
    json_ok(&gram_bench(&["clip", "embed", "--model", &model, "--text", "hello"]));
    let after: Vec<_> = std::fs::read_dir(Path::new(&dir))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before.len(), after.len());
}

#[test]
fn every_committed_suite_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("suites");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let out = Command::new(env!("CARGO_BIN_EXE_gram-bench"))
                .args(["validate", p.to_str().unwrap()])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .env_remove("GRAM_BENCH_DATA")
                .env_remove("DATA")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                p.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            n += 1;
        }
    }
    assert!(n >= 5, "the smoke suite and the four paper tables");
}
