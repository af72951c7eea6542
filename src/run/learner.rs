//! A built method as a cell runs it, by how it learns. An SGD method's [`Learner`] owns what
//! training owns — the method's module between steps, the optimizer over it and the gradient hook
//! (GRAM's ψ_φ) — so a method only says what it computes ([`SgdMethod`]); the module is handed to
//! the optimizer and taken back updated, as burn's learner does.

use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{GradientsParams, Optimizer, Sgd};
use burn::tensor::backend::AutodiffBackend;

use super::resume::{self, TrainState};
use crate::clip::{Clip, ClipTokenizer};
use crate::error::{Error, Result};
use crate::gram::RegulatedGradients;
use crate::methods::{
    Batch, BuildInputs, Builder, ClassSet, FeatureFit, Frozen, PromptArtifact, PromptParam, Scorer, SgdMethod,
    SgdSchedule, Training,
};
use crate::suite::methods::MethodConfig;

/// A method built for one training label space, by how it learns; an SGD method with the schedule
/// its spec trains it on (the one its optimizer was built from).
pub enum CellMethod<'a, A: AutodiffBackend> {
    Frozen(Box<dyn Frozen<A::InnerBackend>>),
    Features(Box<dyn FeatureFit<A::InnerBackend>>),
    Sgd(Box<dyn Learner<A>>, SgdSchedule<'a>),
}

impl<'a, A: AutodiffBackend> CellMethod<'a, A> {
    /// Builds `config`'s method (a gram method's host: GRAM is added by the runner); an SGD
    /// method's optimizer from its spec's schedule.
    pub fn build(config: &'a MethodConfig, inputs: &BuildInputs<A>) -> Result<Self> {
        config.build(
            inputs,
            Build {
                training: config.training(),
            },
        )?
    }

    /// The learner of a method built as an SGD method.
    pub fn into_learner(self) -> Result<Box<dyn Learner<A>>> {
        match self {
            CellMethod::Sgd(l, _) => Ok(l),
            _ => Err(Error::Internal("the method does not train by SGD".into())),
        }
    }

    /// The learned parameters (none for a frozen method).
    pub fn artifact(&self) -> PromptArtifact {
        match self {
            CellMethod::Frozen(_) => PromptArtifact::new(),
            CellMethod::Features(m) => m.artifact(),
            CellMethod::Sgd(l, _) => l.artifact(),
        }
    }

    /// Replaces the learned parameters with saved ones.
    pub fn load(&mut self, artifact: &PromptArtifact) -> Result<()> {
        match self {
            CellMethod::Frozen(_) if artifact.is_empty() => Ok(()),
            CellMethod::Frozen(_) => Err(Error::Input(
                "zero-shot CLIP has no parameters to load, and the artifact holds some".into(),
            )),
            CellMethod::Features(m) => m.load(artifact),
            CellMethod::Sgd(l, _) => l.load(artifact),
        }
    }

    /// The scorer of `classes` with what the method learned.
    pub fn scorer(
        &self,
        clip: &Clip<A::InnerBackend>,
        tok: &ClipTokenizer,
        classes: &ClassSet,
        device: &burn::tensor::Device<A::InnerBackend>,
    ) -> Result<Scorer<A::InnerBackend>> {
        match self {
            CellMethod::Frozen(m) => m.scorer(clip, tok, classes),
            CellMethod::Features(m) => m.scorer(classes, device),
            CellMethod::Sgd(l, _) => l.scorer(clip, tok, classes),
        }
    }
}

/// The [`Builder`] that wraps each kind into a [`CellMethod`], with the spec's training.
struct Build<'a> {
    training: Training<'a>,
}

impl Build<'_> {
    fn kind_mismatch(&self, built: &str) -> Error {
        Error::Internal(format!(
            "a method built {built}, and its spec trains it as {:?}",
            self.training
        ))
    }
}

impl<'a, A: AutodiffBackend> Builder<A> for Build<'a> {
    type Out = Result<CellMethod<'a, A>>;

    fn sgd<M: SgdMethod<A> + 'static>(self, method: M, module: M::Module) -> Result<CellMethod<'a, A>> {
        let Training::Sgd(schedule) = self.training else {
            return Err(self.kind_mismatch("for SGD"));
        };
        let learner = SgdLearner {
            method,
            module,
            optim: schedule.optim.burn_config().init(),
            hook: None,
        };
        Ok(CellMethod::Sgd(Box::new(learner), schedule))
    }

    fn features(self, method: Box<dyn FeatureFit<A::InnerBackend>>) -> Result<CellMethod<'a, A>> {
        match self.training {
            Training::Features => Ok(CellMethod::Features(method)),
            _ => Err(self.kind_mismatch("as a feature fit")),
        }
    }

    fn frozen(self, method: Box<dyn Frozen<A::InnerBackend>>) -> Result<CellMethod<'a, A>> {
        match self.training {
            Training::None => Ok(CellMethod::Frozen(method)),
            _ => Err(self.kind_mismatch("with nothing to learn")),
        }
    }
}

/// An SGD method in training: one step is [`Learner::gradients`] (the method's loss, then the
/// hook) and [`Learner::apply`] (the optimizer), so the loop can stop a diverged loss before its
/// gradients touch the parameters.
pub trait Learner<A: AutodiffBackend> {
    /// The loss on `batch` and its gradients, through the gradient hook if one is set.
    fn gradients(&self, clip: &Clip<A>, batch: Batch<A>) -> Result<(f32, GradientsParams)>;

    /// One optimizer step with `grads` at learning rate `lr`.
    fn apply(&mut self, grads: GradientsParams, lr: f64);

    /// `gradients` then `apply`; returns the loss.
    fn step(&mut self, clip: &Clip<A>, batch: Batch<A>, lr: f64) -> Result<f32> {
        let (loss, grads) = self.gradients(clip, batch)?;
        self.apply(grads, lr);
        Ok(loss)
    }

    /// After the last step of epoch `epoch` (0-based) of `epochs`.
    fn end_epoch(&mut self, epoch: usize, epochs: usize) -> Result<()>;

    /// Passes every prompt gradient through GRAM's frozen ψ_φ from now on; fails if a prompt has
    /// no regulator of its modality and width.
    fn regulate(&mut self, hook: RegulatedGradients<A>) -> Result<()>;

    /// The state at an epoch's end (module, optimizer, the method's state across epochs).
    fn state(&self) -> Result<TrainState>;

    /// Puts back a state `state` returned.
    fn restore(&mut self, state: &TrainState) -> Result<()>;

    fn prompt_params(&self) -> Vec<PromptParam>;

    fn artifact(&self) -> PromptArtifact;

    fn load(&mut self, artifact: &PromptArtifact) -> Result<()>;

    fn scorer(
        &self,
        clip: &Clip<A::InnerBackend>,
        tok: &ClipTokenizer,
        classes: &ClassSet,
    ) -> Result<Scorer<A::InnerBackend>>;
}

struct SgdLearner<A: AutodiffBackend, M: SgdMethod<A>> {
    method: M,
    module: M::Module,
    optim: OptimizerAdaptor<Sgd<A::InnerBackend>, M::Module, A>,
    hook: Option<RegulatedGradients<A>>,
}

impl<A: AutodiffBackend, M: SgdMethod<A>> Learner<A> for SgdLearner<A, M> {
    fn gradients(&self, clip: &Clip<A>, batch: Batch<A>) -> Result<(f32, GradientsParams)> {
        let (loss, grads) = self.method.loss(&self.module, clip, batch)?;
        Ok(match &self.hook {
            Some(h) => (loss, h.regulate(grads, &self.method.prompt_params(&self.module))),
            None => (loss, grads),
        })
    }

    fn apply(&mut self, grads: GradientsParams, lr: f64) {
        // A module clone shares its tensors: the optimizer takes it and returns the update.
        self.module = self.optim.step(lr, self.module.clone(), grads);
    }

    fn end_epoch(&mut self, epoch: usize, epochs: usize) -> Result<()> {
        self.module = self.method.end_epoch(self.module.clone(), epoch, epochs)?;
        Ok(())
    }

    fn regulate(&mut self, hook: RegulatedGradients<A>) -> Result<()> {
        hook.check(&self.method.prompt_params(&self.module))?;
        self.hook = Some(hook);
        Ok(())
    }

    fn state(&self) -> Result<TrainState> {
        let mut state = resume::save(&self.module, &self.optim)?;
        state.extra = self.method.epoch_state();
        Ok(state)
    }

    fn restore(&mut self, state: &TrainState) -> Result<()> {
        self.module = resume::load(self.module.clone(), &mut self.optim, state)?;
        self.method.restore_epoch_state(&state.extra)
    }

    fn prompt_params(&self) -> Vec<PromptParam> {
        self.method.prompt_params(&self.module)
    }

    fn artifact(&self) -> PromptArtifact {
        self.method.artifact(&self.module)
    }

    fn load(&mut self, artifact: &PromptArtifact) -> Result<()> {
        self.module = self.method.load(&self.module, artifact)?;
        Ok(())
    }

    fn scorer(
        &self,
        clip: &Clip<A::InnerBackend>,
        tok: &ClipTokenizer,
        classes: &ClassSet,
    ) -> Result<Scorer<A::InnerBackend>> {
        self.method.scorer(&self.module.valid(), clip, tok, classes)
    }
}
