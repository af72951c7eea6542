//! GRAM's meta-training budget curve: the same host with GRAM from meta-training runs that differ
//! only in their number of outer steps and the size of their corpus, each paired with the host by
//! seed (rows of `paired.rs`), so a reader sees whether GRAM's Δ moves with how much meta-training
//! it had.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::paired::PairRow;
use super::table::markdown_table;
use crate::gram::{CorpusSpec, GramSpec};
use crate::suite::methods::MethodConfig;
use crate::suite::{Metric, Protocol, Suite};

/// One point of a budget curve: GRAM (θ₀ and ψ_φ) from one meta-training run against its host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BudgetPoint {
    /// The `[gram.NAME]` runs of one curve share everything but steps and corpus size; the curve is
    /// named by its host and the runs' prompt layout.
    pub curve: String,
    pub host: String,
    pub method: String,
    pub meta: String,
    pub steps: usize,
    pub corpus_pairs: usize,
    pub pair: PairRow,
}

/// A meta-training run's budget: its outer steps and, for the world's corpus, its size (a corpus
/// read from a file has a size the suite does not state).
pub fn budget(spec: &GramSpec) -> (usize, Option<usize>) {
    let size = match spec.corpus {
        CorpusSpec::World { size } => Some(size),
        CorpusSpec::Csv { .. } => None,
    };
    (spec.train.steps, size)
}

/// What a meta-training run is apart from its budget, with its steps and corpus size; None for a
/// corpus of unstated size.
fn without_budget(spec: &GramSpec) -> Option<(String, usize, usize)> {
    let (steps, Some(size)) = budget(spec) else {
        return None;
    };
    let mut rest = serde_json::to_value(spec).ok()?;
    rest["train"]["steps"] = serde_json::Value::Null;
    rest["corpus"] = serde_json::Value::Null;
    Some((rest.to_string(), steps, size))
}

/// The layout a curve's runs learn, for its name: "text 4×1", "text 4×2 + vision 4×2".
fn layout(spec: &GramSpec) -> String {
    let t = &spec.train;
    let part = |name: &str, s: &Option<crate::gram::PromptShape>| {
        s.as_ref().map(|s| format!("{name} {}×{}", s.n_ctx, s.depth))
    };
    [part("text", &t.text), part("vision", &t.vision)]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" + ")
}

/// Every budget curve of the suite: full-GRAM methods (θ₀ and ψ_φ) on one host whose runs differ
/// only in steps and corpus size, with at least two distinct budgets; the points are the paired rows
/// on each table's average, sorted by curve, protocol, metric, corpus size and steps.
pub(crate) fn budget_points(suite: &Suite, pairs: &[PairRow]) -> Vec<BudgetPoint> {
    struct Member {
        curve: String,
        method: String,
        meta: String,
        steps: usize,
        size: usize,
    }
    // Keyed by host and what the runs are apart from their budget.
    let mut curves: BTreeMap<(String, String), Vec<Member>> = BTreeMap::new();
    for (name, m) in &suite.methods {
        let MethodConfig::Gram(g) = m else { continue };
        if !(g.init && g.regulate) {
            continue;
        }
        let Some(spec) = suite.gram.get(&g.meta) else { continue };
        let Some((rest, steps, size)) = without_budget(spec) else {
            continue;
        };
        curves.entry((g.host.clone(), rest)).or_default().push(Member {
            curve: format!("{} · {}", g.host, layout(spec)),
            method: name.clone(),
            meta: g.meta.clone(),
            steps,
            size,
        });
    }
    let mut out = Vec::new();
    for ((host, _), members) in curves {
        let mut points: Vec<BudgetPoint> = Vec::new();
        for m in &members {
            for p in pairs
                .iter()
                .filter(|p| p.against == host && p.id.method == m.method && p.id.dataset.is_average())
            {
                points.push(BudgetPoint {
                    curve: m.curve.clone(),
                    host: host.clone(),
                    method: m.method.clone(),
                    meta: m.meta.clone(),
                    steps: m.steps,
                    corpus_pairs: m.size,
                    pair: p.clone(),
                });
            }
        }
        // A table of this curve that only one budget reached (a curve of one run, or a protocol
        // run at the usual budget alone) is no curve.
        let table = |x: &BudgetPoint| {
            (
                x.pair.id.protocol,
                x.pair.id.source.clone(),
                x.pair.id.shots,
                x.pair.id.metric,
            )
        };
        let mut reached: BTreeMap<_, std::collections::BTreeSet<(usize, usize)>> = BTreeMap::new();
        for x in &points {
            reached.entry(table(x)).or_default().insert((x.steps, x.corpus_pairs));
        }
        points.retain(|x| reached[&table(x)].len() >= 2);
        out.extend(points);
    }
    out.sort_by(|a, b| {
        let key = |x: &BudgetPoint| {
            (
                x.curve.clone(),
                x.pair.id.protocol.as_str(),
                x.pair.id.source.clone(),
                x.pair.id.shots,
                x.pair.id.metric,
                x.corpus_pairs,
                x.steps,
            )
        };
        key(a).cmp(&key(b))
    });
    out
}

/// The metric a curve is drawn for: HM for base-to-new, accuracy otherwise.
pub(crate) fn headline(protocol: Protocol) -> Metric {
    match protocol {
        Protocol::BaseToNew => Metric::Hm,
        _ => Metric::Accuracy,
    }
}

/// The report's budget section (empty without a curve).
pub fn markdown(points: &[BudgetPoint]) -> String {
    if points.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "## GRAM's meta-training budget\n\nGRAM (θ₀ and ψ_φ) from meta-training runs that differ only in their outer steps and \
         corpus size, each against its host on the same seeds (table averages; Δ = GRAM − host, 95% Student-t interval, \
         (n) = seeds).\n\n",
    );
    let rows = points
        .iter()
        .map(|b| {
            let p = &b.pair;
            vec![
                b.curve.clone(),
                p.id.protocol.to_string(),
                p.id.shots.to_string(),
                p.id.metric.to_string(),
                b.steps.to_string(),
                b.corpus_pairs.to_string(),
                format!("`{}`", b.meta),
                format!("{:.2}", p.against_mean),
                format!("{:.2}", p.method_mean),
                p.delta_cell(),
                p.verdict().to_string(),
            ]
        })
        .collect();
    out.push_str(&markdown_table(
        &[
            "Host · layout",
            "Protocol",
            "Shots",
            "Metric",
            "Steps",
            "Corpus pairs",
            "Run",
            "Host",
            "With GRAM",
            "Δ (95% CI)",
            "Verdict",
        ],
        rows,
    ));
    out.push_str("\n\n");
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn pair(method: &str, metric: Metric, delta: f64) -> PairRow {
        PairRow {
            id: crate::suite::RowId {
                protocol: Protocol::BaseToNew,
                method: method.into(),
                dataset: crate::suite::Scope::Average,
                source: None,
                shots: 16,
                metric,
            },
            against: "coop".into(),
            n: 3,
            against_mean: 70.0,
            method_mean: 70.0 + delta,
            delta,
            ci95: Some(1.0),
        }
    }

    const EXPERIMENT: &str = r#"
[[experiment]]
protocol = "base-to-new"
methods = ["zs", "coop", "g-a", "g-b", "g-c", "g-other", "g-b-reg"]
datasets = ["shapes"]
shots = [1]
seeds = [1, 2]
"#;

    /// Full GRAM on `coop` from runs a (100 steps, 500 pairs), b (300, 500), c (300, 900) and
    /// `other` (300, 500, another inner lr); `g-b-reg` is b's ψ_φ-only ablation; `zs` zero-shot.
    pub(crate) fn suite() -> Suite {
        let meta = |name: &str, steps: usize, size: usize, inner_lr: f64| {
            format!(
                r#"
[gram.{name}]
seed = 1
corpus = {{ world = {{ size = {size} }} }}
[gram.{name}.train]{}"#,
                crate::gram::config::tests::VALID
                    .replace("inner_lr = 1.0", &format!("inner_lr = {inner_lr:?}"))
                    .replace("steps = 3", &format!("steps = {steps}"))
            )
        };
        let gram = |name: &str, run: &str, init: bool| {
            format!("[methods.{name}]\nkind = \"gram\"\nhost = \"coop\"\nmeta = \"{run}\"\ninit = {init}\nregulate = true\n")
        };
        let text = [
            crate::suite::test_suite_head("budget", crate::suite::TEST_CHECK),
            meta("a", 100, 500, 1.0),
            meta("b", 300, 500, 1.0),
            meta("c", 300, 900, 1.0),
            meta("other", 300, 500, 0.5),
            gram("g-a", "a", true),
            gram("g-b", "b", true),
            gram("g-c", "c", true),
            gram("g-other", "other", true),
            gram("g-b-reg", "b", false),
            crate::suite::TEST_ZS_COOP.to_string(),
            EXPERIMENT.to_string(),
        ]
        .concat();
        Suite::parse(std::path::Path::new("budget.toml"), &text).unwrap()
    }

    #[test]
    fn runs_that_differ_only_in_steps_and_corpus_form_one_curve() {
        let s = suite();
        let pairs = vec![
            pair("g-a", Metric::Hm, -1.0),
            pair("g-b", Metric::Hm, 0.5),
            pair("g-c", Metric::Hm, 2.0),
            pair("g-c", Metric::Base, 2.0),
            // A run that differs in more than its budget has no second budget: no curve.
            pair("g-other", Metric::Hm, 9.0),
            // An ablation (θ₀ off) is not on the curve.
            pair("g-b-reg", Metric::Hm, 9.0),
        ];
        let points = budget_points(&s, &pairs);
        let hm: Vec<(usize, usize, f64)> = points
            .iter()
            .filter(|p| p.pair.id.metric == Metric::Hm)
            .map(|p| (p.steps, p.corpus_pairs, p.pair.delta))
            .collect();
        assert_eq!(hm, vec![(100, 500, -1.0), (300, 500, 0.5), (300, 900, 2.0)]);
        assert!(points.iter().all(|p| p.curve == "coop · text 4×1"));
        // g-c's base accuracy is one budget's alone: no curve, so not in the table.
        assert_eq!(points.len(), 3);
        let md = markdown(&points);
        assert!(
            md.contains("GRAM's meta-training budget") && md.contains("| 900          |"),
            "{md}"
        );
        assert_eq!(markdown(&[]), "");
    }
}
