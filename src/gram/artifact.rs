//! What meta-training leaves behind: the artifact (θ₀, each modality's ψ_φ, the config, the
//! corpus digest, the trace and episodes), and the checkpoint an interrupted run resumes from.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::config::MetaTrainConfig;
use super::{Episode, EpisodeConfig, MetaLearner, MetaStep, Regulator, RegulatorConfig};
use crate::error::{Error, Result};
use crate::methods::PromptArtifact;

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
pub(crate) fn regulator_from<B: Backend>(
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

/// What identifies a meta-training run to its checkpoint: a checkpoint of another run is refused.
pub struct RunId<'a> {
    pub config: &'a MetaTrainConfig,
    pub seed: u64,
    pub corpus_digest: &'a str,
}

/// Where a resumed run stands: its learner, the steps done and the episodes drawn.
pub struct Resumed<B: AutodiffBackend> {
    pub meta: MetaLearner<B>,
    pub trace: Vec<MetaStep>,
    pub episodes: Vec<Episode>,
}

impl<B: AutodiffBackend> Resumed<B> {
    /// A run starting at its first step.
    pub fn fresh(meta: MetaLearner<B>, cfg: &MetaTrainConfig) -> Self {
        Resumed {
            meta,
            trace: Vec::with_capacity(cfg.steps),
            episodes: Vec::with_capacity(cfg.steps * cfg.tasks_per_step),
        }
    }
}

impl Checkpointing {
    /// Continues from the checkpoint (the file must exist): checks it is this run's, replays the
    /// episode stream of `sample` up to where it stopped (so the stream continues where it
    /// would have), and restores θ₀, φ and both optimizers.
    pub fn resume<B: AutodiffBackend>(
        &self,
        run: &RunId,
        meta: MetaLearner<B>,
        sample: &mut dyn FnMut(&EpisodeConfig) -> Result<Episode>,
        device: &B::Device,
    ) -> Result<Resumed<B>> {
        let cfg = run.config;
        let bytes = std::fs::read(&self.path).map_err(|e| Error::io(&self.path, e))?;
        let ck: MetaCheckpoint = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Store(format!(
                "{}: unreadable meta-training checkpoint ({e}); delete it to start the run over",
                self.path.display()
            ))
        })?;
        let foreign = || {
            Error::Store(format!(
                "{}: a checkpoint of another meta-training run (config, seed or corpus differ); delete it to start over",
                self.path.display()
            ))
        };
        if !same_run(&ck.config, cfg) || ck.seed != run.seed || ck.corpus_digest != run.corpus_digest {
            return Err(foreign());
        }
        let tasks = cfg.tasks_per_step;
        if ck.episodes.len() != ck.trace.len() * tasks {
            return Err(foreign());
        }
        for e in ck.episodes.iter().take(cfg.steps * tasks) {
            if &sample(&cfg.episode)? != e {
                return Err(foreign());
            }
        }
        let (mut trace, mut episodes) = (ck.trace, ck.episodes);
        trace.truncate(cfg.steps);
        episodes.truncate(cfg.steps * tasks);
        Ok(Resumed {
            meta: meta.load_state(&ck.state, device)?,
            trace,
            episodes,
        })
    }

    /// Saves the run's state atomically.
    pub fn save<B: AutodiffBackend>(
        &self,
        run: &RunId,
        meta: &MetaLearner<B>,
        trace: &[MetaStep],
        episodes: &[Episode],
    ) -> Result<()> {
        let ck = MetaCheckpoint {
            config: run.config.clone(),
            seed: run.seed,
            corpus_digest: run.corpus_digest.to_string(),
            trace: trace.to_vec(),
            episodes: episodes.to_vec(),
            state: meta.state()?,
        };
        let bytes = serde_json::to_vec(&ck).map_err(|e| Error::Internal(format!("checkpoint: {e}")))?;
        crate::files::write_atomic(&self.path, &bytes)
    }
}
