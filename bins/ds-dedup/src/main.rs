//! ds-dedup: exact and MinHash near-dedup of documents across Common Crawl dumps, against a
//! persistent index so each new dump is deduplicated against all earlier ones.
//! The logic lives in `dsllm-dedup`; this file parses arguments and prints the summary.

use clap::{Parser, ValueEnum};
use dsllm_core::inputs::{expand, TaskSlice};
use dsllm_dedup::pipeline::{DedupJob, Phase};
use dsllm_dedup::{DedupConfig, KeepRule};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PhaseArg {
    /// All phases in this process.
    All,
    /// Sketch this task's input files (job array).
    Signatures,
    /// Merge, cluster and update the index (one task, after every signatures task).
    Cluster,
    /// Write this task's kept/removed Parquet (job array, after cluster).
    Write,
}

#[derive(Debug, Parser)]
#[command(name = "ds-dedup", version, about = "Exact + MinHash-LSH dedup across dumps with an incremental index")]
struct Args {
    /// Documents Parquet: files, folders or globs (e.g. work/docs/CC-MAIN-2024-22).
    #[arg(long, required = true, num_args = 1..)]
    input: Vec<String>,
    /// Output folder: kept/, removed/, quarantine/, report.{json,md}, _manifest.json.
    #[arg(long)]
    output: PathBuf,
    /// Index of the documents earlier dumps kept (read, then extended). Default: <output>/index.
    #[arg(long)]
    index: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "all")]
    phase: PhaseArg,
    /// This task's number in a job array (default: $SLURM_ARRAY_TASK_ID or 0).
    #[arg(long)]
    task_id: Option<usize>,
    /// Tasks in the job array (default: $SLURM_ARRAY_TASK_COUNT or 1).
    #[arg(long)]
    num_tasks: Option<usize>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Memory for sketches held before a sorted run is spilled to disk.
    #[arg(long, default_value_t = 1024)]
    memory_mb: usize,
    #[arg(long, default_value_t = 14)]
    bands: usize,
    #[arg(long, default_value_t = 8)]
    rows_per_band: usize,
    /// Tokens per shingle (words; characters for Chinese/Japanese).
    #[arg(long, default_value_t = 5)]
    shingle_tokens: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Shingle hashes kept per document to verify candidates (bottom-k sample).
    #[arg(long, default_value_t = 256)]
    sample_size: usize,
    /// Estimated similarity at which candidates are duplicates.
    #[arg(long, default_value_t = 0.8)]
    threshold: f32,
    /// Which document of a cluster stays: earliest (dump, then smallest id) or longest.
    #[arg(long, default_value = "earliest")]
    keep: KeepRule,
    /// Rerun even if the output's manifest matches the inputs and parameters.
    #[arg(long)]
    force: bool,
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match run(args) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ds-dedup: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

fn run(args: Args) -> dsllm_core::Result<serde_json::Value> {
    let task = TaskSlice::from_flags_or_env(args.task_id, args.num_tasks)?;
    let inputs = expand(&args.input, |p| p.extension().is_some_and(|e| e == "parquet"))?;
    let config = DedupConfig {
        bands: args.bands,
        rows_per_band: args.rows_per_band,
        shingle_tokens: args.shingle_tokens,
        seed: args.seed,
        sample_size: args.sample_size,
        similarity_threshold: args.threshold,
        keep_rule: args.keep,
        ..DedupConfig::default()
    };
    let job = DedupJob {
        inputs,
        index: args.index.unwrap_or_else(|| args.output.join("index")),
        output: args.output,
        config,
        task,
        memory_mb: args.memory_mb,
        force: args.force,
    };
    let phase = match args.phase {
        PhaseArg::All => Phase::All,
        PhaseArg::Signatures => Phase::Signatures,
        PhaseArg::Cluster => Phase::Cluster,
        PhaseArg::Write => Phase::Write,
    };
    let mut pool = rayon::ThreadPoolBuilder::new();
    if let Some(threads) = args.threads {
        pool = pool.num_threads(threads.max(1));
    }
    let pool = pool.build().map_err(|e| dsllm_core::Error::Usage(format!("cannot start {:?} threads: {e}", args.threads)))?;
    pool.install(|| job.run(phase))
}
