//! A check's verdicts in the forms people and CI services read: the table `check` prints, a short
//! markdown verdict (a CI job's summary page) and JUnit XML (one test case per metric, a regressed,
//! changed or missing metric as a failure: the format CI services show natively). Each renderer
//! returns the text; the command writes it.

use xml::writer::{EmitterConfig, XmlEvent};

use super::baseline::{CheckRow, Verdict};
use super::table::markdown_table;
use crate::error::{Error, Result};
use crate::suite::{CheckConfig, FailOn};

/// At most this many failing metrics are listed in the summary (the table and JUnit hold all).
const SUMMARY_ROWS: usize = 50;

/// One check of a suite's records against a saved baseline.
pub struct CheckOutcome<'a> {
    pub suite: &'a str,
    pub baseline: &'a str,
    pub rule: &'a CheckConfig,
    pub rows: &'a [CheckRow],
}

impl CheckOutcome<'_> {
    pub fn failures(&self) -> usize {
        self.rows.iter().filter(|c| c.verdict.fails()).count()
    }

    pub fn passed(&self) -> bool {
        self.failures() == 0
    }

    /// The rule the verdicts follow, in one sentence.
    pub fn rule_text(&self) -> String {
        let above = match self.rule.fail_on {
            FailOn::Regression => "improved",
            FailOn::AnyChange => "CHANGED (fails too)",
        };
        format!(
            "Rule: regressed when current < baseline − max({} pt, {} × baseline seed std); {above} when above by as much.",
            self.rule.abs_tolerance, self.rule.std_factor
        )
    }

    fn table_of<'r>(rows: impl Iterator<Item = &'r CheckRow>) -> String {
        let rows = rows
            .map(|c| {
                let b = &c.baseline;
                vec![
                    b.id.protocol.to_string(),
                    b.id.method.clone(),
                    b.id.dataset.to_string(),
                    b.id.shots.to_string(),
                    b.id.metric.to_string(),
                    format!("{:.2}", b.mean),
                    c.current.map(|v| format!("{v:.2}")).unwrap_or_else(|| "—".into()),
                    c.delta.map(|v| format!("{v:+.2}")).unwrap_or_else(|| "—".into()),
                    format!("{:.2}", c.tolerance),
                    c.verdict.as_str().to_string(),
                ]
            })
            .collect();
        markdown_table(
            &[
                "Protocol",
                "Method",
                "Dataset",
                "Shots",
                "Metric",
                "Baseline",
                "Current",
                "Δ",
                "Tolerance",
                "Verdict",
            ],
            rows,
        )
    }

    /// Every metric's verdict, as `check` prints it.
    pub fn table(&self) -> String {
        Self::table_of(self.rows.iter())
    }

    /// A short markdown verdict: the outcome, the count of each verdict, the rule and the failing
    /// metrics.
    pub fn summary(&self) -> String {
        let count = |v: Verdict| self.rows.iter().filter(|c| c.verdict == v).count();
        let bad = self.failures();
        let mut s = format!(
            "### gram-bench check: `{}` against baseline `{}` — {}\n\n{} metrics: {} within tolerance, {} improved, {} \
             regressed, {} changed, {} missing.\n\n{}\n",
            self.suite,
            self.baseline,
            if bad == 0 { "passed" } else { "FAILED" },
            self.rows.len(),
            count(Verdict::WithinTolerance),
            count(Verdict::Improved),
            count(Verdict::Regressed),
            count(Verdict::Changed),
            count(Verdict::Missing),
            self.rule_text()
        );
        if bad > 0 {
            let failing = self.rows.iter().filter(|c| c.verdict.fails());
            s.push_str(&format!("\n{}\n", Self::table_of(failing.take(SUMMARY_ROWS))));
            if bad > SUMMARY_ROWS {
                s.push_str(&format!("\n… and {} more failing metrics.\n", bad - SUMMARY_ROWS));
            }
        }
        s
    }

    /// JUnit XML: one test suite, one test case per metric (class: suite.protocol.method; name:
    /// dataset, source, shots, metric), failures for regressed, changed and missing metrics.
    pub fn junit(&self) -> Result<Vec<u8>> {
        let xml_err = |e: xml::writer::Error| Error::Internal(format!("writing JUnit XML: {e}"));
        let mut out = Vec::new();
        let mut w = EmitterConfig::new().perform_indent(true).create_writer(&mut out);
        let (tests, failures) = (self.rows.len().to_string(), self.failures().to_string());
        let title = format!("{} against baseline {}", self.suite, self.baseline);
        w.write(
            XmlEvent::start_element("testsuites")
                .attr("name", "gram-bench check")
                .attr("tests", &tests)
                .attr("failures", &failures),
        )
        .map_err(xml_err)?;
        w.write(
            XmlEvent::start_element("testsuite")
                .attr("name", &title)
                .attr("tests", &tests)
                .attr("failures", &failures)
                .attr("errors", "0")
                .attr("skipped", "0"),
        )
        .map_err(xml_err)?;
        for c in self.rows {
            let b = &c.baseline;
            let class = format!("{}.{}.{}", self.suite, b.id.protocol, b.id.method);
            let from = b.id.source.as_ref().map(|s| format!(" from {s}")).unwrap_or_default();
            let name = format!("{}{from} {}-shot {}", b.id.dataset, b.id.shots, b.id.metric);
            w.write(
                XmlEvent::start_element("testcase")
                    .attr("classname", &class)
                    .attr("name", &name),
            )
            .map_err(xml_err)?;
            if c.verdict.fails() {
                let current = c.current.map_or("no value".to_string(), |v| format!("{v:.2}"));
                let message = format!(
                    "{}: {current} against baseline {:.2} (tolerance {:.2})",
                    c.verdict.as_str().to_lowercase(),
                    b.mean,
                    c.tolerance
                );
                w.write(
                    XmlEvent::start_element("failure")
                        .attr("type", &c.verdict.as_str().to_lowercase())
                        .attr("message", &message),
                )
                .map_err(xml_err)?;
                w.write(XmlEvent::characters(&self.rule_text())).map_err(xml_err)?;
                w.write(XmlEvent::end_element()).map_err(xml_err)?;
            }
            w.write(XmlEvent::end_element()).map_err(xml_err)?;
        }
        w.write(XmlEvent::end_element()).map_err(xml_err)?;
        w.write(XmlEvent::end_element()).map_err(xml_err)?;
        out.push(b'\n');
        Ok(out)
    }
}
