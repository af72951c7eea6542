//! Contrastive training speed of a micro-CLIP on the CPU backend (step 2 must pretrain one in its
//! 5-minute budget): random pixels and ids, symmetric InfoNCE, AdamW, full backward.
//!
//!     cargo bench --bench micro_train                      # flex
//!     cargo bench --bench micro_train --features ndarray   # ndarray instead
//!
//! Figures: docs/performance.md, "Performance".
use burn::backend::Autodiff;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::loss::cross_entropy_with_logits;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use gram_bench::clip::{Activation, ClipConfig, ClipTextConfig, ClipVisionConfig, RandomInit, VisionPrompts};
#[cfg(not(feature = "ndarray"))]
type B = Autodiff<gram_bench::backend::Cpu>;
#[cfg(feature = "ndarray")]
type B = Autodiff<burn::backend::NdArray>;
fn main() {
    // (width, layers, batch, image, patch, context)
    for shape in [
        (128, 2, 128, 32, 8, 16),
        (128, 4, 128, 32, 8, 16),
        (256, 4, 128, 32, 8, 16),
    ] {
        run(shape);
    }
}

fn run((width, layers, batch, img, patch, ctx): (usize, usize, usize, usize, usize, usize)) {
    let heads = width / 32;
    let cfg = ClipConfig::new(
        ClipTextConfig::new(
            1000,
            width,
            4 * width,
            layers,
            heads,
            ctx,
            Activation::QuickGelu,
            1e-5,
            999,
        ),
        ClipVisionConfig::new(width, 4 * width, layers, heads, img, patch, Activation::QuickGelu, 1e-5),
        width,
    );
    let dev = Default::default();
    let mut model = cfg.init::<B>(&mut RandomInit::new(0), &dev).unwrap();
    let mut opt = AdamWConfig::new().init();
    let ids: Vec<i64> = (0..batch * ctx)
        .map(|i| {
            if i % ctx == ctx - 1 {
                999
            } else {
                (i * 7 % 900) as i64 + 1
            }
        })
        .collect();
    let eos = vec![ctx - 1; batch];
    let labels = Tensor::<B, 1, Int>::from_data(TensorData::new((0..batch as i64).collect::<Vec<_>>(), [batch]), &dev);
    let t0 = std::time::Instant::now();
    let steps = 10;
    for s in 0..steps {
        let px = Tensor::<B, 4>::random([batch, 3, img, img], Distribution::Normal(0.0, 1.0), &dev);
        let idt = Tensor::<B, 2, Int>::from_data(TensorData::new(ids.clone(), [batch, ctx]), &dev);
        let im = model.encode_image(px, &VisionPrompts::default());
        let tx = model.text_features(
            model
                .text_model
                .forward_embeds(model.text_model.embed_tokens(idt), &eos, None, false)
                .pooled,
        );
        let logits = model.logits_per_image(im, tx);
        let loss = (cross_entropy_with_logits(logits.clone(), labels.clone().one_hot(batch).float())
            + cross_entropy_with_logits(logits.transpose(), labels.clone().one_hot(batch).float()))
            / 2.0;
        let lv: f32 = loss.clone().into_scalar();
        let g = GradientsParams::from_grads(loss.backward(), &model);
        model = opt.step(1e-3, model, g);
        assert!(lv.is_finite(), "step {s}: loss {lv}");
    }
    let dt = t0.elapsed().as_secs_f64();
    println!(
        "micro_train width {width} layers {layers} batch {batch} image {img}/{patch} context {ctx}: {:.0} ms/step, {:.0} pairs/s",
        1000.0 * dt / steps as f64,
        (batch * steps) as f64 / dt
    );
}
