//! dsllm's foundation, used by every stage.
//!
//! - [`schema`]: the documents table every text stage reads and writes.
//! - [`parquet_io`]: streaming Parquet reading and writing with bounded memory.
//! - [`atomic`]: outputs appear complete or not at all (temporary name, then rename).
//! - [`manifest`]: the `_manifest.json` that closes every output folder and makes reruns no-ops.
//! - [`inputs`]: input expansion (files, folders, globs) and `--task-id/--num-tasks` sharding.
//! - [`progress`]: the one progress-bar style, silent when stderr is not a terminal.
//! - [`error`]: errors that name the file, the record and the problem.

pub mod atomic;
pub mod cli;
pub mod error;
pub mod inputs;
pub mod manifest;
pub mod parquet_io;
pub mod progress;
pub mod schema;

pub use error::{Error, Result};

/// Version of the dsllm tools, recorded in every manifest.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
