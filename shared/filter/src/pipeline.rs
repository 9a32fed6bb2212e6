//! The stage: streams each input file batch by batch, analyzes documents in parallel, and
//! splits them into kept and rejected Parquet that mirror the input layout:
//!
//! ```text
//! <output>/kept/<dump>/<file>.parquet       input columns (text with C4's dropped lines removed,
//!                                           lang/lang_score from the identifier) + signal columns
//! <output>/rejected/<dump>/<file>.parquet   input columns (text unchanged) + signals + reject_reason
//! <output>/report.{json,md}                 per-rule and per-language counts
//! <output>/_manifest.json                   read = kept + removed, removed by reason
//! ```
//! Outputs are keyed by input file, never by task or thread, so any `--num-tasks` and
//! `--threads` give the same bytes.

use crate::config::FilterConfig;
use crate::quality::QualityModel;
use crate::report::Report;
use crate::rules::{self, Rule};
use crate::url::UrlBlocklist;
use crate::signals::{Analyzer, Signals};
use arrow::array::{Array, ArrayRef, BooleanArray, Float32Array, RecordBatch, StringArray, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use dsllm_core::error::{Error, Result};
use dsllm_core::inputs::TaskSlice;
use dsllm_core::manifest::{Counts, InputFile, Manifest, Stage, StageStart};
use dsllm_core::parquet_io::{read_batches, row_count, schema_of, ParquetSink, WrittenFile};
use dsllm_core::progress::{self, ProgressBar};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const TOOL: &str = "ds-filter";
/// The column naming why a rejected document was rejected: the first failing rule.
pub const REJECT_REASON: &str = "reject_reason";

/// Signal columns of type float32, in output order.
const F32_SIGNALS: [(&str, fn(&Signals) -> f32); 23] = [
    ("cjk_share", |s| s.cjk_share),
    ("mean_word_length", |s| s.mean_word_length),
    ("hash_ratio", |s| s.hash_ratio),
    ("ellipsis_ratio", |s| s.ellipsis_ratio),
    ("bullet_lines_ratio", |s| s.bullet_lines_ratio),
    ("ellipsis_lines_ratio", |s| s.ellipsis_lines_ratio),
    ("alpha_words_ratio", |s| s.alpha_words_ratio),
    ("dup_para_frac", |s| s.dup_para_frac),
    ("dup_para_char_frac", |s| s.dup_para_char_frac),
    ("dup_line_frac", |s| s.dup_line_frac),
    ("dup_line_char_frac", |s| s.dup_line_char_frac),
    ("top_2gram_char_frac", |s| s.top_ngram_char_frac[0]),
    ("top_3gram_char_frac", |s| s.top_ngram_char_frac[1]),
    ("top_4gram_char_frac", |s| s.top_ngram_char_frac[2]),
    ("dup_5gram_char_frac", |s| s.dup_ngram_char_frac[0]),
    ("dup_6gram_char_frac", |s| s.dup_ngram_char_frac[1]),
    ("dup_7gram_char_frac", |s| s.dup_ngram_char_frac[2]),
    ("dup_8gram_char_frac", |s| s.dup_ngram_char_frac[3]),
    ("dup_9gram_char_frac", |s| s.dup_ngram_char_frac[4]),
    ("dup_10gram_char_frac", |s| s.dup_ngram_char_frac[5]),
    ("line_punct_ratio", |s| s.line_punct_ratio),
    ("short_line_ratio", |s| s.short_line_ratio),
    ("char_dup_ratio", |s| s.char_dup_ratio),
];
/// Signal columns of type uint32.
const U32_SIGNALS: [(&str, fn(&Signals) -> u32); 4] = [
    ("words", |s| s.words),
    ("stop_words", |s| s.stop_words),
    ("c4_dropped_lines", |s| s.c4_dropped_lines),
    ("c4_sentences", |s| s.c4_sentences),
];
const BOOL_SIGNALS: [(&str, fn(&Signals) -> bool); 2] =
    [("c4_lorem_ipsum", |s| s.c4_lorem_ipsum), ("c4_curly_bracket", |s| s.c4_curly_bracket)];

/// The signal columns added after the input's columns (all rows, kept and rejected).
pub fn signal_fields() -> Vec<Field> {
    let mut fields = vec![Field::new("script", DataType::Utf8, true)];
    fields.extend(F32_SIGNALS.iter().map(|(n, _)| Field::new(*n, DataType::Float32, false)));
    fields.push(Field::new("list_ratio", DataType::Float32, false));
    fields.extend(U32_SIGNALS.iter().map(|(n, _)| Field::new(*n, DataType::UInt32, false)));
    fields.extend(BOOL_SIGNALS.iter().map(|(n, _)| Field::new(*n, DataType::Boolean, false)));
    fields.push(Field::new("quality_score", DataType::Float32, true));
    fields
}

/// One run of the stage.
#[derive(Debug, Clone)]
pub struct FilterJob {
    /// Input Parquet files, sorted (see `dsllm_core::inputs::expand`).
    pub inputs: Vec<PathBuf>,
    pub output: PathBuf,
    pub config: FilterConfig,
    pub quality_model: Option<PathBuf>,
    pub task: TaskSlice,
    pub force: bool,
}

/// What one document became.
struct Outcome {
    signals: Signals,
    reason: Option<Rule>,
    fires: u32,
    /// The text to write when kept and C4 dropped lines.
    kept_text: Option<String>,
}

/// Counts beyond the manifest's: per language and per rule regardless of order.
#[derive(Default)]
struct Tally {
    counts: Counts,
    by_language: BTreeMap<String, (u64, u64)>,
    fires: BTreeMap<&'static str, u64>,
    bytes_read: u64,
    bytes_kept: u64,
}

impl FilterJob {
    /// The stage's parameters, as recorded in the manifest (the model by content hash).
    pub fn parameters(&self) -> Result<serde_json::Value> {
        let model = self.quality_model.as_ref().map(InputFile::hash).transpose()?;
        let domains = self.config.url.blocked_domains_file.as_ref().map(InputFile::hash).transpose()?;
        Ok(serde_json::json!({
            "config": self.config,
            "quality_model": model.map(|m| m.xxh3_128),
            "blocked_domains_file": domains.map(|d| d.xxh3_128),
        }))
    }

    fn check(&self) -> Result<(Option<Arc<QualityModel>>, UrlBlocklist)> {
        self.config.validate().map_err(Error::Usage)?;
        dsllm_core::inputs::check_mirrored_inputs(&self.inputs)?;
        if self.config.quality_model.min_score.is_some() && self.quality_model.is_none() {
            return Err(Error::Usage("a minimum quality score needs --quality-model".into()));
        }
        let model = self.quality_model.as_deref().map(|p| QualityModel::load(p).map(Arc::new)).transpose()?;
        Ok((model, UrlBlocklist::load(&self.config.url)?))
    }

    /// Runs the stage and returns the one-line JSON summary.
    pub fn run(&self) -> Result<serde_json::Value> {
        let (model, blocklist) = self.check()?;
        let files: Vec<PathBuf> = self.task.select(&self.inputs).into_iter().map(|(_, p)| p).collect();
        let stage = match Stage::begin(TOOL, &self.output, self.parameters()?, &files, self.task, self.force)? {
            StageStart::UpToDate(m) => {
                self.write_report_if_complete()?;
                return Ok(summary(&m, true));
            }
            StageStart::Run(stage) => stage,
        };
        let total: u64 = files.iter().map(row_count).sum::<Result<u64>>()?;
        let bar = progress::bar(total, "filter", "docs");
        let mut tally = Tally::default();
        let mut outputs = Vec::new();
        for path in &files {
            outputs.extend(self.filter_file(path, model.as_deref(), &blocklist, &mut tally, &bar)?);
        }
        bar.finish_and_clear();
        let mut extra = BTreeMap::new();
        for (lang, (kept, rejected)) in &tally.by_language {
            extra.insert(format!("lang:{lang}:kept"), serde_json::json!(kept));
            extra.insert(format!("lang:{lang}:rejected"), serde_json::json!(rejected));
        }
        for (rule, n) in &tally.fires {
            extra.insert(format!("fires:{rule}"), serde_json::json!(n));
        }
        extra.insert("bytes_read".into(), serde_json::json!(tally.bytes_read));
        extra.insert("bytes_kept".into(), serde_json::json!(tally.bytes_kept));
        let manifest = stage.finish(tally.counts, outputs, extra)?;
        self.write_report_if_complete()?;
        Ok(summary(&manifest, false))
    }

    /// Writes report.{json,md} once the folder's `_manifest.json` exists (with several tasks,
    /// the last one to finish merges the manifests and writes it).
    fn write_report_if_complete(&self) -> Result<()> {
        if let Some(m) = Manifest::of_folder(&self.output)? {
            Report::from_manifest(&m).write(&self.output)?;
        }
        Ok(())
    }

    fn filter_file(&self, path: &Path, model: Option<&QualityModel>, blocklist: &UrlBlocklist, tally: &mut Tally, bar: &ProgressBar) -> Result<Vec<WrittenFile>> {
        let name = dsllm_core::inputs::mirrored_name(path);
        let input_schema = schema_of(path)?;
        let kept_schema = kept_schema(&input_schema);
        let rejected_schema = rejected_schema(&kept_schema);
        let mut kept = ParquetSink::create(self.output.join("kept").join(&name), kept_schema.clone())?;
        let mut rejected: Option<ParquetSink> = None;
        let rewrite = self.config.c4.enabled && self.config.c4.remove_lines;
        for batch in read_batches(path, None)? {
            let batch = batch?;
            let texts = batch
                .column_by_name("text")
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                .ok_or_else(|| Error::input(path, None, "column `text` is missing or not a UTF-8 string column"))?;
            let string_column = |name: &str| batch.column_by_name(name).and_then(|c| c.as_any().downcast_ref::<StringArray>());
            let (urls, domains) = (string_column("url"), string_column("domain"));
            if urls.is_none() && !blocklist.is_empty() {
                return Err(Error::input(path, None, "the [url] blocklists need a UTF-8 string column `url`"));
            }
            let outcomes: Vec<Outcome> = (0..batch.num_rows())
                .into_par_iter()
                .map_init(
                    || (Analyzer::new(&self.config), Vec::new()),
                    |(analyzer, scratch), row| {
                        let text = if texts.is_null(row) { "" } else { texts.value(row) };
                        let url = urls.filter(|c| !c.is_null(row)).map(|c| c.value(row));
                        let domain = domains.filter(|c| !c.is_null(row)).map(|c| c.value(row));
                        let url_blocked = url.is_some_and(|url| blocklist.blocks(url, domain));
                        analyze(analyzer, scratch, model, text, rewrite, url_blocked)
                    },
                )
                .collect();
            for (row, o) in outcomes.iter().enumerate() {
                let bytes = if texts.is_null(row) { 0 } else { texts.value(row).len() as u64 };
                tally.bytes_read += bytes;
                let lang = o.signals.language.code.unwrap_or("unknown").to_string();
                let entry = tally.by_language.entry(lang).or_default();
                match o.reason {
                    None => {
                        tally.counts.keep();
                        entry.0 += 1;
                        tally.bytes_kept += o.kept_text.as_ref().map_or(bytes, |t| t.len() as u64);
                    }
                    Some(rule) => {
                        tally.counts.remove(rule.name());
                        entry.1 += 1;
                    }
                }
                for (i, rule) in rules::rules().iter().enumerate() {
                    if o.fires & (1 << i) != 0 {
                        *tally.fires.entry(rule.name()).or_default() += 1;
                    }
                }
            }
            let full = with_signals(&batch, &outcomes, &kept_schema).map_err(|e| Error::arrow(path, e))?;
            let keep_mask = BooleanArray::from(outcomes.iter().map(|o| o.reason.is_none()).collect::<Vec<_>>());
            let kept_rows = arrow::compute::filter_record_batch(&full, &keep_mask).map_err(|e| Error::arrow(path, e))?;
            kept.write(&kept_rows)?;
            if outcomes.iter().any(|o| o.reason.is_some()) {
                let full = with_original_text(&full, texts).map_err(|e| Error::arrow(path, e))?;
                let reject_mask = arrow::compute::not(&keep_mask).map_err(|e| Error::arrow(path, e))?;
                let rows = arrow::compute::filter_record_batch(&full, &reject_mask).map_err(|e| Error::arrow(path, e))?;
                let reasons: Vec<&str> = outcomes.iter().filter_map(|o| o.reason.map(Rule::name)).collect();
                let mut columns = rows.columns().to_vec();
                columns.push(Arc::new(StringArray::from(reasons)));
                let rows = RecordBatch::try_new(rejected_schema.clone(), columns).map_err(|e| Error::arrow(path, e))?;
                if rejected.is_none() {
                    rejected = Some(ParquetSink::create(self.output.join("rejected").join(&name), rejected_schema.clone())?);
                }
                rejected.as_mut().expect("created").write(&rows)?;
            }
            bar.inc(batch.num_rows() as u64);
        }
        let mut written = vec![kept.finish()?];
        written.extend(rejected.map(ParquetSink::finish).transpose()?);
        Ok(written)
    }
}

fn analyze(analyzer: &mut Analyzer, scratch: &mut Vec<u32>, model: Option<&QualityModel>, text: &str, rewrite: bool, url_blocked: bool) -> Outcome {
    let mut signals = analyzer.analyze(text);
    signals.url_blocked = url_blocked;
    signals.quality_score = model.map(|m| m.score_with(text, scratch));
    let config = analyzer.config();
    let reason = rules::first_failure(&signals, config);
    let fires = rules::failures(&signals, config);
    let kept_text = (reason.is_none() && rewrite && signals.c4_dropped_lines > 0).then(|| analyzer.c4_text(text));
    Outcome { signals, reason, fires, kept_text }
}

/// The input schema (with `lang` and `lang_score` added if missing) plus the signal columns.
pub fn kept_schema(input: &Schema) -> SchemaRef {
    let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
    for (name, ty) in [("lang", DataType::Utf8), ("lang_score", DataType::Float32)] {
        match fields.iter_mut().find(|f| f.name() == name) {
            Some(f) => *f = Field::new(name, ty, true),
            None => fields.push(Field::new(name, ty, true)),
        }
    }
    let existing: Vec<String> = fields.iter().map(|f| f.name().clone()).collect();
    fields.extend(signal_fields().into_iter().filter(|f| !existing.contains(f.name())));
    Arc::new(Schema::new_with_metadata(fields, input.metadata().clone()))
}

/// The kept schema plus `reject_reason`.
pub fn rejected_schema(kept: &Schema) -> SchemaRef {
    let mut fields: Vec<Field> = kept.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(REJECT_REASON, DataType::Utf8, false));
    Arc::new(Schema::new_with_metadata(fields, kept.metadata().clone()))
}

/// The batch in the kept schema: lang and lang_score from the identifier, text as kept, and
/// the signal columns. Input columns the filter recomputes are replaced, others pass through.
fn with_signals(batch: &RecordBatch, outcomes: &[Outcome], schema: &SchemaRef) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let name = field.name().as_str();
        let column: ArrayRef = match name {
            "text" => {
                let texts = batch.column_by_name("text").expect("checked").as_any().downcast_ref::<StringArray>().expect("checked");
                if outcomes.iter().all(|o| o.kept_text.is_none()) {
                    batch.column_by_name("text").expect("checked").clone()
                } else {
                    Arc::new(StringArray::from_iter(outcomes.iter().enumerate().map(|(row, o)| {
                        Some(o.kept_text.as_deref().unwrap_or(if texts.is_null(row) { "" } else { texts.value(row) }))
                    })))
                }
            }
            "lang" => Arc::new(StringArray::from_iter(outcomes.iter().map(|o| o.signals.language.code))),
            "lang_score" => Arc::new(Float32Array::from_iter(outcomes.iter().map(|o| o.signals.language.code.map(|_| o.signals.language.score)))),
            "script" => Arc::new(StringArray::from_iter(outcomes.iter().map(|o| o.signals.language.script))),
            "list_ratio" => Arc::new(Float32Array::from_iter_values(outcomes.iter().map(|o| o.signals.list_ratio))),
            "quality_score" => Arc::new(Float32Array::from_iter(outcomes.iter().map(|o| o.signals.quality_score))),
            _ => {
                if let Some((_, get)) = F32_SIGNALS.iter().find(|(n, _)| *n == name) {
                    Arc::new(Float32Array::from_iter_values(outcomes.iter().map(|o| get(&o.signals))))
                } else if let Some((_, get)) = U32_SIGNALS.iter().find(|(n, _)| *n == name) {
                    Arc::new(UInt32Array::from_iter_values(outcomes.iter().map(|o| get(&o.signals))))
                } else if let Some((_, get)) = BOOL_SIGNALS.iter().find(|(n, _)| *n == name) {
                    Arc::new(BooleanArray::from(outcomes.iter().map(|o| get(&o.signals)).collect::<Vec<_>>()))
                } else {
                    batch.column_by_name(name).expect("input column").clone()
                }
            }
        };
        columns.push(column);
    }
    RecordBatch::try_new(schema.clone(), columns)
}

/// The same batch with the input's text (rejected documents are written as they came).
fn with_original_text(full: &RecordBatch, texts: &StringArray) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    let index = full.schema().index_of("text")?;
    let mut columns = full.columns().to_vec();
    columns[index] = Arc::new(texts.clone());
    RecordBatch::try_new(full.schema(), columns)
}

fn summary(m: &Manifest, up_to_date: bool) -> serde_json::Value {
    serde_json::json!({
        "tool": TOOL,
        "up_to_date": up_to_date,
        "task": m.task,
        "read": m.counts.read,
        "kept": m.counts.kept,
        "removed": m.counts.removed,
        "removed_by_reason": m.counts.removed_by_reason,
        "wall_seconds": m.wall_seconds,
    })
}
