//! The suite's [data] policy and the feature cache: CoOp's few-shot files, corrupt images, cached
//! features of frozen encoders.

use std::path::Path;

use crate::common::suite_env::*;

#[test]
fn coop_few_shot_files_pick_the_reference_images_and_bad_ones_fail_their_cell() {
    let env = Env::new();
    eurosat_replica(&env.path("DATA"));
    tiny_lock(&env);
    let cache = env.path("DATA/eurosat/split_fewshot");
    std::fs::create_dir_all(&cache).unwrap();
    for f in ["shot_1-seed_1.pkl", "shot_1-seed_2.pkl", "shot_1-seed_3.pkl"] {
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/coop_fewshot")
                .join(f),
            cache.join(f),
        )
        .unwrap();
    }
    let suite = env.write_suite(
        "pkl.toml",
        &eurosat_fewshot_suite("coop", "fail", "[\"coop\"]", "[1, 2, 3, 4]"),
    );
    let out = env.run(&["run", suite.to_str().unwrap(), "--data-root", "DATA"]);
    assert!(!out.status.success(), "seeds 3 and 4 must fail");
    let by_seed = |seed: u64| {
        record_values(&env, "tiny")
            .into_iter()
            .find(|r| r["cell"]["seed"] == seed)
            .unwrap()
    };
    // The replica's train split is images 0 and 1 of each class in class order; the file picks
    // AnnualCrop_1, Forest_0, Highway_1, River_0, and its val holds image 2 of each class.
    let r = by_seed(1);
    assert_eq!(r["status"], "ok", "{}", r["error"]);
    assert_eq!(r["fewshot"]["source"], "coop-pkl");
    assert_eq!(r["fewshot"]["train"], serde_json::json!([1, 2, 5, 6]));
    assert_eq!(r["fewshot"]["val"], serde_json::json!([0, 1, 2, 3]));
    assert_eq!(r["fewshot"]["sha256"].as_str().unwrap().len(), 64);
    // ImageNet-style files hold no val: that half is sampled.
    let r = by_seed(2);
    assert_eq!(r["fewshot"]["train"], serde_json::json!([0, 3, 4, 7]));
    assert_eq!(r["fewshot"]["val_source"], "sampled");
    let r = by_seed(3);
    assert_eq!(r["status"], "failed");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("has label 3 but the split file says 1"),
        "{}",
        r["error"]
    );
    let r = by_seed(4);
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("shot_1-seed_4.pkl: CoOp's few-shot file is not there"),
        "{}",
        r["error"]
    );
    // "coop-if-present" samples where there is no file; the file's cells keep their own keys.
    let suite = env.write_suite(
        "pkl.toml",
        &eurosat_fewshot_suite("coop-if-present", "fail", "[\"coop\"]", "[1, 4]"),
    );
    let out = env.run(&["run", suite.to_str().unwrap(), "--data-root", "DATA"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let sampled: Vec<serde_json::Value> = record_values(&env, "tiny")
        .into_iter()
        .filter(|r| r["fewshot"]["source"] == "sampled")
        .collect();
    assert_eq!(sampled.len(), 1);
    assert_eq!(sampled[0]["cell"]["seed"], 4);
}

#[test]
fn a_corrupt_image_fails_its_cell_or_is_skipped_and_counted_as_the_suite_says() {
    let env = Env::new();
    eurosat_replica(&env.path("DATA"));
    tiny_lock(&env);
    let bad = env.path("DATA/eurosat/2750/River/River_4.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\ntruncated").unwrap();
    let suite = env.write_suite("c.toml", &eurosat_fewshot_suite("sample", "fail", "[\"zs\"]", "[1]"));
    let out = env.run(&["run", suite.to_str().unwrap(), "--data-root", "DATA"]);
    assert!(!out.status.success());
    let r = &record_values(&env, "tiny")[0];
    assert!(r["error"].as_str().unwrap().contains("River_4.png"), "{}", r["error"]);
    let suite = env.write_suite(
        "c.toml",
        &eurosat_fewshot_suite("sample", "skip", "[\"zs\", \"coop\"]", "[1]"),
    );
    let out = env.run(&["run", suite.to_str().unwrap(), "--data-root", "DATA"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for r in record_values(&env, "tiny").iter().filter(|r| r["status"] == "ok") {
        assert_eq!(r["metrics"]["total"], 7, "8 test images, one corrupt");
        assert_eq!(r["skipped_images"].as_array().unwrap().len(), 1);
        assert!(r["skipped_images"][0]["path"]
            .as_str()
            .unwrap()
            .ends_with("River_4.png"));
    }
    // --deep verify names it too.
    let out = env.run(&["datasets", "verify", "eurosat", "--data-root", "DATA", "--deep"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 images do not decode"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn the_feature_cache_serves_frozen_encoders_with_the_numbers_of_encoding_every_time() {
    let env = Env::new();
    eurosat_replica(&env.path("DATA"));
    tiny_lock(&env);
    let text = real_data_suite("eurosat");
    let suite = env.write_suite("f.toml", &text);
    let s = suite.to_str().unwrap();
    let out = env.run(&["run", s, "--data-root", "DATA"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.run(&[
        "run",
        s,
        "--data-root",
        "DATA",
        "--store",
        "plain",
        "--no-feature-cache",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let cached = record_values(&env, "tiny");
    let origins: Vec<&str> = cached.iter().map(|r| r["features"].as_str().unwrap()).collect();
    // One computation of EuroSAT's test features; every other evaluation reads them.
    assert_eq!(origins.iter().filter(|&&o| o == "computed").count(), 1, "{origins:?}");
    assert_eq!(origins.iter().filter(|&&o| o == "cached").count(), cached.len() - 1);
    let plain_dir = env.path("plain/tiny/records");
    for r in &cached {
        let key = r["key"].as_str().unwrap();
        let p: serde_json::Value =
            serde_json::from_slice(&std::fs::read(plain_dir.join(format!("{key}.json"))).unwrap()).unwrap();
        assert_eq!(p["features"], "encoded");
        assert_eq!(p["metrics"]["correct"], r["metrics"]["correct"], "cell {key}");
        assert_eq!(p["per_class"], r["per_class"], "cell {key}");
    }
    let files: Vec<_> = std::fs::read_dir(env.path("cache/features")).unwrap().collect();
    assert_eq!(files.len(), 1);
}
