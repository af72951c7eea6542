//! Image preprocessing as CLIP/CoOp do it with PIL + torchvision: convert to RGB, resize the shortest
//! side with PIL's bicubic (Catmull-Rom, antialiased, uint8 between passes), centre crop, then CLIP
//! mean/std. The training transform is torchvision's RandomResizedCrop + horizontal flip, seeded.

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use image::RgbImage;
use rand::Rng;

use crate::error::{Error, Result};

/// OpenAI CLIP's normalization constants, digit for digit as OpenAI and open_clip publish them.
#[allow(clippy::excessive_precision)]
pub(crate) const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
#[allow(clippy::excessive_precision)]
pub(crate) const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Preprocess {
    pub image_size: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// Whose eval preprocessing to follow. The two differ only where an image has transparency and
/// where the centre crop's margin is odd.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Processor {
    /// Dassl/CoOp and open_clip's torchvision transform, which the papers' numbers come from:
    /// PIL's `convert("RGB")` drops alpha; the crop offset is Python's `round` (half to even).
    #[default]
    Dassl,
    /// transformers' `CLIPImageProcessor`: transparency composited onto white (PIL's
    /// `alpha_composite`); the crop offset floored (`(h - 224) // 2`).
    Transformers,
}

/// Decodes any supported file and converts to RGB the way PIL's `convert("RGB")` does: grayscale is
/// replicated, palettes are expanded, alpha is dropped (not composited).
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    load_rgb_for(path, Processor::Dassl)
}

/// [`load_rgb`] as `processor` converts: transformers composites transparency (an alpha channel,
/// or a palette's or grey level's PNG transparency, which the decoder expands to alpha) onto white.
pub fn load_rgb_for(path: &Path, processor: Processor) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |reason: String| Error::Image {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return decode_jpeg(&bytes).map_err(bad);
    }
    let header = image::ImageReader::new(std::io::Cursor::new(&bytes))
        .with_guessed_format()
        .map_err(|e| bad(e.to_string()))?;
    if let Ok((w, h)) = header.into_dimensions() {
        check_pixels(w as u64, h as u64).map_err(bad)?;
    }
    let img = image::load_from_memory(&bytes).map_err(|e| bad(e.to_string()))?;
    Ok(match processor {
        Processor::Transformers if img.color().has_alpha() => on_white(&img.to_rgba8()),
        _ => img.to_rgb8(),
    })
}

/// `PIL.Image.alpha_composite(white, img)` in PIL's integer arithmetic (libImaging/AlphaComposite.c,
/// 7 fractional bits, division by 255 as shift-and-add), specialised to an opaque white backdrop:
/// its coefficients are then exactly `a·128` and `(255 − a)·128`.
fn on_white(img: &image::RgbaImage) -> RgbImage {
    let div255 = |t: u32| ((t >> 8) + t) >> 8;
    RgbImage::from_fn(img.width(), img.height(), |x, y| {
        let [r, g, b, a] = img.get_pixel(x, y).0;
        let (a, keep) = (a as u32, 255 - a as u32);
        let px = |c: u8| {
            let t = (c as u32 * a + 255 * keep) * 128;
            (div255(t + (0x80 << 7)) >> 7) as u8
        };
        if a == 0 {
            image::Rgb([255, 255, 255])
        } else {
            image::Rgb([px(r), px(g), px(b)])
        }
    })
}

/// PIL's decompression-bomb bound: `Image.open` refuses an image of more than twice
/// `Image.MAX_IMAGE_PIXELS` (89,478,485) pixels, so no image the reference code reads is larger.
/// Checked from the header, before anything is decoded: a few changed header bytes can claim
/// 65,500 × 65,500 pixels, whose buffer alone is 12 GB.
const MAX_PIXELS: u64 = 2 * 89_478_485;

fn check_pixels(w: u64, h: u64) -> std::result::Result<(), String> {
    if w * h > MAX_PIXELS {
        return Err(format!(
            "{w} × {h} pixels are more than {MAX_PIXELS} (PIL's decompression-bomb limit, which the reference code reads under)"
        ));
    }
    Ok(())
}

/// What libjpeg made of a file.
enum Jpeg {
    Rgb(usize, usize, Vec<u8>),
    /// CMYK, read to its end, for the image crate to convert.
    Cmyk,
    /// Refused from its header: the reason.
    Refused(String),
}

thread_local! {
    static QUIET_PANICS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// libjpeg reports a corrupt file by unwinding out of its error handler; this keeps that unwind from
/// printing a panic message, so the caller's error is the only line the user sees.
fn install_quiet_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET_PANICS.with(|q| q.get()) {
                previous(info);
            }
        }));
    });
}

/// JPEG through libjpeg-turbo's decoder (mozjpeg, C build without SIMD), as PIL decodes: islow IDCT
/// and fancy chroma upsampling, bit-exact with Pillow on the fixtures (the pure-Rust decoders were
/// measured 3-4 levels off on a 4:2:0 photo). CMYK files, which libjpeg cannot turn into RGB, are
/// read to the end by libjpeg (for its end-of-data signal) and converted by the image crate.
fn decode_jpeg(bytes: &[u8]) -> std::result::Result<RgbImage, String> {
    // libjpeg only warns on a file cut short (JWRN_JPEG_EOF) and fills in the rest; PIL, which the
    // upstream code reads with, raises "image file is truncated". The warning comes from libjpeg
    // asking its source for bytes past the end, which `EndWatch` sees: whatever the file holds
    // before its scan (a comment or an EXIF thumbnail with markers of its own), a file that ends
    // before libjpeg's last marker is refused.
    let ran_out = std::sync::atomic::AtomicBool::new(false);
    install_quiet_hook();
    QUIET_PANICS.with(|q| q.set(true));
    let decoded = std::panic::catch_unwind(|| -> std::io::Result<Jpeg> {
        let d = mozjpeg::Decompress::new_reader(EndWatch {
            rest: bytes,
            ran_out: &ran_out,
        })?;
        if let Err(e) = check_pixels(d.width() as u64, d.height() as u64) {
            return Ok(Jpeg::Refused(e));
        }
        if matches!(
            d.color_space(),
            mozjpeg::ColorSpace::JCS_CMYK | mozjpeg::ColorSpace::JCS_YCCK
        ) {
            let mut img = d.to_colorspace(mozjpeg::ColorSpace::JCS_CMYK)?;
            let _: Vec<[u8; 4]> = img.read_scanlines()?;
            img.finish()?;
            return Ok(Jpeg::Cmyk);
        }
        let mut img = d.rgb()?;
        let (w, h) = (img.width(), img.height());
        let px: Vec<[u8; 3]> = img.read_scanlines()?;
        img.finish()?;
        Ok(Jpeg::Rgb(w, h, px.into_iter().flatten().collect()))
    });
    QUIET_PANICS.with(|q| q.set(false));
    if ran_out.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(
            "truncated JPEG: its data ends before its end-of-image marker (libjpeg: premature end of data)".into(),
        );
    }
    match decoded {
        Ok(Ok(Jpeg::Rgb(w, h, rgb))) => RgbImage::from_raw(w as u32, h as u32, rgb)
            .ok_or_else(|| "decoded size does not match the header".to_string()),
        Ok(Ok(Jpeg::Refused(e))) => Err(e),
        Ok(Ok(Jpeg::Cmyk)) => image::load_from_memory(bytes)
            .map(|i| i.to_rgb8())
            .map_err(|e| e.to_string()),
        Ok(Err(e)) => Err(format!("corrupt JPEG: {e}")),
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "libjpeg failed".into());
            Err(format!("corrupt JPEG: {msg}"))
        }
    }
}

/// A JPEG's bytes as libjpeg's source, noting when libjpeg asks for bytes past the end: what it
/// then reports as premature end of data (and pads with a fake end-of-image marker).
struct EndWatch<'a> {
    rest: &'a [u8],
    ran_out: &'a std::sync::atomic::AtomicBool,
}

impl std::io::Read for EndWatch<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = std::io::BufRead::fill_buf(self)?.len().min(buf.len());
        buf[..n].copy_from_slice(&self.rest[..n]);
        self.rest = &self.rest[n..];
        Ok(n)
    }
}

impl std::io::BufRead for EndWatch<'_> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        if self.rest.is_empty() {
            self.ran_out.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(self.rest)
    }

    fn consume(&mut self, n: usize) {
        self.rest = &self.rest[n.min(self.rest.len())..];
    }
}

/// PIL's bicubic kernel (a = -0.5, i.e. Catmull-Rom), support 2.
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Fixed-point precision of PIL's 8-bit resampling.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// One output pixel's taps: the first input index and integer weights.
struct Taps {
    first: usize,
    weights: Vec<i32>,
}

/// PIL's antialiased filter taps for resampling `in_size` to `out_size` (ImagingResample's
/// coefficient rule: the kernel is widened by the scale when downsampling, weights normalized, then
/// rounded to fixed point away from zero).
fn taps(in_size: usize, out_size: usize) -> Vec<Taps> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let w: Vec<f64> = (xmin..xmax).map(|x| bicubic((x as f64 - center + 0.5) * ss)).collect();
            let total: f64 = w.iter().sum();
            let one = (1u64 << PRECISION_BITS) as f64;
            let weights = w
                .iter()
                .map(|k| {
                    let k = if total != 0.0 { k / total } else { *k };
                    if k < 0.0 {
                        (-0.5 + k * one) as i32
                    } else {
                        (0.5 + k * one) as i32
                    }
                })
                .collect();
            Taps { first: xmin, weights }
        })
        .collect()
}

fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One separable pass of PIL's 8-bit resampling over RGB data `w`×`h`: along x (rows) or along y
/// (columns), with a rounding offset of one half and clamping to uint8.
fn resample_pass(src: &[u8], w: usize, h: usize, taps: &[Taps], along_x: bool) -> Vec<u8> {
    let (ow, oh) = if along_x { (taps.len(), h) } else { (w, taps.len()) };
    let half = 1i64 << (PRECISION_BITS - 1);
    let mut out = vec![0u8; ow * oh * 3];
    for y in 0..oh {
        for x in 0..ow {
            // Pixel index of tap i: base + (first + i) * step.
            let (t, base, step) = if along_x {
                (&taps[x], y * w, 1)
            } else {
                (&taps[y], x, w)
            };
            for c in 0..3 {
                let acc = t.weights.iter().enumerate().fold(half, |a, (i, k)| {
                    a + src[(base + (t.first + i) * step) * 3 + c] as i64 * *k as i64
                });
                out[(y * ow + x) * 3 + c] = clip8(acc);
            }
        }
    }
    out
}

/// Resizes like PIL's `Image.resize(size, BICUBIC)` on an RGB image, bit for bit: a horizontal pass
/// to uint8, then a vertical pass. (fast_image_resize's Catmull-Rom was measured up to 18 levels off
/// PIL on edges, which breaks parity; this is PIL's documented algorithm, not a generic resampler.)
fn resize(src: &RgbImage, w: u32, h: u32) -> RgbImage {
    let (sw, sh) = (src.width() as usize, src.height() as usize);
    let (w, h) = (w as usize, h as usize);
    let mut data = src.as_raw().clone();
    if w != sw {
        data = resample_pass(&data, sw, sh, &taps(sw, w), true);
    }
    if h != sh {
        data = resample_pass(&data, w, sh, &taps(sh, h), false);
    }
    RgbImage::from_raw(w as u32, h as u32, data).expect("buffer length matches")
}

fn crop(img: &RgbImage, left: u32, top: u32, w: u32, h: u32) -> RgbImage {
    image::imageops::crop_imm(img, left, top, w, h).to_image()
}

/// torchvision's RandomResizedCrop box `[left, top, width, height]`: ten tries at a random area and
/// log-uniform aspect ratio, then a centre crop clamped to the ratio range.
pub(crate) fn random_resized_crop_box(
    w: u32,
    h: u32,
    scale: (f64, f64),
    ratio: (f64, f64),
    rng: &mut impl Rng,
) -> [u32; 4] {
    let area = (w * h) as f64;
    let (lr0, lr1) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target = area * rng.random_range(scale.0..=scale.1);
        let aspect = rng.random_range(lr0..=lr1).exp();
        let cw = (target * aspect).sqrt().round() as i64;
        let ch = (target / aspect).sqrt().round() as i64;
        if 0 < cw && cw <= w as i64 && 0 < ch && ch <= h as i64 {
            let top = rng.random_range(0..=(h as i64 - ch)) as u32;
            let left = rng.random_range(0..=(w as i64 - cw)) as u32;
            return [left, top, cw as u32, ch as u32];
        }
    }
    let in_ratio = w as f64 / h as f64;
    let (cw, ch) = if in_ratio < ratio.0 {
        (w, ((w as f64) / ratio.0).round() as u32)
    } else if in_ratio > ratio.1 {
        (((h as f64) * ratio.1).round() as u32, h)
    } else {
        (w, h)
    };
    [(w - cw) / 2, (h - ch) / 2, cw, ch]
}

impl Preprocess {
    pub fn clip(image_size: usize) -> Self {
        Self {
            image_size,
            mean: CLIP_MEAN,
            std: CLIP_STD,
        }
    }

    /// Eval transform up to uint8: shortest side to `image_size` (long side truncated, as
    /// torchvision computes it), then a centre crop whose offset rounds half to even (Python's round).
    pub fn eval_u8(&self, img: &RgbImage) -> RgbImage {
        self.eval_u8_for(img, Processor::Dassl)
    }

    /// [`Self::eval_u8`] as `processor` crops (transformers floors the offset).
    pub fn eval_u8_for(&self, img: &RgbImage, processor: Processor) -> RgbImage {
        let s = self.image_size as u32;
        let (w, h) = img.dimensions();
        let (nw, nh) = if w <= h {
            (s, (s as u64 * h as u64 / w as u64) as u32)
        } else {
            ((s as u64 * w as u64 / h as u64) as u32, s)
        };
        let resized = if (nw, nh) == (w, h) {
            img.clone()
        } else {
            resize(img, nw, nh)
        };
        let offset = |margin: u32| match processor {
            Processor::Dassl => (margin as f64 / 2.0).round_ties_even() as u32,
            Processor::Transformers => margin / 2,
        };
        let (top, left) = (offset(nh - s), offset(nw - s));
        crop(&resized, left, top, s, s)
    }

    /// Training transform up to uint8: RandomResizedCrop(scale 0.08–1, ratio 3/4–4/3, bicubic) and a
    /// horizontal flip with probability 1/2.
    pub(crate) fn train_u8(&self, img: &RgbImage, rng: &mut impl Rng) -> RgbImage {
        self.resized_crop_flip_u8(img, (0.08, 1.0), rng)
    }

    /// RandomResizedCrop of area fraction `scale` (ratio 3/4–4/3, bicubic), then a horizontal flip
    /// with probability 1/2.
    pub(crate) fn resized_crop_flip_u8(&self, img: &RgbImage, scale: (f64, f64), rng: &mut impl Rng) -> RgbImage {
        let s = self.image_size as u32;
        let (w, h) = img.dimensions();
        let [l, t, cw, ch] = random_resized_crop_box(w, h, scale, (3.0 / 4.0, 4.0 / 3.0), rng);
        // torchvision's resized_crop crops, then resizes: the filter never reads outside the box.
        let mut out = resize(&crop(img, l, t, cw, ch), s, s);
        if rng.random_bool(0.5) {
            image::imageops::flip_horizontal_in_place(&mut out);
        }
        out
    }

    /// `[3, size, size]` normalized floats (channel-major) of a uint8 crop.
    pub fn normalize(&self, crop: &RgbImage) -> Vec<f32> {
        let (w, h) = crop.dimensions();
        let n = (w * h) as usize;
        let mut out = vec![0.0f32; 3 * n];
        for (i, p) in crop.pixels().enumerate() {
            for c in 0..3 {
                out[c * n + i] = (p.0[c] as f32 / 255.0 - self.mean[c]) / self.std[c];
            }
        }
        out
    }

    /// Stacks normalized crops into `[batch, 3, size, size]`.
    pub fn batch<B: Backend>(&self, crops: &[RgbImage], device: &B::Device) -> Tensor<B, 4> {
        let s = self.image_size;
        let mut data = Vec::with_capacity(crops.len() * 3 * s * s);
        for c in crops {
            assert_eq!(c.dimensions(), (s as u32, s as u32), "crop size must equal image_size");
            data.extend(self.normalize(c));
        }
        Tensor::from_data(TensorData::new(data, [crops.len(), 3, s, s]), device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 7 % 256) as u8, (y * 5 % 256) as u8, ((x + y) % 256) as u8])
        })
    }

    #[test]
    fn a_jpeg_cut_short_anywhere_after_its_scan_starts_is_refused() {
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
            .encode_image(&gradient(40, 30))
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        };
        assert_eq!(load_rgb(&write("whole.jpg", &jpeg)).unwrap().dimensions(), (40, 30));
        // Bytes after the end-of-image marker are not a truncation.
        let mut padded = jpeg.clone();
        padded.extend_from_slice(&[0; 16]);
        assert!(load_rgb(&write("padded.jpg", &padded)).is_ok());
        let sos = jpeg.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
        for cut in [2, 8, (jpeg.len() - sos) / 2] {
            let e = load_rgb(&write("cut.jpg", &jpeg[..jpeg.len() - cut]))
                .unwrap_err()
                .to_string();
            assert!(e.contains("truncated JPEG"), "cut by {cut}: {e}");
        }
        // A comment segment before the frame holding a start-of-scan and an end-of-image pair (as
        // an EXIF thumbnail does) does not hide a cut: libjpeg's own end-of-data signal decides.
        let mut commented = jpeg[..2].to_vec();
        commented.extend_from_slice(&[0xFF, 0xFE, 0x00, 0x06, 0xFF, 0xDA, 0xFF, 0xD9]);
        commented.extend_from_slice(&jpeg[2..]);
        assert_eq!(
            load_rgb(&write("commented.jpg", &commented)).unwrap(),
            load_rgb(&write("w.jpg", &jpeg)).unwrap()
        );
        for cut in [2, (jpeg.len() - sos) / 2] {
            let e = load_rgb(&write("commented-cut.jpg", &commented[..commented.len() - cut]))
                .unwrap_err()
                .to_string();
            assert!(e.contains("truncated JPEG"), "commented, cut by {cut}: {e}");
        }
    }

    #[test]
    fn an_image_claiming_more_pixels_than_pil_opens_is_refused_from_its_header() {
        let dir = tempfile::tempdir().unwrap();
        // The JPEG fixture with its frame header changed to 65,500 × 65,500 (12 GB as RGB): refused
        // before libjpeg allocates a row, in milliseconds.
        let mut jpeg =
            std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images/hopper_gray.jpg")).unwrap();
        let sof = jpeg
            .windows(2)
            .position(|w| w[0] == 0xFF && matches!(w[1], 0xC0..=0xC2))
            .unwrap();
        jpeg[sof + 5..sof + 9].copy_from_slice(&[0xFF, 0xDC, 0xFF, 0xDC]);
        let p = dir.path().join("huge.jpg");
        std::fs::write(&p, &jpeg).unwrap();
        let e = load_rgb(&p).unwrap_err().to_string();
        assert!(e.ends_with("65500 × 65500 pixels are more than 178956970 (PIL's decompression-bomb limit, which the reference code reads under)"), "{e}");
        // A PNG whose header claims the same (its checksum made to match).
        let mut png = Vec::new();
        gradient(4, 4)
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        png[16..24].copy_from_slice(&[0, 0, 0xFF, 0xDC, 0, 0, 0xFF, 0xDC]);
        let mut crc = flate2::Crc::new();
        crc.update(&png[12..29]);
        png[29..33].copy_from_slice(&crc.sum().to_be_bytes());
        let p = dir.path().join("huge.png");
        std::fs::write(&p, &png).unwrap();
        let e = load_rgb(&p).unwrap_err().to_string();
        assert!(e.contains("65500 × 65500 pixels are more than 178956970"), "{e}");
        // PIL's own edge: more than twice MAX_IMAGE_PIXELS is refused, twice is not.
        assert!(check_pixels(2 * 89_478_485, 1).is_ok());
        assert!(check_pixels(2 * 89_478_485 + 1, 1).is_err());
    }

    #[test]
    fn eval_transform_gives_a_square_of_the_model_size() {
        let p = Preprocess::clip(32);
        for (w, h) in [(100, 60), (60, 100), (32, 32), (33, 200)] {
            assert_eq!(p.eval_u8(&gradient(w, h)).dimensions(), (32, 32));
        }
    }

    #[test]
    fn random_resized_crop_is_seeded_and_in_bounds() {
        let mut a = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut b = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for _ in 0..200 {
            let ba = random_resized_crop_box(300, 200, (0.08, 1.0), (0.75, 4.0 / 3.0), &mut a);
            assert_eq!(
                ba,
                random_resized_crop_box(300, 200, (0.08, 1.0), (0.75, 4.0 / 3.0), &mut b)
            );
            let [l, t, w, h] = ba;
            assert!(w > 0 && h > 0 && l + w <= 300 && t + h <= 200, "{ba:?}");
            let area = (w * h) as f64 / 60000.0;
            assert!(area <= 1.0);
        }
        // An impossible ratio range falls back to the centre crop clamped to the range.
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        assert_eq!(
            random_resized_crop_box(1000, 10, (0.99, 1.0), (0.75, 1.333), &mut r),
            [493, 0, 13, 10]
        );
    }

    #[test]
    fn train_transform_flips_about_half_the_time() {
        let p = Preprocess::clip(16);
        let img = gradient(40, 40);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let outs: Vec<RgbImage> = (0..40).map(|_| p.train_u8(&img, &mut rng)).collect();
        assert!(outs.iter().all(|o| o.dimensions() == (16, 16)));
        // x-gradient in red: a flipped crop has red decreasing left to right.
        let flipped = outs
            .iter()
            .filter(|o| o.get_pixel(0, 8).0[0] > o.get_pixel(15, 8).0[0])
            .count();
        assert!((8..=32).contains(&flipped), "{flipped} of 40 flipped");
    }

    #[test]
    fn taps_sum_to_one_and_stay_in_bounds() {
        for (i, o) in [(600, 224), (224, 224), (100, 224), (7, 3), (3, 7)] {
            for t in taps(i, o) {
                let sum: i64 = t.weights.iter().map(|&k| k as i64).sum();
                assert!(
                    (sum - (1 << PRECISION_BITS)).abs() <= t.weights.len() as i64,
                    "{i}->{o}: {sum}"
                );
                assert!(t.first + t.weights.len() <= i);
            }
        }
        // Same size: the kernel is the identity.
        let img = gradient(9, 5);
        assert_eq!(resize(&img, 9, 5), img);
    }

    #[test]
    fn normalize_is_channel_major() {
        let p = Preprocess::clip(1);
        let img = RgbImage::from_pixel(1, 1, image::Rgb([255, 0, 128]));
        let v = p.normalize(&img);
        assert!((v[0] - (1.0 - CLIP_MEAN[0]) / CLIP_STD[0]).abs() < 1e-6);
        assert!((v[1] + CLIP_MEAN[1] / CLIP_STD[1]).abs() < 1e-6);
    }
}
