//! `gram-bench datasets lock` and `datasets verify`: pin what is under a data root, and say exactly
//! what differs from the pins (or what is wrong on disk), each finding with the fix it needs.

use std::path::Path;

use super::{catalog_with, Dataset, DatasetDef, Layout};
use crate::error::Result;
use crate::lock::{DatasetEntry, Lock};

/// The pin of a dataset as it is on disk now.
pub fn entry_of(ds: &Dataset) -> DatasetEntry {
    DatasetEntry {
        split_sha256: ds.split_digest.clone(),
        classes: ds.classnames.len(),
        counts: [ds.train.len(), ds.val.len(), ds.test.len()],
    }
}

/// Layout problems worth a specific message, looked for before (or when) loading fails.
fn layout_hints(root: &Path, def: &DatasetDef) -> Vec<String> {
    let dir = root.join(&def.folder);
    let mut out = Vec::new();
    if let Layout::ImageNet = def.layout {
        let val = dir.join("images").join("val");
        if let Ok(entries) = std::fs::read_dir(&val) {
            let loose = entries
                .filter_map(|e| e.ok())
                .filter(|e| e.path().is_file() && e.file_name().to_string_lossy().to_lowercase().ends_with(".jpeg"))
                .count();
            if loose > 0 {
                out.push(format!(
                    "{}: {loose} loose JPEGs; CoOp expects one folder per wnid (sort them into class folders, \
                     e.g. with the valprep.sh script that comes with the ImageNet validation set)",
                    val.display()
                ));
            }
        }
    }
    if matches!(
        def.layout,
        Layout::ImageNet | Layout::WnidFolders { .. } | Layout::IndexFolders { .. }
    ) && dir.is_dir()
        && !dir.join("classnames.txt").is_file()
    {
        out.push(format!(
            "{}: no classnames.txt (CoOp's DATASETS.md links the file; copy it into this folder)",
            dir.display()
        ));
    }
    out
}

/// One dataset's findings (empty = all good) and its state on disk if it loaded.
pub fn verify_one(root: &Path, def: &DatasetDef, lock: &Lock, deep: bool) -> (Vec<String>, Option<DatasetEntry>) {
    let mut problems = layout_hints(root, def);
    let ds = match Dataset::load(root, def) {
        Ok(ds) => ds,
        Err(e) => {
            if problems.is_empty() {
                problems.push(e.to_string());
            }
            return (problems, None);
        }
    };
    let now = entry_of(&ds);
    match lock.datasets.get(&def.name) {
        None => problems.push(format!(
            "not pinned in datasets.lock (run `gram-bench datasets lock {}` to pin what is there)",
            def.name
        )),
        Some(p) => {
            if p.split_sha256 != now.split_sha256 {
                problems.push(format!(
                    "split definition changed: SHA-256 {} on disk, {} pinned (restore the original split file, \
                     or re-pin with `gram-bench datasets lock {}` if the change is intended)",
                    now.split_sha256, p.split_sha256, def.name
                ));
            }
            if p.counts != now.counts || p.classes != now.classes {
                problems.push(format!(
                    "{} classes and train/val/test {:?} on disk, {} and {:?} pinned",
                    now.classes, now.counts, p.classes, p.counts
                ));
            }
        }
    }
    if deep {
        let missing: Vec<String> = ds
            .train
            .iter()
            .chain(&ds.val)
            .chain(&ds.test)
            .filter(|d| !d.path.is_file())
            .map(|d| d.path.display().to_string())
            .collect();
        if let Some(first) = missing.first() {
            problems.push(format!(
                "{} images the split lists are absent, e.g. {first} (re-extract the dataset archive)",
                missing.len()
            ));
        }
    }
    (problems, Some(now))
}

/// The CoOp and user datasets (not the embedded ones), or the given ones.
pub fn selected(names: &[String], lock: &Lock) -> Result<Vec<DatasetDef>> {
    let all: Vec<DatasetDef> = catalog_with(lock).into_iter().filter(|d| !d.embedded).collect();
    if names.is_empty() {
        return Ok(all);
    }
    names
        .iter()
        .map(|n| {
            all.iter().find(|d| &d.name == n).cloned().ok_or_else(|| {
                crate::error::Error::Input(
                    super::check_dataset_name(n, lock)
                        .err()
                        .unwrap_or_else(|| format!("`{n}` is an embedded dataset")),
                )
            })
        })
        .collect()
}
