//! The embedded world's concept space: compositional attributes, visual domains, and the natural
//! language captions that describe a concept. Everything is deterministic from a seed.

use rand::Rng;
use serde::{Deserialize, Serialize};

macro_rules! attribute {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $word:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The word captions use.
            pub fn word(self) -> &'static str {
                match self { $($name::$variant => $word),+ }
            }
        }
    };
}

attribute!(
    /// Outline of the object.
    Shape {
        Circle => "circle", Square => "square", Triangle => "triangle", Diamond => "diamond",
        Star => "star", Cross => "cross", Ring => "ring", Hexagon => "hexagon",
    }
);

attribute!(
    /// Body colour (hues far apart, so a small model can tell them apart).
    Colour {
        Red => "red", Orange => "orange", Yellow => "yellow", Green => "green",
        Cyan => "cyan", Blue => "blue", Purple => "purple", Pink => "pink",
    }
);

attribute!(
    /// Surface pattern inside the outline.
    Texture { Plain => "plain", Striped => "striped", Dotted => "dotted", Checkered => "checkered" }
);

attribute!(
    Size { Small => "small", Large => "large" }
);

attribute!(
    /// Where the object sits in the frame.
    Position {
        Centre => "in the centre", Left => "on the left", Right => "on the right",
        Top => "at the top", Bottom => "at the bottom",
    }
);

attribute!(
    /// Visual domains that mimic the ImageNet variants' shifts.
    Domain { Photo => "photo", Sketch => "sketch", Cartoon => "cartoon", Clutter => "cluttered photo" }
);

impl Colour {
    /// Base RGB of the hue.
    pub fn rgb(self) -> [f32; 3] {
        match self {
            Colour::Red => [0.86, 0.12, 0.12],
            Colour::Orange => [0.96, 0.55, 0.10],
            Colour::Yellow => [0.95, 0.88, 0.15],
            Colour::Green => [0.15, 0.70, 0.22],
            Colour::Cyan => [0.15, 0.80, 0.85],
            Colour::Blue => [0.15, 0.25, 0.85],
            Colour::Purple => [0.55, 0.20, 0.75],
            Colour::Pink => [0.96, 0.50, 0.75],
        }
    }
}

/// A uniformly chosen element of a non-empty constant list.
fn pick<T: Copy>(rng: &mut impl Rng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

/// One object's attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Concept {
    pub shape: Shape,
    pub colour: Colour,
    pub texture: Texture,
    pub size: Size,
    pub position: Position,
}

impl Concept {
    /// Every concept, in a fixed order.
    pub fn all() -> Vec<Concept> {
        let mut out = Vec::new();
        for &shape in Shape::ALL {
            for &colour in Colour::ALL {
                for &texture in Texture::ALL {
                    for &size in Size::ALL {
                        for &position in Position::ALL {
                            out.push(Concept {
                                shape,
                                colour,
                                texture,
                                size,
                                position,
                            });
                        }
                    }
                }
            }
        }
        out
    }

    pub fn random(rng: &mut impl Rng) -> Concept {
        Concept {
            shape: pick(rng, Shape::ALL),
            colour: pick(rng, Colour::ALL),
            texture: pick(rng, Texture::ALL),
            size: pick(rng, Size::ALL),
            position: pick(rng, Position::ALL),
        }
    }

    /// A natural-language caption in one of several phrasings; attributes are sometimes left out,
    /// as real alt-text does, but shape and colour always appear.
    pub fn caption(&self, domain: Domain, rng: &mut impl Rng) -> String {
        let texture = match self.texture {
            Texture::Plain => {
                if rng.random_bool(0.5) {
                    "plain "
                } else {
                    ""
                }
            }
            Texture::Striped => "striped ",
            Texture::Dotted => {
                if rng.random_bool(0.5) {
                    "dotted "
                } else {
                    "polka-dot "
                }
            }
            Texture::Checkered => "checkered ",
        };
        let size = if rng.random_bool(0.7) {
            format!("{} ", self.size.word())
        } else {
            String::new()
        };
        let colour = format!("{} ", self.colour.word());
        let object = format!("{size}{colour}{texture}{}", self.shape.word());
        let place = if rng.random_bool(0.6) {
            format!(" {}", self.position.word())
        } else {
            String::new()
        };
        let medium = match domain {
            Domain::Photo => pick(rng, &["a photo of", "a picture of", "an image of"]),
            Domain::Sketch => pick(
                rng,
                &["a sketch of", "a coloured pencil drawing of", "a line drawing of"],
            ),
            Domain::Cartoon => pick(rng, &["a cartoon of", "an illustration of", "a drawing of"]),
            Domain::Clutter => pick(rng, &["a cluttered photo of", "a busy photo with", "a photo of"]),
        };
        match rng.random_range(0..3) {
            0 => format!("{medium} a {object}{place}."),
            1 => format!("there is a {object}{place}."),
            _ => format!("{medium} a {object}{place}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn the_concept_space_is_the_full_product() {
        let all = Concept::all();
        assert_eq!(all.len(), 8 * 8 * 4 * 2 * 5);
        let unique: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(unique.len(), all.len());
    }

    #[test]
    fn captions_name_shape_and_colour_in_every_domain() {
        let words = |s: &str| -> Vec<String> { s.split(|c: char| !c.is_alphabetic()).map(str::to_string).collect() };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for _ in 0..200 {
            let c = Concept::random(&mut rng);
            for d in [Domain::Photo, Domain::Sketch, Domain::Cartoon, Domain::Clutter] {
                let w = words(&c.caption(d, &mut rng));
                assert!(
                    w.iter().any(|x| x == c.shape.word()) && w.iter().any(|x| x == c.colour.word()),
                    "{w:?}"
                );
            }
        }
    }
}
