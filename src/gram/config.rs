//! Every meta-training choice a suite states (`[gram.NAME.train]`), and the
//! checks the types cannot make.

use serde::{Deserialize, Serialize};

use super::meta::TaskEmbedding;
use super::{ClusterConfig, EpisodeConfig, RegulatorConfig};

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
        self.regulator.validate()
    }

    /// θ₀'s tensors a host role needs and how many tokens each has.
    pub(crate) fn provides(&self, role: crate::methods::PromptRole) -> Option<usize> {
        use crate::methods::PromptRole;
        let (shape, layer) = match role {
            PromptRole::Text(l) => (self.text.as_ref()?, l),
            PromptRole::Vision(l) => (self.vision.as_ref()?, l),
        };
        (layer < shape.depth).then_some(shape.n_ctx)
    }
}

#[cfg(test)]
pub(crate) mod tests {
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
}
