//! Errors as user interface: each names the file, the record (when there is one) and the problem.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where in an input a problem was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// Byte offset in the (compressed) file.
    Offset(u64),
    /// Row number in a table.
    Row(u64),
    /// A record named by its id.
    Record(String),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Offset(o) => write!(f, "byte offset {o}"),
            Location::Row(r) => write!(f, "row {r}"),
            Location::Record(id) => write!(f, "record {id}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A problem in one input file, at an optional place in it.
    #[error("{}{}: {message}", path.display(), location.as_ref().map(|l| format!(" at {l}")).unwrap_or_default())]
    Input { path: PathBuf, location: Option<Location>, message: String },

    /// An IO failure on a file, with what was being done.
    #[error("{}: {action}: {source}", path.display())]
    Io { path: PathBuf, action: &'static str, #[source] source: std::io::Error },

    /// The user asked for something that cannot be done (exit code 2).
    #[error("{0}")]
    Usage(String),

    #[error("{}: parquet: {source}", path.display())]
    Parquet { path: PathBuf, #[source] source: parquet::errors::ParquetError },

    #[error("{}: arrow: {source}", path.display())]
    Arrow { path: PathBuf, #[source] source: arrow::error::ArrowError },

    #[error("{}: json: {source}", path.display())]
    Json { path: PathBuf, #[source] source: serde_json::Error },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn input(path: impl AsRef<Path>, location: Option<Location>, message: impl Into<String>) -> Self {
        Error::Input { path: path.as_ref().to_path_buf(), location, message: message.into() }
    }

    pub fn io(path: impl AsRef<Path>, action: &'static str, source: std::io::Error) -> Self {
        Error::Io { path: path.as_ref().to_path_buf(), action, source }
    }

    pub fn parquet(path: impl AsRef<Path>, source: parquet::errors::ParquetError) -> Self {
        Error::Parquet { path: path.as_ref().to_path_buf(), source }
    }

    pub fn arrow(path: impl AsRef<Path>, source: arrow::error::ArrowError) -> Self {
        Error::Arrow { path: path.as_ref().to_path_buf(), source }
    }

    pub fn json(path: impl AsRef<Path>, source: serde_json::Error) -> Self {
        Error::Json { path: path.as_ref().to_path_buf(), source }
    }

    /// The process exit code of the conventions: 2 for usage errors, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => 2,
            _ => 1,
        }
    }
}

/// Attach a file path to IO results.
pub trait IoContext<T> {
    fn at(self, path: impl AsRef<Path>, action: &'static str) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl AsRef<Path>, action: &'static str) -> Result<T> {
        self.map_err(|e| Error::io(path, action, e))
    }
}
