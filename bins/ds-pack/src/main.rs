//! ds-pack: tokenizes documents Parquet in parallel and packs them, EOS after each document,
//! into fixed-length sequences in token shards (train/val split by id hash; remix `repeat`
//! honored).

use clap::Parser;
use dsllm_core::inputs::{expand, TaskSlice};
use dsllm_core::manifest::{Counts, Stage, StageStart};
use dsllm_core::parquet_io::{visit_documents, WrittenFile};
use dsllm_core::{cli, progress, Error};
use dsllm_tokens::tokenizer::DsTokenizer;
use dsllm_tokens::{PackConfig, Packer};
use std::collections::BTreeMap;
use std::path::PathBuf;

const TOOL: &str = "ds-pack";

#[derive(Parser)]
#[command(version, about = "Tokenize documents and pack them into fixed-length token shards")]
struct Args {
    /// Documents Parquet files, folders or globs.
    #[arg(long, short, required = true, num_args = 1..)]
    input: Vec<String>,
    /// Output folder: train/ and val/ shards, index.json, _manifest.json.
    #[arg(long, short)]
    output: PathBuf,
    /// Tokenizer folder written by `ds-tokenizer train`.
    #[arg(long)]
    tokenizer: PathBuf,
    /// Tokens per sequence (paper: 4096).
    #[arg(long, default_value_t = PackConfig::default().sequence_length)]
    seq_len: u32,
    /// Share of documents (by id hash) held out for validation.
    #[arg(long, default_value_t = PackConfig::default().validation_fraction)]
    val_fraction: f64,
    /// Seed of the document shuffle.
    #[arg(long, default_value_t = PackConfig::default().seed)]
    seed: u64,
    /// Sequences per shard file.
    #[arg(long, default_value_t = PackConfig::default().sequences_per_shard)]
    shard_sequences: u64,
    /// Also write zstd-compressed copies of the shards (level) for transport.
    #[arg(long)]
    zstd: Option<i32>,
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long)]
    force: bool,
}

fn tokens_error(e: dsllm_tokens::TokensError) -> Error {
    Error::Input { path: PathBuf::new(), location: None, message: e.to_string() }
}

fn main() {
    let args = Args::parse();
    cli::run_main(TOOL, || {
        cli::init_threads(args.threads)?;
        let files = expand(&args.input, |p| p.extension().is_some_and(|x| x == "parquet"))?;
        let tokenizer = DsTokenizer::load(&args.tokenizer).map_err(|e| Error::Usage(e.to_string()))?;
        let mut inputs = files.clone();
        inputs.push(args.tokenizer.join("tokenizer.json"));
        let params = serde_json::json!({
            "seq_len": args.seq_len, "val_fraction": args.val_fraction, "seed": args.seed,
            "shard_sequences": args.shard_sequences, "zstd": args.zstd,
        });
        let stage = match Stage::begin(TOOL, &args.output, params, &inputs, TaskSlice::default(), args.force)? {
            StageStart::UpToDate(m) => return Ok(serde_json::json!({"tool": TOOL, "output": args.output, "skipped_up_to_date": true, "documents": m.counts.read})),
            StageStart::Run(stage) => stage,
        };
        let config = PackConfig {
            sequence_length: args.seq_len,
            validation_fraction: args.val_fraction,
            seed: args.seed,
            sequences_per_shard: args.shard_sequences,
            zstd_level: args.zstd,
            threads: args.threads.unwrap_or(0),
            ..PackConfig::default()
        };
        let mut packer = Packer::new(&tokenizer, &args.output, config).map_err(tokens_error)?;
        let bar = progress::bar(files.len() as u64, "pack", "files");
        for file in &files {
            visit_documents(file, |id, text, repeat, _| packer.add(id, text, repeat).map_err(tokens_error))?;
            bar.inc(1);
        }
        bar.finish_and_clear();
        let summary = packer.finish().map_err(tokens_error)?;
        let mut counts = Counts::default();
        let packed = summary.documents_read - summary.skipped_empty - summary.skipped_repeat_zero;
        (0..packed).for_each(|_| counts.keep());
        (0..summary.skipped_empty).for_each(|_| counts.remove("empty_text"));
        (0..summary.skipped_repeat_zero).for_each(|_| counts.remove("remix_repeat_zero"));
        let index = serde_json::to_value(&summary.index).unwrap_or_default();
        let index_path = args.output.join("index.json");
        let outputs = std::fs::metadata(&index_path).map(|m| vec![WrittenFile { path: index_path, rows: 0, bytes: m.len() }]).unwrap_or_default();
        let mut extra = BTreeMap::new();
        extra.insert("text_bytes".to_string(), serde_json::json!(summary.text_bytes));
        let manifest = stage.finish(counts, outputs, extra)?;
        Ok(serde_json::json!({"tool": TOOL, "output": args.output, "documents": summary.documents_read, "text_bytes": summary.text_bytes, "index": index, "wall_seconds": manifest.wall_seconds}))
    })
}
