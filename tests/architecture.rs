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
    // Measuring a backend runs methods' steps as the runner builds them.
    ("device_check", 11),
    ("cli", 12),
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
    paths_after(text, "crate::")
}

/// The first segment of every path after `prefix` in a file's non-test code (in `use` trees too).
fn paths_after(text: &str, prefix: &str) -> BTreeSet<String> {
    // Unit tests at the bottom of a file may reach anywhere.
    let code = text.split("#[cfg(test)]").next().unwrap_or(text);
    let code: String = code
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find(prefix) {
        // `super::super::x` is not a sibling of this file.
        if prefix == "super::" && code[..code.len() - rest.len() + i].ends_with("super::") {
            rest = &rest[i + prefix.len()..];
            continue;
        }
        rest = &rest[i + prefix.len()..];
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
        // The crate roots, and the build script (a program of its own, not a module).
        if module == "lib" || module == "main" || module == "build" {
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

/// A folder's `mod.rs` re-exports (`pub use file::{A, B};`): which sibling file each item is from.
fn reexports(mod_rs: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for stmt in mod_rs.split(';') {
        let Some(rest) = stmt.trim().strip_prefix("pub use ") else {
            continue;
        };
        let Some((file, items)) = rest.split_once("::") else {
            continue;
        };
        let items = items.trim().trim_start_matches('{').trim_end_matches('}');
        for item in items.split(',') {
            let name = item.split(" as ").last().unwrap_or("").trim();
            if !name.is_empty() {
                out.insert(name.to_string(), file.trim().to_string());
            }
        }
    }
    out
}

/// Import circles between the files of one folder (`src/run/a.rs` → `src/run/b.rs` → `a.rs`),
/// through `super::file`, `crate::folder::file` and items the folder's `mod.rs` re-exports.
fn folder_circles(dir: &Path) -> Vec<Vec<String>> {
    let folder = dir.file_name().unwrap().to_string_lossy().to_string();
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "rs") {
            let stem = p.file_stem().unwrap().to_string_lossy().to_string();
            files.insert(stem, std::fs::read_to_string(&p).unwrap());
        }
    }
    let items = files.get("mod").map(|m| reexports(m)).unwrap_or_default();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (stem, text) in &files {
        if stem == "mod" {
            continue;
        }
        let named = paths_after(text, "super::")
            .into_iter()
            .chain(paths_after(text, &format!("crate::{folder}::")));
        let targets: BTreeSet<String> = named
            .filter_map(|n| match files.contains_key(&n) {
                true => Some(n),
                false => items.get(&n).cloned(),
            })
            .filter(|t| t != stem && t != "mod")
            .collect();
        edges.insert(stem.clone(), targets);
    }
    // Every circle found by a depth-first walk, each reported once from its smallest file.
    let mut circles = BTreeSet::new();
    fn walk(
        at: &str,
        path: &mut Vec<String>,
        edges: &BTreeMap<String, BTreeSet<String>>,
        out: &mut BTreeSet<Vec<String>>,
    ) {
        for next in edges.get(at).into_iter().flatten() {
            if next == &path[0] {
                out.insert(path.clone());
            } else if next > &path[0] && !path.contains(next) {
                path.push(next.clone());
                walk(next, path, edges, out);
                path.pop();
            }
        }
    }
    for start in edges.keys() {
        walk(start, &mut vec![start.clone()], &edges, &mut circles);
    }
    circles.into_iter().collect()
}

#[test]
fn no_import_circle_between_the_files_of_a_folder() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    let mut dirs = vec![src];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            }
        }
        for c in folder_circles(&d) {
            found.push(format!("{}: {} → {}", d.display(), c.join(" → "), c[0]));
        }
    }
    assert!(found.is_empty(), "import circles inside folders:\n{}", found.join("\n"));
}

#[test]
fn the_folder_scanner_sees_circles_through_re_exports() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("gram");
    std::fs::create_dir(&d).unwrap();
    std::fs::write(
        d.join("mod.rs"),
        "pub mod a;\npub mod b;\npub use b::{Thing, Other as O};\n",
    )
    .unwrap();
    std::fs::write(d.join("a.rs"), "use super::Thing;\n").unwrap();
    std::fs::write(d.join("b.rs"), "use crate::gram::a::f;\n").unwrap();
    assert_eq!(folder_circles(&d), vec![vec!["a".to_string(), "b".to_string()]]);
    std::fs::write(
        d.join("b.rs"),
        "#[cfg(test)]\nmod tests { use super::super::a; use super::a::f; }\n",
    )
    .unwrap();
    assert!(folder_circles(&d).is_empty());
}

#[test]
fn the_import_scanner_reads_use_trees_and_skips_tests_and_comments() {
    let text = "use crate::{clip::Clip, error::{Error, Result}};\n// crate::run\nfn f() { crate::files::x(); }\n\
                #[cfg(test)]\nmod tests { use crate::cli; }";
    let got: Vec<String> = imports(text).into_iter().collect();
    assert_eq!(got, ["clip", "error", "files"]);
}
