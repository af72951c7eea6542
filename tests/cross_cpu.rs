//! The embedded world on another CPU: an AVX2-only x86-64 machine (no AVX-512) emulated with
//! Debian's qemu-user (`qemu-x86_64 -cpu Haswell`; QEMU's TCG has AVX2 and FMA, not AVX-512), so
//! one machine checks what a user's machine of the other kind will build. `.ci/run` installs
//! qemu-user; without it this test fails and says so (set GRAM_BENCH_NO_QEMU=1 to leave it out).

mod common;

use std::process::Command;

use common::suite_env::{record_values, stderr, Env, TINY};

/// The emulator, or None when GRAM_BENCH_NO_QEMU leaves the comparison out; a missing qemu fails
/// the test (it is installed by .ci/run), so the comparison cannot silently not happen.
fn emulator() -> Option<&'static str> {
    if std::env::var_os("GRAM_BENCH_NO_QEMU").is_some() {
        eprintln!("GRAM_BENCH_NO_QEMU is set: the emulated-CPU comparison is left out");
        return None;
    }
    let found = Command::new("qemu-x86_64")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "qemu-x86_64 not found: install Debian's qemu-user (.ci/run does), or set GRAM_BENCH_NO_QEMU=1"
    );
    Some("qemu-x86_64")
}

#[test]
fn the_world_is_the_same_on_an_avx2_only_cpu() {
    let Some(qemu) = emulator() else {
        return;
    };
    let env = Env::new();
    let suite = env.write_suite("tiny.toml", TINY);
    let native = env.run(&["world", "build", suite.to_str().unwrap()]);
    assert!(native.status.success(), "{}", stderr(&native));
    let emulated = Command::new(qemu)
        .args([
            "-cpu",
            "Haswell",
            env!("CARGO_BIN_EXE_gram-bench"),
            "world",
            "build",
            suite.to_str().unwrap(),
        ])
        .current_dir(env.dir.path())
        .env("GRAM_BENCH_CACHE", env.path("cache-avx2"))
        .output()
        .expect("qemu runs");
    assert!(emulated.status.success(), "{}", stderr(&emulated));
    let digests = |out: &std::process::Output| {
        let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        m["digests"].clone()
    };
    let (a, b) = (digests(&native), digests(&emulated));
    assert_eq!(a["datasets"].as_object().map(|d| d.len()), Some(6), "{a}");
    assert_eq!(a["datasets"], b["datasets"], "every world dataset, byte for byte");
    // The test suite's world is not pinned: this micro-CLIP was pretrained on each CPU.
    assert_eq!(native_source(&native), "pretrained");
    assert_eq!(
        a["weights_sha256"], b["weights_sha256"],
        "the micro-CLIP pretrained on each CPU"
    );
}

fn native_source(out: &std::process::Output) -> String {
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    m["micro_clip"].as_str().unwrap_or_default().to_string()
}

/// The pinned micro-CLIP's first pretraining steps, replayed on the other CPU, give the pinned
/// losses bit for bit.
#[test]
fn the_pinned_trajectory_replays_on_an_avx2_only_cpu() {
    let Some(qemu) = emulator() else {
        return;
    };
    let smoke = concat!(env!("CARGO_MANIFEST_DIR"), "/suites/smoke.toml");
    let out = Command::new(qemu)
        .args([
            "-cpu",
            "Haswell",
            env!("CARGO_BIN_EXE_gram-bench"),
            "world",
            "replay",
            smoke,
            "--steps",
            "2",
        ])
        .output()
        .expect("qemu runs");
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Downstream cells — zero-shot, CoOp training with its losses, base-to-new — write the same
/// numbers on the other CPU: the check's tolerance need not absorb any spread between machines.
#[test]
fn the_cells_write_the_same_records_on_an_avx2_only_cpu() {
    let Some(qemu) = emulator() else {
        return;
    };
    let results = |emulated: bool| {
        let env = Env::new();
        let suite = env.write_suite("tiny.toml", TINY);
        let bin = env!("CARGO_BIN_EXE_gram-bench");
        let mut cmd = if emulated {
            let mut c = Command::new(qemu);
            c.args(["-cpu", "Haswell", bin]);
            c
        } else {
            Command::new(bin)
        };
        let out = cmd
            .args(["run", suite.to_str().unwrap(), "--no-report"])
            .current_dir(env.dir.path())
            .env("GRAM_BENCH_CACHE", env.path("cache"))
            .output()
            .expect("the binary runs");
        assert!(out.status.success(), "{}", stderr(&out));
        record_values(&env, "tiny")
            .into_iter()
            .map(|r| {
                serde_json::json!({
                    "key": r["key"], "metrics": r["metrics"], "per_class": r["per_class"],
                    "loss": r["train"]["epoch_loss"], "digests": r["digests"],
                })
            })
            .collect::<Vec<_>>()
    };
    let (native, emulated) = (results(false), results(true));
    assert_eq!(native.len(), 6);
    assert_eq!(native, emulated, "every record's numbers, bit for bit");
}
