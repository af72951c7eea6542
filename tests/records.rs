//! The record format: records written before the record was typed (schema 1, JSON patched in
//! place) are read by the typed `Record` and written back unchanged; another schema, or a damaged
//! file, is refused with a message, never treated as a missing cell.
//!
//! `tests/fixtures/records/`: `coop-train`, `eval`, `linear-probe-train`, `gram-meta` and
//! `gram-train` are records the untyped runner wrote (the smoke suite, commit a7e370e);
//! `failed-coop-pkl` is `coop-train` edited into the shape that runner gave a cell failing after
//! it drew a CoOp few-shot file (digests `{}`, no metrics, the error).

use std::path::Path;

use gram_bench::store::{FitSummary, Record, Status, Store};

fn fixtures() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/records");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().to_string(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    assert_eq!(out.len(), 6, "{out:?}");
    out
}

#[test]
fn records_written_before_the_typed_record_read_and_write_back_unchanged() {
    for (name, bytes) in fixtures() {
        let r = Record::from_json(Path::new(&name), &bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let original: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        // Through the file's text, as a reader sees it (f32 losses print in their shortest form).
        let again: serde_json::Value = serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(again, original, "{name} does not round-trip");
    }
}

#[test]
fn typed_fields_carry_what_the_untyped_ones_held() {
    let read = |name: &str| {
        let (_, bytes) = fixtures().into_iter().find(|(n, _)| n == name).unwrap();
        Record::from_json(Path::new(name), &bytes).unwrap()
    };
    let lp = read("linear-probe-train.json");
    match lp.train.unwrap().fit {
        Some(FitSummary::Features(f)) => assert!(f.c > 0.0 && f.train_images > 0),
        other => panic!("{other:?}"),
    }
    let meta = read("gram-meta.json");
    assert!(meta.digests.corpus_sha256.is_some());
    assert!(matches!(meta.train.unwrap().fit, Some(FitSummary::Meta(m)) if m.final_query_loss.is_some()));
    let g = read("gram-train.json");
    assert_eq!(g.digests.meta.unwrap().cell, g.depends_on.unwrap());
    let failed = read("failed-coop-pkl.json");
    assert_eq!(failed.status, Status::Failed);
    assert!(failed.digests.backbone.is_empty() && failed.digests.data.is_empty());
    assert!(failed.fewshot.unwrap().file.is_some());
}

#[test]
fn another_schema_and_a_damaged_record_are_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), "s").unwrap();
    let (_, bytes) = fixtures().into_iter().find(|(n, _)| n == "eval.json").unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    v["schema"] = 2.into();
    std::fs::write(store.root.join("records/a.json"), serde_json::to_vec(&v).unwrap()).unwrap();
    let e = store.get("a").unwrap_err().to_string();
    assert!(e.contains("record schema 2") && e.contains("reads schema 1"), "{e}");
    // A record whose typed fields do not parse is unreadable, not missing.
    v["schema"] = 1.into();
    v["digests"]["data"] = "not a map".into();
    std::fs::write(store.root.join("records/b.json"), serde_json::to_vec(&v).unwrap()).unwrap();
    let e = store.get("b").unwrap_err().to_string();
    assert!(e.contains("unreadable record") && e.contains("move it away"), "{e}");
}
