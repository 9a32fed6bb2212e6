//! Input expansion and task sharding.
//!
//! `--input` takes files, folders (walked recursively) and globs; the resulting list is sorted so
//! that `--task-id/--num-tasks` give every task a deterministic, disjoint share of the files
//! (file i goes to task i mod num_tasks), the layout a Slurm job array expects.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The sub-folder where a stage puts records it could not process.
pub const QUARANTINE_DIR: &str = "quarantine";

/// Expands `patterns` into a sorted, de-duplicated list of files. Inside folders, names
/// starting with `.` or `_` (temporaries, manifests) and `quarantine/` folders (a stage's
/// damaged records, never the next stage's input) are skipped. `keep` filters by file name.
pub fn expand(patterns: &[impl AsRef<str>], keep: impl Fn(&Path) -> bool) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for pattern in patterns {
        let pattern = pattern.as_ref();
        if pattern.contains(['*', '?', '[']) {
            let paths = glob::glob(pattern).map_err(|e| Error::Usage(format!("bad glob `{pattern}`: {e}")))?;
            let before = files.len();
            for entry in paths {
                let path = entry.map_err(|e| Error::io(e.path().to_path_buf(), "read while globbing", e.into()))?;
                collect(&path, &keep, &mut files)?;
            }
            if files.len() == before {
                return Err(Error::Usage(format!("`{pattern}` matches no input file")));
            }
        } else {
            let path = PathBuf::from(pattern);
            if !path.exists() {
                return Err(Error::Usage(format!("{pattern}: no such file or folder")));
            }
            collect(&path, &keep, &mut files)?;
        }
    }
    files.sort();
    files.dedup();
    Ok(files)
}

fn collect(path: &Path, keep: &impl Fn(&Path) -> bool, out: &mut Vec<PathBuf>) -> Result<()> {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| Error::io(path, "list folder", e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                !(name.starts_with(['.', '_']) || (name == QUARANTINE_DIR && p.is_dir()))
            })
            .collect();
        entries.sort();
        for entry in entries {
            collect(&entry, keep, out)?;
        }
    } else if keep(path) {
        out.push(path.to_path_buf());
    }
    Ok(())
}

/// This task's share of the work (`--task-id/--num-tasks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaskSlice {
    pub task_id: usize,
    pub num_tasks: usize,
}

impl Default for TaskSlice {
    fn default() -> Self {
        TaskSlice { task_id: 0, num_tasks: 1 }
    }
}

impl TaskSlice {
    pub fn new(task_id: usize, num_tasks: usize) -> Result<Self> {
        if num_tasks == 0 || task_id >= num_tasks {
            return Err(Error::Usage(format!(
                "--task-id {task_id} must be below --num-tasks {num_tasks} (and --num-tasks at least 1)"
            )));
        }
        Ok(TaskSlice { task_id, num_tasks })
    }

    /// Slurm job arrays: SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT when the flags are absent.
    pub fn from_flags_or_env(task_id: Option<usize>, num_tasks: Option<usize>) -> Result<Self> {
        let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<usize>().ok());
        let id = task_id.or_else(|| env("SLURM_ARRAY_TASK_ID")).unwrap_or(0);
        let n = num_tasks.or_else(|| env("SLURM_ARRAY_TASK_COUNT")).unwrap_or(1);
        Self::new(id, n)
    }

    pub fn is_whole(&self) -> bool {
        self.num_tasks == 1
    }

    /// Whether item number `index` of the sorted list belongs to this task.
    pub fn owns(&self, index: usize) -> bool {
        index % self.num_tasks == self.task_id
    }

    /// The (global index, item) pairs of this task.
    pub fn select<T: Clone>(&self, items: &[T]) -> Vec<(usize, T)> {
        items.iter().enumerate().filter(|(i, _)| self.owns(*i)).map(|(i, t)| (i, t.clone())).collect()
    }
}

/// Where a stage that mirrors its input layout writes `path`'s outputs: `<folder>/<file name>`
/// (so `docs/CC-MAIN-2024-10/part-00000.parquet` becomes `CC-MAIN-2024-10/part-00000.parquet`).
pub fn mirrored_name(path: &Path) -> PathBuf {
    let name = path.file_name().map(PathBuf::from).unwrap_or_default();
    match path.parent().and_then(|p| p.file_name()) {
        Some(parent) => PathBuf::from(parent).join(name),
        None => name,
    }
}

/// A usage error when there are no inputs or two of them would write the same [`mirrored_name`].
pub fn check_mirrored_inputs(inputs: &[PathBuf]) -> Result<()> {
    if inputs.is_empty() {
        return Err(Error::Usage("no input Parquet files".into()));
    }
    let mut seen = std::collections::BTreeMap::new();
    for path in inputs {
        if let Some(other) = seen.insert(mirrored_name(path), path) {
            return Err(Error::Usage(format!(
                "{} and {} would write the same output name; give each input file a distinct <folder>/<name>",
                other.display(),
                path.display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_and_globs_expand_sorted_and_deduplicated() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::create_dir_all(d.join("quarantine")).unwrap();
        for name in ["b.wet.gz", "a.wet.gz", "sub/c.wet.gz", "_manifest.json", ".a.tmp-1", "notes.txt", "quarantine/q.wet.gz"] {
            std::fs::write(d.join(name), b"").unwrap();
        }
        let keep = |p: &Path| p.to_string_lossy().ends_with(".gz");
        let dir_s = d.to_string_lossy().to_string();
        let glob_s = format!("{dir_s}/*.gz");
        let files = expand(&[dir_s.as_str(), glob_s.as_str()], keep).unwrap();
        let names: Vec<_> = files.iter().map(|p| p.strip_prefix(d).unwrap().to_string_lossy().to_string()).collect();
        assert_eq!(names, ["a.wet.gz", "b.wet.gz", "sub/c.wet.gz"]);
        assert!(matches!(expand(&[format!("{dir_s}/none*")], keep), Err(Error::Usage(_))));
        assert!(matches!(expand(&[format!("{dir_s}/missing")], keep), Err(Error::Usage(_))));
    }

    #[test]
    fn tasks_partition_the_files() {
        let items: Vec<usize> = (0..11).collect();
        let mut seen = vec![];
        for t in 0..4 {
            seen.extend(TaskSlice::new(t, 4).unwrap().select(&items).into_iter().map(|(_, x)| x));
        }
        seen.sort();
        assert_eq!(seen, items);
        assert!(TaskSlice::new(4, 4).is_err());
    }
}
