//! `gram-bench plan`: every cell done / missing / failed, and the estimated time for the rest.

use std::path::PathBuf;

use clap::Args;

use crate::data::{subsample_labels, Subsample};
use crate::error::Result;
use crate::report::markdown_table;
use crate::resolve::ResolvedSuite;
use crate::run::cell_label;
use crate::store::{Status, Store};
use crate::suite::cells::Phase;
use crate::suite::Suite;
use crate::world::world_dataset;

use super::common::*;

#[derive(Args, Debug)]
pub struct PlanArgs {
    pub suite: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Only cells matching FIELD=VALUE (fields: method, dataset, target, phase, shots, seed; repeatable).
    #[arg(long, value_parser = parse_filter)]
    pub only: Vec<(String, String)>,
}

/// Rough work of a cell: (training images processed, test images scored), from the datasets'
/// sizes (the embedded ones by definition, the others as read to key the cells).
pub(super) fn work_of(resolved: &ResolvedSuite, c: &crate::suite::cells::Cell) -> (usize, usize) {
    let (suite, s) = (&resolved.suite, &c.spec);
    let count = |items: &[crate::data::Datum], labels: &[usize], cap: usize| -> usize {
        labels
            .iter()
            .map(|l| items.iter().filter(|d| d.label == *l).count().min(cap))
            .sum()
    };
    // (training images per epoch at `shots`, test images) of a dataset's `which` half.
    let sizes = |name: &str, which: Subsample, shots: usize| -> (usize, usize) {
        if let Some(d) = resolved.inputs.datasets.get(name) {
            let labels = subsample_labels(d.classnames.len(), which);
            return (count(&d.train, &labels, shots), count(&d.test, &labels, usize::MAX));
        }
        world_dataset(name).map_or((0, 0), |d| {
            let n = subsample_labels(d.classes().len(), which).len();
            let test = suite
                .world
                .as_ref()
                .and_then(|w| w.test_images)
                .map_or(0, |t| d.test_per_class(t));
            (n * d.per_class[0].min(shots), n * test)
        })
    };
    let Some(mc) = suite.methods.get(&s.method) else {
        // A meta-training cell: its cost is not in images of a dataset.
        return (0, 0);
    };
    let train = match (s.phase, suite.trained_as(mc).training()) {
        (Phase::Train, crate::methods::Training::Sgd(t)) => {
            t.epochs.resolve(&s.dataset, s.shots).unwrap_or(0) * sizes(&s.dataset, s.train_classes, s.shots).0
        }
        _ => 0,
    };
    let target = s.target.as_deref().unwrap_or(&s.dataset);
    (train, sizes(target, s.target_classes, 0).1)
}

pub fn plan(a: &PlanArgs) -> Result<()> {
    let resolved = resolve(Suite::load(&a.suite)?, &a.store)?;
    let store = Store::open_read(&a.store.store, &resolved.suite.name);
    let cells = resolved.plan.select(&a.only)?;
    // Seconds per training image and per test image, measured from this store's records.
    let (mut train_s, mut train_n, mut eval_s, mut eval_n) = (0.0, 0usize, 0.0, 0usize);
    let mut statuses = Vec::new();
    for c in &cells {
        let r = store.get(&c.key)?;
        if let Some(r) = &r {
            if r.status == Status::Ok {
                if let Some(t) = &r.train {
                    train_s += r.timings.train_s;
                    train_n += t.epochs * t.images;
                }
                if let Some(m) = &r.metrics {
                    eval_s += r.timings.eval_s;
                    eval_n += m.total;
                }
            }
        }
        statuses.push(r.map(|r| r.status));
    }
    let (per_train, per_eval, measured) = if train_n > 0 && eval_n > 0 {
        (train_s / train_n as f64, eval_s / eval_n as f64, true)
    } else {
        // Defaults measured for the micro-CLIP on 2 CPU cores (README, "Performance").
        (0.0006, 0.0004, false)
    };
    let mut rows = Vec::new();
    let (mut done, mut missing, mut failed, mut est) = (0, 0, 0, 0.0);
    for (c, st) in cells.iter().zip(&statuses) {
        let (tr, ev) = work_of(&resolved, c);
        let status = match st {
            Some(Status::Ok) => {
                done += 1;
                "done".to_string()
            }
            Some(Status::Failed) => {
                failed += 1;
                est += tr as f64 * per_train + ev as f64 * per_eval;
                "FAILED".to_string()
            }
            None => {
                missing += 1;
                est += tr as f64 * per_train + ev as f64 * per_eval;
                "missing".to_string()
            }
        };
        rows.push(vec![
            c.key[..12].to_string(),
            cell_label(c),
            c.spec.phase.as_str().to_string(),
            status,
        ]);
    }
    println!("{}", markdown_table(&["Key", "Cell", "Phase", "Status"], rows));
    println!(
        "\n{} cells: {done} done, {missing} missing, {failed} failed. Estimated time for the rest: {:.0} s on this machine's CPU \
         ({}), plus a one-time world build if it is not cached.",
        cells.len(),
        est,
        if measured { "from this store's timings" } else { "default per-image costs; no finished cells to measure yet" }
    );
    Ok(())
}
