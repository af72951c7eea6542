//! `gram-bench check`: a suite's records against a saved baseline; non-zero exit on any regression or missing metric.

use std::path::PathBuf;

use clap::Args;

use crate::error::{Error, Result};
use crate::files::write_atomic;
use crate::report::baseline::{baseline_path, check as check_rows, load_saved, select_rows};
use crate::report::check_export::CheckOutcome;
use crate::report::gather;
use crate::store::Store;
use crate::suite::Suite;

use super::common::*;

#[derive(Args, Debug)]
pub struct CheckArgs {
    pub suite: PathBuf,
    /// A saved baseline name (baselines/NAME.json) or a path to one.
    #[arg(long)]
    pub baseline: String,
    #[command(flatten)]
    pub store: StoreArgs,
    #[arg(long, default_value = "baselines")]
    pub dir: PathBuf,
    /// Only the baseline metrics matching FIELD=VALUE (fields: protocol, method, dataset, shots,
    /// metric; repeatable): after `run --only`, compare what was rerun.
    #[arg(long, value_parser = parse_row_filter)]
    pub only: Vec<(String, String)>,
    /// Also write the verdicts as JUnit XML (one test case per metric; failures for regressed,
    /// changed and missing ones), for a CI service's test view. Written whether the check passes
    /// or not.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Also write a short markdown verdict (counts, the rule, the failing metrics), for a CI job's
    /// summary page (the file is replaced: append it to `$GITHUB_STEP_SUMMARY`, as .ci/nightly does).
    #[arg(long, value_name = "FILE")]
    pub summary: Option<PathBuf>,
}

pub fn check(a: &CheckArgs) -> Result<()> {
    let suite = Suite::load(&a.suite)?;
    let path = if a.baseline.ends_with(".json") {
        std::path::PathBuf::from(&a.baseline)
    } else {
        baseline_path(&a.dir, &a.baseline)?
    };
    let base = load_saved(&path)?;
    if base.suite != suite.name {
        return Err(Error::Input(format!(
            "{} is a baseline of suite `{}`, not `{}`",
            path.display(),
            base.suite,
            suite.name
        )));
    }
    let resolved = resolve(suite, &a.store)?;
    let suite = &resolved.suite;
    let store = Store::open_read(&a.store.store, &suite.name);
    let data = gather(&resolved.plan, &store, suite)?;
    let selected = if a.only.is_empty() {
        base.rows.clone()
    } else {
        select_rows(&base.rows, &a.only)?
    };
    let rows = check_rows(&suite.check, &selected, &data.rows);
    let outcome = CheckOutcome {
        suite: &suite.name,
        baseline: &base.name,
        rule: &suite.check,
        rows: &rows,
    };
    println!("{}\n\n{}", outcome.table(), outcome.rule_text());
    // Written whether the check passes or not: a failed check is when a dashboard needs them.
    for (path, bytes) in [
        (&a.junit, outcome.junit()?),
        (&a.summary, outcome.summary().into_bytes()),
    ] {
        if let Some(path) = path {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            }
            write_atomic(path, &bytes)?;
        }
    }
    if !outcome.passed() {
        return Err(Error::Run(format!(
            "check failed: {} of {} metrics regressed, changed or missing against baseline `{}`",
            outcome.failures(),
            rows.len(),
            base.name
        )));
    }
    eprintln!("check passed: {} metrics against baseline `{}`", rows.len(), base.name);
    Ok(())
}
