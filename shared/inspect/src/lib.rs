//! ds-inspect: what is in an artifact, at a glance. Parquet files or folders (schema, row
//! counts, per-column statistics, sample rows, the folder's manifest), token shard folders
//! (headers, counts, decoded samples) and checkpoints (config, parameters, FLOPs).

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use dsllm_core::error::{Error, Result};
use dsllm_core::manifest::Manifest;
use dsllm_core::parquet_io::{read_batches, row_count, schema_of};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Distinct values tracked per string column before it is called high-cardinality.
const DISTINCT_LIMIT: usize = 1000;

/// Statistics of one column.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnStats {
    pub name: String,
    pub data_type: String,
    pub nulls: u64,
    /// Strings: min / mean / max length in bytes. Numbers: min / mean / max value.
    pub min: Option<f64>,
    pub mean: Option<f64>,
    pub max: Option<f64>,
    /// Distinct values, when at most [`DISTINCT_LIMIT`].
    pub distinct: Option<usize>,
    /// Most frequent values (low-cardinality string columns).
    pub top: Vec<(String, u64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TableReport {
    pub files: Vec<PathBuf>,
    pub rows: u64,
    pub schema: Vec<(String, String, bool)>,
    pub columns: Vec<ColumnStats>,
    pub samples: Vec<Vec<(String, String)>>,
    pub manifest: Option<Manifest>,
}

#[derive(Default)]
struct Accumulator {
    nulls: u64,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    values: Option<HashMap<String, u64>>,
}

impl Accumulator {
    fn new() -> Self {
        Accumulator { min: f64::INFINITY, max: f64::NEG_INFINITY, values: Some(HashMap::new()), ..Default::default() }
    }

    fn number(&mut self, x: f64) {
        self.count += 1;
        self.sum += x;
        self.min = self.min.min(x);
        self.max = self.max.max(x);
    }

    fn value(&mut self, v: &str) {
        if let Some(map) = &mut self.values {
            *map.entry(v.to_string()).or_default() += 1;
            if map.len() > DISTINCT_LIMIT {
                self.values = None;
            }
        }
    }
}

/// Parquet files under `path` (a file or a folder, not recursing into `quarantine/`).
pub fn parquet_files(path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| Error::io(path, "list folder", e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "parquet") && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .collect();
    files.sort();
    Ok(files)
}

/// Reads every row of the tables at `path` once, keeping `samples` sample rows.
pub fn inspect_table(path: &Path, samples: usize) -> Result<TableReport> {
    let files = parquet_files(path)?;
    if files.is_empty() {
        return Err(Error::Usage(format!("{}: no Parquet files", path.display())));
    }
    let schema = schema_of(&files[0])?;
    let mut accumulators: Vec<Accumulator> = schema.fields().iter().map(|_| Accumulator::new()).collect();
    let mut rows = 0u64;
    let mut sample_rows = Vec::new();
    for file in &files {
        rows += row_count(file)?;
        for batch in read_batches(file, None)? {
            let batch = batch?;
            if batch.schema().fields().len() != schema.fields().len() {
                return Err(Error::input(file, None, "schema differs from the first file's"));
            }
            accumulate(&batch, &mut accumulators);
            collect_samples(&batch, samples, &mut sample_rows);
        }
    }
    let columns = schema
        .fields()
        .iter()
        .zip(accumulators)
        .map(|(field, acc)| {
            let mut top: Vec<(String, u64)> = acc.values.as_ref().map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect()).unwrap_or_default();
            top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let distinct = acc.values.as_ref().map(HashMap::len);
            let show_top = distinct.is_some_and(|d| d <= 50 || (d as u64) * 4 < rows);
            top.truncate(if show_top { 8 } else { 0 });
            ColumnStats {
                name: field.name().clone(),
                data_type: field.data_type().to_string(),
                nulls: acc.nulls,
                min: (acc.count > 0).then_some(acc.min),
                mean: (acc.count > 0).then(|| acc.sum / acc.count as f64),
                max: (acc.count > 0).then_some(acc.max),
                distinct,
                top,
            }
        })
        .collect();
    let manifest = if path.is_dir() { Manifest::of_folder(path)? } else { None };
    Ok(TableReport {
        files,
        rows,
        schema: schema.fields().iter().map(|f| (f.name().clone(), f.data_type().to_string(), f.is_nullable())).collect(),
        columns,
        samples: sample_rows,
        manifest,
    })
}

fn accumulate(batch: &RecordBatch, accumulators: &mut [Accumulator]) {
    for (column, acc) in batch.columns().iter().zip(accumulators.iter_mut()) {
        acc.nulls += column.null_count() as u64;
        match column.data_type() {
            DataType::Utf8 => {
                for v in column.as_string::<i32>().iter().flatten() {
                    acc.number(v.len() as f64);
                    acc.value(v);
                }
            }
            DataType::LargeUtf8 => {
                for v in column.as_string::<i64>().iter().flatten() {
                    acc.number(v.len() as f64);
                    acc.value(v);
                }
            }
            t if t.is_numeric() => {
                if let Ok(cast) = arrow::compute::cast(column, &DataType::Float64) {
                    for v in cast.as_primitive::<Float64Type>().iter().flatten() {
                        acc.number(v);
                    }
                }
                acc.values = None;
            }
            DataType::Boolean => {
                for v in column.as_boolean().iter().flatten() {
                    acc.value(if v { "true" } else { "false" });
                }
            }
            _ => acc.values = None,
        }
    }
}

fn collect_samples(batch: &RecordBatch, wanted: usize, out: &mut Vec<Vec<(String, String)>>) {
    let options = FormatOptions::default().with_null("null");
    let formatters: Vec<_> = batch.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &options).ok()).collect();
    for row in 0..batch.num_rows() {
        if out.len() >= wanted {
            return;
        }
        let fields = batch
            .schema()
            .fields()
            .iter()
            .zip(&formatters)
            .map(|(f, fmt)| {
                let value = fmt.as_ref().map(|fm| fm.value(row).to_string()).unwrap_or_default();
                (f.name().clone(), shorten(&value, 100))
            })
            .collect();
        out.push(fields);
    }
}

fn shorten(s: &str, max_chars: usize) -> String {
    let flat = s.replace('\n', "⏎");
    if flat.chars().count() <= max_chars {
        flat
    } else {
        flat.chars().take(max_chars).collect::<String>() + "…"
    }
}

impl std::fmt::Display for TableReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{} Parquet file(s), {} rows", self.files.len(), self.rows)?;
        writeln!(f, "\nschema:")?;
        for (name, ty, nullable) in &self.schema {
            writeln!(f, "  {name:<16} {ty}{}", if *nullable { " (nullable)" } else { "" })?;
        }
        writeln!(f, "\ncolumns:")?;
        for c in &self.columns {
            let range = match (c.min, c.mean, c.max) {
                (Some(a), Some(m), Some(b)) if c.data_type.contains("Utf8") => format!("length {a:.0}/{m:.1}/{b:.0} (min/mean/max)"),
                (Some(a), Some(m), Some(b)) => format!("{a}/{m:.4}/{b} (min/mean/max)"),
                _ => String::new(),
            };
            let distinct = c.distinct.map(|d| format!(", {d} distinct")).unwrap_or_else(|| ", many distinct".to_string());
            writeln!(f, "  {:<16} nulls {}{distinct}  {range}", c.name, c.nulls)?;
            if !c.top.is_empty() {
                let top: Vec<String> = c.top.iter().map(|(v, n)| format!("{}={n}", shorten(v, 30))).collect();
                writeln!(f, "  {:<16} top: {}", "", top.join(", "))?;
            }
        }
        if let Some(m) = &self.manifest {
            let c = &m.counts;
            writeln!(f, "\nmanifest ({} {}): read {} = kept {} + removed {} + quarantined {}", m.tool, m.version, c.read, c.kept, c.removed, c.quarantined)?;
            for (reason, n) in &c.removed_by_reason {
                writeln!(f, "  removed     {reason:<28} {n}")?;
            }
            for (reason, n) in &c.quarantined_by_reason {
                writeln!(f, "  quarantined {reason:<28} {n}")?;
            }
        }
        for (i, row) in self.samples.iter().enumerate() {
            writeln!(f, "\nsample {i}:")?;
            for (name, value) in row {
                writeln!(f, "  {name:<16} {value}")?;
            }
        }
        Ok(())
    }
}

/// What kind of artifact a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Artifact {
    Table,
    TokenShards,
    Checkpoint,
}

pub fn classify(path: &Path) -> Result<Artifact> {
    if !path.exists() {
        return Err(Error::Usage(format!("{}: no such file or folder", path.display())));
    }
    if path.is_dir() && path.join("index.json").exists() {
        return Ok(Artifact::TokenShards);
    }
    if path.is_dir() && path.join("config.json").exists() {
        return Ok(Artifact::Checkpoint);
    }
    Ok(Artifact::Table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dsllm_core::parquet_io::DocumentWriter;
    use dsllm_core::schema::Document;

    #[test]
    fn table_report_counts_and_summarizes() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = DocumentWriter::create(dir.path().join("part-00000.parquet")).unwrap();
        for i in 0..100 {
            w.push(&Document { id: format!("{i}"), dump: format!("D{}", i % 3), text: "x".repeat(i + 1), lang: None, ..Default::default() }).unwrap();
        }
        w.finish().unwrap();
        let r = inspect_table(dir.path(), 2).unwrap();
        assert_eq!(r.rows, 100);
        let text = r.columns.iter().find(|c| c.name == "text").unwrap();
        assert_eq!((text.min, text.max), (Some(1.0), Some(100.0)));
        let dump = r.columns.iter().find(|c| c.name == "dump").unwrap();
        assert_eq!(dump.distinct, Some(3));
        assert_eq!(dump.top[0], ("D0".to_string(), 34));
        assert_eq!(r.columns.iter().find(|c| c.name == "lang").unwrap().nulls, 100);
        assert_eq!(r.samples.len(), 2);
        assert!(r.to_string().contains("100 rows"));
    }
}
