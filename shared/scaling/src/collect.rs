//! `ds-scaling collect`: every finished ds-pretrain run folder (its `metrics.jsonl`: the run
//! record of step 0, the train steps, the validations) becomes one row of a Parquet table,
//! written with the project's Parquet writer (`dsllm_core::parquet_io`); polars, pyarrow and
//! duckdb read it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use arrow::array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use dsllm_core::manifest::Counts;
use dsllm_core::parquet_io::{read_batches, ParquetSink, WrittenFile};
use dsllm_model::flops;
use dsllm_model::{LrSchedule, ModelConfig, TrainerConfig};
use serde_json::Value;

use crate::record::{RunRecord, COLUMNS};

pub const METRICS_FILE: &str = "metrics.jsonl";

/// Run folders under `roots`: each root is a run folder (holding metrics.jsonl) or a folder of
/// them (one level down). Sorted, without duplicates.
pub fn find_runs(roots: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for root in roots {
        if root.join(METRICS_FILE).is_file() {
            found.push(root.clone());
            continue;
        }
        let entries = std::fs::read_dir(root).with_context(|| format!("cannot list {} (a run folder or a folder of runs)", root.display()))?;
        for entry in entries {
            let path = entry.with_context(|| format!("cannot list {}", root.display()))?.path();
            if path.join(METRICS_FILE).is_file() {
                found.push(path);
            }
        }
    }
    found.sort();
    found.dedup();
    Ok(found)
}

/// Why a run folder gives no row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Training has not reached its last step.
    Unfinished,
    /// No validation after the last step (no val split, or the run was cut short).
    NoFinalValidation,
}

impl Skip {
    pub fn reason(&self) -> &'static str {
        match self {
            Skip::Unfinished => "unfinished",
            Skip::NoFinalValidation => "no_final_validation",
        }
    }
}

/// Reads one run folder's metrics.jsonl.
pub fn read_run(dir: &Path) -> Result<std::result::Result<RunRecord, Skip>> {
    let path = dir.join(METRICS_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut run_info: Option<Value> = None;
    let (mut last_step, mut tokens_seen, mut train_loss) = (0u64, 0u64, f64::NAN);
    let mut vals: Vec<(u64, f64, Option<f64>)> = Vec::new();
    for (line_no, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let record: Value = serde_json::from_str(line).with_context(|| format!("{} line {}: not JSON", path.display(), line_no + 1))?;
        let step = record["step"].as_u64().unwrap_or(0);
        if let Some(info) = record.get("run") {
            run_info = Some(info.clone());
        } else if let Some(v) = record["val_loss"].as_f64() {
            vals.push((step, v, record["val_bits_per_byte"].as_f64()));
        } else if let Some(loss) = record["loss"].as_f64() {
            last_step = step;
            tokens_seen = record["tokens_seen"].as_u64().unwrap_or(tokens_seen);
            train_loss = loss;
        }
    }
    let info = run_info.ok_or_else(|| anyhow!("{}: no run record (step 0 with \"run\"): not written by ds-pretrain train", path.display()))?;
    let model: ModelConfig = serde_json::from_value(info["model"].clone()).with_context(|| format!("{}: the run record's \"model\" is not a model config", path.display()))?;
    let trainer: TrainerConfig = serde_json::from_value(info["trainer"].clone()).with_context(|| format!("{}: the run record's \"trainer\" is not a trainer config", path.display()))?;
    let (peak_lr, total_steps) = match trainer.schedule {
        LrSchedule::MultiStep { peak_lr, total_steps, .. } | LrSchedule::Cosine { peak_lr, total_steps, .. } => (peak_lr, total_steps),
    };
    if last_step < total_steps {
        return Ok(Err(Skip::Unfinished));
    }
    let Some(&(_, final_val_loss, final_val_bpb)) = vals.iter().filter(|v| v.0 == last_step).last() else {
        return Ok(Err(Skip::NoFinalValidation));
    };
    let m = flops::model_scale_m(&model, trainer.seq_len);
    let compute = m * tokens_seen as f64;
    let min_bpb = vals.iter().filter_map(|v| v.2).fold(f64::INFINITY, f64::min);
    Ok(Ok(RunRecord {
        run: dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        path: dir.display().to_string(),
        n_layer: model.num_hidden_layers as i64,
        d_model: model.hidden_size as i64,
        n_heads: model.num_attention_heads as i64,
        n_kv_heads: model.num_key_value_heads as i64,
        d_ffn: model.intermediate_size as i64,
        n_vocab: model.vocab_size as i64,
        seq_len: trainer.seq_len as i64,
        parameters: flops::parameter_count(&model) as i64,
        n1: flops::non_embedding_parameter_count(&model) as i64,
        n2: flops::n2_parameter_count(&model) as i64,
        m,
        tokens: tokens_seen as f64,
        compute,
        budget: info["budget"].as_f64().unwrap_or(compute),
        batch_tokens: trainer.tokens_per_step() as f64,
        peak_lr,
        steps: last_step as i64,
        final_train_loss: train_loss,
        final_val_loss,
        min_val_loss: vals.iter().map(|v| v.1).fold(f64::INFINITY, f64::min),
        final_val_bpb,
        min_val_bpb: min_bpb.is_finite().then_some(min_bpb),
        backend: info["backend"].as_str().unwrap_or("").to_string(),
    }))
}

/// Reads every run folder; counts kept and skipped (by reason).
pub fn collect(dirs: &[PathBuf]) -> Result<(Vec<RunRecord>, Counts)> {
    let mut counts = Counts::default();
    let mut records = Vec::new();
    for dir in dirs {
        match read_run(dir)? {
            Ok(record) => {
                counts.keep();
                records.push(record);
            }
            Err(skip) => {
                eprintln!("ds-scaling: skipping {}: {}", dir.display(), skip.reason().replace('_', " "));
                counts.quarantine(skip.reason());
            }
        }
    }
    Ok((records, counts))
}

/// The records as an Arrow batch, columns in [`COLUMNS`] order (strings, int64, float64 as
/// serde gives them; a missing bits-per-byte is null).
pub fn to_batch(records: &[RunRecord]) -> Result<RecordBatch> {
    let rows: Vec<Value> = records.iter().map(serde_json::to_value).collect::<serde_json::Result<_>>()?;
    let probe = serde_json::to_value(records.first().cloned().unwrap_or_else(RunRecord::empty))?;
    let mut fields = Vec::with_capacity(COLUMNS.len());
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(COLUMNS.len());
    for name in COLUMNS {
        let values = rows.iter().map(|r| &r[name]);
        let (dtype, array): (DataType, ArrayRef) = match &probe[name] {
            Value::String(_) => (DataType::Utf8, Arc::new(values.map(|v| v.as_str()).collect::<StringArray>())),
            Value::Number(n) if n.is_i64() => (DataType::Int64, Arc::new(values.map(|v| v.as_i64()).collect::<Int64Array>())),
            _ => (DataType::Float64, Arc::new(values.map(|v| v.as_f64()).collect::<Float64Array>())),
        };
        fields.push(Field::new(name, dtype, true));
        arrays.push(array);
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?)
}

/// The rows of a batch as records (any column order; extra columns are ignored).
pub fn from_batch(batch: &RecordBatch) -> Result<Vec<RunRecord>> {
    let mut rows = vec![serde_json::Map::new(); batch.num_rows()];
    for name in COLUMNS {
        let column = batch.column_by_name(name).ok_or_else(|| anyhow!("no column {name}"))?;
        let any = column.as_any();
        for (i, row) in rows.iter_mut().enumerate() {
            let value = if column.is_null(i) {
                Value::Null
            } else if let Some(a) = any.downcast_ref::<StringArray>() {
                Value::String(a.value(i).to_string())
            } else if let Some(a) = any.downcast_ref::<Int64Array>() {
                Value::from(a.value(i))
            } else if let Some(a) = any.downcast_ref::<Float64Array>() {
                serde_json::Number::from_f64(a.value(i)).map(Value::Number).unwrap_or(Value::Null)
            } else {
                bail!("column {name} has type {}, not utf8, int64 or float64", column.data_type());
            };
            row.insert(name.to_string(), value);
        }
    }
    rows.into_iter()
        .enumerate()
        .map(|(i, row)| serde_json::from_value(Value::Object(row)).with_context(|| format!("row {i} is not a run record")))
        .collect()
}

/// Writes `records` to `path` (zstd Parquet through the project's writer, atomically).
pub fn write_parquet(records: &[RunRecord], path: &Path) -> Result<WrittenFile> {
    let batch = to_batch(records)?;
    let mut sink = ParquetSink::create(path, batch.schema())?;
    sink.write(&batch)?;
    Ok(sink.finish()?)
}

/// Reads a `runs.parquet` written by [`write_parquet`] (or any table with its columns).
pub fn read_parquet(path: &Path) -> Result<Vec<RunRecord>> {
    let mut records = Vec::new();
    for batch in read_batches(path, None)? {
        records.extend(from_batch(&batch?).with_context(|| format!("in {}", path.display()))?);
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{isoflop_runs, Truth};
    use dsllm_model::flops::{PowerLaw, ScalingLaws};

    #[test]
    fn parquet_round_trip() {
        let truth = Truth { laws: ScalingLaws::PAPER, loss: PowerLaw::new(3.0, -0.05), curvature_m: 0.01, curvature_lr: 0.0, curvature_batch: 0.0, noise: 0.001 };
        let mut runs = isoflop_runs(&truth, &[1e12, 1e13], 4, 8.0, 1.0, 1);
        runs[1].final_val_bpb = None;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.parquet");
        write_parquet(&runs, &path).unwrap();
        assert_eq!(read_parquet(&path).unwrap(), runs);
    }

    fn write_metrics(dir: &Path, total_steps: u64, done_steps: u64, final_val: bool) {
        let model = serde_json::json!({"hidden_size": 64, "intermediate_size": 176, "num_hidden_layers": 2, "num_attention_heads": 2,
            "num_key_value_heads": 1, "vocab_size": 512, "max_position_embeddings": 128});
        let trainer = serde_json::json!({"seq_len": 128, "micro_batch_size": 2, "grad_accum_steps": 3,
            "schedule": {"kind": "multi-step", "peak_lr": 0.01, "warmup_steps": 1, "total_steps": total_steps}, "seed": 0});
        let mut lines = vec![serde_json::json!({"step": 0, "run": {"model": model, "trainer": trainer, "budget": 1e10, "backend": "cpu"}}).to_string()];
        for s in 1..=done_steps {
            lines.push(serde_json::json!({"step": s, "loss": 6.0 - s as f64 * 0.1, "lr": 0.01, "grad_norm": 1.0, "tokens_seen": s * 768, "tokens_per_second": 1.0}).to_string());
            if s == 2 || (s == done_steps && final_val) {
                lines.push(serde_json::json!({"step": s, "tokens_seen": s * 768, "val_loss": 7.0 - s as f64 * 0.1, "val_tokens": 256, "val_bits_per_byte": 2.0 - s as f64 * 0.01}).to_string());
            }
        }
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(METRICS_FILE), lines.join("\n") + "\n").unwrap();
    }

    #[test]
    fn reads_runs_and_skips_unfinished_ones() {
        let root = tempfile::tempdir().unwrap();
        write_metrics(&root.path().join("a"), 5, 5, true);
        write_metrics(&root.path().join("b"), 5, 3, true);
        write_metrics(&root.path().join("c"), 5, 5, false);
        let dirs = find_runs(&[root.path().to_path_buf()]).unwrap();
        assert_eq!(dirs.len(), 3);
        let (records, counts) = collect(&dirs).unwrap();
        assert_eq!((counts.read, counts.kept, counts.quarantined), (3, 1, 2));
        assert_eq!(counts.quarantined_by_reason["unfinished"], 1);
        let r = &records[0];
        assert_eq!(r.run, "a");
        assert_eq!(r.tokens, 5.0 * 768.0);
        assert_eq!(r.batch_tokens, 768.0);
        assert_eq!(r.budget, 1e10);
        // M = 72·2·64² + 12·2·64·128
        assert_eq!(r.m, 72.0 * 2.0 * 4096.0 + 12.0 * 2.0 * 64.0 * 128.0);
        assert_eq!(r.compute, r.m * r.tokens);
        assert!((r.final_val_loss - 6.5).abs() < 1e-12 && (r.min_val_loss - 6.5).abs() < 1e-12);
        assert!((r.final_val_bpb.unwrap() - 1.95).abs() < 1e-12);
        assert!((r.final_train_loss - 5.5).abs() < 1e-12);
    }
}
