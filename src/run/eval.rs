//! Evaluating a method on a test split: from the feature cache when the method leaves the image
//! encoder frozen, else by encoding the images; top-1 accuracy, per class and overall.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use super::session::Session;
use super::Ad;
use crate::data::images::{stream, BadImage, Transform};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::features::{FeatureSet, FeatureSource};
use crate::methods::{ClassSet, PromptMethod};
use crate::store::{ClassAccuracy, FeatureOrigin, Metrics, Record};

impl<B: Backend> Session<'_, B> {
    /// The image features of `ds`'s whole test split, from the feature cache or computed now.
    pub(super) fn test_features(&mut self, ds: &Dataset, record: &mut Record) -> Result<Arc<FeatureSet>> {
        let source = FeatureSource {
            weights_sha256: self.weights_digest.clone(),
            dataset: ds.def.name.clone(),
            split: "test".into(),
            split_digest: ds.digest(),
            transform: self.pre.clone(),
            backend: self.backend.to_string(),
            batch_size: self.resolved.suite.eval.batch_size,
        };
        if let Some(f) = self.features.get(&source) {
            record.features = Some(FeatureOrigin::Cached);
            return Ok(f);
        }
        let set = self.encode(&ds.test)?;
        record.timings.features_s = set.compute_s;
        record.features = Some(FeatureOrigin::Computed);
        self.features.put(&source, set)
    }

    pub(super) fn evaluate(
        &mut self,
        method: &mut dyn PromptMethod<Ad<B>>,
        ds: &Dataset,
        labels: &[usize],
        record: &mut Record,
    ) -> Result<(Metrics, Vec<ClassAccuracy>)> {
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
        method.begin_eval(
            &self.clip_eval,
            &self.tok,
            &ClassSet {
                names: &names,
                template: &ds.def.template,
            },
        )?;
        let mut correct = vec![0usize; names.len()];
        let mut total = vec![0usize; names.len()];
        let mut tally = |batch: &[(usize, usize)], logits: Tensor<B, 2>| {
            let pred = logits.argmax(1).into_data().convert::<i64>();
            let pred = pred.to_vec::<i64>().expect("converted to i64 above");
            for (&(_, label), p) in batch.iter().zip(pred) {
                total[label] += 1;
                if p as usize == label {
                    correct[label] += 1;
                }
            }
        };
        let bs = self.resolved.suite.eval.batch_size;
        if self.use_features && method.image_encoder_frozen() {
            let feats = self.test_features(ds, record)?;
            let bad: Vec<BadImage> = feats
                .bad
                .iter()
                .filter(|b| items.iter().any(|&(i, _)| ds.test[i].path == b.path))
                .cloned()
                .collect();
            self.corrupt(bad, record)?;
            let kept: Vec<(usize, usize)> = items.iter().copied().filter(|&(i, _)| feats.ok[i]).collect();
            for chunk in kept.chunks(bs) {
                let rows: Vec<f32> = chunk.iter().flat_map(|&(i, _)| feats.row(i).to_vec()).collect();
                let f = Tensor::<B, 2>::from_data(TensorData::new(rows, [chunk.len(), feats.dim]), &self.device);
                let logits = method
                    .eval_logits_from_features(&self.clip_eval, f)
                    .ok_or_else(|| Error::Internal("the method scores image features but gave no logits".into()))?;
                tally(chunk, logits);
            }
        } else {
            record.features = Some(FeatureOrigin::Encoded);
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
                    let pixels =
                        Tensor::<B, 4>::from_data(TensorData::new(prepared.pixels, [kept.len(), 3, s, s]), device);
                    tally(&kept, method.eval_logits(clip, pixels));
                }
                Ok(())
            })?;
            self.corrupt(bad_all, record)?;
        }
        let (c, t): (usize, usize) = (correct.iter().sum(), total.iter().sum());
        if t == 0 {
            return Err(Error::Input(format!("{}: no test image decoded", ds.def.name)));
        }
        // Classes with no test image have no accuracy; they are left out.
        let per_class: Vec<ClassAccuracy> = names
            .iter()
            .enumerate()
            .filter(|(i, _)| total[*i] > 0)
            .map(|(i, n)| ClassAccuracy {
                class: n.clone(),
                n: total[i],
                correct: correct[i],
                accuracy: 100.0 * correct[i] as f64 / total[i] as f64,
            })
            .collect();
        let present: Vec<f64> = per_class.iter().map(|p| p.accuracy).collect();
        Ok((
            Metrics {
                accuracy: 100.0 * c as f64 / t as f64,
                correct: c,
                total: t,
                macro_accuracy: present.iter().sum::<f64>() / present.len() as f64,
            },
            per_class,
        ))
    }
}
