//! Deep vision–language prompting, as the MaPLe repository (Khattak et al., CVPR'23) builds it:
//!
//! - **IVLP** (independent V-L prompting): text context vectors (from an init phrase), learnable text
//!   tokens replacing them before blocks `1 … text_depth−1`, and VPT-style visual tokens at the input
//!   and before blocks `1 … vision_depth−1`, all independent.
//! - **MaPLe**: the same text prompts; the visual tokens are not free but projected from the text
//!   ones by per-layer `Linear(text width → vision width)` couplings (`proj` for the input, one per
//!   deeper layer, all cloned from one initial layer as the reference's `_get_clones` does).
//!
//! The text context replaces the first `n_ctx` tokens after SOS of `"{ctx_init} {classname}."` (so
//! with "a photo of a" and 2 tokens, "of a" stays a fixed part of every prompt, as in MaPLe).

use burn::module::{AutodiffModule, Module, Param};
use burn::optim::GradientsParams;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::loss::cross_entropy_with_logits;
use burn::tensor::{DType, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::gpa::{gpa_weights, Fold};
use super::init::normal;
use super::optim::{Epochs, SgdConfig};
use super::text_prompts::ClassPrompts;
use super::{
    host_tensor as host, loss_grads, Batch, ClassSet, PromptArtifact, PromptParam, PromptRole, Scorer, SgdMethod,
};
use crate::clip::blocks::at_dtype;
use crate::clip::model::ids_tensor;
use crate::clip::{Clip, ClipTokenizer, DeepPrompts, PromptSlot, VisionPrompts};
use crate::error::{Error, Result};

/// PromptSRC's training-time state: its loss weights, the frozen anchors and the running aggregate.
pub(super) struct SelfRegulation<B: AutodiffBackend> {
    pub text_loss_weight: f64,
    pub image_loss_weight: f64,
    /// GPA's (mean, std) for the cell's dataset and shot count.
    pub gpa: (f64, f64),
    /// The cell's epochs, over which GPA weighs.
    pub epochs: usize,
    /// Normalized mean frozen text features of the training classes, at f32 (upstream's).
    pub anchors: Tensor<B, 2>,
    /// Σ w_e · prompt_e so far, per artifact tensor.
    pub aggregate: Option<Vec<(Vec<usize>, Vec<f32>)>>,
    /// Aggregate as upstream does (`PromptSrcConfig::gpa_whole_model`): the prompts' products and
    /// sums rounded to their format, and the backbone folded too (`gpa::whole_model`).
    pub whole_model: bool,
    /// The training class names: upstream's final test of them runs in the training process, whose
    /// class-name token embeddings (`token_prefix`/`token_suffix` buffers) were aggregated with the
    /// rest; another class set is scored by a fresh model that loads the checkpoint less those.
    pub train_names: Vec<String>,
}

/// The checks MaPLe, IVLP and PromptSRC share.
pub(super) fn check(
    n: usize,
    depths: &[usize],
    batch: usize,
    epochs: &Epochs,
    optim: &SgdConfig,
) -> std::result::Result<(), String> {
    if n == 0 || batch == 0 || depths.contains(&0) {
        return Err("token counts, depths and batch_size must be positive".into());
    }
    epochs.validate()?;
    optim.validate()
}

/// The learned prompts. `text_deep[i]` enters text block `i + 1`. IVLP: `vision[0]` is the input
/// prompt and `vision[i]` enters vision block `i`. MaPLe: `proj_w[0]`/`proj_b[0]` map the context to
/// the visual input prompt and `proj_w[i]` maps `text_deep[i − 1]` to vision block `i`'s (weights
/// stored `[in, out]`).
#[derive(Module, Debug)]
pub(crate) struct MultiModalPrompts<B: Backend> {
    pub ctx: Param<Tensor<B, 2>>,
    pub text_deep: Vec<Param<Tensor<B, 2>>>,
    pub vision: Vec<Param<Tensor<B, 2>>>,
    pub proj_w: Vec<Param<Tensor<B, 2>>>,
    pub proj_b: Vec<Param<Tensor<B, 1>>>,
}

impl<B: Backend> MultiModalPrompts<B> {
    fn text_deep(&self) -> Option<DeepPrompts<B>> {
        if self.text_deep.is_empty() {
            return None;
        }
        let mut layers = vec![None];
        layers.extend(self.text_deep.iter().map(|p| Some(p.val().unsqueeze::<3>())));
        Some(DeepPrompts {
            slot: PromptSlot::At(1),
            layers,
        })
    }

    fn vision_inputs(&self) -> VisionPrompts<B> {
        let layer = |i: usize| -> Tensor<B, 2> {
            if self.proj_w.is_empty() {
                self.vision[i].val()
            } else {
                let src = if i == 0 {
                    self.ctx.val()
                } else {
                    self.text_deep[i - 1].val()
                };
                src.matmul(self.proj_w[i].val()) + self.proj_b[i].val().unsqueeze::<2>()
            }
        };
        let n = if self.proj_w.is_empty() {
            self.vision.len()
        } else {
            self.proj_w.len()
        };
        VisionPrompts {
            shallow: (n > 0).then(|| layer(0).unsqueeze::<3>()),
            deep: (0..n).map(|i| (i > 0).then(|| layer(i).unsqueeze::<3>())).collect(),
        }
    }

    /// Normalized class features `[classes, e]`.
    pub fn text_features(&self, clip: &Clip<B>, p: &ClassPrompts<B>) -> Tensor<B, 2> {
        let [c, _, w] = p.prefix.dims();
        let [m, _] = self.ctx.dims();
        let ctx = self.ctx.val().unsqueeze::<3>().expand([c, m, w]);
        let embeds = Tensor::cat(vec![p.prefix.clone(), ctx, p.suffix.clone()], 1);
        let deep = self.text_deep();
        Clip::normalize(clip.text_features(clip.text_model.forward_pooled(embeds, &p.eos, deep.as_ref())))
    }

    /// Normalized image features with the visual prompts.
    pub(crate) fn image_features(&self, clip: &Clip<B>, pixels: Tensor<B, 4>) -> Tensor<B, 2> {
        Clip::normalize(clip.encode_image(pixels, &self.vision_inputs()))
    }
}

/// Which of the two designs, with the sizes each needs.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Coupling {
    Independent { n_vision: usize, vision_depth: usize },
    Maple,
}

/// The artifact names: the reference modules' state-dict names.
fn names(p: &MultiModalPrompts<impl Backend>) -> Vec<String> {
    let mut out = vec!["ctx".to_string()];
    if p.proj_w.is_empty() {
        out.extend((0..p.text_deep.len()).map(|i| format!("text_encoder.transformer.resblocks.{}.VPT_shallow", i + 1)));
        out.extend((0..p.vision.len()).map(|i| {
            if i == 0 {
                "image_encoder.VPT".to_string()
            } else {
                format!("image_encoder.transformer.resblocks.{i}.VPT_shallow")
            }
        }));
    } else {
        out.extend((0..p.text_deep.len()).map(|i| format!("compound_prompts_text.{i}")));
        for i in 0..p.proj_w.len() {
            let base = if i == 0 {
                "proj".to_string()
            } else {
                format!("compound_prompt_projections.{}", i - 1)
            };
            out.push(format!("{base}.weight"));
            out.push(format!("{base}.bias"));
        }
    }
    out
}

/// Every tensor in artifact order (torch layout for the projections).
fn tensors<B: Backend>(p: &MultiModalPrompts<B>) -> Vec<(Vec<usize>, Vec<f32>)> {
    let mut out = vec![host(p.ctx.val())];
    out.extend(p.text_deep.iter().map(|t| host(t.val())));
    out.extend(p.vision.iter().map(|t| host(t.val())));
    for (w, b) in p.proj_w.iter().zip(&p.proj_b) {
        out.push(host(w.val().transpose()));
        out.push(host(b.val()));
    }
    out
}

pub(crate) struct MultiModal<B: AutodiffBackend> {
    kind: &'static str,
    src: Option<SelfRegulation<B>>,
    n_ctx: usize,
    placeholder: String,
    train: ClassPrompts<B>,
}

impl<B: AutodiffBackend> MultiModal<B> {
    /// The model of `kind` with `(n_ctx, ctx_init, text_depth, init_std)` and `coupling`, and its
    /// initial prompts.
    pub(super) fn new(
        kind: &'static str,
        (n, ctx_init, text_depth, std): (usize, &str, usize, f64),
        coupling: Coupling,
        clip: &Clip<B>,
        tok: &ClipTokenizer,
        classnames: &[String],
        seed: u64,
    ) -> Result<(Self, MultiModalPrompts<B>)> {
        let device = clip.logit_scale.val().device();
        let tw = clip.text_model.token_embedding.dims()[1];
        let vw = clip.vision_model.class_embedding.dims()[0];
        let (tl, vl) = (
            clip.text_model.encoder.layers.len(),
            clip.vision_model.encoder.layers.len(),
        );
        let vision_depth = match coupling {
            Coupling::Maple => text_depth,
            Coupling::Independent { vision_depth, .. } => vision_depth,
        };
        if text_depth > tl || vision_depth > vl {
            return Err(Error::Config(format!(
                "{kind}: prompt depths {text_depth}/{vision_depth} exceed the encoders' {tl}/{vl} layers"
            )));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let p2 = |v: Vec<f32>, s: [usize; 2]| {
            Param::from_tensor(Tensor::<B, 2>::from_data(TensorData::new(v, s), &device).require_grad())
        };
        let (placeholder, ctx) = if ctx_init.is_empty() {
            (vec!["X"; n].join(" "), p2(normal(&mut rng, n * tw, std), [n, tw]))
        } else {
            let init = ctx_init.replace('_', " ");
            let k = tok.tokens(&init)?.len();
            if n > k {
                return Err(Error::Config(format!(
                    "{kind}: ctx_init {ctx_init:?} has {k} tokens, fewer than the {n} context tokens"
                )));
            }
            let ids = tok.encode_padded(&[init.as_str()])?;
            let emb = clip.text_model.embed_tokens(ids_tensor(&ids, &device)).detach();
            let ctx = emb.narrow(1, 1, n).reshape([n, tw]);
            (init, Param::from_tensor(ctx.require_grad()))
        };
        let text_deep = (1..text_depth)
            .map(|_| p2(normal(&mut rng, n * tw, std), [n, tw]))
            .collect();
        let (vision, proj_w, proj_b) = match coupling {
            Coupling::Independent { n_vision, .. } => (
                (0..vision_depth)
                    .map(|_| p2(normal(&mut rng, n_vision * vw, std), [n_vision, vw]))
                    .collect(),
                Vec::new(),
                Vec::new(),
            ),
            Coupling::Maple => {
                // nn.Linear's default init, one for `proj` and one cloned for every deeper layer.
                let bound = 1.0 / (tw as f64).sqrt();
                let mut u = |k: usize| -> Vec<f32> {
                    (0..k)
                        .map(|_| ((rng.random::<f64>() * 2.0 - 1.0) * bound) as f32)
                        .collect()
                };
                let (w0, b0) = (u(tw * vw), u(vw));
                let (wd, bd) = (u(tw * vw), u(vw));
                let b1 = |v: Vec<f32>| {
                    Param::from_tensor(Tensor::<B, 1>::from_data(TensorData::new(v, [vw]), &device).require_grad())
                };
                let mut ws = vec![p2(w0, [tw, vw])];
                let mut bs = vec![b1(b0)];
                for _ in 1..vision_depth {
                    ws.push(p2(wd.clone(), [tw, vw]));
                    bs.push(b1(bd.clone()));
                }
                (Vec::new(), ws, bs)
            }
        };
        let train = ClassPrompts::new(clip, tok, &placeholder, n, classnames)?;
        let method = Self {
            kind,
            src: None,
            n_ctx: n,
            placeholder,
            train,
        };
        let prompts = MultiModalPrompts {
            ctx,
            text_deep,
            vision,
            proj_w,
            proj_b,
        };
        Ok((method, prompts))
    }

    /// The same model under another method's name (in its messages).
    pub(super) fn named(self, kind: &'static str) -> Self {
        Self { kind, ..self }
    }

    /// With PromptSRC's self-regulating losses and prompt aggregation.
    pub(super) fn self_regulated(self, src: SelfRegulation<B>) -> Self {
        Self { src: Some(src), ..self }
    }
}

impl<B: AutodiffBackend> SgdMethod<B> for MultiModal<B> {
    type Module = MultiModalPrompts<B>;

    fn loss(&self, p: &MultiModalPrompts<B>, clip: &Clip<B>, batch: Batch<B>) -> Result<(f32, GradientsParams)> {
        let text = p.text_features(clip, &self.train);
        let img = p.image_features(clip, batch.pixels.clone());
        let logits = clip.logits_per_image(img.clone(), text.clone());
        let n = logits.dims()[1];
        let loss = cross_entropy_with_logits(logits.clone(), batch.labels.one_hot(n).float());
        if let Some(src) = &self.src {
            // Upstream's frozen image encoder runs at the cell's format; the anchors join its
            // logits cast down (`fixed_embeddings.half()`) and the text loss at their f32 (torch
            // promotes `l1_loss(fp16, fp32)`), so the summed loss is f32 as upstream's is.
            let cell = logits.dtype();
            let zs_img = Clip::normalize(clip.encode_image(batch.pixels, &Default::default())).detach();
            let zs_logits = clip
                .logits_per_image(zs_img.clone(), at_dtype(src.anchors.clone(), cell))
                .detach();
            let l_text = (at_dtype(text, DType::F32) - src.anchors.clone())
                .abs()
                .mean()
                .mul_scalar(src.text_loss_weight);
            let l_img = (img - zs_img).abs().mean().mul_scalar(src.image_loss_weight);
            // KL(p_zs ‖ p) summed, over the number of logits (the reference's `kl_div(…, 'sum') / numel`).
            let numel = logits.dims().iter().product::<usize>() as f64;
            let log_p = log_softmax(logits, 1);
            let log_zs = log_softmax(zs_logits, 1);
            let kl = (log_zs.clone().exp() * (log_zs - log_p)).sum().div_scalar(numel);
            let loss = at_dtype(loss + kl, DType::F32) + l_text + at_dtype(l_img, DType::F32);
            return Ok(loss_grads(loss, p));
        }
        Ok(loss_grads(loss, p))
    }

    fn end_epoch(&mut self, p: MultiModalPrompts<B>, epoch: usize, epochs: usize) -> Result<MultiModalPrompts<B>> {
        let Some(src) = self.src.as_mut() else {
            return Ok(p);
        };
        if epochs != src.epochs {
            return Err(Error::Run(format!(
                "promptsrc: trained over {epochs} epochs, built for {}",
                src.epochs
            )));
        }
        let w = gpa_weights(epochs, src.gpa.0, src.gpa.1)[epoch] as f32;
        // Without `whole_model`, at f32 whatever the prompts' format (f32's rounding is Fold's at f32).
        let fold = Fold::at(if src.whole_model {
            p.ctx.val().dtype()
        } else {
            DType::F32
        });
        let now = tensors(&p.valid());
        match &mut src.aggregate {
            None => {
                src.aggregate = Some(
                    now.into_iter()
                        .map(|(s, d)| (s, d.into_iter().map(|x| fold.term(x, w)).collect()))
                        .collect(),
                )
            }
            Some(acc) => {
                for ((_, a), (_, d)) in acc.iter_mut().zip(now) {
                    for (x, y) in a.iter_mut().zip(d) {
                        *x = fold.add(*x, fold.term(y, w));
                    }
                }
            }
        }
        if epoch + 1 < epochs {
            return Ok(p);
        }
        // The aggregated prompt is the trained one.
        let agg = src.aggregate.take().expect("set above");
        let artifact: PromptArtifact = names(&p).into_iter().zip(agg).collect();
        self.load(&p, &artifact)
    }

    /// PromptSRC's running aggregate, as `aggregate.<i>` entries.
    fn epoch_state(&self) -> PromptArtifact {
        let agg = self.src.as_ref().and_then(|s| s.aggregate.as_ref());
        agg.into_iter()
            .flatten()
            .enumerate()
            .map(|(i, t)| (format!("aggregate.{i:03}"), t.clone()))
            .collect()
    }

    fn restore_epoch_state(&mut self, state: &PromptArtifact) -> Result<()> {
        let Some(src) = self.src.as_mut() else {
            return super::no_epoch_state(state);
        };
        // BTreeMap order is the zero-padded index order.
        let agg: Vec<(Vec<usize>, Vec<f32>)> = state
            .iter()
            .filter(|(k, _)| k.starts_with("aggregate."))
            .map(|(_, v)| v.clone())
            .collect();
        src.aggregate = (!agg.is_empty()).then_some(agg);
        Ok(())
    }

    fn scorer(
        &self,
        p: &MultiModalPrompts<B::InnerBackend>,
        clip: &Clip<B::InnerBackend>,
        tok: &ClipTokenizer,
        classes: &ClassSet,
    ) -> Result<Scorer<B::InnerBackend>> {
        let src = self.src.as_ref().filter(|s| s.whole_model);
        let Some(src) = src else {
            let cp = ClassPrompts::new(clip, tok, &self.placeholder, self.n_ctx, classes.names)?;
            let text = p.text_features(clip, &cp);
            let p = p.clone();
            return Ok(Scorer::Pixels(Box::new(move |clip, pixels| {
                clip.logits_per_image(p.image_features(clip, pixels), text.clone())
            })));
        };
        // Upstream's aggregated backbone scores, whatever backbone the caller holds.
        let epochs = src.epochs;
        let folded = super::gpa::whole_model(clip, &gpa_weights(epochs, src.gpa.0, src.gpa.1));
        let words = if classes.names == src.train_names.as_slice() {
            &folded
        } else {
            clip
        };
        let cp = ClassPrompts::new(words, tok, &self.placeholder, self.n_ctx, classes.names)?;
        let text = p.text_features(&folded, &cp);
        let p = p.clone();
        Ok(Scorer::Pixels(Box::new(move |_, pixels| {
            folded.logits_per_image(p.image_features(&folded, pixels), text.clone())
        })))
    }

    /// The text context, the deep text prompts and (IVLP, PromptSRC) the visual prompts; MaPLe's
    /// visual prompts are projections, not prompt tensors.
    fn prompt_params(&self, p: &MultiModalPrompts<B>) -> Vec<PromptParam> {
        let names = names(p);
        let roles = (0..=p.text_deep.len())
            .map(PromptRole::Text)
            .chain((0..p.vision.len()).map(PromptRole::Vision));
        let tensors = std::iter::once(&p.ctx).chain(&p.text_deep).chain(&p.vision);
        tensors
            .zip(names)
            .zip(roles)
            .map(|((t, name), role)| PromptParam {
                id: t.id,
                name,
                shape: t.dims().to_vec(),
                role,
            })
            .collect()
    }

    fn artifact(&self, p: &MultiModalPrompts<B>) -> PromptArtifact {
        names(p).into_iter().zip(tensors(&p.valid())).collect()
    }

    fn load(&self, p: &MultiModalPrompts<B>, artifact: &PromptArtifact) -> Result<MultiModalPrompts<B>> {
        let cur = self.artifact(p);
        for (k, (shape, _)) in &cur {
            match artifact.get(k) {
                None => return Err(Error::Input(format!("{} artifact has no `{k}`", self.kind))),
                Some((s, _)) if s != shape => {
                    return Err(Error::Input(format!(
                        "{} artifact `{k}` has shape {s:?}, this model needs {shape:?}",
                        self.kind
                    )))
                }
                _ => {}
            }
        }
        let device = p.ctx.val().device();
        let t2 = |k: &str, transpose: bool| {
            let (s, d) = &artifact[k];
            let t = if transpose {
                let data = super::init::transposed(d, s[0], s[1]);
                Tensor::<B, 2>::from_data(TensorData::new(data, [s[1], s[0]]), &device)
            } else {
                Tensor::<B, 2>::from_data(TensorData::new(d.clone(), [s[0], s[1]]), &device)
            };
            Param::from_tensor(t.require_grad())
        };
        let t1 = |k: &str| {
            let (s, d) = &artifact[k];
            Param::from_tensor(Tensor::<B, 1>::from_data(TensorData::new(d.clone(), [s[0]]), &device).require_grad())
        };
        let (nt, nv, np) = (p.text_deep.len(), p.vision.len(), p.proj_w.len());
        let all = names(p);
        let mut it = all.iter();
        let ctx = t2(it.next().expect("ctx"), false);
        let text_deep = (0..nt).map(|_| t2(it.next().expect("text"), false)).collect();
        let vision = (0..nv).map(|_| t2(it.next().expect("vision"), false)).collect();
        let (mut proj_w, mut proj_b) = (Vec::new(), Vec::new());
        for _ in 0..np {
            proj_w.push(t2(it.next().expect("proj w"), true));
            proj_b.push(t1(it.next().expect("proj b")));
        }
        Ok(MultiModalPrompts {
            ctx,
            text_deep,
            vision,
            proj_w,
            proj_b,
        })
    }
}
