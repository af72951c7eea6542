//! What a user who installs gram-bench as a CLI expects: `--version` that says what was built,
//! shell completions and man pages generated from the parser itself.

use std::process::{Command, Output};

fn gram_bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gram-bench"))
        .args(args)
        .output()
        .expect("binary runs")
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[test]
fn version_names_the_build() {
    let v = stdout(&gram_bench(&["--version"]));
    assert!(
        v.starts_with(&format!("gram-bench {}", env!("CARGO_PKG_VERSION"))),
        "{v}"
    );
    // Tests build the dev profile, which says so; a release build names its commit.
    assert!(
        v.contains("(dev build: commit not recorded)") || v.contains("(commit "),
        "{v}"
    );
}

#[test]
fn completion_scripts_know_every_command_and_flag() {
    let bash = stdout(&gram_bench(&["completions", "bash"]));
    for word in ["device-check", "check", "--junit", "--baseline", "slurm"] {
        assert!(bash.contains(word), "bash completions lack `{word}`");
    }
    let zsh = stdout(&gram_bench(&["completions", "zsh"]));
    assert!(zsh.starts_with("#compdef gram-bench"), "{}", &zsh[..zsh.len().min(80)]);
    let bad = gram_bench(&["completions", "tcsh"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("possible values"));
}

#[test]
fn man_pages_cover_every_command() {
    let page = stdout(&gram_bench(&["man"]));
    assert!(page.contains(".TH gram-bench"), "{}", &page[..page.len().min(200)]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man1");
    let o = gram_bench(&["man", "--out-dir", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for page in [
        "gram-bench.1",
        "gram-bench-run.1",
        "gram-bench-check.1",
        "gram-bench-slurm-submit.1",
    ] {
        let text = std::fs::read_to_string(out.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page}");
    }
}
