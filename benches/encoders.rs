//! CLIP encoders at ViT-B/16 shapes with random weights: 8 images, 100 prompts; forward, and
//! forward + backward through prompt tokens (CoOp context vectors, VPT visual tokens).
//! The same shapes in PyTorch: benches/pytorch_encoders.py. Figures: README, "Performance".
//!
//!     cargo bench --bench encoders                      # CPU (flex)
//!     cargo bench --bench encoders --features ndarray   # adds the ndarray backend, for comparison
//!     cargo bench --bench encoders --features cuda      # adds CUDA (on a machine with a GPU)

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use gram_bench::clip::{Clip, ClipConfig, RandomInit, VisionPrompts};

const IMAGES: usize = 8;
const PROMPTS: usize = 100;
const N_CTX: usize = 4;
const N_VPT: usize = 8;

struct Inputs<B: Backend> {
    pixels: Tensor<B, 4>,
    ids: Tensor<B, 2, Int>,
    eos: Vec<usize>,
}

fn setup<B: Backend>(device: &B::Device) -> (Clip<B>, Inputs<B>) {
    let cfg = ClipConfig::vit_b_16();
    let model = cfg
        .init::<B>(&mut RandomInit::new(0), device)
        .expect("random init")
        .freeze();
    let pixels = Tensor::random([IMAGES, 3, 224, 224], Distribution::Normal(0.0, 1.0), device);
    // SOT, the context placeholders, a class name of a few tokens, ".", EOT, padding: CoOp's prompt shape.
    let mut ids = vec![0i64; PROMPTS * 77];
    let mut eos = Vec::with_capacity(PROMPTS);
    for p in 0..PROMPTS {
        let name_len = 1 + p % 4;
        let row = &mut ids[p * 77..(p + 1) * 77];
        row[0] = 49406;
        for (i, t) in row.iter_mut().enumerate().take(1 + N_CTX + name_len + 1).skip(1) {
            *t = 1000 + ((p * 31 + i * 7) % 40000) as i64;
        }
        let e = 1 + N_CTX + name_len + 1;
        row[e] = 49407;
        eos.push(e);
    }
    let ids = Tensor::from_data(TensorData::new(ids, [PROMPTS, 77]), device);
    (model, Inputs { pixels, ids, eos })
}

/// `trim`: pool on the prefix up to the last EOS (`forward_pooled`) instead of all 77 positions.
fn text_forward<B: Backend>(m: &Clip<B>, x: &Inputs<B>, ctx: Option<Tensor<B, 3>>, trim: bool) -> Tensor<B, 2> {
    let tokens = m.text_model.embed_tokens(x.ids.clone());
    let embeds = match ctx {
        Some(ctx) => {
            let [n, _, w] = tokens.dims();
            Tensor::cat(
                vec![
                    tokens.clone().narrow(1, 0, 1),
                    ctx.expand([n, N_CTX, w]),
                    tokens.narrow(1, 1 + N_CTX, 77 - 1 - N_CTX),
                ],
                1,
            )
        }
        None => tokens,
    };
    let pooled = if trim {
        m.text_model.forward_pooled(embeds, &x.eos, None)
    } else {
        m.text_model.forward_embeds(embeds, &x.eos, None, false).pooled
    };
    m.text_features(pooled)
}

fn sync<B: Backend>(t: Tensor<B, 2>) {
    // Reading one value back forces lazy/async backends to finish the work.
    let _ = t.sum().into_data();
}

fn bench_backend<B: Backend>(c: &mut Criterion, name: &str, device: B::Device, with_backward: bool) {
    let (model, inputs) = setup::<B>(&device);
    let mut g = c.benchmark_group(format!("vit_b16/{name}"));
    g.sample_size(10);
    g.bench_function(BenchmarkId::new("image_forward", IMAGES), |b| {
        b.iter(|| sync(model.encode_image(inputs.pixels.clone(), &VisionPrompts::default())))
    });
    g.bench_function(BenchmarkId::new("text_forward", PROMPTS), |b| {
        b.iter(|| sync(text_forward(&model, &inputs, None, false)))
    });
    g.bench_function(BenchmarkId::new("text_forward_trimmed", PROMPTS), |b| {
        b.iter(|| sync(text_forward(&model, &inputs, None, true)))
    });
    g.finish();
    if with_backward {
        bench_backward::<B>(c, name, device);
    }
}

fn bench_backward<B: Backend>(c: &mut Criterion, name: &str, device: B::Device) {
    type A<B> = Autodiff<B>;
    let (model, inputs) = setup::<A<B>>(&device);
    let mut g = c.benchmark_group(format!("vit_b16/{name}"));
    g.sample_size(10);
    g.bench_function(BenchmarkId::new("image_forward_backward_vpt", IMAGES), |b| {
        b.iter(|| {
            let vpt =
                Tensor::<A<B>, 3>::random([1, N_VPT, 768], Distribution::Normal(0.0, 0.02), &device).require_grad();
            let f = model.encode_image(
                inputs.pixels.clone(),
                &VisionPrompts {
                    shallow: Some(vpt.clone()),
                    deep: vec![],
                },
            );
            let grads = f.powf_scalar(2.0).mean().backward();
            sync(
                vpt.grad(&grads)
                    .expect("prompt gradient")
                    .sum_dim(2)
                    .squeeze_dim::<2>(2),
            )
        })
    });
    for (id, trim) in [
        ("text_forward_backward_ctx", false),
        ("text_forward_backward_ctx_trimmed", true),
    ] {
        g.bench_function(BenchmarkId::new(id, PROMPTS), |b| {
            b.iter(|| {
                let ctx =
                    Tensor::<A<B>, 3>::random([1, N_CTX, 512], Distribution::Normal(0.0, 0.02), &device).require_grad();
                let f = text_forward(&model, &inputs, Some(ctx.clone()), trim);
                let grads = f.powf_scalar(2.0).mean().backward();
                sync(
                    ctx.grad(&grads)
                        .expect("prompt gradient")
                        .sum_dim(2)
                        .squeeze_dim::<2>(2),
                )
            })
        });
    }
    g.finish();
}

fn encoders(c: &mut Criterion) {
    bench_backend::<gram_bench::backend::Cpu>(c, "cpu_flex", Default::default(), true);
    #[cfg(feature = "ndarray")]
    bench_backend::<burn::backend::NdArray>(c, "cpu_ndarray", Default::default(), false);
    #[cfg(feature = "cuda")]
    bench_backend::<burn::backend::Cuda>(c, "cuda", Default::default(), true);
    #[cfg(feature = "wgpu")]
    bench_backend::<burn::backend::Wgpu>(c, "wgpu", Default::default(), true);
}

criterion_group!(benches, encoders);
criterion_main!(benches);
