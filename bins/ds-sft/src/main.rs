//! ds-sft: supervised fine-tuning (see the dsllm-align crate).

use clap::Parser;
use dsllm_align::stage::{run_sft, CommonArgs, SftFlags, SFT_TOOL};
use dsllm_core::cli;

#[derive(Parser)]
#[command(
    version,
    about = "Supervised fine-tuning on chat conversations (JSON/JSONL/Parquet: alpaca, ShareGPT, messages): loss on assistant tokens only, several conversations packed per row without crossing, epochs and LR as the paper (7B: 4 epochs at 1e-5), optional second stage without math/code",
    after_help = "Writes to --output: stage1/ (and stage2/) checkpoints in Hugging Face LlamaForCausalLM format with the tokenizer, latest, metrics.jsonl, report.json (task accuracy and repetition ratio before and after), _manifest.json."
)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    flags: SftFlags,
}

fn main() {
    let args = Args::parse();
    cli::run_main(SFT_TOOL, || {
        cli::init_threads(args.common.threads)?;
        run_sft(&args.common, &args.flags).map_err(|e| dsllm_core::Error::input(&args.common.output, None, format!("{e:#}")))
    })
}
