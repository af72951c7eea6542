//! GRAM meta-training steps per second on the CPU backend: one first-order meta step (support
//! gradient, regulated inner step, query loss, AdamW on θ₀ and φ) for an N-way episode, with
//! textual prompts (4 context tokens; images as frozen features), visual prompts (4 tokens at the
//! input; images through the prompted vision tower, forward and backward) and both (UNIGRAM), at
//! the embedded world's micro-CLIP shapes and at ViT-B/16 shapes (random weights). Figures: docs/gram-runs.md, "Speed".
//!
//!     cargo bench --profile dev --bench gram_meta
use std::time::Instant;

use burn::backend::Autodiff;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use gram_bench::clip::{Clip, ClipConfig, ClipTokenizer, RandomInit};
use gram_bench::gram::{ClassText, EpisodeSet, MetaLearner, MetaRegulators, RegulatorConfig, RegulatorInit};
use gram_bench::methods::text_prompts::ClassPrompts;

type B = Autodiff<gram_bench::backend::Cpu>;

/// Times `runs` meta steps after one warm-up: `ways`-way, `shots` support and `queries` query
/// images per class.
#[allow(clippy::too_many_arguments)]
fn bench(
    label: &str,
    clip: &Clip<B>,
    tok: &ClipTokenizer,
    image_size: usize,
    (text, vision): (bool, bool),
    (ways, shots, queries): (usize, usize, usize),
    runs: usize,
) {
    let device = Default::default();
    let names: Vec<String> = (0..ways).map(|i| format!("a photo of a thing number {i}")).collect();
    let prompts = ClassPrompts::new(clip, tok, "X X X X", 4, &names).expect("prompts");
    let frozen = clip.encode_text(tok, &names).expect("text").detach();
    let e = clip.text_projection.dims()[1];
    let tw = clip.text_model.token_embedding.dims()[1];
    let vw = clip.vision_model.class_embedding.dims()[0];
    let set = |n: usize| EpisodeSet {
        features: Tensor::<B, 2>::random([ways * n, e], Distribution::Normal(0.0, 1.0), &device),
        pixels: vision.then(|| {
            Tensor::<B, 4>::random(
                [ways * n, 3, image_size, image_size],
                Distribution::Normal(0.0, 1.0),
                &device,
            )
        }),
        labels: Tensor::<B, 1, Int>::from_data(
            TensorData::new((0..ways * n).map(|i| (i % ways) as i64).collect::<Vec<_>>(), [ways * n]),
            &device,
        ),
        classes: if text {
            ClassText::Prompts(&prompts)
        } else {
            ClassText::Frozen(frozen.clone())
        },
    };
    let (support, query) = (set(shots), set(queries));
    let rc = RegulatorConfig {
        rank: 16,
        hidden_layers: 1,
        coef_hidden: 24,
        init: RegulatorInit::Xavier,
    };
    let prompt = |on: bool, w: usize| -> Vec<Tensor<B, 2>> {
        if on {
            vec![Tensor::<B, 2>::random([4, w], Distribution::Normal(0.0, 0.02), &device)]
        } else {
            Vec::new()
        }
    };
    let regs = MetaRegulators {
        text: text.then(|| rc.init::<B>(tw, e, 1, &device)),
        vision: vision.then(|| rc.init::<B>(vw, e, 2, &device)),
    };
    let mut meta = MetaLearner::new(prompt(text, tw), prompt(vision, vw), regs, 1e-2, 1.0, 0.0, 1e-8);
    meta.step(clip, &support, &query, 1e-3);
    let t = Instant::now();
    for _ in 0..runs {
        meta.step(clip, &support, &query, 1e-3);
    }
    let s = t.elapsed().as_secs_f64() / runs as f64;
    let prompts = match (text, vision) {
        (true, false) => "text",
        (false, true) => "vision",
        _ => "text + vision (UNIGRAM)",
    };
    println!(
        "| {label} | {prompts} | {ways}-way {shots}-shot, {queries} queries/class | {s:.3} s | {:.2} |",
        1.0 / s
    );
}

fn main() {
    let device = Default::default();
    println!("| shapes | prompts | episode | s / meta step | steps / s |");
    println!("| --- | --- | --- | --- | --- |");
    // The smoke suite's own world, so the bench measures the shapes the suite runs and never
    // repeats (and drifts from) its values.
    let smoke = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("suites/smoke.toml");
    let suite = gram_bench::suite::Suite::load(&smoke).expect("suites/smoke.toml");
    let w = suite.world.as_ref().expect("smoke has a [world]");
    let micro_label = format!(
        "micro-CLIP (smoke world: width {}, {} layers, {} px)",
        w.width, w.layers, w.image_size
    );
    let micro = gram_bench::world::pretrain::micro_clip_config(w)
        .init::<B>(&mut RandomInit::new(0), &device)
        .expect("init")
        .freeze();
    let micro_tok = ClipTokenizer::openai(w.context_length).expect("bpe");
    for modes in [(true, false), (false, true), (true, true)] {
        bench(&micro_label, &micro, &micro_tok, w.image_size, modes, (5, 4, 8), 5);
    }
    let vit = ClipConfig::vit_b_16()
        .init::<B>(&mut RandomInit::new(0), &device)
        .expect("init")
        .freeze();
    let vit_tok = ClipTokenizer::openai(77).expect("bpe");
    let vit_label = "ViT-B/16 (width 512 / 768, 12 layers, 224 px)";
    bench(vit_label, &vit, &vit_tok, 224, (true, false), (5, 4, 8), 3);
    for modes in [(false, true), (true, true)] {
        bench(vit_label, &vit, &vit_tok, 224, modes, (5, 1, 1), 1);
    }
}
