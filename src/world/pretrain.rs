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
use super::render::render;
use super::WorldConfig;
use crate::clip::{
    Activation, Clip, ClipConfig, ClipTextConfig, ClipTokenizer, ClipVisionConfig, Preprocess, RandomInit,
};
use crate::error::Result;

/// Colour–shape pairs that never appear in the pretraining corpus (two colours per shape, two
/// shapes per colour).
pub fn held_out(shape: Shape, colour: Colour) -> bool {
    let s = Shape::ALL.iter().position(|&x| x == shape).expect("shape is in ALL");
    let c = Colour::ALL.iter().position(|&x| x == colour).expect("colour is in ALL");
    s % 4 == c % 4
}

/// The micro-CLIP architecture the world config asks for (OpenAI's tokenizer and vocabulary).
pub fn micro_clip_config(w: &WorldConfig) -> ClipConfig {
    let heads = (w.width / 32).max(1);
    ClipConfig::new(
        ClipTextConfig::new(
            49408,
            w.width,
            4 * w.width,
            w.layers,
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
}

fn domain_of(r: f64) -> Domain {
    match r {
        r if r < 0.55 => Domain::Photo,
        r if r < 0.70 => Domain::Sketch,
        r if r < 0.85 => Domain::Cartoon,
        _ => Domain::Clutter,
    }
}

/// Top-1 accuracy (%) of classifying `images` (true labels `labels`) among `prompts`.
fn zero_shot_acc<B: Backend>(
    model: &Clip<B>,
    tok: &ClipTokenizer,
    pre: &Preprocess,
    prompts: &[String],
    images: &[RgbImage],
    labels: &[usize],
    device: &B::Device,
) -> Result<f64> {
    let text = Clip::normalize(model.encode_text(tok, prompts)?);
    let mut correct = 0usize;
    for (chunk, lab) in images.chunks(256).zip(labels.chunks(256)) {
        let img = Clip::normalize(model.encode_image(pre.batch(chunk, device), &Default::default()));
        let pred = img
            .matmul(text.clone().transpose())
            .argmax(1)
            .into_data()
            .convert::<i64>();
        let pred = pred.to_vec::<i64>().expect("converted to i64 above");
        correct += pred.iter().zip(lab).filter(|(p, l)| **p as usize == **l).count();
    }
    Ok(100.0 * correct as f64 / images.len() as f64)
}

/// Trains a micro-CLIP from a random init; `log` receives progress lines.
pub fn pretrain<B: AutodiffBackend>(
    w: &WorldConfig,
    device: &B::Device,
    log: &mut dyn FnMut(usize, usize, f32),
) -> Result<(ClipConfig, Clip<B>, PretrainReport)> {
    let t0 = std::time::Instant::now();
    let cfg = micro_clip_config(w);
    let mut model: Clip<B> = cfg.init(&mut RandomInit::new(w.seed), device)?;
    let tok = ClipTokenizer::openai(w.context_length)?;
    let pre = Preprocess::clip(w.image_size);
    let mut rng = crate::seeds::rng(w.seed, crate::seeds::Stream::Pretraining);

    // The corpus: images rendered once; captions are re-drawn every time an image is used.
    let mut corpus: Vec<(Concept, Domain, RgbImage)> = Vec::with_capacity(w.corpus_size);
    while corpus.len() < w.corpus_size {
        let c = Concept::random(&mut rng);
        if held_out(c.shape, c.colour) {
            continue;
        }
        let d = domain_of(rng.random());
        let img = render(&c, d, w.image_size as u32, &mut rng);
        corpus.push((c, d, img));
    }

    let mut opt = AdamWConfig::new().with_weight_decay(w.weight_decay as f32).init();
    let b = w.batch_size;
    let labels = Tensor::<B, 1, Int>::from_data(TensorData::new((0..b as i64).collect::<Vec<_>>(), [b]), device)
        .one_hot::<2>(b)
        .float();
    let mut last = f32::NAN;
    for step in 0..w.steps {
        let idx: Vec<usize> = (0..b).map(|_| rng.random_range(0..corpus.len())).collect();
        let imgs: Vec<RgbImage> = idx.iter().map(|&i| corpus[i].2.clone()).collect();
        let caps: Vec<String> = idx
            .iter()
            .map(|&i| corpus[i].0.caption(corpus[i].1, &mut rng))
            .collect();
        let im = Clip::normalize(model.encode_image(pre.batch(&imgs, device), &Default::default()));
        let tx = Clip::normalize(model.encode_text(&tok, &caps)?);
        let logits = model.logits_per_image(im, tx);
        let loss = (cross_entropy_with_logits(logits.clone(), labels.clone())
            + cross_entropy_with_logits(logits.transpose(), labels.clone()))
            / 2.0;
        last = loss.clone().into_scalar().elem::<f32>();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let lr = if step < w.warmup_steps {
            w.lr * (step + 1) as f64 / w.warmup_steps as f64
        } else {
            let p = (step - w.warmup_steps) as f64 / (w.steps - w.warmup_steps).max(1) as f64;
            w.lr * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
        };
        model = opt.step(lr, model, grads);
        log(step + 1, w.steps, last);
    }
    let model_eval = model.valid();

    // Zero-shot evaluation on freshly rendered images (a stream the corpus never used).
    let mut erng = crate::seeds::rng(w.seed, crate::seeds::Stream::PretrainingEval);
    let pair_prompts: Vec<String> = Colour::ALL
        .iter()
        .flat_map(|c| {
            Shape::ALL
                .iter()
                .map(move |s| format!("a photo of a {} {}.", c.word(), s.word()))
        })
        .collect();
    let (mut held, mut seen) = ((Vec::new(), Vec::new()), (Vec::new(), Vec::new()));
    for (ci, &colour) in Colour::ALL.iter().enumerate() {
        for (si, &shape) in Shape::ALL.iter().enumerate() {
            for _ in 0..6 {
                let mut c = Concept::random(&mut erng);
                c.colour = colour;
                c.shape = shape;
                let img = render(&c, Domain::Photo, w.image_size as u32, &mut erng);
                let slot = if held_out(shape, colour) { &mut held } else { &mut seen };
                slot.0.push(img);
                slot.1.push(ci * Shape::ALL.len() + si);
            }
        }
    }
    let dev = device.clone();
    let held_acc = zero_shot_acc(&model_eval, &tok, &pre, &pair_prompts, &held.0, &held.1, &dev)?;
    let seen_acc = zero_shot_acc(&model_eval, &tok, &pre, &pair_prompts, &seen.0, &seen.1, &dev)?;
    // The same 64-way task in every domain (the cross-domain variants' task).
    let mut per_domain = Vec::new();
    for domain in [Domain::Photo, Domain::Sketch, Domain::Cartoon, Domain::Clutter] {
        let (mut imgs, mut labs) = (Vec::new(), Vec::new());
        for (ci, &colour) in Colour::ALL.iter().enumerate() {
            for (si, &shape) in Shape::ALL.iter().enumerate() {
                for _ in 0..2 {
                    let mut c = Concept::random(&mut erng);
                    c.colour = colour;
                    c.shape = shape;
                    imgs.push(render(&c, domain, w.image_size as u32, &mut erng));
                    labs.push(ci * Shape::ALL.len() + si);
                }
            }
        }
        let acc = zero_shot_acc(&model_eval, &tok, &pre, &pair_prompts, &imgs, &labs, &dev)?;
        per_domain.push((format!("{domain:?}").to_lowercase(), acc));
    }
    let report = PretrainReport {
        steps: w.steps,
        final_loss: last,
        seconds: t0.elapsed().as_secs_f64(),
        held_out_pairs_acc: held_acc,
        seen_pairs_acc: seen_acc,
        domain_acc: per_domain,
    };
    Ok((cfg, model, report))
}
