//! Measuring a backend (what `gram-bench device-check` runs on a GPU machine): does it compute what
//! the CPU and the references compute, and how fast.
//! 1. parity — the tiny CLIP fixtures in both checkpoint layouts against transformers' outputs;
//! 2. encoders — ViT-B/16 (random weights) image and text forward, and forward + backward to prompt
//!    tokens, with achieved TFLOP/s from the analytic FLOP count (`clip::flops`);
//! 3. methods — one training step of every SGD method of a suite at ViT-B/16 shapes, against the
//!    time its FLOPs would take at the image encoder's measured throughput;
//! 4. suite — a small suite run on this backend and on the CPU, every cell's test images compared
//!    (`compare_stores`; running the two suites is the caller's).
//!
//! Parts 1–3 run at one precision per process (burn fixes a device's float format once per
//! process): `measure`. The report's types are what `device-check` writes as JSON and what
//! `plan --pricing` reads back.

use std::path::{Path, PathBuf};

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::backend::{dispatch, BackendKind, Precision, WithBackend};
use crate::clip::weights::SafetensorsStore;
use crate::clip::workload::Inputs;
use crate::clip::{flops, load_clip, Clip, ClipConfig, ClipTokenizer, LoadOptions, RandomInit, VisionPrompts};
use crate::error::{Error, Result};
use crate::methods::{host_tensor, Batch, BuildInputs, Training};
use crate::resolve::ResolvedSuite;
use crate::run::CellMethod;
use crate::store::Store;
use crate::suite::Suite;

/// The parts of a device check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    Parity,
    Encoders,
    Methods,
    Suite,
}

/// What parts 1–3 measure, and with what.
#[derive(Clone, Debug)]
pub(crate) struct Measurement {
    /// Images per encoder batch and per training step; prompts per text batch.
    pub batch: usize,
    /// Classes of a method's training step (its prompts per text pass).
    pub classes: usize,
    /// Timed repetitions of each measurement, after one untimed warm-up (the median is kept).
    pub repeats: usize,
    /// The suite whose methods' training steps are timed.
    pub methods_from: PathBuf,
    /// The tiny CLIP in both layouts and transformers' outputs on it.
    pub fixtures: PathBuf,
    /// The card's peak dense f32 TFLOP/s, for the achieved fraction.
    pub peak_tflops: Option<f64>,
    /// The card's peak dense f16/bf16 tensor-core TFLOP/s.
    pub peak_tflops_half: Option<f64>,
    /// The parts left out.
    pub skip: Vec<Part>,
}

impl Measurement {
    pub fn runs(&self, part: Part) -> bool {
        !self.skip.contains(&part)
    }

    /// Refuses sizes that measure nothing.
    pub fn validate(&self) -> Result<()> {
        if self.batch == 0 || self.classes == 0 {
            return Err(Error::Input("--batch and --classes must be positive".into()));
        }
        Ok(())
    }
}

/// Parts 1–3 on `backend` at `precision` (this process's: call it once per process and precision).
pub(crate) fn measure(m: &Measurement, backend: BackendKind, precision: Precision) -> Result<PrecisionRun> {
    m.validate()?;
    dispatch(backend, precision, Measure(m, precision))?
}

/// The parity tolerance at each precision: the tiny fixtures' outputs (unit-norm embeddings, and
/// logits at the fixture's scale) against transformers' f32 ones. f32: `tests/parity.rs`'s. f16
/// and bf16: measured on the CPU backend (docs/performance.md, "Precision": largest differences
/// 4.1e-3 and 2.7e-2, both on the logits), with room for kernels that sum in other orders (×2.5 and
/// ×4); f16 keeps 11 significant bits, bf16 8.
pub fn parity_tolerance(p: Precision) -> f32 {
    match p {
        Precision::F32 => 1e-4,
        Precision::F16 => 1e-2,
        Precision::Bf16 => 1e-1,
    }
}

/// Everything a device check measured.
#[derive(Serialize, Deserialize, Debug, Default)]
pub(crate) struct DeviceReport {
    pub backend: String,
    pub batch: usize,
    /// Parts 1–3 at each precision.
    pub runs: Vec<PrecisionRun>,
    pub suite: Vec<SuiteCell>,
    pub passed: bool,
    pub seconds: f64,
}

/// Parts 1–3 at one precision.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct PrecisionRun {
    pub precision: Precision,
    pub parity_tolerance: f32,
    pub parity: Vec<ParityRow>,
    pub encoders: Vec<Throughput>,
    pub methods: Vec<MethodStep>,
}

#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct ParityRow {
    pub layout: String,
    pub output: String,
    pub max_abs_diff: f32,
    pub ok: bool,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct Throughput {
    pub what: String,
    pub items: usize,
    pub seconds: f64,
    pub gflops: f64,
    pub tflops_per_s: f64,
    pub of_peak: Option<f64>,
}

#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct MethodStep {
    pub method: String,
    pub kind: String,
    pub batch: usize,
    pub seconds: f64,
    pub images_per_s: f64,
    /// Forward + backward FLOPs of the passes the step makes (a lower bound: extra passes such as
    /// ProGrad's second backward are not counted).
    pub gflops: f64,
    /// Measured time over the time those FLOPs take at the image encoder's measured throughput.
    /// Text passes are counted at 77 tokens: methods that pool on the prompt's prefix (the CoOp
    /// family) compute less, so below 1× is possible.
    pub times_flop_time: f64,
}

#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct SuiteCell {
    pub cell: String,
    pub cpu: String,
    pub this_backend: String,
    pub images_apart: usize,
    pub ok: bool,
}

impl DeviceReport {
    /// Every parity output within tolerance and every suite cell within one image of the CPU's.
    pub fn passes(&self) -> bool {
        self.runs.iter().flat_map(|run| &run.parity).all(|p| p.ok) && self.suite.iter().all(|s| s.ok)
    }
}

/// Parts 1–3 at one precision (the process's).
struct Measure<'a>(&'a Measurement, Precision);

impl WithBackend for Measure<'_> {
    type Output = Result<PrecisionRun>;
    fn run<B: Backend>(self, device: B::Device) -> Result<PrecisionRun> {
        let (a, precision) = (self.0, self.1);
        let mut r = PrecisionRun {
            precision,
            parity_tolerance: parity_tolerance(precision),
            parity: Vec::new(),
            encoders: Vec::new(),
            methods: Vec::new(),
        };
        if a.runs(Part::Parity) {
            r.parity = parity::<B>(&a.fixtures, r.parity_tolerance, &device)?;
        }
        let (do_encoders, do_methods) = (a.runs(Part::Encoders), a.runs(Part::Methods));
        if do_encoders || do_methods {
            // One ViT-B/16 (random weights, frozen) for both parts; the forwards use its inner module.
            let vit: Clip<Autodiff<B>> = ClipConfig::vit_b_16().init(&mut RandomInit::new(0), &device)?.freeze();
            if do_encoders {
                let peak = if precision.is_f32() {
                    a.peak_tflops
                } else {
                    a.peak_tflops_half
                };
                r.encoders = encoders::<B>(a, &vit, peak, &device);
            }
            if do_methods {
                let image_rate = r.encoders.first().map(|t| t.tflops_per_s);
                r.methods = methods::<B>(a, &vit, &device, image_rate)?;
            }
        }
        Ok(r)
    }
}

/// (image embeds, text embeds, logits) of the tiny fixtures against the recorded references.
fn parity<B: Backend>(fixtures: &Path, tolerance: f32, device: &B::Device) -> Result<Vec<ParityRow>> {
    let reference = fixtures.join("reference.safetensors");
    let store = SafetensorsStore::open(std::slice::from_ref(&reference))?;
    // The token ids are int64, which the weight store (floats only) does not read.
    let bytes = std::fs::read(&reference).map_err(|e| Error::io(&reference, e))?;
    let ids_view = safetensors::SafeTensors::deserialize(&bytes)
        .and_then(|st| st.tensor("input_ids"))
        .map_err(|e| Error::Input(format!("{}: input_ids: {e}", reference.display())))?;
    let ids: Vec<Vec<u32>> = ids_view
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().expect("chunks_exact(8)")) as u32)
        .collect::<Vec<_>>()
        .chunks(ids_view.shape()[1])
        .map(<[u32]>::to_vec)
        .collect();
    let (ps, pixel_values) = store.read("pixel_values")?;
    let layouts: [(&'static str, PathBuf, LoadOptions); 2] = [
        ("huggingface", fixtures.join("tiny-clip-hf"), LoadOptions::default()),
        (
            "openai",
            fixtures.join("tiny-clip-openai.safetensors"),
            LoadOptions {
                config: Some(fixtures.join("tiny-clip-openai.json")),
                tokenizer: Some(fixtures.join("tiny-clip-hf/tokenizer.json")),
            },
        ),
    ];
    let mut rows = Vec::new();
    for (layout, path, opts) in layouts {
        let clip = load_clip::<B>(&path, &opts, device)?;
        let m = &clip.model;
        let pixels = Tensor::<B, 4>::from_data(
            TensorData::new(pixel_values.clone(), [ps[0], ps[1], ps[2], ps[3]]),
            device,
        );
        let image = m.encode_image(pixels, &VisionPrompts::default());
        let text = m.text_features(m.text_model.forward_ids(&ids, device, false).pooled);
        let logits = m.logits_per_image(image.clone(), text.clone());
        for (output, got) in [
            ("image_embeds", Clip::normalize(image)),
            ("text_embeds", Clip::normalize(text)),
            ("logits_per_image", logits),
        ] {
            let want = store.read(output)?.1;
            let got = host_tensor(got).1;
            let d = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            let ok = got.len() == want.len() && d <= tolerance;
            rows.push(ParityRow {
                layout: layout.into(),
                output: output.into(),
                max_abs_diff: d,
                ok,
            });
        }
    }
    Ok(rows)
}

fn throughput(what: &str, items: usize, seconds: f64, flops: f64, peak: Option<f64>) -> Throughput {
    let tflops_per_s = flops / seconds / 1e12;
    Throughput {
        what: what.into(),
        items,
        seconds,
        gflops: flops / 1e9,
        tflops_per_s,
        of_peak: peak.map(|p| tflops_per_s / p),
    }
}

/// ViT-B/16 with random weights: forwards, and forward + backward to prompt tokens (counted as
/// twice the forward: the weights are frozen, so the backward computes input gradients only).
fn encoders<B: Backend>(
    a: &Measurement,
    vit: &Clip<Autodiff<B>>,
    peak: Option<f64>,
    device: &B::Device,
) -> Vec<Throughput> {
    let cfg = ClipConfig::vit_b_16();
    let n = a.batch;
    let (img, txt) = (flops::image_forward(&cfg, n), flops::text_forward(&cfg, n, 77));
    let [image, text, image_back, text_back] = crate::estimate::measure_passes(vit, &cfg, n, a.repeats, device);
    vec![
        throughput("image encoder, forward", n, image, img, peak),
        throughput("text encoder, forward (77 tokens)", n, text, txt, peak),
        throughput(
            "image, forward + backward to 8 VPT tokens",
            n,
            image_back,
            2.0 * img,
            peak,
        ),
        throughput(
            "text, forward + backward to 4 context vectors",
            n,
            text_back,
            2.0 * txt,
            peak,
        ),
    ]
}

fn methods<B: Backend>(
    a: &Measurement,
    clip: &Clip<Autodiff<B>>,
    device: &B::Device,
    image_tflops: Option<f64>,
) -> Result<Vec<MethodStep>> {
    type A<B> = Autodiff<B>;
    let suite = Suite::load(&a.methods_from)?;
    let cfg = ClipConfig::vit_b_16();
    let tok = ClipTokenizer::openai(77)?;
    let classnames: Vec<String> = (0..a.classes).map(|i| format!("class {i}")).collect();
    let mut out = Vec::new();
    for (name, mc) in &suite.methods {
        let Training::Sgd(schedule) = mc.training() else {
            continue; // zero-shot, the linear probe and gram entries (their host is timed) take no step
        };
        let uses = mc.encoders().unwrap_or(crate::methods::EncoderUse::FROZEN);
        // CoCoOp's text encoder runs once per image: its own batch, as upstream trains it.
        let batch = if uses.text_per_image {
            schedule.batch_size
        } else {
            a.batch
        };
        let built = CellMethod::build(
            mc,
            &BuildInputs {
                clip,
                tok: &tok,
                classnames: &classnames,
                template: "a photo of a {}.",
                imagenet_like: true,
                dataset: "imagenet",
                shots: 16,
                seed: 1,
            },
        )?;
        let CellMethod::Sgd(mut m, _) = built else {
            return Err(Error::Internal(format!(
                "{name}: its spec trains by SGD, its build does not"
            )));
        };
        let pixels = Inputs::<A<B>>::new(&cfg, batch, 0, 0, device).pixels;
        let labels: Vec<i64> = (0..batch).map(|i| (i % a.classes) as i64).collect();
        let labels = Tensor::<A<B>, 1, Int>::from_data(TensorData::new(labels, [batch]), device);
        let mut failure = None;
        let seconds = crate::estimate::time(a.repeats, || {
            let b = Batch {
                pixels: pixels.clone(),
                labels: labels.clone(),
            };
            if let Err(e) = m.step(clip, b, schedule.optim.lr) {
                failure.get_or_insert(e);
            }
        });
        if let Some(e) = failure {
            return Err(Error::Run(format!("{name}: training step: {e}")));
        }
        let texts = a.classes * if uses.text_per_image { batch } else { 1 };
        let f = flops::image_forward(&cfg, batch) * if uses.image_backward { 2.0 } else { 1.0 }
            + flops::text_forward(&cfg, texts, 77) * if uses.text_backward { 2.0 } else { 1.0 };
        out.push(MethodStep {
            method: name.clone(),
            kind: mc.kind().to_string(),
            batch,
            seconds,
            images_per_s: batch as f64 / seconds,
            gflops: f / 1e9,
            times_flop_time: image_tflops.map_or(f64::NAN, |t| seconds / (f / (t * 1e12))),
        });
    }
    Ok(out)
}

/// The suite's cells as the CPU's store and this backend's store hold them: each cell's correct test
/// images, within one image of each other (meta-training cells have no test metrics: left out).
pub(crate) fn compare_stores(resolved: &ResolvedSuite, cpu: &Store, this: &Store) -> Result<Vec<SuiteCell>> {
    let mut out = Vec::new();
    for c in &resolved.plan.cells {
        let metrics =
            |s: &Store| -> Result<Option<crate::store::Metrics>> { Ok(s.get(&c.key)?.and_then(|r| r.metrics)) };
        let (Some(x), Some(y)) = (metrics(cpu)?, metrics(this)?) else {
            continue;
        };
        let apart = x.correct.abs_diff(y.correct);
        out.push(SuiteCell {
            cell: crate::run::cell_label(c),
            cpu: format!("{:.2}% ({}/{})", x.accuracy, x.correct, x.total),
            this_backend: format!("{:.2}% ({}/{})", y.accuracy, y.correct, y.total),
            images_apart: apart,
            ok: apart <= 1 && x.total == y.total,
        });
    }
    Ok(out)
}
