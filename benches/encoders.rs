//! CLIP encoders at ViT-B/16 shapes with random weights: 8 images, 100 prompts; forward, and
//! forward + backward through prompt tokens (CoOp context vectors, VPT visual tokens).
//! The same shapes in PyTorch: benches/pytorch_encoders.py. Figures: docs/performance.md, "Performance".
//!
//!     cargo bench --bench encoders                      # CPU (flex)
//!     cargo bench --bench encoders --features ndarray   # adds the ndarray backend, for comparison
//!     cargo bench --bench encoders --features cuda      # adds CUDA (on a machine with a GPU)

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use gram_bench::clip::workload::{image_backward_to_prompts, read_sum, text_backward_to_context, text_forward, Inputs};
use gram_bench::clip::{Clip, ClipConfig, RandomInit, VisionPrompts};

const IMAGES: usize = 8;
const PROMPTS: usize = 100;
const N_CTX: usize = 4;
const N_VPT: usize = 8;

fn setup<B: Backend>(device: &B::Device) -> (Clip<B>, Inputs<B>) {
    let cfg = ClipConfig::vit_b_16();
    let model = cfg
        .init::<B>(&mut RandomInit::new(0), device)
        .expect("random init")
        .freeze();
    (model, Inputs::new(&cfg, IMAGES, PROMPTS, N_CTX, device))
}

fn sync<B: Backend>(t: Tensor<B, 2>) {
    let _ = read_sum(t);
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
        b.iter(|| image_backward_to_prompts(&model, &inputs, N_VPT))
    });
    for (id, trim) in [
        ("text_forward_backward_ctx", false),
        ("text_forward_backward_ctx_trimmed", true),
    ] {
        g.bench_function(BenchmarkId::new(id, PROMPTS), |b| {
            b.iter(|| text_backward_to_context(&model, &inputs, trim))
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
