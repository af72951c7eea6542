//! CoOp's cached few-shot subsets: `<dataset>/split_fewshot/shot_K-seed_S.pkl`, a pickle of
//! `{"train": [Datum…], "val": [Datum…]}` (ImageNet's holds only `train`), where a Dassl `Datum`
//! carries `_impath`, `_label`, `_domain` and `_classname`. Reading them lets a cell train on
//! exactly the images the reference run used.
//!
//! The pickled paths are absolute on the machine that wrote them, so each is matched to this
//! dataset's split by its path relative to the data root (the longest suffix that names an image
//! of the split); its label must agree.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::{sha256_hex, Dataset, Datum};
use crate::clip::pickle::{Id, Node, Pickle, MAX_PICKLE_BYTES};
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

fn datum(path: &Path, p: &Pickle, split: &str, i: usize, id: Id) -> Result<PklDatum> {
    // A Datum unpickles as an opaque object whose state is its attribute dict (Dassl's class
    // itself is not needed); a plain dict with the same keys reads too.
    let d = p
        .attrs(p.node(id))
        .ok_or_else(|| bad(path, format!("{split}[{i}] is not a Dassl Datum")))?;
    let impath = match p.get(d, "_impath") {
        Some(Node::Str(s)) => s.clone(),
        _ => return Err(bad(path, format!("{split}[{i}] has no `_impath` string"))),
    };
    let label = match p.get(d, "_label") {
        Some(Node::Int(l)) => *l,
        _ => return Err(bad(path, format!("{split}[{i}] has no integer `_label`"))),
    };
    Ok(PklDatum { impath, label })
}

fn split_of(path: &Path, p: &Pickle, top: &[(Id, Id)], key: &str) -> Result<Option<Vec<PklDatum>>> {
    match p.get(top, key) {
        None => Ok(None),
        Some(Node::List(items)) => items
            .iter()
            .enumerate()
            .map(|(i, &v)| datum(path, p, key, i, v))
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
                    // The path is the file's, quoted and escaped: a newline in it must not break the
                    // error's one line.
                    Error::Input(format!(
                        "{}: {split}[{n}] {:?} is not an image of this dataset's {split} split (a pkl from another \
                         split or dataset version?)",
                        path.display(),
                        p.impath
                    ))
                })?;
            if items[i].label as i64 != p.label {
                return Err(Error::Input(format!(
                    "{}: {split}[{n}] {:?} has label {} but the split file says {}",
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
    let bytes = read_bounded(path, MAX_PICKLE_BYTES)?;
    let p = Pickle::parse(&bytes).map_err(|e| bad(path, e))?;
    let top = match p.root() {
        Node::Dict(top) => top,
        _ => return Err(bad(path, "the top level is not a dict")),
    };
    let train = split_of(path, &p, top, "train")?.ok_or_else(|| bad(path, "no `train` list"))?;
    let val = split_of(path, &p, top, "val")?;
    Ok(CachedFewShot {
        train: match_items(path, "train", root, &ds.train, &train)?,
        val: val.map(|v| match_items(path, "val", root, &ds.val, &v)).transpose()?,
        sha256: sha256_hex(&bytes),
        path: path.to_path_buf(),
    })
}

/// The file's bytes, refusing one over `limit` before reading it whole (a few-shot file is a few MB;
/// a path pointing at something else should not fill memory).
fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut bytes = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(bad(
            path,
            format!("it holds more than {limit} bytes (this reader's limit)"),
        ));
    }
    Ok(bytes)
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

    fn datum_ops(impath: &str, label: u8) -> Vec<u8> {
        // STACK_GLOBAL Datum, EMPTY_TUPLE, NEWOBJ, {…} BUILD, as CoOp's protocol-5 files hold it.
        let mut b = Vec::new();
        for part in ["dassl.data.datasets.base_dataset", "Datum", "_impath", impath, "_label"] {
            if part == "_impath" {
                b.extend([0x93, b')', 0x81, b'}', b'(']);
            }
            b.extend([0x8c, part.len() as u8]);
            b.extend(part.as_bytes());
        }
        b.extend([b'K', label, b'u', b'b']);
        b
    }

    fn dataset(root: &Path) -> Dataset {
        let item = |c: &str, i: usize, label| Datum {
            path: root.join(format!("eurosat/2750/{c}/{c}_{i}.png")),
            label,
            classname: c.into(),
        };
        Dataset {
            def: crate::data::dataset_def("eurosat", &Default::default()).unwrap(),
            train: vec![item("Forest", 0, 1), item("River", 1, 3)],
            val: vec![],
            test: vec![item("Forest", 2, 1)],
            classnames: vec![],
            split_digest: String::new(),
            classnames_digest: None,
        }
    }

    fn read_ops(ops: &[u8]) -> Result<CachedFewShot> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shot_1-seed_1.pkl");
        let mut bytes = vec![0x80, 4];
        bytes.extend(ops);
        bytes.push(b'.');
        std::fs::write(&path, bytes).unwrap();
        read(&path, dir.path(), &dataset(dir.path()))
    }

    #[test]
    fn a_train_list_memoized_before_it_was_filled_reads_its_data() {
        // {"all": [] PUT 0 (APPENDS after the PUT), "train": GET 0}: Python reads both as the one
        // filled list; a memo holding a copy taken at the PUT read `train` as empty.
        let mut ops = vec![b'}', b'(', 0x8c, 3];
        ops.extend(b"all");
        ops.extend([b']', b'q', 0, b'(']);
        ops.extend(datum_ops("/elsewhere/DATA/eurosat/2750/River/River_1.png", 3));
        ops.extend(datum_ops("/elsewhere/DATA/eurosat/2750/Forest/Forest_0.png", 1));
        ops.extend([b'e', 0x8c, 5]);
        ops.extend(b"train");
        ops.extend([b'h', 0, b'u']);
        let c = read_ops(&ops).unwrap();
        assert_eq!(c.train, [1, 0]);
        assert_eq!(c.val, None);
    }

    #[test]
    fn a_hostile_few_shot_file_is_one_error() {
        const N: usize = 300_000;
        let mut deep = vec![b'('; N];
        deep.extend(std::iter::repeat_n(b'l', N));
        let mut huge = vec![0x8d];
        huge.extend([0xff; 8]);
        for (ops, want) in [
            (deep, "not a CoOp few-shot file: the top level is not a dict"),
            (
                huge,
                "not a CoOp few-shot file: a length of 18446744073709551615 bytes at byte 11",
            ),
            (vec![b'}'], "not a CoOp few-shot file: no `train` list"),
            (
                [&[b'}', 0x8c, 5][..], b"train", b"]K\x01a", b"s"].concat(),
                "not a CoOp few-shot file: train[0] is not a Dassl Datum",
            ),
        ] {
            let e = read_ops(&ops).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.pkl");
        std::fs::write(&path, [0u8; 100]).unwrap();
        let e = read_bounded(&path, 50).unwrap_err().to_string();
        assert!(
            e.ends_with("big.pkl: not a CoOp few-shot file: it holds more than 50 bytes (this reader's limit)"),
            "{e}"
        );
    }

    #[test]
    fn a_pickled_path_with_a_newline_is_quoted_in_a_one_line_error() {
        // Found by tests/fuzz.rs: the path was printed as it is, its newline splitting the error.
        let mut ops = vec![b'}', 0x8c, 5];
        ops.extend(b"train");
        ops.extend([b']', b'(']);
        ops.extend(datum_ops("/x\nForest/Forest_9.png", 1));
        ops.extend([b'e', b's']);
        let e = read_ops(&ops).unwrap_err().to_string();
        assert!(!e.contains('\n'), "{e}");
        assert!(
            e.contains("train[0] \"/x\\nForest/Forest_9.png\" is not an image of this dataset's train split"),
            "{e}"
        );
    }

    #[test]
    fn the_committed_coop_files_read_as_python_wrote_them() {
        // tests/reference/coop_fewshot_pkl.py's seed 2 file: train only, by path suffix.
        let root = Path::new("/data");
        let mut ds = dataset(root);
        let item = |c: &str, i: usize, label| Datum {
            path: root.join(format!("eurosat/2750/{c}/{c}_{i}.png")),
            label,
            classname: c.into(),
        };
        ds.train = vec![
            item("AnnualCrop", 0, 0),
            item("Forest", 1, 1),
            item("Highway", 0, 2),
            item("River", 1, 3),
        ];
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/coop_fewshot/shot_1-seed_2.pkl");
        let c = read(&path, root, &ds).unwrap();
        assert_eq!(c.train, [0, 1, 2, 3]);
        assert_eq!(c.val, None);
    }
}
