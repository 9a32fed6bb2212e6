//! What every `ds-*` binary does the same way: the input/output/threads/force arguments of a
//! Parquet-to-Parquet stage, thread pool size, the one-line JSON summary on stdout, and exit
//! codes (0 success, 1 runtime error, 2 usage error).

use crate::error::{Error, Result};
use std::path::PathBuf;

/// The arguments of a stage that reads documents Parquet and writes an output folder;
/// binaries `#[command(flatten)]` it (and may reword `--output`'s help with `mut_arg`).
/// `--input` and `--output` are checked by [`StageArgs::require`], not by clap, so that a
/// binary's subcommands need neither.
#[derive(Debug, Clone, clap::Args)]
pub struct StageArgs {
    /// Documents Parquet: files, folders or globs.
    #[arg(long, num_args = 1..)]
    pub input: Vec<String>,
    /// Output folder.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Worker threads (default: all cores). The output does not depend on it.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Rerun even if the output's manifest matches the inputs and parameters.
    #[arg(long)]
    pub force: bool,
}

impl StageArgs {
    /// The input Parquet files (expanded, sorted) and the output folder; a usage error names
    /// the missing flag.
    pub fn require(&self) -> Result<(Vec<PathBuf>, PathBuf)> {
        let output = self.output.clone().ok_or_else(|| Error::Usage("--output is required (and --input)".into()))?;
        if self.input.is_empty() {
            return Err(Error::Usage("--input is required".into()));
        }
        let inputs = crate::inputs::expand(&self.input, |p| p.extension().is_some_and(|e| e == "parquet"))?;
        Ok((inputs, output))
    }
}

/// Sizes rayon's global pool (`--threads`; default: all cores).
pub fn init_threads(threads: Option<usize>) -> Result<()> {
    if let Some(n) = threads {
        if n == 0 {
            return Err(Error::Usage("--threads must be at least 1".to_string()));
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .map_err(|e| Error::Usage(format!("cannot size the thread pool: {e}")))?;
    }
    Ok(())
}

/// Runs a binary's body: prints its summary as one JSON line on stdout, or the error on
/// stderr, and exits with the conventional code.
pub fn run_main(tool: &str, body: impl FnOnce() -> Result<serde_json::Value>) -> ! {
    match body() {
        Ok(summary) => {
            println!("{summary}");
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("{tool}: error: {e}");
            std::process::exit(e.exit_code())
        }
    }
}
