//! The image pipeline: images are decoded and preprocessed in parallel (rayon), a producer thread
//! prepares the next batches while the backend computes the current one (at most `PREFETCH`
//! batches wait, so memory stays bounded), and decoded images are kept in a cache with a fixed
//! budget. Images that do not decode are returned by path, for the suite's `on_corrupt` policy.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};

use image::RgbImage;
use rayon::prelude::*;

use crate::clip::preprocess::load_rgb;
use crate::clip::Preprocess;
use crate::error::Result;

/// Batches prepared ahead of the one being computed.
pub(crate) const PREFETCH: usize = 2;

/// Decoded images, kept while they fit `budget` bytes (the embedded world fits whole; beyond it,
/// real datasets are decoded again when a cell needs them).
pub struct ImageCache {
    inner: Mutex<(HashMap<PathBuf, Arc<RgbImage>>, usize)>,
    budget: usize,
}

impl ImageCache {
    pub fn new(budget: usize) -> Self {
        Self {
            inner: Mutex::new((HashMap::new(), 0)),
            budget,
        }
    }

    pub fn get(&self, path: &Path) -> Result<Arc<RgbImage>> {
        if let Some(i) = self.inner.lock().expect("cache lock").0.get(path) {
            return Ok(i.clone());
        }
        // Decoded outside the lock so threads decode in parallel.
        let img = Arc::new(load_rgb(path)?);
        let bytes = img.as_raw().len();
        let mut g = self.inner.lock().expect("cache lock");
        if g.1 + bytes <= self.budget && !g.0.contains_key(path) {
            g.1 += bytes;
            g.0.insert(path.to_path_buf(), img.clone());
        }
        Ok(img)
    }
}

/// An image that could not be read or decoded.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BadImage {
    pub path: PathBuf,
    pub error: String,
}

/// One prepared batch: normalized pixels `[kept, 3, s, s]` (channel-major, concatenated) of the
/// images that decoded, their positions in the job, and those that did not.
pub struct Prepared {
    pub pixels: Vec<f32>,
    pub kept: Vec<usize>,
    pub bad: Vec<BadImage>,
}

/// How one image becomes a crop: the eval transform, or the training one with its own seed (so a
/// batch's crops do not depend on which thread made them).
#[derive(Clone, Copy, Debug)]
pub enum Transform {
    Eval,
    Train { seed: u64 },
}

/// Decodes and preprocesses `jobs` in parallel.
pub fn prepare(cache: &ImageCache, pre: &Preprocess, jobs: &[(&Path, Transform)]) -> Prepared {
    let results: Vec<std::result::Result<Vec<f32>, BadImage>> = jobs
        .par_iter()
        .map(|(path, t)| {
            let img = cache.get(path).map_err(|e| BadImage {
                path: path.to_path_buf(),
                error: e.to_string(),
            })?;
            let crop = match t {
                Transform::Eval => pre.eval_u8(&img),
                Transform::Train { seed } => {
                    use rand::SeedableRng;
                    pre.train_u8(&img, &mut rand_chacha::ChaCha8Rng::seed_from_u64(*seed))
                }
            };
            Ok(pre.normalize(&crop))
        })
        .collect();
    let s = pre.image_size;
    let mut out = Prepared {
        pixels: Vec::with_capacity(jobs.len() * 3 * s * s),
        kept: Vec::with_capacity(jobs.len()),
        bad: Vec::new(),
    };
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(p) => {
                out.pixels.extend(p);
                out.kept.push(i);
            }
            Err(b) => out.bad.push(b),
        }
    }
    out
}

/// Prepares `batches` on a producer thread, at most `PREFETCH` ahead, and hands each to `consume`
/// in order on the calling thread (where the backend's tensors live). Stops at the first error
/// `consume` returns.
pub fn stream<F>(
    cache: &ImageCache,
    pre: &Preprocess,
    batches: Vec<Vec<(PathBuf, Transform)>>,
    mut consume: F,
) -> Result<()>
where
    F: FnMut(usize, Prepared) -> Result<()>,
{
    std::thread::scope(|scope| {
        let (tx, rx) = sync_channel::<Prepared>(PREFETCH);
        scope.spawn(move || {
            for b in &batches {
                let jobs: Vec<(&Path, Transform)> = b.iter().map(|(p, t)| (p.as_path(), *t)).collect();
                if tx.send(prepare(cache, pre, &jobs)).is_err() {
                    // The consumer stopped (an error); nothing more to prepare.
                    return;
                }
            }
        });
        for (i, p) in rx.iter().enumerate() {
            consume(i, p)?;
        }
        Ok(())
    })
}

/// Which of `paths` decode (in parallel, warming the cache), and those that do not.
pub(crate) fn check_decodable(cache: &ImageCache, paths: &[&Path]) -> Vec<BadImage> {
    paths
        .par_iter()
        .filter_map(|p| {
            cache.get(p).err().map(|e| BadImage {
                path: p.to_path_buf(),
                error: e.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_images(dir: &Path, n: usize) -> Vec<PathBuf> {
        (0..n)
            .map(|i| {
                let p = dir.join(format!("{i}.png"));
                RgbImage::from_fn(20 + i as u32, 16, |x, y| {
                    image::Rgb([x as u8 * 9, y as u8 * 11, i as u8 * 40])
                })
                .save(&p)
                .unwrap();
                p
            })
            .collect()
    }

    #[test]
    fn parallel_batches_equal_one_image_at_a_time_and_corrupt_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut paths = write_images(dir.path(), 5);
        let bad = dir.path().join("truncated.jpg");
        std::fs::write(&bad, [0xFF, 0xD8, 0xFF, 0xE0, 0, 16, b'J']).unwrap();
        paths.insert(2, bad.clone());
        let pre = Preprocess::clip(8);
        let cache = ImageCache::new(1 << 20);
        let batches: Vec<Vec<(PathBuf, Transform)>> = paths
            .chunks(4)
            .map(|c| c.iter().map(|p| (p.clone(), Transform::Train { seed: 7 })).collect())
            .collect();
        let mut seen = Vec::new();
        stream(&cache, &pre, batches, |i, p| {
            seen.push((i, p.kept.clone(), p.bad.len()));
            for (j, &k) in p.kept.iter().enumerate() {
                let path = &paths[i * 4 + k];
                let img = load_rgb(path).unwrap();
                use rand::SeedableRng;
                let one = pre.normalize(&pre.train_u8(&img, &mut rand_chacha::ChaCha8Rng::seed_from_u64(7)));
                assert_eq!(&p.pixels[j * one.len()..(j + 1) * one.len()], one.as_slice());
            }
            if let Some(b) = p.bad.first() {
                assert_eq!(b.path, bad);
                assert!(b.error.contains("truncated.jpg"), "{}", b.error);
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec![(0, vec![0, 1, 3], 1), (1, vec![0, 1], 0)]);
        let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
        assert_eq!(check_decodable(&cache, &refs).len(), 1);
    }

    #[test]
    fn a_consumer_error_stops_the_stream() {
        let dir = tempfile::tempdir().unwrap();
        let paths = write_images(dir.path(), 6);
        let pre = Preprocess::clip(8);
        let cache = ImageCache::new(0);
        let batches: Vec<Vec<(PathBuf, Transform)>> =
            paths.iter().map(|p| vec![(p.clone(), Transform::Eval)]).collect();
        let mut n = 0;
        let r = stream(&cache, &pre, batches, |_, _| {
            n += 1;
            Err(crate::error::Error::Input("stop".into()))
        });
        assert!(r.is_err());
        assert_eq!(n, 1);
    }
}
