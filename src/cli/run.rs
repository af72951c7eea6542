//! `gram-bench run`: run a suite's cells (resuming), then write its report.

use std::path::{Path, PathBuf};

use clap::Args;

use crate::error::{Error, Result};
use crate::run::{run_suite, Jobs, Overwrite, RunOptions, RunSummary};
use crate::suite::Suite;

use super::common::*;
use super::report::{nothing_finished, write_suite_report, SuiteReport};
use crate::backend::{BackendKind, Precision};

#[derive(Args, Debug)]
pub struct RunArgs {
    pub suite: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
    /// cpu, wgpu or cuda (the last two need the matching cargo feature).
    #[arg(long, default_value = "cpu")]
    pub backend: BackendKind,
    /// Only cells matching FIELD=VALUE (fields: method, dataset, target, phase, shots, seed; repeatable).
    #[arg(long, value_parser = parse_filter)]
    pub only: Vec<(String, String)>,
    /// Which existing records to recompute.
    #[arg(long, value_enum, default_value = "only-missing")]
    pub overwrite: Overwrite,
    /// Where the report written after the run goes.
    #[arg(long, default_value = "reports")]
    pub out: PathBuf,
    /// Do not write the report after the run.
    #[arg(long)]
    pub no_report: bool,
    /// Run even when a dataset's split definition differs from its datasets.lock pin.
    #[arg(long)]
    pub allow_changed_data: bool,
    /// Encode test images in every cell instead of reusing cached image features of the frozen
    /// encoder (same numbers, slower; for timing the cache's saving).
    #[arg(long)]
    pub no_feature_cache: bool,
    /// Run only the cells shard I of N owns (a deterministic partition; an eval cell goes with the
    /// cell it evaluates): for a loop over GPUs or a job array. A cell whose input another shard
    /// has not recorded yet is skipped with a line saying which; run the shard again after it.
    #[arg(long)]
    pub shard: Option<crate::run::shard::Shard>,
    /// How many cells to compute at once (each with its own loaded backbone); every number is the
    /// same bits as one at a time. `auto`: one per core for the embedded world's micro-CLIP on the
    /// CPU (at most 8), otherwise 1.
    #[arg(long, default_value = "auto")]
    pub jobs: Jobs,
    /// Internal: run only the cells of this precision (a run relaunches itself with it for each
    /// precision other than its own, since a process computes at one).
    #[arg(long, hide = true)]
    pub precision_group: Option<Precision>,
}

pub fn run(a: &RunArgs) -> Result<()> {
    let resolved = resolve(Suite::load(&a.suite)?, &a.store)?;
    let opts = RunOptions {
        store: a.store.store.clone(),
        allow_changed_data: a.allow_changed_data,
        cache: cache_of(&a.store),
        backend: a.backend,
        only: a.only.clone(),
        overwrite: a.overwrite,
        feature_cache: !a.no_feature_cache,
        shard: a.shard,
        keys: None,
        precision: a.precision_group,
        jobs: a.jobs.resolve(&resolved.suite, a.backend),
    };
    let s = run_suite(&resolved, &opts)?;
    eprintln!(
        "ran {} cells ({} failed), skipped {} already recorded, {} busy in another runner{}{}",
        s.ran,
        s.failed,
        s.skipped,
        s.busy,
        if s.waiting > 0 {
            format!(", {} waiting on other shards", s.waiting)
        } else {
            String::new()
        },
        match (s.precision, resolved.suite.precision.methods.is_empty()) {
            (Some(p), false) => format!(" (precision {p})"),
            _ => String::new(),
        }
    );
    let mut problems = Vec::new();
    if s.failed > 0 {
        problems.push(format!(
            "{} cells failed; their records hold the errors (`gram-bench plan {}` lists them)",
            s.failed,
            a.suite.display()
        ));
    }
    for (p, n) in &s.later {
        eprintln!("running the {n} cells at precision {p} in a process of their own");
        if !relaunch_at(*p, a.no_report)? {
            problems.push(format!(
                "the run of the {p} cells did not succeed (its lines are above)"
            ));
        }
    }
    let mut busy_said = false;
    if !a.no_report && problems.is_empty() {
        if let SuiteReport::NothingFinished = write_suite_report(&resolved, &a.suite, &a.store, &a.out, false)? {
            busy_said = true;
            // Every cell this run could take is another runner's: not a failure, nothing to report yet.
            if s.busy + s.waiting == 0 {
                return Err(nothing_finished(&resolved, &a.suite, &a.store));
            }
            eprintln!(
                "nothing finished yet: {} cells are being computed by other runners{}; `{}` writes the report \
                 once they are done",
                s.busy,
                if s.waiting > 0 {
                    format!(" and {} wait on other shards", s.waiting)
                } else {
                    String::new()
                },
                report_command(a)
            );
        }
    }
    // A run can end well with cells left: say which and the command that runs them (a relaunched
    // precision's process leaves that to the run that started it).
    if a.precision_group.is_none() {
        for line in left(a, &s, busy_said) {
            eprintln!("left: {line}");
        }
    }
    if !problems.is_empty() {
        return Err(Error::Run(problems.join("; ")));
    }
    Ok(())
}

/// What a run that succeeded did not compute, one line each with the command that does (cells busy
/// in other runners only if the report step has not already said so).
fn left(a: &RunArgs, s: &RunSummary, busy_said: bool) -> Vec<String> {
    let args: Vec<String> = std::env::args().collect();
    let mut lines = Vec::new();
    if s.unselected > 0 {
        lines.push(format!(
            "{} cells of the suite outside `--only` have no finished record; `{}` runs them",
            s.unselected,
            command(&args, &["--only"], &[])
        ));
    }
    if let (Some(sh), false) = (a.shard, s.other_shards.is_empty()) {
        let n: usize = s.other_shards.iter().map(|(_, n)| n).sum();
        let runs: Vec<String> = s
            .other_shards
            .iter()
            .map(|(i, n)| {
                let shard = format!("{i}/{}", sh.count);
                format!("`{}` ({n})", command(&args, &["--shard"], &["--shard", &shard]))
            })
            .collect();
        lines.push(format!(
            "{n} cells of other shards have no finished record; their shards run them: {}",
            runs.join(", ")
        ));
    }
    if s.waiting > 0 {
        lines.push(format!(
            "{} cells wait on cells of other shards; `{}` runs them once those are recorded",
            s.waiting,
            command(&args, &[], &[])
        ));
    }
    if s.kept_failed > 0 {
        lines.push(format!(
            "{} cells failed earlier and `--overwrite never` keeps their records; `{}` runs them again",
            s.kept_failed,
            command(&args, &["--overwrite"], &[])
        ));
    }
    if s.busy > 0 && !busy_said {
        lines.push(format!(
            "{} cells are being computed by other runners{}; `{}` reports them once they finish",
            s.busy,
            if a.no_report {
                ""
            } else {
                " (the report written above leaves them out)"
            },
            report_command(a)
        ));
    }
    lines
}

/// The `report` command for this run's store and report folder.
fn report_command(a: &RunArgs) -> String {
    let out = [("--out", a.out.as_path())];
    suite_command(
        "report",
        &a.suite,
        &a.store,
        if a.out != Path::new("reports") { &out } else { &[] },
    )
}

/// This command line with the options in `drop` (and the internal `--precision-group`) taken out
/// and `add` appended: every other option as given (store, cache, backend, …), shell-quoted.
fn command(args: &[String], drop: &[&str], add: &[&str]) -> String {
    let mut out = Vec::new();
    let mut skip = false;
    for a in args {
        if std::mem::take(&mut skip) {
            continue;
        }
        let dropped = drop
            .iter()
            .chain(&["--precision-group"])
            .find(|o| a == *o || a.strip_prefix(*o).is_some_and(|rest| rest.starts_with('=')));
        match dropped {
            // `--only X`: its value is the next word; `--only=X` is one word.
            Some(o) => skip = a == o,
            None => out.push(quote(a)),
        }
    }
    out.extend(add.iter().map(|w| quote(w)));
    out.join(" ")
}

/// Runs this command again for the cells at precision `p` (without a report: this process
/// writes it once every precision is done); whether it succeeded.
fn relaunch_at(p: Precision, no_report_given: bool) -> Result<bool> {
    let exe = super::common::this_binary()?;
    let mut cmd = std::process::Command::new(&exe);
    cmd.args(std::env::args_os().skip(1))
        .args(["--precision-group", p.as_str()]);
    if !no_report_given {
        cmd.arg("--no-report");
    }
    // The handler (installed here if this process ran no cell itself) stops the child with it.
    let command: Vec<String> = std::env::args().collect();
    crate::run::interrupt::install(0, command.join(" "));
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::Run(format!("running {}: {e}", exe.display())))?;
    let watched = crate::run::interrupt::watch_child(child.id());
    let status = child.wait();
    // Reaped: the handler, if one is stopping the run, no longer waits for it.
    drop(watched);
    crate::run::interrupt::hold_if_stopping();
    let status = status.map_err(|e| Error::Run(format!("waiting for {}: {e}", exe.display())))?;
    Ok(status.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_for_what_is_left_keeps_every_other_option() {
        let args: Vec<String> = [
            "gram-bench",
            "run",
            "s.toml",
            "--only",
            "method=zs",
            "--store",
            "my results",
            "--only=seed=1",
            "--shard",
            "1/3",
            "--precision-group",
            "bf16",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            command(&args, &["--only"], &[]),
            "gram-bench run s.toml --store 'my results' --shard 1/3"
        );
        assert_eq!(
            command(&args, &["--shard"], &["--shard", "2/3"]),
            "gram-bench run s.toml --only method=zs --store 'my results' --only=seed=1 --shard 2/3"
        );
        assert_eq!(quote("it's"), "'it'\\''s'");
    }
}
