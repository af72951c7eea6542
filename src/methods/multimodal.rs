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
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{GradientsParams, Optimizer, Sgd};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::loss::cross_entropy_with_logits;
use burn::tensor::{Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::init::normal;
use super::ivlp::IvlpConfig;
use super::maple::MapleConfig;
use super::optim::{Epochs, SgdConfig};
use super::promptsrc::{gpa_weights, PromptSrcConfig};
use super::text_prompts::ClassPrompts;
use super::{host_tensor as host, loss_grads, Batch, ClassSet, PromptArtifact, PromptMethod, PromptParam, PromptRole};
use crate::clip::model::ids_tensor;
use crate::clip::{Clip, ClipTokenizer, DeepPrompts, PromptSlot, VisionPrompts};
use crate::error::{Error, Result};

/// PromptSRC's training-time state: the frozen anchors and the running aggregate.
struct SelfRegulation<B: AutodiffBackend> {
    config: PromptSrcConfig,
    /// GPA's (mean, std) for the cell's dataset and shot count.
    gpa: (f64, f64),
    /// Normalized mean frozen text features of the training classes.
    anchors: Tensor<B, 2>,
    /// Σ w_e · prompt_e so far, per artifact tensor.
    aggregate: Option<Vec<(Vec<usize>, Vec<f32>)>>,
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
pub struct MultiModalPrompts<B: Backend> {
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
    pub fn image_features(&self, clip: &Clip<B>, pixels: Tensor<B, 4>) -> Tensor<B, 2> {
        Clip::normalize(clip.encode_image(pixels, &self.vision_inputs()))
    }
}

/// Which of the two designs, with the sizes each needs.
#[derive(Clone, Debug, PartialEq)]
pub enum Coupling {
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

pub struct MultiModal<B: AutodiffBackend> {
    kind: &'static str,
    src: Option<SelfRegulation<B>>,
    n_ctx: usize,
    placeholder: String,
    prompts: Option<MultiModalPrompts<B>>,
    optim: OptimizerAdaptor<Sgd<B::InnerBackend>, MultiModalPrompts<B>, B>,
    train: ClassPrompts<B>,
    eval: Option<(MultiModalPrompts<B::InnerBackend>, Tensor<B::InnerBackend, 2>)>,
}

impl<B: AutodiffBackend> MultiModal<B> {
    pub fn maple(
        c: &MapleConfig,
        clip: &Clip<B>,
        tok: &ClipTokenizer,
        classnames: &[String],
        seed: u64,
    ) -> Result<Self> {
        let common = (c.n_ctx, c.ctx_init.as_str(), c.depth, c.init_std, &c.optim);
        Self::new("maple", common, Coupling::Maple, clip, tok, classnames, seed)
    }

    pub fn ivlp(c: &IvlpConfig, clip: &Clip<B>, tok: &ClipTokenizer, classnames: &[String], seed: u64) -> Result<Self> {
        let common = (c.n_ctx_text, c.ctx_init.as_str(), c.text_depth, c.init_std, &c.optim);
        let coupling = Coupling::Independent {
            n_vision: c.n_ctx_vision,
            vision_depth: c.vision_depth,
        };
        Self::new("ivlp", common, coupling, clip, tok, classnames, seed)
    }

    fn new(
        kind: &'static str,
        (n, ctx_init, text_depth, std, optim): (usize, &str, usize, f64, &SgdConfig),
        coupling: Coupling,
        clip: &Clip<B>,
        tok: &ClipTokenizer,
        classnames: &[String],
        seed: u64,
    ) -> Result<Self> {
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
        Ok(Self {
            kind,
            src: None,
            n_ctx: n,
            placeholder,
            prompts: Some(MultiModalPrompts {
                ctx,
                text_deep,
                vision,
                proj_w,
                proj_b,
            }),
            optim: optim.burn_config().init(),
            train,
            eval: None,
        })
    }

    pub fn promptsrc(
        c: &PromptSrcConfig,
        gpa: (f64, f64),
        clip: &Clip<B>,
        tok: &ClipTokenizer,
        classnames: &[String],
        seed: u64,
    ) -> Result<Self> {
        let mut m = Self::ivlp(&c.ivlp(), clip, tok, classnames, seed)?;
        m.kind = "promptsrc";
        // The mean of the frozen model's unnormalized features over the templates, normalized.
        let mut sum: Option<Tensor<B, 2>> = None;
        for t in &c.text_templates {
            let texts: Vec<String> = classnames.iter().map(|n| super::zeroshot::fill(t, n)).collect();
            let f = clip.encode_text(tok, &texts)?;
            sum = Some(match sum {
                Some(s) => s + f,
                None => f,
            });
        }
        let anchors = Clip::normalize(sum.expect("validated: templates are non-empty")).detach();
        m.src = Some(SelfRegulation {
            config: c.clone(),
            gpa,
            anchors,
            aggregate: None,
        });
        Ok(m)
    }

    fn prompts(&self) -> &MultiModalPrompts<B> {
        self.prompts
            .as_ref()
            .expect("the prompts are only taken out during a step")
    }
}

impl<B: AutodiffBackend> PromptMethod<B> for MultiModal<B> {
    fn step(&mut self, clip: &Clip<B>, batch: Batch<B>) -> Result<(f32, GradientsParams)> {
        let p = self.prompts();
        let text = p.text_features(clip, &self.train);
        let img = p.image_features(clip, batch.pixels.clone());
        let logits = clip.logits_per_image(img.clone(), text.clone());
        let n = logits.dims()[1];
        let mut loss = cross_entropy_with_logits(logits.clone(), batch.labels.one_hot(n).float());
        if let Some(src) = &self.src {
            let c = &src.config;
            let zs_img = Clip::normalize(clip.encode_image(batch.pixels, &Default::default())).detach();
            let zs_logits = clip.logits_per_image(zs_img.clone(), src.anchors.clone()).detach();
            let l_text = (text - src.anchors.clone()).abs().mean().mul_scalar(c.text_loss_weight);
            let l_img = (img - zs_img).abs().mean().mul_scalar(c.image_loss_weight);
            // KL(p_zs ‖ p) summed, over the number of logits (the reference's `kl_div(…, 'sum') / numel`).
            let numel = logits.dims().iter().product::<usize>() as f64;
            let log_p = log_softmax(logits, 1);
            let log_zs = log_softmax(zs_logits, 1);
            let kl = (log_zs.clone().exp() * (log_zs - log_p)).sum().div_scalar(numel);
            loss = loss + kl + l_text + l_img;
        }
        let (value, grads) = loss_grads(loss, p);
        Ok((value, grads))
    }

    fn apply(&mut self, grads: GradientsParams, lr: f64) -> Result<()> {
        let p = self
            .prompts
            .take()
            .expect("the prompts are only taken out during a step");
        self.prompts = Some(self.optim.step(lr, p, grads));
        Ok(())
    }

    fn end_epoch(&mut self, epoch: usize, epochs: usize) -> Result<()> {
        let Some(src) = self.src.as_mut() else {
            return Ok(());
        };
        let w = gpa_weights(epochs, src.gpa.0, src.gpa.1)[epoch] as f32;
        let now = tensors(&self.prompts.as_ref().expect("outside a step").valid());
        match &mut src.aggregate {
            None => {
                src.aggregate = Some(
                    now.into_iter()
                        .map(|(s, d)| (s, d.into_iter().map(|x| x * w).collect()))
                        .collect(),
                )
            }
            Some(acc) => {
                for ((_, a), (_, d)) in acc.iter_mut().zip(now) {
                    for (x, y) in a.iter_mut().zip(d) {
                        *x += y * w;
                    }
                }
            }
        }
        if epoch + 1 == epochs {
            // The aggregated prompt is the trained one.
            let agg = src.aggregate.take().expect("set above");
            let names = names(self.prompts());
            let artifact: PromptArtifact = names.into_iter().zip(agg).collect();
            self.load_artifact(&artifact)?;
        }
        Ok(())
    }

    fn begin_eval(&mut self, clip: &Clip<B::InnerBackend>, tok: &ClipTokenizer, classes: &ClassSet) -> Result<()> {
        let p = self.prompts().valid();
        let cp = ClassPrompts::new(clip, tok, &self.placeholder, self.n_ctx, classes.names)?;
        let text = p.text_features(clip, &cp);
        self.eval = Some((p, text));
        Ok(())
    }

    fn eval_logits(
        &self,
        clip: &Clip<B::InnerBackend>,
        pixels: Tensor<B::InnerBackend, 4>,
    ) -> Tensor<B::InnerBackend, 2> {
        let (p, text) = self.eval.as_ref().expect("begin_eval runs before eval_logits");
        clip.logits_per_image(p.image_features(clip, pixels), text.clone())
    }

    /// The text context, the deep text prompts and (IVLP, PromptSRC) the visual prompts; MaPLe's
    /// visual prompts are projections, not prompt tensors.
    fn prompt_params(&self) -> Vec<PromptParam> {
        let p = self.prompts();
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

    /// With PromptSRC's running aggregate, stored as `aggregate.<i>` entries.
    fn train_state(&self) -> Result<Option<super::resume::TrainState>> {
        let m = self
            .prompts
            .as_ref()
            .expect("the prompts are only taken out during a step");
        let mut state = super::resume::save(m, &self.optim)?;
        if let Some(agg) = self.src.as_ref().and_then(|s| s.aggregate.as_ref()) {
            for (i, t) in agg.iter().enumerate() {
                state.extra.insert(format!("aggregate.{i:03}"), t.clone());
            }
        }
        Ok(Some(state))
    }

    fn restore_train_state(&mut self, state: &super::resume::TrainState) -> Result<()> {
        let m = self
            .prompts
            .take()
            .expect("the prompts are only taken out during a step");
        self.prompts = Some(super::resume::load(m, &mut self.optim, state)?);
        if let Some(src) = self.src.as_mut() {
            // BTreeMap order is the zero-padded index order.
            let agg: Vec<(Vec<usize>, Vec<f32>)> = state
                .extra
                .iter()
                .filter(|(k, _)| k.starts_with("aggregate."))
                .map(|(_, v)| v.clone())
                .collect();
            src.aggregate = (!agg.is_empty()).then_some(agg);
        }
        Ok(())
    }

    fn save_artifact(&self) -> PromptArtifact {
        let p = self.prompts();
        names(p).into_iter().zip(tensors(&p.valid())).collect()
    }

    fn load_artifact(&mut self, artifact: &PromptArtifact) -> Result<()> {
        let cur = self.save_artifact();
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
        let device = self.prompts().ctx.val().device();
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
        let p = self.prompts();
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
        self.prompts = Some(MultiModalPrompts {
            ctx,
            text_deep,
            vision,
            proj_w,
            proj_b,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::promptsrc::gpa_weights;

    #[test]
    fn gpa_weights_are_the_normalized_gaussian_over_epochs() {
        let w = gpa_weights(20, 15.0, 1.0);
        assert_eq!(w.len(), 20);
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        let top = w.iter().cloned().fold(0.0, f64::max);
        assert_eq!(w[14], top, "epoch 15 weighs most");
        assert!((w[13] - w[15]).abs() < 1e-15, "symmetric around the mean");
        assert!(w[0] < 1e-30);
    }
}
