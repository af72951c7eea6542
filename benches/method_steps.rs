//! One training step of every method at ViT-B/16 shapes (random weights) on the CPU backend: 4
//! images at 224 px, 10 classes, each method's published prompt sizes (CoOp M = 16; CoCoOp M = 4;
//! VPT 8 tokens × 12 layers; MaPLe 2 tokens × 9; IVLP and PromptSRC 4 + 4 tokens × 9). And CoCoOp's
//! text side twice: the batched forward it uses (all images' prompts in one pass) and one pass per
//! image as the reference loops. Seconds per step, median of 3 after a warm-up. Figures: docs/performance.md, "One training step per method".
//!
//!     cargo bench --profile dev --bench method_steps
use std::time::Instant;

use burn::backend::Autodiff;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use gram_bench::clip::{ClipConfig, ClipTokenizer, RandomInit};
use gram_bench::methods::cocoop::{cocoop_logits, CoCoOpParams};
use gram_bench::methods::text_prompts::ClassPrompts;
use gram_bench::methods::{
    Batch, ClassTokenPosition, CoCoOpConfig, CoOpConfig, ContextSource, Epochs, IvlpConfig, KgCoOpConfig, MapleConfig,
    ProGradConfig, PromptSrcConfig, SgdConfig, VptConfig,
};
use gram_bench::run::CellMethod;
use gram_bench::suite::methods::MethodConfig;

type B = Autodiff<gram_bench::backend::Cpu>;

const IMAGES: usize = 4;

fn sgd() -> SgdConfig {
    SgdConfig {
        lr: 0.002,
        momentum: 0.9,
        weight_decay: 5e-4,
        warmup_epochs: 0,
        warmup_lr: 0.0,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let device = Default::default();
    let clip = ClipConfig::vit_b_16()
        .init::<B>(&mut RandomInit::new(0), &device)
        .expect("random init")
        .freeze();
    let tok = ClipTokenizer::openai(77).expect("embedded BPE");
    let names: Vec<String> = [
        "golden retriever",
        "tabby cat",
        "sea lion",
        "aircraft carrier",
        "pizza",
        "sunflower",
        "mountain bike",
        "lighthouse",
        "strawberry",
        "red fox",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let coop = CoOpConfig {
        n_ctx: 16,
        ctx_init: String::new(),
        init_std: 0.02,
        csc: false,
        class_token_position: ClassTokenPosition::End,
        batch_size: IMAGES,
        epochs: Epochs::Fixed(1),
        optim: sgd(),
    };
    let ctxv1 = CoOpConfig {
        n_ctx: 4,
        ctx_init: "a photo of a".into(),
        ..coop.clone()
    };
    let methods: Vec<(&str, MethodConfig)> = vec![
        ("coop (M = 16)", MethodConfig::Coop(coop.clone())),
        (
            "kgcoop",
            MethodConfig::Kgcoop(KgCoOpConfig {
                n_ctx: 4,
                ctx_init: "a photo of a".into(),
                init_std: 0.02,
                csc: false,
                class_token_position: ClassTokenPosition::End,
                batch_size: IMAGES,
                epochs: Epochs::Fixed(1),
                optim: sgd(),
                prior_templates: Default::default(),
                weight: 8.0,
            }),
        ),
        (
            "prograd",
            MethodConfig::Prograd(ProGradConfig {
                n_ctx: 4,
                ctx_init: "a photo of a".into(),
                init_std: 0.02,
                csc: false,
                class_token_position: ClassTokenPosition::End,
                batch_size: IMAGES,
                epochs: Epochs::Fixed(1),
                optim: sgd(),
                prior_templates: Default::default(),
                lambda: 1.0,
                temperature: 1.0,
                ctx_source: ContextSource::CtxInit,
                transfer_template: None,
            }),
        ),
        (
            "cocoop",
            MethodConfig::Cocoop(CoCoOpConfig {
                n_ctx: 4,
                ctx_init: "a photo of a".into(),
                init_std: 0.02,
                meta_net_reduction: 16,
                batch_size: IMAGES,
                epochs: Epochs::Fixed(1),
                optim: sgd(),
            }),
        ),
        (
            "vpt (8 × 12)",
            MethodConfig::Vpt(VptConfig {
                n_ctx: 8,
                depth: 12,
                init_std: 0.02,
                text_template: "a photo of a {}.".into(),
                f16_prompt_tokens: false,
                batch_size: IMAGES,
                epochs: Epochs::Fixed(1),
                optim: sgd(),
            }),
        ),
        (
            "maple (2 × 9)",
            MethodConfig::Maple(MapleConfig {
                n_ctx: 2,
                ctx_init: "a photo of a".into(),
                depth: 9,
                init_std: 0.02,
                batch_size: IMAGES,
                epochs: Epochs::Fixed(1),
                optim: sgd(),
            }),
        ),
        (
            "ivlp (4 + 4 × 9)",
            MethodConfig::Ivlp(IvlpConfig {
                n_ctx_text: 4,
                ctx_init: "a photo of a".into(),
                text_depth: 9,
                n_ctx_vision: 4,
                vision_depth: 9,
                init_std: 0.02,
                batch_size: IMAGES,
                epochs: Epochs::Fixed(1),
                optim: sgd(),
            }),
        ),
        (
            "promptsrc (4 + 4 × 9)",
            MethodConfig::Promptsrc(PromptSrcConfig {
                n_ctx_text: 4,
                ctx_init: "a photo of a".into(),
                text_depth: 9,
                n_ctx_vision: 4,
                vision_depth: 9,
                init_std: 0.02,
                text_loss_weight: 25.0,
                image_loss_weight: 10.0,
                text_templates: vec!["a photo of a {}.".into(), "a sketch of the {}.".into()],
                gpa_mean: gram_bench::methods::PerCell::Fixed(15.0),
                gpa_std: gram_bench::methods::PerCell::Fixed(1.0),
                gpa_whole_model: false,
                batch_size: IMAGES,
                epochs: Epochs::Fixed(1),
                optim: sgd(),
            }),
        ),
    ];
    let _ = ctxv1;
    let batch = || Batch {
        pixels: Tensor::<B, 4>::random([IMAGES, 3, 224, 224], Distribution::Normal(0.0, 1.0), &device),
        labels: Tensor::<B, 1, Int>::from_data(TensorData::new(vec![0i64, 3, 5, 9], [IMAGES]), &device),
    };
    println!(
        "| method, ViT-B/16, {IMAGES} images × {} classes | s / step |",
        names.len()
    );
    println!("| --- | --- |");
    for (name, cfg) in methods {
        let mut m = CellMethod::build(
            &cfg,
            &gram_bench::methods::BuildInputs {
                clip: &clip,
                tok: &tok,
                classnames: &names,
                template: "a photo of a {}.",
                imagenet_like: false,
                dataset: "test",
                shots: 1,
                seed: 1,
            },
        )
        .and_then(CellMethod::into_learner)
        .expect("build");
        m.step(&clip, batch(), 0.002).expect("warm-up");
        let times: Vec<f64> = (0..3)
            .map(|_| {
                let t = Instant::now();
                m.step(&clip, batch(), 0.002).expect("step");
                t.elapsed().as_secs_f64()
            })
            .collect();
        println!("| {name} | {:.2} |", median(times));
    }

    // CoCoOp's text side alone: forward + backward of the logits from fixed image features.
    let cc = CoCoOpConfig {
        n_ctx: 4,
        ctx_init: "a photo of a".into(),
        init_std: 0.02,
        meta_net_reduction: 16,
        batch_size: IMAGES,
        epochs: Epochs::Fixed(1),
        optim: sgd(),
    };
    let prompts = ClassPrompts::new(&clip, &tok, "a photo of a", 4, &names).expect("prompts");
    let params = CoCoOpParams::<B>::random(&cc, &clip, 1);
    let feats = Tensor::<B, 2>::random([IMAGES, 512], Distribution::Normal(0.0, 1.0), &device);
    for (label, chunk) in [
        ("batched: one text forward", usize::MAX),
        ("per image, as the reference loops", names.len()),
    ] {
        let run = || {
            let t = Instant::now();
            let l = cocoop_logits(&clip, &params, &prompts, feats.clone(), chunk);
            let _ = l.sum().backward();
            t.elapsed().as_secs_f64()
        };
        run();
        let times: Vec<f64> = (0..3).map(|_| run()).collect();
        println!("| cocoop text side, {label} | {:.2} |", median(times));
    }
}
