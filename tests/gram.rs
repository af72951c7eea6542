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
