//! The text side every prompt method shares: CoOp's prompt string for a class, the frozen pieces
//! of a class set's prompts, where the context goes among the class tokens, the initial context,
//! and the encoding of assembled prompts into normalized class features. CoOp, its family, CoCoOp,
//! MaPLe/IVLP/PromptSRC and GRAM's meta-training all build on these.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::init::normal;
use crate::clip::model::ids_tensor;
use crate::clip::{Clip, ClipTokenizer};
use crate::error::{Error, Result};

/// Where the class-name tokens go relative to the context (CoOp's `CLASS_TOKEN_POSITION`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClassTokenPosition {
    End,
    Middle,
    Front,
}

/// The frozen pieces of one class set's prompts: the SOS embedding, everything after the context
/// slots (class tokens, ".", EOT, padding), each class name's token count, and the EOT positions.
pub struct ClassPrompts<B: Backend> {
    pub prefix: Tensor<B, 3>,
    pub suffix: Tensor<B, 3>,
    pub name_lens: Vec<usize>,
    pub eos: Vec<usize>,
}

/// The string CoOp tokenizes for a class: context placeholders (or the init phrase), then the name.
pub(crate) fn prompt_text(placeholder: &str, classname: &str) -> String {
    format!("{placeholder} {}.", classname.replace('_', " "))
}

impl<B: Backend> ClassPrompts<B> {
    pub fn new(clip: &Clip<B>, tok: &ClipTokenizer, placeholder: &str, n_ctx: usize, names: &[String]) -> Result<Self> {
        let device = clip.logit_scale.val().device();
        let texts: Vec<String> = names.iter().map(|n| prompt_text(placeholder, n)).collect();
        let ids = tok.encode_padded(&texts)?;
        let l = tok.context_length();
        for t in &texts {
            // CoOp's tokenizer raises on prompts longer than the context rather than truncating.
            if tok.tokens(t)?.len() + 2 > l {
                return Err(Error::Input(format!(
                    "prompt {t:?} does not fit the context length {l}"
                )));
            }
        }
        let name_lens = names
            .iter()
            .map(|n| tok.tokens(&n.replace('_', " ")).map(|t| t.len()))
            .collect::<Result<Vec<_>>>()?;
        let eos = clip.text_model.eos_positions(&ids);
        let emb = clip.text_model.embed_tokens(ids_tensor(&ids, &device)).detach();
        Ok(Self {
            prefix: emb.clone().narrow(1, 0, 1),
            suffix: emb.narrow(1, 1 + n_ctx, l - 1 - n_ctx),
            name_lens,
            eos,
        })
    }
}

/// Prompt embeddings `[classes, L, width]` from the context and a class set's frozen pieces.
pub fn assemble<B: Backend>(ctx: Tensor<B, 3>, p: &ClassPrompts<B>, position: ClassTokenPosition) -> Tensor<B, 3> {
    let [n, _, _] = p.prefix.dims();
    let [sets, m, w] = ctx.dims();
    let ctx = if sets == 1 { ctx.expand([n, m, w]) } else { ctx };
    match position {
        ClassTokenPosition::End => Tensor::cat(vec![p.prefix.clone(), ctx, p.suffix.clone()], 1),
        ClassTokenPosition::Middle | ClassTokenPosition::Front => {
            let rest = p.suffix.dims()[1];
            let half = m / 2;
            let rows: Vec<Tensor<B, 3>> = (0..n)
                .map(|i| {
                    let k = p.name_lens[i];
                    let prefix = p.prefix.clone().narrow(0, i, 1);
                    let ctx_i = ctx.clone().narrow(0, i, 1);
                    let suffix = p.suffix.clone().narrow(0, i, 1);
                    let class = suffix.clone().narrow(1, 0, k);
                    let after = suffix.narrow(1, k, rest - k);
                    if position == ClassTokenPosition::Middle {
                        let c1 = ctx_i.clone().narrow(1, 0, half);
                        let c2 = ctx_i.narrow(1, half, m - half);
                        Tensor::cat(vec![prefix, c1, class, c2, after], 1)
                    } else {
                        Tensor::cat(vec![prefix, class, ctx_i, after], 1)
                    }
                })
                .collect();
            Tensor::cat(rows, 0)
        }
    }
}

/// Normalized class features from assembled prompts.
pub fn encode_prompts<B: Backend>(
    clip: &Clip<B>,
    ctx: Tensor<B, 3>,
    p: &ClassPrompts<B>,
    position: ClassTokenPosition,
) -> Tensor<B, 2> {
    let embeds = assemble(ctx, p, position);
    Clip::normalize(clip.text_features(clip.text_model.forward_pooled(embeds, &p.eos, None)))
}

/// The initial context `[sets, M, width]` and the placeholder string its prompts are tokenized with:
/// the token embeddings of `ctx_init` (which must be M tokens), or N(0, std²) drawn on the host
/// (seeded, so a cell's init does not depend on the backend's RNG) with "X X … X".
pub(crate) fn init_context<B: Backend>(
    clip: &Clip<B>,
    tok: &ClipTokenizer,
    ctx_init: &str,
    m: usize,
    sets: usize,
    init_std: f64,
    seed: u64,
) -> Result<(String, Tensor<B, 3>)> {
    let device = clip.logit_scale.val().device();
    let width = clip.text_model.token_embedding.dims()[1];
    if ctx_init.is_empty() {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let data = TensorData::new(normal(&mut rng, sets * m * width, init_std), [sets, m, width]);
        return Ok((vec!["X"; m].join(" "), Tensor::<B, 3>::from_data(data, &device)));
    }
    let init = ctx_init.replace('_', " ");
    let n = tok.tokens(&init)?.len();
    if n != m {
        return Err(Error::Config(format!(
            "ctx_init {ctx_init:?} is {n} tokens but n_ctx = {m}; they must match"
        )));
    }
    let ids = tok.encode_padded(&[init.as_str()])?;
    let emb = clip.text_model.embed_tokens(ids_tensor(&ids, &device)).detach();
    Ok((init, emb.narrow(1, 1, m)))
}

/// Where a CoOp-family context comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContextSource {
    /// CoOp's: the `ctx_init` phrase (exactly `n_ctx` tokens), or random when it is empty.
    CtxInit,
    /// ProGrad's (BeierZhu/Prompt-align@1b76203 ProGrad.public/trainers/prograd.py:78-95): the
    /// training dataset's teacher template less its " {}." fills the last slots of `n_ctx`
    /// zero-initialised ones, one slot per space-separated word.
    Template,
}

/// Which template a template-built context takes when its prompt is evaluated on another dataset
/// (a transfer target).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferTemplate {
    /// The evaluated dataset's, as ProGrad's code does: its evaluation builds the prompt learner
    /// for the target dataset (BeierZhu/Prompt-align@1b76203 ProGrad.public/trainers/prograd.py:78-95
    /// reads `CUSTOM_TEMPLATES[cfg.DATASET.NAME]`) and loads only the learned `ctx`, so the
    /// placeholder words that decide the frozen suffix are the target's.
    Target,
    /// The training dataset's, everywhere.
    Source,
}

/// Where a CoOp-family context's words come from.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Context<'a> {
    /// CoOp's `ctx_init` phrase, or random.
    CtxInit,
    /// A template's phrase (ProGrad's): each dataset's from `templates` where it names one, else
    /// the dataset's own; on a transfer target, `on_targets` says whose.
    Template {
        templates: &'a std::collections::BTreeMap<String, String>,
        on_targets: TransferTemplate,
    },
}

impl Context<'_> {
    /// The template this context and the prior use on `dataset`, whose own is `own`.
    pub(crate) fn template_on<'t>(
        templates: &'t std::collections::BTreeMap<String, String>,
        dataset: &str,
        own: &'t str,
    ) -> &'t str {
        templates.get(dataset).map_or(own, String::as_str)
    }
}

/// The placeholder a template-built context of `m` slots tokenizes as: `m − k` "X"s, then the
/// template's k-word phrase.
pub(crate) fn template_placeholder(template: &str, m: usize) -> Result<String> {
    let (phrase, k) = template_phrase(template, m).map_err(Error::Config)?;
    Ok(vec!["X"; m - k]
        .into_iter()
        .chain([phrase.as_str()])
        .collect::<Vec<_>>()
        .join(" "))
}

/// ProGrad's initial context `[1, M, width]` and placeholder for a template ending in " {}.".
/// Upstream counts the phrase's *words* (k) but copies its first k *tokens* into the last k slots,
/// and tokenizes "X … X phrase" (M − k placeholders): a phrase with more tokens than words (a
/// comma is a token of its own) leaves its last tokens in the frozen suffix, before the class
/// name. Reproduced as it is, since it is what the published numbers were trained with.
/// The phrase a template-built context holds (the template less " {}.", underscores as spaces)
/// and its word count, or why `template` cannot give one to `m` slots. Suite validation and
/// `template_context` both apply it, so a bad pairing fails before any cell runs.
pub(crate) fn template_phrase(template: &str, m: usize) -> std::result::Result<(String, usize), String> {
    let Some(phrase) = template.strip_suffix(" {}.") else {
        return Err(format!(
            "a context from the template needs a template ending in \" {{}}.\" (ProGrad's form); {template:?} does not"
        ));
    };
    let phrase = phrase.replace('_', " ");
    let k = phrase.split(' ').count();
    if k > m {
        return Err(format!(
            "template {template:?} has {k} words but n_ctx = {m}: the context must hold them"
        ));
    }
    Ok((phrase, k))
}

pub fn template_context<B: Backend>(
    clip: &Clip<B>,
    tok: &ClipTokenizer,
    template: &str,
    m: usize,
) -> Result<(String, Tensor<B, 3>)> {
    let (phrase, k) = template_phrase(template, m).map_err(Error::Config)?;
    let device = clip.logit_scale.val().device();
    let width = clip.text_model.token_embedding.dims()[1];
    let ids = tok.encode_padded(&[phrase.as_str()])?;
    let words = clip
        .text_model
        .embed_tokens(ids_tensor(&ids, &device))
        .detach()
        .narrow(1, 1, k);
    let ctx = Tensor::cat(vec![Tensor::<B, 3>::zeros([1, m - k, width], &device), words], 1);
    Ok((template_placeholder(template, m)?, ctx))
}
