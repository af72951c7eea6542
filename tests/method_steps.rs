//! Every prompt-tuning method against its PyTorch reference (tests/reference/method_steps.py) on the
//! tiny HF fixture and a fixed batch: from the same initial parameters, the logits before training,
//! the training loss (within 1e-5), and the parameters after one SGD step (momentum 0.9, weight decay
//! 5e-4; within 1e-6) agree. And for every method: only its own parameters change (the backbone stays
//! bit-identical). The harness (configs, fixture, batch, learner) is shared with tests/upstream_steps.rs
//! (tests/common/method_harness.rs).
mod common;

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::tensor::{Tensor, TensorData};
use common::method_harness::{assert_artifact_close, batch, built, configs, learner, Fixture};
use common::{fixture, max_diff, values, B};
use gram_bench::clip::{load_clip, LoadOptions};
use gram_bench::methods::{ClassSet, PromptArtifact};
use gram_bench::run::CellMethod;
use gram_bench::suite::methods::MethodConfig;

type AB = Autodiff<B>;

#[test]
fn every_method_matches_its_reference_logits_loss_and_one_sgd_step() {
    // One step moves the parameters by 1e-3 to 6e-2 here; agreement is asked at 1e-6.
    every_method_matches::<AB>(&Default::default(), 1e-5, 1e-6);
}

/// The same on the wgpu backend (CI: Mesa's lavapipe), at the CPU's tolerances: measured there,
/// logits within 2.5e-6 and parameters after the step within 7e-8 of the reference
/// (docs/performance.md, "GPU backends in CI (wgpu on lavapipe)").
#[cfg(feature = "wgpu")]
#[test]
fn every_method_matches_its_reference_on_wgpu() {
    every_method_matches::<burn::backend::Autodiff<burn::backend::Wgpu>>(&Default::default(), 1e-5, 1e-6);
}

fn every_method_matches<AB: burn::tensor::backend::AutodiffBackend>(dev: &AB::Device, logit_tol: f32, step_tol: f32) {
    let dev = dev.clone();
    let clip = load_clip::<AB>(&fixture("tiny-clip-hf"), &LoadOptions::default(), &dev).unwrap();
    let eval_clip = clip.model.valid();
    let f = Fixture::load("method_steps");
    let lr = f.meta["lr"].as_f64().unwrap();
    let template = f.meta["template"].as_str().unwrap().to_string();
    for (name, cfg) in configs(&f.meta, lr) {
        let mut m = learner(&cfg, &clip, &f.names, &template, 1).unwrap();
        m.load(&f.artifact(&format!("{name}.init"))).unwrap();
        let scorer = m
            .scorer(
                &eval_clip,
                &clip.tokenizer,
                &ClassSet {
                    dataset: "fixture",
                    names: &f.names,
                    template: &template,
                },
            )
            .unwrap();
        let b = batch::<AB>(&f, &[0], &dev);
        let logits = scorer.logits(&eval_clip, b.pixels.inner());
        let d = max_diff(name, values(logits), f.get(&format!("{name}.logits")));
        eprintln!("{name}: logits {d:e}");
        assert!(d <= logit_tol, "{name}: logits differ from the reference by {d}");

        let labels = if name == "prograd" {
            f.labels(&["prograd", "labels"])
        } else {
            f.labels(&["labels"])
        };
        let loss = m.step(&clip.model, batch::<AB>(&f, &labels, &dev), lr).unwrap();
        let want = f.get(&format!("{name}.loss")).1[0];
        assert!(
            (loss - want).abs() <= logit_tol,
            "{name}: loss {loss}, reference {want}"
        );
        assert_artifact_close(name, &m.artifact(), &f.artifact(&format!("{name}.after")), step_tol);
    }
}

#[test]
fn prograd_leaves_agreeing_gradients_unprojected() {
    let dev = Default::default();
    let clip = load_clip::<AB>(&fixture("tiny-clip-hf"), &LoadOptions::default(), &dev).unwrap();
    let f = Fixture::load("method_steps");
    let lr = f.meta["lr"].as_f64().unwrap();
    let (_, cfg) = configs(&f.meta, lr).into_iter().find(|(n, _)| *n == "prograd").unwrap();
    let mut m = learner(&cfg, &clip, &f.names, f.meta["template"].as_str().unwrap(), 1).unwrap();
    m.load(&f.artifact("prograd.init")).unwrap();
    assert_eq!(f.meta["prograd_agree"]["conflict"], false);
    let labels = f.labels(&["prograd_agree", "labels"]);
    let loss = m.step(&clip.model, batch(&f, &labels, &dev), lr).unwrap();
    assert!((loss - f.get("prograd_agree.loss").1[0]).abs() <= 1e-4);
    assert_artifact_close(
        "prograd (agree)",
        &m.artifact(),
        &f.artifact("prograd_agree.after"),
        1e-4,
    );
}

#[test]
fn training_decreases_the_loss_and_moves_only_the_methods_parameters() {
    let dev = Default::default();
    let clip = load_clip::<AB>(&fixture("tiny-clip-hf"), &LoadOptions::default(), &dev).unwrap();
    let before = clip.model.to_hf_tensors();
    let f = Fixture::load("method_steps");
    for (name, cfg) in configs(&f.meta, 0.05) {
        let mut m = learner(&cfg, &clip, &f.names, "a photo of a {}.", 3).unwrap();
        let p0 = m.artifact();
        let losses: Vec<f32> = (0..6)
            .map(|_| {
                m.step(&clip.model, batch(&f, &f.labels(&["labels"]), &dev), 0.05)
                    .unwrap()
            })
            .collect();
        // Six steps on one batch: the loss must go down.
        assert!(losses[5] < losses[0], "{name}: loss did not decrease: {losses:?}");
        let p1 = m.artifact();
        assert_eq!(p0.keys().collect::<Vec<_>>(), p1.keys().collect::<Vec<_>>(), "{name}");
        assert!(p0.iter().any(|(k, v)| v.1 != p1[k].1), "{name}: no parameter moved");
        assert!(
            clip.model.to_hf_tensors() == before,
            "{name}: a backbone tensor changed"
        );
        // The artifact round-trips into a fresh instance.
        let mut m2 = learner(&cfg, &clip, &f.names, "a photo of a {}.", 4).unwrap();
        m2.load(&p1).unwrap();
        assert_eq!(m2.artifact(), p1, "{name}");
    }
}

/// GRAM on a host with φ = identity and θ₀ = the host's own init trains exactly like the host
/// alone; a learned-looking (non-identity) ψ_φ changes the trajectory.
#[test]
fn gram_with_an_identity_regulator_and_the_hosts_init_is_the_host() {
    use gram_bench::gram::{theta0_init, RegulatedGradients, RegulatorConfig, RegulatorInit};
    let dev = Default::default();
    let clip = load_clip::<AB>(&fixture("tiny-clip-hf"), &LoadOptions::default(), &dev).unwrap();
    let f = Fixture::load("method_steps");
    let labels = f.labels(&["labels"]);
    let rc = RegulatorConfig {
        rank: 4,
        hidden_layers: 0,
        coef_hidden: 6,
        init: RegulatorInit::Xavier,
    };
    for (name, cfg) in configs(&f.meta, 0.05) {
        let build = || learner(&cfg, &clip, &f.names, "a photo of a {}.", 5).unwrap();
        let mut alone = build();
        let host = build();
        let theta0: PromptArtifact = host
            .prompt_params()
            .iter()
            .map(|p| (p.role.theta0_name(), host.artifact()[&p.name].clone()))
            .collect();
        let width = |text: bool| {
            host.prompt_params()
                .iter()
                .find(|p| p.role.is_text() == text)
                .map(|p| *p.shape.last().unwrap())
        };
        let (text_w, vision_w) = (width(true), width(false));
        let regulate = |identity: bool| {
            let make = |w: usize, seed: u64| {
                let r = rc.init::<B>(w, 3, seed, &dev);
                if identity {
                    r.into_identity()
                } else {
                    r
                }
            };
            RegulatedGradients::<AB> {
                text: text_w.map(|w| make(w, 11)),
                vision: vision_w.map(|w| make(w, 12)),
                task: Tensor::<B, 1>::from_data(TensorData::new(vec![0.3f32, -1.0, 0.5], [3]), &dev),
            }
        };
        let with_gram = |mut m: Box<dyn gram_bench::run::Learner<AB>>, identity: bool| {
            m.load(&theta0_init(&m.prompt_params(), &m.artifact(), &theta0).unwrap())
                .unwrap();
            m.regulate(regulate(identity)).unwrap();
            m
        };
        let mut with = with_gram(host, true);
        let mut other = with_gram(build(), false);
        for _ in 0..3 {
            let a = alone.step(&clip.model, batch(&f, &labels, &dev), 0.05).unwrap();
            let b = with.step(&clip.model, batch(&f, &labels, &dev), 0.05).unwrap();
            other.step(&clip.model, batch(&f, &labels, &dev), 0.05).unwrap();
            assert_eq!(a, b, "{name}: the loss differs");
        }
        assert_eq!(alone.artifact(), with.artifact(), "{name}: parameters differ");
        let (a, o) = (alone.artifact(), other.artifact());
        assert!(
            other.prompt_params().iter().any(|p| a[&p.name] != o[&p.name]),
            "{name}: a non-identity regulator changed nothing"
        );
    }
}

/// `MethodSpec::ENCODERS` is the one answer to whether a method leaves the image encoder frozen
/// (the feature cache and the cost model read it); every method's scorer must agree with it.
#[test]
fn every_scorer_reads_frozen_features_exactly_when_its_spec_says_the_image_encoder_is_frozen() {
    use gram_bench::methods::{LinearProbeConfig, TemplateSet, ZeroShotConfig};
    let dev = Default::default();
    let clip = load_clip::<AB>(&fixture("tiny-clip-hf"), &LoadOptions::default(), &dev).unwrap();
    let eval_clip = clip.model.valid();
    let f = Fixture::load("method_steps");
    let mut all = configs(&f.meta, 0.05);
    all.push((
        "zeroshot",
        MethodConfig::Zeroshot(ZeroShotConfig {
            templates: TemplateSet::Ensemble,
        }),
    ));
    all.push((
        "linear-probe",
        MethodConfig::LinearProbe(LinearProbeConfig {
            c_grid: vec![1.0],
            c_search_steps: 0,
            max_iter: 10,
            tol: 1e-4,
            normalize_features: true,
        }),
    ));
    let classes = ClassSet {
        dataset: "fixture",
        names: &f.names,
        template: "a photo of a {}.",
    };
    for (name, cfg) in all {
        let mut m = built(&cfg, &clip, &f.names, "a photo of a {}.", 1).unwrap();
        if let CellMethod::Features(_) = m {
            let (dim, k) = (clip.model.text_projection.dims()[1], f.names.len());
            let probe: PromptArtifact = [
                ("weight".to_string(), (vec![dim, k], vec![0.5; dim * k])),
                ("bias".to_string(), (vec![k], vec![0.0; k])),
            ]
            .into();
            m.load(&probe).unwrap();
        }
        let scorer = m.scorer(&eval_clip, &clip.tokenizer, &classes, &dev).unwrap();
        let frozen = cfg.encoders().unwrap().frozen_image();
        assert_eq!(scorer.reads_frozen_features(), frozen, "{name}");
        // A scorer of frozen features gives the same logits from features as from pixels.
        let pixels = batch::<AB>(&f, &[0], &dev).pixels.inner();
        let from_pixels = values(scorer.logits(&eval_clip, pixels.clone()));
        match scorer.logits_from_features(&eval_clip, eval_clip.encode_image(pixels, &Default::default())) {
            Some(l) => assert_eq!(values(l), from_pixels, "{name}"),
            None => assert!(!frozen, "{name}"),
        }
    }
}
