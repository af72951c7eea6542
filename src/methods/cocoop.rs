//! CoCoOp (Zhou et al., CVPR'22) as its reference `PromptLearner` and `CustomCLIP` do it: M context
//! vectors (from an init phrase or N(0, σ²)), a meta-net `Linear(d, d/r) → ReLU → Linear(d/r,
//! ctx_dim)` on the L2-normalized image feature whose output is added to every context vector, and
//! a text forward of all class prompts per image. The per-image text forwards are one batched
//! forward of `images × classes` prompts (chunked at evaluation to bound memory), which is what makes
//! CoCoOp affordable here.

use burn::module::{Module, Param};
use burn::optim::GradientsParams;
use burn::tensor::activation::relu;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::loss::cross_entropy_with_logits;
use burn::tensor::{Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::optim::{Epochs, SgdConfig};
use super::spec::{layers, BuildInputs, EncoderUse, MethodSpec, Training};
use super::text_prompts::{init_context, ClassPrompts};
use super::{
    host_tensor as host, loss_grads, Batch, Builder, ClassSet, PromptArtifact, PromptParam, PromptRole, Scorer,
    SgdMethod,
};
use crate::clip::{Clip, ClipTokenizer};
use crate::error::{Error, Result};

/// Prompts per text forward at evaluation (images × classes), to bound memory on large label spaces.
const EVAL_PROMPTS_PER_FORWARD: usize = 4096;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoCoOpConfig {
    pub n_ctx: usize,
    /// Phrase whose token embeddings initialise the context ("" = random N(0, init_std²)).
    pub ctx_init: String,
    pub init_std: f64,
    /// The meta-net's hidden width is the image feature width divided by this (16 in the paper).
    pub meta_net_reduction: usize,
    pub batch_size: usize,
    pub epochs: Epochs,
    pub optim: SgdConfig,
}

impl MethodSpec for CoCoOpConfig {
    const PAPER_NAME: &'static str = "CoCoOp";
    const ENCODERS: EncoderUse = EncoderUse {
        text_per_image: true,
        ..EncoderUse::TEXT_PROMPTS
    };

    fn validate(&self) -> std::result::Result<(), String> {
        if self.n_ctx == 0 || self.meta_net_reduction == 0 || self.batch_size == 0 {
            return Err("n_ctx, meta_net_reduction and batch_size must be positive".into());
        }
        self.epochs.validate()?;
        self.optim.validate()
    }

    fn prompt_layout(&self) -> Option<Vec<(PromptRole, usize)>> {
        Some(layers((self.n_ctx, 1), (0, 0)))
    }

    fn training(&self) -> Training<'_> {
        Training::sgd(&self.optim, &self.epochs, self.batch_size)
    }

    fn build<B: AutodiffBackend, V: Builder<B>>(&self, i: &BuildInputs<B>, to: V) -> Result<V::Out> {
        let (method, params) = CoCoOp::new(self.clone(), i.clip, i.tok, i.classnames, i.seed)?;
        Ok(to.sgd(method, params))
    }
}

/// The learned parameters: context `[M, ctx_dim]` and the meta-net, weights stored `[in, out]`.
#[derive(Module, Debug)]
pub struct CoCoOpParams<B: Backend> {
    pub ctx: Param<Tensor<B, 2>>,
    pub w1: Param<Tensor<B, 2>>,
    pub b1: Param<Tensor<B, 1>>,
    pub w2: Param<Tensor<B, 2>>,
    pub b2: Param<Tensor<B, 1>>,
}

impl<B: Backend> CoCoOpParams<B> {
    /// Random parameters (context N(0, σ²), the meta-net as `nn.Linear` initialises it); used by
    /// benchmarks, where no init phrase is needed.
    pub fn random(c: &CoCoOpConfig, clip: &Clip<B>, seed: u64) -> Self {
        let device = clip.logit_scale.val().device();
        let width = clip.text_model.token_embedding.dims()[1];
        let d = clip.text_projection.dims()[1];
        let hidden = (d / c.meta_net_reduction).max(1);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let ctx = super::init::normal(&mut rng, c.n_ctx * width, c.init_std);
        let ctx = Tensor::<B, 2>::from_data(TensorData::new(ctx, [c.n_ctx, width]), &device);
        Self::with_meta_net(ctx, &mut rng, d, hidden)
    }

    /// `ctx` `[M, width]` as the context, and a meta-net d → hidden → width drawn from `rng` as
    /// `nn.Linear` initialises it.
    fn with_meta_net(ctx: Tensor<B, 2>, rng: &mut impl Rng, d: usize, hidden: usize) -> Self {
        let device = ctx.device();
        let width = ctx.dims()[1];
        let (w1, b1) = linear_init(rng, d, hidden);
        let (w2, b2) = linear_init(rng, hidden, width);
        let p2 = |v: Vec<f32>, s: [usize; 2]| {
            Param::from_tensor(Tensor::<B, 2>::from_data(TensorData::new(v, s), &device).require_grad())
        };
        let p1 = |v: Vec<f32>| {
            let n = v.len();
            Param::from_tensor(Tensor::<B, 1>::from_data(TensorData::new(v, [n]), &device).require_grad())
        };
        Self {
            ctx: Param::from_tensor(ctx.detach().require_grad()),
            w1: p2(w1, [d, hidden]),
            b1: p1(b1),
            w2: p2(w2, [hidden, width]),
            b2: p1(b2),
        }
    }
}

/// PyTorch's `nn.Linear` default init (kaiming-uniform with a = √5): weight and bias uniform in
/// ±1/√fan_in, drawn on the host so the init is the same on every backend. Weight `[in, out]`.
fn linear_init(rng: &mut impl Rng, fan_in: usize, fan_out: usize) -> (Vec<f32>, Vec<f32>) {
    let bound = 1.0 / (fan_in as f64).sqrt();
    let mut u = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| (rng.random::<f64>() * 2.0 - 1.0) as f32 * bound as f32)
            .collect()
    };
    (u(fan_in * fan_out), u(fan_out))
}

/// Logits `[images, classes]`: each image's normalized feature shifts the context through the
/// meta-net; all `images × classes` prompts go through the text encoder in forwards of at most
/// `chunk` prompts.
pub fn cocoop_logits<B: Backend>(
    clip: &Clip<B>,
    params: &CoCoOpParams<B>,
    prompts: &ClassPrompts<B>,
    image_features: Tensor<B, 2>,
    chunk: usize,
) -> Tensor<B, 2> {
    let img = Clip::normalize(image_features);
    let [b, _] = img.dims();
    let [c, _, w] = prompts.prefix.dims();
    let per = (chunk / c).max(1);
    let scale = clip.logit_scale.val().exp();
    let ctx = params.ctx.val();
    let [m, _] = ctx.dims();
    let mut out = Vec::new();
    for start in (0..b).step_by(per) {
        let n = per.min(b - start);
        let im = img.clone().narrow(0, start, n);
        let hidden = relu(im.clone().matmul(params.w1.val()) + params.b1.val().unsqueeze::<2>());
        let bias = hidden.matmul(params.w2.val()) + params.b2.val().unsqueeze::<2>(); // [n, w]
        let shifted = ctx.clone().unsqueeze::<3>() + bias.unsqueeze_dim::<3>(1); // [n, m, w]
        let rows = n * c;
        let ctx_rows = shifted.unsqueeze_dim::<4>(1).expand([n, c, m, w]).reshape([rows, m, w]);
        let rep = |t: &Tensor<B, 3>| {
            let [_, l, _] = t.dims();
            t.clone().unsqueeze::<4>().expand([n, c, l, w]).reshape([rows, l, w])
        };
        let embeds = Tensor::cat(vec![rep(&prompts.prefix), ctx_rows, rep(&prompts.suffix)], 1);
        let eos: Vec<usize> = (0..n).flat_map(|_| prompts.eos.iter().copied()).collect();
        let text = Clip::normalize(clip.text_features(clip.text_model.forward_pooled(embeds, &eos, None)));
        let e = text.dims()[1];
        let text = text.reshape([n, c, e]);
        let logits = (text * im.unsqueeze_dim::<3>(1)).sum_dim(2).reshape([n, c]);
        out.push(logits * scale.clone().unsqueeze::<2>());
    }
    Tensor::cat(out, 0)
}

pub struct CoCoOp<B: AutodiffBackend> {
    config: CoCoOpConfig,
    placeholder: String,
    train: ClassPrompts<B>,
}

impl<B: AutodiffBackend> CoCoOp<B> {
    /// The method and its initial parameters.
    pub fn new(
        config: CoCoOpConfig,
        clip: &Clip<B>,
        tok: &ClipTokenizer,
        classnames: &[String],
        seed: u64,
    ) -> Result<(Self, CoCoOpParams<B>)> {
        let (placeholder, ctx) = init_context(clip, tok, &config.ctx_init, config.n_ctx, 1, config.init_std, seed)?;
        let [_, m, width] = ctx.dims();
        let d = clip.text_projection.dims()[1];
        let hidden = d / config.meta_net_reduction;
        if hidden == 0 {
            return Err(Error::Config(format!(
                "cocoop: meta_net_reduction {} leaves no hidden unit for {d}-wide image features",
                config.meta_net_reduction
            )));
        }
        let mut rng = crate::seeds::rng(seed, crate::seeds::Stream::CocoopMetaNet);
        let params = CoCoOpParams::with_meta_net(ctx.reshape([m, width]), &mut rng, d, hidden);
        let train = ClassPrompts::new(clip, tok, &placeholder, m, classnames)?;
        let method = Self {
            config,
            placeholder,
            train,
        };
        Ok((method, params))
    }
}

impl<B: AutodiffBackend> SgdMethod<B> for CoCoOp<B> {
    type Module = CoCoOpParams<B>;

    fn loss(&self, params: &CoCoOpParams<B>, clip: &Clip<B>, batch: Batch<B>) -> Result<(f32, GradientsParams)> {
        let img = clip.encode_image(batch.pixels, &Default::default()).detach();
        let logits = cocoop_logits(clip, params, &self.train, img, usize::MAX);
        let n = logits.dims()[1];
        let loss = cross_entropy_with_logits(logits, batch.labels.one_hot(n).float());
        Ok(loss_grads(loss, params))
    }

    fn scorer(
        &self,
        params: &CoCoOpParams<B::InnerBackend>,
        clip: &Clip<B::InnerBackend>,
        tok: &ClipTokenizer,
        classes: &ClassSet,
    ) -> Result<Scorer<B::InnerBackend>> {
        let prompts = ClassPrompts::new(clip, tok, &self.placeholder, self.config.n_ctx, classes.names)?;
        let params = params.clone();
        Ok(Scorer::Features(Box::new(move |clip, features| {
            cocoop_logits(clip, &params, &prompts, features, EVAL_PROMPTS_PER_FORWARD)
        })))
    }

    fn prompt_params(&self, params: &CoCoOpParams<B>) -> Vec<PromptParam> {
        let c = &params.ctx;
        vec![PromptParam {
            id: c.id,
            name: "ctx".into(),
            shape: c.dims().to_vec(),
            role: PromptRole::Text(0),
        }]
    }

    /// Saved under the reference `PromptLearner`'s state-dict names, weights as torch stores them
    /// (`[out, in]`), so released CoCoOp checkpoints map onto it.
    fn artifact(&self, p: &CoCoOpParams<B>) -> PromptArtifact {
        let mut a = PromptArtifact::new();
        a.insert("ctx".into(), host(p.ctx.val().inner()));
        a.insert("meta_net.linear1.weight".into(), host(p.w1.val().inner().transpose()));
        a.insert("meta_net.linear1.bias".into(), host(p.b1.val().inner()));
        a.insert("meta_net.linear2.weight".into(), host(p.w2.val().inner().transpose()));
        a.insert("meta_net.linear2.bias".into(), host(p.b2.val().inner()));
        a
    }

    fn load(&self, params: &CoCoOpParams<B>, artifact: &PromptArtifact) -> Result<CoCoOpParams<B>> {
        let cur = self.artifact(params);
        let device = params.ctx.val().device();
        let get = |name: &str| -> Result<Vec<f32>> {
            let (shape, data) = artifact
                .get(name)
                .ok_or_else(|| Error::Input(format!("cocoop artifact has no `{name}`")))?;
            if shape != &cur[name].0 {
                return Err(Error::Input(format!(
                    "cocoop artifact `{name}` has shape {shape:?}, this model needs {:?}",
                    cur[name].0
                )));
            }
            Ok(data.clone())
        };
        let t2 = |name: &str, transpose: bool| -> Result<Param<Tensor<B, 2>>> {
            let s = &cur[name].0;
            let t = if transpose {
                let data = super::init::transposed(&get(name)?, s[0], s[1]);
                Tensor::<B, 2>::from_data(TensorData::new(data, [s[1], s[0]]), &device)
            } else {
                Tensor::<B, 2>::from_data(TensorData::new(get(name)?, [s[0], s[1]]), &device)
            };
            Ok(Param::from_tensor(t.require_grad()))
        };
        let t1 = |name: &str| -> Result<Param<Tensor<B, 1>>> {
            let v = get(name)?;
            let n = v.len();
            Ok(Param::from_tensor(
                Tensor::<B, 1>::from_data(TensorData::new(v, [n]), &device).require_grad(),
            ))
        };
        Ok(CoCoOpParams {
            ctx: t2("ctx", false)?,
            w1: t2("meta_net.linear1.weight", true)?,
            b1: t1("meta_net.linear1.bias")?,
            w2: t2("meta_net.linear2.weight", true)?,
            b2: t1("meta_net.linear2.bias")?,
        })
    }
}
