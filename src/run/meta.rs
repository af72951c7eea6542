//! GRAM in a run: meta-training cells (the corpus, its frozen features through the feature cache,
//! `meta_train` with checkpoints, the artifact beside the records) and the wrapping of a gram
//! method's host with θ₀ and ψ_φ from its meta-training cell.

use std::sync::Arc;
use std::time::Instant;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use super::learner::Learner;
use super::outcome::{Features, MetaOutcome, Skipped};
use super::session::Session;
use super::Ad;
use crate::data::Datum;
use crate::error::{Error, Result};
use crate::features::{FeatureSet, FeatureSource};
use crate::gram::corpus::drop_undecodable;
use crate::gram::{meta_train, theta0_init, Checkpointing, Corpus, MetaInputs, RegulatedGradients};
use crate::resolve::ResolvedSuite;
use crate::store::{CellDigests, FitSummary, MetaDigest, MetaFit, Status, TrainSummary};
use crate::suite::cells::Cell;

impl<'a, B: Backend> Session<'a, B> {
    /// A meta-training cell: the corpus, its frozen features, `meta_train` (checkpointed beside
    /// the records), the artifact.
    pub(super) fn meta(&mut self, cell: &Cell) -> Result<MetaOutcome> {
        let store = self.store;
        let name = &cell.spec.method;
        let resolved: &'a ResolvedSuite = self.resolved;
        let spec = resolved
            .suite
            .gram
            .get(name)
            .ok_or_else(|| Error::Internal(format!("a meta cell of no [gram.{name}]")))?;
        let t = Instant::now();
        let corpus = spec.corpus.open(self.pre.image_size as u32, spec.seed)?;
        let load_s = t.elapsed().as_secs_f64();
        let (images, captions, features) = self.corpus_features(&corpus)?;
        // Pairs whose image does not decode: the suite's on_corrupt decides (fail, or leave out).
        let mut skipped = Skipped::default();
        self.corrupt(images.bad.clone(), &mut skipped)?;
        let (corpus, images, captions) = drop_undecodable(corpus, images, captions);
        let t = Instant::now();
        let checkpoint = Checkpointing {
            path: store.meta_checkpoint_path(&cell.key),
            every_steps: None,
            every_secs: Some(60.0),
        };
        let resumed_from = checkpoint.path.exists();
        let steps = spec.train.steps;
        let mut last = Instant::now();
        let inputs = MetaInputs {
            clip: &self.clip,
            tok: &self.tok,
            pre: &self.pre,
            corpus: &corpus,
            images: &images,
            captions: &captions,
            config: &spec.train,
            seed: spec.seed,
            checkpoint: Some(&checkpoint),
        };
        // Long runs say where they are, at most twice a minute.
        let art = meta_train(&inputs, &mut |step, s| {
            if last.elapsed().as_secs_f64() >= 30.0 {
                eprintln!(
                    "  gram meta-training `{name}`: step {}/{steps}, query loss {:.4}",
                    step + 1,
                    s.query_loss
                );
                last = Instant::now();
            }
        })?;
        let train_s = t.elapsed().as_secs_f64();
        let digests = CellDigests {
            backbone: self.model.id.clone(),
            weights_sha256: self.weights_digest.clone(),
            corpus_sha256: Some(art.corpus_digest.clone()),
            ..CellDigests::default()
        };
        let last = art.trace.last();
        let fit = FitSummary::Meta(MetaFit {
            final_query_loss: last.map(|t| f64::from(t.query_loss)),
            final_text_coefficient: last.and_then(|t| t.text_coefficient).map(f64::from),
            final_vision_coefficient: last.and_then(|t| t.vision_coefficient).map(f64::from),
            resumed_from_checkpoint: resumed_from,
        });
        let summary = TrainSummary {
            epochs: 0,
            steps: art.trace.len(),
            images: corpus.len(),
            epoch_loss: art.trace.iter().map(|t| t.query_loss).collect(),
            fit: Some(fit),
            resumed_at_epoch: None,
        };
        store.put_meta(&cell.key, &art)?;
        match std::fs::remove_file(&checkpoint.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(&checkpoint.path, e)),
            _ => {}
        }
        Ok(MetaOutcome {
            load_s,
            features,
            skipped,
            digests,
            summary,
            train_s,
        })
    }

    /// The corpus's frozen image and caption features, through the feature cache like a test
    /// split's; keyed by the corpus's content, so every meta run on one corpus shares them.
    fn corpus_features(&mut self, corpus: &Corpus) -> Result<(Arc<FeatureSet>, Arc<FeatureSet>, Features)> {
        let corpus_digest = corpus.digest()?;
        let batch_size = self.resolved.suite.eval.batch_size;
        let source = |split: &str| FeatureSource {
            weights_sha256: self.weights_digest.clone(),
            dataset: "gram-corpus".into(),
            split: split.into(),
            split_digest: corpus_digest.clone(),
            // The corpus digest is of its content already.
            files: String::new(),
            transform: self.pre.clone(),
            backend: self.backend.to_string(),
            precision: self.precision,
            batch_size,
        };
        let (si, sc) = (source("images"), source("captions"));
        if let (Some(i), Some(c)) = (self.features.get(&si), self.features.get(&sc)) {
            return Ok((i, c, Features::cached()));
        }
        let (i, c) = crate::gram::corpus::corpus_features(
            &self.clip_eval,
            &self.tok,
            &self.pre,
            corpus,
            &self.images,
            batch_size,
        )?;
        let computed = Features::computed(i.compute_s);
        Ok((self.features.put(&si, i), self.features.put(&sc, c), computed))
    }

    /// GRAM on a host about to train: θ₀ from its meta-training cell replaces the host's initial
    /// prompts, and ψ_φ becomes the learner's gradient hook. Returns the meta-training cell's digest.
    pub(super) fn with_gram(
        &mut self,
        cell: &Cell,
        g: &crate::gram::GramConfig,
        host: &mut dyn Learner<Ad<B>>,
        train_items: &[Datum],
        skipped: &mut Skipped,
    ) -> Result<MetaDigest> {
        let store = self.store;
        let dep = cell
            .depends_on
            .as_ref()
            .ok_or_else(|| Error::Internal("a gram cell without its meta-training cell".into()))?;
        match store.get(dep)? {
            Some(r) if r.status == Status::Ok => {}
            _ => return Err(Error::Run(format!("its meta-training cell {dep} has not succeeded"))),
        }
        let (art, artifact_sha256) = store.get_meta(dep)?;
        if g.init {
            host.load(&theta0_init(&host.prompt_params(), &host.artifact(), &art.theta0)?)?;
        }
        if g.regulate {
            // The task embedding downstream is the meta run's, over the cell's training images
            // (meta-training used the support images' the same way).
            let (f, rows) = self.frozen_features(train_items, skipped)?;
            let kept: Vec<f32> = rows.iter().flat_map(|&i| f.row(i).to_vec()).collect();
            let features = Tensor::<B, 2>::from_data(TensorData::new(kept, [rows.len(), f.dim]), &self.device);
            host.regulate(RegulatedGradients::<Ad<B>> {
                text: art.regulator::<B>(true, &self.device)?,
                vision: art.regulator::<B>(false, &self.device)?,
                task: art.config.task_embedding.of(features),
            })?;
        }
        Ok(MetaDigest {
            cell: dep.clone(),
            artifact_sha256,
            corpus_sha256: art.corpus_digest.clone(),
        })
    }
}
