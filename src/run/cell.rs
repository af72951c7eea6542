//! One cell: its record (started, finished, environment; errors and panics caught into it) and
//! its phases — train (SGD or a feature fit), a released checkpoint, or an evaluation of a
//! trained cell on a target; meta-training cells go to `meta.rs`.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::time::Instant;

use burn::tensor::backend::Backend;

use super::learner::CellMethod;
use super::outcome::{HostOutcome, Outcome, Skipped, TrainOutcome};
use super::session::Session;
use super::Ad;
use crate::data::images::check_decodable;
use crate::data::{relabel, subsample_labels, Dataset, Datum};
use crate::error::{Error, Result};
use crate::methods::{BuildInputs, Training};
use crate::provenance::{git_commit, now_utc};
use crate::resolve::ResolvedSuite;
use crate::store::{CellConfig, CellDigests, CheckpointDigest, Environment, Record, Status, Timings, RECORD_SCHEMA};
use crate::suite::cells::{Cell, Phase};
use crate::suite::methods::MethodConfig;

impl<'a, B: Backend> Session<'a, B> {
    /// A failed record of `cell`, started now: what it runs with and where; the phases fill in
    /// the rest.
    pub(super) fn new_record(&self, cell: &Cell) -> Record {
        let suite = &self.resolved.suite;
        Record {
            schema: RECORD_SCHEMA,
            key: cell.key.clone(),
            status: Status::Failed,
            suite: suite.name.clone(),
            suite_version: suite.version,
            cell: cell.spec.clone(),
            depends_on: cell.depends_on.clone(),
            config: CellConfig {
                backbone: suite.backbone.clone(),
                precision: Some(self.precision),
                data: suite.data.clone(),
                eval: suite.eval.clone(),
                method: suite.methods.get(&cell.spec.method).cloned(),
                world: suite.world.clone(),
            },
            digests: CellDigests::default(),
            metrics: None,
            per_class: Vec::new(),
            fewshot: None,
            train: None,
            skipped_images: Vec::new(),
            features: None,
            timings: Timings::default(),
            environment: Environment {
                crate_version: env!("CARGO_PKG_VERSION").to_string(),
                git_commit: git_commit(),
                backend: self.backend.to_string(),
                device: format!("{:?}", self.device),
                os: std::env::consts::OS.to_string(),
                threads: rayon::current_num_threads(),
                cells_at_once: self.workers,
                host: crate::store::host_name(),
                slurm: crate::store::SlurmJob::from_env(),
            },
            started_at: now_utc(),
            finished_at: String::new(),
            error: None,
        }
    }

    /// Computes `cell`; an error or a panic is caught into the record, never out of the run.
    pub(super) fn run_cell(&mut self, cell: &Cell) -> Record {
        let t0 = Instant::now();
        let mut record = self.new_record(cell);
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| self.compute(cell)));
        match result {
            Ok(Ok(outcome)) => {
                outcome.write_into(&mut record);
                record.status = Status::Ok;
            }
            Ok(Err(e)) => record.error = Some(e.to_string()),
            Err(panic) => record.error = Some(format!("panicked: {}", super::panic_message(&*panic))),
        }
        record.timings.total_s = t0.elapsed().as_secs_f64();
        record.finished_at = now_utc();
        record
    }

    /// A cell's phases: build the method for its training label space, train / load / fetch what
    /// it learned, evaluate.
    pub(super) fn compute(&mut self, cell: &Cell) -> Result<Outcome> {
        if cell.spec.phase == Phase::Meta {
            return Ok(Outcome::Meta(Box::new(self.meta(cell)?)));
        }
        let s = &cell.spec;
        let mc = self.host_config(cell)?;
        let t_load = Instant::now();
        let ds = self.dataset(&s.dataset)?;
        let labels = subsample_labels(ds.classnames.len(), s.train_classes);
        let classnames: Vec<String> = labels.iter().map(|&l| ds.classnames[l].clone()).collect();
        let mut digests = CellDigests {
            backbone: self.model.id.clone(),
            weights_sha256: self.weights_digest.clone(),
            data: [(s.dataset.clone(), ds.digest())].into(),
            ..CellDigests::default()
        };
        let training = mc.training();
        let mut method = CellMethod::build(
            mc,
            &BuildInputs {
                clip: &self.clip,
                tok: &self.tok,
                classnames: &classnames,
                template: &ds.def.template,
                imagenet_like: ds.def.imagenet_like,
                dataset: &s.dataset,
                shots: s.shots,
                seed: s.seed,
            },
        )?;
        let load_s = t_load.elapsed().as_secs_f64();

        let mut train = None;
        let (eval_ds, eval_labels) = match s.phase {
            Phase::Train => {
                if training.learns() {
                    train = Some(self.train_phase(cell, &ds, &labels, &mut method)?);
                }
                (ds.clone(), labels)
            }
            Phase::Checkpoint => {
                digests.checkpoint = Some(self.checkpoint_phase(cell, &mut method)?);
                (ds.clone(), labels)
            }
            Phase::Meta => return Err(Error::Internal("a meta cell reached the host phases".into())),
            Phase::Eval => {
                self.load_trained(cell, training, &mut method)?;
                let target = s.target.clone().unwrap_or_else(|| s.dataset.clone());
                let tds = self.dataset(&target)?;
                digests.data.insert(target.clone(), tds.digest());
                let tl = subsample_labels(tds.classnames.len(), s.target_classes);
                (tds, tl)
            }
        };
        let frozen_image = mc.encoders().is_some_and(|e| e.frozen_image());
        let eval = self.evaluate(&method, frozen_image, &eval_ds, &eval_labels)?;
        Ok(Outcome::Host(Box::new(HostOutcome {
            load_s,
            digests,
            train,
            eval,
        })))
    }

    /// A train cell: the K-shot subset (decoded up front), GRAM's θ₀ and gradient hook for a
    /// gram method, then SGD or a feature fit; the learned parameters go beside the record.
    fn train_phase(
        &mut self,
        cell: &Cell,
        ds: &Dataset,
        labels: &[usize],
        method: &mut CellMethod<Ad<B>>,
    ) -> Result<TrainOutcome> {
        let s = &cell.spec;
        let gram = match &self.resolved.suite.methods[&s.method] {
            MethodConfig::Gram(g) => Some(g),
            _ => None,
        };
        let fewshot = self.fewshot(ds, s.shots, s.seed)?;
        let picked: Vec<Datum> = fewshot.train.iter().map(|&i| ds.train[i].clone()).collect();
        let val_idx = fewshot.val.clone();
        let mut train_items = relabel(&picked, labels);
        // Decode the subset once up front: corrupt images are dealt with before any batch is
        // drawn, and the decoded images stay cached for every epoch.
        let paths: Vec<&Path> = train_items.iter().map(|d| d.path.as_path()).collect();
        let bad = check_decodable(&self.images, &paths);
        train_items.retain(|d| !bad.iter().any(|b| b.path == d.path));
        let mut skipped = Skipped::default();
        self.corrupt(bad, &mut skipped)?;
        if train_items.is_empty() {
            return Err(Error::Input(format!(
                "{}: the training split is empty{}",
                s.dataset,
                skipped.explain()
            )));
        }
        let t = Instant::now();
        let mut meta = None;
        let summary = match method {
            // Nothing to train: the caller asks only of methods that learn.
            CellMethod::Frozen(_) => return Err(Error::Internal("zero-shot CLIP reached training".into())),
            // A suite's validation refuses a gram method on a host without prompts.
            CellMethod::Features(fit) => {
                let picked: Vec<Datum> = val_idx.iter().map(|&i| ds.val[i].clone()).collect();
                let val_items = relabel(&picked, labels);
                self.fit(fit.as_mut(), &train_items, &val_items, &mut skipped)?
            }
            CellMethod::Sgd(learner, schedule) => {
                if let Some(g) = gram {
                    meta = Some(self.with_gram(cell, g, learner.as_mut(), &train_items, &mut skipped)?);
                }
                let checkpoint = super::train::EpochCheckpoint {
                    path: self.store.train_checkpoint_path(&cell.key),
                    key: cell.key.clone(),
                };
                self.train(
                    learner.as_mut(),
                    *schedule,
                    &train_items,
                    &s.dataset,
                    s.shots,
                    s.seed,
                    Some(&checkpoint),
                )?
            }
        };
        let seconds = t.elapsed().as_secs_f64();
        self.store.put_artifact(&cell.key, &method.artifact())?;
        Ok(TrainOutcome {
            fewshot,
            summary,
            meta,
            skipped,
            seconds,
        })
    }

    /// A checkpoint cell: the released checkpoint's tensors into the method, kept beside the record.
    fn checkpoint_phase(&self, cell: &Cell, method: &mut CellMethod<Ad<B>>) -> Result<CheckpointDigest> {
        let path = cell
            .spec
            .checkpoint
            .as_deref()
            .ok_or_else(|| Error::Internal("a checkpoint cell without a checkpoint".into()))?;
        let loaded = crate::methods::released::read(Path::new(path), &method.artifact())?;
        method.load(&loaded)?;
        self.store.put_artifact(&cell.key, &method.artifact())?;
        Ok(CheckpointDigest {
            path: path.to_string(),
            sha256: crate::files::file_sha256(Path::new(path))?,
        })
    }

    /// An eval cell: its train cell must have succeeded; what it learned is loaded.
    fn load_trained(&self, cell: &Cell, training: Training, method: &mut CellMethod<Ad<B>>) -> Result<()> {
        let dep = cell
            .depends_on
            .as_ref()
            .ok_or_else(|| Error::Internal("an eval cell without a train cell".into()))?;
        match self.store.get(dep)? {
            Some(r) if r.status == Status::Ok => {}
            Some(_) => return Err(Error::Run(format!("its train cell {dep} failed"))),
            None => return Err(Error::Run(format!("its train cell {dep} has not run"))),
        }
        if training.learns() {
            method.load(&self.store.get_artifact(dep)?)?;
        }
        Ok(())
    }

    /// The config a cell's method trains as: the method's own, or a gram method's host's.
    fn host_config(&self, cell: &Cell) -> Result<&'a MethodConfig> {
        let resolved: &'a ResolvedSuite = self.resolved;
        let entry = resolved
            .suite
            .methods
            .get(&cell.spec.method)
            .ok_or_else(|| Error::Config(format!("unknown method `{}`", cell.spec.method)))?;
        Ok(resolved.suite.trained_as(entry))
    }
}
