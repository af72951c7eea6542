//! The harness that checks a method's step against a fixture of reference steps, shared by
//! tests/method_steps.rs (the project's PyTorch re-implementations, tests/reference/method_steps.py)
//! and tests/upstream_steps.rs (the methods' own repositories, tests/reference/upstream_steps.py):
//! each method configured as the reference scripts configure it, the fixture (safetensors + JSON),
//! its batch, and a learner built on the tiny CLIP.
use burn::tensor::{Int, Tensor, TensorData};
use gram_bench::clip::weights::SafetensorsStore;
use gram_bench::methods::{
    Batch, ClassTokenPosition, CoCoOpConfig, CoOpConfig, ContextSource, Epochs, IvlpConfig, KgCoOpConfig, MapleConfig,
    ProGradConfig, PromptArtifact, PromptSrcConfig, SgdConfig, VptConfig,
};
use gram_bench::run::CellMethod;
use gram_bench::suite::methods::MethodConfig;

use super::{fixture, max_diff};

pub fn sgd(lr: f64) -> SgdConfig {
    SgdConfig {
        lr,
        momentum: 0.9,
        weight_decay: 5e-4,
        warmup_epochs: 0,
        warmup_lr: 0.0,
    }
}

pub fn coop(lr: f64) -> CoOpConfig {
    CoOpConfig {
        n_ctx: 4,
        ctx_init: String::new(),
        init_std: 0.02,
        csc: false,
        class_token_position: ClassTokenPosition::End,
        batch_size: 4,
        epochs: Epochs::Fixed(1),
        optim: sgd(lr),
    }
}

/// The methods as the reference script configures them.
pub fn configs(meta: &serde_json::Value, lr: f64) -> Vec<(&'static str, MethodConfig)> {
    let c = coop(lr);
    vec![
        ("coop", MethodConfig::Coop(c.clone())),
        (
            "kgcoop",
            MethodConfig::Kgcoop(KgCoOpConfig {
                n_ctx: c.n_ctx,
                ctx_init: c.ctx_init.clone(),
                init_std: c.init_std,
                csc: c.csc,
                class_token_position: c.class_token_position,
                batch_size: c.batch_size,
                epochs: c.epochs.clone(),
                optim: c.optim.clone(),
                prior_templates: Default::default(),
                weight: meta["kgcoop"]["weight"].as_f64().unwrap(),
            }),
        ),
        (
            "prograd",
            MethodConfig::Prograd(ProGradConfig {
                n_ctx: c.n_ctx,
                ctx_init: c.ctx_init.clone(),
                init_std: c.init_std,
                csc: c.csc,
                class_token_position: c.class_token_position,
                batch_size: c.batch_size,
                epochs: c.epochs.clone(),
                optim: c.optim.clone(),
                prior_templates: Default::default(),
                lambda: meta["prograd"]["lambda"].as_f64().unwrap(),
                temperature: meta["prograd"]["temperature"].as_f64().unwrap(),
                ctx_source: ContextSource::CtxInit,
                transfer_template: None,
            }),
        ),
        (
            "cocoop",
            MethodConfig::Cocoop(CoCoOpConfig {
                n_ctx: 4,
                ctx_init: String::new(),
                init_std: 0.02,
                meta_net_reduction: meta["cocoop"]["meta_net_reduction"].as_u64().unwrap() as usize,
                batch_size: 4,
                epochs: Epochs::Fixed(1),
                optim: sgd(lr),
            }),
        ),
        (
            "vpt",
            MethodConfig::Vpt(VptConfig {
                n_ctx: meta["vpt"]["n_ctx"].as_u64().unwrap() as usize,
                depth: meta["vpt"]["depth"].as_u64().unwrap() as usize,
                init_std: 0.02,
                text_template: "a photo of a {}.".into(),
                f16_prompt_tokens: false,
                batch_size: 4,
                epochs: Epochs::Fixed(1),
                optim: sgd(lr),
            }),
        ),
        (
            "maple",
            MethodConfig::Maple(MapleConfig {
                n_ctx: meta["maple"]["n_ctx"].as_u64().unwrap() as usize,
                ctx_init: meta["maple"]["ctx_init"].as_str().unwrap().into(),
                depth: meta["maple"]["depth"].as_u64().unwrap() as usize,
                init_std: 0.02,
                batch_size: 4,
                epochs: Epochs::Fixed(1),
                optim: sgd(lr),
            }),
        ),
        (
            "ivlp",
            MethodConfig::Ivlp(IvlpConfig {
                n_ctx_text: meta["ivlp"]["n_ctx_text"].as_u64().unwrap() as usize,
                ctx_init: meta["ivlp"]["ctx_init"].as_str().unwrap().into(),
                text_depth: meta["ivlp"]["text_depth"].as_u64().unwrap() as usize,
                n_ctx_vision: meta["ivlp"]["n_ctx_vision"].as_u64().unwrap() as usize,
                vision_depth: meta["ivlp"]["vision_depth"].as_u64().unwrap() as usize,
                init_std: 0.02,
                batch_size: 4,
                epochs: Epochs::Fixed(1),
                optim: sgd(lr),
            }),
        ),
        (
            "promptsrc",
            MethodConfig::Promptsrc(PromptSrcConfig {
                n_ctx_text: meta["ivlp"]["n_ctx_text"].as_u64().unwrap() as usize,
                ctx_init: meta["ivlp"]["ctx_init"].as_str().unwrap().into(),
                text_depth: meta["ivlp"]["text_depth"].as_u64().unwrap() as usize,
                n_ctx_vision: meta["ivlp"]["n_ctx_vision"].as_u64().unwrap() as usize,
                vision_depth: meta["ivlp"]["vision_depth"].as_u64().unwrap() as usize,
                init_std: 0.02,
                text_loss_weight: meta["promptsrc"]["text_loss_weight"].as_f64().unwrap(),
                image_loss_weight: meta["promptsrc"]["image_loss_weight"].as_f64().unwrap(),
                text_templates: meta["promptsrc"]["templates"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_str().unwrap().to_string())
                    .collect(),
                gpa_mean: gram_bench::methods::PerCell::Fixed(15.0),
                gpa_std: gram_bench::methods::PerCell::Fixed(1.0),
                gpa_whole_model: false,
                batch_size: 4,
                epochs: Epochs::Fixed(1),
                optim: sgd(lr),
            }),
        ),
    ]
}

pub struct Fixture {
    pub refs: SafetensorsStore,
    pub meta: serde_json::Value,
    pub names: Vec<String>,
}

impl Fixture {
    /// `tests/fixtures/{stem}.json` and `.safetensors`.
    pub fn load(stem: &str) -> Self {
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(fixture(&format!("{stem}.json"))).unwrap()).unwrap();
        let names = meta["classnames"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        Self {
            refs: SafetensorsStore::open(&[fixture(&format!("{stem}.safetensors"))]).unwrap(),
            meta,
            names,
        }
    }

    pub fn get(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        self.refs.read(name).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// The tensors under `prefix.` as an artifact.
    pub fn artifact(&self, prefix: &str) -> PromptArtifact {
        self.refs
            .names()
            .filter_map(|n| {
                n.strip_prefix(&format!("{prefix}."))
                    .map(|k| (k.to_string(), self.get(n)))
            })
            .collect()
    }

    pub fn labels(&self, key: &[&str]) -> Vec<i64> {
        let mut v = &self.meta;
        for k in key {
            v = &v[k];
        }
        v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()
    }
}

pub fn batch<Bk: burn::tensor::backend::AutodiffBackend>(f: &Fixture, labels: &[i64], dev: &Bk::Device) -> Batch<Bk> {
    let (shape, data) = f.get("pixels");
    Batch {
        pixels: Tensor::from_data(TensorData::new(data, [shape[0], shape[1], shape[2], shape[3]]), dev),
        labels: Tensor::<Bk, 1, Int>::from_data(TensorData::new(labels.to_vec(), [labels.len()]), dev),
    }
}

pub fn assert_artifact_close(what: &str, got: &PromptArtifact, want: &PromptArtifact, tol: f32) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{what}: parameter names"
    );
    for (k, g) in got {
        let d = max_diff(&format!("{what} {k}"), g.clone(), want[k].clone());
        eprintln!("{what} {k}: after one step {d:e}");
        assert!(d <= tol, "{what}: `{k}` differs from the reference by {d}");
    }
}

/// `cfg`'s method built on `clip` for `names` (dataset "test", 1 shot).
pub fn built<'a, AB: burn::tensor::backend::AutodiffBackend>(
    cfg: &'a MethodConfig,
    clip: &gram_bench::clip::LoadedClip<AB>,
    names: &[String],
    template: &str,
    seed: u64,
) -> gram_bench::Result<CellMethod<'a, AB>> {
    CellMethod::build(
        cfg,
        &gram_bench::methods::BuildInputs {
            clip: &clip.model,
            tok: &clip.tokenizer,
            classnames: names,
            template,
            imagenet_like: false,
            dataset: "test",
            shots: 1,
            seed,
        },
    )
}

/// The SGD learner of `cfg`'s method.
pub fn learner<AB: burn::tensor::backend::AutodiffBackend>(
    cfg: &MethodConfig,
    clip: &gram_bench::clip::LoadedClip<AB>,
    names: &[String],
    template: &str,
    seed: u64,
) -> gram_bench::Result<Box<dyn gram_bench::run::Learner<AB>>> {
    built(cfg, clip, names, template, seed).and_then(CellMethod::into_learner)
}
