//! The figures people know these papers by, as SVG beside `report.md` (plotters' SVG backend: no
//! fonts or system libraries needed): few-shot curves (CoOp's Fig. 3), base-to-new bars,
//! transfer bars (source and each target) and a ±GRAM forest plot. Methods get the same colour in
//! every figure (Okabe–Ito's colour-blind-safe eight first); legends sit beside the plot, and method
//! names label rows of horizontal bars, so 15 methods do not overlap.

use std::collections::{BTreeMap, BTreeSet};

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::aggregate::AggRow;
use super::baseline::PublishedTable;
use super::forest::{findings_forest, forest, forest_colour, forest_plot, ForestRow};
pub(crate) use super::plot::Figure;
use super::plot::{file_name, legend, pe, row_labels, PALETTE};
use super::ReportData;
use crate::error::Result;
use crate::suite::{Metric, Protocol, Scope, Suite};

/// Every method of the report, in one order, with its colour.
fn colours(rows: &[AggRow]) -> BTreeMap<String, RGBColor> {
    let names: BTreeSet<&str> = rows.iter().map(|r| r.id.method.as_str()).collect();
    names
        .into_iter()
        .enumerate()
        .map(|(i, m)| (m.to_string(), PALETTE[i % PALETTE.len()]))
        .collect()
}

/// A few-shot table's accuracy rows.
fn few_shot_rows(rows: &[AggRow]) -> Vec<&AggRow> {
    rows.iter()
        .filter(|r| r.id.protocol == Protocol::FewShot && r.id.metric == Metric::Accuracy)
        .collect()
}

/// The title's prefix of a figure that overlays two runs.
fn compared(runs: &[Run]) -> &'static str {
    if runs.len() > 1 {
        "Compared: "
    } else {
        ""
    }
}

/// One run's rows in a figure that may overlay two runs: the first is drawn solid, the other dashed.
pub(crate) struct Run<'a> {
    pub label: &'a str,
    pub rows: &'a [AggRow],
}

/// Accuracy against shots (log scale), a line and a ±1 std band per method and run (the second
/// run dashed), published points as crosses.
fn few_shot(
    suite: &Suite,
    runs: &[Run],
    published: &[PublishedTable],
    colour: &BTreeMap<String, RGBColor>,
) -> Result<Vec<Figure>> {
    let all: Vec<&AggRow> = runs.iter().flat_map(|run| few_shot_rows(run.rows)).collect();
    let datasets: BTreeSet<&str> = all.iter().map(|r| r.id.dataset.as_str()).collect();
    let mut out = Vec::new();
    for d in datasets {
        let here: Vec<&&AggRow> = all.iter().filter(|r| r.id.dataset == d).collect();
        let shots: BTreeSet<usize> = here.iter().map(|r| r.id.shots).collect();
        if shots.len() < 2 {
            continue;
        }
        let (lo, hi) = here
            .iter()
            .map(|r| (r.mean - r.std.unwrap_or(0.0), r.mean + r.std.unwrap_or(0.0)))
            .fold((100.0f64, 0.0f64), |(a, b), (l, h)| (a.min(l), b.max(h)));
        let (y0, y1) = (
            ((lo - 5.0) / 5.0).floor().max(0.0) * 5.0,
            (((hi + 5.0) / 5.0).ceil() * 5.0).min(100.0),
        );
        let (x0, x1) = (
            *shots.first().expect("two shot counts") as f64 / 1.3,
            *shots.last().expect("two shot counts") as f64 * 1.3,
        );
        let title = format!("{}Few-shot: {d}", compared(runs));
        let file = file_name(&["few-shot", d]);
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (860, 460)).into_drawing_area();
            root.fill(&WHITE).map_err(pe)?;
            let (plot, side) = root.split_horizontally(660);
            let mut chart = ChartBuilder::on(&plot)
                .caption(&title, ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(50)
                .build_cartesian_2d(
                    (x0..x1)
                        .log_scale()
                        .with_key_points(shots.iter().map(|&s| s as f64).collect()),
                    y0..y1,
                )
                .map_err(pe)?;
            chart
                .configure_mesh()
                .x_desc("shots per class (log scale)")
                .y_desc("top-1 accuracy (%)")
                .x_label_formatter(&|x| format!("{x:.0}"))
                .draw()
                .map_err(pe)?;
            let mut entries: Vec<(String, RGBColor)> = Vec::new();
            for (i, run) in runs.iter().enumerate() {
                let by_method: BTreeMap<&str, Vec<&AggRow>> = few_shot_rows(run.rows)
                    .into_iter()
                    .filter(|r| r.id.dataset == d)
                    .fold(BTreeMap::new(), |mut m, r| {
                        m.entry(r.id.method.as_str()).or_insert_with(Vec::new).push(r);
                        m
                    });
                for (m, rs) in &by_method {
                    let c = colour[*m];
                    let mut pts: Vec<(f64, f64, f64)> = rs
                        .iter()
                        .map(|r| (r.id.shots as f64, r.mean, r.std.unwrap_or(0.0)))
                        .collect();
                    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                    let band: Vec<(f64, f64)> = pts
                        .iter()
                        .map(|p| (p.0, p.1 + p.2))
                        .chain(pts.iter().rev().map(|p| (p.0, p.1 - p.2)))
                        .collect();
                    chart
                        .draw_series(std::iter::once(Polygon::new(band, c.mix(0.15 / runs.len() as f64))))
                        .map_err(pe)?;
                    let line = pts.iter().map(|p| (p.0, p.1));
                    if i == 0 {
                        chart
                            .draw_series(LineSeries::new(line, c.stroke_width(2)))
                            .map_err(pe)?;
                        chart
                            .draw_series(pts.iter().map(|p| Circle::new((p.0, p.1), 3, c.filled())))
                            .map_err(pe)?;
                    } else {
                        chart
                            .draw_series(DashedLineSeries::new(line, 7, 4, c.stroke_width(2)))
                            .map_err(pe)?;
                        chart
                            .draw_series(pts.iter().map(|p| Circle::new((p.0, p.1), 3, c.stroke_width(1))))
                            .map_err(pe)?;
                    }
                    if i == 0 {
                        // Published points for this method and dataset, where the suite's tables have them.
                        let pubs: Vec<(f64, f64)> = rs
                            .iter()
                            .filter_map(|r| {
                                super::baseline::published_for(published, suite, r)
                                    .map(|p| (r.id.shots as f64, p.value))
                            })
                            .filter(|(_, v)| (y0..=y1).contains(v))
                            .collect();
                        chart
                            .draw_series(pubs.iter().map(|&p| Cross::new(p, 6, c.stroke_width(2))))
                            .map_err(pe)?;
                    }
                    if !entries.iter().any(|(name, _)| name == m) {
                        entries.push((m.to_string(), c));
                    }
                }
            }
            legend(&side, &entries)?;
            let mut notes = vec![
                "line: mean over seeds".to_string(),
                "band: ±1 std over seeds".to_string(),
                "×: published".to_string(),
            ];
            if runs.len() > 1 {
                notes.push(format!("solid: {}", runs[0].label));
                notes.push(format!("dashed: {}", runs[1].label));
            }
            for (i, line) in notes.iter().enumerate() {
                side.draw(&Text::new(
                    line.clone(),
                    (8, 40 + 20 * entries.len() as i32 + 10 + 15 * i as i32),
                    ("sans-serif", 11).into_font().color(&BLACK.mix(0.7)),
                ))
                .map_err(pe)?;
            }
            root.present().map_err(pe)?;
        }
        out.push(Figure { file, title, svg });
    }
    Ok(out)
}

/// Horizontal grouped bars: one row of bars per method (names on the axis), one bar per series,
/// the value written at its end.
fn grouped_bars(
    svg: &mut String,
    title: &str,
    methods: &[String],
    series: &[(String, RGBColor)],
    value: &dyn Fn(&str, usize) -> Option<f64>,
) -> Result<()> {
    let k = series.len().max(1);
    let row_h = 10 * k as u32 + 14;
    let height = 90 + row_h * methods.len() as u32;
    // The legend's column as wide as its longest name (13 px sans-serif: about 7 px a character).
    let longest = series.iter().map(|(s, _)| s.chars().count()).max().unwrap_or(0) as u32;
    let side_w = (40 + 7 * longest).max(180);
    let root = SVGBackend::with_string(svg, (680 + side_w, height.max(200))).into_drawing_area();
    root.fill(&WHITE).map_err(pe)?;
    let (plot, side) = root.split_horizontally(680);
    let n = methods.len() as f64;
    let mut chart = ChartBuilder::on(&plot)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(130)
        .build_cartesian_2d(0f64..105f64, 0f64..n)
        .map_err(pe)?;
    let names = row_labels(methods.to_vec());
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(methods.len() * 2 + 1)
        .y_label_formatter(&names)
        .x_desc("top-1 accuracy (%)")
        .draw()
        .map_err(pe)?;
    for (i, m) in methods.iter().enumerate() {
        let top = n - i as f64 - 0.1;
        let h = 0.8 / k as f64;
        for (j, (_, c)) in series.iter().enumerate() {
            let Some(v) = value(m, j) else { continue };
            let (y1, y0) = (top - j as f64 * h, top - (j as f64 + 1.0) * h);
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(0.0, y0 + 0.01), (v, y1 - 0.01)],
                    c.filled(),
                )))
                .map_err(pe)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("{v:.1}"),
                    (v + 0.5, (y0 + y1) / 2.0),
                    ("sans-serif", 10)
                        .into_font()
                        .color(&BLACK)
                        .pos(Pos::new(HPos::Left, VPos::Center)),
                )))
                .map_err(pe)?;
        }
    }
    legend(&side, series)?;
    root.present().map_err(pe)
}

/// `c` blended halfway to white: the second run's bars beside the first's.
fn pale(c: RGBColor) -> RGBColor {
    let f = |x: u8| ((x as u16 + 255) / 2) as u8;
    RGBColor(f(c.0), f(c.1), f(c.2))
}

/// A bar series per (what, run): the run's label added when two runs are overlaid, the second
/// run's colour paler.
fn run_series(what: &[(String, RGBColor)], runs: &[Run]) -> Vec<((String, RGBColor), (usize, usize))> {
    what.iter()
        .enumerate()
        .flat_map(|(w, (name, c))| {
            runs.iter().enumerate().map(move |(i, run)| {
                let label = if runs.len() > 1 {
                    format!("{name} · {}", run.label)
                } else {
                    name.clone()
                };
                ((label, if i == 0 { *c } else { pale(*c) }), (w, i))
            })
        })
        .collect()
}

/// Base / new / HM per method, for the average and each dataset.
fn base_to_new(runs: &[Run]) -> Result<Vec<Figure>> {
    fn b2n(rows: &[AggRow]) -> Vec<&AggRow> {
        rows.iter().filter(|r| r.id.protocol == Protocol::BaseToNew).collect()
    }
    let all: Vec<&AggRow> = runs.iter().flat_map(|run| b2n(run.rows)).collect();
    let mut datasets: Vec<&Scope> = all
        .iter()
        .map(|r| &r.id.dataset)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    // The average first.
    datasets.sort_by_key(|d| !d.is_average());
    let metrics = [Metric::Base, Metric::New, Metric::Hm];
    let what = [
        ("base".to_string(), RGBColor(0, 114, 178)),
        ("new".to_string(), RGBColor(230, 159, 0)),
        ("hm".to_string(), RGBColor(0, 158, 115)),
    ];
    let series = run_series(&what, runs);
    let mut out = Vec::new();
    for d in datasets {
        let methods: Vec<String> = all
            .iter()
            .filter(|r| r.id.dataset == *d)
            .map(|r| r.id.method.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let title = format!("{}Base-to-new: {d} (base, new, HM)", compared(runs));
        let file = file_name(&["base-to-new", d.as_str()]);
        let value = |m: &str, j: usize| {
            let (w, i) = series[j].1;
            runs[i]
                .rows
                .iter()
                .find(|r| {
                    r.id.protocol == Protocol::BaseToNew
                        && r.id.dataset == *d
                        && r.id.method == m
                        && r.id.metric == metrics[w]
                })
                .map(|r| r.mean)
        };
        let names: Vec<(String, RGBColor)> = series.iter().map(|s| s.0.clone()).collect();
        let mut svg = String::new();
        grouped_bars(&mut svg, &title, &methods, &names, &value)?;
        out.push(Figure { file, title, svg });
    }
    Ok(out)
}

/// Source and each target per method, for each source of a transfer protocol.
fn transfer(runs: &[Run], protocol: Protocol) -> Result<Vec<Figure>> {
    let mut out = Vec::new();
    {
        fn of(rows: &[AggRow], protocol: Protocol) -> Vec<&AggRow> {
            rows.iter()
                .filter(|r| r.id.protocol == protocol && r.id.metric == Metric::Accuracy && !r.id.dataset.is_average())
                .collect()
        }
        let all: Vec<&AggRow> = runs.iter().flat_map(|run| of(run.rows, protocol)).collect();
        let sources: BTreeSet<&str> = all.iter().filter_map(|r| r.id.source.as_deref()).collect();
        for src in sources {
            let targets: BTreeSet<&str> = all
                .iter()
                .filter(|r| r.id.source.as_deref() == Some(src))
                .map(|r| r.id.dataset.as_str())
                .collect();
            // (dataset, source) of each bar kind: the source's own test set first.
            let mut kinds = vec![(src, None)];
            kinds.extend(targets.iter().map(|t| (*t, Some(src))));
            let mut what = vec![(format!("{src} (source)"), PALETTE[6])];
            what.extend(
                targets
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (t.to_string(), PALETTE[(i + 1) % 6])),
            );
            let series = run_series(&what, runs);
            let methods: Vec<String> = all
                .iter()
                .filter(|r| r.id.source.as_deref() == Some(src))
                .map(|r| r.id.method.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let title = format!("{}{}: {src} → targets", compared(runs), protocol.as_str());
            let file = file_name(&[protocol.as_str(), src]);
            let value = |m: &str, j: usize| {
                let (w, i) = series[j].1;
                let (dataset, source) = kinds[w];
                of(runs[i].rows, protocol)
                    .into_iter()
                    .find(|r| r.id.method == m && r.id.dataset == dataset && r.id.source.as_deref() == source)
                    .map(|r| r.mean)
            };
            let names: Vec<(String, RGBColor)> = series.iter().map(|s| s.0.clone()).collect();
            let mut svg = String::new();
            grouped_bars(&mut svg, &title, &methods, &names, &value)?;
            out.push(Figure { file, title, svg });
        }
    }
    Ok(out)
}

/// Few-shot tables run at one shot count have no curve to draw: accuracy per method as bars, one
/// per dataset and the average.
fn few_shot_bars(runs: &[Run]) -> Result<Vec<Figure>> {
    let all: Vec<&AggRow> = runs.iter().flat_map(|run| few_shot_rows(run.rows)).collect();
    let per_dataset: BTreeMap<&str, BTreeSet<usize>> = all.iter().fold(BTreeMap::new(), |mut m, r| {
        m.entry(r.id.dataset.as_str()).or_default().insert(r.id.shots);
        m
    });
    // Curves are drawn where a dataset has two shot counts or more.
    if per_dataset.values().any(|s| s.len() > 1) {
        return Ok(Vec::new());
    }
    let shots: BTreeSet<usize> = all.iter().map(|r| r.id.shots).collect();
    let mut out = Vec::new();
    for k in shots {
        let mut datasets: Vec<&Scope> = all
            .iter()
            .filter(|r| r.id.shots == k)
            .map(|r| &r.id.dataset)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        // The average last.
        datasets.sort_by_key(|d| d.is_average());
        let what: Vec<(String, RGBColor)> = datasets
            .iter()
            .enumerate()
            .map(|(i, d)| (d.to_string(), if d.is_average() { PALETTE[6] } else { PALETTE[i % 6] }))
            .collect();
        let series = run_series(&what, runs);
        let methods: Vec<String> = all
            .iter()
            .filter(|r| r.id.shots == k)
            .map(|r| r.id.method.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let title = format!("{}Few-shot at {k} shots: accuracy per dataset", compared(runs));
        let file = file_name(&["few-shot", &format!("{k}-shots")]);
        let value = |m: &str, j: usize| {
            let (w, i) = series[j].1;
            few_shot_rows(runs[i].rows)
                .into_iter()
                .find(|r| r.id.method == m && r.id.dataset == *datasets[w] && r.id.shots == k)
                .map(|r| r.mean)
        };
        let names: Vec<(String, RGBColor)> = series.iter().map(|s| s.0.clone()).collect();
        let mut svg = String::new();
        grouped_bars(&mut svg, &title, &methods, &names, &value)?;
        out.push(Figure { file, title, svg });
    }
    Ok(out)
}

/// Two runs of one table overlaid (written in their own folder, beside the report's figures): few-shot curves (this run solid, the other dashed), base-to-new and transfer bars
/// side by side (the other paler), and a forest of this − other on every table row.
pub(crate) fn render_compare(
    suite: &Suite,
    runs: [Run; 2],
    rows: &[super::compare::CompareRow],
    published: &[PublishedTable],
) -> Result<Vec<Figure>> {
    let both: Vec<AggRow> = runs.iter().flat_map(|r| r.rows.iter().cloned()).collect();
    let colour = colours(&both);
    let mut out = protocol_figures(suite, &runs, published, &colour)?;
    let forest_rows: Vec<ForestRow> = rows
        .iter()
        .map(|r| ForestRow {
            label: format!(
                "{} · {} {} · {}{}",
                r.id.method,
                r.id.protocol.as_str(),
                r.id.shots,
                r.id.dataset_label(),
                if r.id.metric == Metric::Accuracy {
                    String::new()
                } else {
                    format!(" ({})", r.id.metric)
                }
            ),
            delta: r.delta,
            ci95: r.ci95,
            colour: forest_colour(r.delta, r.ci95),
        })
        .collect();
    if !forest_rows.is_empty() {
        let title = format!("{} − {}: Δ per table row (95% interval)", runs[0].label, runs[1].label);
        let file = "delta-forest.svg".to_string();
        let svg = forest_plot(
            &title,
            "Δ (points): mean over seeds of the paired differences",
            &forest_rows,
        )?;
        out.push(Figure { file, title, svg });
    }
    Ok(out)
}

/// Each protocol's figures of `runs`. The match is exhaustive: a protocol added to `Protocol` does
/// not compile until it says what it draws.
fn protocol_figures(
    suite: &Suite,
    runs: &[Run],
    published: &[PublishedTable],
    colour: &BTreeMap<String, RGBColor>,
) -> Result<Vec<Figure>> {
    let mut out = Vec::new();
    for protocol in Protocol::ALL {
        out.extend(match protocol {
            Protocol::FewShot => {
                let mut f = few_shot(suite, runs, published, colour)?;
                f.extend(few_shot_bars(runs)?);
                f
            }
            Protocol::BaseToNew => base_to_new(runs)?,
            Protocol::CrossDomain | Protocol::CrossDataset => transfer(runs, protocol)?,
        });
    }
    Ok(out)
}

/// Every figure the report's numbers support, in report order.
pub fn render(suite: &Suite, data: &ReportData, published: &[PublishedTable]) -> Result<Vec<Figure>> {
    let colour = colours(&data.rows);
    let runs = [Run {
        label: "",
        rows: &data.rows,
    }];
    let mut out = protocol_figures(suite, &runs, published, &colour)?;
    out.extend(forest(&data.paired)?);
    out.extend(findings_forest(&data.findings)?);
    out.extend(super::gram_figures::budget(&data.budget)?);
    out.extend(super::gram_figures::host_gain(&data.host_gains)?);
    Ok(out)
}

/// The report's figures section: each figure linked as an image.
pub fn markdown(figures: &[Figure]) -> String {
    if figures.is_empty() {
        return String::new();
    }
    let mut s = String::from("\n## Figures\n\n");
    for f in figures {
        s.push_str(&format!("### {}\n\n![{}]({})\n\n", f.title, f.title, f.file));
    }
    s
}
