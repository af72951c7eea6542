//! Preprocessing against open_clip's eval transform (PIL bicubic resize + torchvision centre crop) on
//! real JPEG/PNG files: RGB, grayscale, RGBA and palette.

mod common;

use common::{fixture, read_raw};
use gram_bench::clip::preprocess::{load_rgb, Preprocess};

/// The tensor names of a fixture (one per image file), sorted.
fn tensor_names(path: &std::path::Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    names.sort();
    names
}

#[test]
fn eval_transform_matches_open_clip_on_real_images() {
    let p = Preprocess::clip(224);
    let reference = fixture("preprocess.safetensors");
    let names = tensor_names(&reference);
    assert!(names.len() >= 6);
    let mut worst = Vec::new();
    for name in names {
        let want_u8 = read_raw(&reference, &name); // [3, 224, 224]
        let img = load_rgb(&fixture(&format!("images/{name}"))).unwrap();
        let got = p.eval_u8(&img);
        let want: Vec<f32> = {
            let n = 224 * 224;
            (0..3 * n)
                .map(|i| (want_u8[i] as f32 / 255.0 - p.mean[i / n]) / p.std[i / n])
                .collect()
        };
        let ours = p.normalize(&got);
        let max = ours.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        let mean = ours.iter().zip(&want).map(|(a, b)| (a - b).abs()).sum::<f32>() / want.len() as f32;
        eprintln!("{name}: max |diff| {max:.4}, mean {mean:.5} (normalized units)");
        assert!(mean <= 0.002, "{name}: mean diff {mean}");
        worst.push((name.clone(), max));
    }
    for (name, max) in worst {
        assert!(max <= 0.02, "{name}: max diff {max} > 0.02");
    }
}

/// `--processor transformers` against transformers' CLIPImageProcessor (PIL backend; fixture from
/// tests/reference/transformers_preprocess.py): transparency composited onto white, the crop offset
/// floored. Exact, uint8 for uint8. The same files through Dassl's path must differ (the fixture
/// would otherwise not test the difference).
#[test]
fn transformers_processor_matches_clip_image_processor() {
    use gram_bench::clip::preprocess::{load_rgb_for, Processor};
    let p = Preprocess::clip(224);
    let reference = fixture("preprocess_transformers.safetensors");
    let names = tensor_names(&reference);
    assert_eq!(names.len(), 5);
    let chw = |img: &image::RgbImage| -> Vec<u8> { (0..3).flat_map(|c| img.pixels().map(move |px| px.0[c])).collect() };
    let mut differs_from_dassl = Vec::new();
    for name in &names {
        let want = read_raw(&reference, name);
        let path = fixture(&format!("images/{name}"));
        let got = chw(&p.eval_u8_for(
            &load_rgb_for(&path, Processor::Transformers).unwrap(),
            Processor::Transformers,
        ));
        let off = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(
            off,
            0,
            "{name}: {off} of {} values differ from CLIPImageProcessor",
            want.len()
        );
        let dassl = chw(&p.eval_u8(&load_rgb(&path).unwrap()));
        if dassl != want {
            differs_from_dassl.push(name.as_str());
        }
    }
    // Odd crop margins (hopper_odd.png, hopper_la.png) and transparency (hopper_la.png and the
    // rest) set the two apart; hopper_wide.png has an even margin and no alpha: the same under both.
    assert_eq!(
        differs_from_dassl,
        [
            "hopper_la.png",
            "hopper_odd.png",
            "hopper_rgba.png",
            "present_palette_alpha.png"
        ]
    );
}

#[test]
fn unreadable_images_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.jpg");
    std::fs::write(&bad, b"\xff\xd8\xff\xe0 this is not a jpeg").unwrap();
    let e = load_rgb(&bad).unwrap_err().to_string();
    assert!(e.contains("broken.jpg"), "{e}");
    let e = load_rgb(&dir.path().join("nope.png")).unwrap_err().to_string();
    assert!(e.contains("nope.png"), "{e}");
}
