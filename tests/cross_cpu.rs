//! The embedded world on another CPU: an AVX2-only x86-64 machine (no AVX-512) emulated with
//! Debian's qemu-user (`qemu-x86_64 -cpu Haswell`; QEMU's TCG has AVX2 and FMA, not AVX-512), so
//! one machine checks what a user's machine of the other kind will build. `.ci/run` installs
//! qemu-user; without it this test fails and says so (set GRAM_BENCH_NO_QEMU=1 to leave it out).

mod common;

use std::process::Command;

use common::suite_env::{stderr, Env, TINY};

fn qemu() -> Option<&'static str> {
    let found = Command::new("qemu-x86_64")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    found.then_some("qemu-x86_64")
}

#[test]
fn the_world_datasets_are_the_same_on_an_avx2_only_cpu() {
    if std::env::var_os("GRAM_BENCH_NO_QEMU").is_some() {
        eprintln!("GRAM_BENCH_NO_QEMU is set: the emulated-CPU comparison is left out");
        return;
    }
    let Some(qemu) = qemu() else {
        panic!("qemu-x86_64 not found: install Debian's qemu-user (.ci/run does), or set GRAM_BENCH_NO_QEMU=1");
    };
    let env = Env::new();
    let suite = env.write_suite("tiny.toml", TINY);
    let native = env.run(&["world", suite.to_str().unwrap()]);
    assert!(native.status.success(), "{}", stderr(&native));
    let emulated = Command::new(qemu)
        .args([
            "-cpu",
            "Haswell",
            env!("CARGO_BIN_EXE_gram-bench"),
            "world",
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
    // The weights are not compared yet: pretraining's kernels follow the vector width (README,
    // "The embedded world"); they are printed so a run shows where things stand.
    eprintln!(
        "micro-CLIP weights: native {} / emulated AVX2 {}",
        a["weights_sha256"], b["weights_sha256"]
    );
}
