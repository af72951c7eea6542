//! Meta-training GRAM's prompt initialisation and regulators on an image–text corpus: frozen
//! features of every image and caption, the cross-modal hierarchy, then first-order meta steps on
//! seeded episodes, checkpointed as it goes. The result is one artifact (θ₀, φ, the config, the
//! corpus digest, the per-step trace and episodes).

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use image::RgbImage;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::episodes::EpisodeSampler;
use super::meta::{ClassText, MetaRegulators, TaskEmbedding};
use super::{cross_modal_hierarchy, ClusterConfig, Episode, EpisodeConfig, EpisodeSet, MetaLearner, MetaStep};
use super::{Regulator, RegulatorConfig};
use crate::clip::{Clip, ClipTokenizer, Preprocess};
use crate::data::images::ImageCache;
use crate::error::{Error, Result};
use crate::features::{encode_images, FeatureSet};
use crate::methods::init::normal;
use crate::methods::text_prompts::ClassPrompts;
use crate::methods::{host_tensor, PromptArtifact, PromptRole};

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
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x3e7a_c0de);
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

/// The size of one modality's meta-learned prompts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptShape {
    /// Tokens per layer (a host's token count must match to start from θ₀).
    pub n_ctx: usize,
    /// Layers with prompts: 1 = the input only; more = deep prompts entering blocks 1 … depth−1.
    pub depth: usize,
}

/// Every meta-training choice (suite-visible).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaTrainConfig {
    pub cluster: ClusterConfig,
    pub episode: EpisodeConfig,
    /// ψ_φ's design, the same for each modality's regulator.
    pub regulator: RegulatorConfig,
    /// Textual prompts to meta-learn (CoOp / CoCoOp / MaPLe / IVLP hosts); absent: none.
    pub text: Option<PromptShape>,
    /// Visual prompts to meta-learn (VPT / IVLP hosts); with `text`, UNIGRAM's joint run.
    pub vision: Option<PromptShape>,
    /// σ of θ₀'s N(0, σ²) start.
    pub init_std: f64,
    /// α of the regulated inner steps.
    pub inner_lr: f64,
    /// Regulated inner steps per task (SUPMER: 1).
    pub inner_steps: usize,
    /// What ψ_φ's mixing coefficient is conditioned on, in meta-training and downstream.
    pub task_embedding: TaskEmbedding,
    /// AdamW learning rate of θ₀ and φ.
    pub outer_lr: f64,
    pub weight_decay: f64,
    /// Gradient-norm clip of θ₀'s and φ's updates.
    pub clip_norm: f64,
    /// Outer steps; each takes one update on the mean query loss of `tasks_per_step` episodes
    /// (SUPMER: 4).
    pub steps: usize,
    pub tasks_per_step: usize,
}

impl MetaTrainConfig {
    pub fn validate(&self) -> std::result::Result<(), String> {
        let shapes: Vec<&PromptShape> = self.text.iter().chain(&self.vision).collect();
        if shapes.is_empty() {
            return Err("train: meta-learn `text` prompts, `vision` prompts or both".into());
        }
        if shapes.iter().any(|s| s.n_ctx == 0 || s.depth == 0) {
            return Err("train: prompt n_ctx and depth must be positive".into());
        }
        if self.steps == 0 || self.tasks_per_step == 0 || self.inner_steps == 0 || self.episode.ways < 2 {
            return Err(
                "train: steps, tasks_per_step and inner_steps must be positive and episodes at least 2-way".into(),
            );
        }
        self.regulator.validate()
    }

    /// θ₀'s tensors a host role needs and how many tokens each has.
    pub fn provides(&self, role: crate::methods::PromptRole) -> Option<usize> {
        use crate::methods::PromptRole;
        let (shape, layer) = match role {
            PromptRole::Text(l) => (self.text.as_ref()?, l),
            PromptRole::Vision(l) => (self.vision.as_ref()?, l),
        };
        (layer < shape.depth).then_some(shape.n_ctx)
    }
}

/// One modality's ψ_φ as saved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedRegulator {
    /// The prompt width its rows have.
    pub width: usize,
    /// φ's tensors in module order.
    pub tensors: Vec<(Vec<usize>, Vec<f32>)>,
}

/// What meta-training produces.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetaArtifact {
    pub config: MetaTrainConfig,
    pub corpus_digest: String,
    /// θ₀ by role name (`text.0` … , `vision.0` …), each `[n_ctx, width]`.
    pub theta0: PromptArtifact,
    pub text_regulator: Option<SavedRegulator>,
    pub vision_regulator: Option<SavedRegulator>,
    /// The image-feature width the task embedding has.
    pub task_dim: usize,
    /// Every step's losses and coefficients.
    pub trace: Vec<MetaStep>,
    /// Every episode (corpus indices and labels; `tasks_per_step` per step, in order), as drawn
    /// from the seed (empty in
    /// artifacts written before episodes were recorded).
    #[serde(default)]
    pub episodes: Vec<Episode>,
}

impl MetaArtifact {
    /// The regulator of one modality, rebuilt.
    pub fn regulator<B: Backend>(&self, text: bool, device: &B::Device) -> Result<Option<Regulator<B>>> {
        let saved = if text {
            &self.text_regulator
        } else {
            &self.vision_regulator
        };
        saved
            .as_ref()
            .map(|s| regulator_from(&self.config.regulator, s.width, self.task_dim, &s.tensors, device))
            .transpose()
    }
}

/// φ's tensors in module order.
pub fn regulator_tensors<B: Backend>(r: &Regulator<B>) -> Vec<(Vec<usize>, Vec<f32>)> {
    struct V(Vec<(Vec<usize>, Vec<f32>)>);
    impl<B: Backend> ModuleVisitor<B> for V {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            self.0.push(crate::methods::host_tensor(p.val()));
        }
    }
    let mut v = V(Vec::new());
    r.visit(&mut v);
    v.0
}

/// φ rebuilt from its tensors (a regulator of the same config supplies the structure).
pub fn regulator_from<B: Backend>(
    cfg: &RegulatorConfig,
    width: usize,
    task_dim: usize,
    tensors: &[(Vec<usize>, Vec<f32>)],
    device: &B::Device,
) -> Result<Regulator<B>> {
    struct M<'a, B: Backend> {
        t: &'a [(Vec<usize>, Vec<f32>)],
        i: usize,
        ok: bool,
        device: B::Device,
    }
    impl<B: Backend> ModuleMapper<B> for M<'_, B> {
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            match self.t.get(self.i) {
                Some((shape, data)) if shape.as_slice() == p.dims() => {
                    self.i += 1;
                    let dims: [usize; D] = p.dims();
                    Param::from_tensor(Tensor::from_data(TensorData::new(data.clone(), dims), &self.device))
                }
                _ => {
                    self.ok = false;
                    p
                }
            }
        }
    }
    let base = cfg.init::<B>(width, task_dim, 0, device);
    let mut m = M::<B> {
        t: tensors,
        i: 0,
        ok: true,
        device: device.clone(),
    };
    let r = base.map(&mut m);
    if !m.ok || m.i != tensors.len() {
        return Err(Error::Input("gram: the saved regulator does not fit its config".into()));
    }
    Ok(r)
}

fn rows<B: Backend>(x: &Tensor<B, 2>, idx: &[usize]) -> Tensor<B, 2> {
    let i = Tensor::<B, 1, Int>::from_data(
        TensorData::new(idx.iter().map(|&v| v as i64).collect::<Vec<_>>(), [idx.len()]),
        &x.device(),
    );
    x.clone().select(0, i)
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
pub fn feature_rows(set: &FeatureSet, keep: &[usize]) -> FeatureSet {
    FeatureSet {
        dim: set.dim,
        features: keep.iter().flat_map(|&i| set.row(i).to_vec()).collect(),
        ok: keep.iter().map(|&i| set.ok[i]).collect(),
        bad: set.bad.clone(),
        compute_s: set.compute_s,
    }
}

/// Where and how often meta-training saves its state. A run that finds a checkpoint of the same
/// run (config apart from `steps`, seed, corpus) continues from it and ends bit-identical to an
/// uninterrupted one: θ₀, φ and both optimizers' moments are restored and the episode stream is
/// replayed from the seed (and checked against the recorded episodes).
pub struct Checkpointing {
    pub path: std::path::PathBuf,
    /// Save after every this many steps …
    pub every_steps: Option<usize>,
    /// … or when this long has passed since the last save.
    pub every_secs: Option<f64>,
}

#[derive(Serialize, Deserialize)]
struct MetaCheckpoint {
    config: MetaTrainConfig,
    seed: u64,
    corpus_digest: String,
    trace: Vec<MetaStep>,
    episodes: Vec<Episode>,
    /// θ₀, φ and the two optimizers' records (burn's bincode records).
    state: Vec<Vec<u8>>,
}

fn same_run(a: &MetaTrainConfig, b: &MetaTrainConfig) -> bool {
    MetaTrainConfig { steps: 0, ..a.clone() } == MetaTrainConfig { steps: 0, ..b.clone() }
}

/// Meta-trains θ₀ and φ on `corpus` (its frozen image and caption `features`, from
/// [`corpus_features`] or a feature cache); `log` gets
/// every step as it finishes.
#[allow(clippy::too_many_arguments)]
pub fn meta_train<B: AutodiffBackend>(
    clip: &Clip<B>,
    tok: &ClipTokenizer,
    pre: &Preprocess,
    corpus: &Corpus,
    features: (&FeatureSet, &FeatureSet),
    cfg: &MetaTrainConfig,
    seed: u64,
    checkpoint: Option<&Checkpointing>,
    log: &mut dyn FnMut(usize, &MetaStep),
) -> Result<MetaArtifact> {
    let device = clip.logit_scale.val().device();
    let n = corpus.len();
    let tensor = |f: &FeatureSet| {
        if f.ok.len() != n {
            return Err(Error::Internal(format!(
                "gram: {} features for a corpus of {n} pairs",
                f.ok.len()
            )));
        }
        Ok(Tensor::<B, 2>::from_data(
            TensorData::new(f.features.clone(), [n, f.dim]),
            &device,
        ))
    };
    let (img, txt) = (tensor(features.0)?, tensor(features.1)?);
    let corpus_digest = corpus.digest()?;
    let h = cross_modal_hierarchy(txt.clone().inner(), img.clone().inner(), &cfg.cluster, seed);
    let class_text: Vec<Vec<f32>> = h.class_caption.iter().map(|&i| features.1.row(i).to_vec()).collect();
    let sampler = EpisodeSampler::new(&h, &class_text);
    let task_dim = img.dims()[1];
    let text_width = clip.text_model.token_embedding.dims()[1];
    let vision_width = clip.vision_model.class_embedding.dims()[0];
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6a7a);
    let mut draw = |shape: &Option<PromptShape>, width: usize| -> Vec<Tensor<B, 2>> {
        shape
            .iter()
            .flat_map(|s| (0..s.depth).map(move |_| s))
            .map(|s| {
                Tensor::<B, 2>::from_data(
                    TensorData::new(normal(&mut rng, s.n_ctx * width, cfg.init_std), [s.n_ctx, width]),
                    &device,
                )
            })
            .collect()
    };
    let text0 = draw(&cfg.text, text_width);
    let vision0 = draw(&cfg.vision, vision_width);
    let regulators = MetaRegulators {
        text: cfg
            .text
            .as_ref()
            .map(|_| cfg.regulator.init::<B>(text_width, task_dim, seed, &device)),
        vision: cfg.vision.as_ref().map(|_| {
            cfg.regulator
                .init::<B>(vision_width, task_dim, seed.wrapping_add(1), &device)
        }),
    };
    let mut meta = MetaLearner::new(
        text0,
        vision0,
        regulators,
        cfg.inner_lr,
        cfg.clip_norm,
        cfg.weight_decay as f32,
    );
    meta.inner_steps = cfg.inner_steps;
    meta.task_embedding = cfg.task_embedding;
    let no_episode = || {
        Error::Config(format!(
            "gram: the corpus has no domain with {} classes of {} items (fewer ways or shots, or more data)",
            cfg.episode.ways, cfg.episode.shots
        ))
    };
    let mut trace = Vec::with_capacity(cfg.steps);
    let mut episodes = Vec::with_capacity(cfg.steps);
    if let Some(c) = checkpoint.filter(|c| c.path.exists()) {
        let bytes = std::fs::read(&c.path).map_err(|e| Error::io(&c.path, e))?;
        let ck: MetaCheckpoint = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Store(format!(
                "{}: unreadable meta-training checkpoint ({e}); delete it to start the run over",
                c.path.display()
            ))
        })?;
        let foreign = || {
            Error::Store(format!(
                "{}: a checkpoint of another meta-training run (config, seed or corpus differ); delete it to start over",
                c.path.display()
            ))
        };
        if !same_run(&ck.config, cfg) || ck.seed != seed || ck.corpus_digest != corpus_digest {
            return Err(foreign());
        }
        // Replay the episode stream up to where the checkpoint stopped.
        let tasks = cfg.tasks_per_step;
        if ck.episodes.len() != ck.trace.len() * tasks {
            return Err(foreign());
        }
        for e in ck.episodes.iter().take(cfg.steps * tasks) {
            if &sampler.sample(&cfg.episode, &mut rng).ok_or_else(no_episode)? != e {
                return Err(foreign());
            }
        }
        meta = meta.load_state(&ck.state, &device)?;
        trace = ck.trace;
        episodes = ck.episodes;
        trace.truncate(cfg.steps);
        episodes.truncate(cfg.steps * tasks);
    }
    let placeholder = cfg.text.as_ref().map(|t| vec!["X"; t.n_ctx].join(" "));
    let mut last_save = std::time::Instant::now();
    for step in trace.len()..cfg.steps {
        let drawn = (0..cfg.tasks_per_step)
            .map(|_| sampler.sample(&cfg.episode, &mut rng).ok_or_else(no_episode))
            .collect::<Result<Vec<_>>>()?;
        // Per task: its class prompts (or frozen class features) and its two sets.
        let mut prepared = Vec::with_capacity(drawn.len());
        for e in &drawn {
            let names: Vec<String> = e
                .classes
                .iter()
                .map(|&c| corpus.captions[h.class_caption[c]].clone())
                .collect();
            let prompts = match (&placeholder, &cfg.text) {
                (Some(ph), Some(t)) => Some(ClassPrompts::new(clip, tok, ph, t.n_ctx, &names)?),
                _ => None,
            };
            let frozen_text = match prompts {
                Some(_) => None,
                None => Some(rows(
                    &txt,
                    &e.classes.iter().map(|&c| h.class_caption[c]).collect::<Vec<_>>(),
                )),
            };
            prepared.push((prompts, frozen_text, e));
        }
        let sets: Vec<(EpisodeSet<B>, EpisodeSet<B>)> = prepared
            .iter()
            .map(|(prompts, frozen_text, e)| -> Result<_> {
                let set = |items: &[(usize, usize)]| -> Result<EpisodeSet<B>> {
                    let idx: Vec<usize> = items.iter().map(|p| p.0).collect();
                    let pixels = match cfg.vision {
                        Some(_) => {
                            let crops = idx
                                .iter()
                                .map(|&i| Ok(pre.eval_u8(corpus.image(i)?.as_ref())))
                                .collect::<Result<Vec<RgbImage>>>()?;
                            Some(pre.batch::<B>(&crops, &device))
                        }
                        None => None,
                    };
                    Ok(EpisodeSet {
                        features: rows(&img, &idx),
                        pixels,
                        labels: Tensor::<B, 1, Int>::from_data(
                            TensorData::new(items.iter().map(|p| p.1 as i64).collect::<Vec<_>>(), [items.len()]),
                            &device,
                        ),
                        classes: match (prompts, frozen_text) {
                            (Some(p), _) => ClassText::Prompts(p),
                            (None, Some(f)) => ClassText::Frozen(f.clone()),
                            (None, None) => unreachable!("one of the two is set above"),
                        },
                    })
                };
                Ok((set(&e.support)?, set(&e.query)?))
            })
            .collect::<Result<_>>()?;
        let pairs: Vec<(&EpisodeSet<B>, &EpisodeSet<B>)> = sets.iter().map(|(s, q)| (s, q)).collect();
        let s = meta.step_tasks(clip, &pairs, cfg.outer_lr);
        log(step, &s);
        trace.push(s);
        episodes.extend(drawn.iter().cloned());
        if let Some(c) = checkpoint {
            let due = c.every_steps.is_some_and(|k| (step + 1) % k == 0)
                || c.every_secs.is_some_and(|t| last_save.elapsed().as_secs_f64() >= t);
            if due && step + 1 < cfg.steps {
                let ck = MetaCheckpoint {
                    config: cfg.clone(),
                    seed,
                    corpus_digest: corpus_digest.clone(),
                    trace: trace.clone(),
                    episodes: episodes.clone(),
                    state: meta.state()?,
                };
                let bytes = serde_json::to_vec(&ck).map_err(|e| Error::Store(format!("checkpoint: {e}")))?;
                crate::files::write_atomic(&c.path, &bytes)?;
                last_save = std::time::Instant::now();
            }
        }
    }
    let mut theta0 = PromptArtifact::new();
    for (i, p) in meta.prompt.text.iter().enumerate() {
        theta0.insert(PromptRole::Text(i).theta0_name(), host_tensor(p.val().inner()));
    }
    for (i, p) in meta.prompt.vision.iter().enumerate() {
        theta0.insert(PromptRole::Vision(i).theta0_name(), host_tensor(p.val().inner()));
    }
    let regs = meta.regulators.valid();
    let saved = |r: Option<Regulator<B::InnerBackend>>, width: usize| {
        r.map(|r| SavedRegulator {
            width,
            tensors: regulator_tensors(&r),
        })
    };
    Ok(MetaArtifact {
        config: cfg.clone(),
        corpus_digest,
        theta0,
        text_regulator: saved(regs.text, text_width),
        vision_regulator: saved(regs.vision, vision_width),
        task_dim,
        trace,
        episodes,
    })
}
