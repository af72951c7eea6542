//! `gram-bench check`: a suite's records against a saved baseline; non-zero exit on any regression or missing metric.

use std::path::PathBuf;

use clap::Args;

use crate::error::{Error, Result};
use crate::report::baseline::{baseline_path, check as check_rows, load_saved, select_rows};
use crate::report::{gather, markdown_table};
use crate::store::Store;
use crate::suite::{FailOn, Suite};

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
    let out = check_rows(&suite.check, &selected, &data.rows);
    let rows = out
        .iter()
        .map(|c| {
            let b = &c.baseline;
            vec![
                b.protocol.to_string(),
                b.method.clone(),
                b.dataset.clone(),
                b.shots.to_string(),
                b.metric.to_string(),
                format!("{:.2}", b.mean),
                c.current.map(|v| format!("{v:.2}")).unwrap_or_else(|| "—".into()),
                c.delta.map(|v| format!("{v:+.2}")).unwrap_or_else(|| "—".into()),
                format!("{:.2}", c.tolerance),
                c.verdict.as_str().to_string(),
            ]
        })
        .collect();
    println!(
        "{}",
        markdown_table(
            &[
                "Protocol",
                "Method",
                "Dataset",
                "Shots",
                "Metric",
                "Baseline",
                "Current",
                "Δ",
                "Tolerance",
                "Verdict"
            ],
            rows
        )
    );
    let above = match suite.check.fail_on {
        FailOn::Regression => "improved",
        FailOn::AnyChange => "CHANGED (fails too)",
    };
    println!(
        "\nRule: regressed when current < baseline − max({} pt, {} × baseline seed std); {above} when above by as much.",
        suite.check.abs_tolerance, suite.check.std_factor
    );
    let bad = out.iter().filter(|c| c.verdict.fails()).count();
    if bad > 0 {
        return Err(Error::Run(format!(
            "check failed: {bad} of {} metrics regressed, changed or missing against baseline `{}`",
            out.len(),
            base.name
        )));
    }
    eprintln!("check passed: {} metrics against baseline `{}`", out.len(), base.name);
    Ok(())
}
