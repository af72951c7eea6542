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
