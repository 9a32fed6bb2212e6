//! ds-synth: writes the embedded default corpus (see the dsllm-synth crate).

use clap::Parser;
use dsllm_core::cli;
use dsllm_core::inputs::TaskSlice;
use dsllm_core::manifest::{Counts, Stage, StageStart};
use dsllm_synth::align::{write_align_set, AlignConfig};
use dsllm_synth::{synthesize, SynthConfig, TOOL};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Parser)]
#[command(version, about = "Write a synthetic Common-Crawl-like corpus (WET dumps + ground truth of duplicates and quality families)")]
struct Args {
    /// Output folder: <dump>/<dump>-NNNNN.warc.wet.gz, ground_truth.parquet, _manifest.json.
    #[arg(long, short)]
    output: PathBuf,
    #[arg(long, default_value_t = SynthConfig::default().seed)]
    seed: u64,
    #[arg(long, default_value_t = SynthConfig::default().dumps)]
    dumps: usize,
    #[arg(long, default_value_t = SynthConfig::default().docs_per_dump)]
    docs_per_dump: usize,
    #[arg(long, default_value_t = SynthConfig::default().files_per_dump)]
    files_per_dump: usize,
    /// Share of Chinese documents.
    #[arg(long, default_value_t = SynthConfig::default().zh_share)]
    zh_share: f64,
    /// Share of low-quality documents.
    #[arg(long, default_value_t = SynthConfig::default().low_quality_share)]
    low_quality_share: f64,
    #[arg(long)]
    threads: Option<usize>,
    /// Rewrite even if the folder's manifest matches.
    #[arg(long)]
    force: bool,
    /// Write the alignment set instead of the corpus: SFT data, preference pairs and held-out
    /// sets (GSM8K-format task items, preference pairs) of a digit-reversal task.
    #[arg(long)]
    align: bool,
    /// --align: SFT examples.
    #[arg(long, default_value_t = AlignConfig::default().sft_examples)]
    sft_examples: usize,
    /// --align: training preference pairs, one per number (numbers SFT never sees).
    #[arg(long, default_value_t = AlignConfig::default().dpo_pairs)]
    dpo_pairs: usize,
    /// --align: digits of the numbers to reverse.
    #[arg(long, default_value_t = AlignConfig::default().digits as u64, value_parser = clap::value_parser!(u64).range(2..=9))]
    digits: u64,
    /// --align: share of SFT answers in the verbose style (`N reversed is #### M`).
    #[arg(long, default_value_t = AlignConfig::default().verbose_share)]
    verbose_share: f64,
    /// --align: held-out task items and held-out preference pairs (each).
    #[arg(long, default_value_t = AlignConfig::default().eval_items)]
    eval_items: usize,
}

/// `ds-synth --align`: the alignment set, with its manifest.
fn write_align(args: &Args) -> dsllm_core::Result<serde_json::Value> {
    let config = AlignConfig {
        seed: args.seed,
        sft_examples: args.sft_examples,
        dpo_pairs: args.dpo_pairs,
        eval_items: args.eval_items,
        eval_pairs: args.eval_items,
        digits: args.digits as usize,
        verbose_share: args.verbose_share.clamp(0.0, 1.0),
    };
    let params = serde_json::json!({"align": config});
    let stage = match Stage::begin(TOOL, &args.output, params, &[], TaskSlice::default(), args.force)? {
        StageStart::UpToDate(m) => return Ok(serde_json::json!({"tool": TOOL, "output": args.output, "skipped_up_to_date": true, "records": m.counts.read})),
        StageStart::Run(stage) => stage,
    };
    let summary = write_align_set(&config, &args.output)?;
    let mut counts = Counts::default();
    for _ in 0..summary.records {
        counts.keep();
    }
    let mut extra = BTreeMap::new();
    extra.insert("rejected_kinds".into(), serde_json::json!(summary.rejected_kinds));
    let manifest = stage.finish(counts, summary.files.clone(), extra)?;
    Ok(serde_json::json!({
        "tool": TOOL,
        "output": args.output,
        "files": summary.files.iter().map(|f| (f.path.display().to_string(), f.rows)).collect::<BTreeMap<_, _>>(),
        "rejected_kinds": summary.rejected_kinds,
        "wall_seconds": manifest.wall_seconds,
    }))
}

fn main() {
    let args = Args::parse();
    cli::run_main(TOOL, || {
        cli::init_threads(args.threads)?;
        if args.align {
            return write_align(&args);
        }
        let share = |name: &str, x: f64| {
            (0.0..=1.0).contains(&x).then_some(x).ok_or_else(|| dsllm_core::Error::Usage(format!("--{name} must be within 0..1")))
        };
        if args.dumps == 0 || args.docs_per_dump < 10 {
            return Err(dsllm_core::Error::Usage("need --dumps >= 1 and --docs-per-dump >= 10".into()));
        }
        let config = SynthConfig {
            seed: args.seed,
            dumps: args.dumps,
            docs_per_dump: args.docs_per_dump,
            files_per_dump: args.files_per_dump.max(1),
            zh_share: share("zh-share", args.zh_share)?,
            low_quality_share: share("low-quality-share", args.low_quality_share)?,
            ..SynthConfig::default()
        };
        let params = serde_json::to_value(&config).expect("config serializes");
        let stage = match Stage::begin(TOOL, &args.output, params, &[], TaskSlice::default(), args.force)? {
            StageStart::UpToDate(m) => return Ok(serde_json::json!({"tool": TOOL, "output": args.output, "skipped_up_to_date": true, "documents": m.counts.read})),
            StageStart::Run(stage) => stage,
        };
        let summary = synthesize(&config, &args.output)?;
        let mut counts = Counts::default();
        for _ in 0..summary.documents {
            counts.keep();
        }
        let mut extra = BTreeMap::new();
        extra.insert("by_family".into(), serde_json::json!(summary.by_family));
        extra.insert("by_dump".into(), serde_json::json!(summary.by_dump));
        extra.insert("planted_duplicates".into(), serde_json::json!(summary.planted_duplicates));
        let manifest = stage.finish(counts, summary.files.clone(), extra)?;
        Ok(serde_json::json!({
            "tool": TOOL,
            "output": args.output,
            "documents": summary.documents,
            "planted_duplicates": summary.planted_duplicates,
            "by_family": summary.by_family,
            "wall_seconds": manifest.wall_seconds,
        }))
    })
}
