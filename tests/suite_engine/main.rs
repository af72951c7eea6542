//! The suite engine as a user drives it, one concern per module: suite files and keys, resume and
//! concurrency, backbones, datasets, the [data] policy and feature cache, released checkpoints,
//! GRAM cells. Builders live in `tests/common/suite_env.rs`.

#[path = "../common/mod.rs"]
mod common;

mod backbones;
mod checkpoints;
mod compare;
mod data_policy;
mod datasets;
mod estimates;
mod figures;
mod findings;
mod gram;
mod left;
mod parsing;
mod precision;
mod resume;
mod shards;
