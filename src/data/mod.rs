//! Datasets as CoOp lays them out on disk: an image root and a `split_zhou_*.json` of
//! `[relpath, label, classname]` entries; few-shot sampling and the base/new class split.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::files::sha256_hex;

pub mod catalog;
pub mod coop;
pub mod def;
pub mod fewshot_pkl;
pub mod images;

pub use catalog::catalog;
pub(crate) use catalog::{catalog_with, check_dataset_name, dataset_def};
pub(crate) use def::{DatasetDef, Layout};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Datum {
    pub path: PathBuf,
    pub label: usize,
    pub classname: String,
}

/// A dataset read from disk: its splits and its class names by label.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub def: DatasetDef,
    pub train: Vec<Datum>,
    pub val: Vec<Datum>,
    pub test: Vec<Datum>,
    pub classnames: Vec<String>,
    /// SHA-256 of the split file (or, for folder layouts, of the listing that defines the splits).
    pub split_digest: String,
    /// SHA-256 of `classnames.txt` for the layouts whose class names come from it (ImageNet and
    /// its variants); the split file holds the names otherwise.
    pub classnames_digest: Option<String>,
}

#[derive(Deserialize)]
struct SplitFile {
    train: Vec<(String, usize, String)>,
    val: Vec<(String, usize, String)>,
    test: Vec<(String, usize, String)>,
}

impl Dataset {
    /// Reads `def` under `root`; every problem is one error naming the file.
    pub fn load(root: &Path, def: &DatasetDef) -> Result<Dataset> {
        let dir = root.join(&def.folder);
        if !dir.is_dir() {
            return Err(Error::Input(format!(
                "{}: dataset `{}` is not there (expected CoOp's `{}/` folder under the data root)",
                dir.display(),
                def.name,
                def.folder
            )));
        }
        let (train, val, test, digest, names_digest) = match &def.layout {
            Layout::SplitZhou { split_file, image_dir } => {
                let split_path = dir.join(split_file);
                let bytes = std::fs::read(&split_path).map_err(|e| Error::io(&split_path, e))?;
                let split: SplitFile = serde_json::from_slice(&bytes)
                    .map_err(|e| Error::Input(format!("{}: not a CoOp split file: {e}", split_path.display())))?;
                let image_root = if image_dir.is_empty() {
                    dir.clone()
                } else {
                    dir.join(image_dir)
                };
                let conv = |items: Vec<(String, usize, String)>| -> Vec<Datum> {
                    items
                        .into_iter()
                        .map(|(rel, label, classname)| Datum {
                            path: image_root.join(rel.trim_start_matches('/')),
                            label,
                            classname,
                        })
                        .collect()
                };
                (
                    conv(split.train),
                    conv(split.val),
                    conv(split.test),
                    sha256_hex(&bytes),
                    None,
                )
            }
            other => coop::load_layout(&dir, other)?,
        };
        let mut names: BTreeMap<usize, String> = BTreeMap::new();
        for d in train.iter().chain(&val).chain(&test) {
            if let Some(prev) = names.insert(d.label, d.classname.clone()) {
                if prev != d.classname {
                    return Err(Error::Input(format!(
                        // Names as the file spells them, quoted and escaped: the error stays one line.
                        "{}: label {} is both {prev:?} and {:?}",
                        dir.display(),
                        d.label,
                        d.classname
                    )));
                }
            }
        }
        let n = names.len();
        if names.keys().copied().ne(0..n) {
            return Err(Error::Input(format!(
                "{}: labels are not 0..{n} (found {:?}…)",
                dir.display(),
                names.keys().take(5).collect::<Vec<_>>()
            )));
        }
        if test.is_empty() {
            return Err(Error::Input(format!("{}: the test split is empty", dir.display())));
        }
        Ok(Dataset {
            def: def.clone(),
            train,
            val,
            test,
            classnames: names.into_values().collect(),
            split_digest: digest,
            classnames_digest: names_digest,
        })
    }

    /// The digest cell keys use: the split definition, and the class-name file when there is one.
    pub fn digest(&self) -> String {
        match &self.classnames_digest {
            Some(n) => format!("{}+names:{n}", self.split_digest),
            None => self.split_digest.clone(),
        }
    }

    /// Where the split definition is read from, relative to the data root.
    pub(crate) fn split_source(&self) -> String {
        match &self.def.layout {
            Layout::SplitZhou { split_file, .. } => format!("{}/{split_file}", self.def.folder),
            Layout::Fgvc => format!("{}/images_variant_{{train,val,test}}.txt", self.def.folder),
            Layout::ImageNet => format!("{}/images/{{train,val}}/<wnid>/", self.def.folder),
            Layout::WnidFolders { image_dir } => format!("{}/{image_dir}/<wnid>/", self.def.folder),
            Layout::IndexFolders { image_dir } => format!("{}/{image_dir}/<index>/", self.def.folder),
        }
    }
}

/// Indices of a K-shot subset of `items`: grouped by label in order of appearance, K drawn without
/// replacement per label (all of them when a label has fewer), as Dassl's
/// `generate_fewshot_dataset` does; deterministic in `seed`.
pub fn few_shot_indices(items: &[Datum], k: usize, seed: u64) -> Vec<usize> {
    let mut by_label: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    let mut order = Vec::new();
    for (i, d) in items.iter().enumerate() {
        by_label
            .entry(d.label)
            .or_insert_with(|| {
                order.push(d.label);
                Vec::new()
            })
            .push(i);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    for label in order {
        let group = &by_label[&label];
        if group.len() <= k {
            out.extend(group);
        } else {
            let mut picked: Vec<usize> = sample(&mut rng, group.len(), k).into_iter().map(|j| group[j]).collect();
            picked.sort_unstable();
            out.extend(picked);
        }
    }
    out
}

/// Which half of a label space a base-to-new phase uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Subsample {
    All,
    Base,
    New,
}

impl Subsample {
    pub fn as_str(self) -> &'static str {
        match self {
            Subsample::All => "all",
            Subsample::Base => "base",
            Subsample::New => "new",
        }
    }
}

/// Labels kept by `which` out of `n` (sorted labels; base = first ceil(n/2)); each is relabelled by
/// its position in the returned list.
pub fn subsample_labels(n: usize, which: Subsample) -> Vec<usize> {
    let m = n.div_ceil(2);
    match which {
        Subsample::All => (0..n).collect(),
        Subsample::Base => (0..m).collect(),
        Subsample::New => (m..n).collect(),
    }
}

/// `items` restricted to `labels`, relabelled 0.. in that order.
pub(crate) fn relabel(items: &[Datum], labels: &[usize]) -> Vec<Datum> {
    let map: BTreeMap<usize, usize> = labels.iter().enumerate().map(|(i, &l)| (l, i)).collect();
    items
        .iter()
        .filter_map(|d| map.get(&d.label).map(|&l| Datum { label: l, ..d.clone() }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(labels: &[usize]) -> Vec<Datum> {
        labels
            .iter()
            .enumerate()
            .map(|(i, &l)| Datum {
                path: format!("{i}.png").into(),
                label: l,
                classname: format!("c{l}"),
            })
            .collect()
    }

    #[test]
    fn few_shot_takes_k_per_label_or_all_and_is_deterministic() {
        let it = items(&[1, 0, 1, 1, 0, 2, 1]);
        let a = few_shot_indices(&it, 2, 3);
        assert_eq!(a, few_shot_indices(&it, 2, 3));
        let count = |l: usize| a.iter().filter(|&&i| it[i].label == l).count();
        assert_eq!((count(0), count(1), count(2)), (2, 2, 1));
        // Groups come in order of first appearance: label 1 first.
        assert_eq!(it[a[0]].label, 1);
        let seeds: std::collections::HashSet<Vec<usize>> = (0..20).map(|s| few_shot_indices(&it, 2, s)).collect();
        assert!(seeds.len() > 1, "different seeds should pick different subsets");
    }

    #[test]
    fn a_class_named_two_ways_is_one_line_error_whatever_the_names_hold() {
        // Found by tests/fuzz.rs: a name with an escaped newline broke the error over two lines.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("eurosat")).unwrap();
        std::fs::write(
            dir.path().join("eurosat/split_zhou_EuroSAT.json"),
            r#"{"train": [["a.png", 0, "River"]], "val": [], "test": [["b.png", 0, "\nRiver"]]}"#,
        )
        .unwrap();
        let def = dataset_def("eurosat", &Default::default()).unwrap();
        let e = Dataset::load(dir.path(), &def).unwrap_err().to_string();
        assert!(e.ends_with(r#"eurosat: label 0 is both "River" and "\nRiver""#), "{e}");
    }

    #[test]
    fn base_is_the_first_ceil_half_and_both_halves_are_relabelled() {
        assert_eq!(subsample_labels(5, Subsample::Base), vec![0, 1, 2]);
        assert_eq!(subsample_labels(5, Subsample::New), vec![3, 4]);
        assert_eq!(subsample_labels(37, Subsample::Base).len(), 19);
        let it = items(&[0, 3, 4, 1]);
        let new = relabel(&it, &subsample_labels(5, Subsample::New));
        assert_eq!(new.iter().map(|d| d.label).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(new[0].classname, "c3");
    }
}
