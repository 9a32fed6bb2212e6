//! The `_manifest.json` that closes every output folder.
//!
//! It records the inputs (paths, sizes, xxh3-128 content hashes), the parameters, the counts
//! (read = kept + removed + quarantined, each by reason), the outputs, the tool version and the
//! wall time. It is written last and atomically: its presence means the folder is complete, and
//! a rerun whose inputs and parameters match it is a no-op ([`Stage::begin`]).
//!
//! With `--num-tasks N > 1` each task writes `_manifest.task-K-of-N.json`; the task that finds
//! all N present merges them into `_manifest.json`.

use crate::atomic;
use crate::error::{Error, IoContext, Result};
use crate::inputs::TaskSlice;
use crate::parquet_io::WrittenFile;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub const MANIFEST_NAME: &str = "_manifest.json";

/// An input file and its content hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFile {
    pub path: PathBuf,
    pub bytes: u64,
    /// xxh3-128 of the file's bytes, hex.
    pub xxh3_128: String,
}

impl InputFile {
    pub fn hash(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let mut file = std::fs::File::open(path).at(path, "open")?;
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut bytes = 0u64;
        loop {
            let n = file.read(&mut buf).at(path, "read")?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            bytes += n as u64;
        }
        Ok(InputFile { path: path.to_path_buf(), bytes, xxh3_128: format!("{:032x}", hasher.digest128()) })
    }
}

/// How many records a stage read and where each went.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub read: u64,
    pub kept: u64,
    pub removed: u64,
    pub quarantined: u64,
    pub removed_by_reason: BTreeMap<String, u64>,
    pub quarantined_by_reason: BTreeMap<String, u64>,
}

impl Counts {
    pub fn keep(&mut self) {
        self.read += 1;
        self.kept += 1;
    }

    pub fn remove(&mut self, reason: &str) {
        self.read += 1;
        self.removed += 1;
        *self.removed_by_reason.entry(reason.to_string()).or_default() += 1;
    }

    pub fn quarantine(&mut self, reason: &str) {
        self.read += 1;
        self.quarantined += 1;
        *self.quarantined_by_reason.entry(reason.to_string()).or_default() += 1;
    }

    pub fn add(&mut self, other: &Counts) {
        self.read += other.read;
        self.kept += other.kept;
        self.removed += other.removed;
        self.quarantined += other.quarantined;
        for (k, v) in &other.removed_by_reason {
            *self.removed_by_reason.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.quarantined_by_reason {
            *self.quarantined_by_reason.entry(k.clone()).or_default() += v;
        }
    }

    /// Every record accounted for: read = kept + removed + quarantined, and reasons add up.
    pub fn is_balanced(&self) -> bool {
        self.read == self.kept + self.removed + self.quarantined
            && self.removed == self.removed_by_reason.values().sum::<u64>()
            && self.quarantined == self.quarantined_by_reason.values().sum::<u64>()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub tool: String,
    pub version: String,
    pub task: TaskSlice,
    pub parameters: serde_json::Value,
    pub inputs: Vec<InputFile>,
    pub outputs: Vec<WrittenFile>,
    pub counts: Counts,
    /// Stage-specific figures (e.g. bytes of text, lossy decodes) that are not document counts.
    #[serde(default)]
    pub extra: BTreeMap<String, serde_json::Value>,
    pub started_unix: u64,
    pub wall_seconds: f64,
}

impl Manifest {
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).at(path, "read manifest")?;
        serde_json::from_str(&text).map_err(|e| Error::json(path, e))
    }

    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::json(path.as_ref(), e))?;
        atomic::write_file(path, &json)
    }

    /// The manifest that closes `dir`, if the folder is complete.
    pub fn of_folder(dir: impl AsRef<Path>) -> Result<Option<Self>> {
        let path = dir.as_ref().join(MANIFEST_NAME);
        if path.exists() {
            Self::read(path).map(Some)
        } else {
            Ok(None)
        }
    }

    fn same_run(&self, tool: &str, params: &serde_json::Value, inputs: &[InputFile], task: TaskSlice) -> bool {
        self.tool == tool
            && self.version == crate::VERSION
            && self.parameters == round_trip(params)
            && self.inputs == inputs
            && self.task == task
            && self.outputs.iter().all(|o| std::fs::metadata(&o.path).map(|m| m.len() == o.bytes).unwrap_or(false))
    }
}

/// Name of the manifest a task writes.
pub fn manifest_name(task: TaskSlice) -> String {
    if task.is_whole() {
        MANIFEST_NAME.to_string()
    } else {
        format!("_manifest.task-{:05}-of-{:05}.json", task.task_id, task.num_tasks)
    }
}

/// The lifecycle of one stage run writing one output folder.
pub struct Stage {
    tool: String,
    output_dir: PathBuf,
    task: TaskSlice,
    parameters: serde_json::Value,
    inputs: Vec<InputFile>,
    started: Instant,
    started_unix: u64,
}

/// What [`Stage::begin`] found.
pub enum StageStart {
    /// A complete output with the same inputs and parameters exists: nothing to do.
    UpToDate(Manifest),
    /// Run the stage, then call [`Stage::finish`].
    Run(Stage),
}

impl Stage {
    /// Hashes the inputs, skips when the folder's manifest matches, and otherwise clears the
    /// previous run's manifest, listed outputs and leftover temporaries so the folder is
    /// visibly incomplete until [`Stage::finish`].
    pub fn begin(
        tool: &str,
        output_dir: impl AsRef<Path>,
        parameters: serde_json::Value,
        input_files: &[PathBuf],
        task: TaskSlice,
        force: bool,
    ) -> Result<StageStart> {
        let output_dir = output_dir.as_ref().to_path_buf();
        let inputs = input_files.iter().map(InputFile::hash).collect::<Result<Vec<_>>>()?;
        let manifest_path = output_dir.join(manifest_name(task));
        if manifest_path.exists() {
            if let Ok(previous) = Manifest::read(&manifest_path) {
                if !force && previous.same_run(tool, &parameters, &inputs, task) {
                    return Ok(StageStart::UpToDate(previous));
                }
                for output in &previous.outputs {
                    let _ = std::fs::remove_file(&output.path);
                }
            }
            std::fs::remove_file(&manifest_path).at(&manifest_path, "remove outdated manifest")?;
        }
        if !task.is_whole() {
            let merged = output_dir.join(MANIFEST_NAME);
            if merged.exists() {
                std::fs::remove_file(&merged).at(&merged, "remove outdated manifest")?;
            }
        }
        std::fs::create_dir_all(&output_dir).at(&output_dir, "create output folder")?;
        atomic::remove_stale_temporaries(&output_dir)?;
        let started_unix = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        Ok(StageStart::Run(Stage {
            tool: tool.to_string(),
            output_dir,
            task,
            parameters,
            inputs,
            started: Instant::now(),
            started_unix,
        }))
    }

    pub fn output_dir(&self) -> &Path {
        &self.output_dir
    }

    pub fn inputs(&self) -> &[InputFile] {
        &self.inputs
    }

    /// Writes the manifest (last, atomically). Fails if the counts do not add up: a stage
    /// must account for every record it read.
    pub fn finish(
        self,
        counts: Counts,
        mut outputs: Vec<WrittenFile>,
        extra: BTreeMap<String, serde_json::Value>,
    ) -> Result<Manifest> {
        if !counts.is_balanced() {
            return Err(Error::input(
                &self.output_dir,
                None,
                format!("internal accounting error in {}: counts do not add up: {counts:?}", self.tool),
            ));
        }
        outputs.sort_by(|a, b| a.path.cmp(&b.path));
        let manifest = Manifest {
            tool: self.tool,
            version: crate::VERSION.to_string(),
            task: self.task,
            parameters: self.parameters,
            inputs: self.inputs,
            outputs,
            counts,
            extra,
            started_unix: self.started_unix,
            wall_seconds: self.started.elapsed().as_secs_f64(),
        };
        manifest.write(self.output_dir.join(manifest_name(self.task)))?;
        if !self.task.is_whole() {
            merge_task_manifests(&self.output_dir, self.task.num_tasks)?;
        }
        Ok(manifest)
    }
}

/// When all task manifests of a job array are present, writes the folder's `_manifest.json`
/// with summed counts (deterministic content, so concurrent finishers write the same file).
pub fn merge_task_manifests(dir: &Path, num_tasks: usize) -> Result<Option<Manifest>> {
    let mut parts = Vec::with_capacity(num_tasks);
    for task_id in 0..num_tasks {
        let path = dir.join(manifest_name(TaskSlice { task_id, num_tasks }));
        if !path.exists() {
            return Ok(None);
        }
        parts.push(Manifest::read(&path)?);
    }
    let mut merged = parts[0].clone();
    merged.task = TaskSlice::default();
    merged.inputs.clear();
    merged.outputs.clear();
    merged.counts = Counts::default();
    merged.extra.clear();
    merged.wall_seconds = 0.0;
    for part in &parts {
        merged.inputs.extend(part.inputs.iter().cloned());
        merged.outputs.extend(part.outputs.iter().cloned());
        merged.counts.add(&part.counts);
        for (k, v) in &part.extra {
            let sum = match (merged.extra.get(k).and_then(|x| x.as_f64()), v.as_f64()) {
                (Some(a), Some(b)) => serde_json::json!(a + b),
                _ => v.clone(),
            };
            merged.extra.insert(k.clone(), sum);
        }
        merged.started_unix = merged.started_unix.min(part.started_unix);
        merged.wall_seconds = merged.wall_seconds.max(part.wall_seconds);
    }
    merged.inputs.sort_by(|a, b| a.path.cmp(&b.path));
    merged.outputs.sort_by(|a, b| a.path.cmp(&b.path));
    merged.write(dir.join(MANIFEST_NAME))?;
    Ok(Some(merged))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(dir: &Path, input: &Path, params: serde_json::Value, task: TaskSlice) -> bool {
        match Stage::begin("ds-test", dir, params, &[input.to_path_buf()], task, false).unwrap() {
            StageStart::UpToDate(_) => false,
            StageStart::Run(stage) => {
                let mut counts = Counts::default();
                counts.keep();
                counts.remove("short");
                counts.quarantine("bad_header");
                stage.finish(counts, vec![], BTreeMap::new()).unwrap();
                true
            }
        }
    }

    #[test]
    fn rerun_with_same_inputs_is_a_no_op_and_changes_rerun() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.txt");
        std::fs::write(&input, b"hello").unwrap();
        let out = dir.path().join("out");
        let p = serde_json::json!({"threshold": 1});
        assert!(run(&out, &input, p.clone(), TaskSlice::default()));
        assert!(!run(&out, &input, p.clone(), TaskSlice::default()), "same inputs: skipped");
        assert!(run(&out, &input, serde_json::json!({"threshold": 2}), TaskSlice::default()), "new parameters");
        std::fs::write(&input, b"hello!").unwrap();
        assert!(run(&out, &input, serde_json::json!({"threshold": 2}), TaskSlice::default()), "new input content");
        let m = Manifest::of_folder(&out).unwrap().unwrap();
        assert_eq!(m.counts.read, 3);
        assert!(m.counts.is_balanced());
    }

    #[test]
    fn task_manifests_merge_when_all_present() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.txt");
        std::fs::write(&input, b"x").unwrap();
        let out = dir.path().join("out");
        run(&out, &input, serde_json::json!({}), TaskSlice::new(1, 2).unwrap());
        assert!(Manifest::of_folder(&out).unwrap().is_none(), "one of two tasks done: incomplete");
        run(&out, &input, serde_json::json!({}), TaskSlice::new(0, 2).unwrap());
        let merged = Manifest::of_folder(&out).unwrap().unwrap();
        assert_eq!(merged.counts.read, 6);
        assert_eq!(merged.counts.quarantined_by_reason["bad_header"], 2);
    }

    #[test]
    fn unbalanced_counts_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let StageStart::Run(stage) = Stage::begin("t", dir.path(), serde_json::json!({}), &[], TaskSlice::default(), false).unwrap() else {
            panic!()
        };
        let mut counts = Counts::default();
        counts.read = 2;
        counts.kept = 1;
        assert!(stage.finish(counts, vec![], BTreeMap::new()).is_err());
    }
}

/// `value` as it reads back from the manifest file: serde_json's default float parser can land
/// one ulp away from a long decimal (an f32 threshold widened to f64), so fresh parameters are
/// compared in their written-and-read form.
fn round_trip(value: &serde_json::Value) -> serde_json::Value {
    serde_json::from_str(&value.to_string()).unwrap_or_else(|_| value.clone())
}
