//! The CoOp datasets as KaiyangZhou/CoOp's `DATASETS.md` lays them out under `$DATA`: folders,
//! split sources, templates (`CUSTOM_TEMPLATES`), and the readers for the layouts that are not a
//! `split_zhou_*.json` (FGVC-Aircraft's lists, ImageNet's class folders and its variants).
//! Class-name rules that CoOp applies while *creating* a split file (EuroSAT's renames, Pets'
//! breeds, …) are already in the names the JSON carries, so the JSON is read as it is.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{sha256_hex, DatasetDef, Datum, Layout};
use crate::error::{Error, Result};

fn zhou(name: &str, folder: &str, split: &str, image_dir: &str, template: &str) -> DatasetDef {
    DatasetDef {
        name: name.into(),
        folder: folder.into(),
        layout: Layout::SplitZhou {
            split_file: format!("split_zhou_{split}.json"),
            image_dir: image_dir.into(),
        },
        template: template.into(),
        imagenet_like: false,
        test_only: false,
        embedded: false,
    }
}

fn imagenet_variant(name: &str, folder: &str, layout: Layout) -> DatasetDef {
    DatasetDef {
        name: name.into(),
        folder: folder.into(),
        layout,
        template: "a photo of a {}.".into(),
        imagenet_like: true,
        test_only: true,
        embedded: false,
    }
}

/// The 11 CoOp datasets and the 4 ImageNet variants.
pub fn catalog() -> Vec<DatasetDef> {
    vec![
        DatasetDef {
            name: "imagenet".into(),
            folder: "imagenet".into(),
            layout: Layout::ImageNet,
            template: "a photo of a {}.".into(),
            imagenet_like: true,
            test_only: false,
            embedded: false,
        },
        zhou(
            "caltech101",
            "caltech-101",
            "Caltech101",
            "101_ObjectCategories",
            "a photo of a {}.",
        ),
        zhou(
            "oxford_pets",
            "oxford_pets",
            "OxfordPets",
            "images",
            "a photo of a {}, a type of pet.",
        ),
        zhou("stanford_cars", "stanford_cars", "StanfordCars", "", "a photo of a {}."),
        zhou(
            "oxford_flowers",
            "oxford_flowers",
            "OxfordFlowers",
            "jpg",
            "a photo of a {}, a type of flower.",
        ),
        zhou(
            "food101",
            "food-101",
            "Food101",
            "images",
            "a photo of {}, a type of food.",
        ),
        DatasetDef {
            name: "fgvc_aircraft".into(),
            folder: "fgvc_aircraft".into(),
            layout: Layout::Fgvc,
            template: "a photo of a {}, a type of aircraft.".into(),
            imagenet_like: false,
            test_only: false,
            embedded: false,
        },
        zhou("sun397", "sun397", "SUN397", "SUN397", "a photo of a {}."),
        zhou("dtd", "dtd", "DescribableTextures", "images", "{} texture."),
        zhou(
            "eurosat",
            "eurosat",
            "EuroSAT",
            "2750",
            "a centered satellite photo of {}.",
        ),
        zhou(
            "ucf101",
            "ucf101",
            "UCF101",
            "UCF-101-midframes",
            "a photo of a person doing {}.",
        ),
        imagenet_variant(
            "imagenet_v2",
            "imagenetv2",
            Layout::IndexFolders {
                image_dir: "imagenetv2-matched-frequency-format-val".into(),
            },
        ),
        imagenet_variant(
            "imagenet_sketch",
            "imagenet-sketch",
            Layout::WnidFolders {
                image_dir: "images".into(),
            },
        ),
        imagenet_variant(
            "imagenet_a",
            "imagenet-adversarial",
            Layout::WnidFolders {
                image_dir: "imagenet-a".into(),
            },
        ),
        imagenet_variant(
            "imagenet_r",
            "imagenet-rendition",
            Layout::WnidFolders {
                image_dir: "imagenet-r".into(),
            },
        ),
    ]
}

/// train, val, test, the digest of the split definition, and of `classnames.txt` where the
/// layout names its classes from one.
type Splits = (Vec<Datum>, Vec<Datum>, Vec<Datum>, String, Option<String>);

/// SHA-256 of a class-name file, read for the digest only.
fn names_digest(path: &Path) -> Result<String> {
    Ok(sha256_hex(&std::fs::read(path).map_err(|e| Error::io(path, e))?))
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

/// Visible entries of a directory, sorted (Dassl's `listdir_nohidden(sort=True)`).
fn listdir(dir: &Path) -> Result<Vec<String>> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .collect();
    out.sort();
    Ok(out)
}

/// `classnames.txt`: `wnid name words…` per line, in the file's order.
fn read_classnames(path: &Path) -> Result<Vec<(String, String)>> {
    read_text(path)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            let (wnid, name) = l
                .trim()
                .split_once(' ')
                .ok_or_else(|| Error::Input(format!("{}:{}: expected `<wnid> <class name>`", path.display(), i + 1)))?;
            Ok((wnid.to_string(), name.trim().to_string()))
        })
        .collect()
}

/// Images of class folders, with the digest of the listing (relative paths, in order).
fn folder_items(root: &Path, folders: &[(String, usize, String)], listing: &mut String) -> Result<Vec<Datum>> {
    let mut out = Vec::new();
    for (folder, label, classname) in folders {
        let dir = root.join(folder);
        for f in listdir(&dir)? {
            listing.push_str(&format!("{folder}/{f}\n"));
            out.push(Datum {
                path: dir.join(&f),
                label: *label,
                classname: classname.clone(),
            });
        }
    }
    Ok(out)
}

fn wnid_folders(
    image_root: &Path,
    names: &BTreeMap<String, String>,
    names_file: &Path,
) -> Result<Vec<(String, usize, String)>> {
    listdir(image_root)?
        .into_iter()
        .enumerate()
        .map(|(label, wnid)| {
            let name = names.get(&wnid).ok_or_else(|| {
                Error::Input(format!(
                    "{}: folder `{wnid}` is not in {}",
                    image_root.display(),
                    names_file.display()
                ))
            })?;
            Ok((wnid.clone(), label, name.clone()))
        })
        .collect()
}

/// Reads the non-JSON layouts under a dataset folder.
pub(crate) fn load_layout(dir: &Path, layout: &Layout) -> Result<Splits> {
    let mut listing = String::new();
    match layout {
        Layout::Fgvc => {
            let variants_path = dir.join("variants.txt");
            let variants: Vec<String> = read_text(&variants_path)?
                .lines()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect();
            let label_of: BTreeMap<&str, usize> = variants.iter().enumerate().map(|(i, v)| (v.as_str(), i)).collect();
            let mut split = |which: &str| -> Result<Vec<Datum>> {
                let p = dir.join(format!("images_variant_{which}.txt"));
                let text = read_text(&p)?;
                listing.push_str(&text);
                text.lines()
                    .enumerate()
                    .filter(|(_, l)| !l.trim().is_empty())
                    .map(|(i, l)| {
                        let (id, variant) = l.trim().split_once(' ').ok_or_else(|| {
                            Error::Input(format!("{}:{}: expected `<image id> <variant>`", p.display(), i + 1))
                        })?;
                        let label = *label_of.get(variant).ok_or_else(|| {
                            Error::Input(format!(
                                "{}:{}: variant `{variant}` is not in variants.txt",
                                p.display(),
                                i + 1
                            ))
                        })?;
                        Ok(Datum {
                            path: dir.join("images").join(format!("{id}.jpg")),
                            label,
                            classname: variant.to_string(),
                        })
                    })
                    .collect()
            };
            let (train, val, test) = (split("train")?, split("val")?, split("test")?);
            Ok((train, val, test, sha256_hex(listing.as_bytes()), None))
        }
        Layout::ImageNet => {
            let names_file = dir.join("classnames.txt");
            let names: BTreeMap<String, String> = read_classnames(&names_file)?.into_iter().collect();
            let train_root = dir.join("images").join("train");
            let folders = wnid_folders(&train_root, &names, &names_file)?;
            listing.push_str("train\n");
            let train = folder_items(&train_root, &folders, &mut listing)?;
            listing.push_str("val\n");
            let test = folder_items(&dir.join("images").join("val"), &folders, &mut listing)?;
            Ok((
                train,
                test.clone(),
                test,
                sha256_hex(listing.as_bytes()),
                Some(names_digest(&names_file)?),
            ))
        }
        Layout::WnidFolders { image_dir } => {
            let names_file = dir.join("classnames.txt");
            let names: BTreeMap<String, String> = read_classnames(&names_file)?.into_iter().collect();
            let root = dir.join(image_dir);
            let folders = wnid_folders(&root, &names, &names_file)?;
            let test = folder_items(&root, &folders, &mut listing)?;
            Ok((
                Vec::new(),
                Vec::new(),
                test,
                sha256_hex(listing.as_bytes()),
                Some(names_digest(&names_file)?),
            ))
        }
        Layout::IndexFolders { image_dir } => {
            let names_file = dir.join("classnames.txt");
            let names = read_classnames(&names_file)?;
            let root = dir.join(image_dir);
            let folders: Vec<(String, usize, String)> = names
                .iter()
                .enumerate()
                .map(|(i, (_, n))| (i.to_string(), i, n.clone()))
                .filter(|(f, _, _)| root.join(f).is_dir())
                .collect();
            let test = folder_items(&root, &folders, &mut listing)?;
            Ok((
                Vec::new(),
                Vec::new(),
                test,
                sha256_hex(listing.as_bytes()),
                Some(names_digest(&names_file)?),
            ))
        }
        Layout::SplitZhou { .. } => unreachable!("split files are read by Dataset::load"),
    }
}

/// Where a user keeps CoOp's `DATA/` folder: `--data-root`, else `$GRAM_BENCH_DATA`, else `$DATA`.
pub(crate) fn data_root(flag: Option<PathBuf>) -> Option<PathBuf> {
    flag.or_else(|| std::env::var_os("GRAM_BENCH_DATA").map(PathBuf::from))
        .or_else(|| std::env::var_os("DATA").map(PathBuf::from))
}

#[cfg(test)]
mod tests {
    //! Miniature replicas of each on-disk layout (real folder and file names, tiny images).
    use super::*;
    use crate::data::Dataset;

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"img").unwrap();
    }

    fn def(name: &str) -> DatasetDef {
        catalog().into_iter().find(|d| d.name == name).unwrap()
    }

    #[test]
    fn the_catalog_has_the_eleven_datasets_and_four_variants_with_their_templates() {
        let c = catalog();
        assert_eq!(c.len(), 15);
        assert_eq!(c.iter().filter(|d| d.test_only).count(), 4);
        assert_eq!(def("dtd").template, "{} texture.");
        assert_eq!(def("eurosat").template, "a centered satellite photo of {}.");
        assert_eq!(def("ucf101").template, "a photo of a person doing {}.");
        assert!(def("imagenet_r").imagenet_like && !def("food101").imagenet_like);
    }

    #[test]
    fn split_zhou_paths_join_the_image_dir_and_stanford_cars_the_dataset_dir() {
        let root = tempfile::tempdir().unwrap();
        for (name, folder, file, rel_prefix) in [
            ("eurosat", "eurosat", "split_zhou_EuroSAT.json", "2750/"),
            ("stanford_cars", "stanford_cars", "split_zhou_StanfordCars.json", ""),
        ] {
            let dir = root.path().join(folder);
            std::fs::create_dir_all(&dir).unwrap();
            let json = r#"{"train": [["/a/1.jpg", 0, "Annual Crop Land"], ["b/2.jpg", 1, "Forest"]],
                           "val": [["a/3.jpg", 0, "Annual Crop Land"]], "test": [["b/4.jpg", 1, "Forest"]]}"#;
            std::fs::write(dir.join(file), json).unwrap();
            let ds = Dataset::load(root.path(), &def(name)).unwrap();
            assert_eq!(ds.classnames, vec!["Annual Crop Land", "Forest"]);
            assert_eq!(ds.train[0].path, dir.join(format!("{rel_prefix}a/1.jpg")));
            assert_eq!((ds.train.len(), ds.val.len(), ds.test.len()), (2, 1, 1));
        }
    }

    #[test]
    fn fgvc_aircraft_reads_its_official_lists() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("fgvc_aircraft");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("variants.txt"), "707-320\nA300B4\nF/A-18\n").unwrap();
        std::fs::write(
            dir.join("images_variant_train.txt"),
            "1025794 707-320\n1340192 F/A-18\n",
        )
        .unwrap();
        std::fs::write(dir.join("images_variant_val.txt"), "0056978 A300B4\n").unwrap();
        std::fs::write(dir.join("images_variant_test.txt"), "1514522 F/A-18\n0062765 707-320\n").unwrap();
        let ds = Dataset::load(root.path(), &def("fgvc_aircraft")).unwrap();
        assert_eq!(ds.classnames, vec!["707-320", "A300B4", "F/A-18"]);
        assert_eq!(ds.train[1].label, 2);
        assert_eq!(ds.test[1].path, dir.join("images/0062765.jpg"));
        std::fs::write(dir.join("images_variant_val.txt"), "0056978 A380\n").unwrap();
        let e = Dataset::load(root.path(), &def("fgvc_aircraft"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("images_variant_val.txt:1: variant `A380`"), "{e}");
    }

    #[test]
    fn imagenet_and_its_variants_label_by_sorted_folders_and_name_by_classnames() {
        let root = tempfile::tempdir().unwrap();
        let names = "n01440764 tench\nn01443537 goldfish\nn01484850 great white shark\n";
        let inet = root.path().join("imagenet");
        std::fs::create_dir_all(&inet).unwrap();
        std::fs::write(inet.join("classnames.txt"), names).unwrap();
        for wnid in ["n01443537", "n01440764", "n01484850"] {
            touch(&inet.join(format!("images/train/{wnid}/{wnid}_1.JPEG")));
            touch(&inet.join(format!("images/train/{wnid}/{wnid}_2.JPEG")));
            touch(&inet.join(format!("images/val/{wnid}/ILSVRC2012_val_{wnid}.JPEG")));
        }
        let ds = Dataset::load(root.path(), &def("imagenet")).unwrap();
        assert_eq!(ds.classnames, vec!["tench", "goldfish", "great white shark"]);
        assert_eq!((ds.train.len(), ds.val.len(), ds.test.len()), (6, 3, 3));
        // ImageNet-A/-R hold a subset of classes: labels are positions among *their* folders.
        let a = root.path().join("imagenet-adversarial");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::write(a.join("classnames.txt"), names).unwrap();
        touch(&a.join("imagenet-a/n01484850/0.jpg"));
        touch(&a.join("imagenet-a/n01443537/1.jpg"));
        let ds = Dataset::load(root.path(), &def("imagenet_a")).unwrap();
        assert_eq!(ds.classnames, vec!["goldfish", "great white shark"]);
        assert_eq!(ds.test.iter().map(|d| d.label).collect::<Vec<_>>(), vec![0, 1]);
        // ImageNet-V2: folder i is label i.
        let v2 = root.path().join("imagenetv2");
        std::fs::create_dir_all(&v2).unwrap();
        std::fs::write(v2.join("classnames.txt"), names).unwrap();
        for i in 0..3 {
            touch(&v2.join(format!("imagenetv2-matched-frequency-format-val/{i}/x{i}.jpeg")));
        }
        let ds = Dataset::load(root.path(), &def("imagenet_v2")).unwrap();
        assert_eq!(ds.test[2].classname, "great white shark");
        assert_eq!(ds.test[2].label, 2);
        // A folder the class list does not know is one clear error.
        touch(&a.join("imagenet-a/n99999999/2.jpg"));
        let e = Dataset::load(root.path(), &def("imagenet_a")).unwrap_err().to_string();
        assert!(e.contains("n99999999") && e.contains("classnames.txt"), "{e}");
    }

    #[test]
    fn a_missing_dataset_folder_names_what_was_expected() {
        let root = tempfile::tempdir().unwrap();
        let e = Dataset::load(root.path(), &def("food101")).unwrap_err().to_string();
        assert!(e.contains("food-101"), "{e}");
    }
}
