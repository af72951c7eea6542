//! A run (or report) that ends well with cells left says which, and gives the exact command that
//! computes them: cells outside `--only`, other shards' cells, failed records `--overwrite never`
//! keeps, and cells a report leaves out.

use crate::common::suite_env::*;

/// The `left:` line that mentions `what`, and the command in its (first) backticks after `;`.
fn left(err: &str, what: &str) -> (String, Vec<String>) {
    let line = err
        .lines()
        .find(|l| l.starts_with("left: ") && l.contains(what))
        .unwrap_or_else(|| panic!("no `left:` line about {what}:\n{err}"))
        .to_string();
    let tail = line.split_once("; ").unwrap().1;
    let command = tail.split('`').nth(1).unwrap();
    (line.clone(), shlex::split(command).unwrap())
}

/// Runs a command a `left:` line gave (its first word is this binary's path).
fn run_given(env: &Env, words: &[String]) -> std::process::Output {
    assert_eq!(words[0], env!("CARGO_BIN_EXE_gram-bench"), "{words:?}");
    env.run(&words[1..].iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn a_run_that_leaves_cells_says_which_and_the_command_that_runs_them() {
    let env = Env::new();
    let suite = env.write_suite("tiny.toml", TINY);
    let s = suite.to_str().unwrap();
    // `--only`: the suite's other cells are left; the store option is kept in the command.
    let out = env.run(&["run", s, "--only", "method=zs", "--store", "store a"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let (line, words) = left(&err, "outside `--only`");
    assert!(
        line.starts_with("left: 4 cells of the suite outside `--only` have no finished record"),
        "{line}"
    );
    assert_eq!(words[1..], ["run", s, "--store", "store a"]);
    // The report says what it leaves out, and the same command.
    let out = env.run(&["report", s, "--store", "store a"]);
    let (line, report_words) = left(&stderr(&out), "the report leaves out");
    assert!(out.status.success());
    assert!(
        line.contains("leaves out 4 cells with no record and 0 failed ones"),
        "{line}"
    );
    assert_eq!(report_words, words);
    // Running it computes the rest, and then nothing is left.
    let out = run_given(&env, &words);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("ran 4 cells"), "{err}");
    assert!(!err.contains("left: "), "{err}");

    // `--shard`: the other shards' cells are left, each shard with its command.
    let out = env.run(&["run", s, "--shard", "1/2", "--no-report"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let (line, words) = left(&err, "of other shards");
    assert!(line.contains("their shards run them: `"), "{line}");
    assert_eq!(words[1..], ["run", s, "--no-report", "--shard", "2/2"]);
    let out = run_given(&env, &words);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.run(&["run", s, "--shard", "1/2", "--no-report"]);
    assert!(!stderr(&out).contains("left: "), "{}", stderr(&out));
}

#[test]
fn failed_cells_kept_by_overwrite_never_are_left_with_the_command_that_reruns_them() {
    let env = Env::new();
    // As in `resume`: n_ctx = 3 cannot hold "a photo of a", so both coop cells of the few-shot
    // table fail (zero-shot cells still record).
    let text = TINY
        .replace("n_ctx = 4", "n_ctx = 3")
        .replace("methods = [\"coop\"]\ndatasets", "methods = [\"zs\"]\ndatasets");
    let suite = env.write_suite("tiny.toml", &text);
    let s = suite.to_str().unwrap();
    let out = env.run(&["run", s]);
    assert!(!out.status.success());
    let out = env.run(&["run", s, "--overwrite", "never"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let (line, words) = left(&err, "--overwrite never");
    assert!(
        line.starts_with("left: 2 cells failed earlier and `--overwrite never` keeps their records"),
        "{line}"
    );
    assert_eq!(words[1..], ["run", s]);
}
