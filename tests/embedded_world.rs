//! The embedded suites' world, built from scratch, is the one the repository records: the pinned
//! micro-CLIP, and datasets and weights whose digests equal `src/world/pinned/digests.json`.

mod common;

use std::process::Command;

use common::suite_env::stderr;

#[test]
fn the_smoke_world_is_the_committed_one() {
    let cache = tempfile::tempdir().unwrap();
    let smoke = concat!(env!("CARGO_MANIFEST_DIR"), "/suites/smoke.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_gram-bench"))
        .args(["world", "build", smoke, "--cache"])
        .arg(cache.path())
        .output()
        .expect("the binary runs");
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(manifest["micro_clip"], "pinned", "{err}");
    assert!(
        err.contains("verified: the world is the one the repository records"),
        "{err}"
    );
}
