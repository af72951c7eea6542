//! gram-bench: a reproducibility suite for CLIP prompt tuning (GRAM and the baselines it plugs into).

pub mod backend;
pub mod cli;
pub mod clip;
pub mod error;
pub mod world;

pub use error::{Error, Result};
