//! `gram-bench baseline save`: a complete run's aggregate saved as baselines/NAME.json.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::error::{Error, Result};
use crate::files::write_atomic;
use crate::provenance::{git_commit, now_utc};
use crate::report::baseline::{baseline_path, SavedBaseline};
use crate::report::gather;
use crate::store::Store;
use crate::suite::Suite;

use super::common::*;

#[derive(Subcommand, Debug)]
pub enum BaselineCommand {
    /// Save the current aggregate of SUITE as baselines/NAME.json.
    Save(BaselineSaveArgs),
}

#[derive(Args, Debug)]
pub struct BaselineSaveArgs {
    pub name: String,
    pub suite: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
    #[arg(long, default_value = "baselines")]
    pub dir: PathBuf,
    /// Replace an existing baseline of that name.
    #[arg(long)]
    pub force: bool,
}

pub(crate) fn baseline_save(a: &BaselineSaveArgs) -> Result<()> {
    let resolved = resolve(Suite::load(&a.suite)?, &a.store)?;
    let suite = &resolved.suite;
    let store = Store::open_read(&a.store.store, &suite.name);
    let data = gather(&resolved.plan, &store, suite)?;
    if !data.missing.is_empty() || !data.failed.is_empty() {
        return Err(Error::Input(format!(
            "suite `{}` has {} missing and {} failed cells; a baseline needs a complete run",
            suite.name,
            data.missing.len(),
            data.failed.len()
        )));
    }
    let path = baseline_path(&a.dir, &a.name)?;
    if path.exists() && !a.force {
        return Err(Error::Input(format!(
            "{} exists; pass --force to replace it",
            path.display()
        )));
    }
    std::fs::create_dir_all(&a.dir).map_err(|e| Error::io(&a.dir, e))?;
    let b = SavedBaseline {
        name: a.name.clone(),
        suite: suite.name.clone(),
        suite_version: suite.version,
        created_at: now_utc(),
        git_commit: git_commit(),
        rows: data.rows,
    };
    let json = serde_json::to_vec_pretty(&b).map_err(|e| Error::Internal(e.to_string()))?;
    write_atomic(&path, &json)?;
    eprintln!("saved {} metrics to {}", b.rows.len(), path.display());
    Ok(())
}
