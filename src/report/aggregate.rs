//! From records to numbers: every slot of a suite's plan becomes one row of a polars DataFrame
//! (protocol, method, dataset, source, shots, seed, metric, value); aggregation groups by
//! everything but the seed. Spreads are sample standard deviations (ddof = 1; Dassl's
//! `parse_test_res.py` prints numpy's ddof = 0) and CI95 = t₀.₉₇₅(n − 1) · std / √n, Student's t as in
//! every paired table (none for one seed). Base-to-new harmonic
//! means and averages over datasets are computed here from the per-dataset means, never copied.

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use super::stats::t975;

use crate::error::{Error, Result};
use crate::store::{Status, Store};
use crate::suite::cells::Plan;
use crate::suite::RowId;
use crate::suite::{Metric, Protocol, Scope};

fn pe(e: PolarsError) -> Error {
    Error::Internal(format!("aggregation: {e}"))
}

/// One number of one seed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeedValue {
    #[serde(flatten)]
    pub id: RowId,
    pub seed: u64,
    pub value: f64,
}

/// Mean, spread and count of one metric over seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AggRow {
    #[serde(flatten)]
    pub id: RowId,
    pub n: usize,
    pub mean: f64,
    /// Sample std over seeds (ddof = 1); 0 when n = 1. None for derived rows (HM, averages).
    pub std: Option<f64>,
    /// Half-width of the mean's 95% Student-t interval; None for one seed and for derived rows.
    pub ci95: Option<f64>,
}

/// Status of the plan's slots in the store: (values, missing slots, failed slots).
pub fn collect(plan: &Plan, store: &Store) -> Result<(Vec<SeedValue>, Vec<String>, Vec<String>)> {
    let mut values = Vec::new();
    let (mut missing, mut failed) = (Vec::new(), Vec::new());
    for s in &plan.slots {
        let label = format!(
            "{} {} {} {}-shot seed {} {}",
            s.protocol.as_str(),
            s.method,
            s.dataset,
            s.shots,
            s.seed,
            s.metric
        );
        match store.get(&s.key)? {
            Some(r) if r.status == Status::Ok => {
                let m = r
                    .metrics
                    .ok_or_else(|| Error::Store(format!("record {} is ok but has no metrics", s.key)))?;
                values.push(SeedValue {
                    id: RowId {
                        protocol: s.protocol,
                        method: s.method.clone(),
                        dataset: Scope::Dataset(s.dataset.clone()),
                        source: s.source.clone(),
                        shots: s.shots,
                        metric: s.metric,
                    },
                    seed: s.seed,
                    value: m.accuracy,
                });
            }
            Some(_) => failed.push(label),
            None => missing.push(label),
        }
    }
    Ok((values, missing, failed))
}

/// The values as a frame; a row identity's fields become columns as files spell them (the
/// average as `average`, no source as ""), and [`row_ids`] reads them back.
pub(crate) fn to_frame(values: &[SeedValue]) -> Result<DataFrame> {
    df!(
        "protocol" => values.iter().map(|v| v.id.protocol.as_str()).collect::<Vec<_>>(),
        "method" => values.iter().map(|v| v.id.method.as_str()).collect::<Vec<_>>(),
        "dataset" => values.iter().map(|v| v.id.dataset.as_str()).collect::<Vec<_>>(),
        "source" => values.iter().map(|v| v.id.source.as_deref().unwrap_or("")).collect::<Vec<_>>(),
        "shots" => values.iter().map(|v| v.id.shots as i64).collect::<Vec<_>>(),
        "seed" => values.iter().map(|v| v.seed as i64).collect::<Vec<_>>(),
        "metric" => values.iter().map(|v| v.id.metric.as_str()).collect::<Vec<_>>(),
        "value" => values.iter().map(|v| v.value).collect::<Vec<_>>(),
    )
    .map_err(pe)
}

/// The row identities of a frame's rows, with `method` taken from the frame's `method` column or,
/// where the frame has none (a pairing's groups), from `method`.
pub(crate) fn row_ids(df: &DataFrame, method: Option<&str>) -> Result<Vec<RowId>> {
    let s = |name: &str| str_column(df, name);
    let (protocol, dataset, source, metric) = (s("protocol")?, s("dataset")?, s("source")?, s("metric")?);
    let methods = match method {
        Some(m) => vec![m.to_string(); df.height()],
        None => s("method")?,
    };
    let shots = f64_column(df, "shots")?;
    let bad = |what: &str, v: &str| Error::Internal(format!("a frame holds the {what} `{v}`"));
    (0..df.height())
        .map(|i| {
            Ok(RowId {
                protocol: Protocol::parse(&protocol[i]).ok_or_else(|| bad("protocol", &protocol[i]))?,
                method: methods[i].clone(),
                dataset: Scope::parse(&dataset[i]),
                source: (!source[i].is_empty()).then(|| source[i].clone()),
                shots: shots[i].unwrap_or(0.0) as usize,
                metric: Metric::parse(&metric[i]).ok_or_else(|| bad("metric", &metric[i]))?,
            })
        })
        .collect()
}

const KEYS: [&str; 6] = ["protocol", "method", "dataset", "source", "shots", "metric"];

/// A string column of `df` as owned strings (null → "").
pub(crate) fn str_column(df: &DataFrame, name: &str) -> Result<Vec<String>> {
    Ok(df
        .column(name)
        .map_err(pe)?
        .str()
        .map_err(pe)?
        .iter()
        .map(|v| v.unwrap_or_default().to_string())
        .collect())
}

/// A numeric column of `df` as f64.
pub(crate) fn f64_column(df: &DataFrame, name: &str) -> Result<Vec<Option<f64>>> {
    let c = df.column(name).map_err(pe)?.cast(&DataType::Float64).map_err(pe)?;
    Ok(c.f64().map_err(pe)?.iter().collect())
}

fn rows_of(df: &DataFrame, derived: bool) -> Result<Vec<AggRow>> {
    let f = |name: &str| f64_column(df, name);
    let (n, mean, std) = (f("n")?, f("mean")?, f("std")?);
    Ok(row_ids(df, None)?
        .into_iter()
        .enumerate()
        .map(|(i, id)| {
            let n_i = n[i].unwrap_or(0.0) as usize;
            let sd = if derived { None } else { Some(std[i].unwrap_or(0.0)) };
            AggRow {
                id,
                n: n_i,
                mean: mean[i].unwrap_or(f64::NAN),
                std: sd,
                ci95: sd.filter(|_| n_i > 1).map(|s| t975(n_i - 1) * s / (n_i as f64).sqrt()),
            }
        })
        .collect())
}

/// Per-dataset rows over seeds, plus derived rows: base-to-new HM per dataset, and per table the
/// average over datasets of every metric (HM of the averages for base-to-new, as the papers do).
pub fn aggregate(values: &[SeedValue]) -> Result<Vec<AggRow>> {
    if values.is_empty() {
        return Ok(Vec::new());
    }
    let df = to_frame(values)?;
    let by: Vec<Expr> = KEYS.iter().map(|k| col(*k)).collect();
    let per_dataset = df
        .clone()
        .lazy()
        .group_by(by.clone())
        .agg([
            col("value").count().alias("n"),
            col("value").mean().alias("mean"),
            // polars gives null for n = 1; a single seed has no spread to report.
            col("value").std(1).fill_null(lit(0.0)).alias("std"),
        ])
        .sort(KEYS.to_vec(), SortMultipleOptions::default())
        .collect()
        .map_err(pe)?;
    let mut rows = rows_of(&per_dataset, false)?;

    // Averages over the datasets of each (protocol, method, source, shots, metric).
    let avg = per_dataset
        .lazy()
        .group_by([
            col("protocol"),
            col("method"),
            col("source"),
            col("shots"),
            col("metric"),
        ])
        .agg([
            col("mean").mean().alias("mean"),
            col("n").min().alias("n"),
            col("dataset").n_unique().alias("k"),
        ])
        .with_column(lit(Scope::AVERAGE).alias("dataset"))
        .with_column(lit(NULL).cast(DataType::Float64).alias("std"))
        .sort(
            ["protocol", "method", "source", "shots", "metric"],
            SortMultipleOptions::default(),
        )
        .collect()
        .map_err(pe)?;
    let mut averages = rows_of(&avg, true)?;
    averages.retain(|r| r.id.averaged());
    rows.extend(averages);

    // Derived metrics (base-to-new's HM) of each row's means, averages included.
    let mut derived = Vec::new();
    for a in &rows {
        let Some((metric, [from, with], combine)) = a.id.protocol.derived() else {
            continue;
        };
        if a.id.metric != from {
            continue;
        }
        // The row that differs from this one in its metric only.
        let other = a.id.with_metric(with);
        if let Some(b) = rows.iter().find(|r| r.id == other) {
            derived.push(AggRow {
                id: a.id.with_metric(metric),
                n: a.n.min(b.n),
                mean: combine(a.mean, b.mean),
                std: None,
                ci95: None,
            });
        }
    }
    rows.extend(derived);
    Ok(rows)
}

/// The aggregate as CSV (no polars csv feature: it pulls a network stack).
pub(crate) fn to_csv(rows: &[AggRow]) -> String {
    let q = |s: &str| {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let opt = |v: Option<f64>| v.map(|x| format!("{x}")).unwrap_or_default();
    let mut out = String::from("protocol,method,dataset,source,shots,metric,n,mean,std_ddof1,ci95\n");
    for r in rows {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{}\n",
            q(r.id.protocol.as_str()),
            q(&r.id.method),
            q(r.id.dataset.as_str()),
            q(r.id.source.as_deref().unwrap_or("")),
            r.id.shots,
            q(r.id.metric.as_str()),
            r.n,
            r.mean,
            opt(r.std),
            opt(r.ci95)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::protocol::harmonic_mean;

    fn v(protocol: &str, dataset: &str, metric: &str, seed: u64, value: f64) -> SeedValue {
        SeedValue {
            id: RowId {
                protocol: Protocol::parse(protocol).unwrap(),
                method: "coop".into(),
                dataset: Scope::parse(dataset),
                source: None,
                shots: 16,
                metric: Metric::parse(metric).unwrap(),
            },
            seed,
            value,
        }
    }

    fn find<'a>(rows: &'a [AggRow], dataset: &str, metric: &str) -> &'a AggRow {
        rows.iter()
            .find(|r| r.id.dataset == dataset && r.id.metric.as_str() == metric)
            .unwrap()
    }

    #[test]
    fn mean_sample_std_and_ci95_over_seeds() {
        let rows = aggregate(&[
            v("few-shot", "a", "accuracy", 1, 70.0),
            v("few-shot", "a", "accuracy", 2, 72.0),
            v("few-shot", "a", "accuracy", 3, 77.0),
        ])
        .unwrap();
        let r = find(&rows, "a", "accuracy");
        assert_eq!(r.n, 3);
        assert!((r.mean - 73.0).abs() < 1e-12);
        // Deviations -3, -1, 4: sum of squares 26, ddof 1 → sqrt(13).
        assert!((r.std.unwrap() - 13f64.sqrt()).abs() < 1e-12);
        assert!((r.ci95.unwrap() - 4.303 * 13f64.sqrt() / 3f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn base_to_new_hm_is_of_the_means_and_the_average_hm_of_the_averages() {
        let rows = aggregate(&[
            v("base-to-new", "a", "base", 1, 80.0),
            v("base-to-new", "a", "base", 2, 90.0),
            v("base-to-new", "a", "new", 1, 60.0),
            v("base-to-new", "a", "new", 2, 70.0),
            v("base-to-new", "b", "base", 1, 50.0),
            v("base-to-new", "b", "new", 1, 100.0),
        ])
        .unwrap();
        assert!((find(&rows, "a", "hm").mean - harmonic_mean(85.0, 65.0)).abs() < 1e-12);
        assert!((find(&rows, "b", "hm").mean - 2.0 * 50.0 * 100.0 / 150.0).abs() < 1e-12);
        let (ab, an) = (find(&rows, "average", "base").mean, find(&rows, "average", "new").mean);
        assert!((ab - 67.5).abs() < 1e-12 && (an - 82.5).abs() < 1e-12);
        assert!((find(&rows, "average", "hm").mean - harmonic_mean(67.5, 82.5)).abs() < 1e-12);
        // The published CoOp average row: HM(82.69, 63.22) = 71.66.
        assert!((harmonic_mean(82.69, 63.22) - 71.66).abs() < 0.005);
        assert_eq!(find(&rows, "b", "base").std, Some(0.0));
    }

    #[test]
    fn transfer_averages_cover_targets_not_the_source() {
        let src = v("cross-domain", "world", "accuracy", 1, 90.0);
        let mut t1 = v("cross-domain", "sketch", "accuracy", 1, 40.0);
        t1.id.source = Some("world".into());
        let mut t2 = v("cross-domain", "clutter", "accuracy", 1, 60.0);
        t2.id.source = Some("world".into());
        let rows = aggregate(&[src, t1, t2]).unwrap();
        let avgs: Vec<&AggRow> = rows.iter().filter(|r| r.id.dataset.is_average()).collect();
        assert_eq!(avgs.len(), 1);
        assert!((avgs[0].mean - 50.0).abs() < 1e-12);
    }
}
