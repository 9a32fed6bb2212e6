//! Atomic outputs: a file is written under a temporary name in its final folder and renamed
//! into place only when complete, so an interrupted stage never leaves a partial output that
//! looks finished. Leftover temporaries of a killed run are removed by [`remove_stale_temporaries`].

use crate::error::{IoContext, Result};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const TEMP_MARK: &str = ".tmp-";

/// A file being written; it appears at its final path on [`AtomicFile::commit`] and is removed
/// if dropped uncommitted.
pub struct AtomicFile {
    final_path: PathBuf,
    temp_path: PathBuf,
    committed: bool,
}

impl AtomicFile {
    /// Creates the temporary file (and the parent folder) for `final_path`.
    pub fn create(final_path: impl AsRef<Path>) -> Result<(Self, File)> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let final_path = final_path.as_ref().to_path_buf();
        let dir = final_path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).at(dir, "create folder")?;
        let name = final_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp_path = dir.join(format!(".{name}{TEMP_MARK}{}-{unique}", std::process::id()));
        let file = File::create(&temp_path).at(&temp_path, "create temporary file")?;
        Ok((AtomicFile { final_path, temp_path, committed: false }, file))
    }

    pub fn final_path(&self) -> &Path {
        &self.final_path
    }

    /// Renames the finished temporary file to its final path (after syncing it to disk).
    pub fn commit(mut self) -> Result<PathBuf> {
        File::open(&self.temp_path).and_then(|f| f.sync_all()).at(&self.temp_path, "sync")?;
        std::fs::rename(&self.temp_path, &self.final_path).at(&self.final_path, "rename into place")?;
        self.committed = true;
        Ok(self.final_path.clone())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.temp_path);
        }
    }
}

/// Writes `bytes` to `path` atomically.
pub fn write_file(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let (atomic, file) = AtomicFile::create(path.as_ref())?;
    let mut w = BufWriter::new(file);
    w.write_all(bytes).and_then(|_| w.flush()).at(atomic.final_path(), "write")?;
    drop(w);
    atomic.commit()?;
    Ok(())
}

/// Removes temporaries left in `dir` by an interrupted run (not recursive).
pub fn remove_stale_temporaries(dir: impl AsRef<Path>) -> Result<usize> {
    let dir = dir.as_ref();
    let mut removed = 0;
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(0) };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.contains(TEMP_MARK) {
            std::fs::remove_file(entry.path()).at(entry.path(), "remove stale temporary")?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncommitted_file_never_appears() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.bin");
        {
            let (_atomic, mut f) = AtomicFile::create(&target).unwrap();
            f.write_all(b"partial").unwrap();
        }
        assert!(!target.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "temporary removed on drop");
    }

    #[test]
    fn commit_renames_and_stale_temporaries_are_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a.json");
        write_file(&target, b"{}").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"{}");
        std::fs::write(dir.path().join(".b.json.tmp-1-0"), b"x").unwrap();
        assert_eq!(remove_stale_temporaries(dir.path()).unwrap(), 1);
        assert!(target.exists());
    }
}
