//! The paper suites cannot drift from the upstream settings silently. `docs/upstream-settings.toml`
//! holds one row for every setting of the five paper suites: every field of every
//! `[methods.NAME]`, every field of GRAM's `[gram.RUN]` meta-training tables, and each experiment's
//! `seeds` and `shots`. A row either pins the value upstream runs (`upstream`, with its `source`,
//! `owner/repo@commit path:line`) or says why upstream fixes none (`unpinned`, the suite's `[U]`
//! reason). This test walks every field of each suite against that table and fails on a field with
//! no row, a value that differs from its pinned upstream value, a row the suite no longer has a field
//! for, and a malformed row. A row may also carry `known_difference`: the suite knowingly differs, the
//! test lists it, and it fails once the suite equals upstream again. The file's header documents the
//! schema; `docs/upstream-settings.md` is the readable page.

use std::collections::BTreeSet;
use std::path::Path;

use toml::{Table, Value};

const PAPER_SUITES: [&str; 5] = ["few-shot", "base-to-new", "cross-dataset", "cross-domain", "gram"];
const TABLE: &str = "docs/upstream-settings.toml";
/// The keys a row may hold.
const ROW_KEYS: [&str; 5] = ["upstream", "source", "known_difference", "unpinned", "note"];
/// The `[[experiment]]` keys that are settings; the others choose what a table reports.
const EXPERIMENT_KEYS: [&str; 2] = ["seeds", "shots"];

fn repo_file(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn suite_text(suite: &str) -> String {
    repo_file(&format!("suites/{suite}.toml"))
}

fn upstream_table() -> Table {
    toml::from_str(&repo_file(TABLE)).unwrap_or_else(|e| panic!("{TABLE}: {e}"))
}

/// What a check of the suites against the table found.
#[derive(Debug, Default)]
struct Findings {
    /// Fields with no row, values that differ, stale or malformed rows.
    problems: Vec<String>,
    /// Rows whose `known_difference` the suite shows: allowed, and listed.
    known: Vec<String>,
    /// Rows checked per suite (pinned, unpinned, known differences).
    checked: Vec<(String, usize)>,
}

/// Integers and floats compare by number (a suite may write 8 or 8.0), arrays element by element,
/// tables key by key, the rest exactly.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Integer(x), Value::Float(y)) | (Value::Float(y), Value::Integer(x)) => *x as f64 == *y,
        (Value::Float(x), Value::Float(y)) => x == y,
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y)),
        (Value::Table(x), Value::Table(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// A citation list `owner/repo@commit path:lines; …`, each repository one of `[sources]` and each
/// commit a prefix (7 or more characters) of the commit pinned there.
fn check_source(source: &str, sources: &Table) -> Result<(), String> {
    for cite in source.split("; ") {
        let bad = |why: &str| -> Result<(), String> {
            Err(format!("source `{cite}`: {why} (want `owner/repo@commit path:lines`)"))
        };
        let Some((repo_commit, place)) = cite.split_once(' ') else {
            return bad("no path");
        };
        let Some((repo, commit)) = repo_commit.split_once('@') else {
            return bad("no @commit");
        };
        let Some(pinned) = sources.get(repo).and_then(Value::as_str) else {
            return bad(&format!("{repo} is not in [sources]"));
        };
        if commit.len() < 7 || !pinned.starts_with(commit) {
            return bad(&format!("{commit} is not the pinned commit {pinned}"));
        }
        let Some((path, lines)) = place.rsplit_once(':') else {
            return bad("no :line");
        };
        let line_chars = lines.chars().all(|c| c.is_ascii_digit() || c == ',' || c == '-');
        let ends = |c: Option<char>| c.is_some_and(|c| c.is_ascii_digit());
        if path.is_empty()
            || path.contains(' ')
            || !line_chars
            || !ends(lines.chars().next())
            || !ends(lines.chars().last())
        {
            return bad("a path and its line numbers");
        }
    }
    Ok(())
}

/// A non-empty string under `key`, `None` when the row has no `key`.
fn text<'a>(row: &'a Table, key: &str, at: &str, problems: &mut Vec<String>) -> Option<&'a str> {
    let v = row.get(key)?;
    match v.as_str() {
        Some(s) if !s.trim().is_empty() => Some(s),
        _ => {
            problems.push(format!("{at}: `{key}` must be a non-empty string"));
            None
        }
    }
}

/// One field's value against its row.
fn check_row(at: &str, got: &Value, row: &Value, sources: &Table, f: &mut Findings) {
    let Some(row) = row.as_table() else {
        f.problems.push(format!("{at}: its row in {TABLE} is not a table"));
        return;
    };
    for k in row.keys() {
        if !ROW_KEYS.contains(&k.as_str()) {
            f.problems.push(format!("{at}: unknown row key `{k}` in {TABLE}"));
        }
    }
    text(row, "note", at, &mut f.problems);
    let source = text(row, "source", at, &mut f.problems);
    if let Some(Err(e)) = source.map(|s| check_source(s, sources)) {
        f.problems.push(format!("{at}: {e}"));
    }
    match (row.get("upstream"), row.get("unpinned")) {
        (Some(want), None) => {
            if !row.contains_key("source") {
                f.problems.push(format!("{at}: an `upstream` row needs its `source`"));
            }
            let source = source.unwrap_or("no source");
            let known = row
                .contains_key("known_difference")
                .then(|| text(row, "known_difference", at, &mut f.problems));
            match (known, same(got, want)) {
                (None, true) | (Some(None), _) => {}
                (None, false) => f.problems.push(format!("{at} = {got}, upstream {want} ({source})")),
                (Some(Some(why)), false) => f.known.push(format!("{at} = {got}, upstream {want} ({source}): {why}")),
                (Some(Some(_)), true) => f.problems.push(format!(
                    "{at} = {got} is upstream's value ({source}): drop the row's `known_difference`"
                )),
            }
        }
        (None, Some(_)) => {
            text(row, "unpinned", at, &mut f.problems);
            if row.contains_key("known_difference") {
                f.problems
                    .push(format!("{at}: `known_difference` needs an `upstream` value"));
            }
        }
        _ => f
            .problems
            .push(format!("{at}: a row holds exactly one of `upstream` and `unpinned`")),
    }
}

/// Every field of `value` at `path` and below: a row at a path covers the value there; without one,
/// a table's entries are walked; a value with no row is a problem. Marks the rows used.
fn walk(
    at: &str,
    path: &str,
    value: &Value,
    rows: &Table,
    used: &mut BTreeSet<String>,
    sources: &Table,
    f: &mut Findings,
) {
    if let Some(row) = rows.get(path) {
        used.insert(path.to_string());
        check_row(&format!("{at} {path}"), value, row, sources, f);
    } else if let Value::Table(t) = value {
        for (k, v) in t {
            let below = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            walk(at, &below, v, rows, used, sources, f);
        }
    } else {
        f.problems.push(format!("{at} {path} = {value}: no row in {TABLE}"));
    }
}

/// The rows of `[section.suite.name]` (empty when absent), and a problem when the group is not a table.
fn group(table: &Table, section: &str, suite: &str, name: &str, f: &mut Findings) -> Table {
    match table.get(section).and_then(|s| s.get(suite)).and_then(|s| s.get(name)) {
        None => Table::new(),
        Some(Value::Table(t)) => t.clone(),
        Some(_) => {
            f.problems
                .push(format!("{TABLE} [{section}.{suite}.{name}] is not a table"));
            Table::new()
        }
    }
}

/// Rows of `rows` the walk did not use: fields the suite does not have (or a row above covers).
fn stale(at: &str, rows: &Table, used: &BTreeSet<String>, f: &mut Findings) {
    for k in rows.keys().filter(|k| !used.contains(*k)) {
        f.problems.push(format!(
            "{TABLE} {at} \"{k}\": the suite has no such field (or a row above it covers it)"
        ));
    }
}

/// The paper suites (their text from `read`) against the upstream table.
fn drift(read: &dyn Fn(&str) -> String, table: &Table) -> Findings {
    let mut f = Findings::default();
    let empty = Table::new();
    let sources = table.get("sources").and_then(Value::as_table).unwrap_or(&empty).clone();
    if sources.is_empty() {
        f.problems.push(format!("{TABLE}: no [sources]"));
    }
    for (repo, commit) in &sources {
        let full = commit
            .as_str()
            .is_some_and(|c| c.len() == 40 && c.chars().all(|c| c.is_ascii_hexdigit()));
        if !full {
            f.problems
                .push(format!("{TABLE} [sources] {repo}: want the full 40-digit commit"));
        }
    }
    for (k, v) in table {
        let sections = ["methods", "meta_training", "experiments"];
        if k != "sources" && !sections.contains(&k.as_str()) {
            f.problems.push(format!("{TABLE}: unknown table [{k}]"));
        } else if k != "sources" {
            for suite in v.as_table().map(|t| t.keys().collect()).unwrap_or_else(Vec::new) {
                if !PAPER_SUITES.contains(&suite.as_str()) {
                    f.problems.push(format!("{TABLE} [{k}.{suite}]: not a paper suite"));
                }
            }
        }
    }
    for suite in PAPER_SUITES {
        let doc: Table = match toml::from_str(&read(suite)) {
            Ok(d) => d,
            Err(e) => {
                f.problems.push(format!("{suite}.toml: {e}"));
                continue;
            }
        };
        let before = f.problems.len();
        let mut checked = 0;
        // Two sections walked whole: [methods.NAME] and [gram.RUN].
        for (section, suite_key) in [("methods", "methods"), ("meta_training", "gram")] {
            let tables = doc.get(suite_key).and_then(Value::as_table).unwrap_or(&empty);
            for (name, fields) in tables {
                let at = format!("{suite}.toml [{suite_key}.{name}]");
                let rows = group(table, section, suite, name, &mut f);
                let mut used = BTreeSet::new();
                walk(&at, "", fields, &rows, &mut used, &sources, &mut f);
                checked += used.len();
                stale(&format!("[{section}.{suite}.{name}]"), &rows, &used, &mut f);
            }
            let groups = table.get(section).and_then(|s| s.get(suite)).and_then(Value::as_table);
            for name in groups.into_iter().flat_map(|g| g.keys()) {
                if !tables.contains_key(name) {
                    f.problems.push(format!(
                        "{TABLE} [{section}.{suite}.{name}]: {suite}.toml has no [{suite_key}.{name}]"
                    ));
                }
            }
        }
        // Each experiment's seeds and shots, by protocol.
        let experiments = doc
            .get("experiment")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut protocols = BTreeSet::new();
        for exp in &experiments {
            let protocol = exp.get("protocol").and_then(Value::as_str).unwrap_or("?").to_string();
            let at = format!("{suite}.toml [[experiment]] protocol = \"{protocol}\"");
            let rows = group(table, "experiments", suite, &protocol, &mut f);
            let mut used = BTreeSet::new();
            for key in EXPERIMENT_KEYS {
                if let Some(v) = exp.get(key) {
                    walk(&at, key, v, &rows, &mut used, &sources, &mut f);
                }
            }
            checked += used.len();
            stale(&format!("[experiments.{suite}.{protocol}]"), &rows, &used, &mut f);
            protocols.insert(protocol);
        }
        let groups = table
            .get("experiments")
            .and_then(|s| s.get(suite))
            .and_then(Value::as_table);
        for name in groups.into_iter().flat_map(|g| g.keys()) {
            if !protocols.contains(name) {
                f.problems.push(format!(
                    "{TABLE} [experiments.{suite}.{name}]: {suite}.toml has no such experiment"
                ));
            }
        }
        if checked == 0 && f.problems.len() == before {
            f.problems.push(format!("{suite}.toml: no field checked"));
        }
        f.checked.push((suite.to_string(), checked));
    }
    f
}

#[test]
fn every_paper_suite_setting_has_its_upstream_row() {
    let f = drift(&suite_text, &upstream_table());
    assert!(
        f.problems.is_empty(),
        "paper suites against {TABLE}:\n{}",
        f.problems.join("\n")
    );
    for k in &f.known {
        println!("known difference: {k}");
    }
    // Every suite was read: each has methods, and gram.toml its meta-training runs too.
    assert_eq!(f.checked.len(), PAPER_SUITES.len());
    for (suite, n) in &f.checked {
        assert!(*n >= 20, "{suite}.toml: only {n} rows checked");
    }
}

/// The negative cases run on the real table and suites with one change each.
fn with_suite_edit(suite: &'static str, from: &'static str, to: &'static str) -> impl Fn(&str) -> String {
    move |s: &str| {
        let text = suite_text(s);
        if s == suite {
            assert!(text.contains(from), "{suite}.toml has no `{from}`");
            text.replacen(from, to, 1)
        } else {
            text
        }
    }
}

fn row_mut<'t>(table: &'t mut Table, section: &str, suite: &str, name: &str) -> &'t mut Table {
    table[section][suite][name].as_table_mut().unwrap()
}

#[test]
fn a_changed_value_is_reported_with_its_source() {
    let f = drift(
        &with_suite_edit("cross-domain", "batch_size = 128", "batch_size = 32"),
        &upstream_table(),
    );
    assert_eq!(f.problems.len(), 1, "{:?}", f.problems);
    let p = &f.problems[0];
    assert!(
        p.contains("cross-domain.toml [methods.kgcoop] batch_size = 32, upstream 128"),
        "{p}"
    );
    assert!(
        p.contains("htyao89/KgCoOp@c43ccc3 KgCoOp/configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml:3"),
        "{p}"
    );

    // A nested field, a meta-training field and an experiment's seeds are compared as well.
    for (suite, from, to, want) in [
        (
            "base-to-new",
            "lr = 0.0035",
            "lr = 0.0025",
            "base-to-new.toml [methods.maple] optim.lr = 0.0025, upstream 0.0035",
        ),
        (
            "gram",
            "clip_norm = 1.0",
            "clip_norm = 5.0",
            "gram.toml [gram.text] train.clip_norm = 5.0, upstream 1.0",
        ),
        (
            "few-shot",
            "seeds = [1, 2, 3]",
            "seeds = [1, 2]",
            "protocol = \"few-shot\" seeds = [1, 2], upstream [1, 2, 3]",
        ),
    ] {
        let f = drift(&with_suite_edit(suite, from, to), &upstream_table());
        assert_eq!(f.problems.len(), 1, "{:?}", f.problems);
        assert!(f.problems[0].contains(want), "{:?}", f.problems);
    }
}

#[test]
fn a_field_without_a_row_is_reported() {
    // A field the suite gains.
    let read = with_suite_edit(
        "few-shot",
        "[methods.maple]\nkind = \"maple\"\n",
        "[methods.maple]\nkind = \"maple\"\nwarmup_type = \"linear\"\n",
    );
    let f = drift(&read, &upstream_table());
    assert_eq!(
        f.problems,
        vec![format!(
            "few-shot.toml [methods.maple] warmup_type = \"linear\": no row in {TABLE}"
        )]
    );
    // A row the table loses, at the top level and inside a flattened table.
    for (suite, method, key) in [
        ("cross-domain", "promptsrc", "vision_depth"),
        ("base-to-new", "prograd", "epochs.imagenet"),
    ] {
        let mut table = upstream_table();
        assert!(row_mut(&mut table, "methods", suite, method).remove(key).is_some());
        let f = drift(&suite_text, &table);
        assert_eq!(f.problems.len(), 1, "{:?}", f.problems);
        assert!(
            f.problems[0].starts_with(&format!("{suite}.toml [methods.{method}] {key} = ")),
            "{:?}",
            f.problems
        );
        assert!(
            f.problems[0].ends_with("no row in docs/upstream-settings.toml"),
            "{:?}",
            f.problems
        );
    }
    // A whole method without rows: each of its fields is reported.
    let mut table = upstream_table();
    table["methods"]["cross-dataset"]
        .as_table_mut()
        .unwrap()
        .remove("cocoop");
    let f = drift(&suite_text, &table);
    assert_eq!(f.problems.len(), 12, "{:?}", f.problems);
    assert!(
        f.problems
            .iter()
            .all(|p| p.starts_with("cross-dataset.toml [methods.cocoop] ")),
        "{:?}",
        f.problems
    );
}

#[test]
fn a_row_without_its_field_is_reported() {
    let valid = toml::from_str::<Table>("r = { upstream = false, source = \"KaiyangZhou/CoOp@ff61507 train.py:92\" }")
        .unwrap()["r"]
        .clone();
    let cases: [(&str, &str, &str, &str); 4] = [
        ("methods", "cross-dataset", "coop", "optim.nesterov"),
        ("methods", "cross-dataset", "kgcoop", "csc"),
        ("meta_training", "gram", "text", "train.mixup"),
        ("experiments", "cross-domain", "cross-domain", "datasets"),
    ];
    for (section, suite, name, key) in cases {
        let mut table = upstream_table();
        let groups = table[section][suite].as_table_mut().unwrap();
        let group = groups
            .entry(name.to_string())
            .or_insert_with(|| Value::Table(Table::new()));
        group.as_table_mut().unwrap().insert(key.to_string(), valid.clone());
        let f = drift(&suite_text, &table);
        assert_eq!(f.problems.len(), 1, "{section}.{suite}.{name}.{key}: {:?}", f.problems);
        assert!(
            f.problems[0].contains(&format!("[{section}.{suite}.{name}]")),
            "{:?}",
            f.problems
        );
    }
    // A row under a suite that is not a paper suite.
    let mut table = upstream_table();
    table["methods"]
        .as_table_mut()
        .unwrap()
        .insert("smoke".into(), Value::Table(Table::new()));
    let f = drift(&suite_text, &table);
    assert_eq!(f.problems, vec![format!("{TABLE} [methods.smoke]: not a paper suite")]);
}

/// One change to a row of the table.
type RowEdit = fn(&mut Table);

#[test]
fn a_malformed_row_is_reported() {
    let at = "cross-domain.toml [methods.vpt] depth";
    let edits: [(&str, RowEdit); 9] = [
        ("exactly one of", |r: &mut Table| {
            r.insert("unpinned".into(), Value::String("both".into()));
        }),
        ("exactly one of", |r: &mut Table| {
            r.remove("upstream");
        }),
        ("needs its `source`", |r: &mut Table| {
            r.remove("source");
        }),
        ("`source` must be a non-empty string", |r: &mut Table| {
            r.insert("source".into(), Value::String(" ".into()));
        }),
        ("is not in [sources]", |r: &mut Table| {
            r.insert("source".into(), Value::String("someone/VPT@69bce21 vpt.yaml:37".into()));
        }),
        ("is not the pinned commit", |r: &mut Table| {
            r.insert(
                "source".into(),
                Value::String("muzairkhattak/multimodal-prompt-learning@1234567 vpt.yaml:37".into()),
            );
        }),
        ("a path and its line numbers", |r: &mut Table| {
            r.insert(
                "source".into(),
                Value::String("muzairkhattak/multimodal-prompt-learning@69bce21 vpt.yaml:".into()),
            );
        }),
        ("unknown row key `upstrem`", |r: &mut Table| {
            r.insert("upstrem".into(), Value::Integer(12));
        }),
        ("drop the row's `known_difference`", |r: &mut Table| {
            r.insert("known_difference".into(), Value::String("not one".into()));
        }),
    ];
    for (want, edit) in edits {
        let mut table = upstream_table();
        edit(
            row_mut(&mut table, "methods", "cross-domain", "vpt")["depth"]
                .as_table_mut()
                .unwrap(),
        );
        let f = drift(&suite_text, &table);
        assert_eq!(f.problems.len(), 1, "{want}: {:?}", f.problems);
        assert!(
            f.problems[0].starts_with(at) && f.problems[0].contains(want),
            "{want}: {:?}",
            f.problems
        );
    }
    // An unpinned row needs its reason, and cannot claim a known difference.
    for (want, row) in [
        ("`unpinned` must be a non-empty string", "r = { unpinned = \"\" }"),
        (
            "`known_difference` needs an `upstream` value",
            "r = { unpinned = \"why\", known_difference = \"what\" }",
        ),
    ] {
        let mut table = upstream_table();
        let row = toml::from_str::<Table>(row).unwrap()["r"].clone();
        row_mut(&mut table, "methods", "few-shot", "zsclip").insert("kind".into(), row);
        let f = drift(&suite_text, &table);
        assert_eq!(f.problems.len(), 1, "{want}: {:?}", f.problems);
        assert!(
            f.problems[0].starts_with("few-shot.toml [methods.zsclip] kind") && f.problems[0].contains(want),
            "{:?}",
            f.problems
        );
    }
}

#[test]
fn a_known_difference_is_listed_until_the_suite_equals_upstream() {
    let mut table = upstream_table();
    let row = row_mut(&mut table, "methods", "cross-domain", "kgcoop")["batch_size"]
        .as_table_mut()
        .unwrap();
    row.insert(
        "known_difference".into(),
        Value::String("the suite trains at batch 32".into()),
    );
    let f = drift(
        &with_suite_edit("cross-domain", "batch_size = 128", "batch_size = 32"),
        &table,
    );
    assert!(f.problems.is_empty(), "{:?}", f.problems);
    assert_eq!(f.known.len(), 1, "{:?}", f.known);
    assert!(
        f.known[0].contains("[methods.kgcoop] batch_size = 32, upstream 128")
            && f.known[0].ends_with("the suite trains at batch 32")
    );
    let f = drift(&suite_text, &table);
    assert_eq!(f.problems.len(), 1, "{:?}", f.problems);
    assert!(
        f.problems[0].contains("drop the row's `known_difference`"),
        "{:?}",
        f.problems
    );
}

/// Every paper suite's method computes at upstream's precision: fp16 (`PREC "fp16"`, the default of
/// CoOp@ff61507 train.py:94,100 and PromptSRC@bb95c77 train.py:109,118,132), VPT and GRAM on VPT in
/// fp32 (multimodal-prompt-learning trainers/vpt.py:41 calls `model.float()`).
fn precision_drift(read: &dyn Fn(&str) -> String) -> Vec<String> {
    let mut wrong = Vec::new();
    for suite in PAPER_SUITES {
        let doc: toml::Value = toml::from_str(&read(suite)).unwrap();
        let precision = &doc["precision"];
        let methods = doc["methods"].as_table().unwrap();
        for (name, m) in methods {
            let on_vpt = m["kind"].as_str() == Some("vpt")
                || (m["kind"].as_str() == Some("gram")
                    && m.get("host")
                        .and_then(|h| h.as_str())
                        .and_then(|h| methods.get(h))
                        .and_then(|h| h["kind"].as_str())
                        == Some("vpt"));
            let want = if on_vpt { "f32" } else { "f16" };
            let got = precision
                .get("methods")
                .and_then(|t| t.get(name.as_str()))
                .or_else(|| precision.get("default"))
                .and_then(|v| v.as_str());
            if got != Some(want) {
                wrong.push(format!(
                    "{suite}.toml [methods.{name}] computes at {got:?}; upstream at {want}"
                ));
            }
        }
    }
    wrong
}

#[test]
fn every_paper_suite_method_computes_at_the_upstream_precision() {
    let wrong = precision_drift(&suite_text);
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // And the check sees a change.
    let read = |suite: &str| {
        let text = suite_text(suite);
        if suite == "gram" {
            text.replace(
                "methods = { vpt = \"f32\", gram-vpt = \"f32\" }",
                "methods = { vpt = \"f32\" }",
            )
        } else {
            text
        }
    };
    assert_eq!(
        precision_drift(&read),
        vec!["gram.toml [methods.gram-vpt] computes at Some(\"f16\"); upstream at f32".to_string()]
    );
}
