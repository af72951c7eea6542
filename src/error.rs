//! One error type for the library: every variant renders as a single line a user can act on.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("bad config: {0}")]
    Config(String),
    #[error("bad checkpoint: {0}")]
    Weights(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("image {path}: {reason}")]
    Image { path: PathBuf, reason: String },
    #[error("{0}")]
    Input(String),
    #[error("results store: {0}")]
    Store(String),
    /// A broken invariant of this program (a bug to report), never the user's input.
    #[error("internal error (please report): {0}")]
    Internal(String),
}

impl Error {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
