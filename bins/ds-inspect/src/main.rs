//! ds-inspect: schema, counts, statistics and samples of any dsllm artifact.

use clap::Parser;
use dsllm_core::{cli, Error};
use dsllm_inspect::{classify, inspect_table, Artifact};
use std::path::PathBuf;

#[derive(Parser)]
#[command(version, about = "Summarize a Parquet file or folder, a token shard folder, or a checkpoint")]
struct Args {
    /// A .parquet file, a folder of them, a ds-pack output folder (index.json) or a checkpoint folder.
    path: PathBuf,
    /// Sample rows (tables) or sequences per split (token shards) to show.
    #[arg(long, default_value_t = 3)]
    samples: usize,
    /// Tokenizer folder for decoding token samples.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn main() {
    let args = Args::parse();
    cli::run_main("ds-inspect", || {
        let report: serde_json::Value = match classify(&args.path)? {
            Artifact::Table => {
                let r = inspect_table(&args.path, args.samples)?;
                if !args.json {
                    print!("{r}");
                }
                serde_json::to_value(&r).expect("serializable")
            }
            Artifact::TokenShards => {
                let tokenizer = args
                    .tokenizer
                    .as_ref()
                    .map(|dir| dsllm_tokens::tokenizer::DsTokenizer::load(dir))
                    .transpose()
                    .map_err(|e| Error::Usage(e.to_string()))?;
                let r = dsllm_tokens::inspect::inspect_tokens(&args.path, tokenizer.as_ref(), args.samples as u64, 64)
                    .map_err(|e| Error::input(&args.path, None, e.to_string()))?;
                if !args.json {
                    print!("{r}");
                }
                serde_json::to_value(&r).expect("serializable")
            }
            Artifact::Checkpoint => {
                let r = dsllm_model::checkpoint::describe_checkpoint(&args.path).map_err(|e| Error::input(&args.path, None, format!("{e:#}")))?;
                if !args.json {
                    println!("{}", serde_json::to_string_pretty(&r).expect("json"));
                }
                r
            }
        };
        // The one-line summary: the whole report with --json, the path and kind otherwise.
        Ok(if args.json { report } else { serde_json::json!({"tool": "ds-inspect", "path": args.path}) })
    })
}
