//! ds-filter: heuristic (Gopher quality and repetition, C4, FineWeb) and model-based quality
//! filtering, bilingual English/Chinese. `ds-filter --input ... --output ...` filters;
//! `ds-filter train-quality` trains the quality model. The logic lives in `dsllm-filter`.

use clap::{Args, Parser, Subcommand};
use dsllm_core::cli::StageArgs;
use dsllm_core::inputs::{expand, TaskSlice};
use dsllm_core::Error;
use dsllm_filter::quality::{read_training_texts, QualityModel, TrainParams};
use dsllm_filter::{FilterConfig, FilterJob};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[derive(Debug, Parser)]
#[command(name = "ds-filter", version, about = "Quality filtering: Gopher, C4 and FineWeb rules, language id, a trained quality model")]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    filter: FilterArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train the quality model on reference (positive) and noise (negative) documents.
    TrainQuality(TrainArgs),
    /// Print the default configuration (TOML) to start a config file from.
    DefaultConfig,
}

#[derive(Debug, Args)]
#[command(mut_arg("input", |a| a.help("Documents Parquet: files, folders or globs (e.g. work/dedup/kept)")))]
#[command(mut_arg("output", |a| a.help("Output folder: kept/<dump>/, rejected/<dump>/, report.{json,md}, _manifest.json")))]
struct FilterArgs {
    #[command(flatten)]
    stage: StageArgs,
    /// Rule thresholds (TOML; missing keys take the published defaults; see `default-config`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Quality model from `train-quality`: adds the `quality_score` column.
    #[arg(long)]
    quality_model: Option<PathBuf>,
    /// Reject documents scoring below this (reason `quality_model`); overrides the config.
    #[arg(long)]
    min_quality: Option<f32>,
    /// Keep only these languages (ISO 639-1, comma-separated, e.g. en,zh); overrides the config.
    #[arg(long, value_delimiter = ',')]
    languages: Option<Vec<String>>,
    /// This task's number in a job array (default: $SLURM_ARRAY_TASK_ID or 0).
    #[arg(long)]
    task_id: Option<usize>,
    /// Tasks in the job array (default: $SLURM_ARRAY_TASK_COUNT or 1).
    #[arg(long)]
    num_tasks: Option<usize>,
}

#[derive(Debug, Args)]
struct TrainArgs {
    /// Reference-quality documents: Parquet files/folders, .txt, .jsonl (optionally .gz).
    #[arg(long, num_args = 1..)]
    positive: Vec<String>,
    /// Noise documents, same formats.
    #[arg(long, num_args = 1..)]
    negative: Vec<String>,
    /// Labelled alternative: documents Parquet whose rows are labelled by --labels.
    #[arg(long, num_args = 1..)]
    input: Vec<String>,
    /// Parquet with `id` and `family` columns (ds-synth's ground_truth.parquet).
    #[arg(long, requires = "input")]
    labels: Option<PathBuf>,
    /// Families of --labels that are reference quality; every other family is noise.
    #[arg(long, value_delimiter = ',', default_value = "clean_en,clean_zh")]
    positive_families: Vec<String>,
    /// Model file to write.
    #[arg(long)]
    output: PathBuf,
    #[arg(long, default_value_t = 18)]
    bits: u32,
    #[arg(long, default_value_t = 8)]
    epochs: u32,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Plain-text inputs are cut into documents of about this many characters.
    #[arg(long, default_value_t = 4000)]
    max_chars: usize,
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            std::process::exit(if e.use_stderr() { 2 } else { 0 });
        }
    };
    dsllm_core::cli::run_main("ds-filter", || match cli.command {
        Some(Command::TrainQuality(args)) => train(args),
        Some(Command::DefaultConfig) => {
            print!("{}", FilterConfig::default().to_toml());
            std::process::exit(0)
        }
        None => filter(cli.filter),
    })
}

fn parquet_files(patterns: &[String]) -> dsllm_core::Result<Vec<PathBuf>> {
    expand(patterns, |p| p.extension().is_some_and(|e| e == "parquet"))
}

fn filter(args: FilterArgs) -> dsllm_core::Result<serde_json::Value> {
    let (inputs, output) = args.stage.require()?;
    let mut config = match &args.config {
        Some(path) => FilterConfig::from_toml_file(path).map_err(Error::Usage)?,
        None => FilterConfig::default(),
    };
    if let Some(t) = args.min_quality {
        config.quality_model.min_score = Some(t);
    }
    if let Some(langs) = args.languages {
        config.language.keep = langs;
    }
    let job = FilterJob {
        inputs,
        output,
        config,
        quality_model: args.quality_model,
        task: TaskSlice::from_flags_or_env(args.task_id, args.num_tasks)?,
        force: args.stage.force,
    };
    dsllm_core::cli::init_threads(args.stage.threads)?;
    job.run()
}

fn train(args: TrainArgs) -> dsllm_core::Result<serde_json::Value> {
    let mut docs: Vec<(String, bool)> = Vec::new();
    let mut sources = Vec::new();
    let all_files = |patterns: &[String]| expand(patterns, |_| true);
    for (patterns, label) in [(&args.positive, true), (&args.negative, false)] {
        for path in all_files(patterns)? {
            let texts = read_training_texts(&path, args.max_chars)?;
            sources.push(format!("{} {} ({} documents)", if label { "+" } else { "-" }, path.display(), texts.len()));
            docs.extend(texts.into_iter().map(|t| (t, label)));
        }
    }
    if let Some(labels) = &args.labels {
        let families = read_labels(labels)?;
        let positive: BTreeSet<&str> = args.positive_families.iter().map(String::as_str).collect();
        for path in parquet_files(&args.input)? {
            let mut n = 0usize;
            dsllm_core::parquet_io::visit_documents(&path, |id, text, _, _| {
                if let Some(family) = families.get(id) {
                    docs.push((text.to_string(), positive.contains(family.as_str())));
                    n += 1;
                }
                Ok(())
            })?;
            sources.push(format!("labelled by {}: {} ({n} documents)", labels.display(), path.display()));
        }
    }
    if docs.is_empty() {
        return Err(Error::Usage("no training documents: give --positive and --negative, or --input with --labels".into()));
    }
    let params = TrainParams { bits: args.bits, epochs: args.epochs, seed: args.seed, ..TrainParams::default() };
    let model = QualityModel::train(&docs, &params, sources)?;
    model.save(&args.output)?;
    Ok(serde_json::json!({
        "tool": "ds-filter train-quality",
        "output": args.output,
        "train_positives": model.info.train_positives,
        "train_negatives": model.info.train_negatives,
        "heldout_documents": model.info.heldout_positives + model.info.heldout_negatives,
        "heldout_accuracy": model.info.heldout_accuracy,
    }))
}

/// id → family from a labels Parquet file.
fn read_labels(path: &Path) -> dsllm_core::Result<BTreeMap<String, String>> {
    use arrow::array::{Array, StringArray};
    let mut labels = BTreeMap::new();
    for batch in dsllm_core::parquet_io::read_batches(path, Some(&["id", "family"]))? {
        let batch = batch?;
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                .ok_or_else(|| Error::input(path, None, format!("column `{name}` must be a string column")))
        };
        let (ids, families) = (column("id")?, column("family")?);
        for row in 0..batch.num_rows() {
            if !ids.is_null(row) && !families.is_null(row) {
                labels.insert(ids.value(row).to_string(), families.value(row).to_string());
            }
        }
    }
    Ok(labels)
}
