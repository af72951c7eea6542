//! Baselines: published tables transcribed under `baselines/published/`, and baselines saved from
//! our own runs (`gram-bench baseline save NAME SUITE` → `baselines/NAME.json`), against which
//! `gram-bench check` gives every metric a verdict.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::aggregate::AggRow;
use crate::error::{Error, Result};
use crate::suite::{CheckConfig, FailOn, Metric, Protocol, Scope, Suite};

/// One published number.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishedRow {
    /// Method as the paper names it (CLIP, CoOp, CoCoOp, ...).
    pub method: String,
    pub dataset: Scope,
    pub metric: Metric,
    pub shots: usize,
    pub value: f64,
    /// Confirmed in several independent copies of the table (\[C\]) or not (\[U\]).
    pub confirmed: bool,
    /// Why this value, where the sources disagree or the paper's own figure is not comparable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A published table (`baselines/published/*.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishedTable {
    pub table: String,
    pub protocol: Protocol,
    pub backbone: String,
    pub source: String,
    pub rows: Vec<PublishedRow>,
}

pub(crate) fn load_published(path: &Path) -> Result<PublishedTable> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Input(format!("{}: not a published table: {e}", path.display())))
}

/// A baseline saved from our own runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SavedBaseline {
    pub name: String,
    pub suite: String,
    pub suite_version: u32,
    pub created_at: String,
    pub git_commit: String,
    pub rows: Vec<AggRow>,
}

pub(crate) fn baseline_path(dir: &Path, name: &str) -> Result<PathBuf> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        || name.starts_with('.')
    {
        return Err(Error::Input(format!(
            "baseline name `{name}`: use letters, digits, '-', '_' or '.'"
        )));
    }
    Ok(dir.join(format!("{name}.json")))
}

pub(crate) fn load_saved(path: &Path) -> Result<SavedBaseline> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Input(format!("{}: not a saved baseline: {e}", path.display())))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Improved,
    WithinTolerance,
    Regressed,
    /// Above the baseline by more than the tolerance, under `fail_on = "any-change"`.
    Changed,
    Missing,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Improved => "improved",
            Verdict::WithinTolerance => "within tolerance",
            Verdict::Regressed => "REGRESSED",
            Verdict::Changed => "CHANGED",
            Verdict::Missing => "MISSING",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckRow {
    pub baseline: AggRow,
    pub current: Option<f64>,
    pub delta: Option<f64>,
    pub tolerance: f64,
    pub verdict: Verdict,
}

/// Tolerance of one baseline metric: `max(abs_tolerance, std_factor × std)`, where std is the
/// baseline's seed std (derived rows, such as HM and averages, use the absolute bound alone).
impl Verdict {
    /// Whether this verdict fails a check.
    pub fn fails(self) -> bool {
        matches!(self, Verdict::Regressed | Verdict::Changed | Verdict::Missing)
    }
}

/// The fields `check --only` accepts: those of a report row (seeds are pooled in a row).
pub(crate) const ROW_FILTER_FIELDS: &[&str] = &["protocol", "method", "dataset", "shots", "metric"];

/// The baseline rows matching every `field=value` filter (`average` is a dataset value, so a
/// dataset filter leaves the averages out); an error when nothing matches, so a check cannot pass
/// by comparing nothing.
pub(crate) fn select_rows(rows: &[AggRow], filters: &[(String, String)]) -> Result<Vec<AggRow>> {
    let matches = |r: &AggRow| {
        filters.iter().all(|(k, v)| match k.as_str() {
            "protocol" => r.id.protocol.as_str() == v,
            "method" => &r.id.method == v,
            "dataset" => r.id.dataset.as_str() == v,
            "shots" => r.id.shots.to_string() == *v,
            "metric" => r.id.metric.as_str() == v,
            _ => false,
        })
    };
    let out: Vec<AggRow> = rows.iter().filter(|r| matches(r)).cloned().collect();
    if out.is_empty() {
        let f: Vec<String> = filters.iter().map(|(k, v)| format!("{k}={v}")).collect();
        return Err(Error::Input(format!("no baseline metric matches {}", f.join(" "))));
    }
    Ok(out)
}

pub fn tolerance(rule: &CheckConfig, row: &AggRow) -> f64 {
    rule.abs_tolerance.max(rule.std_factor * row.std.unwrap_or(0.0))
}

/// Compares `current` with every metric of `baseline`.
pub fn check(rule: &CheckConfig, baseline: &[AggRow], current: &[AggRow]) -> Vec<CheckRow> {
    baseline
        .iter()
        .map(|b| {
            let tol = tolerance(rule, b);
            let cur = current.iter().find(|c| c.id == b.id).map(|c| c.mean);
            let (delta, verdict) = match cur {
                None => (None, Verdict::Missing),
                Some(c) => {
                    let d = c - b.mean;
                    let v = if d < -tol {
                        Verdict::Regressed
                    } else if d > tol && rule.fail_on == FailOn::AnyChange {
                        Verdict::Changed
                    } else if d > tol {
                        Verdict::Improved
                    } else {
                        Verdict::WithinTolerance
                    };
                    (Some(d), v)
                }
            };
            CheckRow {
                baseline: b.clone(),
                current: cur,
                delta,
                tolerance: tol,
                verdict,
            }
        })
        .collect()
}

/// The published row a report row stands beside: same table protocol, method (by its paper name),
/// dataset, metric and shots (any shots for a method that learns nothing).
pub(super) fn published_for<'a>(tables: &'a [PublishedTable], suite: &Suite, r: &AggRow) -> Option<&'a PublishedRow> {
    let method = suite.methods.get(&r.id.method)?;
    let name = method.paper_name()?;
    // A method that learns nothing (zero-shot) does not depend on the shots a table was run with.
    let shot_free = !suite.trained_as(method).training().learns();
    tables
        .iter()
        .filter(|t| t.protocol == r.id.protocol)
        .flat_map(|t| &t.rows)
        .find(|p| {
            p.method == name
                && p.dataset == r.id.dataset
                && p.metric == r.id.metric
                && (p.shots == r.id.shots || shot_free)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(metric: &str, mean: f64, std: Option<f64>) -> AggRow {
        AggRow {
            id: crate::suite::RowId {
                protocol: Protocol::FewShot,
                method: "coop".into(),
                dataset: Scope::Dataset("world".into()),
                source: None,
                shots: 4,
                metric: Metric::parse(metric).unwrap(),
            },
            n: 3,
            mean,
            std,
            ci95: None,
        }
    }

    #[test]
    fn verdicts_follow_the_stated_tolerance_rule() {
        let mut rule = CheckConfig {
            abs_tolerance: 1.0,
            std_factor: 2.0,
            fail_on: FailOn::Regression,
        };
        // std 2 → tolerance max(1, 4) = 4.
        let base = vec![
            row("accuracy", 80.0, Some(2.0)),
            row("base", 50.0, None),
            row("new", 40.0, Some(0.1)),
        ];
        let cur = vec![row("accuracy", 76.5, Some(1.0)), row("base", 51.5, None)];
        let out = check(&rule, &base, &cur);
        assert_eq!(out[0].verdict, Verdict::WithinTolerance);
        assert_eq!(out[0].tolerance, 4.0);
        assert_eq!(out[1].verdict, Verdict::Improved);
        assert_eq!(out[2].verdict, Verdict::Missing);
        let worse = vec![row("accuracy", 75.9, None)];
        assert_eq!(check(&rule, &base[..1], &worse)[0].verdict, Verdict::Regressed);
        assert!(!Verdict::Improved.fails() && Verdict::Regressed.fails());
        // Under any-change, the rise beyond the tolerance fails; within it still passes.
        rule.fail_on = FailOn::AnyChange;
        let out = check(&rule, &base, &cur);
        assert_eq!(
            (out[0].verdict, out[1].verdict),
            (Verdict::WithinTolerance, Verdict::Changed)
        );
        assert!(Verdict::Changed.fails());
    }

    #[test]
    fn a_row_filter_selects_matching_rows_and_refuses_to_select_nothing() {
        let rows = vec![row("accuracy", 80.0, None), row("base", 50.0, None)];
        let f = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        assert_eq!(select_rows(&rows, &f("metric", "base")).unwrap().len(), 1);
        assert_eq!(select_rows(&rows, &f("method", "coop")).unwrap().len(), 2);
        assert!(select_rows(&rows, &f("dataset", "average")).is_err());
    }

    #[test]
    fn baseline_names_cannot_escape_the_directory() {
        assert!(baseline_path(Path::new("b"), "../x").is_err());
        assert!(baseline_path(Path::new("b"), "").is_err());
        assert_eq!(
            baseline_path(Path::new("b"), "nightly-1").unwrap(),
            Path::new("b/nightly-1.json")
        );
    }
}
