//! ds-dpo: Direct Preference Optimization (see the dsllm-align crate).

use clap::Parser;
use dsllm_align::stage::{run_dpo, CommonArgs, DpoFlags, DpoInputs, DPO_TOOL};
use dsllm_core::cli;

#[derive(Parser)]
#[command(
    version,
    about = "DPO on preference pairs (prompt, chosen, rejected): reference log-probs computed once and stored, sigmoid loss with beta 0.1, LR 5e-6, 1 epoch, batch by accumulation; logs reward accuracy, margins and KL to the reference",
    after_help = "Writes to --output: final/ checkpoint in Hugging Face LlamaForCausalLM format with the tokenizer, latest, reference_logps.parquet, metrics.jsonl, report.json (preferred-answer rate and task accuracy before and after), _manifest.json."
)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    inputs: DpoInputs,
    #[command(flatten)]
    flags: DpoFlags,
}

fn main() {
    let args = Args::parse();
    cli::run_main(DPO_TOOL, || {
        cli::init_threads(args.common.threads)?;
        run_dpo(&args.common, &args.inputs, &args.flags).map_err(|e| dsllm_core::Error::input(&args.common.output, None, format!("{e:#}")))
    })
}
