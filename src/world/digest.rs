//! Content digests of a built world: each dataset (every file under its folder, by relative path
//! and content) and the micro-CLIP's weights. A build records them in `world.json`; `gram-bench
//! world` prints them and checks the files against them, and a run refuses a micro-CLIP whose
//! weights no longer match its build.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::datasets::WORLD_DATASETS;
use crate::error::{Error, Result};
use crate::files::{file_sha256, sha256_hex};

/// What a world's content hashes to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorldDigests {
    /// Per dataset: SHA-256 over `relative path\tcontent SHA-256\n` of every file, in path order.
    pub datasets: BTreeMap<String, String>,
    /// SHA-256 of the micro-CLIP's `model.safetensors`.
    pub weights_sha256: String,
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let p = e.map_err(|e| Error::io(dir, e))?.path();
        if p.is_dir() {
            files_under(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

/// The digest of every file under `dir` (relative paths with `/`, sorted).
pub(crate) fn tree_digest(dir: &Path) -> Result<String> {
    let mut files = Vec::new();
    files_under(dir, &mut files)?;
    let mut rows: Vec<(String, PathBuf)> = files
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(dir).unwrap_or(&p).components();
            let rel: Vec<String> = rel.map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
            (rel.join("/"), p)
        })
        .collect();
    rows.sort();
    let digests: Vec<String> = rows.par_iter().map(|(_, p)| file_sha256(p)).collect::<Result<_>>()?;
    let listing: String = rows
        .iter()
        .zip(&digests)
        .map(|((rel, _), d)| format!("{rel}\t{d}\n"))
        .collect();
    Ok(sha256_hex(listing.as_bytes()))
}

/// The content digests of a world's data root and micro-CLIP directory.
pub(crate) fn world_digests(data_root: &Path, model_dir: &Path) -> Result<WorldDigests> {
    let datasets = WORLD_DATASETS
        .iter()
        .map(|d| Ok((d.name.to_string(), tree_digest(&data_root.join(d.name))?)))
        .collect::<Result<_>>()?;
    Ok(WorldDigests {
        datasets,
        weights_sha256: file_sha256(&model_dir.join("model.safetensors"))?,
    })
}

/// What differs between a world's recorded digests and its files now.
pub fn differences(recorded: &WorldDigests, now: &WorldDigests) -> Vec<String> {
    let mut out: Vec<String> = recorded
        .datasets
        .iter()
        .filter(|(name, d)| now.datasets.get(*name) != Some(d))
        .map(|(name, _)| format!("dataset `{name}`"))
        .collect();
    if recorded.weights_sha256 != now.weights_sha256 {
        out.push("the micro-CLIP's weights".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_digest_follows_paths_and_contents() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/x.png"), b"1").unwrap();
        std::fs::write(dir.path().join("a/y.json"), b"2").unwrap();
        let d = tree_digest(&dir.path().join("a")).unwrap();
        assert_eq!(d, tree_digest(&dir.path().join("a")).unwrap());
        std::fs::write(dir.path().join("a/b/x.png"), b"3").unwrap();
        let changed = tree_digest(&dir.path().join("a")).unwrap();
        assert_ne!(d, changed);
        std::fs::rename(dir.path().join("a/b/x.png"), dir.path().join("a/b/z.png")).unwrap();
        assert_ne!(changed, tree_digest(&dir.path().join("a")).unwrap());
    }
}
