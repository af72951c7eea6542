//! The figures of GRAM's two analyses beside the ±GRAM table: Δ against the meta-training budget
//! (one panel per curve and table, a line per corpus size over the outer steps, log scale), and
//! GRAM's Δ against the host's own gain over zero-shot (a point per host and table, both
//! intervals drawn).

use std::collections::BTreeMap;

use plotters::prelude::*;

use super::gram_budget::{headline, BudgetPoint};
use super::host_gain::HostGain;
use super::plot::{file_name, legend, pe, Figure, PALETTE};
use crate::error::Result;

/// The range `lo..hi` padded by 10% (at least ±1 around a flat series), always including 0.
fn padded(lo: f64, hi: f64) -> std::ops::Range<f64> {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let pad = ((hi - lo) * 0.1).max(1.0);
    (lo - pad)..(hi + pad)
}

/// One SVG per (curve, protocol, shots): Δ of the headline metric against outer steps.
pub fn budget(points: &[BudgetPoint]) -> Result<Vec<Figure>> {
    type Panel<'a> = BTreeMap<usize, Vec<&'a BudgetPoint>>;
    let mut panels: BTreeMap<(String, String, Option<String>, usize), Panel> = BTreeMap::new();
    for p in points
        .iter()
        .filter(|p| p.pair.id.metric == headline(p.pair.id.protocol))
    {
        panels
            .entry((
                p.curve.clone(),
                p.pair.id.protocol.as_str().to_string(),
                p.pair.id.source.clone(),
                p.pair.id.shots,
            ))
            .or_default()
            .entry(p.corpus_pairs)
            .or_default()
            .push(p);
    }
    let mut out = Vec::new();
    for ((curve, protocol, source, shots), by_corpus) in panels {
        let all: Vec<&&BudgetPoint> = by_corpus.values().flatten().collect();
        let (lo, hi) = all.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
            let h = p.pair.ci95.unwrap_or(0.0);
            (lo.min(p.pair.delta - h), hi.max(p.pair.delta + h))
        });
        let (smin, smax) = all
            .iter()
            .fold((usize::MAX, 0), |(a, b), p| (a.min(p.steps), b.max(p.steps)));
        let x = (smin as f64 * 0.8)..(smax as f64 * 1.25);
        let metric = headline(all[0].pair.id.protocol);
        let title = format!("GRAM's budget · {curve} · {protocol} {shots}-shot: Δ {metric} vs meta-training steps");
        let host = &all[0].host;
        let shots_part = format!("{shots}-shot");
        let parts: Vec<&str> = [
            "budget",
            host.as_str(),
            protocol.as_str(),
            source.as_deref().unwrap_or(""),
            shots_part.as_str(),
        ]
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect();
        let file = file_name(&parts);
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (900, 480)).into_drawing_area();
            root.fill(&WHITE).map_err(pe)?;
            let (plot, side) = root.split_horizontally(720);
            let mut chart = ChartBuilder::on(&plot)
                .caption(&title, ("sans-serif", 15))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d(x.clone().log_scale(), padded(lo, hi))
                .map_err(pe)?;
            chart
                .configure_mesh()
                .x_desc("outer meta-training steps (log scale)")
                .y_desc(format!("Δ {metric}: GRAM − host (points)"))
                .draw()
                .map_err(pe)?;
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(x.start, 0.0), (x.end, 0.0)],
                    BLACK.stroke_width(1),
                )))
                .map_err(pe)?;
            let mut entries = Vec::new();
            for (i, (corpus, pts)) in by_corpus.iter().enumerate() {
                let c = PALETTE[i % PALETTE.len()];
                let mut pts = pts.clone();
                pts.sort_by_key(|p| p.steps);
                chart
                    .draw_series(LineSeries::new(
                        pts.iter().map(|p| (p.steps as f64, p.pair.delta)),
                        c.stroke_width(2),
                    ))
                    .map_err(pe)?;
                for p in &pts {
                    let s = p.steps as f64;
                    if let Some(h) = p.pair.ci95 {
                        chart
                            .draw_series(std::iter::once(PathElement::new(
                                vec![(s, p.pair.delta - h), (s, p.pair.delta + h)],
                                c.stroke_width(1),
                            )))
                            .map_err(pe)?;
                    }
                    chart
                        .draw_series(std::iter::once(Circle::new((s, p.pair.delta), 4, c.filled())))
                        .map_err(pe)?;
                }
                entries.push((format!("{corpus} corpus pairs"), c));
            }
            legend(&side, &entries)?;
            root.present().map_err(pe)?;
        }
        out.push(Figure { file, title, svg });
    }
    Ok(out)
}

/// GRAM's Δ (y) against the host's gain over zero-shot (x), a point per row with both intervals,
/// each row its own colour in the legend.
pub(crate) fn host_gain(rows: &[HostGain]) -> Result<Vec<Figure>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let span = |f: &dyn Fn(&HostGain) -> (f64, Option<f64>)| {
        rows.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), r| {
            let (d, h) = f(r);
            let h = h.unwrap_or(0.0);
            (lo.min(d - h), hi.max(d + h))
        })
    };
    let (xl, xh) = span(&|r| (r.host_gain.delta, r.host_gain.ci95));
    let (yl, yh) = span(&|r| (r.gram_delta.delta, r.gram_delta.ci95));
    let title = "GRAM's Δ against the host's own gain over zero-shot (table averages, 95% intervals)".to_string();
    let file = "gram-vs-host-gain.svg".to_string();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(pe)?;
        let (plot, side) = root.split_horizontally(660);
        let (xr, yr) = (padded(xl, xh), padded(yl, yh));
        let mut chart = ChartBuilder::on(&plot)
            .caption(&title, ("sans-serif", 14))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(xr.clone(), yr.clone())
            .map_err(pe)?;
        chart
            .configure_mesh()
            .x_desc("host − zero-shot (points)")
            .y_desc("GRAM − host (points)")
            .draw()
            .map_err(pe)?;
        for line in [
            vec![(xr.start, 0.0), (xr.end, 0.0)],
            vec![(0.0, yr.start), (0.0, yr.end)],
        ] {
            chart
                .draw_series(std::iter::once(PathElement::new(line, BLACK.stroke_width(1))))
                .map_err(pe)?;
        }
        let mut entries: Vec<(String, RGBColor)> = Vec::new();
        for r in rows {
            let label = format!(
                "{} ({} {})",
                r.gram_delta.against,
                r.gram_delta.id.protocol.as_str(),
                r.gram_delta.id.metric
            );
            let c = PALETTE[entries.len() % PALETTE.len()];
            let (x, y) = (r.host_gain.delta, r.gram_delta.delta);
            if let Some(h) = r.host_gain.ci95 {
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(x - h, y), (x + h, y)],
                        c.stroke_width(1),
                    )))
                    .map_err(pe)?;
            }
            if let Some(h) = r.gram_delta.ci95 {
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(x, y - h), (x, y + h)],
                        c.stroke_width(1),
                    )))
                    .map_err(pe)?;
            }
            chart
                .draw_series(std::iter::once(Circle::new((x, y), 5, c.filled())))
                .map_err(pe)?;
            entries.push((label, c));
        }
        legend(&side, &entries)?;
        root.present().map_err(pe)?;
    }
    Ok(vec![Figure { file, title, svg }])
}
