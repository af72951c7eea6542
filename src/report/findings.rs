//! Findings: the literature's robust results, each declared in a suite (`[[finding]]`) as one or
//! more contrasts of the suite's own numbers, and judged with paired statistics. A contrast is
//! Σ plus − Σ minus of per-seed values (averages over a table's datasets and base-to-new HMs formed
//! per seed first, as for ±GRAM), so every seed gives one difference; the report gives its mean,
//! a 95% Student-t interval, and a verdict: `holds` when the interval lies on the side the
//! literature says, `contradicted` when it lies on the other side, `unclear` when it covers 0.
//! Nothing here is tuned: a finding is reported as it comes out.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::aggregate::SeedValue;
use super::paired::with_derived;
use super::stats::mean_ci95;
pub(crate) use crate::suite::finding::{Contrast, Finding, Sign, Term};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Holds,
    Unclear,
    Contradicted,
    /// Fewer than two seeds have every term: no interval.
    Missing,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Holds => "holds",
            Verdict::Unclear => "unclear",
            Verdict::Contradicted => "contradicted",
            Verdict::Missing => "missing",
        }
    }
}

/// One contrast's numbers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContrastResult {
    pub label: String,
    pub expect: Sign,
    /// Seeds with every term.
    pub n: usize,
    pub delta: f64,
    pub ci95: Option<f64>,
    pub verdict: Verdict,
    /// Terms with no value for some seed of the others (named so a typo in a suite shows).
    pub absent: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FindingResult {
    pub id: String,
    pub claim: String,
    pub reference: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub contrasts: Vec<ContrastResult>,
}

impl FindingResult {
    /// Holds when every contrast holds; contradicted when any is; else the weakest.
    pub fn verdict(&self) -> Verdict {
        let vs: Vec<Verdict> = self.contrasts.iter().map(|c| c.verdict).collect();
        if vs.contains(&Verdict::Contradicted) {
            Verdict::Contradicted
        } else if vs.contains(&Verdict::Missing) {
            Verdict::Missing
        } else if vs.iter().all(|v| *v == Verdict::Holds) {
            Verdict::Holds
        } else {
            Verdict::Unclear
        }
    }
}

/// Judges every finding on the suite's per-seed values.
pub(crate) fn judge(findings: &[Finding], values: &[SeedValue]) -> Vec<FindingResult> {
    let all = with_derived(values);
    findings
        .iter()
        .map(|f| FindingResult {
            id: f.id.clone(),
            claim: f.claim.clone(),
            reference: f.reference.clone(),
            note: f.note.clone(),
            contrasts: f.contrasts.iter().map(|c| contrast(c, &all)).collect(),
        })
        .collect()
}

fn contrast(c: &Contrast, all: &[SeedValue]) -> ContrastResult {
    // Per term: its value for each seed.
    let per_term = |t: &Term| -> BTreeMap<u64, f64> {
        let id = t.id();
        all.iter().filter(|v| v.id == id).map(|v| (v.seed, v.value)).collect()
    };
    let plus: Vec<(&Term, BTreeMap<u64, f64>)> = c.plus.iter().map(|t| (t, per_term(t))).collect();
    let minus: Vec<(&Term, BTreeMap<u64, f64>)> = c.minus.iter().map(|t| (t, per_term(t))).collect();
    let terms: Vec<&(&Term, BTreeMap<u64, f64>)> = plus.iter().chain(&minus).collect();
    let every: BTreeSet<u64> = terms.iter().flat_map(|(_, m)| m.keys().copied()).collect();
    let seeds: Vec<u64> = every
        .iter()
        .copied()
        .filter(|s| terms.iter().all(|(_, m)| m.contains_key(s)))
        .collect();
    let absent = terms
        .iter()
        .filter(|(_, m)| m.len() < every.len() || m.is_empty())
        .map(|(t, _)| t.describe())
        .collect();
    let d: Vec<f64> = seeds
        .iter()
        .map(|s| plus.iter().map(|(_, m)| m[s]).sum::<f64>() - minus.iter().map(|(_, m)| m[s]).sum::<f64>())
        .collect();
    let n = d.len();
    let (mean, ci95) = mean_ci95(&d);
    let verdict = match ci95 {
        None => Verdict::Missing,
        Some(h) => {
            let (lo, hi) = (mean - h, mean + h);
            let (right, wrong) = match c.expect {
                Sign::Positive => (lo > 0.0, hi < 0.0),
                Sign::Negative => (hi < 0.0, lo > 0.0),
            };
            if right {
                Verdict::Holds
            } else if wrong {
                Verdict::Contradicted
            } else {
                Verdict::Unclear
            }
        }
    };
    ContrastResult {
        label: c.label.clone(),
        expect: c.expect,
        n,
        delta: if n == 0 { f64::NAN } else { mean },
        ci95,
        verdict,
        absent,
    }
}

/// The report's Findings section (empty when the suite declares none).
pub(crate) fn findings_markdown(results: &[FindingResult]) -> String {
    if results.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "## Findings\n\nThe literature's robust results, each as paired contrasts of this suite's numbers (Δ = mean over \
         seeds of Σ plus − Σ minus, in points; 95% Student-t interval over seeds). `holds`: the interval lies on the \
         side the literature reports; `contradicted`: on the other side; `unclear`: it covers 0.\n\n\
         | finding | claim | contrast | expected | Δ | 95% CI | n | verdict |\n|---|---|---|---|---|---|---|---|\n",
    );
    for f in results {
        for (i, c) in f.contrasts.iter().enumerate() {
            let (id, claim) = if i == 0 {
                (
                    format!("**{}** ({})", f.id, f.verdict().as_str()),
                    format!("{} — {}", f.claim, f.reference),
                )
            } else {
                (String::new(), String::new())
            };
            let expected = c.expect.as_str();
            let ci = c.ci95.map(|h| format!("±{h:.2}")).unwrap_or_else(|| "—".into());
            out.push_str(&format!(
                "| {id} | {claim} | {} | {expected} | {:+.2} | {ci} | {} | {} |\n",
                c.label,
                c.delta,
                c.n,
                c.verdict.as_str()
            ));
        }
    }
    let notes: Vec<(&str, &str)> = results
        .iter()
        .filter_map(|f| f.note.as_deref().map(|n| (f.id.as_str(), n)))
        .collect();
    if !notes.is_empty() {
        out.push_str("\nNotes (the suite's, beside the verdicts):\n\n");
        for (id, n) in notes {
            out.push_str(&format!("- **{id}**: {n}\n"));
        }
    }
    let absent: Vec<String> = results
        .iter()
        .flat_map(|f| {
            f.contrasts
                .iter()
                .flat_map(move |c| c.absent.iter().map(move |a| format!("{} ({}): {a}", f.id, c.label)))
        })
        .collect();
    if !absent.is_empty() {
        out.push_str(
            "\nTerms without a value for every seed (a finding is judged on the seeds all its terms have):\n\n",
        );
        for a in absent {
            out.push_str(&format!("- {a}\n"));
        }
    }
    let held = results.iter().filter(|f| f.verdict() == Verdict::Holds).count();
    out.push_str(&format!("\n{held} of {} findings hold.\n\n", results.len()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::{Metric, Protocol, RowId, Scope};

    fn v(method: &str, shots: usize, seed: u64, value: f64) -> SeedValue {
        SeedValue {
            id: RowId {
                protocol: Protocol::FewShot,
                method: method.into(),
                dataset: Scope::parse("d"),
                source: None,
                shots,
                metric: Metric::Accuracy,
            },
            seed,
            value,
        }
    }

    fn term(method: &str, shots: usize) -> Term {
        Term {
            protocol: Protocol::FewShot,
            method: method.into(),
            dataset: Scope::parse("d"),
            source: None,
            shots,
            metric: Metric::Accuracy,
        }
    }

    fn finding(expect: Sign) -> Finding {
        Finding {
            id: "F".into(),
            claim: "a beats b".into(),
            reference: "r".into(),
            note: None,
            contrasts: vec![Contrast {
                label: "a − b".into(),
                expect,
                plus: vec![term("a", 4)],
                minus: vec![term("b", 4)],
            }],
        }
    }

    #[test]
    fn a_consistent_paired_gain_holds_and_its_opposite_is_contradicted() {
        // b varies a lot between seeds, a is always 2 above it: paired, the gain is exact.
        let values: Vec<SeedValue> = [(1, 50.0), (2, 70.0), (3, 60.0)]
            .iter()
            .flat_map(|&(s, b)| [v("a", 4, s, b + 2.0), v("b", 4, s, b)])
            .collect();
        let r = &judge(&[finding(Sign::Positive)], &values)[0];
        assert_eq!((r.contrasts[0].n, r.contrasts[0].delta), (3, 2.0));
        assert_eq!(r.verdict(), Verdict::Holds);
        assert_eq!(
            judge(&[finding(Sign::Negative)], &values)[0].verdict(),
            Verdict::Contradicted
        );
    }

    #[test]
    fn noise_around_zero_is_unclear_and_a_missing_term_is_named() {
        let values = vec![
            v("a", 4, 1, 51.0),
            v("b", 4, 1, 50.0),
            v("a", 4, 2, 49.0),
            v("b", 4, 2, 50.0),
        ];
        let r = &judge(&[finding(Sign::Positive)], &values)[0];
        assert_eq!(r.verdict(), Verdict::Unclear);
        let mut f = finding(Sign::Positive);
        f.contrasts[0].minus = vec![term("c", 4)];
        let r = &judge(&[f], &values)[0];
        assert_eq!(r.verdict(), Verdict::Missing);
        assert!(
            r.contrasts[0].absent[0].contains(" c d 4-shot"),
            "{:?}",
            r.contrasts[0].absent
        );
    }

    #[test]
    fn contrasts_may_use_the_per_seed_average_over_datasets() {
        let mut values = Vec::new();
        for s in 1..=3 {
            for (ds, base) in [("x", 40.0), ("y", 60.0 + s as f64)] {
                for (m, value) in [("a", base + 1.0), ("b", base)] {
                    let mut x = v(m, 1, s, value);
                    x.id.dataset = Scope::parse(ds);
                    values.push(x);
                }
            }
        }
        let mut f = finding(Sign::Positive);
        let c = &mut f.contrasts[0];
        for t in c.plus.iter_mut().chain(c.minus.iter_mut()) {
            t.dataset = Scope::Average;
            t.shots = 1;
        }
        let r = &judge(&[f], &values)[0];
        assert_eq!(
            (r.contrasts[0].n, r.contrasts[0].delta, r.verdict()),
            (3, 1.0, Verdict::Holds)
        );
    }
}
