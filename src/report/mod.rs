//! Reports: the aggregate of a suite's records (CSV and JSON) and a markdown report with, per
//! table, the reproduced mean ± std (n) beside the published number, Δ and a verdict, the per-seed
//! detail, and the commands that reproduce it.

pub mod aggregate;
pub mod baseline;
pub mod check_export;
pub mod compare;
pub mod figures;
pub mod findings;
pub mod forest;
pub mod gram_budget;
pub mod gram_figures;
pub mod host_gain;
pub mod markdown;
pub mod paired;
pub mod paper_layout;
pub mod plot;
pub mod stats;
pub mod table;

pub(crate) use markdown::render_markdown;
pub(crate) use table::markdown_table;

use std::path::{Path, PathBuf};

use self::aggregate::{aggregate, collect, to_csv, AggRow, SeedValue};
use self::baseline::{load_published, PublishedTable};
use self::paired::PairRow;
use crate::error::{Error, Result};
use crate::files::write_atomic;
use crate::store::Store;
use crate::suite::cells::Plan;
use crate::suite::Suite;

/// Everything a report is made from.
pub struct ReportData {
    pub values: Vec<SeedValue>,
    pub rows: Vec<AggRow>,
    /// GRAM methods against their hosts and the suite's `[[compare]]` pairs, paired by seed.
    pub paired: Vec<PairRow>,
    /// The suite's `[[finding]]`s, judged.
    pub findings: Vec<findings::FindingResult>,
    /// GRAM's Δ against its meta-training budget (steps × corpus size).
    pub budget: Vec<gram_budget::BudgetPoint>,
    /// GRAM's Δ beside its host's own gain over zero-shot.
    pub host_gains: Vec<host_gain::HostGain>,
    pub missing: Vec<String>,
    pub failed: Vec<String>,
}

pub(crate) fn gather(plan: &Plan, store: &Store, suite: &Suite) -> Result<ReportData> {
    let (values, missing, failed) = collect(plan, store)?;
    let rows = aggregate(&values)?;
    let mut pairs: Vec<(String, String)> = suite
        .methods
        .iter()
        .filter_map(|(name, m)| match m {
            crate::suite::methods::MethodConfig::Gram(g) => Some((g.host.clone(), name.clone())),
            _ => None,
        })
        .collect();
    for c in &suite.comparisons {
        let pair = (c.against.clone(), c.method.clone());
        if !pairs.contains(&pair) {
            pairs.push(pair);
        }
    }
    let paired = paired::paired(&values, &pairs)?;
    let findings = findings::judge(&suite.findings, &values);
    let budget = gram_budget::budget_points(suite, &paired);
    let host_gains = host_gain::host_gains(suite, &paired);
    Ok(ReportData {
        values,
        rows,
        paired,
        findings,
        budget,
        host_gains,
        missing,
        failed,
    })
}

/// Loads the published tables a suite names (paths relative to the working directory).
pub(crate) fn published_tables(suite: &Suite) -> Result<Vec<PublishedTable>> {
    suite.published.iter().map(|p| load_published(Path::new(p))).collect()
}

/// A report's files, by name under its folder, as the renderers made them.
pub(crate) type ReportFiles = Vec<(String, Vec<u8>)>;

/// Writes `report.md`, `aggregate.csv`, `aggregate.json` and the figures (and `gram_delta.csv` for
/// suites with GRAM methods, `findings.json` for suites with findings) under `out/<suite>/`.
pub(crate) fn write_report(
    out: &Path,
    suite: &Suite,
    markdown: &str,
    data: &ReportData,
    figures: &[figures::Figure],
) -> Result<PathBuf> {
    let (rows, pairs) = (&data.rows, &data.paired);
    let mut files: ReportFiles = vec![
        ("report.md".into(), markdown.as_bytes().to_vec()),
        ("aggregate.csv".into(), to_csv(rows).into_bytes()),
        ("aggregate.json".into(), pretty_json("aggregate", rows)?),
    ];
    if !data.findings.is_empty() {
        files.push(("findings.json".into(), pretty_json("findings", &data.findings)?));
    }
    if !pairs.is_empty() {
        files.push(("gram_delta.csv".into(), paired::to_csv(pairs).into_bytes()));
    }
    let dir = out.join(&suite.name);
    write_files(&dir, files, figures)?;
    Ok(dir.join("report.md"))
}

/// The one place a report reaches the disk: `files` and `figures` under `dir`, each written
/// atomically, and the figures (`*.svg`) an earlier report left there that this one no longer has
/// removed.
pub(crate) fn write_files(dir: &Path, files: ReportFiles, figures: &[figures::Figure]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    for (name, bytes) in files {
        write_atomic(&dir.join(name), &bytes)?;
    }
    for f in figures {
        write_atomic(&dir.join(&f.file), f.svg.as_bytes())?;
    }
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".svg") && !figures.iter().any(|f| f.file == name) {
            std::fs::remove_file(e.path()).map_err(|err| Error::io(&e.path(), err))?;
        }
    }
    Ok(())
}

/// `value` as pretty JSON (`what` names it in an error).
pub(crate) fn pretty_json<T: serde::Serialize + ?Sized>(what: &str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(value).map_err(|e| Error::Internal(format!("{what}: {e}")))
}
