//! Zero-shot CLIP: class prompts from hand-crafted templates, nothing trained. `dataset` uses the
//! dataset's own template (CoOp's `ZeroshotCLIP`); `ensemble` averages the normalized features of
//! the seven `IMAGENET_TEMPLATES_SELECT` plus the dataset's template for non-ImageNet datasets, and
//! re-normalizes (`ZeroshotCLIP2`).

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use super::spec::{BuildInputs, EncoderUse, MethodSpec, Training};
use super::{Builder, ClassSet, Frozen, Scorer};
use crate::clip::{Clip, ClipTokenizer};
use crate::error::{Error, Result};

/// CoOp's `IMAGENET_TEMPLATES_SELECT`.
pub(crate) const ENSEMBLE_TEMPLATES: [&str; 7] = [
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TemplateSet {
    Dataset,
    Ensemble,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZeroShotConfig {
    pub templates: TemplateSet,
}

impl MethodSpec for ZeroShotConfig {
    const PAPER_NAME: &'static str = "CLIP";
    const ENCODERS: EncoderUse = EncoderUse::FROZEN;

    fn validate(&self) -> std::result::Result<(), String> {
        Ok(())
    }

    fn training(&self) -> Training<'_> {
        Training::None
    }

    fn build<B: AutodiffBackend, V: Builder<B>>(&self, i: &BuildInputs<B>, to: V) -> Result<V::Out> {
        Ok(to.frozen(Box::new(ZeroShot::new(self.clone(), i.imagenet_like))))
    }
}

/// `template` with the class name filled in (`_` read as a space, as CoOp does).
pub(crate) fn fill(template: &str, classname: &str) -> String {
    template.replacen("{}", &classname.replace('_', " "), 1)
}

/// The one rule for a hand-written template, checked wherever a suite gives one: exactly one `{}`,
/// which [`fill`] replaces with the class name (a second would reach the text encoder as "{}").
pub(crate) fn check_template(template: &str) -> std::result::Result<(), String> {
    match template.matches("{}").count() {
        1 => Ok(()),
        0 => Err(format!("template {template:?} has no {{}} for the class name")),
        n => Err(format!(
            "template {template:?} has {n} {{}}; exactly one is the class name"
        )),
    }
}

/// The templates a class set is scored with.
pub(crate) fn templates_for(set: TemplateSet, dataset_template: &str, imagenet_like: bool) -> Vec<String> {
    match set {
        TemplateSet::Dataset => vec![dataset_template.to_string()],
        TemplateSet::Ensemble => {
            let mut t: Vec<String> = ENSEMBLE_TEMPLATES.iter().map(|s| s.to_string()).collect();
            if !imagenet_like {
                t.push(dataset_template.to_string());
            }
            t
        }
    }
}

/// Normalized text features of `names` averaged over `templates` and re-normalized: `[classes, e]`.
pub(crate) fn class_features<B: Backend>(
    clip: &Clip<B>,
    tok: &ClipTokenizer,
    templates: &[String],
    names: &[String],
) -> Result<Tensor<B, 2>> {
    let mut sum: Option<Tensor<B, 2>> = None;
    for t in templates {
        let texts: Vec<String> = names.iter().map(|n| fill(t, n)).collect();
        let f = Clip::normalize(clip.encode_text(tok, &texts)?);
        sum = Some(match sum {
            Some(s) => s + f,
            None => f,
        });
    }
    let sum = sum.ok_or_else(|| Error::Config("no templates to score classes with".into()))?;
    Ok(Clip::normalize(sum))
}

pub(crate) struct ZeroShot {
    config: ZeroShotConfig,
    imagenet_like: bool,
}

impl ZeroShot {
    pub fn new(config: ZeroShotConfig, imagenet_like: bool) -> Self {
        Self { config, imagenet_like }
    }
}

impl<B: Backend> Frozen<B> for ZeroShot {
    fn scorer(&self, clip: &Clip<B>, tok: &ClipTokenizer, classes: &ClassSet) -> Result<Scorer<B>> {
        let templates = templates_for(self.config.templates, classes.template, self.imagenet_like);
        Ok(Scorer::Classes(class_features(clip, tok, &templates, classes.names)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ensemble_adds_the_dataset_template_except_for_imagenet() {
        assert_eq!(templates_for(TemplateSet::Ensemble, "{} texture.", false).len(), 8);
        assert_eq!(templates_for(TemplateSet::Ensemble, "a photo of a {}.", true).len(), 7);
        assert_eq!(
            templates_for(TemplateSet::Dataset, "{} texture.", false),
            vec!["{} texture."]
        );
        assert_eq!(
            fill("a photo of a {}, a type of pet.", "great_pyrenees"),
            "a photo of a great pyrenees, a type of pet."
        );
    }
}
