//! A method's training state inside a cell, for per-epoch checkpoints: the learned module and its
//! optimizer's state (SGD's momentum buffers) as burn records at full precision, and whatever else a
//! method accumulates across epochs (PromptSRC's aggregate). Restoring it and replaying the rest of
//! the cell's schedule gives the same bits as an uninterrupted run.

use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{Optimizer, Sgd};
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::methods::PromptArtifact;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// The module's record (its parameter ids included: the optimizer's state is keyed by them).
    pub module: Vec<u8>,
    /// The optimizer's record.
    pub optimizer: Vec<u8>,
    /// Method-specific state across epochs, by name (empty for most methods).
    pub extra: PromptArtifact,
}

type Rec = BinBytesRecorder<FullPrecisionSettings>;

fn err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Store(format!("training checkpoint ({what}): {e}"))
}

/// The state of `module` trained by `optim`.
pub fn save<B, M>(module: &M, optim: &OptimizerAdaptor<Sgd<B::InnerBackend>, M, B>) -> Result<TrainState>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
{
    Ok(TrainState {
        module: Rec::default()
            .record(module.clone().into_record(), ())
            .map_err(|e| err("module", e))?,
        optimizer: Rec::default()
            .record(optim.to_record(), ())
            .map_err(|e| err("optimizer", e))?,
        extra: PromptArtifact::new(),
    })
}

/// `module` and `optim` as `state` left them.
pub fn load<B, M>(module: M, optim: &mut OptimizerAdaptor<Sgd<B::InnerBackend>, M, B>, state: &TrainState) -> Result<M>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
{
    let device = module
        .devices()
        .into_iter()
        .next()
        .ok_or_else(|| err("module", "it has no parameters"))?;
    let record = Rec::default()
        .load(state.module.clone(), &device)
        .map_err(|e| err("module", e))?;
    let opt = Rec::default()
        .load(state.optimizer.clone(), &device)
        .map_err(|e| err("optimizer", e))?;
    *optim = optim.clone().load_record(opt);
    Ok(module.load_record(record))
}
