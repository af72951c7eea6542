//! GRAM (Li et al., ICCV'23) as a declared reconstruction: every choice the paper leaves open is a
//! suite parameter with its provenance (docs/gram.md). This module holds its parts;
//! the meta-training loop, the clustering of the corpus and the plug-in for host methods build on
//! them.

pub mod artifact;
pub mod cluster;
pub mod config;
pub mod corpus;
pub mod episodes;
pub mod meta;
pub mod plugin;
pub mod regulator;
pub mod train;

pub mod spec;
pub use artifact::Checkpointing;
pub(crate) use artifact::MetaArtifact;
pub(crate) use cluster::{cross_modal_hierarchy, Hierarchy};
pub use cluster::{ClusterConfig, ClusterOrder};
pub use config::{MetaTrainConfig, PromptShape};
pub use corpus::Corpus;
pub(crate) use episodes::Episode;
pub use episodes::{EpisodeConfig, QueryRule};

pub use meta::{ClassText, EpisodeSet, MetaLearner, MetaRegulators, MetaStep, TaskEmbedding};
pub use plugin::{theta0_init, RegulatedGradients};
pub use regulator::{Regulator, RegulatorConfig, RegulatorInit};
pub(crate) use spec::{CorpusSpec, GramConfig, GramSpec};
pub use train::{meta_train, MetaInputs};
