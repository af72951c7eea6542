//! The datasets this build knows by name: the embedded world's, CoOp's (`coop::catalog`), and
//! those a user declares in datasets.lock or a suite (CoOp's split-file layout under a folder).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::coop;
use super::def::{DatasetDef, Layout};
use crate::error::{Error, Result};
use crate::world::WORLD_DATASETS;

/// A dataset the user declares without touching code: CoOp's split-file layout under a folder of
/// the data root.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserDataset {
    /// Folder under the data root.
    pub folder: String,
    /// `split_zhou`-format JSON inside the folder.
    pub split_file: String,
    /// Image root the split's paths are relative to ("" = the folder itself).
    pub image_dir: String,
    /// Zero-shot template, `{}` = the class name.
    pub template: String,
}

/// What a user dataset may not be: a built-in's name, a template without `{}`.
pub(crate) fn check_user_dataset(name: &str, u: &UserDataset) -> std::result::Result<(), String> {
    if catalog().iter().any(|d| d.name == name) {
        return Err(format!("`{name}` is the name of a built-in dataset; pick another"));
    }
    crate::methods::zeroshot::check_template(&u.template)?;
    Ok(())
}

/// The datasets this build knows by name: the embedded world's, then CoOp's.
pub fn catalog() -> Vec<DatasetDef> {
    let mut out: Vec<DatasetDef> = WORLD_DATASETS
        .iter()
        .map(|d| DatasetDef {
            name: d.name.to_string(),
            folder: d.name.to_string(),
            layout: Layout::SplitZhou {
                split_file: format!("split_zhou_{}.json", d.split_name),
                image_dir: "images".into(),
            },
            template: d.template.to_string(),
            imagenet_like: d.name == "world" || d.variant_of == Some("world"),
            test_only: d.per_class[0] == 0,
            embedded: true,
        })
        .collect();
    out.extend(coop::catalog());
    out
}

/// The built-in datasets plus user datasets (datasets.lock's `[user_datasets]` and a suite's
/// `[datasets]`).
pub(crate) fn catalog_with(user: &BTreeMap<String, UserDataset>) -> Vec<DatasetDef> {
    let mut out = catalog();
    out.extend(user.iter().map(|(name, u)| DatasetDef {
        name: name.clone(),
        folder: u.folder.clone(),
        layout: Layout::SplitZhou {
            split_file: u.split_file.clone(),
            image_dir: u.image_dir.clone(),
        },
        template: u.template.clone(),
        imagenet_like: false,
        test_only: false,
        embedded: false,
    }));
    out
}

pub(crate) fn check_dataset_name(name: &str, user: &BTreeMap<String, UserDataset>) -> std::result::Result<(), String> {
    let all = catalog_with(user);
    if all.iter().any(|d| d.name == name) {
        return Ok(());
    }
    let known: Vec<String> = all.into_iter().map(|d| d.name).collect();
    Err(format!(
        "unknown dataset `{name}` (known: {}; declare your own under [user_datasets] in datasets.lock)",
        known.join(", ")
    ))
}

pub(crate) fn dataset_def(name: &str, user: &BTreeMap<String, UserDataset>) -> Result<DatasetDef> {
    catalog_with(user)
        .into_iter()
        .find(|d| d.name == name)
        .ok_or_else(|| Error::Config(check_dataset_name(name, user).err().unwrap_or_default()))
}
