//! ds-tokenizer: trains the byte-level BPE tokenizer on documents Parquet (`train`) and
//! measures bytes per token per language on held-out documents (`stats`).

use clap::{Parser, Subcommand};
use dsllm_core::inputs::{expand, TaskSlice};
use dsllm_core::manifest::{Counts, Stage, StageStart};
use dsllm_core::parquet_io::visit_documents;
use dsllm_core::{cli, progress, Error};
use dsllm_tokens::tokenizer::{save_tokenizer, train_tokenizer, ByteBudgetSample, DsTokenizer, TrainConfig};
use dsllm_tokens::TokenizationStats;
use std::collections::BTreeMap;
use std::path::PathBuf;

const TOOL: &str = "ds-tokenizer";

#[derive(Parser)]
#[command(version, about = "Train and measure the DeepSeek-style byte-level BPE tokenizer")]
struct Args {
    #[command(subcommand)]
    command: Command,
    /// Worker threads (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
}

#[derive(Subcommand)]
enum Command {
    /// Train on documents Parquet; writes tokenizer.json (Hugging Face format) + configs.
    Train {
        /// Documents Parquet files, folders or globs.
        #[arg(long, short, required = true, num_args = 1..)]
        input: Vec<String>,
        /// Output folder for tokenizer.json, tokenizer_config.json, dsllm_tokenizer.json.
        #[arg(long, short)]
        output: PathBuf,
        /// Learned tokens, the 256 byte tokens included (paper: 100,000).
        #[arg(long, default_value_t = TrainConfig::default().learned_tokens)]
        learned_tokens: usize,
        /// Rows of the model's embedding (paper: 102,400); 0 rounds the tokenizer up to a multiple of 128.
        #[arg(long, default_value_t = 102_400)]
        model_vocab: usize,
        /// Most text the trainer sees (bytes); documents are sampled by a seeded hash of their id.
        #[arg(long, default_value_t = TrainConfig::default().sample_bytes)]
        sample_bytes: u64,
        #[arg(long, default_value_t = TrainConfig::default().min_frequency)]
        min_frequency: u64,
        #[arg(long, default_value_t = TrainConfig::default().seed)]
        seed: u64,
        /// Retrain even if the output's manifest matches.
        #[arg(long)]
        force: bool,
    },
    /// Bytes per token, tokens per word and per character, per language.
    Stats {
        #[arg(long)]
        tokenizer: PathBuf,
        #[arg(long, short, required = true, num_args = 1..)]
        input: Vec<String>,
        /// Documents to measure at most.
        #[arg(long, default_value_t = 100_000)]
        max_documents: u64,
    },
}

fn parquet(p: &std::path::Path) -> bool {
    p.extension().is_some_and(|x| x == "parquet")
}

fn tokens_error(e: dsllm_tokens::TokensError) -> Error {
    Error::Input { path: PathBuf::new(), location: None, message: e.to_string() }
}

fn main() {
    let args = Args::parse();
    cli::run_main(TOOL, || {
        cli::init_threads(args.threads)?;
        match args.command {
            Command::Train { input, output, learned_tokens, model_vocab, sample_bytes, min_frequency, seed, force } => {
                let files = expand(&input, parquet)?;
                let config = TrainConfig {
                    learned_tokens,
                    model_vocab_size: (model_vocab > 0).then_some(model_vocab),
                    min_frequency,
                    sample_bytes,
                    seed,
                    threads: args.threads.unwrap_or(0),
                    ..TrainConfig::default()
                };
                let params = serde_json::json!({"learned_tokens": learned_tokens, "model_vocab": model_vocab, "sample_bytes": sample_bytes, "min_frequency": min_frequency, "seed": seed});
                let stage = match Stage::begin(TOOL, &output, params, &files, TaskSlice::default(), force)? {
                    StageStart::UpToDate(m) => return Ok(serde_json::json!({"tool": TOOL, "output": output, "skipped_up_to_date": true, "documents": m.counts.read})),
                    StageStart::Run(stage) => stage,
                };
                let bar = progress::bar(files.len() as u64, "sample", "files");
                let mut sample = ByteBudgetSample::new(sample_bytes, seed);
                // A remix's output: a document dropped there (repeat 0) is not learned from, a
                // repeated one is learned from once (copies would spend the sample's budget on
                // text it already holds).
                let mut dropped_by_remix = 0u64;
                for file in &files {
                    visit_documents(file, |id, text, repeat, _| {
                        if repeat == 0 {
                            dropped_by_remix += 1;
                        } else {
                            sample.offer(id, text);
                        }
                        Ok(())
                    })?;
                    bar.inc(1);
                }
                bar.finish_and_clear();
                let counts_sample = sample.counts();
                let texts = sample.into_texts();
                eprintln!("{TOOL}: training {learned_tokens} tokens on {} sampled documents", texts.len());
                let (tokenizer, tok_config) = train_tokenizer(&texts, &config, counts_sample.clone()).map_err(tokens_error)?;
                save_tokenizer(&output, &tokenizer, &tok_config).map_err(tokens_error)?;
                let mut counts = Counts::default();
                let seen = serde_json::to_value(&counts_sample).unwrap_or_default();
                let seen_docs = seen["seen_documents"].as_u64().unwrap_or(texts.len() as u64);
                for i in 0..seen_docs {
                    if i < texts.len() as u64 { counts.keep() } else { counts.remove("not_sampled") }
                }
                (0..dropped_by_remix).for_each(|_| counts.remove("remix_repeat_zero"));
                let outputs = ["tokenizer.json", "tokenizer_config.json", "dsllm_tokenizer.json"]
                    .iter()
                    .filter_map(|n| {
                        let p = output.join(n);
                        std::fs::metadata(&p).ok().map(|m| dsllm_core::parquet_io::WrittenFile { path: p, rows: 0, bytes: m.len() })
                    })
                    .collect();
                let mut extra = BTreeMap::new();
                extra.insert("sample".to_string(), seen);
                extra.insert("vocab".to_string(), serde_json::to_value(&tok_config).unwrap_or_default());
                let manifest = stage.finish(counts, outputs, extra)?;
                Ok(serde_json::json!({"tool": TOOL, "output": output, "documents_sampled": texts.len(), "learned_tokens": learned_tokens, "wall_seconds": manifest.wall_seconds}))
            }
            Command::Stats { tokenizer, input, max_documents } => {
                let tok = DsTokenizer::load(&tokenizer).map_err(tokens_error)?;
                let files = expand(&input, parquet)?;
                let mut stats = TokenizationStats::new();
                let mut batch: Vec<(String, String)> = Vec::new();
                let mut seen = 0u64;
                let flush = |batch: &mut Vec<(String, String)>, stats: &mut TokenizationStats| -> dsllm_core::Result<()> {
                    let refs: Vec<(&str, &str)> = batch.iter().map(|(l, t)| (l.as_str(), t.as_str())).collect();
                    stats.add_batch(&tok, &refs).map_err(tokens_error)?;
                    batch.clear();
                    Ok(())
                };
                'files: for file in &files {
                    let mut docs = Vec::new();
                    visit_documents(file, |_, text, _, lang| {
                        docs.push((lang.unwrap_or("unknown").to_string(), text.to_string()));
                        Ok(())
                    })?;
                    for d in docs {
                        if seen >= max_documents {
                            break 'files;
                        }
                        seen += 1;
                        batch.push(d);
                        if batch.len() >= 1024 {
                            flush(&mut batch, &mut stats)?;
                        }
                    }
                }
                flush(&mut batch, &mut stats)?;
                let result = stats.finish();
                Ok(serde_json::json!({"tool": TOOL, "documents": seen, "by_language": serde_json::to_value(&result).unwrap_or_default()}))
            }
        }
    })
}
