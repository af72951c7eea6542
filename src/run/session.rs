//! One session of loaded state for a run on one backend: the backbone (trainable and frozen
//! views), tokenizer and preprocessing, the datasets read so far, decoded images and the feature
//! cache; and the helpers every phase shares (the corrupt-image policy, frozen features, the
//! few-shot subset).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use burn::module::AutodiffModule;
use burn::tensor::backend::Backend;

use super::outcome::Skipped;
use super::{Ad, BackboneSource};
use crate::backend::{BackendKind, Precision};
use crate::clip::{load_clip, Clip, ClipTokenizer, Preprocess};
use crate::data::images::{BadImage, ImageCache};
use crate::data::{dataset_def, few_shot_indices, Dataset, Datum};
use crate::error::{Error, Result};
use crate::features::{encode_images, FeatureCache, FeatureSet};
use crate::lock::weights_digest;
use crate::resolve::{FewShotFrom, ResolvedSuite};
use crate::store::{FewShotOrigin, FewShotSourceKind, Store};
use crate::suite::OnCorrupt;
use crate::world::WorldArtifacts;

/// Decoded images kept across cells (the embedded world fits whole), shared out among a run's
/// workers.
const IMAGE_CACHE_BYTES: usize = 2 << 30;

/// What all cells of a run share.
pub(super) struct Session<'a, B: Backend> {
    pub(super) resolved: &'a ResolvedSuite,
    pub(super) model: &'a BackboneSource,
    pub(super) world: Option<&'a WorldArtifacts>,
    pub(super) store: &'a Store,
    pub(super) device: B::Device,
    pub(super) backend: BackendKind,
    /// The float format this process computes in.
    pub(super) precision: Precision,
    pub(super) clip: Clip<Ad<B>>,
    pub(super) clip_eval: Clip<B>,
    pub(super) tok: ClipTokenizer,
    pub(super) pre: Preprocess,
    pub(super) weights_digest: String,
    /// The datasets the resolution read, and embedded ones read since.
    datasets: HashMap<String, Arc<Dataset>>,
    /// Each test split's files fingerprint, taken once per run (one `stat` per image, not one per
    /// image per cell).
    pub(super) test_files: HashMap<String, String>,
    pub(super) images: ImageCache,
    pub(super) features: FeatureCache,
    /// Whether the feature cache is used at all (off: every evaluation encodes its images).
    pub(super) use_features: bool,
    /// The run's workers, each with a session like this one.
    pub(super) workers: usize,
}

impl<'a, B: Backend> Session<'a, B> {
    /// Loads the backbone (its digest checked against the pin first) on `device`.
    // What one run shares, each part from its own source; a struct of them would only be unpacked here.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        resolved: &'a ResolvedSuite,
        model: &'a BackboneSource,
        world: Option<&'a WorldArtifacts>,
        store: &'a Store,
        features: Option<PathBuf>,
        device: B::Device,
        backend: BackendKind,
        precision: Precision,
        workers: usize,
    ) -> Result<Self> {
        let digest = weights_digest(&model.path)?;
        if let Some(pinned) = &model.sha256 {
            if &digest != pinned {
                return Err(Error::Weights(format!(
                    "{}: SHA-256 {digest} does not match the {pinned} {} for backbone `{}`",
                    model.path.display(),
                    model.pinned_by,
                    resolved.suite.backbone.name
                )));
            }
        }
        // Records of this backbone computed from other weights (a world rebuilt differently, a
        // cache edited in place) must not be mixed with new ones under the same keys.
        if let Some(other) = store.all()?.into_iter().find(|r| {
            r.digests.backbone == model.id && !r.digests.weights_sha256.is_empty() && r.digests.weights_sha256 != digest
        }) {
            return Err(Error::Store(format!(
                "{}: cell {} was computed with weights {} but `{}` now has {digest}; its records and new ones \
                 would mix under the same keys: move {} away (or use another --store) to recompute them",
                store.root.display(),
                other.key,
                other.digests.weights_sha256,
                model.id,
                store.root.display()
            )));
        }
        let loaded = load_clip::<Ad<B>>(&model.path, &model.options, &device)?;
        let clip_eval = loaded.model.valid();
        Ok(Self {
            resolved,
            model,
            world,
            store,
            device,
            backend,
            precision,
            clip: loaded.model,
            clip_eval,
            tok: loaded.tokenizer,
            pre: loaded.preprocess,
            weights_digest: digest,
            datasets: resolved.inputs.datasets.clone().into_iter().collect(),
            test_files: HashMap::new(),
            images: ImageCache::new(IMAGE_CACHE_BYTES / workers.max(1)),
            use_features: features.is_some(),
            workers,
            features: FeatureCache::new(features),
        })
    }

    /// A dataset by name: the ones the resolution read, else an embedded one read now (once).
    pub(super) fn dataset(&mut self, name: &str) -> Result<Arc<Dataset>> {
        if let Some(d) = self.datasets.get(name) {
            return Ok(d.clone());
        }
        let def = dataset_def(name, &self.resolved.lock.user_datasets)?;
        let root = if def.embedded {
            self.world.map(|w| w.data_root.clone())
        } else {
            self.resolved.inputs.data_root.clone()
        }
        .ok_or_else(|| Error::Input(format!("no data root for dataset `{name}`")))?;
        let mut d = Dataset::load(&root, &def)?;
        if crate::faults::active(crate::faults::Fault::WrongSplit) {
            d.test = d.val.clone();
        }
        if crate::faults::active(crate::faults::Fault::ShuffledClassnames) {
            d.classnames.rotate_left(1);
        }
        let d = Arc::new(d);
        self.datasets.insert(name.to_string(), d.clone());
        Ok(d)
    }

    /// The K-shot subset of a train cell: CoOp's cached file when the suite says so, else sampled.
    pub(super) fn fewshot(&self, ds: &Dataset, shots: usize, seed: u64) -> Result<FewShotOrigin> {
        let sampled_val = || few_shot_indices(&ds.val, shots.min(4), seed);
        match self.resolved.inputs.fewshot_from(&ds.def.name, shots, seed) {
            FewShotFrom::Sampled => Ok(FewShotOrigin {
                train: full_shots(ds, &few_shot_indices(&ds.train, shots, seed), shots)?,
                val: sampled_val(),
                source: FewShotSourceKind::Sampled,
                file: None,
                sha256: None,
                val_source: None,
            }),
            FewShotFrom::Coop(path) => {
                if !path.is_file() {
                    return Err(Error::Input(format!(
                        "{}: CoOp's few-shot file is not there, and the suite's [data] fewshot = \"coop\" requires \
                         it (\"coop-if-present\" samples instead)",
                        path.display()
                    )));
                }
                let root = self
                    .resolved
                    .inputs
                    .data_root
                    .as_deref()
                    .ok_or_else(|| Error::Internal("CoOp few-shot files need a data root".into()))?;
                let c = crate::data::fewshot_pkl::read(&path, root, ds)?;
                let val_source = if c.val.is_some() {
                    FewShotSourceKind::File
                } else {
                    FewShotSourceKind::Sampled
                };
                Ok(FewShotOrigin {
                    train: c.train,
                    val: c.val.unwrap_or_else(sampled_val),
                    source: FewShotSourceKind::CoopPkl,
                    file: Some(path),
                    sha256: Some(c.sha256),
                    val_source: Some(val_source),
                })
            }
        }
    }

    /// Applies the suite's `on_corrupt` policy to images that did not decode: an error, or the
    /// images noted in `skipped`.
    pub(super) fn corrupt(&self, bad: Vec<BadImage>, skipped: &mut Skipped) -> Result<()> {
        if bad.is_empty() {
            return Ok(());
        }
        match self.resolved.suite.data.on_corrupt {
            OnCorrupt::Fail => Err(Error::Input(format!(
                "{} (and {} more images that do not decode); `on_corrupt = \"skip\"` in the suite's [data] leaves \
                 such images out",
                bad[0].error,
                bad.len() - 1
            ))),
            OnCorrupt::Skip => {
                skipped.add(bad);
                Ok(())
            }
        }
    }

    /// The frozen encoder's features (eval transform, the suite's batch size) of `items`.
    pub(super) fn encode(&self, items: &[Datum]) -> Result<FeatureSet> {
        let paths: Vec<PathBuf> = items.iter().map(|d| d.path.clone()).collect();
        encode_images(
            &self.clip_eval,
            &self.pre,
            &self.images,
            &paths,
            self.resolved.suite.eval.batch_size,
            &self.device,
        )
    }

    /// The frozen encoder's features (eval transform) of `items`, and which of them decoded (the
    /// others go through the suite's corrupt-image policy).
    pub(super) fn frozen_features(&self, items: &[Datum], skipped: &mut Skipped) -> Result<(FeatureSet, Vec<usize>)> {
        let set = self.encode(items)?;
        self.corrupt(set.bad.clone(), skipped)?;
        let keep = (0..items.len()).filter(|&i| set.ok[i]).collect();
        Ok((set, keep))
    }
}

/// `picked` when it holds `shots` train images of every class. Dassl's sampler quietly takes all of
/// a smaller class; a cell labelled K shots that trained on fewer would report the wrong thing.
fn full_shots(ds: &Dataset, picked: &[usize], shots: usize) -> Result<Vec<usize>> {
    let mut have = vec![0usize; ds.classnames.len()];
    for &i in picked {
        have[ds.train[i].label] += 1;
    }
    if let Some((label, n)) = have.iter().enumerate().find(|(_, &n)| n < shots) {
        return Err(Error::Input(format!(
            "{}: class `{}` has {n} training image(s), fewer than the {shots} shots the cell asks for; \
             lower `shots` in the suite",
            ds.def.name, ds.classnames[label]
        )));
    }
    Ok(picked.to_vec())
}
