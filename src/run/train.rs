//! Training a cell's method: the SGD loop (Dassl's schedule: the whole batch order drawn from
//! the seed first, the last partial batch dropped, warm-up then cosine) and the closed-form fit of
//! feature-fitted methods on frozen features.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::seq::SliceRandom;
use rand::Rng;

use super::learner::Learner;
use super::outcome::Skipped;
use super::resume::TrainState;
use super::session::Session;
use super::Ad;
use crate::data::images::{stream, Transform};
use crate::data::Datum;
use crate::error::{Error, Result};
use crate::methods::linear_probe::Labelled;
use crate::methods::{Batch, FeatureFit, SgdSchedule};
use crate::store::{FitSummary, TrainSummary};

/// Where an SGD cell keeps its state between epochs (beside the records; removed once the cell's
/// record is written), and which cell it belongs to.
pub(crate) struct EpochCheckpoint {
    pub path: std::path::PathBuf,
    pub key: String,
}

/// The first line of an epoch checkpoint, before the SHA-256 of the rest.
const CHECKPOINT_HEADER: &str = "gram-bench epoch checkpoint, sha256 ";

/// What an epoch checkpoint holds: the epochs finished, their loss sums and the method's state.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedEpochs {
    key: String,
    epochs_done: usize,
    /// (Σ loss, steps) per epoch, as the loop keeps them.
    sums: Vec<(f32, usize)>,
    state: TrainState,
}

impl EpochCheckpoint {
    fn read(&self) -> Result<Option<SavedEpochs>> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&self.path, e)),
        };
        let damaged = |why: String| {
            Error::Store(format!(
                "{}: damaged training checkpoint ({why}), not resumed from; the cell's failed record supersedes it \
                 (the file is removed) and the next run starts the cell from its first epoch",
                self.path.display()
            ))
        };
        // `<HEADER><sha256 of the body>\n<body>`: a flipped bit or a cut file is refused before
        // anything is read from it.
        let (digest, body) = bytes
            .strip_prefix(CHECKPOINT_HEADER.as_bytes())
            .and_then(|rest| {
                rest.iter()
                    .position(|&b| b == b'\n')
                    .map(|i| (&rest[..i], &rest[i + 1..]))
            })
            .ok_or_else(|| damaged("no digest line".into()))?;
        if digest != crate::files::sha256_hex(body).as_bytes() {
            return Err(damaged("its contents differ from the digest written with them".into()));
        }
        let saved: SavedEpochs = serde_json::from_slice(body).map_err(|e| damaged(e.to_string()))?;
        if saved.key != self.key {
            return Err(Error::Store(format!(
                "{}: the training checkpoint of cell {}, not of {}; not resumed from (the cell's failed record \
                 supersedes it, and the next run starts the cell afresh)",
                self.path.display(),
                saved.key,
                self.key
            )));
        }
        Ok(Some(saved))
    }

    fn write(&self, saved: &SavedEpochs) -> Result<()> {
        let body = serde_json::to_vec(saved).map_err(|e| Error::Store(format!("training checkpoint: {e}")))?;
        let mut bytes = format!("{CHECKPOINT_HEADER}{}\n", crate::files::sha256_hex(&body)).into_bytes();
        bytes.extend(body);
        crate::files::write_atomic(&self.path, &bytes)
    }
}

impl<B: Backend> Session<'_, B> {
    /// Trains `learner` on `items` on `schedule` (its epochs resolved for `dataset` and `shots`),
    /// resuming from and writing to `checkpoint`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn train(
        &mut self,
        learner: &mut dyn Learner<Ad<B>>,
        schedule: SgdSchedule,
        items: &[Datum],
        dataset: &str,
        shots: usize,
        seed: u64,
        checkpoint: Option<&EpochCheckpoint>,
    ) -> Result<TrainSummary> {
        let SgdSchedule {
            optim,
            epochs,
            batch_size,
        } = schedule;
        let epochs = epochs.resolve(dataset, shots).map_err(Error::Config)?;
        let mut rng = crate::seeds::rng(seed, crate::seeds::Stream::BatchOrder);
        let mut order: Vec<usize> = (0..items.len()).collect();
        // Dassl drops the last incomplete batch when the data hold at least one full batch.
        let drop_last = items.len() >= batch_size;
        // The whole schedule is drawn first (it depends only on the seed), so the pipeline can
        // prepare batches ahead; each crop has its own seed.
        let mut batches = Vec::new();
        let mut batch_epoch = Vec::new();
        let mut batch_labels = Vec::new();
        for epoch in 0..epochs {
            order.shuffle(&mut rng);
            for chunk in order.chunks(batch_size) {
                if drop_last && chunk.len() < batch_size {
                    continue;
                }
                batches.push(
                    chunk
                        .iter()
                        .map(|&i| (items[i].path.clone(), Transform::Train { seed: rng.random() }))
                        .collect::<Vec<_>>(),
                );
                batch_labels.push(chunk.iter().map(|&i| items[i].label as i64).collect::<Vec<_>>());
                batch_epoch.push(epoch);
            }
        }
        let mut sums = vec![(0.0f32, 0usize); epochs];
        // Resume after the last epoch an interrupted run of this cell checkpointed: the schedule
        // above depends only on the seed, so its remaining batches are the ones that run would
        // have taken, and the restored state continues bit for bit.
        let mut resumed_at = None;
        if let Some(cp) = checkpoint {
            if let Some(saved) = cp.read()? {
                if saved.sums.len() != epochs || saved.epochs_done >= epochs {
                    return Err(Error::Store(format!(
                        "{}: a checkpoint of {} of {} epochs does not fit this cell's {epochs}; not resumed from (the \
                         cell's failed record supersedes it, and the next run starts the cell afresh)",
                        cp.path.display(),
                        saved.epochs_done,
                        saved.sums.len()
                    )));
                }
                learner.restore(&saved.state)?;
                sums = saved.sums;
                resumed_at = Some(saved.epochs_done);
                let keep: Vec<bool> = batch_epoch.iter().map(|&e| e >= saved.epochs_done).collect();
                fn filter<T>(v: &mut Vec<T>, keep: &[bool]) {
                    let mut k = keep.iter();
                    v.retain(|_| *k.next().expect("one flag per batch"));
                }
                filter(&mut batches, &keep);
                filter(&mut batch_labels, &keep);
                filter(&mut batch_epoch, &keep);
            }
        }
        let s = self.pre.image_size;
        let (clip, device) = (&self.clip, &self.device);
        stream(&self.images, &self.pre, batches, |b, prepared| {
            if let Some(bad) = prepared.bad.first() {
                // Checked before training: an image that decoded then and not now is an I/O fault.
                return Err(Error::Run(bad.error.clone()));
            }
            let n = prepared.kept.len();
            let batch = Batch {
                // f32 whatever the cell's format, as upstream's loader gives them: the tower casts them
                // to its own (`VisionTransformer::forward`), an f32 teacher takes them as they are.
                pixels: Tensor::<Ad<B>, 4>::from_data(
                    TensorData::new(prepared.pixels, [n, 3, s, s]),
                    (device, burn::tensor::DType::F32),
                ),
                labels: Tensor::<Ad<B>, 1, Int>::from_data(TensorData::new(batch_labels[b].clone(), [n]), device),
            };
            let epoch = batch_epoch[b];
            let lr = optim.lr_at(epoch, epochs);
            let (loss, grads) = learner.gradients(clip, batch)?;
            // A diverged loss stops the cell before its gradients touch the parameters.
            if !loss.is_finite() {
                return Err(Error::Run(format!("training diverged: loss {loss} at epoch {epoch}")));
            }
            if !crate::faults::active(crate::faults::Fault::FrozenPrompt) {
                learner.apply(grads, lr);
            }
            sums[epoch].0 += loss;
            sums[epoch].1 += 1;
            if batch_epoch.get(b + 1) != Some(&epoch) {
                learner.end_epoch(epoch, epochs)?;
                if let (Some(cp), true) = (checkpoint, epoch + 1 < epochs) {
                    cp.write(&SavedEpochs {
                        key: cp.key.clone(),
                        epochs_done: epoch + 1,
                        sums: sums.clone(),
                        state: learner.state()?,
                    })?;
                }
            }
            Ok(())
        })?;
        let steps = sums.iter().map(|x| x.1).sum();
        Ok(TrainSummary {
            epochs,
            steps,
            images: items.len(),
            epoch_loss: sums.iter().filter(|x| x.1 > 0).map(|(l, n)| l / *n as f32).collect(),
            fit: None,
            resumed_at_epoch: resumed_at,
        })
    }

    /// Fits a feature-fitted method on the frozen features (eval transform) of its training and
    /// validation images.
    pub(super) fn fit(
        &mut self,
        method: &mut dyn FeatureFit<B>,
        train: &[Datum],
        val: &[Datum],
        skipped: &mut Skipped,
    ) -> Result<TrainSummary> {
        let labelled = |items: &[Datum], skipped: &mut Skipped| -> Result<Labelled> {
            let (set, keep) = self.frozen_features(items, skipped)?;
            Ok(Labelled {
                x: keep.iter().flat_map(|&i| set.row(i).to_vec()).collect(),
                y: keep.iter().map(|&i| items[i].label).collect(),
                dim: set.dim,
            })
        };
        let tr = labelled(train, skipped)?;
        let va = labelled(val, skipped)?;
        let images = tr.y.len();
        let fit = method.fit(tr, va, &self.device)?;
        Ok(TrainSummary {
            epochs: 0,
            steps: 0,
            images,
            epoch_loss: Vec::new(),
            fit: Some(FitSummary::Features(fit)),
            resumed_at_epoch: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::methods::PromptArtifact;

    #[test]
    fn a_damaged_epoch_checkpoint_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let cp = EpochCheckpoint {
            path: dir.path().join("k.train-checkpoint.json"),
            key: "k".into(),
        };
        assert!(cp.read().unwrap().is_none());
        let saved = SavedEpochs {
            key: "k".into(),
            epochs_done: 2,
            sums: vec![(1.5, 4), (0.25, 4), (0.0, 0)],
            state: TrainState {
                module: vec![7; 64],
                optimizer: vec![1, 2, 3],
                extra: PromptArtifact::new(),
            },
        };
        cp.write(&saved).unwrap();
        let back = cp.read().unwrap().unwrap();
        assert_eq!(
            (back.epochs_done, &back.sums, &back.state),
            (2, &saved.sums, &saved.state)
        );
        let good = std::fs::read(&cp.path).unwrap();
        // One flipped bit in the module's bytes, a cut file, and a file without the digest line.
        let at = good.len() - 40;
        let mut flipped = good.clone();
        flipped[at] ^= 0x01;
        for bad in [
            flipped,
            good[..good.len() - 10].to_vec(),
            good[good.iter().position(|&b| b == b'\n').unwrap() + 1..].to_vec(),
        ] {
            std::fs::write(&cp.path, &bad).unwrap();
            let e = cp.read().err().expect("a damaged checkpoint is refused").to_string();
            assert!(
                e.contains("damaged training checkpoint")
                    && e.contains("the next run starts the cell from its first epoch"),
                "{e}"
            );
        }
        // A sound checkpoint of another cell is refused too.
        let other = EpochCheckpoint {
            path: cp.path.clone(),
            key: "other".into(),
        };
        std::fs::write(&cp.path, &good).unwrap();
        assert!(other.read().err().unwrap().to_string().contains("not of other"));
    }
}
