//! The report's Findings section, and `check` as the embedded suites use it (`fail_on =
//! "any-change"`, `--only`).

use crate::common::suite_env::*;

const FINDING: &str = r#"
[[finding]]
id = "F1"
claim = "CoOp beats zero-shot CLIP"
reference = "a test"
note = "A note on this world."
[[finding.contrast]]
label = "CoOp − zero-shot"
expect = "positive"
plus = [{ protocol = "few-shot", method = "coop", dataset = "shapes", shots = 1, metric = "accuracy" }]
minus = [{ protocol = "few-shot", method = "zs", dataset = "shapes", shots = 1, metric = "accuracy" }]
"#;

#[test]
fn a_declared_finding_is_judged_in_the_report_and_in_findings_json() {
    let env = Env::new();
    let suite = env.write_suite("tiny.toml", &format!("{TINY}{FINDING}"));
    let out = env.run(&["run", suite.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let md = std::fs::read_to_string(env.path("reports/tiny/report.md")).unwrap();
    assert!(md.contains("## Findings") && md.contains("**F1**"), "{md}");
    // The suite's note, printed under the table and kept in findings.json.
    assert!(md.contains("- **F1**: A note on this world."), "{md}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.path("reports/tiny/findings.json")).unwrap()).unwrap();
    assert_eq!(json[0]["note"], "A note on this world.", "{json}");
    let c = &json[0]["contrasts"][0];
    assert_eq!(c["n"], 2, "{json}");
    assert!(
        ["holds", "unclear", "contradicted"].contains(&c["verdict"].as_str().unwrap()),
        "{json}"
    );
    // The contrast in the findings' forest plot, linked from the report.
    let forest = std::fs::read_to_string(env.path("reports/tiny/findings-forest.svg")).unwrap();
    assert!(
        forest.contains("F1 CoOp − zero-shot (&gt; 0)") || forest.contains("F1 CoOp − zero-shot (> 0)"),
        "{forest}"
    );
    assert!(md.contains("](findings-forest.svg)"));
}

#[test]
fn a_finding_naming_a_number_no_experiment_produces_is_refused() {
    let env = Env::new();
    let text = format!(
        "{TINY}{}",
        FINDING.replace(
            "shots = 1, metric = \"accuracy\" }]\nminus",
            "shots = 16, metric = \"accuracy\" }]\nminus"
        )
    );
    let suite = env.write_suite("tiny.toml", &text);
    let out = env.run(&["validate", suite.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no experiment produces few-shot coop shapes 16-shot"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn under_any_change_a_gain_fails_the_check_and_only_selects_what_is_compared() {
    let env = Env::new();
    let text = TINY
        .replace("abs_tolerance = 1.0", "abs_tolerance = 0.01")
        .replace("std_factor = 2.0", "std_factor = 0.0")
        .replace("fail_on = \"regression\"", "fail_on = \"any-change\"");
    let suite = env.write_suite("tiny.toml", &text);
    let s = suite.to_str().unwrap();
    let out = env.run(&["run", s]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.run(&["baseline", "save", "nightly", s]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The baseline says zero-shot was 5 points worse than it is: the current number "improved".
    let path = env.path("baselines/nightly.json");
    let mut b: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for row in b["rows"].as_array_mut().unwrap() {
        if row["method"] == "zs" {
            row["mean"] = serde_json::json!(row["mean"].as_f64().unwrap() - 5.0);
        }
    }
    std::fs::write(&path, serde_json::to_vec(&b).unwrap()).unwrap();
    // Their folder does not exist yet: check makes it.
    let (junit, summary) = (env.path("ci/junit.xml"), env.path("ci/summary.md"));
    let ci = [
        "--junit",
        junit.to_str().unwrap(),
        "--summary",
        summary.to_str().unwrap(),
    ];
    let out = env.run(&[&["check", s, "--baseline", "nightly"][..], &ci].concat());
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(stdout.contains("CHANGED"));
    // The CI files are written on failure too, and count what the table shows.
    let changed = stdout.lines().filter(|l| l.contains("CHANGED")).count() - 1; // less the rule line
    let metrics = stdout.lines().filter(|l| l.starts_with('|')).count() - 2; // less header and rule
    let (cases, failures) = junit_counts(&junit);
    assert_eq!((cases, failures), (metrics, changed));
    assert!(changed > 0 && changed < metrics);
    let md = std::fs::read_to_string(&summary).unwrap();
    assert!(md.contains("against baseline `nightly` — FAILED"), "{md}");
    assert!(
        md.contains(&format!("{metrics} metrics:")) && md.contains(&format!("{changed} changed")),
        "{md}"
    );
    // CoOp's metrics alone are unchanged: that check passes; a filter matching nothing is an error.
    let out = env.run(&[&["check", s, "--baseline", "nightly", "--only", "method=coop"][..], &ci].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(junit_counts(&junit).1, 0);
    assert!(std::fs::read_to_string(&summary).unwrap().contains("— passed"));
    let out = env.run(&["check", s, "--baseline", "nightly", "--only", "method=nothing"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no baseline metric matches method=nothing"),
        "{}",
        stderr(&out)
    );
}

/// (test cases, failures) of a JUnit file, read as XML.
fn junit_counts(path: &std::path::Path) -> (usize, usize) {
    use xml::reader::{EventReader, XmlEvent};
    let file = std::fs::File::open(path).unwrap();
    let (mut cases, mut failures) = (0, 0);
    for ev in EventReader::new(std::io::BufReader::new(file)) {
        if let XmlEvent::StartElement { name, .. } = ev.expect("well-formed JUnit XML") {
            match name.local_name.as_str() {
                "testcase" => cases += 1,
                "failure" => failures += 1,
                _ => {}
            }
        }
    }
    (cases, failures)
}
