//! The image pipeline on real-sized JPEGs (500×375, quality 90, textured so they compress like
//! photos): decode + CLIP eval preprocessing (224) in images/s on one core and on all cores, and
//! the end-to-end evaluation of one test split at ViT-B/16 shapes (decode, preprocess, encode;
//! random weights), which is what the feature cache saves for every later method on that split.
//! Figures: docs/performance.md, "Performance".
//!
//!     cargo bench --bench pipeline

use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gram_bench::backend::Cpu;
use gram_bench::clip::{ClipConfig, Preprocess, RandomInit};
use gram_bench::data::images::{prepare, ImageCache, Transform};
use gram_bench::features::encode_images;

const IMAGES: usize = 64;
const SPLIT: usize = 32;

fn write_jpegs(dir: &Path, n: usize) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let p = dir.join(format!("img_{i}.jpg"));
            let img = image::RgbImage::from_fn(500, 375, |x, y| {
                // Smooth structure plus per-pixel texture: JPEG sizes like a photo's (~60–100 KB).
                let h = (x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503) ^ i as u32).wrapping_mul(2_246_822_519);
                let n = (h >> 27) as u8;
                image::Rgb([
                    ((x / 3 + i as u32 * 17) % 256) as u8 ^ n,
                    ((y / 2 + x / 7) % 256) as u8 ^ (n >> 1),
                    (((x + y) / 4) % 256) as u8 ^ (n >> 2),
                ])
            });
            let mut f = std::io::BufWriter::new(std::fs::File::create(&p).unwrap());
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut f, 90)
                .encode_image(&img)
                .unwrap();
            p
        })
        .collect()
}

fn pipeline(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_jpegs(dir.path(), IMAGES);
    let bytes: u64 = paths.iter().map(|p| std::fs::metadata(p).unwrap().len()).sum();
    eprintln!("{IMAGES} JPEGs 500x375, mean {} KB", bytes / IMAGES as u64 / 1024);
    let pre = Preprocess::clip(224);
    // Budget 0: every image is decoded again, as for a split larger than the cache.
    let cache = ImageCache::new(0);
    let jobs: Vec<(&Path, Transform)> = paths.iter().map(|p| (p.as_path(), Transform::Eval)).collect();
    let mut g = c.benchmark_group("decode_preprocess_224");
    g.throughput(Throughput::Elements(IMAGES as u64));
    g.sample_size(10);
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    g.bench_function("1 thread", |b| b.iter(|| one.install(|| prepare(&cache, &pre, &jobs))));
    let n = rayon::current_num_threads();
    g.bench_function(format!("{n} threads"), |b| b.iter(|| prepare(&cache, &pre, &jobs)));
    g.finish();

    let device = Default::default();
    let clip = ClipConfig::vit_b_16()
        .init::<Cpu>(&mut RandomInit::new(0), &device)
        .expect("random init")
        .freeze();
    let split: Vec<PathBuf> = paths[..SPLIT].to_vec();
    let mut g = c.benchmark_group("eval_split_vit_b16");
    g.throughput(Throughput::Elements(SPLIT as u64));
    g.sample_size(10);
    g.bench_function(format!("{SPLIT} images, batch 32"), |b| {
        b.iter(|| encode_images(&clip, &pre, &cache, &split, 32, &device).unwrap())
    });
    g.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
