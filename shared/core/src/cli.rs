//! What every `ds-*` binary does the same way: thread pool size, the one-line JSON summary on
//! stdout, and exit codes (0 success, 1 runtime error, 2 usage error).

use crate::error::{Error, Result};

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
