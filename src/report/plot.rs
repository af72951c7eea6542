//! What every figure shares: the palette, the figure type, the legend, file names and the error
//! plotters' failures become.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::error::{Error, Result};

/// Okabe–Ito's eight, then Paul Tol's muted scheme: distinct under the common colour-vision
/// deficiencies for the first eight.
pub(crate) const PALETTE: [RGBColor; 15] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(213, 94, 0),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
    RGBColor(240, 228, 66),
    RGBColor(136, 34, 85),
    RGBColor(68, 170, 153),
    RGBColor(153, 153, 51),
    RGBColor(170, 68, 153),
    RGBColor(17, 119, 51),
    RGBColor(51, 34, 136),
    RGBColor(221, 204, 119),
];

/// A figure of the report: its file name under the report's directory, its title and the SVG a
/// renderer drew (the report's writer puts it on disk with the report's other files).
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    pub file: String,
    pub title: String,
    pub svg: String,
}

pub(crate) fn pe<E: std::fmt::Debug>(e: E) -> Error {
    Error::Internal(format!("figure: {e:?}"))
}

/// A legend in its own drawing area: a swatch and a name per entry.
pub fn legend(area: &DrawingArea<SVGBackend, plotters::coord::Shift>, entries: &[(String, RGBColor)]) -> Result<()> {
    for (i, (name, c)) in entries.iter().enumerate() {
        let y = 40 + 20 * i as i32;
        area.draw(&Rectangle::new([(8, y - 5), (26, y + 5)], c.filled()))
            .map_err(pe)?;
        area.draw(&Text::new(
            name.clone(),
            (32, y),
            ("sans-serif", 13)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Left, VPos::Center)),
        ))
        .map_err(pe)?;
    }
    Ok(())
}

pub fn file_name(parts: &[&str]) -> String {
    let s: String = parts
        .join("-")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{s}.svg")
}

/// A y-axis formatter for a chart of `labels.len()` rows over `0..len`, first row at the top: each
/// label at the middle of its row, nothing at the other ticks (asked for at every half row).
pub(crate) fn row_labels(labels: Vec<String>) -> impl Fn(&f64) -> String {
    let n = labels.len() as f64;
    move |y| {
        let i = (n - y - 0.5).round();
        if ((n - y - 0.5) - i).abs() < 0.01 && i >= 0.0 && (i as usize) < labels.len() {
            labels[i as usize].clone()
        } else {
            String::new()
        }
    }
}
