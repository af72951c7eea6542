//! The feature cache for frozen image encoders: the image features of a dataset's test split under
//! one backbone and one transform are computed once and reused by every method that leaves the image
//! encoder as it is (zero-shot, CoOp, and cross-dataset evaluations of them), in memory within a
//! run and on disk across runs. The key is the SHA-256 of the weights digest, the split's digest,
//! the image files as they are on disk (path, size, modification time of each: a deleted, replaced
//! or truncated image is another key), the transform and the backend (backends round differently),
//! so a changed input never reads a stale entry. Each file also carries the SHA-256 of its payload:
//! a damaged entry is recomputed, never trusted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use serde_json::json;

use std::time::Instant;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::backend::Precision;
use crate::clip::{Clip, Preprocess};
use crate::data::images::{stream, BadImage, ImageCache, Transform};
use crate::error::{Error, Result};

/// Bumped when how features are computed or keyed changes.
const FORMAT: u32 = 3;

/// What a cached entry was computed from (kept in the file, for a reader's inspection).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct FeatureSource {
    pub weights_sha256: String,
    pub dataset: String,
    pub split: String,
    pub split_digest: String,
    /// [`files_fingerprint`] of the split's images.
    pub files: String,
    pub transform: Preprocess,
    pub backend: String,
    /// Left out of an f32 entry's key, so entries made before precision was a setting still match.
    #[serde(default = "f32", skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
    /// Batch composition can move the last bits (text padding, kernel blocking), and a
    /// meta-training run amplifies last bits, so entries are per batch size.
    pub batch_size: usize,
}

fn f32() -> Precision {
    Precision::F32
}

impl FeatureSource {
    pub fn key(&self) -> String {
        let v = json!({ "format": FORMAT, "source": self });
        crate::files::sha256_hex(&serde_json::to_vec(&v).expect("JSON values serialize"))
    }
}

/// SHA-256 over each file's path, size, modification time and (on Unix) inode and status-change
/// time (or its absence), in order: what the images are on disk now, at the cost of one `stat` per
/// image, not of reading them. The status-change time is the kernel's, which no tool sets back: a
/// file replaced by another of the same size and modification time (`touch -r`) is another key.
pub(crate) fn files_fingerprint(paths: &[PathBuf]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in paths {
        h.update(p.as_os_str().as_encoded_bytes());
        match std::fs::metadata(p) {
            Ok(m) => {
                let mtime = m
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                #[cfg(unix)]
                let changed = {
                    use std::os::unix::fs::MetadataExt;
                    format!("\0{}\0{}.{}", m.ino(), m.ctime(), m.ctime_nsec())
                };
                #[cfg(not(unix))]
                let changed = String::new();
                h.update(format!("\0{}\0{mtime}{changed}\n", m.len()).as_bytes());
            }
            Err(_) => h.update(b"\0missing\n"),
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The features of every image of a split, in split order; rows of images that did not decode are
/// zero and flagged.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureSet {
    pub dim: usize,
    /// `[n, dim]`, row-major.
    pub features: Vec<f32>,
    pub ok: Vec<bool>,
    pub bad: Vec<BadImage>,
    /// Seconds it took to compute (on the run that computed it).
    pub compute_s: f64,
}

impl FeatureSet {
    pub fn row(&self, i: usize) -> &[f32] {
        &self.features[i * self.dim..(i + 1) * self.dim]
    }
}

/// The frozen encoder's features (`Clip::encode_image` of the eval transform) of `paths`, in
/// order, through the parallel image pipeline in batches of `batch_size`; images that do not
/// decode get zero rows and are listed.
pub fn encode_images<B: Backend>(
    clip: &Clip<B>,
    pre: &Preprocess,
    images: &ImageCache,
    paths: &[PathBuf],
    batch_size: usize,
    device: &B::Device,
) -> Result<FeatureSet> {
    let t = Instant::now();
    let batches: Vec<Vec<(PathBuf, Transform)>> = paths
        .chunks(batch_size)
        .map(|c| c.iter().map(|p| (p.clone(), Transform::Eval)).collect())
        .collect();
    let n = paths.len();
    let s = pre.image_size;
    let mut rows: Vec<Option<Vec<f32>>> = vec![None; n];
    let mut bad = Vec::new();
    let mut dim = 0;
    stream(images, pre, batches, |b, prepared| {
        bad.extend(prepared.bad);
        let k = prepared.kept.len();
        if k == 0 {
            return Ok(());
        }
        let pixels = Tensor::<B, 4>::from_data(TensorData::new(prepared.pixels, [k, 3, s, s]), device);
        let f = clip.encode_image(pixels, &Default::default());
        dim = f.dims()[1];
        let data = f
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .expect("converted to f32 above");
        for (j, &i) in prepared.kept.iter().enumerate() {
            rows[b * batch_size + i] = Some(data[j * dim..(j + 1) * dim].to_vec());
        }
        Ok(())
    })?;
    let ok: Vec<bool> = rows.iter().map(Option::is_some).collect();
    let features = rows
        .into_iter()
        .flat_map(|r| r.unwrap_or_else(|| vec![0.0; dim]))
        .collect();
    Ok(FeatureSet {
        dim,
        features,
        ok,
        bad,
        compute_s: t.elapsed().as_secs_f64(),
    })
}

#[derive(Serialize, Deserialize)]
struct Info {
    source: FeatureSource,
    /// SHA-256 of the `features` and `ok` payloads, as written.
    payload_sha256: String,
    bad: Vec<BadImage>,
    compute_s: f64,
}

/// Where features are kept: `<dir>/<key>.safetensors`, or nowhere on disk (`dir = None`).
pub(crate) struct FeatureCache {
    dir: Option<PathBuf>,
    mem: HashMap<String, Arc<FeatureSet>>,
}

impl FeatureCache {
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self {
            dir,
            mem: HashMap::new(),
        }
    }

    fn path(dir: &Path, key: &str) -> PathBuf {
        dir.join(format!("{key}.safetensors"))
    }

    /// The cached features of `source`, from memory or disk. A file that does not read back is
    /// treated as absent (it is recomputed and replaced), never trusted.
    pub fn get(&mut self, source: &FeatureSource) -> Option<Arc<FeatureSet>> {
        let key = source.key();
        if let Some(s) = self.mem.get(&key) {
            return Some(s.clone());
        }
        let path = Self::path(self.dir.as_ref()?, &key);
        let set = Arc::new(read(&path, source).ok()?);
        self.mem.insert(key, set.clone());
        Some(set)
    }

    /// Keeps `set` in memory and on disk. The disk copy is an optimisation: when it cannot be
    /// written (a full disk, a read-only cache), the run warns once and goes on without it.
    pub(crate) fn put(&mut self, source: &FeatureSource, set: FeatureSet) -> Arc<FeatureSet> {
        let key = source.key();
        if let Some(dir) = &self.dir {
            let written = std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(dir, e))
                .and_then(|()| write(&Self::path(dir, &key), source, &set));
            if let Err(e) = written {
                eprintln!("warning: image features cannot be cached on disk ({e}); this run keeps them in memory only");
                self.dir = None;
            }
        }
        let set = Arc::new(set);
        self.mem.insert(key, set.clone());
        set
    }
}

fn write(path: &Path, source: &FeatureSource, set: &FeatureSet) -> Result<()> {
    let n = set.ok.len();
    let feats: Vec<u8> = set.features.iter().flat_map(|x| x.to_le_bytes()).collect();
    let ok: Vec<u8> = set.ok.iter().map(|&b| u8::from(b)).collect();
    let err = |e: safetensors::SafeTensorError| Error::Store(format!("{}: {e}", path.display()));
    let views = vec![
        (
            "features",
            TensorView::new(Dtype::F32, vec![n, set.dim], &feats).map_err(err)?,
        ),
        ("ok", TensorView::new(Dtype::U8, vec![n], &ok).map_err(err)?),
    ];
    let info = Info {
        source: source.clone(),
        payload_sha256: payload_digest(&feats, &ok),
        bad: set.bad.clone(),
        compute_s: set.compute_s,
    };
    let meta = HashMap::from([(
        "gram_bench".to_string(),
        serde_json::to_string(&info).expect("JSON values serialize"),
    )]);
    let bytes = safetensors::serialize(views, Some(meta)).map_err(err)?;
    crate::files::write_atomic(path, &bytes)
}

fn payload_digest(features: &[u8], ok: &[u8]) -> String {
    crate::files::sha256_hex(&[features, ok].concat())
}

fn read(path: &Path, source: &FeatureSource) -> Result<FeatureSet> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |m: String| Error::Store(format!("{}: {m}", path.display()));
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
    let info: Info = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("gram_bench"))
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or_else(|| bad("no gram_bench metadata".into()))?;
    if &info.source != source {
        return Err(bad("computed from other inputs".into()));
    }
    let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let f = st.tensor("features").map_err(|e| bad(e.to_string()))?;
    let ok = st.tensor("ok").map_err(|e| bad(e.to_string()))?;
    let (&[n, dim], Dtype::F32, Dtype::U8) = (f.shape(), f.dtype(), ok.dtype()) else {
        return Err(bad("unexpected tensors".into()));
    };
    if ok.shape() != [n] {
        return Err(bad("unexpected tensors".into()));
    }
    if payload_digest(f.data(), ok.data()) != info.payload_sha256 {
        return Err(bad("damaged payload (its digest differs from the one written)".into()));
    }
    Ok(FeatureSet {
        dim,
        features: f
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        ok: ok.data().iter().map(|&b| b != 0).collect(),
        bad: info.bad,
        compute_s: info.compute_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(split_digest: &str) -> FeatureSource {
        FeatureSource {
            weights_sha256: "w".into(),
            dataset: "d".into(),
            split: "test".into(),
            split_digest: split_digest.into(),
            files: "f".into(),
            transform: Preprocess::clip(8),
            backend: "cpu".into(),
            precision: Precision::F32,
            batch_size: 4,
        }
    }

    #[test]
    fn entries_round_trip_on_disk_and_other_inputs_miss() {
        let dir = tempfile::tempdir().unwrap();
        let set = FeatureSet {
            dim: 2,
            features: vec![1.0, -2.5, 0.0, 0.0, 3.25, 4.0],
            ok: vec![true, false, true],
            bad: vec![BadImage {
                path: "x.jpg".into(),
                error: "truncated".into(),
            }],
            compute_s: 1.5,
        };
        let mut c = FeatureCache::new(Some(dir.path().to_path_buf()));
        c.put(&source("a"), set.clone());
        // A fresh cache reads it back from disk.
        let mut c2 = FeatureCache::new(Some(dir.path().to_path_buf()));
        assert_eq!(*c2.get(&source("a")).unwrap(), set);
        assert!(c2.get(&source("b")).is_none());
        // Features computed in batches of another size are another entry.
        let other_batch = FeatureSource {
            batch_size: 8,
            ..source("a")
        };
        assert!(c2.get(&other_batch).is_none());
        // A payload changed in place (same header, same size: negated features) is a miss.
        let p = FeatureCache::path(dir.path(), &source("a").key());
        let mut bytes = std::fs::read(&p).unwrap();
        let at = bytes.windows(4).position(|w| w == (-2.5f32).to_le_bytes()).unwrap();
        bytes[at..at + 4].copy_from_slice(&2.5f32.to_le_bytes());
        std::fs::write(&p, &bytes).unwrap();
        assert!(FeatureCache::new(Some(dir.path().to_path_buf()))
            .get(&source("a"))
            .is_none());
        // A damaged file is a miss, not an error.
        std::fs::write(&p, b"garbage").unwrap();
        assert!(FeatureCache::new(Some(dir.path().to_path_buf()))
            .get(&source("a"))
            .is_none());
        // Without a directory, only memory.
        let mut m = FeatureCache::new(None);
        assert!(m.get(&source("a")).is_none());
        m.put(&source("a"), set.clone());
        assert_eq!(m.get(&source("a")).unwrap().row(2), &[3.25, 4.0]);
    }

    #[test]
    fn a_cache_that_cannot_be_written_is_left_for_memory_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-folder");
        std::fs::write(&file, b"x").unwrap();
        let set = FeatureSet {
            dim: 1,
            features: vec![0.5],
            ok: vec![true],
            bad: Vec::new(),
            compute_s: 0.0,
        };
        let mut c = FeatureCache::new(Some(file.join("features")));
        assert_eq!(*c.put(&source("a"), set.clone()), set);
        assert_eq!(*c.get(&source("a")).unwrap(), set);
        assert!(c.dir.is_none());
    }

    #[test]
    fn the_files_fingerprint_changes_when_an_image_is_truncated_replaced_or_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<PathBuf> = (0..3).map(|i| dir.path().join(format!("{i}.png"))).collect();
        for p in &paths {
            std::fs::write(p, b"0123456789").unwrap();
        }
        let a = files_fingerprint(&paths);
        assert_eq!(a, files_fingerprint(&paths));
        std::fs::write(&paths[1], b"01234567").unwrap();
        let truncated = files_fingerprint(&paths);
        assert_ne!(a, truncated);
        std::fs::remove_file(&paths[2]).unwrap();
        assert_ne!(truncated, files_fingerprint(&paths));
        // Replaced by other bytes of the same size, its modification time set back.
        let before = files_fingerprint(&paths[..1]);
        let mtime = std::fs::metadata(&paths[0]).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&paths[0], b"9876543210").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&paths[0])
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert_eq!(std::fs::metadata(&paths[0]).unwrap().modified().unwrap(), mtime);
        assert_ne!(before, files_fingerprint(&paths[..1]));
    }
}
