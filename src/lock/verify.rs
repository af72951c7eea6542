//! `gram-bench datasets lock` and `datasets verify`: pin what is under a data root, and say exactly
//! what differs from the pins (or what is wrong on disk), each finding with the fix it needs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::{DatasetEntry, Lock};
use crate::data::{catalog_with, check_dataset_name, Dataset, DatasetDef, Layout};
use crate::error::Result;
use crate::files::file_sha256;

/// The pin of a dataset as it is on disk now (`images_sha256` only when asked for: it reads every
/// image).
pub(crate) fn entry_of(ds: &Dataset, images_sha256: Option<String>) -> DatasetEntry {
    DatasetEntry {
        split_source: ds.split_source(),
        split_sha256: ds.split_digest.clone(),
        classnames_sha256: ds.classnames_digest.clone(),
        classes: ds.classnames.len(),
        counts: [ds.train.len(), ds.val.len(), ds.test.len()],
        images_sha256,
    }
}

/// Every distinct image the splits list, sorted.
fn images_of(ds: &Dataset) -> Vec<PathBuf> {
    let set: BTreeSet<&PathBuf> = ds
        .train
        .iter()
        .chain(&ds.val)
        .chain(&ds.test)
        .map(|d| &d.path)
        .collect();
    set.into_iter().cloned().collect()
}

/// SHA-256 over `relative path \t SHA-256 of the file` lines of every image the splits list, in
/// path order (files hashed in parallel). Absent files are errors.
pub(crate) fn image_tree_digest(root: &Path, ds: &Dataset) -> Result<String> {
    let base = root.join(&ds.def.folder);
    let files = images_of(ds);
    let digests: Vec<String> = files.par_iter().map(|p| file_sha256(p)).collect::<Result<_>>()?;
    let mut h = Sha256::new();
    for (p, d) in files.iter().zip(digests) {
        let rel = p.strip_prefix(&base).unwrap_or(p);
        h.update(format!("{}\t{d}\n", rel.to_string_lossy()).as_bytes());
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// How the data on disk differ from a pin (empty = as pinned); the split and class-name digests
/// and counts, which `run` also refuses.
pub(crate) fn pin_mismatches(name: &str, pin: &DatasetEntry, ds: &Dataset) -> Vec<String> {
    let mut out = Vec::new();
    let relock = format!("re-pin with `gram-bench datasets lock {name}` if the change is intended");
    if pin.split_sha256 != ds.split_digest {
        out.push(format!(
            "split definition changed: SHA-256 {} on disk, {} pinned (restore the original {}, or {relock})",
            ds.split_digest,
            pin.split_sha256,
            ds.split_source()
        ));
    }
    if let (Some(p), Some(now)) = (&pin.classnames_sha256, &ds.classnames_digest) {
        if p != now {
            out.push(format!(
                "classnames.txt changed: SHA-256 {now} on disk, {p} pinned (restore CoOp's classnames.txt, or {relock})"
            ));
        }
    }
    let counts = [ds.train.len(), ds.val.len(), ds.test.len()];
    if pin.counts != counts || pin.classes != ds.classnames.len() {
        out.push(format!(
            "{} classes and train/val/test {:?} on disk, {} and {:?} pinned",
            ds.classnames.len(),
            counts,
            pin.classes,
            pin.counts
        ));
    }
    out
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
pub(crate) fn verify_one(
    root: &Path,
    def: &DatasetDef,
    lock: &Lock,
    deep: bool,
) -> (Vec<String>, Option<DatasetEntry>) {
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
    match lock.datasets.get(&def.name) {
        None => problems.push(format!(
            "not pinned in datasets.lock (run `gram-bench datasets lock {}` to pin what is there)",
            def.name
        )),
        Some(p) => problems.extend(pin_mismatches(&def.name, p, &ds)),
    }
    let mut images_sha256 = None;
    if deep {
        problems.extend(deep_findings(
            root,
            &ds,
            lock.datasets.get(&def.name),
            &mut images_sha256,
        ));
    }
    (problems, Some(entry_of(&ds, images_sha256)))
}

/// `--deep`: every image the splits list must exist and decode, and match the pinned image digest.
fn deep_findings(root: &Path, ds: &Dataset, pin: Option<&DatasetEntry>, digest: &mut Option<String>) -> Vec<String> {
    let files = images_of(ds);
    let mut out = Vec::new();
    let missing: Vec<&PathBuf> = files.iter().filter(|p| !p.is_file()).collect();
    if let Some(first) = missing.first() {
        out.push(format!(
            "{} images the split lists are absent, e.g. {} (re-extract the dataset archive)",
            missing.len(),
            first.display()
        ));
        return out;
    }
    let corrupt: Vec<(PathBuf, String)> = files
        .par_iter()
        .filter_map(|p| {
            crate::clip::preprocess::load_rgb(p)
                .err()
                .map(|e| (p.clone(), e.to_string()))
        })
        .collect();
    if let Some((_, first)) = corrupt.first() {
        out.push(format!(
            "{} images do not decode, e.g. {first} (re-download them, or set `on_corrupt = \"skip\"` in the suite's \
             [data] to leave them out)",
            corrupt.len()
        ));
    }
    match image_tree_digest(root, ds) {
        Ok(d) => {
            if let Some(p) = pin.and_then(|p| p.images_sha256.as_ref()) {
                if p != &d {
                    out.push(format!(
                        "image files changed: SHA-256 {d} over the images on disk, {p} pinned (restore the original \
                         images, or re-pin with `gram-bench datasets lock --deep {}`)",
                        ds.def.name
                    ));
                }
            }
            *digest = Some(d);
        }
        Err(e) => out.push(e.to_string()),
    }
    out
}

/// The CoOp and user datasets (not the embedded ones), or the given ones.
pub fn selected(names: &[String], lock: &Lock) -> Result<Vec<DatasetDef>> {
    let all: Vec<DatasetDef> = catalog_with(&lock.user_datasets)
        .into_iter()
        .filter(|d| !d.embedded)
        .collect();
    if names.is_empty() {
        return Ok(all);
    }
    names
        .iter()
        .map(|n| {
            all.iter().find(|d| &d.name == n).cloned().ok_or_else(|| {
                crate::error::Error::Input(
                    check_dataset_name(n, &lock.user_datasets)
                        .err()
                        .unwrap_or_else(|| format!("`{n}` is an embedded dataset")),
                )
            })
        })
        .collect()
}
