//! `gram-bench run`: run a suite's cells (resuming), then write its report.

use std::path::PathBuf;

use clap::Args;

use crate::error::{Error, Result};
use crate::run::{run_suite, Overwrite, RunOptions};
use crate::suite::Suite;

use super::common::*;
use super::report::write_suite_report;
use crate::backend::BackendKind;

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
    };
    let s = run_suite(&resolved, &opts)?;
    eprintln!(
        "ran {} cells ({} failed), skipped {} already recorded, {} busy in another runner{}",
        s.ran,
        s.failed,
        s.skipped,
        s.busy,
        if s.waiting > 0 {
            format!(", {} waiting on other shards", s.waiting)
        } else {
            String::new()
        }
    );
    if !a.no_report && s.failed == 0 {
        write_suite_report(&resolved, &a.suite, &a.store, &a.out, false)?;
    }
    if s.failed > 0 {
        return Err(Error::Run(format!(
            "{} cells failed; their records hold the errors (`gram-bench plan {}` lists them)",
            s.failed,
            a.suite.display()
        )));
    }
    Ok(())
}
