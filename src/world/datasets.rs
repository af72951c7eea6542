//! The embedded world's downstream datasets: each has its own label space, template and visual
//! domain, and is written to disk in CoOp's layout (an image folder plus `split_zhou_<Name>.json`
//! with `[relpath, label, classname]` entries) so that what runs on it is the real dataset loader.

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::concepts::{Colour, Concept, Domain, Shape, Texture};
use super::render::render;
use crate::error::{Error, Result};

/// Which attributes make up a class; the others vary freely inside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Axis {
    Colour,
    Texture,
    Shape,
}

/// One world dataset, described the way the CoOp datasets are: folder, split file, template.
#[derive(Clone, Debug)]
pub(crate) struct WorldDataset {
    /// Name used in suites, and its folder under the world's data root.
    pub name: &'static str,
    /// The split file inside the folder is `split_zhou_<split_name>.json`.
    pub split_name: &'static str,
    /// The hand-crafted zero-shot template (`{}` is the class name), as `CUSTOM_TEMPLATES` gives.
    pub template: &'static str,
    /// Class attributes, slowest first: the label order. CoCoOp's base-to-new protocol takes the
    /// first half of the labels as base classes, so the first axis decides what is new: `world`
    /// puts shape first (its new half holds shapes the base half never shows, in every colour),
    /// `patterns` texture. Class names always read in caption order (colour, texture, shape).
    pub axes: &'static [Axis],
    pub domain: Domain,
    /// Images per class in train / val (test-only datasets have none); the test split's size is
    /// the `[world]` table's `test_images`.
    pub per_class: [usize; 2],
    /// The dataset whose label space and trained prompts this one evaluates (domain shift targets).
    pub variant_of: Option<&'static str>,
}

/// The embedded datasets. `world` (colour × shape) plays ImageNet: the source of cross-dataset and
/// cross-domain transfer, with domain variants in the roles of ImageNet-Sketch/-R/-A; the others are
/// downstream targets with their own label spaces and templates.
pub(crate) const WORLD_DATASETS: &[WorldDataset] = &[
    WorldDataset {
        name: "world",
        split_name: "World",
        template: "a photo of a {}.",
        axes: &[Axis::Shape, Axis::Colour],
        domain: Domain::Photo,
        per_class: [16, 4],
        variant_of: None,
    },
    world_variant("world_sketch", "WorldSketch", Domain::Sketch),
    world_variant("world_cartoon", "WorldCartoon", Domain::Cartoon),
    world_variant("world_clutter", "WorldClutter", Domain::Clutter),
    WorldDataset {
        name: "shapes",
        split_name: "Shapes",
        template: "a drawing of a {}, a type of shape.",
        axes: &[Axis::Shape],
        domain: Domain::Cartoon,
        per_class: [16, 4],
        variant_of: None,
    },
    WorldDataset {
        name: "patterns",
        split_name: "Patterns",
        template: "{} texture.",
        axes: &[Axis::Texture, Axis::Colour],
        // DTD's images are photos of surfaces; a rendition here (docs/calibration-log.md,
        // "Calibration log", runs J–L: in the cluttered domain, as in the photo domain, CoOp's gain
        // was mostly the domain's).
        domain: Domain::Cartoon,
        per_class: [16, 4],
        variant_of: None,
    },
];

/// A test-only domain shift of `world`: its label space and template, another domain.
const fn world_variant(name: &'static str, split_name: &'static str, domain: Domain) -> WorldDataset {
    WorldDataset {
        name,
        split_name,
        template: "a photo of a {}.",
        axes: &[Axis::Shape, Axis::Colour],
        domain,
        per_class: [0, 0],
        variant_of: Some("world"),
    }
}

pub(crate) fn world_dataset(name: &str) -> Option<&'static WorldDataset> {
    WORLD_DATASETS.iter().find(|d| d.name == name)
}

/// A class: the fixed attribute values (None = free).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ClassSpec {
    pub colour: Option<Colour>,
    pub texture: Option<Texture>,
    pub shape: Option<Shape>,
}

impl ClassSpec {
    pub fn name(&self) -> String {
        let mut words = Vec::new();
        if let Some(c) = self.colour {
            words.push(c.word());
        }
        if let Some(t) = self.texture {
            words.push(t.word());
        }
        if let Some(s) = self.shape {
            words.push(s.word());
        }
        words.join(" ")
    }

    /// A concept of this class, its free attributes drawn at random.
    pub fn sample(&self, rng: &mut impl Rng) -> Concept {
        let mut c = Concept::random(rng);
        if let Some(v) = self.colour {
            c.colour = v;
        }
        if let Some(v) = self.texture {
            c.texture = v;
        }
        if let Some(v) = self.shape {
            c.shape = v;
        }
        c
    }
}

/// A caption in the words a zero-shot prompt uses: one of the datasets with their own label space,
/// drawn at random, its template filled with the name of the class `concept` belongs to there.
pub(crate) fn template_caption(concept: &Concept, rng: &mut impl Rng) -> String {
    let own: Vec<&WorldDataset> = WORLD_DATASETS.iter().filter(|d| d.variant_of.is_none()).collect();
    let ds = own[rng.random_range(0..own.len())];
    let class = ClassSpec {
        colour: ds.axes.contains(&Axis::Colour).then_some(concept.colour),
        texture: ds.axes.contains(&Axis::Texture).then_some(concept.texture),
        shape: ds.axes.contains(&Axis::Shape).then_some(concept.shape),
    };
    ds.template.replace("{}", &class.name())
}

impl WorldDataset {
    /// Classes in label order: the product of the axes, first axis slowest.
    pub fn classes(&self) -> Vec<ClassSpec> {
        let mut out = vec![ClassSpec {
            colour: None,
            texture: None,
            shape: None,
        }];
        for axis in self.axes {
            out = out
                .into_iter()
                .flat_map(|c| -> Vec<ClassSpec> {
                    match axis {
                        Axis::Colour => Colour::ALL
                            .iter()
                            .map(|&v| ClassSpec { colour: Some(v), ..c })
                            .collect(),
                        Axis::Texture => Texture::ALL
                            .iter()
                            .map(|&v| ClassSpec { texture: Some(v), ..c })
                            .collect(),
                        Axis::Shape => Shape::ALL.iter().map(|&v| ClassSpec { shape: Some(v), ..c }).collect(),
                    }
                })
                .collect();
        }
        out
    }
}

#[derive(Serialize)]
struct Split {
    train: Vec<(String, usize, String)>,
    val: Vec<(String, usize, String)>,
    test: Vec<(String, usize, String)>,
}

impl WorldDataset {
    /// Test images per class for a test split of about `test_images` (rounded up to whole classes).
    pub(crate) fn test_per_class(&self, test_images: usize) -> usize {
        test_images.div_ceil(self.classes().len())
    }
}

/// Renders `ds` under `root/<name>/` (images in `images/<class>/`, PNG) and writes its split file,
/// with `test_per_class` test images per class.
/// Every image is a pure function of (`seed`, dataset, split, class, index).
pub(crate) fn write_dataset(
    root: &Path,
    ds: &WorldDataset,
    seed: u64,
    image_size: u32,
    test_per_class: usize,
) -> Result<()> {
    let dir = root.join(ds.name);
    let classes = ds.classes();
    let mut split = Split {
        train: Vec::new(),
        val: Vec::new(),
        test: Vec::new(),
    };
    for (label, class) in classes.iter().enumerate() {
        let name = class.name();
        let folder = name.replace(' ', "_");
        let class_dir = dir.join("images").join(&folder);
        std::fs::create_dir_all(&class_dir).map_err(|e| Error::io(&class_dir, e))?;
        for (s, (part, n)) in [
            ("train", ds.per_class[0]),
            ("val", ds.per_class[1]),
            ("test", test_per_class),
        ]
        .into_iter()
        .enumerate()
        {
            for i in 0..n {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                // Independent streams per image: the dataset name, split, label and index select one.
                rng.set_stream(stream_id(ds.name, s, label, i));
                let concept = class.sample(&mut rng);
                let img = render(&concept, ds.domain, image_size, &mut rng);
                let rel = format!("{folder}/{part}_{i:03}.png");
                let path = dir.join("images").join(&rel);
                img.save(&path).map_err(|e| Error::Image {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                let entry = (rel, label, name.clone());
                match s {
                    0 => split.train.push(entry),
                    1 => split.val.push(entry),
                    _ => split.test.push(entry),
                }
            }
        }
    }
    let path = dir.join(format!("split_zhou_{}.json", ds.split_name));
    let text = serde_json::to_string(&split).expect("split entries always serialize");
    std::fs::write(&path, text).map_err(|e| Error::io(&path, e))
}

fn stream_id(name: &str, split: usize, label: usize, index: usize) -> u64 {
    let h = name
        .bytes()
        .fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3));
    h ^ ((split as u64) << 56) ^ ((label as u64) << 24) ^ index as u64
}

#[cfg(test)]
mod tests {
    #[test]
    fn template_captions_are_a_dataset_prompt_for_the_concept() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let c = Concept {
            shape: Shape::Star,
            colour: Colour::Red,
            texture: Texture::Striped,
            size: crate::world::Size::ALL[0],
            position: crate::world::Position::ALL[0],
        };
        let seen: std::collections::BTreeSet<String> = (0..64).map(|_| template_caption(&c, &mut rng)).collect();
        let want: std::collections::BTreeSet<String> = [
            "a photo of a red star.",
            "a drawing of a star, a type of shape.",
            "red striped texture.",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(seen, want);
    }

    use super::*;

    #[test]
    fn label_spaces_are_products_of_their_axes() {
        let world = world_dataset("world").unwrap().classes();
        assert_eq!(world.len(), 64);
        assert_eq!(world[0].name(), "red circle");
        assert_eq!(world[1].name(), "orange circle");
        assert_eq!(world[8].name(), "red square");
        assert_eq!(world_dataset("patterns").unwrap().classes()[1].name(), "orange plain");
        assert_eq!(world_dataset("patterns").unwrap().classes()[8].name(), "red striped");
        assert_eq!(world_dataset("shapes").unwrap().classes().len(), 8);
    }

    #[test]
    fn a_written_dataset_has_the_coop_layout_and_is_deterministic() {
        let ds = WorldDataset {
            per_class: [2, 1],
            ..world_dataset("shapes").unwrap().clone()
        };
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        write_dataset(a.path(), &ds, 7, 16, 1).unwrap();
        write_dataset(b.path(), &ds, 7, 16, 1).unwrap();
        let split: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(a.path().join("shapes/split_zhou_Shapes.json")).unwrap())
                .unwrap();
        assert_eq!(split["train"].as_array().unwrap().len(), 16);
        assert_eq!(
            split["test"][0],
            serde_json::json!(["circle/test_000.png", 0, "circle"])
        );
        let rel = "shapes/images/star/train_001.png";
        assert_eq!(
            std::fs::read(a.path().join(rel)).unwrap(),
            std::fs::read(b.path().join(rel)).unwrap()
        );
    }
}
