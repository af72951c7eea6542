//! GRAM meta-training steps per second on the CPU backend: one first-order meta step (support
//! gradient, regulated inner step, query loss, AdamW on θ₀ and φ) for a 5-way 4-shot episode with
//! 8 query images per class, on frozen image features, at the embedded world's micro-CLIP shapes
//! and at ViT-B/16 shapes (random weights). Figures: README.
//!
//!     cargo bench --profile dev --bench gram_meta
use std::time::Instant;

use burn::backend::Autodiff;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use gram_bench::clip::{Clip, ClipConfig, ClipTokenizer, RandomInit};
use gram_bench::gram::{EpisodeSet, MetaLearner, RegulatorConfig, RegulatorInit};
use gram_bench::methods::coop::ClassPrompts;

type B = Autodiff<gram_bench::backend::Cpu>;

fn bench(label: &str, clip: &Clip<B>, tok: &ClipTokenizer) {
    let device = Default::default();
    let names: Vec<String> = [
        "a photo of a red circle",
        "a sketch of a blue square",
        "a cartoon green star",
        "a photo of a striped yellow triangle",
        "a small purple heart",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let prompts = ClassPrompts::new(clip, tok, "X X X X", 4, &names).expect("prompts");
    let e = clip.text_projection.dims()[1];
    let w = clip.text_model.token_embedding.dims()[1];
    let set = |n: usize| EpisodeSet {
        features: Tensor::<B, 2>::random([5 * n, e], Distribution::Normal(0.0, 1.0), &device),
        labels: Tensor::<B, 1, Int>::from_data(
            TensorData::new((0..5 * n).map(|i| (i % 5) as i64).collect::<Vec<_>>(), [5 * n]),
            &device,
        ),
        prompts: &prompts,
    };
    let (support, query) = (set(4), set(8));
    let reg = RegulatorConfig {
        rank: 16,
        hidden_layers: 1,
        coef_hidden: 24,
        init: RegulatorInit::Xavier,
    }
    .init::<B>(w, e, 1, &device);
    let ctx = Tensor::<B, 3>::random([1, 4, w], Distribution::Normal(0.0, 0.02), &device);
    let mut meta = MetaLearner::new(ctx, reg, 1e-2, 1.0, 0.0);
    meta.step(clip, &support, &query, 1e-3);
    let n = 5;
    let t = Instant::now();
    for _ in 0..n {
        meta.step(clip, &support, &query, 1e-3);
    }
    let s = t.elapsed().as_secs_f64() / n as f64;
    println!("| {label} | {:.3} s | {:.2} steps/s |", s, 1.0 / s);
}

fn main() {
    let device = Default::default();
    println!("| shapes | s / meta step | steps / s |");
    println!("| --- | --- | --- |");
    let world = gram_bench::world::pretrain::micro_clip_config(&gram_bench::world::WorldConfig {
        seed: 1,
        image_size: 32,
        patch_size: 8,
        width: 64,
        layers: 2,
        context_length: 32,
        corpus_size: 0,
        steps: 0,
        batch_size: 1,
        lr: 0.0,
        weight_decay: 0.0,
        warmup_steps: 0,
    });
    let micro = world
        .init::<B>(&mut RandomInit::new(0), &device)
        .expect("init")
        .freeze();
    bench(
        "micro-CLIP (smoke world: width 64, 2 layers)",
        &micro,
        &ClipTokenizer::openai(32).expect("bpe"),
    );
    let vit = ClipConfig::vit_b_16()
        .init::<B>(&mut RandomInit::new(0), &device)
        .expect("init")
        .freeze();
    bench(
        "ViT-B/16 text tower (width 512, 12 layers)",
        &vit,
        &ClipTokenizer::openai(77).expect("bpe"),
    );
}
