//! What a suite's cells cost before they run: each cell counted in encoder passes (images through
//! the image encoder forward, or forward and backward to prompt tokens; sequences through the text
//! encoder likewise), from its dataset sizes, epochs, batch and classes, with the feature cache's
//! savings; passes priced by a calibration of the four passes at the suite's backbone, precision
//! and backend (measured now, read from a `device-check` JSON, or derived from an assumed TFLOP/s).
//!
//! The model is a first-order one: it leaves out data loading, optimizer updates, GRAM's regulator
//! and the methods' small extra passes (hand-crafted text features computed once), and prices a
//! text pass at the full context length while CoOp-family prompts pool on their prefix; `plan`
//! prints how far it is from the recorded times of the cells already run.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::clip::workload::{image_backward_to_prompts, read_sum, text_backward_to_context, text_forward, Inputs};
use crate::clip::{flops, Clip, ClipConfig, VisionPrompts};
use crate::data::{subsample_labels, Subsample};
use crate::error::{Error, Result};
use crate::methods::Training;
use crate::resolve::ResolvedSuite;
use crate::suite::cells::{Cell, Phase};
use crate::world::world_dataset;

/// Median seconds of `repeats` runs of `f` after one warm-up.
pub fn time(repeats: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut v: Vec<f64> = (0..repeats.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Seconds per image or per sequence of each pass.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct PassTimes {
    pub image_forward: f64,
    /// Forward and backward to prompt tokens (the weights frozen).
    pub image_backward: f64,
    /// A sequence at the full context length.
    pub text_forward: f64,
    pub text_backward: f64,
}

impl PassTimes {
    /// Times from an effective throughput: a pass's FLOPs (forward + backward counted as two
    /// forwards, as `device-check` counts them) at `tflops`.
    pub(crate) fn at_tflops(cfg: &ClipConfig, tflops: f64) -> Self {
        let (img, txt) = (
            flops::image_forward(cfg, 1),
            flops::text_forward(cfg, 1, cfg.text.max_position_embeddings),
        );
        let s = |f: f64| f / (tflops * 1e12);
        Self {
            image_forward: s(img),
            image_backward: s(2.0 * img),
            text_forward: s(txt),
            text_backward: s(2.0 * txt),
        }
    }
}

/// Seconds of each pass over a batch of `batch` images / sequences, in `PassTimes`' order, on a
/// frozen model (random weights do as well as trained ones for timing).
pub(crate) fn measure_passes<B: Backend>(
    m: &Clip<Autodiff<B>>,
    cfg: &ClipConfig,
    batch: usize,
    repeats: usize,
    device: &B::Device,
) -> [f64; 4] {
    let (image_forward, text_fwd) = {
        let m: Clip<B> = m.valid();
        let x = Inputs::<B>::new(cfg, batch, batch, 4, device);
        (
            time(repeats, || {
                read_sum(m.encode_image(x.pixels.clone(), &VisionPrompts::default()));
            }),
            time(repeats, || {
                read_sum(text_forward(&m, &x, None, false));
            }),
        )
    };
    let x = Inputs::<Autodiff<B>>::new(cfg, batch, batch, 4, device);
    let image_backward = time(repeats, || {
        image_backward_to_prompts(m, &x, 8);
    });
    let text_backward = time(repeats, || {
        text_backward_to_context(m, &x, false);
    });
    [image_forward, text_fwd, image_backward, text_backward]
}

/// [`measure_passes`] per item.
pub(crate) fn calibrate<B: Backend>(
    cfg: &ClipConfig,
    batch: usize,
    repeats: usize,
    device: &B::Device,
) -> Result<PassTimes> {
    let m: Clip<Autodiff<B>> = cfg.init(&mut crate::clip::RandomInit::new(0), device)?.freeze();
    let [i, t, ib, tb] = measure_passes(&m, cfg, batch, repeats, device);
    let n = batch as f64;
    Ok(PassTimes {
        image_forward: i / n,
        image_backward: ib / n,
        text_forward: t / n,
        text_backward: tb / n,
    })
}

/// The architecture of a suite's backbone: the micro-CLIP's from the `[world]` table; a lock
/// backbone's from its config file or checkpoint directory when they are here, else from its name.
pub(crate) fn backbone_config(resolved: &ResolvedSuite) -> Result<ClipConfig> {
    let suite = &resolved.suite;
    if suite.backbone.name == crate::world::BACKBONE {
        let w = suite
            .world
            .as_ref()
            .ok_or_else(|| Error::Config(format!("suite `{}`: micro-clip needs a [world] table", suite.name)))?;
        return Ok(crate::world::pretrain::micro_clip_config(w));
    }
    if let Ok(e) = resolved.lock.backbone(&suite.backbone.name) {
        let files = [
            e.config.as_deref().map(|c| resolved.lock.resolve(c)),
            Some(resolved.lock.resolve(&e.path).map(|p| p.join("config.json"))),
        ];
        for f in files.into_iter().flatten().flatten() {
            if f.is_file() {
                return ClipConfig::from_json_file(&f);
            }
        }
    }
    ClipConfig::by_loose_name(&suite.backbone.name).ok_or_else(|| {
        Error::Config(format!(
            "backbone `{}`: its architecture is not known here (no config file or checkpoint directory, and \
             not a named checkpoint such as vit-b16); give its datasets.lock entry a `config`",
            suite.backbone.name
        ))
    })
}

/// A cell's work in passes (images or sequences through each).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Passes {
    pub image_forward: f64,
    pub image_backward: f64,
    pub text_forward: f64,
    pub text_backward: f64,
}

impl Passes {
    pub fn seconds(&self, t: &PassTimes) -> f64 {
        self.image_forward * t.image_forward
            + self.image_backward * t.image_backward
            + self.text_forward * t.text_forward
            + self.text_backward * t.text_backward
    }
}

/// Classes and test images of CoOp's datasets as published (CoOp, IJCV 2022, Table 7; the
/// ImageNet variants' test sets as released): what a plan counts with when the data are not on
/// this machine.
pub(crate) fn published_size(dataset: &str) -> Option<(usize, usize)> {
    Some(match dataset {
        "imagenet" => (1000, 50_000),
        "caltech101" => (100, 2_465),
        "oxford_pets" => (37, 3_669),
        "stanford_cars" => (196, 8_041),
        "oxford_flowers" => (102, 2_463),
        "food101" => (101, 30_300),
        "fgvc_aircraft" => (100, 3_333),
        "sun397" => (397, 19_850),
        "dtd" => (47, 1_692),
        "eurosat" => (10, 8_100),
        "ucf101" => (101, 3_783),
        "imagenet_v2" => (1000, 10_000),
        "imagenet_sketch" => (1000, 50_889),
        "imagenet_a" => (200, 7_500),
        "imagenet_r" => (200, 30_000),
        _ => return None,
    })
}

/// One subsample of a dataset: (classes, training images per class available, test images).
fn sizes(resolved: &ResolvedSuite, name: &str, which: Subsample) -> (usize, usize, usize) {
    if let Some(d) = resolved.inputs.datasets.get(name) {
        let labels = subsample_labels(d.classnames.len(), which);
        // One pass over the items (ImageNet's train split has 1.28 M), then the half's labels.
        let count = |items: &[crate::data::Datum]| {
            let mut per = vec![0usize; d.classnames.len()];
            for x in items {
                if let Some(c) = per.get_mut(x.label) {
                    *c += 1;
                }
            }
            labels.iter().map(|&l| per[l]).sum::<usize>()
        };
        let per_class = count(&d.train) / labels.len().max(1);
        return (labels.len(), per_class, count(&d.test));
    }
    if let Some(d) = world_dataset(name) {
        let k = subsample_labels(d.classes().len(), which).len();
        let test = resolved
            .suite
            .world
            .as_ref()
            .and_then(|w| w.test_images)
            .map_or(0, |t| d.test_per_class(t));
        return (k, d.per_class[0], k * test);
    }
    match published_size(name) {
        Some((classes, test)) => {
            let k = subsample_labels(classes, which).len();
            // The test images of a half in proportion to its classes; every CoOp dataset has at
            // least 16 training images per class.
            (k, usize::MAX, test * k / classes)
        }
        None => (0, 0, 0),
    }
}

/// Counts the passes of a plan's cells, in plan order: it remembers the test splits whose
/// frozen-encoder features an earlier cell computed (the feature cache) and each dataset half's
/// sizes (counted once, not once per cell).
pub(crate) struct PassCounter<'a> {
    resolved: &'a ResolvedSuite,
    encoded: HashSet<String>,
    sizes: HashMap<(String, Subsample), (usize, usize, usize)>,
}

impl<'a> PassCounter<'a> {
    pub fn new(resolved: &'a ResolvedSuite) -> Self {
        Self {
            resolved,
            encoded: HashSet::new(),
            sizes: HashMap::new(),
        }
    }

    fn sizes(&mut self, name: &str, which: Subsample) -> (usize, usize, usize) {
        let resolved = self.resolved;
        *self
            .sizes
            .entry((name.to_string(), which))
            .or_insert_with(|| sizes(resolved, name, which))
    }

    /// The passes of `cell`.
    pub fn passes(&mut self, cell: &Cell) -> Passes {
        // A copy of the reference: the suite is read while the counter's memory is updated.
        let resolved = self.resolved;
        let (suite, s) = (&resolved.suite, &cell.spec);
        let mut p = Passes::default();
        if s.phase == Phase::Meta {
            let Some(g) = suite.gram.get(&s.method) else { return p };
            let corpus = match &g.corpus {
                crate::gram::CorpusSpec::World { size } => *size as f64,
                // A CSV corpus's size is not known before it is read: counted as nothing.
                crate::gram::CorpusSpec::Csv { .. } => 0.0,
            };
            // Features of the corpus (images and captions) once, then per step and task the inner
            // steps and the outer one through the text prompts of the task's classes.
            p.image_forward += corpus;
            p.text_forward += corpus;
            let t = &g.train;
            p.text_backward += (t.steps * t.tasks_per_step * (t.inner_steps + 1) * t.episode.ways) as f64;
            return p;
        }
        let Some(method) = suite.methods.get(&s.method) else {
            return p;
        };
        // A GRAM method's steps cost what its host's do (the regulator is small).
        let host = suite.trained_as(method);
        let Some(uses) = host.encoders() else {
            return p;
        };
        if s.phase == Phase::Train {
            let (k, available, _) = self.sizes(&s.dataset, s.train_classes);
            let n = (k * available.min(s.shots)) as f64;
            match host.training() {
                Training::Sgd(t) => {
                    let epochs = t.epochs.resolve(&s.dataset, s.shots).unwrap_or(0) as f64;
                    let steps = epochs * (n / t.batch_size as f64).ceil();
                    let images = epochs * n;
                    if uses.image_backward {
                        p.image_backward += images;
                    } else {
                        p.image_forward += images;
                    }
                    if uses.teacher_images {
                        p.image_forward += images;
                    }
                    let prompts = if uses.text_per_image {
                        images * k as f64
                    } else {
                        steps * k as f64
                    };
                    if uses.text_backward {
                        p.text_backward += prompts;
                    } else {
                        p.text_forward += k as f64;
                    }
                    if uses.second_text_backward {
                        // Half a pass more: the backward alone, through the graph the first built.
                        p.text_backward += prompts / 2.0;
                    }
                }
                // Features of the few-shot train and val images.
                Training::Features => p.image_forward += 2.0 * n,
                Training::None => {}
            }
        }
        // Evaluation: the train cell on its own split, an eval cell on its target.
        let target = s.target.as_deref().unwrap_or(&s.dataset);
        let (k, _, test) = self.sizes(target, s.target_classes);
        let test = test as f64;
        if uses.frozen_image() {
            if self.encoded.insert(target.to_string()) {
                p.image_forward += test;
            }
        } else {
            p.image_forward += test;
        }
        p.text_forward += if uses.text_per_image { test * k as f64 } else { k as f64 };
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_assumed_throughput_prices_a_pass_by_its_flops() {
        let cfg = ClipConfig::vit_b_16();
        let t = PassTimes::at_tflops(&cfg, 100.0);
        // ViT-B/16: 35.2 GFLOPs an image at 100 TFLOP/s is 0.35 ms; a backward pass doubles it.
        assert!((t.image_forward - 3.52e-4).abs() < 1e-5, "{t:?}");
        assert_eq!(t.image_backward, 2.0 * t.image_forward);
        let p = Passes {
            image_forward: 1000.0,
            text_backward: 10.0,
            ..Default::default()
        };
        assert!((p.seconds(&t) - (1000.0 * t.image_forward + 10.0 * t.text_backward)).abs() < 1e-12);
    }

    #[test]
    fn published_sizes_cover_every_coop_dataset() {
        for d in crate::data::coop::catalog() {
            assert!(published_size(&d.name).is_some(), "{}", d.name);
        }
    }
}
