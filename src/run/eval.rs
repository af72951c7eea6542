//! Evaluating a method on a test split: from the feature cache when the method leaves the image
//! encoder frozen, else by encoding the images; top-1 accuracy, per class and overall.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use super::learner::CellMethod;
use super::outcome::{EvalOutcome, Features, Skipped};
use super::session::Session;
use super::Ad;
use crate::data::images::{stream, BadImage, Transform};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::features::{FeatureSet, FeatureSource};
use crate::methods::{ClassSet, Scorer};
use crate::store::{ClassAccuracy, FeatureOrigin, Metrics};

impl<B: Backend> Session<'_, B> {
    /// The image features of `ds`'s whole test split, from the feature cache or computed now.
    fn test_features(&mut self, ds: &Dataset) -> Result<(Arc<FeatureSet>, Features)> {
        let files = self
            .test_files
            .entry(ds.def.name.clone())
            .or_insert_with(|| {
                crate::features::files_fingerprint(&ds.test.iter().map(|d| d.path.clone()).collect::<Vec<_>>())
            })
            .clone();
        let source = FeatureSource {
            weights_sha256: self.weights_digest.clone(),
            dataset: ds.def.name.clone(),
            split: "test".into(),
            split_digest: ds.digest(),
            files,
            transform: self.pre.clone(),
            backend: self.backend.to_string(),
            precision: self.precision,
            batch_size: self.resolved.suite.eval.batch_size,
        };
        if let Some(f) = self.features.get(&source) {
            return Ok((f, Features::cached()));
        }
        let set = self.encode(&ds.test)?;
        let computed = Features::computed(set.compute_s);
        Ok((self.features.put(&source, set), computed))
    }

    /// Top-1 accuracy of `method` on `ds`'s test images of `labels` (in that label space), per
    /// class and overall. `frozen_image`: the method's spec says it leaves the image encoder as it
    /// is (`MethodSpec::ENCODERS`), so the test split's cached features serve it.
    pub(super) fn evaluate(
        &mut self,
        method: &CellMethod<Ad<B>>,
        frozen_image: bool,
        ds: &Dataset,
        labels: &[usize],
    ) -> Result<EvalOutcome> {
        let t = Instant::now();
        let names: Vec<String> = labels.iter().map(|&l| ds.classnames[l].clone()).collect();
        let map: BTreeMap<usize, usize> = labels.iter().enumerate().map(|(i, &l)| (l, i)).collect();
        // (position in the test split, label in the evaluated label space)
        let items: Vec<(usize, usize)> = ds
            .test
            .iter()
            .enumerate()
            .filter_map(|(i, d)| map.get(&d.label).map(|&l| (i, l)))
            .collect();
        if items.is_empty() {
            return Err(Error::Input(format!(
                "{}: no test images in the selected classes",
                ds.def.name
            )));
        }
        let classes = ClassSet {
            dataset: &ds.def.name,
            names: &names,
            template: &ds.def.template,
        };
        let scorer = method.scorer(&self.clip_eval, &self.tok, &classes, &self.device)?;
        if frozen_image != scorer.reads_frozen_features() {
            return Err(Error::Internal(format!(
                "the method's spec says its image encoder is {}, its scorer {} it",
                if frozen_image { "frozen" } else { "prompted" },
                if frozen_image { "prompts" } else { "does not prompt" }
            )));
        }
        let mut tally = Tally::new(names.len());
        let mut skipped = Skipped::default();
        let features = if self.use_features && frozen_image {
            self.score_features(&scorer, ds, &items, &mut tally, &mut skipped)?
        } else {
            self.score_images(&scorer, ds, &items, &mut tally, &mut skipped)?
        };
        let (metrics, per_class) = tally
            .metrics(&names)
            .ok_or_else(|| Error::Input(format!("{}: no test image decoded{}", ds.def.name, skipped.explain())))?;
        Ok(EvalOutcome {
            metrics,
            per_class,
            features,
            skipped,
            seconds: t.elapsed().as_secs_f64(),
        })
    }

    /// Scores the test split's cached (or now computed) frozen image features.
    fn score_features(
        &mut self,
        scorer: &Scorer<B>,
        ds: &Dataset,
        items: &[(usize, usize)],
        tally: &mut Tally,
        skipped: &mut Skipped,
    ) -> Result<Features> {
        let (feats, origin) = self.test_features(ds)?;
        let bad: Vec<BadImage> = feats
            .bad
            .iter()
            .filter(|b| items.iter().any(|&(i, _)| ds.test[i].path == b.path))
            .cloned()
            .collect();
        self.corrupt(bad, skipped)?;
        let kept: Vec<(usize, usize)> = items.iter().copied().filter(|&(i, _)| feats.ok[i]).collect();
        for chunk in kept.chunks(self.resolved.suite.eval.batch_size) {
            let rows: Vec<f32> = chunk.iter().flat_map(|&(i, _)| feats.row(i).to_vec()).collect();
            let f = Tensor::<B, 2>::from_data(TensorData::new(rows, [chunk.len(), feats.dim]), &self.device);
            let logits = scorer
                .logits_from_features(&self.clip_eval, f)
                .ok_or_else(|| Error::Internal("the scorer prompts the image encoder".into()))?;
            tally.add(chunk, logits);
        }
        Ok(origin)
    }

    /// Encodes the test images through the method (its image encoder may be prompted) and scores
    /// them.
    fn score_images(
        &mut self,
        scorer: &Scorer<B>,
        ds: &Dataset,
        items: &[(usize, usize)],
        tally: &mut Tally,
        skipped: &mut Skipped,
    ) -> Result<Features> {
        let bs = self.resolved.suite.eval.batch_size;
        let batches: Vec<Vec<(PathBuf, Transform)>> = items
            .chunks(bs)
            .map(|c| {
                c.iter()
                    .map(|&(i, _)| (ds.test[i].path.clone(), Transform::Eval))
                    .collect()
            })
            .collect();
        let s = self.pre.image_size;
        let mut bad_all = Vec::new();
        let (clip, device) = (&self.clip_eval, &self.device);
        stream(&self.images, &self.pre, batches, |b, prepared| {
            bad_all.extend(prepared.bad);
            let chunk = &items[b * bs..(b * bs + bs).min(items.len())];
            let kept: Vec<(usize, usize)> = prepared.kept.iter().map(|&k| chunk[k]).collect();
            if !kept.is_empty() {
                let pixels = Tensor::<B, 4>::from_data(TensorData::new(prepared.pixels, [kept.len(), 3, s, s]), device);
                tally.add(&kept, scorer.logits(clip, pixels));
            }
            Ok(())
        })?;
        self.corrupt(bad_all, skipped)?;
        Ok(Features {
            origin: FeatureOrigin::Encoded,
            compute_s: 0.0,
        })
    }
}

/// Correct and total predictions per class of the evaluated label space.
struct Tally {
    correct: Vec<usize>,
    total: Vec<usize>,
}

impl Tally {
    fn new(classes: usize) -> Self {
        Tally {
            correct: vec![0; classes],
            total: vec![0; classes],
        }
    }

    /// Counts a batch's argmax predictions against its labels.
    fn add<Bk: Backend>(&mut self, batch: &[(usize, usize)], logits: Tensor<Bk, 2>) {
        let pred = logits.argmax(1).into_data().convert::<i64>();
        let pred = pred.to_vec::<i64>().expect("converted to i64 above");
        for (&(_, label), p) in batch.iter().zip(pred) {
            self.total[label] += 1;
            if p as usize == label {
                self.correct[label] += 1;
            }
        }
    }

    /// Overall and per-class accuracy (classes with no test image are left out); None when
    /// nothing was scored.
    fn metrics(&self, names: &[String]) -> Option<(Metrics, Vec<ClassAccuracy>)> {
        let (c, t): (usize, usize) = (self.correct.iter().sum(), self.total.iter().sum());
        if t == 0 {
            return None;
        }
        let per_class: Vec<ClassAccuracy> = names
            .iter()
            .enumerate()
            .filter(|(i, _)| self.total[*i] > 0)
            .map(|(i, n)| ClassAccuracy {
                class: n.clone(),
                n: self.total[i],
                correct: self.correct[i],
                accuracy: 100.0 * self.correct[i] as f64 / self.total[i] as f64,
            })
            .collect();
        let present: Vec<f64> = per_class.iter().map(|p| p.accuracy).collect();
        let metrics = Metrics {
            accuracy: 100.0 * c as f64 / t as f64,
            correct: c,
            total: t,
            macro_accuracy: present.iter().sum::<f64>() / present.len() as f64,
        };
        Some((metrics, per_class))
    }
}
