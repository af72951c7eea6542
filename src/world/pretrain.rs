//! Contrastive pretraining of the embedded micro-CLIP on the world's image–caption corpus: the same
//! backbone code as the real checkpoints, a small config, symmetric InfoNCE, AdamW with warm-up and
//! cosine decay, on the CPU. Some colour–shape pairs are held out of the corpus entirely, so the
//! zero-shot accuracy on them measures generalization to combinations never seen.

use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::loss::cross_entropy_with_logits;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use image::RgbImage;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::concepts::{Colour, Concept, Domain, Shape};
use super::datasets::template_caption;
use super::render::render;
use super::WorldConfig;
use crate::clip::{
    Activation, Clip, ClipConfig, ClipTextConfig, ClipTokenizer, ClipVisionConfig, Preprocess, RandomInit,
};
use crate::error::{Error, Result};

/// Colour–shape pairs that never appear in the pretraining corpus: one colour per shape and one
/// shape per colour (8 of the 64 pairs; a quarter held out left held-out pairs at 0.73× the seen
/// ones, docs/calibration-log.md, "Calibration log").
pub(crate) fn held_out(shape: Shape, colour: Colour) -> bool {
    let s = Shape::ALL.iter().position(|&x| x == shape).expect("shape is in ALL");
    let c = Colour::ALL.iter().position(|&x| x == colour).expect("colour is in ALL");
    s == c
}

/// The micro-CLIP architecture the world config asks for (OpenAI's tokenizer and vocabulary).
pub fn micro_clip_config(w: &WorldConfig) -> ClipConfig {
    let heads = (w.width / 32).max(1);
    ClipConfig::new(
        ClipTextConfig::new(
            49408,
            w.width,
            4 * w.width,
            w.text_layers.unwrap_or(w.layers),
            heads,
            w.context_length,
            Activation::QuickGelu,
            1e-5,
            49407,
        ),
        ClipVisionConfig::new(
            w.width,
            4 * w.width,
            w.layers,
            heads,
            w.image_size,
            w.patch_size,
            Activation::QuickGelu,
            1e-5,
        ),
        w.width,
    )
}

/// Evaluation images per colour–shape pair (and per domain): 64 × 16 = 1,024 per domain, so one
/// accuracy's 95% interval is about ±3 pt at worst.
const EVAL_PER_PAIR: usize = 16;

/// Zero-shot accuracies of the pretrained model (percent), written beside it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PretrainReport {
    pub steps: usize,
    pub final_loss: f32,
    pub seconds: f64,
    /// 64-way colour–shape classification on pairs held out of the corpus (chance 1.56%).
    pub held_out_pairs_acc: f64,
    /// The same on pairs the corpus contains.
    pub seen_pairs_acc: f64,
    /// 64-way colour–shape classification of all pairs per domain (chance 1.56%).
    pub domain_acc: Vec<(String, f64)>,
    /// In the photo domain over all pairs: how often the 64-way prediction has the right colour,
    /// and the right shape (chance 12.5% each), to tell which attribute limits the model.
    #[serde(default)]
    pub photo_colour_acc: f64,
    #[serde(default)]
    pub photo_shape_acc: f64,
    /// The losses of the first steps, exactly (f32 round-trips through JSON).
    #[serde(default)]
    pub first_losses: Vec<f32>,
    /// (step, mean loss over the preceding window).
    #[serde(default)]
    pub loss_curve: Vec<(usize, f32)>,
    /// The temperature calibration that follows pretraining (`calibrate_temperature`): the
    /// learned logit scale, the one kept, and the zero-shot NLL under each.
    #[serde(default)]
    pub calibration: Option<Calibration>,
}

fn domain_of(r: f64) -> Domain {
    match r {
        r if r < 0.70 => Domain::Photo,
        r if r < 0.80 => Domain::Sketch,
        r if r < 0.90 => Domain::Cartoon,
        _ => Domain::Clutter,
    }
}

/// The cosine similarity of each of `images` with each of `prompts`, row-major
/// (`images.len() × prompts.len()`): what zero-shot predictions and the temperature calibration
/// are both computed from.
fn cosines<B: Backend>(
    model: &Clip<B>,
    tok: &ClipTokenizer,
    pre: &Preprocess,
    prompts: &[String],
    images: &[RgbImage],
    device: &B::Device,
) -> Result<Vec<f32>> {
    let text = Clip::normalize(model.encode_text(tok, prompts)?);
    let mut out = Vec::with_capacity(images.len() * prompts.len());
    for chunk in images.chunks(256) {
        let img = Clip::normalize(model.encode_image(pre.batch(chunk, device), &Default::default()));
        let c = img.matmul(text.clone().transpose()).into_data().convert::<f32>();
        out.extend(c.to_vec::<f32>().expect("converted to f32 above"));
    }
    Ok(out)
}

/// The index among `prompts` each of `images` is closest to (the first, on a tie).
fn zero_shot_predictions<B: Backend>(
    model: &Clip<B>,
    tok: &ClipTokenizer,
    pre: &Preprocess,
    prompts: &[String],
    images: &[RgbImage],
    device: &B::Device,
) -> Result<Vec<usize>> {
    let cos = cosines(model, tok, pre, prompts, images, device)?;
    Ok(cos
        .chunks(prompts.len())
        .map(|row| (0..row.len()).fold(0, |best, i| if row[i] > row[best] { i } else { best }))
        .collect())
}

/// Percent of `pred` equal to `truth` under `key` (the identity for the label itself).
fn accuracy(pred: &[usize], truth: &[usize], key: impl Fn(usize) -> usize) -> f64 {
    let hits = pred.iter().zip(truth).filter(|(p, t)| key(**p) == key(**t)).count();
    100.0 * hits as f64 / pred.len().max(1) as f64
}

/// How many of the first steps' losses a report keeps bit for bit, so a replay can prove that
/// pretraining still computes what it computed (`gram-bench world replay`).
pub(crate) const TRAJECTORY_STEPS: usize = 8;

/// Steps per point of the loss curve a report keeps (the window's mean loss).
const CURVE_EVERY: usize = 100;

type Adamw<B> = burn::optim::adaptor::OptimizerAdaptor<burn::optim::AdamW, Clip<B>, B>;

/// One pretraining run, step by step: the corpus, the model, the optimizer and the batch stream.
pub(crate) struct Pretraining<B: AutodiffBackend> {
    w: WorldConfig,
    cfg: ClipConfig,
    model: Option<Clip<B>>,
    opt: Adamw<B>,
    tok: ClipTokenizer,
    pre: Preprocess,
    rng: rand_chacha::ChaCha8Rng,
    /// The crops of `pretrain_crop_scale` (their own stream: the batches and captions do not move).
    views_rng: rand_chacha::ChaCha8Rng,
    /// Each corpus image's concept and domain; the image is rendered the first time a batch uses
    /// it, from its own stream, so a replay of a few steps renders only what those steps use.
    corpus: Vec<(Concept, Domain)>,
    images: Vec<Option<RgbImage>>,
    labels: Tensor<B, 2>,
    device: B::Device,
    done: usize,
}

impl<B: AutodiffBackend> Pretraining<B> {
    pub fn new(w: &WorldConfig, device: &B::Device) -> Result<Self> {
        let cfg = micro_clip_config(w);
        let model: Clip<B> = cfg.init(&mut RandomInit::new(w.seed), device)?;
        let mut rng = crate::seeds::rng(w.seed, crate::seeds::Stream::Pretraining);
        let mut corpus = Vec::with_capacity(w.corpus_size);
        while corpus.len() < w.corpus_size {
            let c = Concept::random(&mut rng);
            if !held_out(c.shape, c.colour) {
                corpus.push((c, domain_of(rng.random())));
            }
        }
        let b = w.batch_size;
        let labels = Tensor::<B, 1, Int>::from_data(TensorData::new((0..b as i64).collect::<Vec<_>>(), [b]), device)
            .one_hot::<2>(b)
            .float();
        Ok(Pretraining {
            w: w.clone(),
            cfg,
            model: Some(model),
            opt: AdamWConfig::new().with_weight_decay(w.weight_decay as f32).init(),
            tok: ClipTokenizer::openai(w.context_length)?,
            pre: Preprocess::clip(w.image_size),
            rng,
            views_rng: crate::seeds::rng(w.seed, crate::seeds::Stream::PretrainingViews),
            images: vec![None; corpus.len()],
            corpus,
            labels,
            device: device.clone(),
            done: 0,
        })
    }

    fn image(&mut self, i: usize) -> RgbImage {
        let ((c, d), w) = (self.corpus[i], &self.w);
        self.images[i]
            .get_or_insert_with(|| {
                let mut r = crate::seeds::indexed_rng(w.seed, crate::seeds::Stream::PretrainingImages, i as u64);
                render(&c, d, w.image_size as u32, &mut r)
            })
            .clone()
    }

    /// The learning rate of step `step` (0-based): linear warm-up, then cosine to zero.
    fn lr(&self, step: usize) -> f64 {
        let w = &self.w;
        if step < w.warmup_steps {
            w.lr * (step + 1) as f64 / w.warmup_steps as f64
        } else {
            let p = (step - w.warmup_steps) as f64 / (w.steps - w.warmup_steps).max(1) as f64;
            w.lr * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
        }
    }

    /// The images of corpus items `idx` as this step sees them: whole, or through a fresh random
    /// resized crop and flip (`pretrain_crop_scale`) for the share `pretrain_crop_share` of them.
    fn batch_images(&mut self, idx: &[usize]) -> Vec<RgbImage> {
        let mut imgs: Vec<RgbImage> = idx.iter().map(|&i| self.image(i)).collect();
        if let Some([lo, hi]) = self.w.pretrain_crop_scale {
            for img in &mut imgs {
                // The share's draw is made only when a share is set, so a world without one keeps
                // the views stream it had.
                let crop = match self.w.pretrain_crop_share {
                    Some(share) => self.views_rng.random::<f64>() < share,
                    None => true,
                };
                if crop {
                    *img = self.pre.resized_crop_flip_u8(img, (lo, hi), &mut self.views_rng);
                }
            }
        }
        imgs
    }

    /// A fresh caption of corpus item `i`: a dataset's template for the share
    /// `template_caption_share`, otherwise free alt-text. The share's draw is made only when a
    /// share is set, so a world without one keeps the caption stream it had.
    fn caption(&mut self, i: usize) -> String {
        let (concept, domain) = self.corpus[i];
        match self.w.template_caption_share {
            Some(share) if self.rng.random::<f64>() < share => template_caption(&concept, &mut self.rng),
            _ => concept.caption(domain, &mut self.rng),
        }
    }

    /// One optimizer step on a fresh batch (captions re-drawn each time an image is used); returns
    /// the step's symmetric InfoNCE loss, and fails on a loss that is not finite.
    pub fn step(&mut self) -> Result<f32> {
        let b = self.w.batch_size;
        let idx: Vec<usize> = (0..b).map(|_| self.rng.random_range(0..self.corpus.len())).collect();
        let imgs = self.batch_images(&idx);
        let caps: Vec<String> = idx.iter().map(|&i| self.caption(i)).collect();
        // Borrowed until the optimizer step, so an error on the way leaves the model in place.
        let model = self.model.as_ref().expect("a model between steps");
        let im = Clip::normalize(model.encode_image(self.pre.batch(&imgs, &self.device), &Default::default()));
        let tx = Clip::normalize(model.encode_text(&self.tok, &caps)?);
        let logits = model.logits_per_image(im, tx);
        let loss = (cross_entropy_with_logits(logits.clone(), self.labels.clone())
            + cross_entropy_with_logits(logits.transpose(), self.labels.clone()))
            / 2.0;
        let value = loss.clone().into_scalar().elem::<f32>();
        if !value.is_finite() {
            return Err(Error::Run(format!(
                "micro-CLIP pretraining: the loss is {value} at step {} of {}",
                self.done + 1,
                self.w.steps
            )));
        }
        let grads = GradientsParams::from_grads(loss.backward(), model);
        let lr = self.lr(self.done);
        let model = self.model.take().expect("a model between steps");
        self.model = Some(self.opt.step(lr, model, grads));
        self.done += 1;
        Ok(value)
    }

    /// The trained model, evaluated zero-shot.
    pub fn finish(self, losses: &[f32], seconds: f64) -> Result<(ClipConfig, Clip<B>, PretrainReport)> {
        let model = self.model.expect("a model between steps");
        let (held, seen, domains, colour, shape) =
            evaluate(&self.w, &model.valid(), &self.tok, &self.pre, &self.device)?;
        // Accuracies do not depend on the logit scale, so they are measured before it is set.
        let calibration = calibrate_temperature(&self.w, &model.valid(), &self.tok, &self.pre, &self.device)?;
        let model = model.with_logit_scale(calibration.logit_scale);
        let report = PretrainReport {
            steps: self.w.steps,
            final_loss: losses.last().copied().unwrap_or(f32::NAN),
            seconds,
            held_out_pairs_acc: held,
            seen_pairs_acc: seen,
            domain_acc: domains,
            photo_colour_acc: colour,
            photo_shape_acc: shape,
            first_losses: losses.iter().take(TRAJECTORY_STEPS).copied().collect(),
            loss_curve: losses
                .chunks(CURVE_EVERY)
                .enumerate()
                .map(|(i, c)| ((i * CURVE_EVERY + c.len()), c.iter().sum::<f32>() / c.len() as f32))
                .collect(),
            calibration: Some(calibration),
        };
        Ok((self.cfg, model, report))
    }
}

/// Trains a micro-CLIP from a random init; `log` receives (step, steps, loss).
pub fn pretrain<B: AutodiffBackend>(
    w: &WorldConfig,
    device: &B::Device,
    log: &mut dyn FnMut(usize, usize, f32),
) -> Result<(ClipConfig, Clip<B>, PretrainReport)> {
    let t0 = std::time::Instant::now();
    let mut run = Pretraining::<B>::new(w, device)?;
    let mut losses = Vec::with_capacity(w.steps);
    for step in 0..w.steps {
        losses.push(run.step()?);
        log(step + 1, w.steps, losses[step]);
    }
    run.finish(&losses, t0.elapsed().as_secs_f64())
}

/// The first `steps` losses of pretraining `w` again (the replay of a recorded trajectory).
pub fn replay<B: AutodiffBackend>(w: &WorldConfig, device: &B::Device, steps: usize) -> Result<Vec<f32>> {
    let mut run = Pretraining::<B>::new(w, device)?;
    (0..steps.min(w.steps)).map(|_| run.step()).collect()
}

/// Renders per colour–shape pair (photos) for the temperature calibration.
const CALIBRATION_PER_PAIR: usize = 16;

/// What temperature calibration chose.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// exp(logit_scale) as pretraining left it.
    pub learned: f64,
    /// exp(logit_scale) kept in the weights.
    pub logit_scale: f64,
    /// Mean zero-shot NLL of the calibration renders under each.
    pub nll_learned: f64,
    pub nll: f64,
}

/// Temperature scaling (Guo et al., ICML 2017) of a pretrained micro-CLIP: the logit scale that
/// minimizes the zero-shot NLL of the 64-way colour–shape task on the views prompt learners train
/// on (photos rendered from their own stream, through the training transform: Dassl's random
/// resized crop and flip), searched on a grid of exp(0.00 … 4.61) in steps of 0.01 (1 to 100,
/// CLIP's cap) in f64. Contrastive pretraining leaves the scale far too confident for those views
/// (the smoke world's learned 39 gave CoOp a first-epoch cross-entropy of 7.4 at 72% zero-shot
/// accuracy: a crop of a 32-pixel world often loses the object, and the errors are confident), and
/// every method that keeps the backbone's scale then chases those errors. Predictions, and so
/// every zero-shot accuracy, are unchanged. docs/calibration-log.md, "Calibration log", has the
/// measurements behind the choice of views.
pub(crate) fn calibrate_temperature<B: Backend>(
    w: &WorldConfig,
    model: &Clip<B>,
    tok: &ClipTokenizer,
    pre: &Preprocess,
    device: &B::Device,
) -> Result<Calibration> {
    let mut rng = crate::seeds::rng(w.seed, crate::seeds::Stream::PretrainingCalibration);
    let prompts = pair_prompts();
    let (imgs, labels) = pair_renders(w, Domain::Photo, CALIBRATION_PER_PAIR, &mut rng, &mut |img, rng| {
        pre.train_u8(&img, rng)
    });
    let cos = cosines(model, tok, pre, &prompts, &imgs, device)?;
    let k = prompts.len();
    let nll = |scale: f64| -> f64 {
        let total: f64 = cos
            .chunks(k)
            .zip(&labels)
            .map(|(row, &y)| {
                let z: Vec<f64> = row.iter().map(|&c| scale * c as f64).collect();
                let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let lse = max + z.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
                lse - z[y]
            })
            .sum();
        total / labels.len() as f64
    };
    let learned = model.logit_scale_value() as f64;
    let best = (0..=461)
        .map(|i| (i as f64 * 0.01).exp())
        .map(|s| (s, nll(s)))
        .fold((1.0, f64::INFINITY), |a, b| if b.1 < a.1 { b } else { a });
    Ok(Calibration {
        learned,
        logit_scale: best.0,
        nll_learned: nll(learned),
        nll: best.1,
    })
}

/// `per_pair` renders of every colour–shape pair in `domain` (other attributes drawn from `rng`),
/// each passed through `view`, with their labels in [`pair_prompts`]' order (colour-major). One
/// draw order for every evaluation: concept, render, then whatever `view` draws.
fn pair_renders<R: Rng>(
    w: &WorldConfig,
    domain: Domain,
    per_pair: usize,
    rng: &mut R,
    view: &mut dyn FnMut(RgbImage, &mut R) -> RgbImage,
) -> (Vec<RgbImage>, Vec<usize>) {
    let (mut imgs, mut labels) = (Vec::new(), Vec::new());
    for (ci, &colour) in Colour::ALL.iter().enumerate() {
        for (si, &shape) in Shape::ALL.iter().enumerate() {
            for _ in 0..per_pair {
                let mut c = Concept::random(rng);
                c.colour = colour;
                c.shape = shape;
                let img = render(&c, domain, w.image_size as u32, rng);
                imgs.push(view(img, rng));
                labels.push(ci * Shape::ALL.len() + si);
            }
        }
    }
    (imgs, labels)
}

/// The 64 colour–shape prompts, in label order (colour-major).
fn pair_prompts() -> Vec<String> {
    Colour::ALL
        .iter()
        .flat_map(|c| {
            Shape::ALL
                .iter()
                .map(move |s| format!("a photo of a {} {}.", c.word(), s.word()))
        })
        .collect()
}

type Evaluation = (f64, f64, Vec<(String, f64)>, f64, f64);

/// Zero-shot 64-way colour–shape accuracy on freshly rendered images (a stream the corpus never
/// used): held-out pairs, seen pairs, every domain, and the photo domain's colour and shape.
fn evaluate<B: Backend>(
    w: &WorldConfig,
    model_eval: &Clip<B>,
    tok: &ClipTokenizer,
    pre: &Preprocess,
    device: &B::Device,
) -> Result<Evaluation> {
    // Zero-shot evaluation on freshly rendered images (a stream the corpus never used).
    let mut erng = crate::seeds::rng(w.seed, crate::seeds::Stream::PretrainingEval);
    let pair_prompts = pair_prompts();
    let (mut held, mut seen) = ((Vec::new(), Vec::new()), (Vec::new(), Vec::new()));
    let (imgs, labels) = pair_renders(w, Domain::Photo, EVAL_PER_PAIR, &mut erng, &mut |img, _| img);
    for (img, l) in imgs.into_iter().zip(labels) {
        let (colour, shape) = (Colour::ALL[l / Shape::ALL.len()], Shape::ALL[l % Shape::ALL.len()]);
        let slot = if held_out(shape, colour) { &mut held } else { &mut seen };
        slot.0.push(img);
        slot.1.push(l);
    }
    let predict = |imgs: &[RgbImage]| zero_shot_predictions(model_eval, tok, pre, &pair_prompts, imgs, device);
    let held_acc = accuracy(&predict(&held.0)?, &held.1, |l| l);
    let seen_acc = accuracy(&predict(&seen.0)?, &seen.1, |l| l);
    // The same 64-way task in every domain (the cross-domain variants' task).
    let mut per_domain = Vec::new();
    let (mut photo_colour_acc, mut photo_shape_acc) = (0.0, 0.0);
    for domain in [Domain::Photo, Domain::Sketch, Domain::Cartoon, Domain::Clutter] {
        let (imgs, labs) = pair_renders(w, domain, EVAL_PER_PAIR, &mut erng, &mut |img, _| img);
        let pred = predict(&imgs)?;
        if domain == Domain::Photo {
            photo_colour_acc = accuracy(&pred, &labs, |l| l / Shape::ALL.len());
            photo_shape_acc = accuracy(&pred, &labs, |l| l % Shape::ALL.len());
        }
        per_domain.push((format!("{domain:?}").to_lowercase(), accuracy(&pred, &labs, |l| l)));
    }
    Ok((held_acc, seen_acc, per_domain, photo_colour_acc, photo_shape_acc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world(crop_scale: Option<[f64; 2]>, crop_share: Option<f64>) -> WorldConfig {
        WorldConfig {
            seed: 3,
            test_images: None,
            image_size: 32,
            patch_size: 8,
            width: 32,
            layers: 1,
            context_length: 32,
            corpus_size: 200,
            steps: 10,
            batch_size: 8,
            lr: 0.005,
            weight_decay: 0.1,
            warmup_steps: 1,
            pretrain_crop_scale: crop_scale,
            pretrain_crop_share: crop_share,
            template_caption_share: None,
            text_layers: None,
        }
    }

    #[test]
    fn the_template_share_decides_how_many_captions_are_prompts() {
        let templated = |share: Option<f64>| {
            let w = WorldConfig {
                template_caption_share: share,
                ..world(None, None)
            };
            let mut p =
                Pretraining::<burn::backend::Autodiff<crate::backend::Cpu>>::new(&w, &Default::default()).unwrap();
            let prompts: std::collections::BTreeSet<String> = (0..200)
                .flat_map(|i| {
                    let c = p.corpus[i].0;
                    let mut r = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
                    (0..32).map(move |_| template_caption(&c, &mut r)).collect::<Vec<_>>()
                })
                .collect();
            (0..200).filter(|&i| prompts.contains(&p.caption(i))).count()
        };
        assert_eq!(templated(None), 0);
        assert_eq!(templated(Some(1.0)), 200);
        let half = templated(Some(0.5));
        assert!((70..130).contains(&half), "{half} of 200");
    }

    /// How many of 200 images a pretraining run with `w` sees other than as rendered.
    fn changed(w: &WorldConfig) -> usize {
        let mut p = Pretraining::<burn::backend::Autodiff<crate::backend::Cpu>>::new(w, &Default::default()).unwrap();
        let idx: Vec<usize> = (0..200).collect();
        let seen = p.batch_images(&idx);
        idx.iter().zip(&seen).filter(|(&i, img)| p.image(i) != **img).count()
    }

    #[test]
    fn the_crop_share_decides_how_many_images_are_seen_as_views() {
        assert_eq!(changed(&world(None, None)), 0);
        // Every image is cropped (a crop may, rarely, reproduce the image: scale 1, no flip).
        assert!(changed(&world(Some([0.08, 1.0]), None)) >= 195);
        let half = changed(&world(Some([0.08, 1.0]), Some(0.5)));
        assert!((70..=130).contains(&half), "{half} of 200 seen as views at share 0.5");
    }
}
