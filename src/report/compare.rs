//! Run against run: the same table from two stores (two commits, two backends, f32 against f16, a
//! laptop against a cluster), paired seed by seed. Values pair by what they are — protocol, method,
//! dataset, source, shots, metric and seed — which is the cell key's identity when the two runs
//! share keys, and still pairs them when a setting outside the table (precision, backend) made the
//! keys differ.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::aggregate::SeedValue;
use super::markdown_table;
use super::stats::mean_ci95;
use crate::suite::RowId;

/// One table row of both runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompareRow {
    #[serde(flatten)]
    pub id: RowId,
    /// Seeds both runs have.
    pub n: usize,
    pub this_mean: f64,
    pub other_mean: f64,
    /// Mean over seeds of this − other.
    pub delta: f64,
    /// Half-width of the 95% t interval of the mean Δ (None for one seed).
    pub ci95: Option<f64>,
    /// Seeds whose two values are bit-identical.
    pub identical: usize,
}

/// The rows both runs have, paired by seed; and how many values only one of them has.
pub fn compare(this: &[SeedValue], other: &[SeedValue]) -> (Vec<CompareRow>, usize) {
    let index = |vs: &[SeedValue]| -> BTreeMap<(RowId, u64), f64> {
        vs.iter().map(|v| ((v.id.clone(), v.seed), v.value)).collect()
    };
    let (a, b) = (index(this), index(other));
    let mut groups: BTreeMap<RowId, Vec<(f64, f64)>> = BTreeMap::new();
    for (k, x) in &a {
        if let Some(y) = b.get(k) {
            groups.entry(k.0.clone()).or_default().push((*x, *y));
        }
    }
    let paired: usize = groups.values().map(Vec::len).sum();
    let unpaired = a.len() + b.len() - 2 * paired;
    let rows = groups
        .into_iter()
        .map(|(id, pairs)| {
            let n = pairs.len();
            let mean = |f: &dyn Fn(&(f64, f64)) -> f64| pairs.iter().map(f).sum::<f64>() / n as f64;
            let (delta, ci95) = mean_ci95(&pairs.iter().map(|p| p.0 - p.1).collect::<Vec<_>>());
            CompareRow {
                id,
                n,
                this_mean: mean(&|p| p.0),
                other_mean: mean(&|p| p.1),
                delta,
                ci95,
                identical: pairs.iter().filter(|p| p.0.to_bits() == p.1.to_bits()).count(),
            }
        })
        .collect();
    (rows, unpaired)
}

/// The comparison as markdown: a summary line, then one row per table row.
pub(crate) fn to_markdown(rows: &[CompareRow], unpaired: usize, this: &str, other: &str) -> String {
    let values: usize = rows.iter().map(|r| r.n).sum();
    let identical: usize = rows.iter().map(|r| r.identical).sum();
    let largest = rows.iter().map(|r| r.delta.abs()).fold(0.0, f64::max);
    let clear = rows
        .iter()
        .filter(|r| r.ci95.is_some_and(|h| r.delta.abs() > h))
        .count();
    let mut md = format!(
        "# {this} against {other}\n\n{values} values paired by (protocol, method, dataset, source, shots, metric, seed) \
         in {} rows; {identical} bit-identical; largest |mean Δ| {largest:.3} pt; {clear} rows whose 95% interval \
         excludes 0; {unpaired} values in only one run.\n\nΔ = {this} − {other}, mean over seeds, in points, with the \
         95% Student-t interval of the paired differences.\n\n",
        rows.len()
    );
    let table = rows
        .iter()
        .map(|r| {
            vec![
                r.id.protocol.as_str().to_string(),
                r.id.method.clone(),
                r.id.dataset_label(),
                r.id.shots.to_string(),
                r.id.metric.to_string(),
                r.n.to_string(),
                format!("{:.2}", r.this_mean),
                format!("{:.2}", r.other_mean),
                match r.ci95 {
                    Some(h) => format!("{:+.3} ± {h:.3}", r.delta),
                    None => format!("{:+.3}", r.delta),
                },
                format!("{}/{}", r.identical, r.n),
            ]
        })
        .collect();
    md += &markdown_table(
        &[
            "protocol",
            "method",
            "dataset",
            "shots",
            "metric",
            "n",
            this,
            other,
            "Δ",
            "identical",
        ],
        table,
    );
    md + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::suite::{Metric, Protocol, Scope};

    fn v(method: &str, seed: u64, value: f64) -> SeedValue {
        SeedValue {
            id: RowId {
                protocol: Protocol::FewShot,
                method: method.into(),
                dataset: Scope::Dataset("world".into()),
                source: None,
                shots: 4,
                metric: Metric::Accuracy,
            },
            seed,
            value,
        }
    }

    #[test]
    fn values_pair_by_seed_and_the_interval_is_the_paired_one() {
        let this = [
            v("coop", 1, 80.0),
            v("coop", 2, 82.0),
            v("coop", 3, 81.0),
            v("zs", 1, 70.0),
        ];
        let other = [
            v("coop", 1, 79.0),
            v("coop", 2, 80.0),
            v("coop", 3, 81.0),
            v("lp", 1, 50.0),
        ];
        let (rows, unpaired) = compare(&this, &other);
        assert_eq!(unpaired, 2, "zs and lp are in one run only");
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!((r.n, r.identical), (3, 1));
        assert!((r.delta - 1.0).abs() < 1e-12);
        // Differences 1, 2, 0: sd 1, t(2) = 4.303, so ±4.303/√3.
        assert!((r.ci95.unwrap() - 4.303 / 3f64.sqrt()).abs() < 1e-9);
        let md = to_markdown(&rows, unpaired, "f16", "f32");
        assert!(
            md.contains("3 values paired") && md.contains("1 bit-identical") && md.contains("+1.000 ± 2.484"),
            "{md}"
        );
    }
}
