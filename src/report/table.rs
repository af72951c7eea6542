//! A markdown table: every table a report or a command prints goes through this one renderer.

use tabled::builder::Builder;
use tabled::settings::Style;

/// A markdown table (tabled) of string cells under `header`.
pub(crate) fn markdown_table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut b = Builder::default();
    b.push_record(header.iter().map(|s| s.to_string()));
    for r in rows {
        b.push_record(r);
    }
    b.build().with(Style::markdown()).to_string()
}
