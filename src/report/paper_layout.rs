//! Each protocol's numbers in the layout of the paper it reproduces, so a reader can hold the report
//! beside the PDF: few-shot as CoOp's per-shot tables (methods × datasets + average), base-to-new
//! as CoCoOp's Table 1 (one sub-table per dataset, average first, Base / New / HM), cross-dataset
//! and cross-domain as CoCoOp's Tables 2 and 3 (source, then each target, then the targets'
//! average). A cell reads "reproduced (published) Δ mark"; without a published number,
//! "mean ± std".

use super::aggregate::AggRow;
use super::baseline::{published_for, tolerance, PublishedTable};
use super::table::markdown_table;
use crate::suite::{Metric, Protocol, Scope, Suite};

/// Where a reproduced number stands against the published one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PublishedVerdict {
    /// |Δ| within the suite's check tolerance.
    Reproduced,
    Above,
    Below,
}

impl PublishedVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            PublishedVerdict::Reproduced => "reproduced",
            PublishedVerdict::Above => "above published",
            PublishedVerdict::Below => "below published",
        }
    }

    /// The mark a paper-layout cell carries.
    pub(crate) fn mark(self) -> &'static str {
        match self {
            PublishedVerdict::Reproduced => "✓",
            PublishedVerdict::Above => "▲",
            PublishedVerdict::Below => "▼",
        }
    }
}

/// One reproduced row against its published number.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct AgainstPublished {
    pub published: f64,
    pub confirmed: bool,
    pub delta: f64,
    pub verdict: PublishedVerdict,
}

/// The row's published number, Δ and verdict under the suite's check tolerance; None when the
/// suite's tables have no number for it.
pub(crate) fn against_published(tables: &[PublishedTable], suite: &Suite, r: &AggRow) -> Option<AgainstPublished> {
    let p = published_for(tables, suite, r)?;
    let delta = r.mean - p.value;
    let verdict = if delta.abs() <= tolerance(&suite.check, r) {
        PublishedVerdict::Reproduced
    } else if delta > 0.0 {
        PublishedVerdict::Above
    } else {
        PublishedVerdict::Below
    };
    Some(AgainstPublished {
        published: p.value,
        confirmed: p.confirmed,
        delta,
        verdict,
    })
}

fn cell(tables: &[PublishedTable], suite: &Suite, r: Option<&AggRow>) -> String {
    let Some(r) = r else { return "—".into() };
    match against_published(tables, suite, r) {
        Some(a) => format!(
            "{:.2} ({:.2}{}) {:+.2} {}",
            r.mean,
            a.published,
            if a.confirmed { "" } else { " [U]" },
            a.delta,
            a.verdict.mark()
        ),
        None => match r.std {
            Some(s) => format!("{:.2} ± {:.2}", r.mean, s),
            None => format!("{:.2}", r.mean),
        },
    }
}

/// An average over fewer datasets than the table's columns, marked so it is not read beside the
/// complete ones as like for like.
fn partial(cell: String, is_partial: bool) -> String {
    if is_partial && cell != "—" {
        format!("{cell} †")
    } else {
        cell
    }
}

/// First-seen order of `items`, duplicates dropped.
fn ordered<'a>(items: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

const LEGEND: &str = "Cell: reproduced (published) Δ, marked ✓ reproduced (|Δ| within the suite's check tolerance), \
▲ above or ▼ below the published number; [U] = published number unconfirmed. Without a published number: mean ± \
std over seeds. † = an average over only the datasets this method was run on.";

/// The paper-layout tables of one protocol's rows (empty when `rows` is).
pub fn tables(suite: &Suite, protocol: Protocol, rows: &[&AggRow], published: &[PublishedTable]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let experiments: Vec<_> = suite.experiments.iter().filter(|x| x.protocol == protocol).collect();
    // Methods and datasets in the order the suite declares them, as the paper's tables do.
    let methods = ordered(experiments.iter().flat_map(|x| x.methods.iter().map(String::as_str)))
        .into_iter()
        .filter(|m| rows.iter().any(|r| r.id.method == *m))
        .collect::<Vec<_>>();
    let find = |m: &str, d: &Scope, source: Option<&str>, shots: usize, metric: Metric| {
        rows.iter()
            .find(|r| {
                let id = &r.id;
                id.method == m
                    && id.dataset == *d
                    && id.source.as_deref() == source
                    && id.shots == shots
                    && id.metric == metric
            })
            .copied()
    };
    // The suite's datasets, in its order, as table columns.
    let declared = || -> Vec<Scope> {
        ordered(experiments.iter().flat_map(|x| x.datasets.iter().map(String::as_str)))
            .into_iter()
            .map(|d| Scope::Dataset(d.to_string()))
            .collect()
    };
    let has = |d: &Scope, k: usize| rows.iter().any(|r| r.id.dataset == *d && r.id.shots == k);
    let mut shots: Vec<usize> = rows.iter().map(|r| r.id.shots).collect();
    shots.sort_unstable();
    shots.dedup();
    let mut out = String::from("**In the paper's layout**\n\n");
    for &k in &shots {
        match protocol {
            Protocol::FewShot => {
                let mut datasets = declared();
                datasets.retain(|d| has(d, k));
                if has(&Scope::Average, k) {
                    datasets.push(Scope::Average);
                }
                let body = methods
                    .iter()
                    .filter(|m| rows.iter().any(|r| r.id.method == **m && r.id.shots == k))
                    .map(|m| {
                        let complete = datasets
                            .iter()
                            .all(|d| d.is_average() || find(m, d, None, k, Metric::Accuracy).is_some());
                        let mut row = vec![m.to_string()];
                        row.extend(datasets.iter().map(|d| {
                            let c = cell(published, suite, find(m, d, None, k, Metric::Accuracy));
                            partial(c, d.is_average() && !complete)
                        }));
                        row
                    })
                    .collect();
                let mut header = vec!["Method"];
                header.extend(datasets.iter().map(Scope::as_str));
                out.push_str(&format!("{k} shots, top-1 accuracy (%):\n\n"));
                out.push_str(&markdown_table(&header, body));
                out.push_str("\n\n");
            }
            Protocol::BaseToNew => {
                let mut datasets = vec![Scope::Average];
                datasets.extend(declared());
                datasets.retain(|d| has(d, k));
                for (i, d) in datasets.iter().enumerate() {
                    let body = methods
                        .iter()
                        .filter(|m| {
                            rows.iter()
                                .any(|r| r.id.method == **m && r.id.dataset == *d && r.id.shots == k)
                        })
                        .map(|m| {
                            let complete = datasets
                                .iter()
                                .all(|e| e.is_average() || find(m, e, None, k, Metric::Base).is_some());
                            let mut row = vec![m.to_string()];
                            row.extend([Metric::Base, Metric::New, Metric::Hm].into_iter().map(|metric| {
                                let c = cell(published, suite, find(m, d, None, k, metric));
                                partial(c, d.is_average() && !complete)
                            }));
                            row
                        })
                        .collect();
                    // CoCoOp's Table 1 letters its sub-tables: (a) Average over 11 datasets, (b) ImageNet, …
                    let letter = (b'a' + (i % 26) as u8) as char;
                    out.push_str(&format!("({letter}) {d}, {k} shots:\n\n"));
                    out.push_str(&markdown_table(&["Method", "Base", "New", "HM"], body));
                    out.push_str("\n\n");
                }
            }
            Protocol::CrossDataset | Protocol::CrossDomain => {
                for x in &experiments {
                    for source in &x.datasets {
                        let from = Some(source.as_str());
                        let in_table = |d: &Scope| {
                            rows.iter()
                                .any(|r| r.id.dataset == *d && r.id.source.as_deref() == from && r.id.shots == k)
                        };
                        let mut targets: Vec<Scope> = x.targets.iter().map(|t| Scope::Dataset(t.clone())).collect();
                        targets.retain(|t| in_table(t));
                        if targets.is_empty() {
                            continue;
                        }
                        let has_avg = in_table(&Scope::Average);
                        let own = Scope::Dataset(source.clone());
                        let body = methods
                            .iter()
                            .filter(|m| x.methods.iter().any(|xm| xm == *m))
                            .map(|m| {
                                let mut row = vec![
                                    m.to_string(),
                                    cell(published, suite, find(m, &own, None, k, Metric::Accuracy)),
                                ];
                                row.extend(
                                    targets
                                        .iter()
                                        .map(|t| cell(published, suite, find(m, t, from, k, Metric::Accuracy))),
                                );
                                if has_avg {
                                    row.push(cell(
                                        published,
                                        suite,
                                        find(m, &Scope::Average, from, k, Metric::Accuracy),
                                    ));
                                }
                                row
                            })
                            .collect();
                        let source_col = format!("{source} (source)");
                        let mut header = vec!["Method", source_col.as_str()];
                        header.extend(targets.iter().map(Scope::as_str));
                        if has_avg {
                            header.push("average (targets)");
                        }
                        out.push_str(&format!("{source} → targets, {k} shots, top-1 accuracy (%):\n\n"));
                        out.push_str(&markdown_table(&header, body));
                        out.push_str("\n\n");
                    }
                }
            }
        }
    }
    out.push_str(LEGEND);
    out.push_str("\n\n");
    out
}
