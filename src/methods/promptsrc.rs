//! PromptSRC (Khattak et al., ICCV'23): IVLP prompts with self-regulating constraints and Gaussian
//! prompt aggregation (the model is `multimodal.rs`'s).

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use super::ivlp::IvlpConfig;
use super::multimodal::SelfRegulation;
use super::optim::{Epochs, PerCell, SgdConfig};
use super::spec::{BuildInputs, Builder, EncoderUse, MethodSpec, Training};
use super::PromptRole;
use crate::clip::{Clip, ClipTokenizer};
use crate::error::Result;

/// PromptSRC (Khattak et al., ICCV'23): IVLP prompts trained with self-regulating constraints
/// towards the frozen model — L1 between prompted and frozen text features (`text_loss_weight`, 25)
/// and image features (`image_loss_weight`, 10), and a KL between prompted and frozen logits — and
/// Gaussian prompt aggregation: the evaluated prompt is the average of each epoch's prompt weighted
/// by N(epoch; `gpa_mean`, `gpa_std`²), normalized (mean 15, std 1 for 20 epochs in base-to-new;
/// the few-shot config's 30/30 or 45/5 depend on the dataset, so both may be per-dataset tables).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptSrcConfig {
    pub n_ctx_text: usize,
    pub ctx_init: String,
    pub text_depth: usize,
    pub n_ctx_vision: usize,
    pub vision_depth: usize,
    pub init_std: f64,
    pub text_loss_weight: f64,
    pub image_loss_weight: f64,
    /// Templates whose mean frozen text feature anchors each class (the reference averages the
    /// unnormalized features of its `IMAGENET_TEMPLATES`, then normalizes).
    pub text_templates: Vec<String>,
    pub gpa_mean: PerCell<f64>,
    pub gpa_std: PerCell<f64>,
    /// Aggregate as upstream does (`gpa.rs`): its GPA sums the whole state dict in each tensor's
    /// format, so the prompts' products and sums round to their format and the evaluated backbone
    /// is the frozen one folded through the same sums. Absent: false, the prompts alone at f32.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gpa_whole_model: bool,
    pub batch_size: usize,
    pub epochs: Epochs,
    pub optim: SgdConfig,
}

impl PromptSrcConfig {
    /// GPA's (mean, std) for a cell training on `dataset` with `shots` per class.
    pub(crate) fn gpa(&self, dataset: &str, shots: usize) -> std::result::Result<(f64, f64), String> {
        let m = self
            .gpa_mean
            .resolve(dataset, shots)
            .map_err(|e| format!("gpa_mean: {e}"))?;
        let s = self
            .gpa_std
            .resolve(dataset, shots)
            .map_err(|e| format!("gpa_std: {e}"))?;
        Ok((m, s))
    }

    pub fn ivlp(&self) -> IvlpConfig {
        IvlpConfig {
            n_ctx_text: self.n_ctx_text,
            ctx_init: self.ctx_init.clone(),
            text_depth: self.text_depth,
            n_ctx_vision: self.n_ctx_vision,
            vision_depth: self.vision_depth,
            init_std: self.init_std,
            batch_size: self.batch_size,
            epochs: self.epochs.clone(),
            optim: self.optim.clone(),
        }
    }
}

impl MethodSpec for PromptSrcConfig {
    const PAPER_NAME: &'static str = "PromptSRC";
    const ENCODERS: EncoderUse = EncoderUse {
        teacher_images: true,
        ..EncoderUse::BOTH_PROMPTS
    };

    fn validate(&self) -> std::result::Result<(), String> {
        if self.text_templates.is_empty() {
            return Err("text_templates must list at least one template".into());
        }
        for t in &self.text_templates {
            super::zeroshot::check_template(t).map_err(|e| format!("text_templates: {e}"))?;
        }
        if !(self.gpa_std.all(&|&s| s > 0.0) && self.gpa_mean.all(&|m| m.is_finite())) {
            return Err("gpa_mean must be finite and gpa_std positive (numbers, or tables of them keyed by dataset, shot count or `default`)".into());
        }
        if !(self.text_loss_weight >= 0.0 && self.image_loss_weight >= 0.0) {
            return Err("non-negative loss weights are required".into());
        }
        self.ivlp().validate()
    }

    fn prompt_layout(&self) -> Option<Vec<(PromptRole, usize)>> {
        self.ivlp().prompt_layout()
    }

    fn training(&self) -> Training<'_> {
        Training::sgd(&self.optim, &self.epochs, self.batch_size)
    }

    fn check_cell(&self, dataset: &str, shots: usize) -> std::result::Result<(), String> {
        self.gpa(dataset, shots).map(|_| ())
    }

    fn build<B: AutodiffBackend, V: Builder<B>>(&self, i: &BuildInputs<B>, to: V) -> Result<V::Out> {
        let gpa = self.gpa(i.dataset, i.shots).map_err(crate::error::Error::Config)?;
        let epochs = self
            .epochs
            .resolve(i.dataset, i.shots)
            .map_err(|e| crate::error::Error::Config(format!("epochs: {e}")))?;
        let (method, prompts) = super::ivlp::model(&self.ivlp(), i.clip, i.tok, i.classnames, i.seed)?;
        let anchors = anchors(i.clip, i.tok, &self.text_templates, i.classnames)?;
        let method = method.named("promptsrc").self_regulated(SelfRegulation {
            text_loss_weight: self.text_loss_weight,
            image_loss_weight: self.image_loss_weight,
            gpa,
            epochs,
            anchors,
            aggregate: None,
            whole_model: self.gpa_whole_model,
            train_names: i.classnames.to_vec(),
        });
        Ok(to.sgd(method, prompts))
    }
}

/// PromptSRC's text anchors `[classes, e]`: the mean of the frozen model's unnormalized features
/// over `templates`, normalized, all at f32 whatever the backbone's format — upstream encodes them
/// with `load_clip_to_cpu(cfg, True).float()` and keeps them f32 (PromptSRC trainers/promptsrc.py
/// `fixed_embeddings`).
pub fn anchors<B: Backend>(
    clip: &Clip<B>,
    tok: &ClipTokenizer,
    templates: &[String],
    classnames: &[String],
) -> Result<Tensor<B, 2>> {
    let clip = clip.at_f32();
    let mut sum: Option<Tensor<B, 2>> = None;
    for t in templates {
        let texts: Vec<String> = classnames.iter().map(|n| super::zeroshot::fill(t, n)).collect();
        let f = clip.encode_text(tok, &texts)?;
        sum = Some(match sum {
            Some(s) => s + f,
            None => f,
        });
    }
    let sum = sum.ok_or_else(|| crate::error::Error::Config("promptsrc: no text templates".into()))?;
    Ok(Clip::normalize(sum).detach())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpa_is_looked_up_by_dataset_and_a_missing_entry_is_an_error() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/suites/few-shot.toml")).unwrap();
        let doc: toml::Value = toml::from_str(&text).unwrap();
        let mut entry = doc["methods"]["promptsrc"].clone();
        entry.as_table_mut().unwrap().remove("kind");
        let c: PromptSrcConfig = entry.try_into().unwrap();
        // The few-shot config's two pairs (PromptSRC few_shot.yaml:43-47).
        assert_eq!(c.gpa("dtd", 16), Ok((45.0, 5.0)));
        assert_eq!(c.gpa("imagenet", 1), Ok((30.0, 30.0)));
        assert_eq!(c.check_cell("eurosat", 4), Ok(()));
        let mut c = c;
        c.gpa_std = PerCell::Table([("dtd".to_string(), PerCell::Fixed(5.0))].into());
        let e = c.check_cell("caltech101", 1).unwrap_err();
        assert!(e.starts_with("gpa_std: no entry for dataset `caltech101`"), "{e}");
        c.gpa_std = PerCell::Fixed(0.0);
        assert!(c.validate().unwrap_err().contains("gpa_std positive"));
    }
}
