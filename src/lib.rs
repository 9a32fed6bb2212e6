//! Helpers for the end-to-end tests in `tests/`: they run the real `ds-*` binaries.

use std::path::{Path, PathBuf};

/// Path of a workspace binary built next to the running test executable
/// (`target/<profile>/ds-…`). `make test` builds the binaries before the tests.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/test-hash -> target/<profile>/
    let dir = exe.parent().and_then(|p| p.parent()).expect("target profile folder");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --workspace --bins` (make test does) before the end-to-end tests",
        path.display()
    );
    path
}

/// `../shared/data` beside the repository, when present (tests using it skip otherwise).
pub fn shared_data() -> Option<PathBuf> {
    let dir = std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())).join("../shared/data");
    dir.is_dir().then_some(dir)
}

/// Parquet files under `dir`, recursively and sorted, skipping names that start with `_` (as
/// a stage's `--input` does: `_dropped/`, temporaries); none when `dir` does not exist (a
/// stage writes no `rejected/` folder when it rejects nothing).
pub fn parquet_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return found };
    for entry in entries.flatten() {
        let p = entry.path();
        if p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('_')) {
            continue;
        }
        if p.is_dir() {
            found.extend(parquet_under(&p));
        } else if p.extension().is_some_and(|x| x == "parquet") {
            found.push(p);
        }
    }
    found.sort();
    found
}
