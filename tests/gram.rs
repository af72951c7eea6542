//! GRAM's meta-training step on the tiny fixture CLIP: one first-order step moves both the prompt
//! initialisation θ₀ and the regulator φ, and repeated steps on one task lower its query loss.
mod common;

use burn::backend::Autodiff;
use burn::module::Module;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use common::{fixture, B};
use gram_bench::clip::{load_clip, LoadOptions};
use gram_bench::gram::{EpisodeSet, MetaLearner, RegulatorConfig, RegulatorInit};
use gram_bench::methods::coop::ClassPrompts;

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

#[test]
fn a_meta_step_moves_the_initialisation_and_the_regulator_and_lowers_the_query_loss() {
    let dev = Default::default();
    let clip = load_clip::<AB>(&fixture("tiny-clip-hf"), &LoadOptions::default(), &dev).unwrap();
    let m = clip.model;
    let names: Vec<String> = ["red circle", "blue square", "green star"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let prompts = ClassPrompts::new(&m, &clip.tokenizer, "X X X X", 4, &names).unwrap();
    let set = |seed: u64| {
        let pixels = Tensor::<AB, 4>::random([6, 3, 32, 32], Distribution::Normal(seed as f64 * 0.1, 1.0), &dev);
        EpisodeSet {
            features: m.encode_image(pixels, &Default::default()).detach(),
            labels: Tensor::<AB, 1, Int>::from_data(TensorData::new(vec![0i64, 1, 2, 0, 1, 2], [6]), &dev),
            prompts: &prompts,
        }
    };
    let (support, query) = (set(1), set(2));
    let ctx = Tensor::<AB, 3>::random([1, 4, 64], Distribution::Normal(0.0, 0.02), &dev);
    let reg = RegulatorConfig {
        rank: 4,
        hidden_layers: 0,
        coef_hidden: 8,
        init: RegulatorInit::Xavier,
    }
    .init::<AB>(64, 32, 3, &dev);
    let mut meta = MetaLearner::new(ctx, reg, 1.0, 1.0, 0.0);
    let (p0, r0) = (flat(&meta.prompt), flat(&meta.regulator));
    let first = meta.step(&m, &support, &query, 0.01);
    assert!(first.support_loss.is_finite() && first.query_loss.is_finite());
    assert!(first.coefficient > 0.0 && first.coefficient < 1.0);
    assert_ne!(flat(&meta.prompt), p0, "θ₀ did not move");
    assert_ne!(flat(&meta.regulator), r0, "φ did not move");
    let mut last = first.clone();
    for _ in 0..15 {
        last = meta.step(&m, &support, &query, 0.01);
    }
    assert!(
        last.query_loss < first.query_loss,
        "query loss {} → {}",
        first.query_loss,
        last.query_loss
    );
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
    use gram_bench::gram::{meta_train, ClusterConfig, Corpus, EpisodeConfig, MetaTrainConfig, QueryRule};
    let dir = tempfile::tempdir().unwrap();
    let path = tsv_corpus(dir.path());
    let corpus = Corpus::from_csv(&path, "filepath", "title", '\t').unwrap();
    assert_eq!(corpus.captions.len(), 24);
    assert_eq!(
        corpus.digest(),
        Corpus::from_csv(&path, "filepath", "title", '\t').unwrap().digest()
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
        n_ctx: 4,
        init_std: 0.02,
        inner_lr: 1.0,
        outer_lr: 0.01,
        weight_decay: 0.0,
        clip_norm: 1.0,
        steps: 4,
    };
    let mut seen = 0;
    let art = meta_train(
        &clip.model,
        &clip.tokenizer,
        &clip.preprocess,
        &corpus,
        &cfg,
        1,
        &mut |_, l| {
            assert!(l.is_finite());
            seen += 1;
        },
    )
    .unwrap();
    assert_eq!(seen, 4);
    assert_eq!(art.trace.len(), 4);
    assert_eq!(art.theta0["ctx"].0, vec![1, 4, 64]);
    assert_eq!(art.corpus_digest, corpus.digest());
    // φ round-trips through its tensors.
    let r =
        gram_bench::gram::train::regulator_from::<B>(&cfg.regulator, 64, art.task_dim, &art.regulator, &dev).unwrap();
    assert_eq!(gram_bench::gram::train::regulator_tensors(&r), art.regulator);
    // Seeded: the same run gives the same artifact.
    let again = meta_train(
        &clip.model,
        &clip.tokenizer,
        &clip.preprocess,
        &corpus,
        &cfg,
        1,
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(again, art);
}

#[test]
fn the_embedded_worlds_corpus_is_seeded_and_captioned() {
    use gram_bench::gram::Corpus;
    let a = Corpus::world(40, 16, 3);
    assert_eq!((a.images.len(), a.captions.len()), (40, 40));
    assert_eq!(a.digest(), Corpus::world(40, 16, 3).digest());
    assert_ne!(a.digest(), Corpus::world(40, 16, 4).digest());
    assert!(a.images.iter().all(|i| i.dimensions() == (16, 16)));
    assert!(a.captions.iter().all(|c| !c.is_empty()));
}
