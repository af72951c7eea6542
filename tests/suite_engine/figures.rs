//! The report's figures: every kind the suite's numbers support is written, each SVG is
//! well-formed XML with an `<svg>` root, and `report.md` links every one of them.

use std::path::Path;

use crate::common::suite_env::*;

/// The SVG files of a report directory, after checking each parses to the end.
pub fn parse_svgs(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".svg") {
            continue;
        }
        let file = std::fs::File::open(e.path()).unwrap();
        let mut root = None;
        for ev in xml::reader::EventReader::new(std::io::BufReader::new(file)) {
            match ev.unwrap_or_else(|err| panic!("{name}: {err}")) {
                xml::reader::XmlEvent::StartElement { name: n, .. } if root.is_none() => root = Some(n.local_name),
                _ => {}
            }
        }
        assert_eq!(root.as_deref(), Some("svg"), "{name}");
        names.push(name);
    }
    names.sort();
    names
}

#[test]
fn every_figure_is_written_well_formed_and_linked() {
    let env = Env::new();
    // TINY at one shot count has bars, not curves.
    let one = env.write_suite("one.toml", TINY);
    let out = env.run(&["run", one.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(parse_svgs(&env.path("reports/tiny")).contains(&"few-shot-1-shots.svg".to_string()));
    // TINY at 1 and 2 shots (a curve needs two points), and the GRAM suite's cross-domain table.
    let few = env.write_suite("tiny.toml", &TINY.replacen("shots = [1]", "shots = [1, 2]", 1));
    for s in [few.clone(), env.write_suite("gram.toml", &tiny_gram_suite())] {
        let out = env.run(&["run", s.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
        let dir = env.path("reports/tiny");
        let svgs = parse_svgs(&dir);
        let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
        for f in &svgs {
            assert!(md.contains(&format!("]({f})")), "report.md does not link {f}");
        }
        if s == few {
            assert!(svgs.contains(&"few-shot-shapes.svg".to_string()), "{svgs:?}");
            assert!(
                !svgs.contains(&"few-shot-1-shots.svg".to_string()),
                "stale bars removed: {svgs:?}"
            );
            assert!(svgs.contains(&"base-to-new-shapes.svg".to_string()), "{svgs:?}");
        } else {
            assert!(svgs.contains(&"cross-domain-world.svg".to_string()), "{svgs:?}");
        }
    }
}

/// The row of `method` in the first markdown table after `heading` in `md`, split into cells.
fn layout_row(md: &str, heading: &str, method: &str) -> Vec<String> {
    let at = md.find(heading).unwrap_or_else(|| panic!("no `{heading}` in:\n{md}"));
    md[at..]
        .lines()
        .find(|l| l.starts_with(&format!("| {method} ")))
        .unwrap_or_else(|| panic!("no row {method} after `{heading}`"))
        .split('|')
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect()
}

/// A published table with CoOp's and zero-shot CLIP's 1-shot numbers on `shapes`.
fn published(coop: f64, confirmed: bool) -> String {
    serde_json::json!({
        "table": "test", "protocol": "few-shot", "backbone": "micro-clip", "source": "test",
        "rows": [
            {"method": "CoOp", "dataset": "shapes", "metric": "accuracy", "shots": 1, "value": coop, "confirmed": confirmed},
            {"method": "CLIP", "dataset": "shapes", "metric": "accuracy", "shots": 0, "value": 100.0, "confirmed": true}
        ]
    })
    .to_string()
}

#[test]
fn paper_layout_cells_read_reproduced_published_delta_and_mark() {
    let env = Env::new();
    // CoOp's number far below anything reproduced (▲, unconfirmed), zero-shot's above (▼).
    std::fs::write(env.path("few.json"), published(0.5, false)).unwrap();
    let s = env.write_suite(
        "tiny.toml",
        &TINY.replace("published = []", "published = [\"few.json\"]"),
    );
    let s = s.to_str().unwrap();
    let out = env.run(&["run", s]);
    assert!(out.status.success(), "{}", stderr(&out));
    let md = std::fs::read_to_string(env.path("reports/tiny/report.md")).unwrap();
    let agg: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(env.path("reports/tiny/aggregate.json")).unwrap()).unwrap();
    let mean = |method: &str| {
        agg.iter()
            .find(|r| r["method"] == method && r["dataset"] == "shapes" && r["protocol"] == "few-shot")
            .unwrap()["mean"]
            .as_f64()
            .unwrap()
    };
    let (coop, zs) = (mean("coop"), mean("zs"));
    let table = "1 shots, top-1 accuracy";
    let above = format!("{coop:.2} (0.50 [U]) {:+.2} ▲", coop - 0.5);
    // Columns: shapes, then the average over the suite's one dataset (no published number, complete).
    assert_eq!(layout_row(&md, table, "coop")[1], above);
    assert!(!layout_row(&md, table, "coop")[2].contains('†'));
    assert_eq!(
        layout_row(&md, table, "zs")[1],
        format!("{zs:.2} (100.00) {:+.2} ▼", zs - 100.0)
    );
    // Published at what was reproduced: within the check tolerance.
    std::fs::write(env.path("few.json"), published(coop, true)).unwrap();
    let out = env.run(&["report", s]);
    assert!(out.status.success(), "{}", stderr(&out));
    let md = std::fs::read_to_string(env.path("reports/tiny/report.md")).unwrap();
    assert_eq!(
        layout_row(&md, table, "coop")[1],
        format!("{coop:.2} ({coop:.2}) +0.00 ✓")
    );
    // Base-to-new has no published table here: CoCoOp's sub-table layout with mean ± std cells.
    let b2n = layout_row(&md, "(b) shapes, 1 shots", "coop");
    assert_eq!(b2n.len(), 4, "method, base, new, HM: {b2n:?}");
    assert!(
        b2n[1].contains(" ± ") && !b2n[3].contains(" ± "),
        "HM is derived, without a spread: {b2n:?}"
    );
}
