//! GRAM beside its host's own gain: for each full-GRAM method, on each table average, the host's
//! gain over zero-shot CLIP (a `[[compare]]` of the host against a zero-shot method) next to GRAM's
//! Δ over the host, both paired by seed, and the rank correlation of the two across the rows. It
//! tests a reading the embedded world's first GRAM tables suggested: that GRAM's sign follows how
//! well the host trains on its own (a weak host gains from GRAM, a strong one loses), which
//! predicts a negative correlation.

use serde::{Deserialize, Serialize};

use super::paired::PairRow;
use super::table::markdown_table;
use crate::suite::methods::MethodConfig;
use crate::suite::Suite;

/// One host on one table: its own gain over zero-shot and GRAM's Δ over it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostGain {
    /// host − zero-shot.
    pub host_gain: PairRow,
    /// GRAM − host.
    pub gram_delta: PairRow,
}

/// The budget of the `[gram.NAME]` run `meta`.
fn budget(suite: &Suite, meta: &str) -> Option<(usize, Option<usize>)> {
    suite.gram.get(meta).map(super::gram_budget::budget)
}

/// Rows for every full-GRAM method (θ₀ and ψ_φ) at the suite's usual meta-training budget whose
/// host the suite also compares with a zero-shot method, on the same table (protocol, source,
/// shots), table averages of the headline metric (HM for base-to-new, accuracy otherwise). The
/// usual budget is the (steps, corpus size) most full-GRAM methods have (the smaller on a tie): the
/// reading is about hosts at one GRAM budget, and a budget curve's other points would count one
/// host several times.
pub(crate) fn host_gains(suite: &Suite, pairs: &[PairRow]) -> Vec<HostGain> {
    let zero_shot = |name: &str| matches!(suite.methods.get(name), Some(MethodConfig::Zeroshot(_)));
    let full: Vec<(&String, &crate::gram::GramConfig)> = suite
        .methods
        .iter()
        .filter_map(|(name, m)| match m {
            MethodConfig::Gram(g) if g.init && g.regulate => Some((name, g)),
            _ => None,
        })
        .collect();
    let mut counts: std::collections::BTreeMap<(usize, Option<usize>), usize> = Default::default();
    for (_, g) in &full {
        if let Some(b) = budget(suite, &g.meta) {
            *counts.entry(b).or_default() += 1;
        }
    }
    let usual = counts
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .map(|(b, _)| *b);
    let mut out = Vec::new();
    for (name, g) in full {
        if budget(suite, &g.meta) != usual {
            continue;
        }
        for d in pairs.iter().filter(|p| {
            p.id.method == *name
                && p.against == g.host
                && p.id.dataset.is_average()
                && p.id.metric == super::gram_budget::headline(p.id.protocol)
        }) {
            let same_table = |p: &&PairRow| {
                p.id.method == g.host
                    && zero_shot(&p.against)
                    && p.id.dataset.is_average()
                    && (p.id.protocol, &p.id.source, p.id.shots, p.id.metric)
                        == (d.id.protocol, &d.id.source, d.id.shots, d.id.metric)
            };
            if let Some(h) = pairs.iter().find(same_table) {
                out.push(HostGain {
                    host_gain: h.clone(),
                    gram_delta: d.clone(),
                });
            }
        }
    }
    out.sort_by(|a, b| {
        let key = |x: &HostGain| {
            (
                x.gram_delta.id.protocol.as_str(),
                x.gram_delta.against.clone(),
                x.gram_delta.id.method.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
    out
}

/// Average ranks (ties share the mean of their ranks), 1-based.
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let mean = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            r[k] = mean;
        }
        i = j + 1;
    }
    r
}

/// Spearman's rank correlation of `x` and `y` (None for fewer than three pairs or a constant side).
pub(crate) fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() != y.len() || x.len() < 3 {
        return None;
    }
    let (rx, ry) = (ranks(x), ranks(y));
    let n = rx.len() as f64;
    let (mx, my) = (rx.iter().sum::<f64>() / n, ry.iter().sum::<f64>() / n);
    let cov: f64 = rx.iter().zip(&ry).map(|(a, b)| (a - mx) * (b - my)).sum();
    let (vx, vy): (f64, f64) = (
        rx.iter().map(|a| (a - mx).powi(2)).sum(),
        ry.iter().map(|b| (b - my).powi(2)).sum(),
    );
    (vx > 0.0 && vy > 0.0).then(|| cov / (vx * vy).sqrt())
}

/// The exact two-sided permutation p-value of Spearman's ρ for `n` distinct ranks (n ≤ 8: every
/// permutation), or None above that.
pub(crate) fn spearman_p(x: &[f64], y: &[f64]) -> Option<f64> {
    let rho = spearman(x, y)?;
    let n = x.len();
    if n > 8 {
        return None;
    }
    let ry = ranks(y);
    let mut perm: Vec<usize> = (0..n).collect();
    let (mut extreme, mut total) = (0u64, 0u64);
    // Heap's algorithm over the permutations of y's ranks.
    let mut c = vec![0usize; n];
    let mut visit = |perm: &[usize]| {
        let shuffled: Vec<f64> = perm.iter().map(|&i| ry[i]).collect();
        if let Some(r) = spearman(x, &shuffled) {
            if r.abs() >= rho.abs() - 1e-12 {
                extreme += 1;
            }
        }
        total += 1;
    };
    visit(&perm);
    let mut i = 0;
    while i < n {
        if c[i] < i {
            if i % 2 == 0 {
                perm.swap(0, i);
            } else {
                perm.swap(c[i], i);
            }
            visit(&perm);
            c[i] += 1;
            i = 0;
        } else {
            c[i] = 0;
            i += 1;
        }
    }
    Some(extreme as f64 / total as f64)
}

/// The report's section (empty without rows).
pub fn markdown(rows: &[HostGain]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "## GRAM beside the host's own gain\n\nEach host's gain over zero-shot CLIP and GRAM's Δ over the host, on the same \
         table averages and seeds (95% Student-t intervals). If GRAM's sign followed how well the host trains on its own, \
         the two columns would rank in opposite orders (a negative rank correlation).\n\n",
    );
    let table = rows
        .iter()
        .map(|r| {
            let (h, d) = (&r.host_gain, &r.gram_delta);
            vec![
                d.id.protocol.to_string(),
                d.id.shots.to_string(),
                d.id.metric.to_string(),
                d.against.clone(),
                d.id.method.clone(),
                format!("{:.2}", h.against_mean),
                format!("{:.2}", h.method_mean),
                h.delta_cell(),
                d.delta_cell(),
                d.verdict().to_string(),
            ]
        })
        .collect();
    out.push_str(&markdown_table(
        &[
            "Protocol",
            "Shots",
            "Metric",
            "Host",
            "With GRAM",
            "Zero-shot",
            "Host",
            "Host − zero-shot",
            "GRAM − host",
            "GRAM's verdict",
        ],
        table,
    ));
    let x: Vec<f64> = rows.iter().map(|r| r.host_gain.delta).collect();
    let y: Vec<f64> = rows.iter().map(|r| r.gram_delta.delta).collect();
    out.push_str("\n\n");
    match spearman(&x, &y) {
        Some(rho) => {
            let exact = spearman_p(&x, &y);
            let p = exact
                .map(|p| format!(", exact two-sided permutation p = {p:.3}"))
                .unwrap_or_default();
            let reading = match exact {
                Some(p) if p < 0.05 && rho < 0.0 => "the rows support the reading",
                Some(p) if p < 0.05 => "the rows contradict the reading",
                Some(_) => "too few rows, or too weak an order, to support or contradict the reading",
                None if rho < 0.0 => "negative, as the reading predicts (no exact test above 8 rows)",
                None => "not negative: the rows do not support the reading (no exact test above 8 rows)",
            };
            out.push_str(&format!(
                "Spearman's rank correlation of host gain and GRAM's Δ over the {} rows: ρ = {rho:+.2}{p} — {reading}.\n\n",
                rows.len()
            ));
        }
        None => out.push_str("Too few rows for a rank correlation.\n\n"),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::gram_budget::tests::{pair, suite};
    use crate::suite::Metric;

    #[test]
    fn one_row_per_host_and_table_at_the_usual_budget_on_the_headline_metric() {
        let s = suite();
        let host = |metric: Metric, delta: f64| PairRow {
            against: "zs".into(),
            ..pair("coop", metric, delta)
        };
        let pairs = vec![
            host(Metric::Hm, 10.0),
            host(Metric::Base, 12.0),
            pair("g-a", Metric::Hm, -1.0),
            pair("g-b", Metric::Hm, -2.0),
            pair("g-b", Metric::Base, -3.0),
            pair("g-other", Metric::Hm, -4.0),
            pair("g-b-reg", Metric::Hm, -5.0),
        ];
        let rows = host_gains(&s, &pairs);
        // (300 steps, 500 pairs) is the budget two of the four full-GRAM methods have.
        let got: Vec<(&str, f64, f64)> = rows
            .iter()
            .map(|r| (r.gram_delta.id.method.as_str(), r.host_gain.delta, r.gram_delta.delta))
            .collect();
        assert_eq!(got, vec![("g-b", 10.0, -2.0), ("g-other", 10.0, -4.0)]);
        let md = markdown(&rows);
        assert!(md.contains("Too few rows"), "{md}");
    }

    #[test]
    fn spearman_of_orders_and_ties() {
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]), Some(1.0));
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]), Some(-1.0));
        assert_eq!(ranks(&[5.0, 1.0, 5.0, 2.0]), vec![3.5, 1.0, 3.5, 2.0]);
        assert_eq!(spearman(&[1.0, 2.0], &[1.0, 2.0]), None);
        assert_eq!(spearman(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]), None);
    }

    #[test]
    fn the_permutation_p_value_is_exact() {
        // n = 4, a perfect order: 2 of the 24 permutations reach |ρ| = 1.
        let p = spearman_p(&[1.0, 2.0, 3.0, 4.0], &[4.0, 3.0, 2.0, 1.0]).unwrap();
        assert!((p - 2.0 / 24.0).abs() < 1e-12, "{p}");
        // n = 5: 2 of 120.
        let p = spearman_p(&[1.0, 2.0, 3.0, 4.0, 5.0], &[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        assert!((p - 2.0 / 120.0).abs() < 1e-12, "{p}");
        let nine: Vec<f64> = (0..9).map(f64::from).collect();
        assert_eq!(spearman_p(&nine, &nine), None, "no exact test above 8 rows");
    }
}
