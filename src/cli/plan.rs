//! `gram-bench plan`: every cell done / missing / failed, and (`estimate`) the estimated time of
//! each and of the rest.

use std::path::PathBuf;

use clap::Args;

use burn::tensor::backend::Backend;

use crate::backend::{dispatch, BackendKind, WithBackend};
use crate::clip::ClipConfig;
use crate::device_check::{DeviceReport, Throughput};
use crate::error::{Error, Result};
use crate::estimate::{backbone_config, calibrate, PassCounter, PassTimes};
use crate::lock::Lock;
use crate::report::markdown_table;
use crate::resolve::ResolvedSuite;
use crate::run::cell_label;
use crate::store::{Status, Store};
use crate::suite::Suite;

use super::common::*;

#[derive(Args, Debug)]
pub struct PlanArgs {
    pub suite: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Only cells matching FIELD=VALUE (fields: method, dataset, target, phase, shots, seed; repeatable).
    #[arg(long, value_parser = parse_filter)]
    pub only: Vec<(String, String)>,
    /// Estimate each cell's time from the four encoder passes measured now on this backend, at the
    /// suite's backbone and default precision (random weights; seconds to a minute).
    #[arg(long, conflicts_with_all = ["rates", "tflops"])]
    pub estimate_on: Option<BackendKind>,
    /// Estimate from a `device-check` JSON's encoder rows (ViT-B/16, the suite's default precision).
    #[arg(long, conflicts_with = "tflops")]
    pub rates: Option<PathBuf>,
    /// Estimate at an assumed effective throughput (TFLOP/s) for every pass.
    #[arg(long)]
    pub tflops: Option<f64>,
    /// Images (and prompts) per calibration batch for --estimate-on.
    #[arg(long, default_value_t = 32)]
    pub calibration_batch: usize,
}

/// Where an estimate's pass times came from.
struct Pricing {
    times: PassTimes,
    /// Said after the total: the rate's source and whether its hours are a GPU's.
    source: String,
    gpu: bool,
}

struct Calibrate<'a>(&'a ClipConfig, usize);

impl WithBackend for Calibrate<'_> {
    type Output = Result<PassTimes>;
    fn run<B: Backend>(self, device: B::Device) -> Result<PassTimes> {
        calibrate::<B>(self.0, self.1, 3, &device)
    }
}

/// The longest time one measured batch of a device-check report may take (a day): beyond it the
/// row is damaged, not slow.
const MAX_ROW_SECONDS: f64 = 86_400.0;

/// A device-check encoder row's seconds per item, refused unless a run can be priced at it.
fn seconds_per_item(row: &Throughput) -> std::result::Result<f64, String> {
    if row.items == 0 {
        return Err(format!("encoder row `{}` measured 0 items", row.what));
    }
    if !(row.seconds.is_finite() && row.seconds > 0.0 && row.seconds <= MAX_ROW_SECONDS) {
        return Err(format!(
            "encoder row `{}` took {} s; a measured time is positive and at most {MAX_ROW_SECONDS} s",
            row.what, row.seconds
        ));
    }
    Ok(row.seconds / row.items as f64)
}

fn pricing(a: &PlanArgs, resolved: &ResolvedSuite) -> Result<Option<Pricing>> {
    let precision = resolved.suite.precision.default;
    if let Some(t) = a.tflops {
        if t.is_nan() || t <= 0.0 {
            return Err(Error::Input("--tflops must be positive".into()));
        }
        return Ok(Some(Pricing {
            times: PassTimes::at_tflops(&backbone_config(resolved)?, t),
            source: format!("at an assumed {t} TFLOP/s for every pass"),
            gpu: true,
        }));
    }
    if let Some(path) = &a.rates {
        let cfg = backbone_config(resolved)?;
        if cfg != ClipConfig::vit_b_16() {
            return Err(Error::Input(format!(
                "--rates: device-check measures ViT-B/16, and suite `{}`'s backbone is another; use --estimate-on",
                resolved.suite.name
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let r: DeviceReport = serde_json::from_str(&text)
            .map_err(|e| Error::Input(format!("{}: not a device-check report: {e}", path.display())))?;
        let run = r.runs.iter().find(|run| run.precision == precision).ok_or_else(|| {
            Error::Input(format!(
                "{}: no measurements at {precision}, the suite's precision (run device-check with --precision {precision})",
                path.display()
            ))
        })?;
        let rows = match &run.encoders[..] {
            [i, t, ib, tb] => [i, t, ib, tb],
            _ => {
                return Err(Error::Input(format!(
                    "{}: its encoder part was skipped",
                    path.display()
                )))
            }
        };
        let mut per_item = [0.0; 4];
        for (slot, row) in per_item.iter_mut().zip(rows) {
            *slot = seconds_per_item(row).map_err(|why| Error::Input(format!("{}: {why}", path.display())))?;
        }
        let [i, t, ib, tb] = per_item;
        return Ok(Some(Pricing {
            times: PassTimes {
                image_forward: i,
                image_backward: ib,
                text_forward: t,
                text_backward: tb,
            },
            source: format!(
                "at the rates {} measured on {} ({precision})",
                path.display(),
                r.backend
            ),
            gpu: r.backend != "cpu",
        }));
    }
    let Some(backend) = a.estimate_on else { return Ok(None) };
    if a.calibration_batch == 0 {
        return Err(Error::Input("--calibration-batch must be positive".into()));
    }
    let cfg = backbone_config(resolved)?;
    eprintln!(
        "calibrating the encoder passes of `{}` on {backend} at {precision}, batch {}",
        resolved.suite.backbone.name, a.calibration_batch
    );
    let times = dispatch(backend, precision, Calibrate(&cfg, a.calibration_batch))??;
    Ok(Some(Pricing {
        times,
        source: format!(
            "on {backend} at {precision} (calibrated now, batch {}, {} threads)",
            a.calibration_batch,
            rayon::current_num_threads()
        ),
        gpu: backend != BackendKind::Cpu,
    }))
}

fn duration(s: f64) -> String {
    match s {
        s if s < 90.0 => format!("{s:.1} s"),
        s if s < 5400.0 => format!("{:.1} min", s / 60.0),
        s => format!("{:.1} h", s / 3600.0),
    }
}

pub fn plan(a: &PlanArgs) -> Result<()> {
    let suite = Suite::load(&a.suite)?;
    let estimating = a.estimate_on.is_some() || a.rates.is_some() || a.tflops.is_some();
    // For an estimate, a suite whose data or backbone pin is not here is still counted (from the
    // published dataset sizes), under placeholder keys.
    let (resolved, unresolved) = match resolve(suite.clone(), &a.store) {
        Ok(r) => (r, None),
        Err(e) if estimating => {
            eprintln!("note: {e}");
            (
                ResolvedSuite::unresolved(suite, Lock::load(&a.store.lock).unwrap_or_default()),
                Some(e),
            )
        }
        Err(e) => return Err(e),
    };
    let pricing = pricing(a, &resolved)?;
    let store = Store::open_read(&a.store.store, &resolved.suite.name);
    let cells = resolved.plan.select(&a.only)?;
    let mut counter = PassCounter::new(&resolved);
    let mut rows = Vec::new();
    let (mut done, mut missing, mut failed) = (0, 0, 0);
    let (mut est_left, mut est_done, mut recorded_done) = (0.0, 0.0, 0.0);
    for c in &cells {
        let r = match unresolved {
            None => store.get(&c.key)?,
            Some(_) => None,
        };
        let seconds = pricing.as_ref().map(|p| counter.passes(c).seconds(&p.times));
        let status = match r.as_ref().map(|r| r.status) {
            Some(Status::Ok) => {
                done += 1;
                if let (Some(s), Some(r)) = (seconds, &r) {
                    est_done += s;
                    recorded_done += r.timings.train_s + r.timings.eval_s;
                }
                "done"
            }
            Some(Status::Failed) => {
                failed += 1;
                est_left += seconds.unwrap_or(0.0);
                "FAILED"
            }
            None => {
                missing += 1;
                est_left += seconds.unwrap_or(0.0);
                if unresolved.is_some() {
                    "unresolved"
                } else {
                    "missing"
                }
            }
        };
        let mut row = vec![
            if unresolved.is_some() {
                "—".to_string()
            } else {
                c.key[..12].to_string()
            },
            cell_label(c),
            c.spec.phase.as_str().to_string(),
            status.to_string(),
        ];
        if let Some(s) = seconds {
            row.push(duration(s));
        }
        rows.push(row);
    }
    let mut header = vec!["Key", "Cell", "Phase", "Status"];
    if pricing.is_some() {
        header.push("Estimate");
    }
    println!("{}", markdown_table(&header, rows));
    println!(
        "\n{} cells: {done} done, {missing} missing, {failed} failed.",
        cells.len()
    );
    if unresolved.is_some() {
        println!("The suite's inputs are not resolved here (see the note above): keys and statuses are unknown; dataset sizes are the published ones.");
    }
    match &pricing {
        Some(p) => {
            println!(
                "Estimated time of the {} cells left: {est_left:.0} s ({}) = {:.2} {}-hours {}.",
                missing + failed,
                duration(est_left),
                est_left / 3600.0,
                if p.gpu { "GPU" } else { "CPU" },
                p.source
            );
            if done > 0 && recorded_done > 0.0 {
                println!(
                    "On the {done} finished cells the model says {}, their records {} (×{:.2}).",
                    duration(est_done),
                    duration(recorded_done),
                    est_done / recorded_done
                );
            }
        }
        None => println!("For time estimates: --estimate-on BACKEND, --rates DEVICE_CHECK.json or --tflops X."),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(items: usize, seconds: f64) -> Throughput {
        Throughput {
            what: "image forward".into(),
            items,
            seconds,
            gflops: 1.0,
            tflops_per_s: 1.0,
            of_peak: None,
        }
    }

    #[test]
    fn a_device_check_row_prices_only_a_measured_time() {
        assert_eq!(seconds_per_item(&row(4, 2.0)), Ok(0.5));
        for (items, seconds) in [
            (0, 1.0),
            (4, 0.0),
            (4, -1.0),
            (4, f64::NAN),
            (4, f64::INFINITY),
            (4, 1e9),
        ] {
            let why = seconds_per_item(&row(items, seconds)).unwrap_err();
            assert!(why.contains("image forward"), "{why}");
        }
    }
}
