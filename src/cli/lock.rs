//! `gram-bench lock digest`: the SHA-256 datasets.lock pins for a checkpoint.

use std::path::PathBuf;

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum LockCommand {
    /// Print the SHA-256 that datasets.lock pins for a checkpoint (HF directory or .safetensors).
    Digest { path: PathBuf },
}
