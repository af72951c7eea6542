//! Meta-training GRAM's prompt initialisation and regulators on an image–text corpus: from the
//! corpus's frozen features, the cross-modal hierarchy, then first-order meta steps on seeded
//! episodes, checkpointed as it goes. The result is one artifact (`artifact.rs`).

use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use image::RgbImage;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::artifact::{regulator_tensors, Checkpointing, MetaArtifact, Resumed, RunId, SavedRegulator};
use super::corpus::Corpus;
use super::episodes::EpisodeSampler;
use super::meta::{ClassText, MetaRegulators, TaskEmbedding};
use super::{
    cross_modal_hierarchy, ClusterConfig, Episode, EpisodeConfig, EpisodeSet, Hierarchy, MetaLearner, MetaStep,
};
use super::{Regulator, RegulatorConfig};
use crate::clip::{Clip, ClipTokenizer, Preprocess};
use crate::error::{Error, Result};
use crate::features::FeatureSet;
use crate::methods::init::normal;
use crate::methods::text_prompts::ClassPrompts;
use crate::methods::{host_tensor, PromptArtifact, PromptRole};

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
    /// AdamW's ε for θ₀ and φ (SUPMER: torch.optim.Adam's default, 1e-8).
    pub adam_epsilon: f64,
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
        for (name, value, zero_ok) in [
            ("init_std", self.init_std, true),
            ("inner_lr", self.inner_lr, false),
            ("outer_lr", self.outer_lr, false),
            ("weight_decay", self.weight_decay, true),
            ("adam_epsilon", self.adam_epsilon, false),
            ("clip_norm", self.clip_norm, false),
        ] {
            if !value.is_finite() || value < 0.0 || (value == 0.0 && !zero_ok) {
                let want = if zero_ok { "finite and ≥ 0" } else { "finite and > 0" };
                return Err(format!("train: {name} must be {want}, not {value}"));
            }
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A valid meta-training table (3 steps, α = 1).
    pub(crate) const VALID: &str = r#"
text = { n_ctx = 4, depth = 1 }
init_std = 0.02
inner_lr = 1.0
inner_steps = 1
task_embedding = "image-mean"
outer_lr = 1e-3
weight_decay = 0.0
adam_epsilon = 1e-8
clip_norm = 1.0
steps = 3
tasks_per_step = 1
cluster = { domains = 2, classes_per_domain = 2, iterations = 5, order = "captions-then-images" }
episode = { ways = 2, shots = 1, queries = 2, query = "nearest-class-other-domain" }
regulator = { rank = 4, hidden_layers = 0, coef_hidden = 8, init = "xavier" }
"#;

    fn with(field: &str, value: &str) -> MetaTrainConfig {
        let text: String = VALID
            .lines()
            .map(|l| {
                if l.starts_with(&format!("{field} =")) {
                    format!("{field} = {value}")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn every_rate_and_scale_must_be_finite_and_in_range() {
        assert_eq!(with("init_std", "0.02").validate(), Ok(()));
        assert_eq!(with("weight_decay", "0.0").validate(), Ok(()));
        for field in ["inner_lr", "outer_lr", "adam_epsilon", "clip_norm"] {
            for bad in ["nan", "inf", "-1.0", "0.0"] {
                let err = with(field, bad).validate().unwrap_err();
                assert!(err.contains(field) && err.contains("> 0"), "{field} = {bad}: {err}");
            }
        }
        for field in ["init_std", "weight_decay"] {
            for bad in ["nan", "-inf", "-0.5"] {
                let err = with(field, bad).validate().unwrap_err();
                assert!(err.contains(field) && err.contains("≥ 0"), "{field} = {bad}: {err}");
            }
        }
    }
}
