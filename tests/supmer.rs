//! GRAM's reconstruction against the code it is declared after: SUPMER's own `GradientTransform`
//! and `Meta.forward` (github.com/beepkh/SUPMER at adaddb3), run by tests/reference/supmer_meta.py
//! on small random tensors and the tiny fixture CLIP (tests/fixtures/supmer_meta.*).
//!
//! Equal within 1e-5: ψ_φ's forward, its mixing coefficient and every gradient through it; one
//! first-order meta step (support gradient, regulated inner step, query loss, clipped Adam updates
//! of θ₀ and φ). The deliberate differences, each tested here (docs/gram-supmer.md lists them all):
//! - gram-bench has no regularizer of the mixing coefficient: with SUPMER's, θ₀ and the low-rank
//!   layers update as without it and only the coefficient net differs;
//! - with several tasks per step, SUPMER's θ₀ keeps only the last task's query gradient (its
//!   `optimizer_model.zero_grad()` runs after every task's support pass) while φ's accumulate over
//!   all; gram-bench averages both over the tasks. φ agrees; SUPMER's θ₀ is gram-bench's step on
//!   the last task alone.
mod common;

use burn::backend::Autodiff;
use burn::module::Param;
use burn::tensor::{Int, Tensor, TensorData};
use common::{fixture, max_diff, values, B};
use gram_bench::clip::weights::SafetensorsStore;
use gram_bench::clip::{load_clip, LoadOptions};
use gram_bench::gram::regulator::LowRank;
use gram_bench::gram::{ClassText, EpisodeSet, MetaLearner, MetaRegulators, Regulator};
use gram_bench::methods::text_prompts::ClassPrompts;

type AB = Autodiff<B>;
type Dev = burn::tensor::Device<AB>;

struct Fixture {
    store: SafetensorsStore,
    meta: serde_json::Value,
}

impl Fixture {
    fn load() -> Self {
        let meta = serde_json::from_str(&std::fs::read_to_string(fixture("supmer_meta.json")).unwrap()).unwrap();
        let store = SafetensorsStore::open(&[fixture("supmer_meta.safetensors")]).unwrap();
        Self { store, meta }
    }
    fn get(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        self.store.read(name).unwrap_or_else(|e| panic!("{name}: {e}"))
    }
    fn has(&self, name: &str) -> bool {
        self.store.contains(name)
    }
    fn tensor<const D: usize>(&self, name: &str, dev: &Dev) -> Tensor<AB, D> {
        let (shape, data) = self.get(name);
        Tensor::from_data(TensorData::new(data, shape), dev)
    }
    /// A 2-d tensor transposed (SUPMER stores `u`, `v` and `nn.Linear` weights as out × in).
    fn transposed(&self, name: &str, dev: &Dev) -> Tensor<AB, 2> {
        self.tensor::<2>(name, dev).transpose()
    }
    /// SUPMER's `GradientTransform` state under `prefix`, as gram-bench's regulator.
    fn regulator(&self, prefix: &str, dev: &Dev) -> Regulator<AB> {
        let p2 = |t: Tensor<AB, 2>| Param::from_tensor(t.require_grad());
        let p1 = |t: Tensor<AB, 1>| Param::from_tensor(t.require_grad());
        let layers = (0..)
            .take_while(|i| self.has(&format!("{prefix}.layers.{i}.u")))
            .map(|i| LowRank {
                vt: p2(self.transposed(&format!("{prefix}.layers.{i}.v"), dev)),
                ut: p2(self.transposed(&format!("{prefix}.layers.{i}.u"), dev)),
                b: p1(self.tensor(&format!("{prefix}.layers.{i}.bias"), dev)),
            })
            .collect();
        Regulator {
            layers,
            w1: p2(self.transposed(&format!("{prefix}.linear_1.weight"), dev)),
            c1: p1(self.tensor(&format!("{prefix}.linear_1.bias"), dev)),
            w2: p2(self.transposed(&format!("{prefix}.linear_2.weight"), dev)),
            c2: p1(self.tensor(&format!("{prefix}.linear_2.bias"), dev)),
        }
    }
}

/// A tensor by name: its shape and values.
type Named = (String, (Vec<usize>, Vec<f32>));

/// gram-bench's regulator tensors in SUPMER's layout and names, for comparison.
fn supmer_layout(reg: &Regulator<AB>) -> Vec<Named> {
    let t = |x: Tensor<AB, 2>| values(x.transpose());
    let mut out = Vec::new();
    for (i, l) in reg.layers.iter().enumerate() {
        out.push((format!("layers.{i}.u"), t(l.ut.val())));
        out.push((format!("layers.{i}.v"), t(l.vt.val())));
        out.push((format!("layers.{i}.bias"), values(l.b.val())));
    }
    out.push(("linear_1.weight".into(), t(reg.w1.val())));
    out.push(("linear_1.bias".into(), values(reg.c1.val())));
    out.push(("linear_2.weight".into(), t(reg.w2.val())));
    out.push(("linear_2.bias".into(), values(reg.c2.val())));
    out
}

const TOL: f32 = 1e-5;

#[test]
fn the_regulator_forward_and_its_gradients_equal_supmers_gradient_transform() {
    let dev = Default::default();
    let fx = Fixture::load();
    let reg = fx.regulator("psi.init", &dev);
    assert_eq!(reg.layers.len(), 2, "the fixture has one hidden low-rank layer");
    let g = fx.tensor::<2>("psi.grad_in", &dev).require_grad();
    let (out, c) = reg.forward(g.clone(), fx.tensor::<1>("psi.embed", &dev));
    let d = max_diff("ψ(g)", values(out.clone()), fx.get("psi.out"));
    assert!(d <= TOL, "ψ(g) differs from SUPMER's by {d}");
    let d = max_diff("c", values(c), fx.get("psi.coeff"));
    assert!(d <= TOL, "the mixing coefficient differs from SUPMER's by {d}");

    let grads = (out * fx.tensor::<2>("psi.readout", &dev)).sum().backward();
    let grad = |p: Tensor<AB, 2>| values(p.grad(&grads).unwrap().transpose());
    let grad1 = |p: Tensor<AB, 1>| values(p.grad(&grads).unwrap());
    let d = max_diff("∂/∂g", values(g.grad(&grads).unwrap()), fx.get("psi.d_grad_in"));
    assert!(d <= TOL, "the gradient with respect to the raw gradient differs by {d}");
    let mut checked = 0;
    for (i, l) in reg.layers.iter().enumerate() {
        for (name, got) in [
            ("u", grad(l.ut.val())),
            ("v", grad(l.vt.val())),
            ("bias", grad1(l.b.val())),
        ] {
            let want = fx.get(&format!("psi.d.layers.{i}.{name}"));
            let d = max_diff(name, got, want);
            assert!(d <= TOL, "∂/∂layers.{i}.{name} differs by {d}");
            checked += 1;
        }
    }
    for (name, got) in [
        ("linear_1.weight", grad(reg.w1.val())),
        ("linear_1.bias", grad1(reg.c1.val())),
        ("linear_2.weight", grad(reg.w2.val())),
        ("linear_2.bias", grad1(reg.c2.val())),
    ] {
        let d = max_diff(name, got, fx.get(&format!("psi.d.{name}")));
        assert!(d <= TOL, "∂/∂{name} differs by {d}");
        checked += 1;
    }
    assert_eq!(checked, 10);
}

/// The fixture's meta-step inputs on the tiny CLIP.
struct StepInputs {
    clip: gram_bench::clip::Clip<AB>,
    prompts: ClassPrompts<AB>,
    features: Tensor<AB, 2>,
    labels: Vec<i64>,
}

impl StepInputs {
    fn load(fx: &Fixture, dev: &Dev) -> Self {
        let loaded = load_clip::<AB>(&fixture("tiny-clip-hf"), &LoadOptions::default(), dev).unwrap();
        let names: Vec<String> = fx.meta["step"]["classnames"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        let prompts = ClassPrompts::new(&loaded.model, &loaded.tokenizer, "X X X X", 4, &names).unwrap();
        let labels = fx.meta["step"]["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        Self {
            clip: loaded.model,
            prompts,
            features: fx.tensor::<2>("step.features", dev),
            labels,
        }
    }

    fn set(&self, from: usize, n: usize) -> EpisodeSet<'_, AB> {
        let dev = self.features.device();
        EpisodeSet {
            features: self.features.clone().narrow(0, from, n),
            pixels: None,
            labels: Tensor::<AB, 1, Int>::from_data(TensorData::new(self.labels[from..from + n].to_vec(), [n]), &dev),
            classes: ClassText::Prompts(&self.prompts),
        }
    }

    /// (support, query) of the fixture's task `t`.
    fn task(&self, fx: &Fixture, t: usize) -> (EpisodeSet<'_, AB>, EpisodeSet<'_, AB>) {
        let spec = &fx.meta["step"]["tasks"][t];
        let at = |i: usize| spec[i].as_u64().unwrap() as usize;
        (self.set(at(0), at(1)), self.set(at(0) + at(1), at(2)))
    }
}

/// gram-bench's meta step from the fixture's θ₀ and φ on the given tasks.
fn gram_step(
    fx: &Fixture,
    inp: &StepInputs,
    tasks: &[usize],
    dev: &Dev,
) -> (MetaLearner<AB>, gram_bench::gram::MetaStep) {
    let step = &fx.meta["step"];
    let mut learner = MetaLearner::new(
        vec![fx.tensor::<2>("step.theta0", dev)],
        vec![],
        MetaRegulators {
            text: Some(fx.regulator("step.psi0", dev)),
            vision: None,
        },
        step["inner_lr"].as_f64().unwrap(),
        step["clip_norm"].as_f64().unwrap(),
        0.0,
        // torch.optim.Adam's ε, which SUPMER's optimizers keep.
        1e-8,
    );
    let sets: Vec<_> = tasks.iter().map(|&t| inp.task(fx, t)).collect();
    let pairs: Vec<_> = sets.iter().map(|(s, q)| (s, q)).collect();
    let measured = learner.step_tasks(&inp.clip, &pairs, step["outer_lr"].as_f64().unwrap());
    (learner, measured)
}

/// The step's mean support and query losses equal SUPMER's within `TOL`.
fn assert_losses(measured: &gram_bench::gram::MetaStep, want: &serde_json::Value) {
    for (key, got) in [
        ("support_loss", measured.support_loss),
        ("query_loss", measured.query_loss),
    ] {
        let d = (got as f64 - want[key].as_f64().unwrap()).abs();
        assert!(d <= TOL as f64, "{key}: {got} vs SUPMER's {}", want[key]);
    }
}

fn compare_regulator(what: &str, got: &Regulator<AB>, fx: &Fixture, prefix: &str) -> Vec<(String, f32)> {
    supmer_layout(got)
        .into_iter()
        .map(|(name, t)| {
            let d = max_diff(&name, t, fx.get(&format!("{prefix}.{name}")));
            (format!("{what} {name}"), d)
        })
        .collect()
}

#[test]
fn one_meta_step_equals_supmers_meta_forward_without_its_coefficient_regularizer() {
    let dev = Default::default();
    let fx = Fixture::load();
    let inp = StepInputs::load(&fx, &dev);
    let (learner, measured) = gram_step(&fx, &inp, &[0], &dev);
    assert_losses(&measured, &fx.meta["step"]["one_noreg"]);
    let d = max_diff(
        "θ₀",
        values(learner.prompt.text[0].val()),
        fx.get("step.one_noreg.theta"),
    );
    assert!(d <= TOL, "θ₀ after the step differs from SUPMER's by {d}");
    let before = fx.get("step.theta0");
    assert!(
        max_diff("θ₀ moved", fx.get("step.one_noreg.theta"), before) > 1e-3,
        "the step must move θ₀"
    );
    let reg = learner.regulators.text.as_ref().unwrap();
    for (name, d) in compare_regulator("φ", reg, &fx, "step.one_noreg.psi") {
        assert!(d <= TOL, "{name} after the step differs from SUPMER's by {d}");
    }

    // SUPMER's own step, with its coefficient regularizer: θ₀ and the low-rank layers update as
    // gram-bench's, the coefficient net does not.
    let d = max_diff(
        "θ₀",
        values(learner.prompt.text[0].val()),
        fx.get("step.one_supmer.theta"),
    );
    assert!(d <= TOL, "the regularizer must not touch θ₀ ({d})");
    let diffs = compare_regulator("φ", reg, &fx, "step.one_supmer.psi");
    for (name, d) in &diffs {
        if name.contains("linear_") {
            continue;
        }
        assert!(
            *d <= TOL,
            "{name}: the regularizer must not touch the low-rank layers ({d})"
        );
    }
    let coef = diffs
        .iter()
        .filter(|(n, _)| n.contains("linear_"))
        .map(|(_, d)| *d)
        .fold(0.0, f32::max);
    assert!(
        coef > TOL,
        "SUPMER's coefficient regularizer is a difference this test must see ({coef})"
    );
}

#[test]
fn with_two_tasks_phi_agrees_and_supmers_theta0_keeps_only_the_last_tasks_gradient() {
    let dev = Default::default();
    let fx = Fixture::load();
    let inp = StepInputs::load(&fx, &dev);
    let (both, measured) = gram_step(&fx, &inp, &[0, 1], &dev);
    assert_losses(&measured, &fx.meta["step"]["two_noreg"]);
    let reg = both.regulators.text.as_ref().unwrap();
    for (name, d) in compare_regulator("φ", reg, &fx, "step.two_noreg.psi") {
        assert!(d <= TOL, "{name} after a two-task step differs from SUPMER's by {d}");
    }
    let theta = fx.get("step.two_noreg.theta");
    let d_mean = max_diff("θ₀", values(both.prompt.text[0].val()), theta.clone());
    assert!(
        d_mean > 1e-4,
        "gram-bench's θ₀ averages both tasks' gradients ({d_mean})"
    );
    let (last, _) = gram_step(&fx, &inp, &[1], &dev);
    let d_last = max_diff("θ₀", values(last.prompt.text[0].val()), theta);
    assert!(d_last <= TOL, "SUPMER's θ₀ is the last task's step ({d_last})");
}
