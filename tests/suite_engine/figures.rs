//! The report's figures: every kind the suite's numbers support is written, each SVG is
//! well-formed XML with an `<svg>` root, and `report.md` links every one of them.

use std::path::Path;

use crate::common::suite_env::*;

/// The SVG files of a report directory, after checking each parses to the end.
fn parse_svgs(dir: &Path) -> Vec<String> {
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
            assert!(svgs.contains(&"base-to-new-shapes.svg".to_string()), "{svgs:?}");
        } else {
            assert!(svgs.contains(&"cross-domain-world.svg".to_string()), "{svgs:?}");
        }
    }
}
