//! The markdown report: header and provenance, per protocol the pivots and every row beside its
//! published number (Δ and verdict), the ±GRAM paired table, the per-seed detail.

use std::collections::BTreeMap;
use std::path::Path;

use super::aggregate::AggRow;
use super::baseline::PublishedTable;
use super::paired::PairRow;
use super::paper_layout::against_published;
use super::table::markdown_table;
use super::ReportData;
use crate::suite::Suite;

/// A transfer row's source dataset, "—" for the others.
fn source_cell(source: &Option<String>) -> String {
    source.clone().unwrap_or_else(|| "—".into())
}

fn fmt_row(r: &AggRow) -> String {
    match r.std {
        Some(s) => format!("{:.2} ± {:.2} ({})", r.mean, s, r.n),
        None => format!("{:.2} ({})", r.mean, r.n),
    }
}

/// Renders the markdown report.
pub(crate) fn render_markdown(
    suite: &Suite,
    suite_path: &Path,
    data: &ReportData,
    published: &[PublishedTable],
    world_note: &str,
) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "# {} (suite v{}, schema {})\n\n",
        suite.name, suite.version, suite.schema
    ));
    out.push_str(&format!("{}\n\n", suite.description));
    out.push_str(&format!(
        "Backbone: `{}`. {world_note}\nRecords: {} values; {} missing, {} failed. Generated {} by gram-bench {} (commit {}).\n\n",
        suite.backbone.name,
        data.values.len(),
        data.missing.len(),
        data.failed.len(),
        crate::provenance::now_utc(),
        env!("CARGO_PKG_VERSION"),
        crate::provenance::git_commit(),
    ));
    out.push_str(&format!(
        "Reproduce (from the repository root; `run` skips finished cells and writes this report):\n\n```sh\ncargo run --locked -- run {p}\ncargo run --locked -- report {p}\n```\n\n",
        p = suite_path.display()
    ));
    out.push_str(&format!(
        "Mean ± sample std (ddof = 1) over seeds, (n) = seeds. Accuracy is micro top-1 in %. HM = 2·B·N/(B+N) of the mean \
         base and new accuracies; `average` rows are means over the table's datasets (targets only for transfer), with \
         the HM of the averages. Verdict against a published number: |Δ| ≤ max({} pt, {} × std) is `reproduced`.\n\n",
        suite.check.abs_tolerance, suite.check.std_factor
    ));
    if !suite.published.is_empty() {
        out.push_str(&format!("Published numbers: {}.\n\n", suite.published.join(", ")));
    }
    out.push_str(&super::findings::findings_markdown(&data.findings));
    out.push_str(&protocol_tables(suite, data, published));
    if !data.paired.is_empty() {
        out.push_str(&gram_section(&data.paired));
    }
    out.push_str(&super::gram_budget::markdown(&data.budget));
    out.push_str(&super::host_gain::markdown(&data.host_gains));
    out.push_str(&per_seed_detail(data));
    if !data.missing.is_empty() || !data.failed.is_empty() {
        out.push_str("\n## Not in this report\n\n");
        for m in &data.missing {
            out.push_str(&format!("- missing: {m}\n"));
        }
        for f in &data.failed {
            out.push_str(&format!("- failed: {f}\n"));
        }
    }
    out
}

/// Per protocol of the suite: compact pivots, then every row beside its published number.
fn protocol_tables(suite: &Suite, data: &ReportData, published: &[PublishedTable]) -> String {
    let mut out = String::new();
    let mut by_protocol: BTreeMap<&str, Vec<&AggRow>> = BTreeMap::new();
    for r in &data.rows {
        by_protocol.entry(r.id.protocol.as_str()).or_default().push(r);
    }
    for x in &suite.experiments {
        let Some(rows) = by_protocol.remove(x.protocol.as_str()) else {
            continue;
        };
        out.push_str(&format!("## {}\n\n", x.protocol.as_str()));
        out.push_str(&super::paper_layout::tables(suite, x.protocol, &rows, published));
        out.push_str("**Every row**\n\n");
        let mut body = Vec::new();
        let mut rows = rows;
        rows.sort_by_key(|r| {
            let id = &r.id;
            (
                id.dataset.is_average(),
                id.source.clone(),
                id.shots,
                id.method.clone(),
                id.dataset.clone(),
                id.metric,
            )
        });
        for r in rows {
            let (pub_s, delta, verdict) = match against_published(published, suite, r) {
                Some(a) => (
                    format!("{:.2}{}", a.published, if a.confirmed { "" } else { " [U]" }),
                    format!("{:+.2}", a.delta),
                    a.verdict.as_str().to_string(),
                ),
                None => ("—".into(), "—".into(), "no published number".into()),
            };
            body.push(vec![
                r.id.method.clone(),
                r.id.dataset.to_string(),
                source_cell(&r.id.source),
                r.id.shots.to_string(),
                r.id.metric.to_string(),
                fmt_row(r),
                pub_s,
                delta,
                verdict,
            ]);
        }
        out.push_str(&markdown_table(
            &[
                "Method",
                "Dataset",
                "Source",
                "Shots",
                "Metric",
                "Reproduced",
                "Published",
                "Δ",
                "Verdict",
            ],
            body,
        ));
        out.push_str("\n\n");
    }
    out
}

/// Every slot's value per seed.
fn per_seed_detail(data: &ReportData) -> String {
    let mut out = String::new();
    let mut seeds: Vec<u64> = data.values.iter().map(|v| v.seed).collect();
    seeds.sort_unstable();
    seeds.dedup();
    // Rows in the order of their names (protocol and metric as words, not as variants).
    type Key = (String, String, String, String, usize, String);
    let mut detail: BTreeMap<Key, BTreeMap<u64, f64>> = BTreeMap::new();
    for v in &data.values {
        let id = &v.id;
        detail
            .entry((
                id.protocol.to_string(),
                id.method.clone(),
                id.dataset.to_string(),
                id.source.clone().unwrap_or_default(),
                id.shots,
                id.metric.to_string(),
            ))
            .or_default()
            .insert(v.seed, v.value);
    }
    out.push_str("## Per-seed detail\n\n");
    let mut header = vec!["Protocol", "Method", "Dataset", "Source", "Shots", "Metric"];
    let seed_names: Vec<String> = seeds.iter().map(|s| format!("seed {s}")).collect();
    header.extend(seed_names.iter().map(String::as_str));
    let body = detail
        .into_iter()
        .map(|((p, m, d, s, k, met), vals)| {
            let mut row = vec![p, m, d, if s.is_empty() { "—".into() } else { s }, k.to_string(), met];
            row.extend(
                seeds
                    .iter()
                    .map(|s| vals.get(s).map(|v| format!("{v:.2}")).unwrap_or_else(|| "—".into())),
            );
            row
        })
        .collect();
    out.push_str(&markdown_table(&header, body));
    out.push('\n');
    out
}

/// GRAM against its host: the averages over each table's datasets first, then every dataset.
fn gram_section(rows: &[PairRow]) -> String {
    let mut out = String::from(
        "## ±GRAM (paired over seeds)\n\nEach GRAM method against its host, and each `[[compare]]` pair of the suite, on the \
         same seeds (same few-shot images): Δ = method − what it is compared against, mean over seeds ± the half-width of its 95% Student-t interval (n − 1 degrees of \
         freedom), (n) = seeds. \"helps\" / \"hurts\" only when the interval excludes 0. Averages and HMs are \
         formed per seed, then paired.\n\n",
    );
    let cells = |r: &PairRow| {
        vec![
            r.id.protocol.to_string(),
            r.against.clone(),
            r.id.method.clone(),
            r.id.dataset.to_string(),
            source_cell(&r.id.source),
            r.id.shots.to_string(),
            r.id.metric.to_string(),
            format!("{:.2}", r.against_mean),
            format!("{:.2}", r.method_mean),
            r.delta_cell(),
            r.verdict().to_string(),
        ]
    };
    let header = [
        "Protocol",
        "Host",
        "With GRAM",
        "Dataset",
        "Source",
        "Shots",
        "Metric",
        "Host",
        "With GRAM",
        "Δ (95% CI)",
        "Verdict",
    ];
    let order = |r: &&PairRow| {
        (
            r.id.protocol.as_str(),
            r.against.clone(),
            r.id.method.clone(),
            r.id.metric,
        )
    };
    let mut avg: Vec<&PairRow> = rows.iter().filter(|r| r.id.dataset.is_average()).collect();
    avg.sort_by_key(order);
    out.push_str("Averages over each table's datasets (targets for transfer):\n\n");
    out.push_str(&markdown_table(&header, avg.into_iter().map(cells).collect()));
    out.push_str("\n\nPer dataset:\n\n");
    let mut each: Vec<&PairRow> = rows.iter().filter(|r| !r.id.dataset.is_average()).collect();
    each.sort_by_key(|r| (order(r), r.id.dataset.clone()));
    out.push_str(&markdown_table(&header, each.into_iter().map(cells).collect()));
    out.push_str("\n\n");
    out
}
