//! CoOp's cached few-shot subsets: `<dataset>/split_fewshot/shot_K-seed_S.pkl`, a pickle of
//! `{"train": [Datum…], "val": [Datum…]}` (ImageNet's holds only `train`), where a Dassl `Datum`
//! carries `_impath`, `_label`, `_domain` and `_classname`. Reading them lets a cell train on
//! exactly the images the reference run used.
//!
//! The pickled paths are absolute on the machine that wrote them, so each is matched to this
//! dataset's split by its path relative to the data root (the longest suffix that names an image
//! of the split); its label must agree.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_pickle::{DeOptions, HashableValue, Value};

use super::{sha256_hex, Dataset, Datum};
use crate::error::{Error, Result};

/// Where CoOp caches the K-shot subset of `seed` for a dataset folder.
pub(crate) fn pkl_path(dataset_dir: &Path, shots: usize, seed: u64) -> PathBuf {
    dataset_dir
        .join("split_fewshot")
        .join(format!("shot_{shots}-seed_{seed}.pkl"))
}

/// The subset a pkl holds, as indices into this dataset's train and val splits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedFewShot {
    pub train: Vec<usize>,
    /// `None` when the file has no `val` (ImageNet's).
    pub val: Option<Vec<usize>>,
    pub sha256: String,
    pub path: PathBuf,
}

struct PklDatum {
    impath: String,
    label: i64,
}

fn bad(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::Input(format!("{}: not a CoOp few-shot file: {what}", path.display()))
}

fn datum(path: &Path, split: &str, i: usize, v: &Value) -> Result<PklDatum> {
    // Objects unpickle as their attribute dicts (Dassl's Datum class itself is not needed).
    let Value::Dict(d) = v else {
        return Err(bad(path, format!("{split}[{i}] is not a Dassl Datum")));
    };
    let get = |k: &str| d.get(&HashableValue::String(k.into()));
    let impath = match get("_impath") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(bad(path, format!("{split}[{i}] has no `_impath` string"))),
    };
    let label = match get("_label") {
        Some(Value::I64(l)) => *l,
        _ => return Err(bad(path, format!("{split}[{i}] has no integer `_label`"))),
    };
    Ok(PklDatum { impath, label })
}

fn split_of(
    path: &Path,
    top: &std::collections::BTreeMap<HashableValue, Value>,
    key: &str,
) -> Result<Option<Vec<PklDatum>>> {
    match top.get(&HashableValue::String(key.into())) {
        None => Ok(None),
        Some(Value::List(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| datum(path, key, i, v))
            .collect::<Result<Vec<_>>>()
            .map(Some),
        Some(_) => Err(bad(path, format!("`{key}` is not a list"))),
    }
}

/// Path components of `p` as `/`-joined suffixes, longest first (`a/b/c`, `b/c`, `c`).
fn suffixes(p: &str) -> Vec<String> {
    let parts: Vec<&str> = p.split(['/', '\\']).filter(|s| !s.is_empty()).collect();
    (0..parts.len()).map(|i| parts[i..].join("/")).collect()
}

/// Matches pickled data to `items` by path suffix (relative to `root`) and checks the labels.
fn match_items(path: &Path, split: &str, root: &Path, items: &[Datum], pkl: &[PklDatum]) -> Result<Vec<usize>> {
    let mut by_rel: HashMap<String, usize> = HashMap::with_capacity(items.len());
    for (i, d) in items.iter().enumerate() {
        let rel = d.path.strip_prefix(root).unwrap_or(&d.path);
        let rel: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        by_rel.insert(rel.join("/"), i);
    }
    pkl.iter()
        .enumerate()
        .map(|(n, p)| {
            let i = suffixes(&p.impath)
                .iter()
                .find_map(|s| by_rel.get(s).copied())
                .ok_or_else(|| {
                    Error::Input(format!(
                        "{}: {split}[{n}] {} is not an image of this dataset's {split} split (a pkl from another \
                         split or dataset version?)",
                        path.display(),
                        p.impath
                    ))
                })?;
            if items[i].label as i64 != p.label {
                return Err(Error::Input(format!(
                    "{}: {split}[{n}] {} has label {} but the split file says {}",
                    path.display(),
                    p.impath,
                    p.label,
                    items[i].label
                )));
            }
            Ok(i)
        })
        .collect()
}

/// Reads a CoOp few-shot pkl and resolves it against `ds` (read from `root`).
pub fn read(path: &Path, root: &Path, ds: &Dataset) -> Result<CachedFewShot> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let opts = DeOptions::new().keep_restore_state().replace_unresolved_globals();
    let value = serde_pickle::value_from_slice(&bytes, opts).map_err(|e| bad(path, e))?;
    let Value::Dict(top) = value else {
        return Err(bad(path, "the top level is not a dict"));
    };
    let train = split_of(path, &top, "train")?.ok_or_else(|| bad(path, "no `train` list"))?;
    let val = split_of(path, &top, "val")?;
    Ok(CachedFewShot {
        train: match_items(path, "train", root, &ds.train, &train)?,
        val: val.map(|v| match_items(path, "val", root, &ds.val, &v)).transpose()?,
        sha256: sha256_hex(&bytes),
        path: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_go_from_longest_to_the_file_name() {
        assert_eq!(
            suffixes("/home/u/DATA/pets/images/a.jpg"),
            vec![
                "home/u/DATA/pets/images/a.jpg",
                "u/DATA/pets/images/a.jpg",
                "DATA/pets/images/a.jpg",
                "pets/images/a.jpg",
                "images/a.jpg",
                "a.jpg"
            ]
        );
        assert_eq!(suffixes("C:\\data\\x.jpg")[1], "data/x.jpg");
    }
}
