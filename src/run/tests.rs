//! The run's pieces on the committed tiny fixture CLIP and a four-class dataset in CoOp's layout
//! (declared in the suite): the session's backbone check, the SGD loop's schedule, evaluation's
//! tallies (cached features and encoded images agree), and a cell's record when it cannot run.

use std::path::Path;

use super::learner::CellMethod;
use super::session::Session;
use super::BackboneSource;
use crate::backend::{BackendKind, Cpu};
use crate::clip::LoadOptions;
use crate::lock::Lock;
use crate::methods::{BuildInputs, SgdSchedule, Training};
use crate::resolve::ResolvedSuite;
use crate::store::{Status, Store};
use crate::suite::cells::Phase;
use crate::suite::methods::MethodConfig;
use crate::suite::Suite;

/// `mc`'s method built for the `mini` dataset's `classnames` (2 shots, seed 1).
fn mini_method<'a>(
    s: &Session<Cpu>,
    mc: &'a MethodConfig,
    classnames: &[String],
    ds: &crate::data::Dataset,
) -> crate::Result<CellMethod<'a, burn::backend::Autodiff<Cpu>>> {
    CellMethod::build(
        mc,
        &BuildInputs {
            clip: &s.clip,
            tok: &s.tok,
            classnames,
            template: &ds.def.template,
            imagenet_like: false,
            dataset: "mini",
            shots: 2,
            seed: 1,
        },
    )
}

/// The SGD schedule of a method entry.
fn sgd(mc: &MethodConfig) -> SgdSchedule<'_> {
    match mc.training() {
        Training::Sgd(s) => s,
        other => panic!("not an SGD method: {other:?}"),
    }
}

const SUITE: &str = r#"
schema = 1
name = "unit"
version = 1
description = "run unit tests"
[backbone]
name = "tiny-fixture"
[precision]
default = "f32"
[eval]
batch_size = 3
[data]
fewshot = "sample"
on_corrupt = "fail"
[check]
abs_tolerance = 1.0
std_factor = 2.0
fail_on = "regression"
[datasets.mini]
folder = "mini"
split_file = "split.json"
image_dir = "images"
template = "a photo of a {}."
[methods.zs]
kind = "zeroshot"
templates = "dataset"
[methods.coop]
kind = "coop"
n_ctx = 2
ctx_init = ""
init_std = 0.02
csc = false
class_token_position = "end"
batch_size = 2
epochs = 3
optim = { lr = 0.002, momentum = 0.9, weight_decay = 5e-4, warmup_epochs = 1, warmup_lr = 1e-5 }
[[experiment]]
protocol = "base-to-new"
methods = ["zs", "coop"]
datasets = ["mini"]
shots = [2]
seeds = [1]
"#;

/// `root/mini`: 4 classes, 3 train, 1 val and 2 test images each (PNG, distinct colours).
fn mini_dataset(root: &Path) {
    let dir = root.join("mini");
    let mut split = serde_json::json!({"train": [], "val": [], "test": []});
    for (label, name) in ["red", "green", "blue", "grey"].iter().enumerate() {
        std::fs::create_dir_all(dir.join("images").join(name)).unwrap();
        for i in 0..6u32 {
            let rel = format!("{name}/{i}.png");
            let img = image::RgbImage::from_fn(24, 20, |x, y| {
                image::Rgb([(label * 60) as u8, (x * 9) as u8, (y * 11 + i * 30) as u8])
            });
            img.save(dir.join("images").join(&rel)).unwrap();
            let part = match i {
                0..=2 => "train",
                3 => "val",
                _ => "test",
            };
            split[part]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!([rel, label, name]));
        }
    }
    std::fs::write(dir.join("split.json"), serde_json::to_vec(&split).unwrap()).unwrap();
}

struct Fixture {
    dir: tempfile::TempDir,
    resolved: ResolvedSuite,
    model: BackboneSource,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    mini_dataset(dir.path());
    let lock = Lock::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets.lock")).unwrap();
    let suite = Suite::parse(Path::new("unit.toml"), SUITE).unwrap();
    let resolved = ResolvedSuite::new(suite, &lock, Some(dir.path())).unwrap();
    let model = super::resolve_backbone(&resolved.suite, &resolved, None).unwrap();
    Fixture { dir, resolved, model }
}

impl Fixture {
    fn session<'a>(&'a self, store: &'a Store, features: bool) -> Session<'a, Cpu> {
        let cache = features.then(|| self.dir.path().join("features"));
        Session::new(
            &self.resolved,
            &self.model,
            None,
            store,
            cache,
            Default::default(),
            BackendKind::Cpu,
            crate::backend::Precision::F32,
            1,
        )
        .unwrap()
    }
}

#[test]
fn a_backbone_whose_weights_differ_from_the_pin_is_refused_before_any_cell() {
    let f = fixture();
    let store = Store::open(&f.dir.path().join("results"), "unit").unwrap();
    let wrong = BackboneSource {
        path: f.model.path.clone(),
        options: LoadOptions::default(),
        sha256: Some("0".repeat(64)),
        pinned_by: f.model.pinned_by.clone(),
        id: f.model.id.clone(),
    };
    let e = Session::<Cpu>::new(
        &f.resolved,
        &wrong,
        None,
        &store,
        None,
        Default::default(),
        BackendKind::Cpu,
        crate::backend::Precision::F32,
        1,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("does not match") && e.contains("tiny-fixture"), "{e}");
}

#[test]
fn the_sgd_loop_follows_the_schedule_and_drops_the_last_partial_batch() {
    let f = fixture();
    let store = Store::open(&f.dir.path().join("results"), "unit").unwrap();
    let mut s = f.session(&store, false);
    let ds = s.dataset("mini").unwrap();
    let mc = f.resolved.suite.methods["coop"].clone();
    let names: Vec<String> = ds.classnames.clone();
    let mut method = mini_method(&s, &mc, &names, &ds)
        .and_then(CellMethod::into_learner)
        .unwrap();
    // 5 items, batch 2: two full batches per epoch, the fifth item dropped (Dassl).
    let items: Vec<_> = ds.train[..5].to_vec();
    let t = s.train(method.as_mut(), sgd(&mc), &items, "mini", 2, 1, None).unwrap();
    assert_eq!((t.epochs, t.steps, t.images), (3, 6, 5));
    assert_eq!(t.epoch_loss.len(), 3);
    assert!(
        t.epoch_loss.iter().all(|l| l.is_finite() && *l > 0.0),
        "{:?}",
        t.epoch_loss
    );
}

#[test]
fn evaluation_counts_every_test_image_once_and_the_feature_cache_changes_nothing() {
    let f = fixture();
    let store = Store::open(&f.dir.path().join("results"), "unit").unwrap();
    let eval = |features: bool| {
        let mut s = f.session(&store, features);
        let ds = s.dataset("mini").unwrap();
        let mc = &f.resolved.suite.methods["zs"];
        let method = mini_method(&s, mc, &ds.classnames, &ds).unwrap();
        let labels: Vec<usize> = (0..ds.classnames.len()).collect();
        let e = s.evaluate(&method, true, &ds, &labels).unwrap();
        (e.metrics, e.per_class, e.features.origin)
    };
    let (a, pa, fa) = eval(false);
    let (b, pb, fb) = eval(true);
    assert_eq!((a.total, per_class_total(&pa)), (8, 8));
    assert_eq!(a.correct, pa.iter().map(|p| p.correct).sum::<usize>());
    assert_eq!(
        (a.correct, pa),
        (b.correct, pb),
        "cached features must score as encoded images do"
    );
    use crate::store::FeatureOrigin;
    assert_eq!((fa, fb), (FeatureOrigin::Encoded, FeatureOrigin::Computed));
}

fn per_class_total(p: &[crate::store::ClassAccuracy]) -> usize {
    p.iter().map(|c| c.n).sum()
}

#[test]
fn an_eval_cell_whose_train_cell_has_not_run_records_why_and_does_not_panic() {
    let f = fixture();
    let store = Store::open(&f.dir.path().join("results"), "unit").unwrap();
    let mut s = f.session(&store, false);
    let eval = f
        .resolved
        .plan
        .cells
        .iter()
        .find(|c| c.spec.phase == Phase::Eval)
        .unwrap();
    let r = s.run_cell(eval);
    assert_eq!(r.status, Status::Failed);
    assert!(r.error.as_deref().unwrap().contains("has not run"), "{:?}", r.error);
    assert!(r.metrics.is_none() && r.digests.backbone.is_empty());
}

#[test]
fn more_shots_than_a_class_has_is_an_error_not_a_quiet_cap() {
    let f = fixture();
    let store = Store::open(&f.dir.path().join("results"), "unit").unwrap();
    let mut s = f.session(&store, false);
    let ds = s.dataset("mini").unwrap();
    assert_eq!(s.fewshot(&ds, 3, 1).unwrap().train.len(), 12);
    let e = s.fewshot(&ds, 4, 1).unwrap_err().to_string();
    assert!(e.contains("has 3 training image(s), fewer than the 4 shots"), "{e}");
}

/// An SGD cell resumed from its epoch checkpoint ends with the bits of an uninterrupted run: the
/// prompt, the optimizer's momentum and the per-epoch losses.
#[test]
fn a_cell_resumed_from_its_epoch_checkpoint_equals_an_uninterrupted_run() {
    let f = fixture();
    let store = Store::open(&f.dir.path().join("results"), "unit").unwrap();
    let mut s = f.session(&store, false);
    let ds = s.dataset("mini").unwrap();
    let mc = f.resolved.suite.methods["coop"].clone();
    let names: Vec<String> = ds.classnames.clone();
    let build = |s: &Session<Cpu>| {
        mini_method(s, &mc, &names, &ds)
            .and_then(CellMethod::into_learner)
            .unwrap()
    };
    let items: Vec<_> = ds.train.to_vec();
    let mut whole = build(&s);
    let a = s.train(whole.as_mut(), sgd(&mc), &items, "mini", 3, 1, None).unwrap();
    // A run that checkpoints leaves the state after epoch 2 of 3 (its record would remove it).
    let cp = super::train::EpochCheckpoint {
        path: f.dir.path().join("cp.json"),
        key: "k".into(),
    };
    let mut first = build(&s);
    let b = s
        .train(first.as_mut(), sgd(&mc), &items, "mini", 3, 1, Some(&cp))
        .unwrap();
    assert_eq!((a.epoch_loss.clone(), b.resumed_at_epoch), (b.epoch_loss.clone(), None));
    assert!(cp.path.is_file());
    // A fresh method resumes from it and runs only the last epoch.
    let mut resumed = build(&s);
    let c = s
        .train(resumed.as_mut(), sgd(&mc), &items, "mini", 3, 1, Some(&cp))
        .unwrap();
    assert_eq!(c.resumed_at_epoch, Some(2));
    assert_eq!(c.epoch_loss, a.epoch_loss);
    assert_eq!(resumed.artifact(), whole.artifact());
    // Another cell's checkpoint is refused, not resumed from.
    let other = super::train::EpochCheckpoint {
        path: cp.path.clone(),
        key: "other".into(),
    };
    let e = s
        .train(build(&s).as_mut(), sgd(&mc), &items, "mini", 3, 1, Some(&other))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not of other"), "{e}");
}

/// A store holding records of this backbone made from other weights refuses to add new ones.
#[test]
fn records_of_other_weights_under_the_same_backbone_are_not_mixed_with_new_ones() {
    let f = fixture();
    let store = Store::open(&f.dir.path().join("results"), "unit").unwrap();
    let mut r: crate::store::Record =
        serde_json::from_str(include_str!("../../tests/fixtures/records/linear-probe-train.json")).unwrap();
    r.digests.backbone = f.model.id.clone();
    r.digests.weights_sha256 = "0".repeat(64);
    store.put(&r).unwrap();
    let e = Session::<Cpu>::new(
        &f.resolved,
        &f.model,
        None,
        &store,
        None,
        Default::default(),
        BackendKind::Cpu,
        crate::backend::Precision::F32,
        1,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("would mix under the same keys"), "{e}");
}

#[test]
fn jobs_auto_runs_micro_clip_cells_side_by_side_on_the_cpu_only() {
    use super::Jobs;
    assert_eq!("auto".parse::<Jobs>(), Ok(Jobs::Auto));
    assert_eq!("3".parse::<Jobs>(), Ok(Jobs::Count(3)));
    for bad in ["0", "-1", "two", ""] {
        assert!(bad.parse::<Jobs>().unwrap_err().contains("or `auto`"), "{bad}");
    }
    let text = crate::suite::test_suite_head("jobs", crate::suite::TEST_CHECK)
        + crate::suite::TEST_ZS_COOP
        + "[[experiment]]\nprotocol = \"few-shot\"\nmethods = [\"zs\"]\ndatasets = [\"shapes\"]\nshots = [1]\nseeds = [1]\n";
    let world = Suite::parse(Path::new("jobs.toml"), &text).unwrap();
    let cores = rayon::current_num_threads().clamp(1, Jobs::AUTO_MAX);
    assert_eq!(Jobs::Auto.resolve(&world, BackendKind::Cpu), cores);
    assert_eq!(Jobs::Auto.resolve(&world, BackendKind::Wgpu), 1);
    assert_eq!(Jobs::Count(5).resolve(&world, BackendKind::Wgpu), 5);
    let mut lock_backbone = world.clone();
    lock_backbone.backbone.name = "ViT-B/16".into();
    assert_eq!(Jobs::Auto.resolve(&lock_backbone, BackendKind::Cpu), 1);
}
