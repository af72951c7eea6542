//! CoOp (Zhou et al., IJCV'22) as its reference `PromptLearner` does it: M learnable context vectors
//! (random N(0, σ²) or the token embeddings of an init phrase such as "a photo of a"), shared by all
//! classes or one set per class, placed before ("end"), around ("middle") or after ("front") the
//! class-name tokens of the tokenized string `"X X … X {classname}."`. The EOT feature is pooled and
//! projected; logits are `exp(logit_scale) · cos(image, text)`.

use burn::module::{Module, Param};
use burn::optim::GradientsParams;
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::loss::cross_entropy_with_logits;
use burn::tensor::{DType, ElementConversion, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::optim::{Epochs, SgdConfig};
use super::spec::{layers, BuildInputs, EncoderUse, MethodSpec, Training};
use super::text_prompts::{
    encode_prompts, init_context, template_context, template_placeholder, ClassPrompts, ClassTokenPosition, Context,
    TransferTemplate,
};
use super::zeroshot::class_features;
use super::{
    host_tensor, loss_grads, Batch, Builder, ClassSet, PromptArtifact, PromptParam, PromptRole, Scorer, SgdMethod,
};
use crate::clip::blocks::at_dtype;
use crate::clip::{Clip, ClipTokenizer};
use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoOpConfig {
    /// Number of context vectors M.
    pub n_ctx: usize,
    /// Phrase whose token embeddings initialise the context ("" = random N(0, init_std²)).
    pub ctx_init: String,
    pub init_std: f64,
    /// Class-specific context (CSC): one context per class instead of one shared.
    pub csc: bool,
    pub class_token_position: ClassTokenPosition,
    pub batch_size: usize,
    pub epochs: Epochs,
    pub optim: SgdConfig,
}

impl MethodSpec for CoOpConfig {
    const PAPER_NAME: &'static str = "CoOp";
    const ENCODERS: EncoderUse = EncoderUse::TEXT_PROMPTS;

    fn validate(&self) -> std::result::Result<(), String> {
        if self.n_ctx == 0 {
            return Err("n_ctx must be positive".into());
        }
        if self.csc && !self.ctx_init.is_empty() {
            return Err(
                "csc = true needs ctx_init = \"\" (the reference initialises class-specific context at random)".into(),
            );
        }
        if self.batch_size == 0 {
            return Err("batch_size must be positive".into());
        }
        self.epochs.validate()?;
        self.optim.validate()
    }

    fn prompt_layout(&self) -> Option<Vec<(PromptRole, usize)>> {
        (!self.csc).then(|| layers((self.n_ctx, 1), (0, 0)))
    }

    fn training(&self) -> Training<'_> {
        Training::sgd(&self.optim, &self.epochs, self.batch_size)
    }

    fn build<B: AutodiffBackend, V: Builder<B>>(&self, i: &BuildInputs<B>, to: V) -> Result<V::Out> {
        let (method, prompt) = CoOp::new(self.clone(), i.clip, i.tok, i.classnames, i.seed)?;
        Ok(to.sgd(method, prompt))
    }
}

/// The learnable context: `[sets, M, width]`, sets = 1 (unified) or the number of classes (CSC).
#[derive(Module, Debug)]
pub struct CoOpPrompt<B: Backend> {
    pub ctx: Param<Tensor<B, 3>>,
}

/// ProGrad's update direction: `g − λ (g · ĝ_kd) ĝ_kd` when `g · g_kd < 0`, else `g` unchanged.
pub(crate) fn project_conflict<B: Backend, const D: usize>(
    g: Tensor<B, D>,
    g_kd: Tensor<B, D>,
    lambda: f64,
) -> Tensor<B, D> {
    let dot: f32 = (g.clone() * g_kd.clone()).sum().into_scalar().elem();
    let kd_sq: f32 = g_kd.clone().powi_scalar(2).sum().into_scalar().elem();
    if dot >= 0.0 || kd_sq <= 0.0 {
        return g;
    }
    g - g_kd.mul_scalar(lambda * dot as f64 / kd_sq as f64)
}

/// What a CoOp-family method adds to CoOp's cross-entropy step, against the zero-shot prior (the
/// frozen CLIP's features of the dataset's hand-crafted template for the training classes).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Prior {
    /// CoOp: cross-entropy alone.
    None,
    /// KgCoOp (Yao et al., CVPR'23): `CE + weight · (1 − mean_c cos(w_c, w_c^clip))`.
    KnowledgeGuided { weight: f64 },
    /// ProGrad (Zhu et al., ICCV'23): the CE gradient `g` and the gradient `g_kd` of the
    /// distillation loss `−Σ softmax(z_clip/T) · log_softmax(z/T) · T²` (batch mean); when they
    /// conflict (`g · g_kd < 0`), `g ← g − λ (g · ĝ_kd) ĝ_kd` before the optimizer step.
    Projected { lambda: f64, temperature: f64 },
}

/// ProGrad's zero-shot teacher: the frozen backbone's logits for the dataset's hand-crafted
/// template, computed at f32 whatever the cell's format — upstream's teacher is a `CLIP` built with
/// `clip_model.float()` (Prompt-align trainers/prograd.py `CLIP`), images and all, and its
/// probabilities multiply the student's log-probabilities at f32 (torch's type promotion).
pub struct ZeroShotTeacher<B: Backend> {
    /// The backbone widened to f32 when the cell's is not (`None`: the cell's own backbone is the
    /// teacher, and the student's image features are reused).
    clip: Option<Clip<B>>,
    /// Normalized class features, f32.
    text: Tensor<B, 2>,
    /// exp(logit_scale), f32.
    scale: Tensor<B, 2>,
}

impl<B: Backend> ZeroShotTeacher<B> {
    pub fn new(clip: &Clip<B>, tok: &ClipTokenizer, template: &str, classnames: &[String]) -> Result<Self> {
        let wide = (clip.dtype() != DType::F32).then(|| clip.at_f32());
        let by = wide.as_ref().unwrap_or(clip);
        let text = class_features(by, tok, &[template.to_string()], classnames)?.detach();
        let scale = by.logit_scale.val().exp().unsqueeze::<2>().detach();
        Ok(Self {
            clip: wide,
            text,
            scale,
        })
    }

    /// Logits `[images, classes]` at f32 for `pixels` (f32). `own`: the cell backbone's normalized
    /// image features of the same images, which an f32 cell's teacher takes as its own.
    pub fn logits(&self, pixels: Tensor<B, 4>, own: Tensor<B, 2>) -> Tensor<B, 2> {
        let img = match &self.clip {
            Some(c) => Clip::normalize(c.encode_image(pixels, &Default::default())).detach(),
            None => own,
        };
        Clip::normalize(img).matmul(Clip::normalize(self.text.clone()).transpose()) * self.scale.clone()
    }
}

pub struct CoOp<B: AutodiffBackend> {
    config: CoOpConfig,
    prior: Prior,
    /// KgCoOp's normalized hand-crafted text features of the training classes, at the cell's
    /// format (upstream computes them with the run's model).
    zs_text: Option<Tensor<B, 2>>,
    /// ProGrad's zero-shot teacher.
    teacher: Option<ZeroShotTeacher<B>>,
    placeholder: Placeholder,
    train: ClassPrompts<B>,
}

/// The words a prompt's context slots are tokenized as (they decide the frozen suffix and the
/// end-of-text position; the slots' vectors are the learned context).
enum Placeholder {
    /// The same on every dataset ("X X X X", or the `ctx_init` phrase).
    Fixed(String),
    /// A template's phrase: the training dataset's while training; on another dataset per
    /// `on_targets`.
    Template {
        trained: String,
        templates: std::collections::BTreeMap<String, String>,
        on_targets: TransferTemplate,
    },
}

impl Placeholder {
    fn trained(&self) -> &str {
        match self {
            Placeholder::Fixed(p) | Placeholder::Template { trained: p, .. } => p,
        }
    }

    /// The placeholder for scoring `classes` with a context of `m` slots.
    fn on(&self, classes: &ClassSet, m: usize) -> Result<String> {
        match self {
            Placeholder::Template {
                templates,
                on_targets: TransferTemplate::Target,
                ..
            } => template_placeholder(Context::template_on(templates, classes.dataset, classes.template), m),
            _ => Ok(self.trained().to_string()),
        }
    }
}

impl<B: AutodiffBackend> CoOp<B> {
    pub fn new(
        config: CoOpConfig,
        clip: &Clip<B>,
        tok: &ClipTokenizer,
        classnames: &[String],
        seed: u64,
    ) -> Result<(Self, CoOpPrompt<B>)> {
        Self::with_prior(config, Prior::None, Context::CtxInit, clip, tok, classnames, "", seed)
    }

    /// A CoOp-family method and its initial context: CoOp's prompt learner with `prior`, whose
    /// zero-shot features use the training dataset's hand-crafted `template`; the context from
    /// `context` (the template's too for ProGrad's).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn with_prior(
        config: CoOpConfig,
        prior: Prior,
        context: Context<'_>,
        clip: &Clip<B>,
        tok: &ClipTokenizer,
        classnames: &[String],
        template: &str,
        seed: u64,
    ) -> Result<(Self, CoOpPrompt<B>)> {
        let sets = if config.csc { classnames.len() } else { 1 };
        let m = config.n_ctx;
        let (placeholder, ctx) = match context {
            Context::CtxInit => {
                let (p, ctx) = init_context(clip, tok, &config.ctx_init, m, sets, config.init_std, seed)?;
                (Placeholder::Fixed(p), ctx)
            }
            Context::Template { templates, on_targets } => {
                let (p, ctx) = template_context(clip, tok, template, m)?;
                let placeholder = Placeholder::Template {
                    trained: p,
                    templates: templates.clone(),
                    on_targets,
                };
                (placeholder, ctx)
            }
        };
        let train = ClassPrompts::new(clip, tok, placeholder.trained(), m, classnames)?;
        let zs_text = match prior {
            Prior::KnowledgeGuided { .. } => {
                Some(class_features(clip, tok, &[template.to_string()], classnames)?.detach())
            }
            _ => None,
        };
        let teacher = match prior {
            Prior::Projected { .. } => Some(ZeroShotTeacher::new(clip, tok, template, classnames)?),
            _ => None,
        };
        let prompt = CoOpPrompt {
            ctx: Param::from_tensor(ctx.detach().require_grad()),
        };
        let method = Self {
            config,
            prior,
            zs_text,
            teacher,
            placeholder,
            train,
        };
        Ok((method, prompt))
    }
}

impl<B: AutodiffBackend> SgdMethod<B> for CoOp<B> {
    type Module = CoOpPrompt<B>;

    fn loss(&self, prompt: &CoOpPrompt<B>, clip: &Clip<B>, batch: Batch<B>) -> Result<(f32, GradientsParams)> {
        let pos = self.config.class_token_position;
        // A tensor clone shares its data: the teacher may need the f32 pixels after the student.
        let img = Clip::normalize(clip.encode_image(batch.pixels.clone(), &Default::default())).detach();
        let n = self.train.eos.len();
        let target = batch.labels.one_hot(n).float();
        let ce_of =
            |text: Tensor<B, 2>| cross_entropy_with_logits(clip.logits_per_image(img.clone(), text), target.clone());
        let (value, grads) = match (&self.prior, &self.zs_text, &self.teacher) {
            (Prior::KnowledgeGuided { weight }, Some(zs), _) => {
                let text = encode_prompts(clip, prompt.ctx.val(), &self.train, pos);
                // Both sides are unit vectors: the row sums are the cosines.
                let cos = (text.clone() * zs.clone()).sum_dim(1).mean();
                let loss = ce_of(text) + cos.neg().add_scalar(1.0).mul_scalar(*weight);
                loss_grads(loss, prompt)
            }
            (Prior::Projected { lambda, temperature }, _, Some(teacher)) => {
                // burn's backward consumes the graph, so each loss gets its own text forward.
                let t = *temperature;
                let teacher = softmax(teacher.logits(batch.pixels, img.clone()).div_scalar(t), 1).detach();
                let student =
                    clip.logits_per_image(img.clone(), encode_prompts(clip, prompt.ctx.val(), &self.train, pos));
                // As torch promotes `tea_prob * log_softmax(stu)`: the product at the teacher's f32.
                let kd = (teacher * at_dtype(log_softmax(student.div_scalar(t), 1), DType::F32))
                    .sum_dim(1)
                    .mean()
                    .neg()
                    .mul_scalar(t * t);
                let g_kd = GradientsParams::from_grads(kd.backward(), prompt);
                let ce = ce_of(encode_prompts(clip, prompt.ctx.val(), &self.train, pos));
                let value: f32 = ce.clone().into_scalar().elem();
                let mut g = GradientsParams::from_grads(ce.backward(), prompt);
                let id = prompt.ctx.id;
                if let (Some(ga), Some(gb)) = (g.get::<B::InnerBackend, 3>(id), g_kd.get::<B::InnerBackend, 3>(id)) {
                    g.register(id, project_conflict(ga, gb, *lambda));
                }
                (value, g)
            }
            _ => {
                let loss = ce_of(encode_prompts(clip, prompt.ctx.val(), &self.train, pos));
                loss_grads(loss, prompt)
            }
        };
        Ok((value, grads))
    }

    fn scorer(
        &self,
        prompt: &CoOpPrompt<B::InnerBackend>,
        clip: &Clip<B::InnerBackend>,
        tok: &ClipTokenizer,
        classes: &ClassSet,
    ) -> Result<Scorer<B::InnerBackend>> {
        let ctx = prompt.ctx.val();
        if ctx.dims()[0] != 1 && ctx.dims()[0] != classes.names.len() {
            return Err(Error::Config(format!(
                "coop: class-specific context was trained for {} classes and cannot score {} others",
                ctx.dims()[0],
                classes.names.len()
            )));
        }
        let placeholder = self.placeholder.on(classes, self.config.n_ctx)?;
        let p = ClassPrompts::new(clip, tok, &placeholder, self.config.n_ctx, classes.names)?;
        Ok(Scorer::Classes(encode_prompts(
            clip,
            ctx,
            &p,
            self.config.class_token_position,
        )))
    }

    fn prompt_params(&self, prompt: &CoOpPrompt<B>) -> Vec<PromptParam> {
        let c = &prompt.ctx;
        vec![PromptParam {
            id: c.id,
            name: "ctx".into(),
            shape: c.dims().to_vec(),
            role: PromptRole::Text(0),
        }]
    }

    fn artifact(&self, prompt: &CoOpPrompt<B>) -> PromptArtifact {
        let mut a = PromptArtifact::new();
        a.insert("ctx".into(), host_tensor(prompt.ctx.val().inner()));
        a
    }

    fn load(&self, prompt: &CoOpPrompt<B>, artifact: &PromptArtifact) -> Result<CoOpPrompt<B>> {
        let (shape, data) = artifact
            .get("ctx")
            .ok_or_else(|| Error::Input("coop artifact has no `ctx`".into()))?;
        let cur = prompt.ctx.dims();
        if shape.as_slice() != cur {
            return Err(Error::Input(format!(
                "coop artifact ctx has shape {shape:?}, this prompt needs {cur:?}"
            )));
        }
        let device = prompt.ctx.val().device();
        let t = Tensor::<B, 3>::from_data(TensorData::new(data.clone(), [cur[0], cur[1], cur[2]]), &device);
        Ok(CoOpPrompt {
            ctx: Param::from_tensor(t.require_grad()),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use burn::module::AutodiffModule;

    use super::*;
    use crate::clip::{load_clip, LoadOptions};

    type B = burn::backend::Autodiff<crate::backend::Cpu>;

    fn config() -> CoOpConfig {
        CoOpConfig {
            n_ctx: 16,
            ctx_init: String::new(),
            init_std: 0.02,
            csc: false,
            class_token_position: ClassTokenPosition::End,
            batch_size: 8,
            epochs: Epochs::Fixed(1),
            optim: SgdConfig {
                lr: 0.002,
                momentum: 0.9,
                weight_decay: 5e-4,
                warmup_epochs: 0,
                warmup_lr: 1e-5,
            },
        }
    }

    /// ProGrad's template context trained on a dataset whose template is "a photo of a {}." and
    /// scored on one whose template is "a type of pet, a photo of a {}." (more tokens than words
    /// on the tiny fixture's vocabulary, so the two placeholders leave different frozen suffixes):
    /// with `target`, the class features are those of a prompt learner built for the evaluated
    /// dataset with the trained context loaded, as upstream evaluates; with `source`, those of
    /// the training dataset's placeholder.
    #[test]
    fn a_template_context_on_a_transfer_target_takes_the_targets_words_as_upstream_does() {
        let dev = Default::default();
        let clip = load_clip::<B>(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-clip-hf"),
            &LoadOptions::default(),
            &dev,
        )
        .unwrap();
        let (model, tok) = (&clip.model, &clip.tokenizer);
        let names = vec!["beagle".to_string(), "sea lion".to_string()];
        let (source_t, target_t) = ("a photo of a {}.", "a type of pet, a photo of a {}.");
        let no_overrides = BTreeMap::new();
        let build = |template: &str, on_targets| {
            let context = Context::Template {
                templates: &no_overrides,
                on_targets,
            };
            CoOp::<B>::with_prior(config(), Prior::None, context, model, tok, &names, template, 1).unwrap()
        };
        let features = |m: &CoOp<B>, prompt: &CoOpPrompt<B>, dataset: &str, template: &str| -> Vec<f32> {
            let classes = ClassSet {
                dataset,
                names: &names,
                template,
            };
            match m.scorer(&prompt.valid(), &model.valid(), tok, &classes).unwrap() {
                Scorer::Classes(t) => t.into_data().to_vec().unwrap(),
                _ => panic!("CoOp scores class features"),
            }
        };
        // A trained context stands in as one moved off its initial value.
        let trained = |p: CoOpPrompt<B>| CoOpPrompt {
            ctx: Param::from_tensor(p.ctx.val().add_scalar(0.01).detach().require_grad()),
        };
        let (on_source_ds, prompt) = build(source_t, TransferTemplate::Target);
        let prompt = trained(prompt);
        let target = features(&on_source_ds, &prompt, "pets", target_t);
        // Upstream: the prompt learner built for the target, with the trained context loaded.
        let (built_for_target, _) = build(target_t, TransferTemplate::Target);
        assert_eq!(target, features(&built_for_target, &prompt, "pets", target_t));
        // The old rule: the training dataset's words everywhere.
        let (keep_source, _) = build(source_t, TransferTemplate::Source);
        let source = features(&keep_source, &prompt, "pets", target_t);
        assert_eq!(source, features(&on_source_ds, &prompt, "imagenet", source_t));
        assert_ne!(source, target, "the two placeholders must give different features here");
        // A dataset's override in `templates` is its template on a target too.
        let overrides = BTreeMap::from([("pets".to_string(), target_t.to_string())]);
        let context = Context::Template {
            templates: &overrides,
            on_targets: TransferTemplate::Target,
        };
        let (with_override, _) =
            CoOp::<B>::with_prior(config(), Prior::None, context, model, tok, &names, source_t, 1).unwrap();
        assert_eq!(features(&with_override, &prompt, "pets", "a photo of a {}."), target);
    }
}
