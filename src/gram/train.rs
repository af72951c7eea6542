//! Meta-training GRAM's prompt initialisation and regulators on an image–text corpus: from the
//! corpus's frozen features, the cross-modal hierarchy, then first-order meta steps on seeded
//! episodes, checkpointed as it goes. The result is one artifact (`artifact.rs`).

use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use image::RgbImage;
use rand_chacha::ChaCha8Rng;

use super::artifact::{regulator_tensors, Checkpointing, MetaArtifact, Resumed, RunId, SavedRegulator};
use super::config::{MetaTrainConfig, PromptShape};
use super::corpus::Corpus;
use super::episodes::EpisodeSampler;
use super::meta::{ClassText, MetaRegulators};
use super::Regulator;
use super::{cross_modal_hierarchy, Episode, EpisodeConfig, EpisodeSet, Hierarchy, MetaLearner, MetaStep};
use crate::clip::{Clip, ClipTokenizer, Preprocess};
use crate::error::{Error, Result};
use crate::features::FeatureSet;
use crate::methods::init::normal;
use crate::methods::text_prompts::ClassPrompts;
use crate::methods::{host_tensor, PromptArtifact, PromptRole};

fn rows<B: Backend>(x: &Tensor<B, 2>, idx: &[usize]) -> Tensor<B, 2> {
    let i = Tensor::<B, 1, Int>::from_data(
        TensorData::new(idx.iter().map(|&v| v as i64).collect::<Vec<_>>(), [idx.len()]),
        &x.device(),
    );
    x.clone().select(0, i)
}

/// What one meta-training run reads.
pub struct MetaInputs<'a, B: AutodiffBackend> {
    pub clip: &'a Clip<B>,
    pub tok: &'a ClipTokenizer,
    pub pre: &'a Preprocess,
    pub corpus: &'a Corpus,
    /// The corpus's frozen image and caption features (`corpus::corpus_features` or a cache).
    pub images: &'a FeatureSet,
    pub captions: &'a FeatureSet,
    pub config: &'a MetaTrainConfig,
    pub seed: u64,
    /// Where the run saves and resumes its state (None: it does not).
    pub checkpoint: Option<&'a Checkpointing>,
}

/// The corpus's features as one tensor, checked against its length.
fn feature_tensor<B: Backend>(f: &FeatureSet, n: usize, device: &B::Device) -> Result<Tensor<B, 2>> {
    if f.ok.len() != n {
        return Err(Error::Internal(format!(
            "gram: {} features for a corpus of {n} pairs",
            f.ok.len()
        )));
    }
    Ok(Tensor::<B, 2>::from_data(
        TensorData::new(f.features.clone(), [n, f.dim]),
        device,
    ))
}

/// θ₀ drawn from N(0, init_std²) on the host (text prompts first, then visual ones, from `rng`)
/// and each modality's ψ_φ at its init.
fn init_learner<B: AutodiffBackend>(
    inp: &MetaInputs<B>,
    rng: &mut ChaCha8Rng,
    task_dim: usize,
    widths: (usize, usize),
) -> MetaLearner<B> {
    let (cfg, seed) = (inp.config, inp.seed);
    let device = inp.clip.logit_scale.val().device();
    let mut draw = |shape: &Option<PromptShape>, width: usize| -> Vec<Tensor<B, 2>> {
        shape
            .iter()
            .flat_map(|s| (0..s.depth).map(move |_| s))
            .map(|s| {
                Tensor::<B, 2>::from_data(
                    TensorData::new(normal(rng, s.n_ctx * width, cfg.init_std), [s.n_ctx, width]),
                    &device,
                )
            })
            .collect()
    };
    let text0 = draw(&cfg.text, widths.0);
    let vision0 = draw(&cfg.vision, widths.1);
    let regulators = MetaRegulators {
        text: cfg
            .text
            .as_ref()
            .map(|_| cfg.regulator.init::<B>(widths.0, task_dim, seed, &device)),
        vision: cfg.vision.as_ref().map(|_| {
            cfg.regulator
                .init::<B>(widths.1, task_dim, seed.wrapping_add(1), &device)
        }),
    };
    let mut meta = MetaLearner::new(
        text0,
        vision0,
        regulators,
        cfg.inner_lr,
        cfg.clip_norm,
        cfg.weight_decay as f32,
        cfg.adam_epsilon as f32,
    );
    meta.inner_steps = cfg.inner_steps;
    meta.task_embedding = cfg.task_embedding;
    meta
}

/// The corpus's frozen features, clustered.
struct Clustered<B: Backend> {
    images: Tensor<B, 2>,
    captions: Tensor<B, 2>,
    hierarchy: Hierarchy,
}

/// An episode's class text, owned: prompts over the classes' captions (textual prompts), or the
/// captions' frozen features.
enum EpisodeText<B: Backend> {
    Prompts(ClassPrompts<B>),
    Frozen(Tensor<B, 2>),
}

impl<B: Backend> EpisodeText<B> {
    fn view(&self) -> ClassText<'_, B> {
        match self {
            EpisodeText::Prompts(p) => ClassText::Prompts(p),
            EpisodeText::Frozen(f) => ClassText::Frozen(f.clone()),
        }
    }
}

fn episode_text<B: AutodiffBackend>(inp: &MetaInputs<B>, c: &Clustered<B>, e: &Episode) -> Result<EpisodeText<B>> {
    let h = &c.hierarchy;
    Ok(match &inp.config.text {
        Some(t) => {
            let names: Vec<String> = e
                .classes
                .iter()
                .map(|&k| inp.corpus.captions[h.class_caption[k]].clone())
                .collect();
            let placeholder = vec!["X"; t.n_ctx].join(" ");
            EpisodeText::Prompts(ClassPrompts::new(inp.clip, inp.tok, &placeholder, t.n_ctx, &names)?)
        }
        None => EpisodeText::Frozen(rows(
            &c.captions,
            &e.classes.iter().map(|&k| h.class_caption[k]).collect::<Vec<_>>(),
        )),
    })
}

/// One episode's support and query sets: features, pixels for visual prompts, labels, its text.
fn episode_sets<'t, B: AutodiffBackend>(
    inp: &MetaInputs<B>,
    c: &Clustered<B>,
    e: &Episode,
    text: &'t EpisodeText<B>,
) -> Result<(EpisodeSet<'t, B>, EpisodeSet<'t, B>)> {
    let (cfg, pre, corpus) = (inp.config, inp.pre, inp.corpus);
    let device = inp.clip.logit_scale.val().device();
    let set = |items: &[(usize, usize)]| -> Result<EpisodeSet<'t, B>> {
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
            features: rows(&c.images, &idx),
            pixels,
            labels: Tensor::<B, 1, Int>::from_data(
                TensorData::new(items.iter().map(|p| p.1 as i64).collect::<Vec<_>>(), [items.len()]),
                &device,
            ),
            classes: text.view(),
        })
    };
    Ok((set(&e.support)?, set(&e.query)?))
}

/// Meta-trains θ₀ and φ on the corpus; `log` gets every step as it finishes.
pub fn meta_train<B: AutodiffBackend>(
    inp: &MetaInputs<B>,
    log: &mut dyn FnMut(usize, &MetaStep),
) -> Result<MetaArtifact> {
    let (clip, cfg, seed) = (inp.clip, inp.config, inp.seed);
    let device = clip.logit_scale.val().device();
    let n = inp.corpus.len();
    let (images, captions) = (
        feature_tensor::<B>(inp.images, n, &device)?,
        feature_tensor::<B>(inp.captions, n, &device)?,
    );
    let corpus_digest = inp.corpus.digest()?;
    let hierarchy = cross_modal_hierarchy(captions.clone().inner(), images.clone().inner(), &cfg.cluster, seed);
    let class_text: Vec<Vec<f32>> = hierarchy
        .class_caption
        .iter()
        .map(|&i| inp.captions.row(i).to_vec())
        .collect();
    let task_dim = images.dims()[1];
    let widths = (
        clip.text_model.token_embedding.dims()[1],
        clip.vision_model.class_embedding.dims()[0],
    );
    let mut rng = crate::seeds::rng(seed, crate::seeds::Stream::MetaTraining);
    let meta = init_learner(inp, &mut rng, task_dim, widths);
    let clustered = Clustered {
        images,
        captions,
        hierarchy,
    };
    let sampler = EpisodeSampler::new(&clustered.hierarchy, &class_text);
    let mut sample = |e: &EpisodeConfig| {
        sampler.sample(e, &mut rng).ok_or_else(|| {
            Error::Config(format!(
                "gram: the corpus has no domain with {} classes of {} items (fewer ways or shots, or more data)",
                e.ways, e.shots
            ))
        })
    };
    let run = RunId {
        config: cfg,
        seed,
        corpus_digest: &corpus_digest,
    };
    let resumed = match inp.checkpoint.filter(|c| c.path.exists()) {
        Some(c) => c.resume(&run, meta, &mut sample, &device)?,
        None => Resumed::fresh(meta, cfg),
    };
    let (mut meta, mut trace, mut episodes) = (resumed.meta, resumed.trace, resumed.episodes);
    let mut last_save = std::time::Instant::now();
    for step in trace.len()..cfg.steps {
        let drawn = (0..cfg.tasks_per_step)
            .map(|_| sample(&cfg.episode))
            .collect::<Result<Vec<_>>>()?;
        let texts = drawn
            .iter()
            .map(|e| episode_text(inp, &clustered, e))
            .collect::<Result<Vec<_>>>()?;
        let sets = drawn
            .iter()
            .zip(&texts)
            .map(|(e, t)| episode_sets(inp, &clustered, e, t))
            .collect::<Result<Vec<_>>>()?;
        let pairs: Vec<(&EpisodeSet<B>, &EpisodeSet<B>)> = sets.iter().map(|(s, q)| (s, q)).collect();
        let s = meta.step_tasks(clip, &pairs, cfg.outer_lr);
        log(step, &s);
        trace.push(s);
        episodes.extend(drawn.iter().cloned());
        if let Some(c) = inp.checkpoint {
            let due = c.every_steps.is_some_and(|k| (step + 1) % k == 0)
                || c.every_secs.is_some_and(|t| last_save.elapsed().as_secs_f64() >= t);
            if due && step + 1 < cfg.steps {
                c.save(&run, &meta, &trace, &episodes)?;
                last_save = std::time::Instant::now();
            }
        }
    }
    Ok(artifact(&meta, cfg, corpus_digest, widths, task_dim, trace, episodes))
}

/// The artifact of a finished run.
fn artifact<B: AutodiffBackend>(
    meta: &MetaLearner<B>,
    cfg: &MetaTrainConfig,
    corpus_digest: String,
    widths: (usize, usize),
    task_dim: usize,
    trace: Vec<MetaStep>,
    episodes: Vec<Episode>,
) -> MetaArtifact {
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
    MetaArtifact {
        config: cfg.clone(),
        corpus_digest,
        theta0,
        text_regulator: saved(regs.text, widths.0),
        vision_regulator: saved(regs.vision, widths.1),
        task_dim,
        trace,
        episodes,
    }
}
