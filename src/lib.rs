//! gram-bench: a reproducibility suite for CLIP prompt tuning (GRAM and the baselines it plugs into).

// One function needs `unsafe` (`clip::fused::matmul_into`); it allows it with its argument.
#![deny(unsafe_code)]

pub mod backend;
pub mod cli;
pub mod clip;
pub mod data;
pub mod device_check;
pub mod error;
pub mod estimate;
pub mod faults;
pub mod features;
pub mod files;
pub mod gram;
pub mod lock;
pub mod methods;
pub mod provenance;
pub mod report;
pub mod resolve;
pub mod run;
pub mod seeds;
pub mod slurm;
pub mod store;
pub mod suite;
pub mod world;

pub use error::{Error, Result};
