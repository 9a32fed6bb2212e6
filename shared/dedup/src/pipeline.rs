//! The stage's three phases and the work folder that connects them.
//!
//! ```text
//! <output>/_work/<fingerprint>/            one per (inputs, parameters, index)
//!   sig/file-NNNNN.json                    the file's signature phase is complete: its runs
//!   sig/file-NNNNN-run-RRRR.docs.zst       id, dump, exact hash, band hashes, sample of each row
//!   sig/file-NNNNN-run-RRRR.band-BB.zst    sorted (band hash, row) pairs: the external sort's runs
//!   decisions/file-NNNNN.zst               kept / removed (dup_of, dump, similarity) / quarantined per row
//!   cluster.json                           the cluster phase is complete
//! <output>/kept/<dump>/<file>.parquet      the input's rows that stay (its schema)
//! <output>/removed/<dump>/<file>.parquet   the rest, with dup_of, dup_of_dump, similarity
//! <output>/quarantine/<dump>/<file>.parquet rows with no text left after normalization
//! <output>/report.{json,md}, <output>/_manifest.json
//! ```
//! Every file is keyed by the input file's position in the sorted input list, never by task, so
//! 1 or N tasks and 1 or N threads produce the same bytes; every file appears atomically, so a
//! killed phase reruns from where it stopped.

use crate::cluster::{cluster_dump, DumpDocs, Verdict};
use crate::codec::{write_band_run, BandRunReader, RecordReader, RecordWriter};
use crate::index::Index;
use crate::minhash::{Sketch, Sketcher};
use crate::report::{DumpStats, Report};
use crate::DedupConfig;
use arrow::array::{Array, ArrayRef, BooleanArray, Float32Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use dsllm_core::error::{Error, IoContext, Result};
use dsllm_core::inputs::TaskSlice;
use dsllm_core::manifest::{Counts, Manifest, Stage, StageStart};
use dsllm_core::parquet_io::{read_batches, row_count, schema_of, ParquetSink, WrittenFile};
use dsllm_core::progress::{self, ProgressBar};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const TOOL: &str = "ds-dedup";
pub const REMOVED_EXACT: &str = "exact_duplicate";
pub const REMOVED_NEAR: &str = "near_duplicate";
pub const QUARANTINE_EMPTY: &str = "empty_text";

/// Which part of the work a process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Everything, in this process (the default).
    All,
    /// Sketch this task's input files into sorted runs.
    Signatures,
    /// Merge all runs with the index, cluster, decide (one task, after all signature tasks).
    Cluster,
    /// Write this task's kept/removed/quarantine Parquet and manifest (after cluster).
    Write,
}

/// One run of the stage.
#[derive(Debug, Clone)]
pub struct DedupJob {
    /// Input Parquet files, sorted (see `dsllm_core::inputs::expand`).
    pub inputs: Vec<PathBuf>,
    pub output: PathBuf,
    pub index: PathBuf,
    pub config: DedupConfig,
    pub task: TaskSlice,
    /// Bounds the documents held by the signature phase before a run is sorted and spilled.
    pub memory_mb: usize,
    /// Rerun even when the output folder's manifest says it is up to date.
    pub force: bool,
}

/// Bytes the signature phase holds per document (sample, band hashes and entries, id, bookkeeping).
fn bytes_per_sketched_doc(config: &DedupConfig) -> usize {
    config.sample_size * 4 + config.bands * 20 + 96
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunInfo {
    docs: u64,
    dumps: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FileSketches {
    rows: u64,
    runs: Vec<RunInfo>,
}

/// What one row of an input file became.
#[derive(Debug, Clone, PartialEq)]
enum RowDecision {
    Kept,
    Removed { dup_of: String, dup_of_dump: String, similarity: f32, exact: bool },
    Quarantined,
}

impl DedupJob {
    /// The stage's parameters, as recorded in the manifest.
    pub fn parameters(&self) -> serde_json::Value {
        serde_json::json!({ "config": self.config, "index": self.index })
    }

    fn work_root(&self) -> PathBuf {
        self.output.join("_work")
    }

    /// The work folder of these inputs and parameters: a change of either starts a new one.
    fn work_dir(&self) -> Result<PathBuf> {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(self.parameters().to_string().as_bytes());
        for path in &self.inputs {
            let meta = std::fs::metadata(path).at(path, "stat input")?;
            let mtime = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_nanos()).unwrap_or(0);
            h.update(path.to_string_lossy().as_bytes());
            h.update(&meta.len().to_le_bytes());
            h.update(&mtime.to_le_bytes());
        }
        Ok(self.work_root().join(format!("{:016x}", h.digest())))
    }

    fn check_inputs(&self) -> Result<()> {
        self.config.validate().map_err(Error::Usage)?;
        dsllm_core::inputs::check_mirrored_inputs(&self.inputs)?;
        Ok(())
    }

    /// Runs `phase` and returns the one-line JSON summary.
    pub fn run(&self, phase: Phase) -> Result<serde_json::Value> {
        self.check_inputs()?;
        let started = std::time::Instant::now();
        let mut summary = match phase {
            Phase::All => self.run_all()?,
            Phase::Signatures => {
                let work = self.work_dir()?;
                let files = self.task.select(&self.inputs);
                let docs = self.sketch_files(&work, &files)?;
                serde_json::json!({ "files": files.len(), "documents": docs })
            }
            Phase::Cluster => {
                let work = self.work_dir()?;
                let stats = self.cluster(&work)?;
                serde_json::json!({ "dumps": dump_summaries(&stats) })
            }
            Phase::Write => {
                let work = self.work_dir()?;
                match Stage::begin(TOOL, &self.output, self.parameters(), &self.task_files(), self.task, self.force)? {
                    StageStart::UpToDate(m) => manifest_summary(&m, true),
                    StageStart::Run(stage) => manifest_summary(&self.write_outputs(&work, stage)?, false),
                }
            }
        };
        let object = summary.as_object_mut().expect("summaries are objects");
        object.insert("tool".into(), TOOL.into());
        object.insert("phase".into(), serde_json::to_value(phase).expect("serializable"));
        object.insert("task".into(), serde_json::to_value(self.task).expect("serializable"));
        object.insert("output".into(), self.output.to_string_lossy().into());
        object.insert("index".into(), self.index.to_string_lossy().into());
        object.insert("wall_seconds".into(), started.elapsed().as_secs_f64().into());
        Ok(summary)
    }

    fn task_files(&self) -> Vec<PathBuf> {
        self.task.select(&self.inputs).into_iter().map(|(_, p)| p).collect()
    }

    fn run_all(&self) -> Result<serde_json::Value> {
        let whole = DedupJob { task: TaskSlice::default(), ..self.clone() };
        let stage = match Stage::begin(TOOL, &self.output, self.parameters(), &self.inputs, TaskSlice::default(), self.force)? {
            StageStart::UpToDate(m) => return Ok(manifest_summary(&m, true)),
            StageStart::Run(stage) => stage,
        };
        let work = whole.work_dir()?;
        let files = whole.task.select(&self.inputs);
        let clock = std::time::Instant::now();
        whole.sketch_files(&work, &files)?;
        let signatures_seconds = clock.elapsed().as_secs_f64();
        let stats = whole.cluster(&work)?;
        let cluster_seconds = clock.elapsed().as_secs_f64() - signatures_seconds;
        let manifest = whole.write_outputs(&work, stage)?;
        let write_seconds = clock.elapsed().as_secs_f64() - signatures_seconds - cluster_seconds;
        // The work folder is only needed until the outputs exist.
        let root = self.work_root();
        std::fs::remove_dir_all(&root).at(&root, "remove work folder")?;
        let mut summary = manifest_summary(&manifest, false);
        let object = summary.as_object_mut().expect("object");
        object.insert("dumps".into(), dump_summaries(&stats));
        object.insert(
            "phase_seconds".into(),
            serde_json::json!({ "signatures": signatures_seconds, "cluster": cluster_seconds, "write": write_seconds }),
        );
        Ok(summary)
    }

    // ---- phase 1: signatures -------------------------------------------------------------

    /// Sketches the given (index, path) input files; returns the documents read. Files are
    /// sketched in parallel, each into its own runs, so the memory bound is shared among them.
    fn sketch_files(&self, work: &Path, files: &[(usize, PathBuf)]) -> Result<u64> {
        let total: u64 = files.iter().map(|(_, p)| row_count(p)).sum::<Result<u64>>()?;
        let bar = progress::bar(total, "signatures", "docs");
        let concurrent = rayon::current_num_threads().min(files.len()).max(1);
        let run_capacity = ((self.memory_mb.max(1) << 20) / concurrent / bytes_per_sketched_doc(&self.config)).max(1024);
        files.par_iter().try_for_each(|(index, path)| self.sketch_file(work, *index, path, run_capacity, &bar))?;
        bar.finish_and_clear();
        Ok(total)
    }

    fn sketch_file(&self, work: &Path, file_index: usize, path: &Path, run_capacity: usize, bar: &ProgressBar) -> Result<()> {
        let done = work.join("sig").join(format!("file-{file_index:05}.json"));
        if done.exists() {
            bar.inc(row_count(path)?);
            return Ok(());
        }
        let mut run = RunBuffer::default();
        let mut runs = Vec::new();
        let mut rows = 0u64;
        for batch in read_batches(path, Some(&["id", "dump", "text"]))? {
            let batch = batch?;
            let ids = string_column(&batch, "id", path)?;
            let dumps = string_column(&batch, "dump", path)?;
            let texts = string_column(&batch, "text", path)?;
            let text_of = |r: usize| if texts.is_null(r) { "" } else { texts.value(r) };
            let sketches: Vec<Sketch> = (0..batch.num_rows())
                .into_par_iter()
                .map_init(|| Sketcher::new(&self.config), |sketcher, r| sketcher.sketch(text_of(r)))
                .collect();
            for (r, sketch) in sketches.into_iter().enumerate() {
                let id = if ids.is_null(r) { "" } else { ids.value(r) };
                let dump = if dumps.is_null(r) { "" } else { dumps.value(r) };
                run.push(dump, id, text_of(r).len() as u32, sketch);
                if run.len() >= run_capacity {
                    runs.push(run.spill(work, file_index, runs.len(), &self.config)?);
                }
            }
            rows += batch.num_rows() as u64;
            bar.inc(batch.num_rows() as u64);
        }
        if run.len() > 0 || runs.is_empty() {
            runs.push(run.spill(work, file_index, runs.len(), &self.config)?);
        }
        let json = serde_json::to_vec(&FileSketches { rows, runs }).map_err(|e| Error::json(&done, e))?;
        dsllm_core::atomic::write_file(&done, &json)
    }

    // ---- phase 2: cluster ----------------------------------------------------------------

    /// Clusters every dump of the input, in order, against the index; writes the decisions,
    /// the index segments and the report. Returns the stats of the dumps processed.
    fn cluster(&self, work: &Path) -> Result<Vec<(String, DumpStats)>> {
        let done = work.join("cluster.json");
        if done.exists() {
            let text = std::fs::read_to_string(&done).at(&done, "read")?;
            return serde_json::from_str(&text).map_err(|e| Error::json(&done, e));
        }
        let mut files = Vec::with_capacity(self.inputs.len());
        for index in 0..self.inputs.len() {
            let path = work.join("sig").join(format!("file-{index:05}.json"));
            if !path.exists() {
                return Err(Error::Usage(format!(
                    "the signature phase has not finished for {} (no {}); run `--phase signatures` for every task first",
                    self.inputs[index].display(),
                    path.display()
                )));
            }
            let text = std::fs::read_to_string(&path).at(&path, "read")?;
            files.push(serde_json::from_str::<FileSketches>(&text).map_err(|e| Error::json(&path, e))?);
        }
        let mut index = Index::open_or_create(&self.index, &self.config)?;
        let all_dumps: BTreeSet<&str> = files.iter().flat_map(|f| f.runs.iter().flat_map(|r| r.dumps.iter().map(String::as_str))).collect();
        let mut order: Vec<&str> = all_dumps.into_iter().collect();
        // Dumps already in the index keep their place; new ones follow in name order (the
        // chronological order of CC-MAIN-YYYY-WW).
        order.sort_by_key(|d| (index.position(d).unwrap_or(usize::MAX), d.to_string()));

        let mut decisions: Vec<Vec<RowDecision>> = files.iter().map(|f| vec![RowDecision::Kept; f.rows as usize]).collect();
        let bar = progress::bar(order.len() as u64, "cluster", "dumps");
        let mut processed = Vec::new();
        for dump in order {
            let stats = self.cluster_one_dump(work, &files, dump, &mut index, &mut decisions)?;
            processed.push((dump.to_string(), stats));
            bar.inc(1);
        }
        bar.finish_and_clear();
        for (file_index, rows) in decisions.iter().enumerate() {
            write_decisions(&work.join("decisions").join(format!("file-{file_index:05}.zst")), rows)?;
        }
        std::fs::create_dir_all(&self.output).at(&self.output, "create output folder")?;
        Report::from_index(&index.manifest.dumps).write(&self.output)?;
        let json = serde_json::to_vec(&processed).map_err(|e| Error::json(&done, e))?;
        dsllm_core::atomic::write_file(&done, &json)?;
        Ok(processed)
    }

    fn cluster_one_dump(
        &self,
        work: &Path,
        files: &[FileSketches],
        dump: &str,
        index: &mut Index,
        decisions: &mut [Vec<RowDecision>],
    ) -> Result<DumpStats> {
        let bands = self.config.bands;
        let mut docs = DumpDocs::default();
        let mut keys: Vec<(usize, usize)> = Vec::new(); // (file, row) of each document
        let mut quarantined = 0u64;
        // The runs holding this dump, and each run row's document number (u32::MAX: other dump).
        let mut runs: Vec<(PathBuf, Vec<u32>)> = Vec::new();
        let mut band_hashes = vec![0u64; bands];
        let mut sample = Vec::new();
        for (file_index, file) in files.iter().enumerate() {
            let mut first_row = 0usize;
            for (run_index, info) in file.runs.iter().enumerate() {
                let Some(dump_code) = info.dumps.iter().position(|d| d == dump) else {
                    first_row += info.docs as usize;
                    continue;
                };
                let stem = work.join("sig").join(format!("file-{file_index:05}-run-{run_index:04}"));
                let mut reader = RecordReader::open(stem.with_extension("docs.zst"))?;
                let n = reader.u64()? as usize;
                let mut row_to_doc = vec![u32::MAX; n];
                for (row, slot) in row_to_doc.iter_mut().enumerate() {
                    let code = reader.u32()?;
                    let id = reader.str()?;
                    let text_length = reader.u32()?;
                    let exact = reader.u128()?;
                    let has_sketch = reader.u8()? == 1;
                    if has_sketch {
                        for hash in band_hashes.iter_mut() {
                            *hash = reader.u64()?;
                        }
                        sample.resize(reader.u32()? as usize, 0);
                        reader.u32s(&mut sample)?;
                    }
                    if code as usize != dump_code {
                        continue;
                    }
                    if !has_sketch {
                        decisions[file_index][first_row + row] = RowDecision::Quarantined;
                        quarantined += 1;
                        continue;
                    }
                    *slot = docs.len() as u32;
                    docs.ids.push(id);
                    docs.exact_hashes.push(exact);
                    docs.text_lengths.push(text_length);
                    docs.band_hashes.extend_from_slice(&band_hashes);
                    docs.samples.push(&sample);
                    keys.push((file_index, first_row + row));
                }
                runs.push((stem, row_to_doc));
                first_row += n;
            }
        }
        let band_list = |band: usize| merge_band_runs(&runs, band);
        let outcome = cluster_dump(&self.config, dump, &docs, &band_list, index)?;
        let mut stats = outcome.stats;
        stats.documents += quarantined;
        stats.quarantined = quarantined;
        for ((file_index, row), verdict) in keys.into_iter().zip(outcome.verdicts) {
            if let Verdict::Removed { dup_of, similarity, exact } = verdict {
                decisions[file_index][row] = RowDecision::Removed { dup_of: dup_of.id, dup_of_dump: dup_of.dump, similarity, exact };
            }
        }
        index.add_dump(dump, &outcome.segment, stats.clone(), &self.config)?;
        Ok(stats)
    }

    // ---- phase 3: write ------------------------------------------------------------------

    fn write_outputs(&self, work: &Path, stage: Stage) -> Result<Manifest> {
        let files = self.task.select(&self.inputs);
        let total: u64 = files.iter().map(|(_, p)| row_count(p)).sum::<Result<u64>>()?;
        let bar = progress::bar(total, "write", "docs");
        let per_file: Vec<Result<(Counts, Vec<WrittenFile>)>> = files
            .par_iter()
            .map(|(file_index, path)| {
                let decisions_path = work.join("decisions").join(format!("file-{file_index:05}.zst"));
                if !decisions_path.exists() {
                    return Err(Error::Usage(format!(
                        "no decisions for {} ({}); run `--phase cluster` first",
                        path.display(),
                        decisions_path.display()
                    )));
                }
                let decisions = read_decisions(&decisions_path)?;
                let mut counts = Counts::default();
                let written = self.split_file(path, &decisions, &mut counts, &bar)?;
                Ok((counts, written))
            })
            .collect();
        let mut counts = Counts::default();
        let mut outputs = Vec::new();
        for result in per_file {
            let (file_counts, written) = result?;
            counts.add(&file_counts);
            outputs.extend(written);
        }
        bar.finish_and_clear();
        let mut extra = BTreeMap::new();
        extra.insert("removed_exact".to_string(), serde_json::json!(counts.removed_by_reason.get(REMOVED_EXACT).copied().unwrap_or(0)));
        extra.insert("removed_near".to_string(), serde_json::json!(counts.removed_by_reason.get(REMOVED_NEAR).copied().unwrap_or(0)));
        stage.finish(counts, outputs, extra)
    }

    fn split_file(&self, path: &Path, decisions: &[RowDecision], counts: &mut Counts, bar: &ProgressBar) -> Result<Vec<WrittenFile>> {
        let name = dsllm_core::inputs::mirrored_name(path);
        let schema = schema_of(path)?;
        let removed_schema = removed_schema(&schema);
        let mut kept = ParquetSink::create(self.output.join("kept").join(&name), schema.clone())?;
        let mut removed: Option<ParquetSink> = None;
        let mut quarantine: Option<ParquetSink> = None;
        let mut row = 0usize;
        for batch in read_batches(path, None)? {
            let batch = batch?;
            let n = batch.num_rows();
            let rows = decisions.get(row..row + n).ok_or_else(|| {
                Error::input(path, None, "has more rows than when it was sketched; rerun the stage (the input changed)")
            })?;
            let mask = |want: fn(&RowDecision) -> bool| BooleanArray::from(rows.iter().map(want).collect::<Vec<bool>>());
            let filter = |want: fn(&RowDecision) -> bool| {
                arrow::compute::filter_record_batch(&batch, &mask(want)).map_err(|e| Error::arrow(path, e))
            };
            kept.write(&filter(|d| matches!(d, RowDecision::Kept))?)?;
            let removed_rows: Vec<&RowDecision> = rows.iter().filter(|d| matches!(d, RowDecision::Removed { .. })).collect();
            if !removed_rows.is_empty() {
                let base = filter(|d| matches!(d, RowDecision::Removed { .. }))?;
                let mut columns: Vec<ArrayRef> = base.columns().to_vec();
                let field = |f: fn(&RowDecision) -> Option<&str>| -> ArrayRef {
                    Arc::new(StringArray::from(removed_rows.iter().map(|d| f(d)).collect::<Vec<_>>()))
                };
                columns.push(field(|d| if let RowDecision::Removed { dup_of, .. } = d { Some(dup_of) } else { None }));
                columns.push(field(|d| if let RowDecision::Removed { dup_of_dump, .. } = d { Some(dup_of_dump) } else { None }));
                columns.push(Arc::new(Float32Array::from(
                    removed_rows.iter().map(|d| if let RowDecision::Removed { similarity, .. } = d { *similarity } else { 0.0 }).collect::<Vec<_>>(),
                )));
                let batch = RecordBatch::try_new(removed_schema.clone(), columns).map_err(|e| Error::arrow(path, e))?;
                if removed.is_none() {
                    removed = Some(ParquetSink::create(self.output.join("removed").join(&name), removed_schema.clone())?);
                }
                removed.as_mut().expect("created").write(&batch)?;
            }
            if rows.iter().any(|d| matches!(d, RowDecision::Quarantined)) {
                if quarantine.is_none() {
                    quarantine = Some(ParquetSink::create(self.output.join("quarantine").join(&name), schema.clone())?);
                }
                quarantine.as_mut().expect("created").write(&filter(|d| matches!(d, RowDecision::Quarantined))?)?;
            }
            for d in rows {
                match d {
                    RowDecision::Kept => counts.keep(),
                    RowDecision::Removed { exact: true, .. } => counts.remove(REMOVED_EXACT),
                    RowDecision::Removed { exact: false, .. } => counts.remove(REMOVED_NEAR),
                    RowDecision::Quarantined => counts.quarantine(QUARANTINE_EMPTY),
                }
            }
            row += n;
            bar.inc(n as u64);
        }
        if row != decisions.len() {
            return Err(Error::input(path, None, "has fewer rows than when it was sketched; rerun the stage (the input changed)"));
        }
        let mut written = vec![kept.finish()?];
        written.extend(removed.map(ParquetSink::finish).transpose()?);
        written.extend(quarantine.map(ParquetSink::finish).transpose()?);
        Ok(written)
    }
}

/// The input schema plus the columns that explain a removal.
pub fn removed_schema(schema: &Schema) -> Arc<Schema> {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("dup_of", DataType::Utf8, false));
    fields.push(Field::new("dup_of_dump", DataType::Utf8, false));
    fields.push(Field::new("similarity", DataType::Float32, false));
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

fn string_column<'a>(batch: &'a RecordBatch, name: &str, path: &Path) -> Result<&'a StringArray> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| Error::input(path, None, format!("column `{name}` is missing or not a UTF-8 string column")))
}

/// The documents of one run of the signature phase, until spilled.
#[derive(Default)]
struct RunBuffer {
    dumps: Vec<String>,
    dump_codes: Vec<u32>,
    ids: Vec<String>,
    text_lengths: Vec<u32>,
    sketches: Vec<Sketch>,
}

impl RunBuffer {
    fn len(&self) -> usize {
        self.ids.len()
    }

    fn push(&mut self, dump: &str, id: &str, text_length: u32, sketch: Sketch) {
        let code = match self.dumps.iter().position(|d| d == dump) {
            Some(c) => c,
            None => {
                self.dumps.push(dump.to_string());
                self.dumps.len() - 1
            }
        };
        self.dump_codes.push(code as u32);
        self.ids.push(id.to_string());
        self.text_lengths.push(text_length);
        self.sketches.push(sketch);
    }

    /// Writes the run (documents, then one sorted band file per band) and empties the buffer.
    fn spill(&mut self, work: &Path, file_index: usize, run_index: usize, config: &DedupConfig) -> Result<RunInfo> {
        let stem = work.join("sig").join(format!("file-{file_index:05}-run-{run_index:04}"));
        let mut w = RecordWriter::create(stem.with_extension("docs.zst"))?;
        w.u64(self.len() as u64)?;
        for i in 0..self.len() {
            let sketch = &self.sketches[i];
            w.u32(self.dump_codes[i])?;
            w.str(&self.ids[i])?;
            w.u32(self.text_lengths[i])?;
            w.u128(sketch.exact_hash)?;
            let has_sketch = !sketch.band_hashes.is_empty();
            w.u8(u8::from(has_sketch))?;
            if has_sketch {
                for &hash in &sketch.band_hashes {
                    w.u64(hash)?;
                }
                w.u32(sketch.sample.len() as u32)?;
                w.u32s(&sketch.sample)?;
            }
        }
        w.finish()?;
        let mut bands = vec![Vec::with_capacity(self.len()); config.bands];
        for (row, sketch) in self.sketches.iter().enumerate() {
            for (band, &hash) in sketch.band_hashes.iter().enumerate() {
                bands[band].push((hash, row as u32));
            }
        }
        bands.par_iter_mut().for_each(|b| b.sort_unstable());
        for (band, entries) in bands.iter().enumerate() {
            write_band_run(&stem.with_extension(format!("band-{band:02}.zst")), entries)?;
        }
        let info = RunInfo { docs: self.len() as u64, dumps: std::mem::take(&mut self.dumps) };
        *self = RunBuffer::default();
        Ok(info)
    }
}

/// The k-way merge of the external sort: one band's sorted runs, rows mapped to the dump's
/// document numbers (rows of other dumps dropped), in (hash, document) order.
fn merge_band_runs(runs: &[(PathBuf, Vec<u32>)], band: usize) -> Result<Vec<(u64, u32)>> {
    let mut readers = Vec::with_capacity(runs.len());
    let mut heap = BinaryHeap::new();
    for (stem, _) in runs {
        readers.push(BandRunReader::open(&stem.with_extension(format!("band-{band:02}.zst")))?);
    }
    let next = |readers: &mut Vec<BandRunReader>, source: usize| -> Result<Option<(u64, u32)>> {
        while let Some((hash, row)) = readers[source].next_entry()? {
            let doc = runs[source].1[row as usize];
            if doc != u32::MAX {
                return Ok(Some((hash, doc)));
            }
        }
        Ok(None)
    };
    for source in 0..runs.len() {
        if let Some((hash, doc)) = next(&mut readers, source)? {
            heap.push(Reverse((hash, doc, source)));
        }
    }
    let mut merged = Vec::new();
    while let Some(Reverse((hash, doc, source))) = heap.pop() {
        merged.push((hash, doc));
        if let Some((hash, doc)) = next(&mut readers, source)? {
            heap.push(Reverse((hash, doc, source)));
        }
    }
    Ok(merged)
}

fn write_decisions(path: &Path, rows: &[RowDecision]) -> Result<()> {
    let mut w = RecordWriter::create(path)?;
    w.u64(rows.len() as u64)?;
    for row in rows {
        match row {
            RowDecision::Kept => w.u8(0)?,
            RowDecision::Quarantined => w.u8(3)?,
            RowDecision::Removed { dup_of, dup_of_dump, similarity, exact } => {
                w.u8(if *exact { 1 } else { 2 })?;
                w.str(dup_of)?;
                w.str(dup_of_dump)?;
                w.f32(*similarity)?;
            }
        }
    }
    w.finish()?;
    Ok(())
}

fn read_decisions(path: &Path) -> Result<Vec<RowDecision>> {
    let mut r = RecordReader::open(path)?;
    let n = r.u64()?;
    (0..n)
        .map(|_| {
            Ok(match r.u8()? {
                0 => RowDecision::Kept,
                3 => RowDecision::Quarantined,
                tag @ (1 | 2) => {
                    RowDecision::Removed { dup_of: r.str()?, dup_of_dump: r.str()?, similarity: r.f32()?, exact: tag == 1 }
                }
                other => return Err(Error::input(path, None, format!("unknown decision tag {other}"))),
            })
        })
        .collect()
}

fn manifest_summary(m: &Manifest, up_to_date: bool) -> serde_json::Value {
    serde_json::json!({
        "up_to_date": up_to_date,
        "read": m.counts.read,
        "kept": m.counts.kept,
        "removed": m.counts.removed,
        "quarantined": m.counts.quarantined,
        "removed_by_reason": m.counts.removed_by_reason,
    })
}

fn dump_summaries(stats: &[(String, DumpStats)]) -> serde_json::Value {
    stats
        .iter()
        .map(|(dump, s)| {
            serde_json::json!({
                "dump": dump,
                "documents": s.documents,
                "removed": s.removed(),
                "rate": if s.documents == 0 { 0.0 } else { s.removed() as f64 / s.documents as f64 },
            })
        })
        .collect()
}
