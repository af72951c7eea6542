//! Arguments and helpers several subcommands share: the store/lock/data/cache arguments, `--only` filters, resolving a suite against them.

use std::path::{Path, PathBuf};

use clap::Args;

use crate::data::coop::data_root as data_root_or_env;
use crate::error::{Error, Result};
use crate::lock::Lock;
use crate::provenance::default_cache_dir;
use crate::resolve::ResolvedSuite;
use crate::suite::Suite;

#[derive(Args, Debug)]
pub struct SuiteArg {
    pub suite: PathBuf,
    /// The lock file that pins backbones.
    #[arg(long, default_value = "datasets.lock")]
    pub lock: PathBuf,
    /// CoOp's data folder (default: $GRAM_BENCH_DATA, else $DATA).
    #[arg(long)]
    pub data_root: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// Results store (one folder per suite inside).
    #[arg(long, default_value = "results")]
    pub store: PathBuf,
    /// Cache for built worlds (default: $GRAM_BENCH_CACHE, else ~/.cache/gram-bench).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// The lock file that pins backbones.
    #[arg(long, default_value = "datasets.lock")]
    pub lock: PathBuf,
    /// CoOp's data folder (default: $GRAM_BENCH_DATA, else $DATA).
    #[arg(long)]
    pub data_root: Option<PathBuf>,
}

/// A `FIELD=VALUE` of one of `fields` (what `kind` names in the message).
fn parse_field_filter(s: &str, fields: &[&str], kind: &str) -> std::result::Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: expected FIELD=VALUE"))?;
    if !fields.contains(&k) {
        return Err(format!("`{k}` is not {kind} (fields: {})", fields.join(", ")));
    }
    Ok((k.to_string(), v.to_string()))
}

/// A `--only FIELD=VALUE` of `run` and `plan`: a field of a cell.
pub(super) fn parse_filter(s: &str) -> std::result::Result<(String, String), String> {
    parse_field_filter(s, crate::suite::cells::FILTER_FIELDS, "a cell field")
}

/// A `--only FIELD=VALUE` of `check`: a field of a report row.
pub(super) fn parse_row_filter(s: &str) -> std::result::Result<(String, String), String> {
    parse_field_filter(s, crate::report::baseline::ROW_FILTER_FIELDS, "a field of a report row")
}

/// The suite resolved against the lock and data the store arguments name.
pub(super) fn resolve(suite: Suite, s: &StoreArgs) -> Result<ResolvedSuite> {
    ResolvedSuite::new(
        suite,
        &Lock::load(&s.lock)?,
        data_root_or_env(s.data_root.clone()).as_deref(),
    )
}

pub(super) fn cache_of(s: &StoreArgs) -> std::path::PathBuf {
    s.cache.clone().unwrap_or_else(default_cache_dir)
}

/// This binary's path, for the commands that run it again (a precision's cells, a device check's
/// parts, the Slurm tasks).
pub(super) fn this_binary() -> Result<PathBuf> {
    std::env::current_exe().map_err(|e| Error::Internal(format!("this binary's path: {e}")))
}

/// A word as a shell reads it back, for the commands a message tells the user to run.
pub(super) fn quote(w: &str) -> String {
    if !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c)) {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', "'\\''"))
    }
}

/// `program COMMAND SUITE` with the store arguments that differ from their defaults, shell-quoted:
/// the exact command for another step on the same store (`run` after `report`, and back).
pub(super) fn suite_command(command: &str, suite: &Path, s: &StoreArgs, extra: &[(&str, &Path)]) -> String {
    let program = std::env::args().next().unwrap_or_else(|| "gram-bench".into());
    let mut words = vec![program, command.to_string(), suite.display().to_string()];
    let mut flag = |name: &str, value: &Path| words.extend([name.to_string(), value.display().to_string()]);
    if s.store != Path::new("results") {
        flag("--store", &s.store);
    }
    if let Some(c) = &s.cache {
        flag("--cache", c);
    }
    if s.lock != Path::new("datasets.lock") {
        flag("--lock", &s.lock);
    }
    if let Some(d) = &s.data_root {
        flag("--data-root", d);
    }
    for (name, value) in extra {
        flag(name, value);
    }
    words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ")
}
