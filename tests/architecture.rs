//! The house rule, checked on the source: `src/`'s top-level modules sit on floors, and a module
//! imports only modules on lower floors (the ground floor from anywhere). No import circle can
//! form under that rule, and no arrow points up. A new module has to be given a floor here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Floors from the ground up; a module may import modules of strictly lower floors only.
const FLOORS: &[(&str, u8)] = &[
    // The ground floor: no knowledge of CLIP, suites or methods.
    ("error", 0),
    ("files", 1),
    ("provenance", 1),
    ("seeds", 1),
    ("faults", 1),
    ("backend", 1),
    // The backbone knows no method.
    ("clip", 2),
    ("methods", 3),
    ("world", 3),
    ("data", 4),
    ("lock", 5),
    ("features", 5),
    ("gram", 6),
    ("suite", 7),
    ("store", 8),
    ("resolve", 9),
    // Reports and runs read the same resolution and store; neither imports the other.
    ("report", 10),
    ("run", 10),
    // Cost estimates and the Slurm launcher read the resolution and the store, like runs.
    ("estimate", 10),
    ("slurm", 10),
    ("cli", 11),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file belongs to (`src/run/cell.rs` → `run`, `src/store.rs` → `store`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy()
        .to_string();
    first.trim_end_matches(".rs").to_string()
}

/// Every `crate::NAME` a file's non-test code mentions (in `use` trees too: `crate::{a, b::c}`).
fn imports(text: &str) -> BTreeSet<String> {
    // Unit tests at the bottom of a file may reach anywhere.
    let code = text.split("#[cfg(test)]").next().unwrap_or(text);
    let code: String = code
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(tree) = rest.strip_prefix('{') {
            // A use tree: the first segment of each top-level item.
            let mut depth = 0;
            let mut item = String::new();
            for c in tree.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.insert(first_segment(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            out.insert(first_segment(&item));
        } else {
            let name = first_segment(rest);
            // `crate::name!(…)` is an exported macro, not a module.
            if !rest[name.len()..].starts_with('!') {
                out.insert(name);
            }
        }
    }
    out.remove("");
    out
}

fn first_segment(s: &str) -> String {
    s.trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

#[test]
fn modules_import_only_lower_floors() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let floors: BTreeMap<&str, u8> = FLOORS.iter().copied().collect();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    let mut seen = BTreeSet::new();
    for f in &files {
        let module = module_of(&src, f);
        if module == "lib" || module == "main" {
            continue;
        }
        seen.insert(module.clone());
        let Some(&floor) = floors.get(module.as_str()) else {
            violations.push(format!(
                "{}: module `{module}` has no floor in tests/architecture.rs",
                f.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(f).unwrap();
        for target in imports(&text) {
            if target == module {
                continue;
            }
            match floors.get(target.as_str()) {
                // `crate::Result` and other re-exports at the root.
                None if target.chars().next().is_some_and(|c| c.is_ascii_uppercase()) => {}
                None => violations.push(format!("{}: imports unknown module `{target}`", f.display())),
                Some(&t) if t >= floor && t > 1 => violations.push(format!(
                    "{}: `{module}` (floor {floor}) imports `{target}` (floor {t})",
                    f.display()
                )),
                Some(_) => {}
            }
        }
    }
    assert!(
        violations.is_empty(),
        "imports against the floors:\n{}",
        violations.join("\n")
    );
    for (m, _) in FLOORS {
        assert!(
            seen.contains(*m),
            "tests/architecture.rs names `{m}`, which src/ no longer has"
        );
    }
}

#[test]
fn the_import_scanner_reads_use_trees_and_skips_tests_and_comments() {
    let text = "use crate::{clip::Clip, error::{Error, Result}};\n// crate::run\nfn f() { crate::files::x(); }\n\
                #[cfg(test)]\nmod tests { use crate::cli; }";
    let got: Vec<String> = imports(text).into_iter().collect();
    assert_eq!(got, ["clip", "error", "files"]);
}
