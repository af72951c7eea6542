//! GRAM's meta-training on the tiny fixture CLIP: one first-order step moves both the prompt
//! initialisation θ₀ and the regulators φ (textual, visual, UNIGRAM), repeated steps on one task
//! lower its query loss, and meta-training on a TSV corpus gives a seeded artifact.
mod common;

use burn::backend::Autodiff;
use burn::module::Module;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use common::{fixture, B};
use gram_bench::clip::{load_clip, LoadOptions};
use gram_bench::gram::{ClassText, EpisodeSet, MetaLearner, MetaRegulators, Regulator, RegulatorConfig, RegulatorInit};
use gram_bench::methods::text_prompts::ClassPrompts;

type AB = Autodiff<B>;

fn flat<M: Module<AB>>(m: &M) -> Vec<f32> {
    use burn::module::ModuleVisitor;
    struct V(Vec<f32>);
    impl ModuleVisitor<AB> for V {
        fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<AB, D>>) {
            self.0
                .extend(p.val().into_data().convert::<f32>().to_vec::<f32>().unwrap());
        }
    }
    let mut v = V(Vec::new());
    m.visit(&mut v);
    v.0
}

fn regulator(width: usize, seed: u64, dev: &burn::tensor::Device<AB>) -> Regulator<AB> {
    RegulatorConfig {
        rank: 4,
        hidden_layers: 0,
        coef_hidden: 8,
        init: RegulatorInit::Xavier,
    }
    .init::<AB>(width, 32, seed, dev)
}

/// Meta steps on one task with textual prompts, visual prompts, or both (UNIGRAM): every learned
/// tensor of θ₀ and each modality's φ move, and repeated steps lower the query loss.
#[test]
fn a_meta_step_moves_the_initialisation_and_the_regulators_and_lowers_the_query_loss() {
    let dev = Default::default();
    let clip = load_clip::<AB>(&fixture("tiny-clip-hf"), &LoadOptions::default(), &dev).unwrap();
    let m = clip.model;
    let names: Vec<String> = ["red circle", "blue square", "green star"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let prompts = ClassPrompts::new(&m, &clip.tokenizer, "X X X X", 4, &names).unwrap();
    let frozen_text = m.encode_text(&clip.tokenizer, &names).unwrap().detach();
    let text_w = m.text_model.token_embedding.dims()[1];
    let vision_w = m.vision_model.class_embedding.dims()[0];
    for (label, text_layers, vision_layers) in [("text", 1, 0), ("vision (deep)", 0, 2), ("unigram", 2, 1)] {
        let set = |seed: u64| {
            let pixels = Tensor::<AB, 4>::random([6, 3, 32, 32], Distribution::Normal(seed as f64 * 0.1, 1.0), &dev);
            EpisodeSet {
                features: m.encode_image(pixels.clone(), &Default::default()).detach(),
                pixels: (vision_layers > 0).then_some(pixels),
                labels: Tensor::<AB, 1, Int>::from_data(TensorData::new(vec![0i64, 1, 2, 0, 1, 2], [6]), &dev),
                classes: if text_layers > 0 {
                    ClassText::Prompts(&prompts)
                } else {
                    ClassText::Frozen(frozen_text.clone())
                },
            }
        };
        let (support, query) = (set(1), set(2));
        let draw = |n: usize, w: usize| -> Vec<Tensor<AB, 2>> {
            (0..n)
                .map(|_| Tensor::<AB, 2>::random([4, w], Distribution::Normal(0.0, 0.02), &dev))
                .collect()
        };
        let regs = MetaRegulators {
            text: (text_layers > 0).then(|| regulator(text_w, 3, &dev)),
            vision: (vision_layers > 0).then(|| regulator(vision_w, 4, &dev)),
        };
        let mut meta = MetaLearner::new(
            draw(text_layers, text_w),
            draw(vision_layers, vision_w),
            regs,
            1.0,
            1.0,
            0.0,
            1e-8,
        );
        let tensors = |meta: &MetaLearner<AB>| -> Vec<Vec<f32>> {
            meta.prompt
                .text
                .iter()
                .chain(&meta.prompt.vision)
                .map(flat_param)
                .collect()
        };
        let tensors0 = tensors(&meta);
        let (t0, v0) = (flat(&meta.regulators.text), flat(&meta.regulators.vision));
        let first = meta.step(&m, &support, &query, 0.01);
        assert!(
            first.support_loss.is_finite() && first.query_loss.is_finite(),
            "{label}"
        );
        assert_eq!(first.text_coefficient.is_some(), text_layers > 0, "{label}");
        assert_eq!(first.vision_coefficient.is_some(), vision_layers > 0, "{label}");
        for c in first.text_coefficient.iter().chain(&first.vision_coefficient) {
            assert!(*c > 0.0 && *c < 1.0, "{label}: coefficient {c}");
        }
        let tensors1 = tensors(&meta);
        assert_eq!(tensors1.len(), text_layers + vision_layers);
        for (i, (a, b)) in tensors0.iter().zip(&tensors1).enumerate() {
            assert_ne!(a, b, "{label}: θ₀ tensor {i} did not move");
        }
        if text_layers > 0 {
            assert_ne!(flat(&meta.regulators.text), t0, "{label}: textual φ did not move");
        }
        if vision_layers > 0 {
            assert_ne!(flat(&meta.regulators.vision), v0, "{label}: visual φ did not move");
        }
        let mut last = first.clone();
        for _ in 0..15 {
            last = meta.step(&m, &support, &query, 0.01);
        }
        assert!(
            last.query_loss < first.query_loss,
            "{label}: query loss {} → {}",
            first.query_loss,
            last.query_loss
        );
    }
}

fn flat_param(p: &burn::module::Param<Tensor<AB, 2>>) -> Vec<f32> {
    p.val().into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

/// A corpus in open_clip's TSV convention: two "domains" of captions (photo / sketch) over three
/// coloured shapes, images of the colour.
fn tsv_corpus(dir: &std::path::Path) -> std::path::PathBuf {
    let colours = [
        ("red", [200u8, 30, 30]),
        ("green", [30, 180, 40]),
        ("blue", [30, 40, 200]),
    ];
    let mut lines = vec!["filepath\ttitle".to_string()];
    for (d, style) in ["a photo of a", "a pencil sketch of a"].iter().enumerate() {
        for (c, (name, rgb)) in colours.iter().enumerate() {
            for i in 0..4u8 {
                let file = format!("img_{d}_{c}_{i}.png");
                image::RgbImage::from_fn(32, 32, |x, y| {
                    let t = ((x + y) as u8).wrapping_mul(3).wrapping_add(i * 11 + d as u8 * 60);
                    image::Rgb([
                        rgb[0].wrapping_add(t / 8),
                        rgb[1].wrapping_add(t / 8),
                        rgb[2].wrapping_add(t / 8),
                    ])
                })
                .save(dir.join(&file))
                .unwrap();
                lines.push(format!("{file}\t{style} {name} circle"));
            }
        }
    }
    let p = dir.join("corpus.tsv");
    std::fs::write(&p, lines.join("\n")).unwrap();
    p
}

#[test]
fn meta_training_on_a_tsv_corpus_produces_an_artifact() {
    use gram_bench::gram::corpus::corpus_features;
    use gram_bench::gram::Checkpointing;
    use gram_bench::gram::{
        meta_train, ClusterConfig, ClusterOrder, Corpus, EpisodeConfig, MetaInputs, MetaTrainConfig, PromptShape,
        QueryRule, TaskEmbedding,
    };
    let dir = tempfile::tempdir().unwrap();
    let path = tsv_corpus(dir.path());
    let corpus = Corpus::from_csv(&path, "filepath", "title", '\t').unwrap();
    assert_eq!(corpus.captions.len(), 24);
    assert_eq!(
        corpus.digest().unwrap(),
        Corpus::from_csv(&path, "filepath", "title", '\t')
            .unwrap()
            .digest()
            .unwrap()
    );
    let e = Corpus::from_csv(&path, "image", "title", '\t')
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("no column `image`") && e.contains("filepath"), "{e}");

    let dev = Default::default();
    let clip = load_clip::<AB>(&fixture("tiny-clip-hf"), &LoadOptions::default(), &dev).unwrap();
    let cfg = MetaTrainConfig {
        cluster: ClusterConfig {
            domains: 2,
            classes_per_domain: 3,
            iterations: 10,
            order: ClusterOrder::CaptionsThenImages,
        },
        episode: EpisodeConfig {
            ways: 2,
            shots: 1,
            queries: 2,
            query: QueryRule::NearestClassOtherDomain,
        },
        regulator: RegulatorConfig {
            rank: 4,
            hidden_layers: 0,
            coef_hidden: 8,
            init: RegulatorInit::Xavier,
        },
        text: Some(PromptShape { n_ctx: 4, depth: 1 }),
        vision: None,
        init_std: 0.02,
        inner_lr: 1.0,
        inner_steps: 1,
        task_embedding: TaskEmbedding::ImageMean,
        outer_lr: 0.01,
        weight_decay: 0.0,
        adam_epsilon: 1e-8,
        clip_norm: 1.0,
        steps: 4,
        tasks_per_step: 1,
    };
    let cache = gram_bench::data::images::ImageCache::new(1 << 26);
    let feats = corpus_features(&clip.model, &clip.tokenizer, &clip.preprocess, &corpus, &cache, 7).unwrap();
    assert_eq!((feats.0.ok.len(), feats.1.ok.len()), (24, 24));
    let train = |cfg: &MetaTrainConfig, seed: u64, ck: Option<&Checkpointing>| {
        meta_train(
            &MetaInputs {
                clip: &clip.model,
                tok: &clip.tokenizer,
                pre: &clip.preprocess,
                corpus: &corpus,
                images: &feats.0,
                captions: &feats.1,
                config: cfg,
                seed,
                checkpoint: ck,
            },
            &mut |_, _| {},
        )
    };
    let mut seen = 0;
    let art = meta_train(
        &MetaInputs {
            clip: &clip.model,
            tok: &clip.tokenizer,
            pre: &clip.preprocess,
            corpus: &corpus,
            images: &feats.0,
            captions: &feats.1,
            config: &cfg,
            seed: 1,
            checkpoint: None,
        },
        &mut |_, s| {
            assert!(s.query_loss.is_finite());
            seen += 1;
        },
    )
    .unwrap();
    assert_eq!(seen, 4);
    assert_eq!(art.trace.len(), 4);
    // The episodes are recorded, support and query from different domains.
    assert_eq!(art.episodes.len(), 4);
    assert!(art
        .episodes
        .iter()
        .all(|e| e.domain != e.query_domain && e.support.len() == 2));
    assert_eq!(art.theta0.keys().collect::<Vec<_>>(), ["text.0"]);
    assert_eq!(art.theta0["text.0"].0, vec![4, 64]);
    assert_eq!(art.corpus_digest, corpus.digest().unwrap());
    assert!(art.vision_regulator.is_none());
    // φ round-trips through its tensors.
    let r = art.regulator::<B>(true, &dev).unwrap().unwrap();
    assert_eq!(
        gram_bench::gram::artifact::regulator_tensors(&r),
        art.text_regulator.as_ref().unwrap().tensors
    );
    // Seeded: the same run gives the same artifact.
    let again = train(&cfg, 1, None).unwrap();
    assert_eq!(again, art);
    let art_text = art.clone();

    // Interrupted after 3 of 4 steps (checkpoint after each), then resumed: the same artifact as
    // the uninterrupted run, bit for bit.
    let ck = Checkpointing {
        path: dir.path().join("meta.checkpoint.json"),
        every_steps: Some(1),
        every_secs: None,
    };
    let run = |cfg: &MetaTrainConfig, seed: u64| train(cfg, seed, Some(&ck));
    let partial = run(
        &MetaTrainConfig {
            steps: 3,
            ..cfg.clone()
        },
        1,
    )
    .unwrap();
    assert_eq!(partial.trace[..], art.trace[..3]);
    assert!(ck.path.exists());
    let mut resumed_steps = Vec::new();
    let resumed = meta_train(
        &MetaInputs {
            clip: &clip.model,
            tok: &clip.tokenizer,
            pre: &clip.preprocess,
            corpus: &corpus,
            images: &feats.0,
            captions: &feats.1,
            config: &cfg,
            seed: 1,
            checkpoint: Some(&ck),
        },
        &mut |step, _| resumed_steps.push(step),
    )
    .unwrap();
    assert_eq!(resumed_steps, [2, 3], "resumed from the checkpoint after step 2");
    assert_eq!(resumed, art);
    // A checkpoint of another run (here: another seed) is refused, not silently used.
    let e = run(&cfg, 2).unwrap_err().to_string();
    assert!(e.contains("a checkpoint of another meta-training run"), "{e}");

    // UNIGRAM: textual and deep visual prompts meta-learned together, each with its regulator.
    let uni = MetaTrainConfig {
        vision: Some(PromptShape { n_ctx: 2, depth: 2 }),
        steps: 3,
        ..cfg.clone()
    };
    let art = train(&uni, 1, None).unwrap();
    assert_eq!(
        art.theta0.keys().collect::<Vec<_>>(),
        ["text.0", "vision.0", "vision.1"]
    );
    let vision_w = clip.model.vision_model.class_embedding.dims()[0];
    assert_eq!(art.theta0["vision.1"].0, vec![2, vision_w]);
    assert_eq!(art.vision_regulator.as_ref().unwrap().width, vision_w);
    assert!(art.regulator::<B>(false, &dev).unwrap().is_some());
    assert!(art
        .trace
        .iter()
        .all(|t| t.text_coefficient.is_some() && t.vision_coefficient.is_some()));

    // Several tasks per outer step: one update on their mean query loss, every episode recorded.
    let batched = train(
        &MetaTrainConfig {
            steps: 2,
            tasks_per_step: 3,
            ..cfg.clone()
        },
        1,
        None,
    )
    .unwrap();
    assert_eq!((batched.trace.len(), batched.episodes.len()), (2, 6));
    // Two inner steps, and no task conditioning, are other runs (same episodes, other θ₀ and φ).
    for variant in [
        MetaTrainConfig {
            inner_steps: 2,
            ..cfg.clone()
        },
        MetaTrainConfig {
            task_embedding: TaskEmbedding::None,
            ..cfg.clone()
        },
    ] {
        let other = train(&variant, 1, None).unwrap();
        assert_eq!(other.episodes, art_text.episodes);
        assert_ne!(other.theta0, art_text.theta0, "{variant:?}");
        assert!(other.trace.iter().all(|t| t.query_loss.is_finite()));
    }
    // The first three episodes are the unbatched run's first three (one seeded stream).
    assert_eq!(batched.episodes[..3], art_text.episodes[..3]);
    assert_ne!(batched.theta0, art_text.theta0);
}

#[test]
fn the_embedded_worlds_corpus_is_seeded_and_captioned() {
    use gram_bench::gram::Corpus;
    let a = Corpus::world(40, 16, 3);
    assert_eq!(a.len(), 40);
    assert_eq!(a.digest().unwrap(), Corpus::world(40, 16, 3).digest().unwrap());
    assert_ne!(a.digest().unwrap(), Corpus::world(40, 16, 4).digest().unwrap());
    assert!((0..a.len()).all(|i| a.image(i).unwrap().dimensions() == (16, 16)));
    assert!(a.captions.iter().all(|c| !c.is_empty()));
}
