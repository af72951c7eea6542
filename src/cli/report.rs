//! `gram-bench report`: a suite's records aggregated into `reports/<suite>/`.

use std::path::{Path, PathBuf};

use clap::Args;

use crate::error::{Error, Result};
use crate::report::aggregate::aggregate;
use crate::report::compare::{compare, to_markdown as compare_markdown};
use crate::report::figures::{markdown as figures_markdown, render_compare, Run};
use crate::report::{gather, published_tables, render_markdown, write_report};
use crate::resolve::ResolvedSuite;
use crate::store::Store;
use crate::suite::Suite;

use super::common::*;

#[derive(Args, Debug)]
pub struct ReportArgs {
    pub suite: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Where reports go.
    #[arg(long, default_value = "reports")]
    pub out: PathBuf,
    /// Another store to compare this one with (two commits, backends, precisions, machines):
    /// values paired by table row and seed, written with overlaid figures to compare/ beside the report.
    #[arg(long)]
    pub compare: Option<PathBuf>,
    /// The suite whose records `--compare` reads (default: this one), e.g. this table at another
    /// precision, whose cells have other keys.
    #[arg(long, requires = "compare")]
    pub compare_suite: Option<PathBuf>,
}

pub(super) fn world_note(suite: &Suite, cache: &Path) -> String {
    let Some(w) = &suite.world else {
        return String::new();
    };
    match crate::world::build::cached_world(cache, w).map(|a| a.manifest) {
        Some(m) => format!(
            "Embedded world `{}` (micro-CLIP width {}, {} layers, {} px / patch {}, pretrained {} steps, {}): zero-shot \
             accuracy on colour–shape pairs held out of pretraining {:.1}% (pairs seen {:.1}%, chance 1.6%; photo: colour \
             {:.1}%, shape {:.1}%); all pairs by domain: {}.",
            m.key,
            w.width,
            w.layers,
            w.image_size,
            w.patch_size,
            m.pretrain.steps,
            match m.micro_clip {
                crate::world::build::WeightsSource::Pinned => "the pinned weights",
                crate::world::build::WeightsSource::Pretrained => "pretrained on this machine",
            },
            m.pretrain.held_out_pairs_acc,
            m.pretrain.seen_pairs_acc,
            m.pretrain.photo_colour_acc,
            m.pretrain.photo_shape_acc,
            m.pretrain
                .domain_acc
                .iter()
                .map(|(d, a)| format!("{d} {a:.1}%"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => "Embedded world (not built in this cache).".into(),
    }
}

pub fn report(a: &ReportArgs) -> Result<()> {
    let resolved = resolve(Suite::load(&a.suite)?, &a.store)?;
    match write_suite_report(&resolved, &a.suite, &a.store, &a.out, a.compare.is_none())? {
        SuiteReport::NothingFinished => return Err(nothing_finished(&resolved, &a.suite, &a.store)),
        // A report of part of a suite is still a report: say what it leaves out and what fills it.
        SuiteReport::Written { missing, failed } if missing + failed > 0 => eprintln!(
            "left: the report leaves out {missing} cells with no record and {failed} failed ones; `{}` computes them",
            suite_command("run", &a.suite, &a.store, &[])
        ),
        SuiteReport::Written { .. } => {}
    }
    let Some(other_store) = &a.compare else {
        return Ok(());
    };
    let other_suite = a.compare_suite.as_ref().unwrap_or(&a.suite);
    let other_args = StoreArgs {
        store: other_store.clone(),
        ..a.store.clone()
    };
    let other = resolve(Suite::load(other_suite)?, &other_args)?;
    let values = |r: &ResolvedSuite, store: &Path| -> Result<Vec<crate::report::aggregate::SeedValue>> {
        Ok(crate::report::aggregate::collect(&r.plan, &Store::open_read(store, &r.suite.name))?.0)
    };
    let (this_values, other_values) = (values(&resolved, &a.store.store)?, values(&other, other_store)?);
    if other_values.is_empty() {
        return Err(Error::Input(format!(
            "no finished cells of suite `{}` in {} to compare with",
            other.suite.name,
            other_store.display()
        )));
    }
    let (rows, unpaired) = compare(&this_values, &other_values);
    let (this_label, other_label) = run_labels(&a.store.store, other_store);
    // Its own folder: a later plain `report` replaces the report's figures, not these.
    let dir = a.out.join(&resolved.suite.name).join("compare");
    let (this_rows, other_rows) = (aggregate(&this_values)?, aggregate(&other_values)?);
    let figures = render_compare(
        &resolved.suite,
        [
            Run {
                label: &this_label,
                rows: &this_rows,
            },
            Run {
                label: &other_label,
                rows: &other_rows,
            },
        ],
        &rows,
        &published_tables(&resolved.suite)?,
    )?;
    let md = compare_markdown(&rows, unpaired, &this_label, &other_label) + &figures_markdown(&figures);
    let files = vec![
        ("compare.md".to_string(), md.clone().into_bytes()),
        (
            "compare.json".to_string(),
            crate::report::pretty_json("compare", &rows)?,
        ),
    ];
    crate::report::write_files(&dir, files, &figures)?;
    println!("{md}");
    eprintln!(
        "wrote {} (compare.json and {} figures beside it)",
        dir.join("compare.md").display(),
        figures.len()
    );
    Ok(())
}

/// Names for two stores in tables and legends: their folder names, or the paths as given when the
/// folder names are the same (`a/results` against `b/results`).
fn run_labels(this: &Path, other: &Path) -> (String, String) {
    let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    match (name(this), name(other)) {
        (Some(a), Some(b)) if a != b => (a, b),
        _ => (this.display().to_string(), other.display().to_string()),
    }
}

/// What [`write_suite_report`] did.
pub(super) enum SuiteReport {
    /// Written, leaving out the cells with no record and the failed ones.
    Written { missing: usize, failed: usize },
    /// The store holds no finished cell of the suite: there is nothing to report yet.
    NothingFinished,
}

/// The error for a report of a suite with no finished cells.
pub(super) fn nothing_finished(resolved: &ResolvedSuite, suite_path: &Path, store: &StoreArgs) -> Error {
    Error::Input(format!(
        "no finished cells of suite `{}` in {}: run `{}` first",
        resolved.suite.name,
        store.store.display(),
        suite_command("run", suite_path, store, &[])
    ))
}

pub(super) fn write_suite_report(
    resolved: &ResolvedSuite,
    suite_path: &Path,
    store: &StoreArgs,
    out: &Path,
    print: bool,
) -> Result<SuiteReport> {
    let suite = &resolved.suite;
    let records = Store::open_read(&store.store, &suite.name);
    let data = gather(&resolved.plan, &records, suite)?;
    if data.values.is_empty() {
        return Ok(SuiteReport::NothingFinished);
    }
    let published = published_tables(suite)?;
    let figures = crate::report::figures::render(suite, &data, &published)?;
    let md = render_markdown(
        suite,
        suite_path,
        &data,
        &published,
        &world_note(suite, &cache_of(store)),
    ) + &crate::report::figures::markdown(&figures);
    let path = write_report(out, suite, &md, &data, &figures)?;
    if print {
        println!("{md}");
    }
    eprintln!("wrote {} (and aggregate.csv, aggregate.json beside it)", path.display());
    Ok(SuiteReport::Written {
        missing: data.missing.len(),
        failed: data.failed.len(),
    })
}
