//! GRAM's meta-training corpus: image–caption pairs from the embedded world or an open_clip-style
//! CSV/TSV, its content digest, and the frozen image and caption features meta-training starts
//! from.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use image::RgbImage;
use sha2::{Digest, Sha256};

use super::CorpusSpec;
use crate::clip::{Clip, ClipTokenizer, Preprocess};
use crate::data::images::ImageCache;
use crate::error::{Error, Result};
use crate::features::{encode_images, FeatureSet};

/// A corpus's images: decoded in memory (the embedded world's), or files read when needed (a CSV
/// corpus: a web-scale corpus does not fit in memory decoded).
pub enum CorpusImages {
    Decoded(Vec<RgbImage>),
    Files(Vec<PathBuf>),
}

/// Image–caption pairs.
pub struct Corpus {
    pub images: CorpusImages,
    pub captions: Vec<String>,
    /// Computed once (it reads every image file of a CSV corpus).
    digest: std::sync::OnceLock<String>,
}

impl Corpus {
    /// open_clip's CSV convention: a header naming the columns, one pair per line, fields split at
    /// `sep` (`\t` for TSV); image paths relative to the file's folder. Images are read later
    /// (features, visual episodes); one that does not decode follows the suite's `on_corrupt`.
    pub fn from_csv(path: &Path, image_col: &str, caption_col: &str, sep: char) -> Result<Corpus> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
        let (_, header) = lines
            .next()
            .ok_or_else(|| Error::Input(format!("{}: empty corpus file", path.display())))?;
        let cols: Vec<&str> = header.split(sep).map(str::trim).collect();
        let find = |name: &str| {
            cols.iter().position(|c| *c == name).ok_or_else(|| {
                Error::Input(format!(
                    "{}: no column `{name}` (columns: {})",
                    path.display(),
                    cols.join(", ")
                ))
            })
        };
        let (ic, cc) = (find(image_col)?, find(caption_col)?);
        let base = path.parent().unwrap_or(Path::new("."));
        let (mut files, mut captions) = (Vec::new(), Vec::new());
        for (i, line) in lines {
            let f: Vec<&str> = line.split(sep).collect();
            let (Some(img), Some(cap)) = (f.get(ic), f.get(cc)) else {
                return Err(Error::Input(format!(
                    "{}:{}: expected {} fields",
                    path.display(),
                    i + 1,
                    cols.len()
                )));
            };
            files.push(base.join(img.trim()));
            captions.push(cap.trim().to_string());
        }
        if captions.is_empty() {
            return Err(Error::Input(format!("{}: no image–caption pairs", path.display())));
        }
        Ok(Corpus {
            images: CorpusImages::Files(files),
            captions,
            digest: Default::default(),
        })
    }

    /// The embedded world's corpus, the default meta-training input: `n` seeded concepts (the
    /// colour–shape pairs held out of pretraining excluded, as there) rendered in a domain drawn
    /// uniformly from photo / sketch / cartoon / clutter, each with one caption.
    pub fn world(n: usize, image_size: u32, seed: u64) -> Corpus {
        use crate::world::{render, Concept, Domain};
        use rand::Rng;
        let mut rng = crate::seeds::rng(seed, crate::seeds::Stream::WorldCorpus);
        let domains = [Domain::Photo, Domain::Sketch, Domain::Cartoon, Domain::Clutter];
        let (mut images, mut captions) = (Vec::with_capacity(n), Vec::with_capacity(n));
        while captions.len() < n {
            let c = Concept::random(&mut rng);
            if crate::world::pretrain::held_out(c.shape, c.colour) {
                continue;
            }
            let d = domains[rng.random_range(0..domains.len())];
            images.push(render(&c, d, image_size, &mut rng));
            captions.push(c.caption(d, &mut rng));
        }
        Corpus {
            images: CorpusImages::Decoded(images),
            captions,
            digest: Default::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.captions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.captions.is_empty()
    }

    /// Pair `i`'s image, decoded.
    pub fn image(&self, i: usize) -> Result<Cow<'_, RgbImage>> {
        match &self.images {
            CorpusImages::Decoded(v) => Ok(Cow::Borrowed(&v[i])),
            CorpusImages::Files(f) => Ok(Cow::Owned(crate::clip::preprocess::load_rgb(&f[i])?)),
        }
    }

    /// The pairs at `keep`, in that order.
    pub fn subset(&self, keep: &[usize]) -> Corpus {
        Corpus {
            images: match &self.images {
                CorpusImages::Decoded(v) => CorpusImages::Decoded(keep.iter().map(|&i| v[i].clone()).collect()),
                CorpusImages::Files(f) => CorpusImages::Files(keep.iter().map(|&i| f[i].clone()).collect()),
            },
            captions: keep.iter().map(|&i| self.captions[i].clone()).collect(),
            digest: Default::default(),
        }
    }

    /// SHA-256 over every caption and image in order: decoded pixels, or each file's bytes'
    /// SHA-256 (files hashed in parallel; a file that cannot be read is an error).
    pub fn digest(&self) -> Result<String> {
        if let Some(d) = self.digest.get() {
            return Ok(d.clone());
        }
        let d = self.compute_digest()?;
        Ok(self.digest.get_or_init(|| d).clone())
    }

    fn compute_digest(&self) -> Result<String> {
        let mut h = Sha256::new();
        match &self.images {
            CorpusImages::Decoded(images) => {
                for (img, cap) in images.iter().zip(&self.captions) {
                    h.update(cap.as_bytes());
                    h.update([0]);
                    h.update(img.dimensions().0.to_le_bytes());
                    h.update(img.as_raw());
                }
            }
            CorpusImages::Files(files) => {
                use rayon::prelude::*;
                let digests = files
                    .par_iter()
                    .map(|f| {
                        std::fs::read(f)
                            .map(|b| crate::files::sha256_hex(&b))
                            .map_err(|e| Error::io(f, e))
                    })
                    .collect::<Result<Vec<_>>>()?;
                for (d, cap) in digests.iter().zip(&self.captions) {
                    h.update(cap.as_bytes());
                    h.update([0]);
                    h.update(d.as_bytes());
                }
            }
        }
        Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
    }
}

impl CorpusSpec {
    /// The corpus this spec names: the world's (`image_size` px, from `seed`), or the CSV's pairs
    /// (`${VAR}` in its path expanded).
    pub fn open(&self, image_size: u32, seed: u64) -> Result<Corpus> {
        match self {
            CorpusSpec::World { size } => Ok(Corpus::world(*size, image_size, seed)),
            CorpusSpec::Csv {
                path,
                image_column,
                caption_column,
                separator,
            } => {
                let sep = separator.chars().next().unwrap_or('\t');
                Corpus::from_csv(
                    &crate::files::expand(path).map(PathBuf::from)?,
                    image_column,
                    caption_column,
                    sep,
                )
            }
        }
    }
}

/// Frozen features of every image (eval transform) and caption of a corpus, in corpus order:
/// the input of clustering and of the textual-prompt episodes, and what a feature cache keeps so
/// a resumed or repeated meta-training run does not encode the corpus again.
pub fn corpus_features<B: Backend>(
    clip: &Clip<B>,
    tok: &ClipTokenizer,
    pre: &Preprocess,
    corpus: &Corpus,
    cache: &ImageCache,
    batch_size: usize,
) -> Result<(FeatureSet, FeatureSet)> {
    let device = clip.logit_scale.val().device();
    let n = corpus.len();
    let t = std::time::Instant::now();
    let to_set = |parts: Vec<Tensor<B, 2>>| {
        let x = Tensor::cat(parts, 0);
        let dim = x.dims()[1];
        FeatureSet {
            dim,
            features: x.into_data().convert::<f32>().to_vec::<f32>().expect("f32"),
            ok: vec![true; n],
            bad: Vec::new(),
            compute_s: t.elapsed().as_secs_f64(),
        }
    };
    let images = match &corpus.images {
        CorpusImages::Decoded(decoded) => {
            let mut parts = Vec::new();
            for chunk in decoded.chunks(batch_size) {
                let crops: Vec<RgbImage> = chunk.iter().map(|i| pre.eval_u8(i)).collect();
                parts.push(clip.encode_image(pre.batch::<B>(&crops, &device), &Default::default()));
            }
            to_set(parts)
        }
        // Files go through the parallel image pipeline; those that do not decode are flagged.
        CorpusImages::Files(files) => encode_images(clip, pre, cache, files, batch_size, &device)?,
    };
    let mut text = Vec::new();
    for chunk in corpus.captions.chunks(batch_size) {
        text.push(clip.encode_text(tok, chunk)?);
    }
    Ok((images, to_set(text)))
}

/// The rows `keep` of a feature set.
pub(crate) fn feature_rows(set: &FeatureSet, keep: &[usize]) -> FeatureSet {
    FeatureSet {
        dim: set.dim,
        features: keep.iter().flat_map(|&i| set.row(i).to_vec()).collect(),
        ok: keep.iter().map(|&i| set.ok[i]).collect(),
        bad: set.bad.clone(),
        compute_s: set.compute_s,
    }
}

/// The corpus without the pairs whose image did not decode, and its features' matching rows
/// (shared as they are when every image decoded).
pub(crate) fn drop_undecodable(
    corpus: Corpus,
    images: Arc<FeatureSet>,
    captions: Arc<FeatureSet>,
) -> (Corpus, Arc<FeatureSet>, Arc<FeatureSet>) {
    if images.ok.iter().all(|&ok| ok) {
        return (corpus, images, captions);
    }
    let keep: Vec<usize> = (0..corpus.len()).filter(|&i| images.ok[i]).collect();
    (
        corpus.subset(&keep),
        Arc::new(feature_rows(&images, &keep)),
        Arc::new(feature_rows(&captions, &keep)),
    )
}
