//! Renders a [`Concept`] in a [`Domain`] to a small RGB image: shapes are signed-distance functions,
//! supersampled for anti-aliasing; every random choice (pose jitter, shading, noise, distractors)
//! comes from the caller's seeded RNG, so an image is a pure function of (concept, domain, seed).

use image::{Rgb, RgbImage};
use rand::Rng;

use super::concepts::{Colour, Concept, Domain, Position, Shape, Size, Texture};

/// Samples per pixel side (4×4 = 16 samples per pixel).
const SS: u32 = 4;

/// Signed distance (negative inside) of `shape` with unit radius at point `(x, y)`.
fn sdf(shape: Shape, x: f32, y: f32) -> f32 {
    let (ax, ay) = (x.abs(), y.abs());
    match shape {
        Shape::Circle => (x * x + y * y).sqrt() - 1.0,
        Shape::Square => ax.max(ay) - 0.8,
        Shape::Diamond => (ax + ay) / std::f32::consts::SQRT_2 - 0.75,
        Shape::Ring => ((x * x + y * y).sqrt() - 0.75).abs() - 0.25,
        Shape::Cross => {
            let bar = |u: f32, v: f32| (u - 1.0).max(v - 0.33);
            bar(ax, ay).min(bar(ay, ax))
        }
        Shape::Hexagon => {
            let k = 3f32.sqrt() / 2.0;
            (ax * k + ay * 0.5).max(ay) - 0.85
        }
        Shape::Triangle => {
            // Equilateral, pointing up, centred: the max of three half-plane distances.
            let k = 3f32.sqrt();
            let y = y + 0.25;
            ((k * ax + y) / 2.0).max(-y) - 0.5
        }
        Shape::Star => {
            // Five points: radius oscillates with the angle.
            let r = (x * x + y * y).sqrt();
            let a = y.atan2(x) + std::f32::consts::FRAC_PI_2;
            let spike = ((a * 5.0 / 2.0).cos().abs()).powf(2.0);
            r - (0.45 + 0.55 * spike)
        }
    }
}

/// The pattern's shade factor at object-space point `(u, v)`: 1 keeps the body colour.
fn texture(t: Texture, u: f32, v: f32) -> f32 {
    match t {
        Texture::Plain => 1.0,
        Texture::Striped => {
            if ((u + v) * 4.0).rem_euclid(2.0) < 1.0 {
                1.0
            } else {
                0.45
            }
        }
        Texture::Dotted => {
            let (fu, fv) = ((u * 3.0).rem_euclid(1.0) - 0.5, (v * 3.0).rem_euclid(1.0) - 0.5);
            if fu * fu + fv * fv < 0.06 {
                0.3
            } else {
                1.0
            }
        }
        Texture::Checkered => {
            let parity = ((u * 2.5).floor() + (v * 2.5).floor()) as i64;
            if parity.rem_euclid(2) == 0 {
                1.0
            } else {
                0.5
            }
        }
    }
}

/// Where and how large one object is drawn, in image units (the frame is [-1, 1]²).
#[derive(Clone, Copy, Debug)]
struct Pose {
    cx: f32,
    cy: f32,
    radius: f32,
    angle: f32,
}

fn pose(c: &Concept, rng: &mut impl Rng) -> Pose {
    let radius = match c.size {
        Size::Small => rng.random_range(0.36..0.44),
        Size::Large => rng.random_range(0.58..0.70),
    };
    let off = 0.95 - radius;
    let (cx, cy) = match c.position {
        Position::Centre => (0.0, 0.0),
        Position::Left => (-off, 0.0),
        Position::Right => (off, 0.0),
        Position::Top => (0.0, -off),
        Position::Bottom => (0.0, off),
    };
    let j = 0.06;
    Pose {
        cx: cx + rng.random_range(-j..j),
        cy: cy + rng.random_range(-j..j),
        radius,
        angle: rng.random_range(-0.35..0.35),
    }
}

/// Object-space coordinates of image point `(x, y)` under `p` (unit radius, de-rotated).
fn to_object(p: &Pose, x: f32, y: f32) -> (f32, f32) {
    let (dx, dy) = ((x - p.cx) / p.radius, (y - p.cy) / p.radius);
    let (s, c) = p.angle.sin_cos();
    (c * dx + s * dy, -s * dx + c * dy)
}

fn jitter(rgb: [f32; 3], amount: f32, rng: &mut impl Rng) -> [f32; 3] {
    rgb.map(|v| (v + rng.random_range(-amount..amount)).clamp(0.0, 1.0))
}

struct Layer {
    shape: Shape,
    pose: Pose,
    colour: [f32; 3],
    texture: Texture,
}

/// Renders `concept` in `domain` at `size`×`size` pixels.
pub fn render(concept: &Concept, domain: Domain, size: u32, rng: &mut impl Rng) -> RgbImage {
    let main = Layer {
        shape: concept.shape,
        pose: pose(concept, rng),
        // Renditions bend colours (ImageNet-R's cartoons and paintings): a cartoon's fill strays
        // further from the hue's base colour than a photo's does.
        colour: jitter(
            concept.colour.rgb(),
            if domain == Domain::Cartoon { 0.14 } else { 0.06 },
            rng,
        ),
        texture: concept.texture,
    };
    // Backgrounds: a neutral lit gradient for photos (a studio backdrop: its light changes, its
    // hue does not, so the object's colour reads as itself), paper for sketches, a flat pastel for
    // cartoons, and a tinted gradient for cluttered photos.
    let bg_a = match domain {
        Domain::Sketch => [0.97, 0.96, 0.93],
        Domain::Cartoon => jitter([0.80, 0.88, 0.95], 0.12, rng),
        Domain::Photo => [rng.random_range(0.45..0.70); 3],
        Domain::Clutter => jitter([0.55, 0.55, 0.55], 0.15, rng),
    };
    let bg_b = match domain {
        Domain::Photo => {
            let l = rng.random_range(-0.15..0.15);
            bg_a.map(|v| (v + l).clamp(0.0, 1.0))
        }
        Domain::Clutter => jitter(bg_a, 0.2, rng),
        _ => bg_a,
    };
    let light = rng.random_range(0.0..std::f32::consts::TAU);
    let mut layers = Vec::new();
    let mut occluder = None;
    if domain == Domain::Clutter {
        // Distractors behind the object, and one bar across it.
        for _ in 0..rng.random_range(2..5) {
            let other = Concept::random(rng);
            let mut p = pose(&other, rng);
            p.radius *= 0.6;
            let colour = Colour::ALL[rng.random_range(0..Colour::ALL.len())].rgb();
            layers.push(Layer {
                shape: other.shape,
                pose: p,
                colour,
                texture: other.texture,
            });
        }
        let y0 = main.pose.cy + rng.random_range(-0.3..0.3) * main.pose.radius;
        occluder = Some((y0, rng.random_range(0.06..0.12), jitter([0.35, 0.3, 0.25], 0.1, rng)));
    }
    layers.push(main);
    let noise = match domain {
        Domain::Photo | Domain::Clutter => 0.04,
        _ => 0.0,
    };
    let mut img = RgbImage::new(size, size);
    let n = (size * SS) as f32;
    for py in 0..size {
        for px in 0..size {
            let mut acc = [0.0f32; 3];
            for sy in 0..SS {
                for sx in 0..SS {
                    let x = ((px * SS + sx) as f32 + 0.5) / n * 2.0 - 1.0;
                    let y = ((py * SS + sy) as f32 + 0.5) / n * 2.0 - 1.0;
                    let t = 0.5 + 0.5 * (x * light.cos() + y * light.sin()) / std::f32::consts::SQRT_2;
                    let mut c: [f32; 3] = std::array::from_fn(|i| bg_a[i] * (1.0 - t) + bg_b[i] * t);
                    for layer in &layers {
                        let (u, v) = to_object(&layer.pose, x, y);
                        let d = sdf(layer.shape, u, v);
                        let edge = 0.08;
                        c = match domain {
                            Domain::Sketch => {
                                // Coloured-pencil outline and hatching on paper: no fill, no
                                // shading, and the pencil's colour mostly greyed (sketches carry
                                // less colour than photos, as ImageNet-Sketch's do): a third of it is left.
                                let grey = layer.colour.iter().sum::<f32>() / 3.0;
                                let pencil = layer.colour.map(|v| 0.35 * v + 0.65 * grey);
                                if d.abs() < edge {
                                    pencil.map(|v| v * 0.8)
                                } else if d < 0.0 && texture(layer.texture, u, v) < 1.0 {
                                    pencil.map(|v| 0.45 * v + 0.5)
                                } else if d < 0.0 {
                                    [0.97, 0.96, 0.93]
                                } else {
                                    c
                                }
                            }
                            Domain::Cartoon => {
                                if d.abs() < edge * 1.2 {
                                    [0.05, 0.05, 0.05]
                                } else if d < 0.0 {
                                    // Posterized flat fill, two levels per channel: renditions
                                    // bend colours (ImageNet-R's cartoons and paintings).
                                    let f = texture(layer.texture, u, v);
                                    layer.colour.map(|v| ((v * f * 2.0).round() / 2.0).min(1.0))
                                } else {
                                    c
                                }
                            }
                            Domain::Photo | Domain::Clutter => {
                                if d < 0.0 {
                                    let f = texture(layer.texture, u, v);
                                    let shade = 0.85 + 0.15 * (1.0 - t);
                                    layer.colour.map(|v| (v * f * shade).min(1.0))
                                } else {
                                    c
                                }
                            }
                        };
                    }
                    if let Some((y0, half, col)) = occluder {
                        if (y - y0).abs() < half {
                            c = col;
                        }
                    }
                    for i in 0..3 {
                        acc[i] += c[i];
                    }
                }
            }
            let s = (SS * SS) as f32;
            let mut rgb = acc.map(|v| v / s);
            if noise > 0.0 {
                rgb = jitter(rgb, noise, rng);
            }
            img.put_pixel(px, py, Rgb(rgb.map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8)));
        }
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn rng(seed: u64) -> rand_chacha::ChaCha8Rng {
        rand_chacha::ChaCha8Rng::seed_from_u64(seed)
    }

    fn concept(shape: Shape, colour: Colour, size: Size) -> Concept {
        Concept {
            shape,
            colour,
            texture: Texture::Plain,
            size,
            position: Position::Centre,
        }
    }

    #[test]
    fn an_image_is_a_function_of_its_seed() {
        let c = concept(Shape::Star, Colour::Blue, Size::Large);
        for d in Domain::ALL {
            assert_eq!(render(&c, *d, 32, &mut rng(9)), render(&c, *d, 32, &mut rng(9)));
            assert_ne!(render(&c, *d, 32, &mut rng(9)), render(&c, *d, 32, &mut rng(10)));
        }
    }

    #[test]
    fn every_shape_has_an_inside_of_plausible_area() {
        for &s in Shape::ALL {
            let n = 200;
            let inside = (0..n * n)
                .filter(|i| {
                    let (x, y) = (
                        (i % n) as f32 / n as f32 * 3.0 - 1.5,
                        (i / n) as f32 / n as f32 * 3.0 - 1.5,
                    );
                    sdf(s, x, y) < 0.0
                })
                .count() as f32
                / (n * n) as f32
                * 9.0;
            assert!((0.6..3.2).contains(&inside), "{s:?}: area {inside}");
            assert!(sdf(s, 0.0, 0.0) < 0.0 || s == Shape::Ring, "{s:?} contains its centre");
            assert!(sdf(s, 1.4, 1.4) > 0.0, "{s:?} stays inside the unit box");
        }
    }

    #[test]
    fn sketches_keep_the_colour_in_strokes_only_and_photos_fill_the_body() {
        let c = concept(Shape::Square, Colour::Red, Size::Large);
        let sketch = render(&c, Domain::Sketch, 32, &mut rng(1));
        // Paper inside the body, (mostly greyed) red strokes somewhere.
        let centre = sketch.get_pixel(16, 16).0;
        assert!(centre.iter().all(|&v| v > 200), "paper at the centre: {centre:?}");
        assert!(
            sketch.pixels().any(|p| p.0[0] as i32 - p.0[2] as i32 > 50),
            "no red stroke"
        );
        let photo = render(&c, Domain::Photo, 32, &mut rng(1));
        let centre = photo.get_pixel(16, 16).0;
        assert!(
            centre[0] as i32 - centre[2] as i32 > 80,
            "red body at the centre: {centre:?}"
        );
    }

    #[test]
    fn large_objects_cover_more_than_small_ones() {
        let cover = |size| {
            let img = render(
                &concept(Shape::Circle, Colour::Green, size),
                Domain::Cartoon,
                32,
                &mut rng(4),
            );
            // The body: green, or teal where the jitter posterizes its blue up (not the pale
            // background, not the black outline).
            img.pixels().filter(|p| p.0[1] > 100 && p.0[0] < 100).count()
        };
        assert!(
            cover(Size::Large) > 2 * cover(Size::Small),
            "{} vs {}",
            cover(Size::Large),
            cover(Size::Small)
        );
    }
}
