//! One error type for the library: every variant renders as a single line a user can act on, and
//! the variant says what kind of failure it is — the user's files (`Input`, `Io`, `Image`,
//! `Weights`, `Tokenizer`), what a suite asks for (`Config`), a cell's computation (`Run`), the
//! results store (`Store`), or a broken invariant of this program (`Internal`).

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A suite, lock or command line that does not hold together: an unknown name, fields a
    /// protocol or host does not allow, a backbone that is not pinned, an unset `${VAR}`.
    #[error("bad config: {0}")]
    Config(String),
    #[error("bad checkpoint: {0}")]
    Weights(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("image {path}: {reason}")]
    Image { path: PathBuf, reason: String },
    /// The user's files: a malformed suite, lock, split file, corpus, few-shot file or artifact,
    /// a dataset that is not there or differs from its pin, an image that does not decode.
    #[error("{0}")]
    Input(String),
    /// A cell's computation failed (training diverged, the cell it needs failed or has not run),
    /// or a run's outcome is a failure (cells failed, a regression check found regressions).
    #[error("{0}")]
    Run(String),
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
