//! Names the commit a release binary is built from, for `gram-bench --version`. Only release builds
//! (`cargo install`, `cargo build --release`) look it up and rebuild when it changes; a dev build
//! says so instead, so that a commit does not recompile the library in every developer's loop.

use std::path::Path;
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    println!("cargo:rerun-if-changed=src/build.rs");
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    let commit = if release {
        let dir = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
        if let Some(git_dir) = git(&dir, &["rev-parse", "--absolute-git-dir"]) {
            for f in ["HEAD", "refs/heads", "packed-refs"] {
                println!("cargo:rerun-if-changed={git_dir}/{f}");
            }
        }
        match git(&dir, &["rev-parse", "--short=12", "HEAD"]) {
            Some(c) => format!("commit {c}"),
            None => "commit unknown: not built from a git checkout".to_string(),
        }
    } else {
        "dev build: commit not recorded".to_string()
    };
    println!("cargo:rustc-env=GRAM_BENCH_BUILD={commit}");
}
