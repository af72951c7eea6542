//! The results store: one JSON record per finished cell, `<store>/<suite>/records/<key>.json`,
//! written to a temporary file and renamed into place, so a reader sees a whole record or none.
//! A runner holds an exclusive lock on `<store>/<suite>/locks/<key>.lock` while it computes a cell,
//! so two runners on one store never compute (or write) the same cell at once. Prompt artifacts
//! of train cells sit beside the records.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::files::write_atomic;
use crate::methods::PromptArtifact;

mod record;

pub(crate) use record::{host_name, RECORD_SCHEMA};
// The record's field types: public with it, so a library user can name what a record holds.
pub use record::{
    CellConfig, CellDigests, CheckpointDigest, ClassAccuracy, Environment, FeatureOrigin, FewShotOrigin,
    FewShotSourceKind, FitSummary, MetaDigest, MetaFit, Metrics, Record, SlurmJob, Status, Timings, TrainSummary,
};

pub struct Store {
    pub root: PathBuf,
}

/// Held while a cell is computed; released on drop.
pub struct CellLock {
    _file: File,
}

impl Store {
    /// Opens (creating) the store directory of `suite` under `root`.
    pub fn open(root: &Path, suite: &str) -> Result<Store> {
        let dir = root.join(suite);
        for sub in ["records", "locks", "artifacts"] {
            let p = dir.join(sub);
            std::fs::create_dir_all(&p).map_err(|e| Error::Store(format!("cannot create {}: {e}", p.display())))?;
        }
        // Fail now, not after an hour of training, when the store cannot be written.
        let probe = dir.join("records").join(format!(".probe-{}", std::process::id()));
        std::fs::write(&probe, b"").map_err(|e| Error::Store(format!("{} is not writable: {e}", dir.display())))?;
        let _ = std::fs::remove_file(&probe);
        let swept: usize = ["records", "artifacts"]
            .iter()
            .map(|s| crate::files::sweep_stale_temps(&dir.join(s)))
            .sum();
        if swept > 0 {
            eprintln!(
                "removed {swept} temporary file(s) left by killed runs in {}",
                dir.display()
            );
        }
        Ok(Store { root: dir })
    }

    /// Opens an existing store for reading only.
    pub(crate) fn open_read(root: &Path, suite: &str) -> Store {
        Store { root: root.join(suite) }
    }

    fn record_path(&self, key: &str) -> PathBuf {
        self.root.join("records").join(format!("{key}.json"))
    }

    pub(crate) fn artifact_path(&self, key: &str) -> PathBuf {
        self.root.join("artifacts").join(format!("{key}.json"))
    }

    /// The record of `key`, if one was written. A record that cannot be read is an error: it is
    /// never silently treated as missing (and overwritten).
    pub fn get(&self, key: &str) -> Result<Option<Record>> {
        let p = self.record_path(key);
        match std::fs::read(&p) {
            Ok(bytes) => {
                let r = Record::from_json(&p, &bytes)?;
                // A record copied or renamed onto another cell's file would stand in for that
                // cell's result: the key inside must be the file's.
                if r.key != key {
                    return Err(Error::Store(format!(
                        "{}: holds the record of cell {}, not of {key}; move it away to rerun the cell",
                        p.display(),
                        r.key
                    )));
                }
                Ok(Some(r))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&p, e)),
        }
    }

    /// Every record in the store (unreadable files are errors).
    pub fn all(&self) -> Result<Vec<Record>> {
        let dir = self.root.join("records");
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(out);
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        for p in paths {
            let key = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
            if let Some(r) = self.get(&key)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Writes `record` atomically (temp file in the same directory, fsync, rename).
    pub(crate) fn put(&self, record: &Record) -> Result<()> {
        let path = self.record_path(&record.key);
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| Error::Store(format!("record: {e}")))?;
        write_atomic(&path, &bytes)
    }

    /// Tries to take the lock of `key`; None when another runner holds it.
    pub fn try_lock(&self, key: &str) -> Result<Option<CellLock>> {
        let p = self.root.join("locks").join(format!("{key}.lock"));
        let f = File::create(&p).map_err(|e| Error::io(&p, e))?;
        match f.try_lock() {
            Ok(()) => Ok(Some(CellLock { _file: f })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&p, e)),
        }
    }

    pub(crate) fn put_artifact(&self, key: &str, artifact: &PromptArtifact) -> Result<()> {
        let bytes = serde_json::to_vec(artifact).map_err(|e| Error::Store(format!("artifact: {e}")))?;
        write_atomic(&self.artifact_path(key), &bytes)
    }

    pub(crate) fn get_artifact(&self, key: &str) -> Result<PromptArtifact> {
        let p = self.artifact_path(key);
        let bytes = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Store(format!("{}: unreadable artifact ({e})", p.display())))
    }
}

impl Store {
    fn meta_path(&self, key: &str) -> PathBuf {
        self.root.join("artifacts").join(format!("{key}.meta.json"))
    }

    /// Where an unfinished SGD cell keeps its state after each epoch (removed once its record is
    /// written).
    pub(crate) fn train_checkpoint_path(&self, key: &str) -> PathBuf {
        self.root.join("artifacts").join(format!("{key}.train-checkpoint.json"))
    }

    /// Writes `record` and then removes the cell's epoch checkpoint, which it supersedes.
    pub(crate) fn put_finished(&self, record: &Record) -> Result<()> {
        self.put(record)?;
        let p = self.train_checkpoint_path(&record.key);
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(&p, e)),
            _ => Ok(()),
        }
    }

    /// Where an unfinished meta-training cell keeps its checkpoint (removed when it finishes).
    pub(crate) fn meta_checkpoint_path(&self, key: &str) -> PathBuf {
        self.root.join("artifacts").join(format!("{key}.meta-checkpoint.json"))
    }

    /// A GRAM meta-training artifact, beside the prompt artifacts.
    pub(crate) fn put_meta(&self, key: &str, art: &crate::gram::MetaArtifact) -> Result<()> {
        let bytes = serde_json::to_vec(art).map_err(|e| Error::Store(format!("meta artifact: {e}")))?;
        write_atomic(&self.meta_path(key), &bytes)
    }

    /// A meta artifact and the SHA-256 of its file (what downstream records cite).
    pub(crate) fn get_meta(&self, key: &str) -> Result<(crate::gram::MetaArtifact, String)> {
        let p = self.meta_path(key);
        let bytes = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
        let art = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Store(format!("{}: unreadable meta artifact ({e})", p.display())))?;
        Ok((art, crate::files::sha256_hex(&bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_a_cell_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "s").unwrap();
        let a = store.try_lock("k").unwrap();
        assert!(a.is_some());
        // A second handle on the same file behaves like a second process (flock is per open file).
        assert!(store.try_lock("k").unwrap().is_none());
        drop(a);
        assert!(store.try_lock("k").unwrap().is_some());
    }

    #[test]
    fn a_record_under_another_cells_name_or_of_another_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "s").unwrap();
        let fixture = include_str!("../../tests/fixtures/records/linear-probe-train.json");
        let key = serde_json::from_str::<serde_json::Value>(fixture).unwrap()["key"]
            .as_str()
            .unwrap()
            .to_string();
        std::fs::write(store.root.join(format!("records/{key}.json")), fixture).unwrap();
        assert_eq!(store.get(&key).unwrap().unwrap().key, key);
        std::fs::write(store.root.join("records/0123.json"), fixture).unwrap();
        let e = store.get("0123").unwrap_err().to_string();
        assert!(e.contains("holds the record of cell"), "{e}");
        let mut v: serde_json::Value = serde_json::from_str(fixture).unwrap();
        v["schema"] = 99.into();
        std::fs::write(store.root.join(format!("records/{key}.json")), v.to_string()).unwrap();
        let e = store.get(&key).unwrap_err().to_string();
        assert!(e.contains("record schema 99"), "{e}");
    }

    #[test]
    fn an_unreadable_record_is_an_error_not_a_missing_cell() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "s").unwrap();
        std::fs::write(store.root.join("records/abc.json"), b"{ truncated").unwrap();
        let e = store.get("abc").unwrap_err().to_string();
        assert!(e.contains("unreadable record"), "{e}");
        assert!(store.get("missing").unwrap().is_none());
    }
}
