//! `datasets.lock`: the backbones and datasets a suite may name, each with where it is and the
//! SHA-256 of its files, so every number pins exactly what it read. A backbone's digest is part of
//! every cell key that uses it, and is verified before a run; `verify` pins and checks datasets.

pub mod verify;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::data::catalog::{check_user_dataset, UserDataset};
use crate::error::{Error, Result};
use crate::files::{expand, file_sha256, parse_toml, write_atomic};

pub(crate) const LOCK_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackboneEntry {
    /// HF checkpoint directory or OpenAI-layout `.safetensors`; `${VAR}` expands from the
    /// environment and a relative path is read from the lock file's directory.
    pub path: String,
    /// SHA-256 of the weights (for sharded or multi-file checkpoints: of the files' digests, one
    /// per line, in name order), as `gram-bench lock digest PATH` prints it.
    pub sha256: String,
    /// Config overriding the checkpoint's own (as `clip embed --config`).
    #[serde(default)]
    pub config: Option<String>,
    #[serde(default)]
    pub tokenizer: Option<String>,
}

/// What a dataset is pinned to: the digest of its split definition (split file, or the listing of
/// class folders and lists that defines the splits) and the counts it must have.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetEntry {
    /// Where the split definition is read, relative to the data root (informative).
    #[serde(default)]
    pub split_source: String,
    pub split_sha256: String,
    /// SHA-256 of `classnames.txt` (ImageNet and its variants).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classnames_sha256: Option<String>,
    pub classes: usize,
    /// Images in train, val and test.
    pub counts: [usize; 3],
    /// SHA-256 over every image the splits list (relative path and content digest, sorted), as
    /// `datasets lock --deep` computes it; checked by `datasets verify --deep`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images_sha256: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    pub version: u32,
    #[serde(default)]
    pub backbones: BTreeMap<String, BackboneEntry>,
    #[serde(default)]
    pub datasets: BTreeMap<String, DatasetEntry>,
    #[serde(default)]
    pub user_datasets: BTreeMap<String, UserDataset>,
    #[serde(skip)]
    pub dir: PathBuf,
}

impl Lock {
    /// This lock with the datasets suite `suite` declares added to its user datasets; a name both
    /// declare must be declared identically.
    pub(crate) fn with_datasets(&self, suite: &str, datasets: &BTreeMap<String, UserDataset>) -> Result<Lock> {
        let mut out = self.clone();
        for (name, u) in datasets {
            match out.user_datasets.get(name) {
                Some(existing) if existing != u => {
                    return Err(Error::Input(format!(
                        "suite `{suite}` declares dataset `{name}` differently from datasets.lock's [user_datasets.{name}]; \
                         keep one declaration"
                    )))
                }
                _ => {
                    out.user_datasets.insert(name.clone(), u.clone());
                }
            }
        }
        Ok(out)
    }

    /// Reads a lock file; a missing file is an empty lock (only embedded backbones then).
    pub fn load(path: &Path) -> Result<Lock> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Lock {
                    version: LOCK_VERSION,
                    dir: path.parent().unwrap_or(Path::new(".")).to_path_buf(),
                    ..Default::default()
                })
            }
            Err(e) => return Err(Error::io(path, e)),
        };
        let mut lock: Lock = parse_toml(path, &text)?;
        if lock.version != LOCK_VERSION {
            return Err(Error::Input(format!(
                "{}: lock version {} is not supported (this build reads {LOCK_VERSION})",
                path.display(),
                lock.version
            )));
        }
        lock.dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        for (name, u) in &lock.user_datasets {
            check_user_dataset(name, u)
                .map_err(|e| Error::Input(format!("{}: user dataset `{name}`: {e}", path.display())))?;
        }
        Ok(lock)
    }

    pub fn backbone(&self, name: &str) -> Result<&BackboneEntry> {
        self.backbones.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.backbones.keys().map(String::as_str).collect();
            Error::Config(format!(
                "backbone `{name}` is neither `{}` nor in datasets.lock (which has: {})",
                crate::world::BACKBONE,
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))
        })
    }

    /// A path of an entry, expanded and made absolute against the lock's directory.
    pub fn resolve(&self, p: &str) -> Result<PathBuf> {
        let p = PathBuf::from(expand(p)?);
        Ok(if p.is_absolute() { p } else { self.dir.join(p) })
    }
}

const HEADER: &str = "# gram-bench lock file: every backbone and dataset a suite may name, with the SHA-256 of what it
# reads. Digests are part of every cell key that uses an entry and are checked before a run.
# `gram-bench lock digest PATH` prints a checkpoint's digest; `gram-bench datasets lock` writes the
# [datasets.*] entries for the data under --data-root, and `gram-bench datasets verify` checks them.
";

impl Lock {
    /// Writes the lock back (entries sorted; a fixed header replaces free comments).
    pub fn save(&self, path: &Path) -> Result<()> {
        let body = toml::to_string_pretty(self).map_err(|e| Error::Input(format!("datasets.lock: {e}")))?;
        write_atomic(path, format!("{HEADER}{body}").as_bytes())
    }
}

/// The weight files of a checkpoint path: the `.safetensors` file itself, or those in a directory.
fn weight_files(path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries = std::fs::read_dir(path).map_err(|e| Error::io(path, e))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::Weights(format!("{}: no .safetensors files", path.display())));
    }
    Ok(files)
}

/// The digest `datasets.lock` pins for a checkpoint: the file's SHA-256, or for several files the
/// SHA-256 of their digests, one per line, in name order.
pub(crate) fn weights_digest(path: &Path) -> Result<String> {
    let files = weight_files(path)?;
    if files.len() == 1 {
        return file_sha256(&files[0]);
    }
    let mut lines = String::new();
    for f in &files {
        lines.push_str(&file_sha256(f)?);
        lines.push('\n');
    }
    Ok(Sha256::digest(lines.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_lock_is_empty_and_unknown_backbones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let lock = Lock::load(&dir.path().join("datasets.lock")).unwrap();
        let e = lock.backbone("vit-b16").unwrap_err().to_string();
        assert!(e.contains("vit-b16") && e.contains("none"), "{e}");
    }

    #[test]
    fn unknown_keys_in_the_lock_are_errors_with_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("datasets.lock");
        std::fs::write(
            &p,
            "version = 1\n[backbones.a]\npath = \"x\"\nsha256 = \"y\"\nsha = 1\n",
        )
        .unwrap();
        let e = Lock::load(&p).unwrap_err().to_string();
        assert!(e.contains("datasets.lock:5:"), "{e}");
    }

    #[test]
    fn paths_expand_variables_and_resolve_against_the_lock() {
        std::env::set_var("GRAM_BENCH_TEST_WEIGHTS", "/models");
        let lock = Lock {
            version: 1,
            dir: PathBuf::from("/repo"),
            ..Default::default()
        };
        assert_eq!(
            lock.resolve("${GRAM_BENCH_TEST_WEIGHTS}/vit").unwrap(),
            PathBuf::from("/models/vit")
        );
        assert_eq!(lock.resolve("tests/m").unwrap(), PathBuf::from("/repo/tests/m"));
        assert!(lock.resolve("${GRAM_BENCH_UNSET_VAR_X}/a").is_err());
    }
}
