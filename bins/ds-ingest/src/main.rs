//! ds-ingest: Common Crawl WET (.warc.wet.gz) and WARC (.warc.gz) files into documents Parquet.

use clap::Parser;
use dsllm_core::{cli, inputs, progress};
use dsllm_warc::ingest::{self, IngestOptions};
use std::path::PathBuf;

#[derive(Parser)]
#[command(version, about = "Common Crawl WET/WARC files into documents Parquet (one part per input file; damaged records quarantined)")]
struct Args {
    /// Input files, folders (searched recursively) or globs of .warc.wet.gz / .warc.gz / .warc files
    /// (ARC files, Common Crawl's before 2013, are refused: convert them to WARC first).
    #[arg(long, short, required = true, num_args = 1..)]
    input: Vec<String>,
    /// Output folder: part-NNNNN.parquet, quarantine/part-NNNNN.parquet, _manifest.json.
    #[arg(long, short)]
    output: PathBuf,
    /// Dump name for files that do not say it (no warcinfo isPartOf, no CC-MAIN-… in the path).
    #[arg(long)]
    dump: Option<String>,
    /// This task's index in a job array (default: SLURM_ARRAY_TASK_ID or 0).
    #[arg(long)]
    task_id: Option<usize>,
    /// Number of tasks in the job array (default: SLURM_ARRAY_TASK_COUNT or 1).
    #[arg(long)]
    num_tasks: Option<usize>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Rerun even if the output's manifest matches the inputs and parameters.
    #[arg(long)]
    force: bool,
}

fn main() {
    let args = Args::parse();
    cli::run_main(ingest::TOOL, || {
        cli::init_threads(args.threads)?;
        let files = inputs::expand(&args.input, ingest::is_input_file)?;
        if files.is_empty() {
            return Err(dsllm_core::Error::Usage("no .warc/.wet input files found".to_string()));
        }
        let options = IngestOptions {
            dump: args.dump.clone(),
            task: inputs::TaskSlice::from_flags_or_env(args.task_id, args.num_tasks)?,
            force: args.force,
        };
        let bar = progress::bar(files.len() as u64, "ingest", "files");
        let result = ingest::run(&files, &args.output, &options, &bar)?;
        bar.finish_and_clear();
        let m = &result.manifest;
        Ok(serde_json::json!({
            "tool": ingest::TOOL,
            "output": args.output,
            "skipped_up_to_date": result.skipped,
            "files": m.inputs.len(),
            "read": m.counts.read,
            "kept": m.counts.kept,
            "removed": m.counts.removed,
            "quarantined": m.counts.quarantined,
            "quarantined_by_reason": m.counts.quarantined_by_reason,
            "wall_seconds": m.wall_seconds,
        }))
    })
}
