//! Domain remixing, the stage between the filter and the tokenizer.
//!
//! Documents are grouped by any column (language, domain, dump, ...), each group's share of
//! bytes and documents is measured (with polars), and the corpus is resampled to a target
//! mixture ([`config::RemixConfig`]): a group above its share loses documents, one below it
//! gets repeated documents (up to `max_repeat`), chosen by a seeded hash of the document id.
//!
//! Output (`<output>/`, the same `<folder>/<file>` layout as the input):
//! ```text
//! <output>/<dump>/<file>.parquet           kept documents: input columns + group + repeat (>= 1)
//! <output>/_dropped/<dump>/<file>.parquet  dropped documents (repeat = 0); `_` keeps them out
//!                                          of the next stage's input
//! <output>/report.{json,md,png}            shares before and after, per group, against the target
//! <output>/_manifest.json                  read = kept + removed (by reason)
//! ```
//! Downstream, ds-pack writes a document `repeat` times and ds-tokenizer learns from each once.

pub mod config;
pub mod report;
pub mod solver;

pub use config::{GroupRule, RemixConfig, Unit};

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, StringArray, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use dsllm_core::inputs::{check_mirrored_inputs, mirrored_name};
use dsllm_core::manifest::{Counts, Stage, StageStart};
use dsllm_core::parquet_io::{read_batches, schema_of, ParquetSink, WrittenFile};
use dsllm_core::{progress, Error, Result};
use rayon::prelude::*;
use report::{GroupReport, Report};
use solver::{assign_repeats, member_key, GroupPlan, Member};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const TOOL: &str = "ds-remix";
/// The folder (under the output) of the dropped documents.
pub const DROPPED_DIR: &str = "_dropped";
/// The group of rows whose group column is null (or whose url has no host).
pub const UNKNOWN_GROUP: &str = "unknown";

/// One remix run.
pub struct RemixJob {
    /// Documents Parquet files (the filter's kept folder, expanded).
    pub inputs: Vec<PathBuf>,
    pub output: PathBuf,
    pub config: RemixConfig,
    pub force: bool,
}

/// What the first pass learns of one input file, row by row.
struct FileScan {
    /// Group names of this file, in first-seen order.
    groups: Vec<String>,
    /// Index into `groups` of each row.
    group_of_row: Vec<u32>,
    /// UTF-8 bytes of each row's text.
    bytes: Vec<u64>,
    /// Seeded hash of each row's id.
    id_hash: Vec<u64>,
}

impl RemixJob {
    fn parameters(&self) -> serde_json::Value {
        serde_json::json!({ "config": self.config })
    }

    pub fn run(&self) -> Result<serde_json::Value> {
        check_mirrored_inputs(&self.inputs)?;
        let stage = match Stage::begin(TOOL, &self.output, self.parameters(), &self.inputs, Default::default(), self.force)? {
            StageStart::UpToDate(m) => {
                return Ok(serde_json::json!({
                    "tool": TOOL, "output": self.output, "skipped_up_to_date": true,
                    "read": m.counts.read, "kept": m.counts.kept, "removed": m.counts.removed,
                    "max_share_error": m.extra.get("max_share_error"),
                }))
            }
            StageStart::Run(stage) => stage,
        };
        let started = std::time::Instant::now();

        // Pass 1: group, size and id hash of every document.
        let bar = progress::bar(self.inputs.len() as u64, "scan", "files");
        let scans: Vec<FileScan> = self
            .inputs
            .par_iter()
            .map(|path| {
                let scan = scan_file(path, &self.config);
                bar.inc(1);
                scan
            })
            .collect::<Result<_>>()?;
        bar.finish_and_clear();

        // Global group numbering (sorted names) and the documents' flat columns.
        let mut names: Vec<String> = scans.iter().flat_map(|s| s.groups.iter().cloned()).collect();
        names.sort();
        names.dedup();
        let index: HashMap<&str, u32> = names.iter().enumerate().map(|(i, n)| (n.as_str(), i as u32)).collect();
        let mut group_of: Vec<u32> = Vec::new();
        let mut bytes: Vec<u64> = Vec::new();
        for scan in &scans {
            let global: Vec<u32> = scan.groups.iter().map(|g| index[g.as_str()]).collect();
            group_of.extend(scan.group_of_row.iter().map(|&l| global[l as usize]));
            bytes.extend_from_slice(&scan.bytes);
        }
        let documents = group_of.len();
        let units = |i: usize| match self.config.unit {
            Unit::Bytes => bytes[i],
            Unit::Documents => 1,
        };

        // The plan: each group's scale, from its size (polars' group-by) and the rules.
        let before = report::group_stats(&group_of, &bytes, &vec![1; documents]).map_err(|e| self.err(e))?;
        let sizes: BTreeMap<String, f64> = before
            .iter()
            .map(|s| {
                let size = match self.config.unit {
                    Unit::Bytes => s.bytes_before as f64,
                    Unit::Documents => s.docs_before as f64,
                };
                (names[s.group as usize].clone(), size)
            })
            .filter(|(_, size)| *size > 0.0)
            .collect();
        let plans = solver::solve(&sizes, &self.config).map_err(|e| self.err(e))?;

        // Copies per document, group by group.
        let mut members: Vec<Vec<(usize, Member)>> = vec![Vec::new(); names.len()];
        let mut position = 0usize;
        for scan in &scans {
            for (row, &hash) in scan.id_hash.iter().enumerate() {
                let i = position + row;
                members[group_of[i] as usize].push((i, Member { units: units(i), key: (hash, i as u64) }));
            }
            position += scan.id_hash.len();
        }
        let mut repeats = vec![0u32; documents];
        for (g, group) in members.iter().enumerate() {
            let Some(plan) = plans.get(&names[g]) else { continue }; // a group of empty texts: kept once
            let copies = assign_repeats(&group.iter().map(|(_, m)| *m).collect::<Vec<_>>(), plan);
            for ((i, _), k) in group.iter().zip(copies) {
                repeats[*i] = k;
            }
        }
        for (g, group) in members.iter().enumerate() {
            if !plans.contains_key(&names[g]) {
                group.iter().for_each(|(i, _)| repeats[*i] = 1);
            }
        }
        drop(members);

        // Pass 2: every input file into kept and dropped Parquet, with group and repeat.
        let mut ranges = Vec::with_capacity(scans.len());
        let mut at = 0usize;
        for scan in &scans {
            ranges.push(at..at + scan.id_hash.len());
            at += scan.id_hash.len();
        }
        drop(scans);
        let bar = progress::bar(self.inputs.len() as u64, "write", "files");
        let written: Vec<Vec<WrittenFile>> = self
            .inputs
            .par_iter()
            .zip(ranges.par_iter())
            .map(|(path, range)| {
                let out = self.write_file(path, &names, &group_of[range.clone()], &repeats[range.clone()]);
                bar.inc(1);
                out
            })
            .collect::<Result<_>>()?;
        bar.finish_and_clear();
        let mut outputs: Vec<WrittenFile> = written.into_iter().flatten().collect();

        // The report and the manifest.
        let after = report::group_stats(&group_of, &bytes, &repeats).map_err(|e| self.err(e))?;
        let groups: Vec<GroupReport> = after
            .iter()
            .map(|s| GroupReport::new(&names[s.group as usize], s, plans.get(&names[s.group as usize])))
            .collect();
        let report = Report::new(&self.config, groups, started.elapsed().as_secs_f64());
        outputs.extend(report.write(&self.output)?);

        let mut counts = Counts::default();
        for (i, &k) in repeats.iter().enumerate() {
            if k > 0 {
                counts.keep();
            } else if plans.get(&names[group_of[i] as usize]).is_some_and(|p: &GroupPlan| p.target_units == 0.0) {
                counts.remove("remix_group_weight_zero");
            } else {
                counts.remove("remix_downsampled");
            }
        }
        let mut extra = BTreeMap::new();
        extra.insert("copies_written".into(), serde_json::json!(report.after.docs));
        extra.insert("bytes_before".into(), serde_json::json!(report.before.bytes));
        extra.insert("bytes_after".into(), serde_json::json!(report.after.bytes));
        extra.insert("max_share_error".into(), serde_json::json!(report.max_share_error));
        let manifest = stage.finish(counts, outputs, extra)?;
        Ok(serde_json::json!({
            "tool": TOOL,
            "output": self.output,
            "read": manifest.counts.read,
            "kept": manifest.counts.kept,
            "removed": manifest.counts.removed,
            "copies_written": report.after.docs,
            "max_share_error": report.max_share_error,
            "shares_after": report.groups.iter().map(|g| (g.group.clone(), g.share_after)).collect::<BTreeMap<_, _>>(),
            "wall_seconds": manifest.wall_seconds,
        }))
    }

    fn err(&self, message: String) -> Error {
        Error::input(&self.output, None, message)
    }

    /// Writes one input file's rows to `<output>/<name>` (repeat >= 1) and
    /// `<output>/_dropped/<name>` (repeat 0, only if there are any).
    fn write_file(&self, path: &Path, names: &[String], group_of: &[u32], repeats: &[u32]) -> Result<Vec<WrittenFile>> {
        let name = mirrored_name(path);
        let input_schema = schema_of(path)?;
        let schema = output_schema(&input_schema);
        let mut kept = ParquetSink::create(self.output.join(&name), schema.clone())?;
        let mut dropped: Option<ParquetSink> = None;
        let mut row = 0usize;
        for batch in read_batches(path, None)? {
            let batch = batch?;
            let n = batch.num_rows();
            if row + n > group_of.len() {
                return Err(Error::input(path, None, "the file changed between the remix's two passes (more rows)"));
            }
            let groups = StringArray::from_iter_values(group_of[row..row + n].iter().map(|&g| names[g as usize].as_str()));
            let copies = UInt32Array::from(repeats[row..row + n].to_vec());
            row += n;
            let mut columns: Vec<ArrayRef> = batch
                .schema()
                .fields()
                .iter()
                .zip(batch.columns())
                .filter(|(f, _)| !is_remix_column(f.name()))
                .map(|(_, c)| c.clone())
                .collect();
            columns.push(Arc::new(groups));
            columns.push(Arc::new(copies.clone()));
            let full = RecordBatch::try_new(schema.clone(), columns).map_err(|e| Error::arrow(path, e))?;
            let keep = BooleanArray::from_iter(copies.iter().map(|k| Some(k.unwrap_or(0) > 0)));
            let kept_rows = arrow::compute::filter_record_batch(&full, &keep).map_err(|e| Error::arrow(path, e))?;
            kept.write(&kept_rows)?;
            if kept_rows.num_rows() < n {
                let drop_mask = arrow::compute::not(&keep).map_err(|e| Error::arrow(path, e))?;
                let rows = arrow::compute::filter_record_batch(&full, &drop_mask).map_err(|e| Error::arrow(path, e))?;
                if dropped.is_none() {
                    dropped = Some(ParquetSink::create(self.output.join(DROPPED_DIR).join(&name), schema.clone())?);
                }
                dropped.as_mut().expect("created").write(&rows)?;
            }
        }
        if row != group_of.len() {
            return Err(Error::input(path, None, "the file changed between the remix's two passes (fewer rows)"));
        }
        let mut written = vec![kept.finish()?];
        written.extend(dropped.map(ParquetSink::finish).transpose()?);
        Ok(written)
    }
}

fn is_remix_column(name: &str) -> bool {
    name == "group" || name == "repeat"
}

/// The input's columns (less any earlier `group` and `repeat`) then `group` and `repeat`.
pub fn output_schema(input: &Schema) -> SchemaRef {
    let mut fields: Vec<Field> = input.fields().iter().filter(|f| !is_remix_column(f.name())).map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("group", DataType::Utf8, false));
    fields.push(Field::new("repeat", DataType::UInt32, false));
    Arc::new(Schema::new_with_metadata(fields, input.metadata().clone()))
}

/// A string column of `batch` (any type arrow can cast to strings), or an error naming the file.
fn string_column(batch: &RecordBatch, name: &str, path: &Path) -> Result<StringArray> {
    let column = batch.column_by_name(name).ok_or_else(|| Error::input(path, None, format!("no column `{name}`")))?;
    let cast = arrow::compute::cast(column, &DataType::Utf8)
        .map_err(|e| Error::input(path, None, format!("column `{name}` cannot be read as text: {e}")))?;
    Ok(cast.as_any().downcast_ref::<StringArray>().expect("cast to Utf8").clone())
}

/// The host of a url, lowercased, without `www.`.
fn url_host(url: &str) -> Option<String> {
    let host = url::Url::parse(url).ok()?.host_str()?.to_ascii_lowercase();
    Some(host.strip_prefix("www.").map(str::to_string).unwrap_or(host))
}

/// Pass 1 over one file: each row's group, text bytes and id hash.
fn scan_file(path: &Path, config: &RemixConfig) -> Result<FileScan> {
    let schema = schema_of(path)?;
    let has = |name: &str| schema.field_with_name(name).is_ok();
    let column = config.group_by.as_str();
    // Grouping by domain works on documents without a domain column when they have a url.
    let from_url = !has(column) && column == "domain" && has("url");
    if !has(column) && !from_url {
        let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        return Err(Error::input(
            path,
            None,
            format!("no column `{column}` to group by (columns: {}); set group_by in the config or --group-by", columns.join(", ")),
        ));
    }
    for required in ["id", "text"] {
        if !has(required) {
            return Err(Error::input(path, None, format!("no column `{required}`: remix reads documents (id, text)")));
        }
    }
    let source = if from_url { "url" } else { column };
    let mut projection = vec!["id", "text"];
    if !projection.contains(&source) {
        projection.push(source);
    }
    let mut scan = FileScan { groups: Vec::new(), group_of_row: Vec::new(), bytes: Vec::new(), id_hash: Vec::new() };
    let mut local: HashMap<String, u32> = HashMap::new();
    for batch in read_batches(path, Some(&projection))? {
        let batch = batch?;
        let ids = string_column(&batch, "id", path)?;
        let texts = string_column(&batch, "text", path)?;
        let values = string_column(&batch, source, path)?;
        for row in 0..batch.num_rows() {
            let value = (!values.is_null(row)).then(|| values.value(row));
            let name = match (value, from_url) {
                (Some(url), true) => url_host(url).unwrap_or_else(|| UNKNOWN_GROUP.into()),
                (Some(v), false) if !v.is_empty() => v.to_string(),
                _ => UNKNOWN_GROUP.into(),
            };
            let next = local.len() as u32;
            let g = *local.entry(name.clone()).or_insert_with(|| {
                scan.groups.push(name);
                next
            });
            scan.group_of_row.push(g);
            scan.bytes.push(if texts.is_null(row) { 0 } else { texts.value_length(row) as u64 });
            let id = if ids.is_null(row) { "" } else { ids.value(row) };
            scan.id_hash.push(member_key(id, config.seed, 0).0);
        }
    }
    Ok(scan)
}
