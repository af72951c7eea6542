//! Miniature replicas of all 15 CoOp data layouts (real folder, file and split-file names; a few
//! tiny JPEGs per class), generated here, never copied from the CoOp release. Each is read by its
//! loader and checked for class names, split counts, few-shot and base/new sizes; then
//! `datasets lock` / `verify --deep` run over the whole data root.

use std::path::Path;
use std::process::Command;

use gram_bench::data::coop::catalog;
use gram_bench::data::{few_shot_indices, subsample_labels, Dataset, Subsample};
use serde_json::json;

fn jpeg(path: &Path, seed: usize) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = image::RgbImage::from_fn(12, 10, |x, y| {
        image::Rgb([(seed * 37 % 256) as u8, (x * 20) as u8, (y * 25) as u8])
    });
    img.save_with_format(path, image::ImageFormat::Jpeg).unwrap();
}

/// A split_zhou dataset: `classes` of (image folder relpath pattern, CoOp's class name), 3 train,
/// 1 val and 2 test images per class.
fn zhou(root: &Path, folder: &str, image_dir: &str, split_file: &str, classes: &[(&str, &str)]) {
    let dir = root.join(folder);
    let mut split = json!({"train": [], "val": [], "test": []});
    let mut n = 0;
    for (label, (rel_dir, name)) in classes.iter().enumerate() {
        for i in 0..6 {
            n += 1;
            let rel = if rel_dir.is_empty() {
                format!("{:05}.jpg", n)
            } else {
                format!("{rel_dir}/image_{:04}.jpg", i + 1)
            };
            jpeg(&dir.join(image_dir).join(&rel), n);
            let part = match i {
                0..=2 => "train",
                3 => "val",
                _ => "test",
            };
            split[part].as_array_mut().unwrap().push(json!([rel, label, name]));
        }
    }
    std::fs::write(dir.join(split_file), serde_json::to_vec(&split).unwrap()).unwrap();
}

fn classnames(dir: &Path, wnids: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    let text: String = wnids.iter().map(|(w, n)| format!("{w} {n}\n")).collect();
    std::fs::write(dir.join("classnames.txt"), text).unwrap();
}

const WNIDS: [(&str, &str); 3] = [
    ("n01440764", "tench"),
    ("n01443537", "goldfish"),
    ("n01484850", "great white shark"),
];

/// Writes all 15 layouts under `root`.
fn write_all(root: &Path) {
    zhou(
        root,
        "caltech-101",
        "101_ObjectCategories",
        "split_zhou_Caltech101.json",
        &[
            ("accordion", "accordion"),
            ("Faces_easy", "face"),
            ("Leopards", "leopard"),
        ],
    );
    zhou(
        root,
        "oxford_pets",
        "images",
        "split_zhou_OxfordPets.json",
        &[("", "abyssinian"), ("", "american_bulldog")],
    );
    zhou(
        root,
        "stanford_cars",
        "",
        "split_zhou_StanfordCars.json",
        &[("cars_train", "2012 Tesla Model S"), ("cars_test", "2012 BMW M3 coupe")],
    );
    zhou(
        root,
        "oxford_flowers",
        "jpg",
        "split_zhou_OxfordFlowers.json",
        &[
            ("", "pink primrose"),
            ("", "hard-leaved pocket orchid"),
            ("", "canterbury bells"),
        ],
    );
    zhou(
        root,
        "food-101",
        "images",
        "split_zhou_Food101.json",
        &[("apple_pie", "apple_pie"), ("baby_back_ribs", "baby_back_ribs")],
    );
    zhou(
        root,
        "sun397",
        "SUN397",
        "split_zhou_SUN397.json",
        &[
            ("a/abbey", "abbey"),
            ("a/airplane_cabin", "airplane cabin"),
            ("b/bakery/shop", "bakery shop"),
        ],
    );
    zhou(
        root,
        "dtd",
        "images",
        "split_zhou_DescribableTextures.json",
        &[("banded", "banded"), ("blotchy", "blotchy")],
    );
    zhou(
        root,
        "eurosat",
        "2750",
        "split_zhou_EuroSAT.json",
        &[
            ("AnnualCrop", "Annual Crop Land"),
            ("Forest", "Forest"),
            ("River", "River"),
        ],
    );
    zhou(
        root,
        "ucf101",
        "UCF-101-midframes",
        "split_zhou_UCF101.json",
        &[("Apply_Eye_Makeup", "Apply_Eye_Makeup"), ("Archery", "Archery")],
    );
    // FGVC-Aircraft: the official variant lists.
    let fgvc = root.join("fgvc_aircraft");
    std::fs::create_dir_all(&fgvc).unwrap();
    std::fs::write(fgvc.join("variants.txt"), "707-320\nA300B4\nF/A-18\n").unwrap();
    let mut id = 1_000_000;
    for (split, per) in [("train", 3), ("val", 1), ("test", 2)] {
        let mut lines = String::new();
        for v in ["707-320", "A300B4", "F/A-18"] {
            for _ in 0..per {
                id += 1;
                jpeg(&fgvc.join(format!("images/{id}.jpg")), id);
                lines.push_str(&format!("{id} {v}\n"));
            }
        }
        std::fs::write(fgvc.join(format!("images_variant_{split}.txt")), lines).unwrap();
    }
    // ImageNet: wnid folders for train and val, classnames.txt.
    let inet = root.join("imagenet");
    classnames(&inet, &WNIDS);
    for (k, (w, _)) in WNIDS.iter().enumerate() {
        for i in 0..3 {
            jpeg(&inet.join(format!("images/train/{w}/{w}_{}.JPEG", 100 + i)), k * 10 + i);
        }
        jpeg(&inet.join(format!("images/val/{w}/ILSVRC2012_val_0000000{k}.JPEG")), k);
    }
    // ImageNet-V2 (index folders), -Sketch (all classes), -A and -R (a subset of classes).
    let v2 = root.join("imagenetv2");
    classnames(&v2, &WNIDS);
    for i in 0..3 {
        jpeg(
            &v2.join(format!("imagenetv2-matched-frequency-format-val/{i}/{:040x}.jpeg", i)),
            i,
        );
    }
    let sk = root.join("imagenet-sketch");
    classnames(&sk, &WNIDS);
    for (k, (w, _)) in WNIDS.iter().enumerate() {
        jpeg(&sk.join(format!("images/{w}/sketch_{k}.JPEG")), k);
    }
    for (folder, sub) in [
        ("imagenet-adversarial", "imagenet-a"),
        ("imagenet-rendition", "imagenet-r"),
    ] {
        let d = root.join(folder);
        classnames(&d, &WNIDS);
        for (k, (w, _)) in WNIDS.iter().enumerate().skip(1) {
            jpeg(&d.join(format!("{sub}/{w}/{k}_0.jpg")), k);
            jpeg(&d.join(format!("{sub}/{w}/{k}_1.jpg")), k + 5);
        }
    }
}

#[test]
fn every_layout_loads_with_its_class_names_split_counts_few_shot_and_base_new_sizes() {
    let dir = tempfile::tempdir().unwrap();
    write_all(dir.path());
    // (name, classes, [train, val, test], first class name)
    let expect: &[(&str, usize, [usize; 3], &str)] = &[
        ("imagenet", 3, [9, 3, 3], "tench"),
        ("caltech101", 3, [9, 3, 6], "accordion"),
        ("oxford_pets", 2, [6, 2, 4], "abyssinian"),
        ("stanford_cars", 2, [6, 2, 4], "2012 Tesla Model S"),
        ("oxford_flowers", 3, [9, 3, 6], "pink primrose"),
        ("food101", 2, [6, 2, 4], "apple_pie"),
        ("fgvc_aircraft", 3, [9, 3, 6], "707-320"),
        ("sun397", 3, [9, 3, 6], "abbey"),
        ("dtd", 2, [6, 2, 4], "banded"),
        ("eurosat", 3, [9, 3, 6], "Annual Crop Land"),
        ("ucf101", 2, [6, 2, 4], "Apply_Eye_Makeup"),
        ("imagenet_v2", 3, [0, 0, 3], "tench"),
        ("imagenet_sketch", 3, [0, 0, 3], "tench"),
        // -A and -R: labels among their own classes only.
        ("imagenet_a", 2, [0, 0, 4], "goldfish"),
        ("imagenet_r", 2, [0, 0, 4], "goldfish"),
    ];
    let defs = catalog();
    assert_eq!(defs.len(), expect.len());
    for &(name, classes, counts, first) in expect {
        let def = defs.iter().find(|d| d.name == name).unwrap();
        let ds = Dataset::load(dir.path(), def).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(ds.classnames.len(), classes, "{name}");
        assert_eq!([ds.train.len(), ds.val.len(), ds.test.len()], counts, "{name}");
        assert_eq!(ds.classnames[0], first, "{name}");
        assert!(
            ds.test.iter().all(|d| d.path.is_file()),
            "{name}: every listed image exists"
        );
        if !def.test_only {
            // K per class from train (all when fewer), min(K, 4) from val.
            for k in [1, 2, 4, 8, 16] {
                let idx = few_shot_indices(&ds.train, k, 1);
                let per_class = (ds.train.len() / classes).min(k);
                assert_eq!(idx.len(), per_class * classes, "{name} K={k}");
                let v = few_shot_indices(&ds.val, k.min(4), 1);
                assert_eq!(
                    v.len(),
                    (ds.val.len() / classes).min(k.min(4)) * classes,
                    "{name} K={k} val"
                );
            }
        }
        let base = subsample_labels(classes, Subsample::Base).len();
        assert_eq!(base, classes.div_ceil(2), "{name}");
        assert_eq!(base + subsample_labels(classes, Subsample::New).len(), classes);
    }

    // The commands over the whole root: pin everything (hashing the images), then verify deep.
    let bin = env!("CARGO_BIN_EXE_gram-bench");
    let run = |args: &[&str]| Command::new(bin).args(args).current_dir(dir.path()).output().unwrap();
    let out = run(&["datasets", "lock", "--data-root", ".", "--deep"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&["datasets", "verify", "--data-root", ".", "--deep"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.lines().filter(|l| l.starts_with("ok ")).count(), 15, "{text}");
}
