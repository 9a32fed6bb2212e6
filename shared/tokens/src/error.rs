//! One error type for the crate: every variant names the file it is about.

use std::path::PathBuf;

/// What went wrong, and where.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("tokenizer {path}: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("shard {path}: {message}")]
    BadShard { path: PathBuf, message: String },
    #[error("token index {path}: {message}")]
    BadIndex { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Config(String),
}

pub type Result<T, E = TokensError> = std::result::Result<T, E>;

/// Attaches a path to an `io::Error`.
pub(crate) fn io_error(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> TokensError {
    let path = path.into();
    move |source| TokensError::Io { path, source }
}

/// Attaches a path to a `tokenizers` error (they are boxed `dyn Error`s).
pub(crate) fn tokenizer_error(
    path: impl Into<PathBuf>,
) -> impl FnOnce(tokenizers::Error) -> TokensError {
    let path = path.into();
    move |error| TokensError::Tokenizer {
        path,
        message: error.to_string(),
    }
}
