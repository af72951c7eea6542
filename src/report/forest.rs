//! Forest plots: a Δ per row with its 95% interval (±GRAM pairs, the findings' contrasts, run vs
//! run), coloured by what the interval says.

use plotters::prelude::*;

use super::paired::PairRow;
use super::plot::{pe, row_labels, Figure, PALETTE};
use crate::error::Result;
use crate::suite::Metric;

/// One row of a forest plot: a difference, its 95% half-width, and whether it is clear of zero
/// in the expected (green), other (vermillion) or no (grey) direction.
pub(super) struct ForestRow {
    pub label: String,
    pub delta: f64,
    pub ci95: Option<f64>,
    pub colour: RGBColor,
}

pub(super) fn forest_colour(delta: f64, ci95: Option<f64>) -> RGBColor {
    match ci95 {
        Some(h) if delta - h > 0.0 => PALETTE[2],
        Some(h) if delta + h < 0.0 => PALETTE[3],
        _ => RGBColor(90, 90, 90),
    }
}

/// Δ with its 95% interval, one row each, zero marked.
pub(super) fn forest_plot(title: &str, x_desc: &str, rows: &[ForestRow]) -> Result<String> {
    let reach = rows
        .iter()
        .map(|p| p.delta.abs() + p.ci95.unwrap_or(0.0))
        .fold(1.0f64, f64::max)
        * 1.1;
    let n = rows.len() as f64;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 90 + 24 * rows.len() as u32)).into_drawing_area();
        root.fill(&WHITE).map_err(pe)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 17))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(330)
            .build_cartesian_2d(-reach..reach, 0f64..n)
            .map_err(pe)?;
        let labels = row_labels(rows.iter().map(|r| r.label.clone()).collect());
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(rows.len() * 2 + 1)
            .y_label_formatter(&labels)
            .x_desc(x_desc)
            .draw()
            .map_err(pe)?;
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(0.0, 0.0), (0.0, n)],
                BLACK.stroke_width(1),
            )))
            .map_err(pe)?;
        for (i, p) in rows.iter().enumerate() {
            let y = n - i as f64 - 0.5;
            if let Some(h) = p.ci95 {
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(p.delta - h, y), (p.delta + h, y)],
                        p.colour.stroke_width(2),
                    )))
                    .map_err(pe)?;
            }
            chart
                .draw_series(std::iter::once(Circle::new((p.delta, y), 4, p.colour.filled())))
                .map_err(pe)?;
        }
        root.present().map_err(pe)?;
    }
    Ok(svg)
}

/// Δ (method − host) with its 95% interval for every paired comparison on a table's average
/// (HM for base-to-new).
pub(super) fn forest(pairs: &[PairRow]) -> Result<Vec<Figure>> {
    let rows: Vec<ForestRow> = pairs
        .iter()
        .filter(|p| p.id.dataset.is_average() && matches!(p.id.metric, Metric::Accuracy | Metric::Hm))
        .map(|p| ForestRow {
            label: format!(
                "{} − {} · {} {}{}",
                p.id.method,
                p.against,
                p.id.protocol.as_str(),
                p.id.shots,
                if p.id.metric == Metric::Hm { " (HM)" } else { "-shot" }
            ),
            delta: p.delta,
            ci95: p.ci95,
            colour: forest_colour(p.delta, p.ci95),
        })
        .collect();
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let title = "±GRAM and declared comparisons: Δ on the average (95% interval)".to_string();
    let file = "delta-forest.svg".to_string();
    let svg = forest_plot(
        &title,
        "Δ (points): method − what it is compared with, mean over seeds",
        &rows,
    )?;
    Ok(vec![Figure { file, title, svg }])
}

/// Each finding's contrasts as a forest: Δ with its 95% interval, green where the finding holds,
/// vermillion where it is contradicted, grey where the interval covers zero.
pub(super) fn findings_forest(findings: &[super::findings::FindingResult]) -> Result<Vec<Figure>> {
    use super::findings::Verdict;
    let rows: Vec<ForestRow> = findings
        .iter()
        .flat_map(|f| {
            f.contrasts
                .iter()
                .filter(|c| c.verdict != Verdict::Missing)
                .map(move |c| ForestRow {
                    label: format!("{} {} ({})", f.id, c.label, c.expect.as_str()),
                    delta: c.delta,
                    ci95: c.ci95,
                    colour: match c.verdict {
                        Verdict::Holds => PALETTE[2],
                        Verdict::Contradicted => PALETTE[3],
                        _ => RGBColor(90, 90, 90),
                    },
                })
        })
        .collect();
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let title = "Findings: each contrast's Δ (95% interval; green holds, red contradicted)".to_string();
    let file = "findings-forest.svg".to_string();
    let svg = forest_plot(&title, "Δ (points), mean over seeds", &rows)?;
    Ok(vec![Figure { file, title, svg }])
}
