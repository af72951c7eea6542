//! GRAM's effect on its host (and any `[[compare]]` pair a suite declares) as paired differences
//! over seeds. A host cell and its GRAM cell with the same seed see the same few-shot images and
//! the same host seed, so each seed gives one difference Δ_s = GRAM − host; the table reports
//! mean Δ with a 95% Student-t interval
//! (n − 1 degrees of freedom: three seeds are too few for the normal 1.96) and says "helps" or
//! "hurts" only when that interval excludes 0. Averages over a table's datasets (targets only for
//! transfer) and base-to-new HMs are formed per seed first, so they are paired too.

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use super::aggregate::{f64_column, row_ids, to_frame, SeedValue};
use super::stats::t975;
use crate::error::{Error, Result};
use crate::suite::RowId;
use crate::suite::Scope;

fn pe(e: PolarsError) -> Error {
    Error::Internal(format!("paired differences: {e}"))
}

/// One comparison (a GRAM method against its host, or a declared pair) on one dataset and metric.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairRow {
    /// The row of the method compared (a GRAM method, or a `[[compare]]`'s `method`).
    #[serde(flatten)]
    pub id: RowId,
    /// The host, or what a `[[compare]]` compares against.
    pub against: String,
    /// Seeds both have.
    pub n: usize,
    pub against_mean: f64,
    pub method_mean: f64,
    pub delta: f64,
    /// Half-width of the 95% t interval of the mean Δ (None for one seed).
    pub ci95: Option<f64>,
}

impl PairRow {
    /// Δ with its interval half-width and seed count, as the report's tables print it.
    pub(crate) fn delta_cell(&self) -> String {
        match self.ci95 {
            Some(h) => format!("{:+.2} ± {h:.2} ({})", self.delta, self.n),
            None => format!("{:+.2} ({})", self.delta, self.n),
        }
    }

    pub fn verdict(&self) -> &'static str {
        match self.ci95 {
            Some(h) if self.delta - h > 0.0 => "helps",
            Some(h) if self.delta + h < 0.0 => "hurts",
            Some(_) => "no clear effect",
            None => "one seed: no interval",
        }
    }
}

/// Per-seed values plus per-seed averages over each table's averaged rows and the protocols'
/// derived metrics per seed (base-to-new's HM), by the rules of `suite/protocol.rs`.
pub(crate) fn with_derived(values: &[SeedValue]) -> Vec<SeedValue> {
    let mut all = values.to_vec();
    // Per table (the average's row) and seed, the values it averages.
    let mut tables: BTreeMap<(RowId, u64), Vec<f64>> = BTreeMap::new();
    for v in values.iter().filter(|v| v.id.averaged()) {
        let average = RowId {
            dataset: Scope::Average,
            ..v.id.clone()
        };
        tables.entry((average, v.seed)).or_default().push(v.value);
    }
    for ((id, seed), vals) in tables {
        all.push(SeedValue {
            id,
            seed,
            value: vals.iter().sum::<f64>() / vals.len() as f64,
        });
    }
    let mut derived = Vec::new();
    for a in &all {
        let Some((metric, [from, with], combine)) = a.id.protocol.derived() else {
            continue;
        };
        if a.id.metric == from {
            let partner = a.id.with_metric(with);
            if let Some(b) = all.iter().find(|b| b.id == partner && b.seed == a.seed) {
                derived.push(SeedValue {
                    id: a.id.with_metric(metric),
                    seed: a.seed,
                    value: combine(a.value, b.value),
                });
            }
        }
    }
    all.extend(derived);
    all
}

/// Paired rows for every `(against, method)` pair with values in the same table.
pub fn paired(values: &[SeedValue], pairs: &[(String, String)]) -> Result<Vec<PairRow>> {
    if values.is_empty() || pairs.is_empty() {
        return Ok(Vec::new());
    }
    let all = to_frame(&with_derived(values))?;
    let keys = ["protocol", "dataset", "source", "shots", "metric", "seed"];
    let on: Vec<Expr> = keys.iter().map(|c| col(*c)).collect();
    let mut out = Vec::new();
    for (host, method) in pairs {
        let side = |m: &str, name: &str| {
            all.clone().lazy().filter(col("method").eq(lit(m.to_string()))).select(
                keys.iter()
                    .map(|c| col(*c))
                    .chain([col("value").alias(name)])
                    .collect::<Vec<_>>(),
            )
        };
        let df = side(host, "h")
            .join(
                side(method, "g"),
                on.clone(),
                on.clone(),
                JoinArgs::new(JoinType::Inner),
            )
            .with_column((col("g") - col("h")).alias("d"))
            .group_by([
                col("protocol"),
                col("dataset"),
                col("source"),
                col("shots"),
                col("metric"),
            ])
            .agg([
                col("d").count().alias("n"),
                col("h").mean().alias("h"),
                col("g").mean().alias("g"),
                col("d").mean().alias("d"),
                col("d").std(1).alias("sd"),
            ])
            .sort(
                ["protocol", "source", "shots", "dataset", "metric"],
                SortMultipleOptions::default(),
            )
            .collect()
            .map_err(pe)?;
        let f = |name: &str| f64_column(&df, name);
        let (n, h, g, d, sd) = (f("n")?, f("h")?, f("g")?, f("d")?, f("sd")?);
        for (i, id) in row_ids(&df, Some(method))?.into_iter().enumerate() {
            let n_i = n[i].unwrap_or(0.0) as usize;
            out.push(PairRow {
                id,
                against: host.clone(),
                n: n_i,
                against_mean: h[i].unwrap_or(f64::NAN),
                method_mean: g[i].unwrap_or(f64::NAN),
                delta: d[i].unwrap_or(f64::NAN),
                ci95: (n_i > 1).then(|| t975(n_i - 1) * sd[i].unwrap_or(0.0) / (n_i as f64).sqrt()),
            });
        }
    }
    Ok(out)
}

/// The rows as CSV (values to 6 decimals: polars' grouped sums may differ in the last bits
/// between runs, and the file should not).
pub(crate) fn to_csv(rows: &[PairRow]) -> String {
    let mut out = String::from(
        "protocol,against,method,dataset,source,shots,metric,n,against_mean,method_mean,delta,ci95_t,verdict\n",
    );
    for r in rows {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{:.6},{:.6},{:.6},{},{}\n",
            r.id.protocol,
            r.against,
            r.id.method,
            r.id.dataset,
            r.id.source.as_deref().unwrap_or(""),
            r.id.shots,
            r.id.metric,
            r.n,
            r.against_mean,
            r.method_mean,
            r.delta,
            r.ci95.map(|c| format!("{c:.6}")).unwrap_or_default(),
            r.verdict()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::suite::{Metric, Protocol};

    fn v(protocol: &str, method: &str, dataset: &str, metric: &str, seed: u64, value: f64) -> SeedValue {
        SeedValue {
            id: RowId {
                protocol: Protocol::parse(protocol).unwrap(),
                method: method.into(),
                dataset: Scope::parse(dataset),
                source: None,
                shots: 4,
                metric: Metric::parse(metric).unwrap(),
            },
            seed,
            value,
        }
    }

    #[test]
    fn student_t_quantiles() {
        assert_eq!(t975(2), 4.303);
        assert!((t975(31) - 2.0395).abs() < 1e-3);
        assert!((t975(120) - 1.9799).abs() < 1e-3);
        assert!((t975(100_000) - 1.96).abs() < 1e-3);
    }

    #[test]
    fn differences_are_paired_by_seed_with_a_t_interval() {
        // Seeds differ a lot from each other but GRAM adds 1.9, 2.0, 2.1: paired, the interval is
        // 2 ± t(2)·0.1/√3, although the unpaired spreads overlap completely.
        let mut vals = Vec::new();
        for (s, base) in [(1u64, 10.0), (2, 30.0), (3, 50.0)] {
            vals.push(v("few-shot", "host", "a", "accuracy", s, base));
            vals.push(v("few-shot", "gram", "a", "accuracy", s, base + 1.8 + 0.1 * s as f64));
            vals.push(v("few-shot", "host", "b", "accuracy", s, 20.0));
            vals.push(v("few-shot", "gram", "b", "accuracy", s, 20.0));
        }
        // A seed only the host has is not paired.
        vals.push(v("few-shot", "host", "a", "accuracy", 4, 99.0));
        let rows = paired(&vals, &[("host".into(), "gram".into())]).unwrap();
        let a = rows.iter().find(|r| r.id.dataset == "a").unwrap();
        assert_eq!(a.n, 3);
        assert!((a.delta - 2.0).abs() < 1e-12);
        assert!((a.against_mean - 30.0).abs() < 1e-12);
        assert!((a.ci95.unwrap() - 4.303 * 0.1 / 3f64.sqrt()).abs() < 1e-9);
        assert_eq!(a.verdict(), "helps");
        let b = rows.iter().find(|r| r.id.dataset == "b").unwrap();
        assert_eq!((b.delta, b.ci95, b.verdict()), (0.0, Some(0.0), "no clear effect"));
        // The average over datasets is paired per seed: Δ_s = (1.8 + 0.1 s) / 2.
        let avg = rows.iter().find(|r| r.id.dataset.is_average()).unwrap();
        assert!((avg.delta - 1.0).abs() < 1e-12);
        assert!((avg.ci95.unwrap() - 4.303 * 0.05 / 3f64.sqrt()).abs() < 1e-9);
        // A Δ that varies with the seed (1, 2, 3) has an interval reaching below 0 at n = 3.
        let mut wide = vals.clone();
        for x in wide.iter_mut().filter(|x| x.id.method == "gram" && x.id.dataset == "a") {
            x.value += (x.seed as f64 - 2.0) * 0.9;
        }
        let w = paired(&wide, &[("host".into(), "gram".into())]).unwrap();
        assert_eq!(
            w.iter().find(|r| r.id.dataset == "a").unwrap().verdict(),
            "no clear effect"
        );
    }

    #[test]
    fn base_to_new_hm_is_formed_per_seed_and_a_loss_is_a_loss() {
        let mut vals = Vec::new();
        for s in 1..=3u64 {
            let e = s as f64 * 0.1;
            vals.push(v("base-to-new", "host", "a", "base", s, 60.0 + e));
            vals.push(v("base-to-new", "host", "a", "new", s, 40.0 - e));
            vals.push(v("base-to-new", "gram", "a", "base", s, 50.0 + e));
            vals.push(v("base-to-new", "gram", "a", "new", s, 30.0 - e));
        }
        let rows = paired(&vals, &[("host".into(), "gram".into())]).unwrap();
        let hm = rows
            .iter()
            .find(|r| r.id.dataset == "a" && r.id.metric == Metric::Hm)
            .unwrap();
        let hm_of = |b: f64, n: f64| 2.0 * b * n / (b + n);
        let want: f64 = (1..=3)
            .map(|s| {
                let e = s as f64 * 0.1;
                hm_of(50.0 + e, 30.0 - e) - hm_of(60.0 + e, 40.0 - e)
            })
            .sum::<f64>()
            / 3.0;
        assert!((hm.delta - want).abs() < 1e-9);
        assert_eq!(hm.verdict(), "hurts");
        assert!(rows
            .iter()
            .any(|r| r.id.dataset.is_average() && r.id.metric == Metric::Hm));
    }
}
