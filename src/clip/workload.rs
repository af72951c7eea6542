//! Random workloads shaped by a backbone's config for measuring the encoders: images, CoOp-shaped
//! prompts, and the forward / forward + backward passes through prompt tokens the prompt learners
//! run. Shared by the criterion benchmark (`benches/encoders.rs`), `gram-bench device-check` and
//! `plan`'s calibration (`estimate::calibrate`).

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Int, Tensor, TensorData};

use super::{Clip, ClipConfig, VisionPrompts};

/// A batch of random pixels at the config's image size and of prompts shaped as CoOp's over its
/// context length: SOT, `n_ctx` context placeholders, a class name of 1–4 tokens, ".", EOT, padding.
pub struct Inputs<B: Backend> {
    pub pixels: Tensor<B, 4>,
    pub ids: Tensor<B, 2, Int>,
    pub eos: Vec<usize>,
    pub n_ctx: usize,
    /// Tokens of a text sequence (the config's context length).
    pub context: usize,
}

impl<B: Backend> Inputs<B> {
    pub fn new(cfg: &ClipConfig, images: usize, prompts: usize, n_ctx: usize, device: &B::Device) -> Self {
        let size = cfg.vision.image_size;
        let pixels = Tensor::random([images, 3, size, size], Distribution::Normal(0.0, 1.0), device);
        let context = cfg.text.max_position_embeddings;
        let vocab = cfg.text.vocab_size;
        let mut ids = vec![0i64; prompts * context];
        let mut eos = Vec::with_capacity(prompts);
        for p in 0..prompts {
            let name_len = 1 + p % 4;
            let row = &mut ids[p * context..(p + 1) * context];
            row[0] = (vocab - 2) as i64;
            for (i, t) in row.iter_mut().enumerate().take(1 + n_ctx + name_len + 1).skip(1) {
                *t = (1 + (p * 31 + i * 7) % (vocab - 3)) as i64;
            }
            let e = 1 + n_ctx + name_len + 1;
            row[e] = (vocab - 1) as i64;
            eos.push(e);
        }
        let ids = Tensor::from_data(TensorData::new(ids, [prompts, context]), device);
        Self {
            pixels,
            ids,
            eos,
            n_ctx,
            context,
        }
    }
}

/// Text features of the prompts, with `ctx` in the context slots when given; `trim`: pool on the
/// prefix up to the last EOS (`forward_pooled`) instead of all 77 positions.
pub fn text_forward<B: Backend>(m: &Clip<B>, x: &Inputs<B>, ctx: Option<Tensor<B, 3>>, trim: bool) -> Tensor<B, 2> {
    let tokens = m.text_model.embed_tokens(x.ids.clone());
    let embeds = match ctx {
        Some(ctx) => {
            let [n, _, w] = tokens.dims();
            Tensor::cat(
                vec![
                    tokens.clone().narrow(1, 0, 1),
                    ctx.expand([n, x.n_ctx, w]),
                    tokens.narrow(1, 1 + x.n_ctx, x.context - 1 - x.n_ctx),
                ],
                1,
            )
        }
        None => tokens,
    };
    let pooled = if trim {
        m.text_model.forward_pooled(embeds, &x.eos, None)
    } else {
        m.text_model.forward_embeds(embeds, &x.eos, None, false).pooled
    };
    m.text_features(pooled)
}

/// Image features with `n_vpt` random shallow visual prompt tokens, backpropagated to them (VPT's
/// pass); returns the prompt gradient's sum, read back so lazy backends finish the work.
pub fn image_backward_to_prompts<B: AutodiffBackend>(m: &Clip<B>, x: &Inputs<B>, n_vpt: usize) -> f32 {
    let device = x.pixels.device();
    let width = m.vision_model.class_embedding.dims()[0];
    let vpt = Tensor::<B, 3>::random([1, n_vpt, width], Distribution::Normal(0.0, 0.02), &device).require_grad();
    let f = m.encode_image(
        x.pixels.clone(),
        &VisionPrompts {
            shallow: Some(vpt.clone()),
            deep: vec![],
        },
    );
    let grads = f.powf_scalar(2.0).mean().backward();
    read_sum(vpt.grad(&grads).expect("prompt gradient"))
}

/// Text features through a random context, backpropagated to it (CoOp's pass); as above.
pub fn text_backward_to_context<B: AutodiffBackend>(m: &Clip<B>, x: &Inputs<B>, trim: bool) -> f32 {
    let device = x.pixels.device();
    let width = m.text_model.token_embedding.dims()[1];
    let ctx = Tensor::<B, 3>::random([1, x.n_ctx, width], Distribution::Normal(0.0, 0.02), &device).require_grad();
    let f = text_forward(m, x, Some(ctx.clone()), trim);
    let grads = f.powf_scalar(2.0).mean().backward();
    read_sum(ctx.grad(&grads).expect("prompt gradient"))
}

/// The sum of a tensor, read back to the host: forces lazy/async backends to finish the work.
pub fn read_sum<B: Backend, const D: usize>(t: Tensor<B, D>) -> f32 {
    use burn::tensor::ElementConversion;
    t.sum().into_scalar().elem::<f32>()
}
