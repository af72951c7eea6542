//! Backbones pinned in datasets.lock: run on the world, and a wrong digest stops the run.

use std::path::Path;

use crate::common::suite_env::*;

#[test]
fn a_backbone_from_the_lock_runs_on_the_world_and_a_wrong_digest_stops_the_run() {
    let env = Env::new();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-clip-hf");
    let out = env.run(&["lock", "digest", model.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let digest = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(digest.len(), 64);
    let lock = |sha: &str| {
        format!(
            "version = 1\n[backbones.tiny]\npath = \"{}\"\nsha256 = \"{sha}\"\n",
            model.display()
        )
    };
    std::fs::write(env.path("datasets.lock"), lock(&digest)).unwrap();
    let text = TINY
        .replace("name = \"micro-clip\"", "name = \"tiny\"")
        .replace("methods = [\"zs\", \"coop\"]", "methods = [\"zs\"]")
        .replace("methods = [\"coop\"]\ndatasets", "methods = [\"zs\"]\ndatasets");
    let suite = env.write_suite("tiny.toml", &text);
    let s = suite.to_str().unwrap();
    let out = env.run(&["run", s]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rec: serde_json::Value = serde_json::from_slice(env.records("tiny").values().next().unwrap()).unwrap();
    assert_eq!(rec["digests"]["weights_sha256"], digest.as_str());
    assert!(rec["digests"]["backbone"].as_str().unwrap().starts_with("tiny@sha256:"));
    // Another digest is another backbone: new keys, and a run that refuses the file.
    std::fs::write(env.path("datasets.lock"), lock(&"0".repeat(64))).unwrap();
    let out = env.run(&["run", s]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("does not match"), "{}", stderr(&out));
    let out = env.run(&["validate", s]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Without the pin the suite still validates (a paper suite before its backbone is pinned) and
    // says why its keys cannot be computed; `run` refuses it.
    std::fs::remove_file(env.path("datasets.lock")).unwrap();
    let out = env.run(&["validate", s]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("cell keys not computed here") && text.contains("backbone `tiny`"),
        "{text}"
    );
    let out = env.run(&["run", s]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("backbone `tiny`"), "{}", stderr(&out));
}

/// The one world directory a test's cache holds.
fn world_dir(env: &Env) -> std::path::PathBuf {
    std::fs::read_dir(env.path("cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir() && p.file_name().unwrap().to_string_lossy().starts_with("world-"))
        .expect("a built world")
}

#[test]
fn the_world_prints_and_verifies_its_digests_and_a_damaged_micro_clip_is_refused() {
    let env = Env::new();
    let text = TINY.replace("methods = [\"zs\", \"coop\"]", "methods = [\"zs\"]");
    let suite = env.write_suite("tiny.toml", &text);
    let s = suite.to_str().unwrap();
    let out = env.run(&["world", "build", s]);
    assert!(out.status.success(), "{}", stderr(&out));
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let weights = manifest["digests"]["weights_sha256"].as_str().unwrap().to_string();
    assert_eq!(weights.len(), 64);
    assert_eq!(
        manifest["digests"]["datasets"].as_object().unwrap().len(),
        6,
        "{manifest}"
    );
    assert!(stderr(&out).contains("verified"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&weights),
        "the digests are printed: {}",
        stderr(&out)
    );

    // Bits flipped in the cached weights, size unchanged: `world` says what differs, `run` refuses.
    let model = world_dir(&env).join("micro-clip/model.safetensors");
    let mut bytes = std::fs::read(&model).unwrap();
    let n = bytes.len();
    for b in &mut bytes[n - 4000..n - 2000] {
        *b ^= 0x80;
    }
    std::fs::write(&model, &bytes).unwrap();
    let out = env.run(&["world", "build", s]);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.contains("the micro-CLIP's weights") && e.contains("delete"), "{e}");
    // `run` checks the cached world before it loads anything from it.
    let out = env.run(&["run", s]);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("the cached world differs from its build: the micro-CLIP's weights"),
        "{e}"
    );
    assert!(!env.path("results/tiny/records").exists() || env.records("tiny").is_empty());

    // A changed image of a dataset is named.
    let mut weights_back = bytes;
    for b in &mut weights_back[n - 4000..n - 2000] {
        *b ^= 0x80;
    }
    std::fs::write(&model, &weights_back).unwrap();
    let shapes = world_dir(&env).join("data/shapes");
    let png = std::fs::read_dir(shapes.join("images"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .and_then(|d| std::fs::read_dir(d).unwrap().map(|e| e.unwrap().path()).next())
        .unwrap();
    std::fs::write(&png, b"not the rendered image").unwrap();
    let out = env.run(&["world", "build", s]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("dataset `shapes`"), "{}", stderr(&out));
}
