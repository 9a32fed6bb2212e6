//! ds-scaling: the paper's scaling laws. `flops` (M, 6N1, 6N2, exact FLOPs of a config),
//! `plan-hparams` and `plan-isoflop` (sweeps as Makefile fragments of ds-pretrain runs),
//! `collect` (finished runs into one Parquet), `fit` (laws, intervals, predictions, plots) and
//! `synth` (runs drawn from known laws). The logic lives in `dsllm-scaling`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use dsllm_core::manifest::{Counts, Manifest, Stage, StageStart};
use dsllm_core::parquet_io::WrittenFile;
use dsllm_core::{cli, Error};
use dsllm_model::flops::{PowerLaw, ScalingLaws};
use dsllm_model::ModelConfig;
use dsllm_scaling::collect;
use dsllm_scaling::fit::{fit, FitSettings, Fits};
use dsllm_scaling::flops::{FlopsReport, Table3Row};
use dsllm_scaling::plan::{self, PlanSettings};
use dsllm_scaling::record::Metric;
use dsllm_scaling::shape::ShapeRule;
use dsllm_scaling::synthetic::{self, Truth};
use serde_json::json;

const TOOL: &str = "ds-scaling";

#[derive(Parser)]
#[command(name = "ds-scaling", version, about = "The paper's scaling laws: FLOPs, sweep plans, run collection, fits, predictions and plots")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// M = 72·n_layer·d_model² + 12·n_layer·d_model·l_seq, 6N1, 6N2 and their ratios to M (the
    /// paper's Table 3), parameter counts and exact matmul FLOPs of a config.
    Flops(FlopsArgs),
    /// A batch-size × learning-rate grid around Eq. 1 at each budget, as a Makefile fragment.
    PlanHparams(HparamArgs),
    /// IsoFLOP profiles: shapes whose M spans each budget's curve, D = C/M, as a Makefile fragment.
    PlanIsoflop(IsoflopArgs),
    /// Finished ds-pretrain runs into one Parquet table (one row a run).
    Collect(CollectArgs),
    /// Near-optimal sets, Eq. 1 and Eq. 4 laws, IsoFLOP minima, loss vs compute, bootstrap
    /// intervals, predictions: fits.json, fits.md and figures.
    Fit(FitArgs),
    /// Runs drawn from known laws with noise (to check the fits), as runs.parquet.
    Synth(SynthArgs),
}

#[derive(Args)]
struct FlopsArgs {
    /// Model configs (pipelines/configs/*.toml).
    #[arg(long, num_args = 1..)]
    config: Vec<PathBuf>,
    /// Sequence length l_seq (default: each config's max_position_embeddings).
    #[arg(long)]
    seq_len: Option<usize>,
    /// Vocabulary size for configs that take it from the tokenizer (vocab_size = 0).
    #[arg(long)]
    vocab: Option<usize>,
    /// Also print the paper's Table 3 (its seven idealised shapes).
    #[arg(long)]
    table3: bool,
}

/// Where the laws a plan centres on come from.
#[derive(Args, Clone)]
struct LawArgs {
    /// fits.json of `ds-scaling fit` (its "laws"); default: the paper's coefficients.
    #[arg(long)]
    laws: Option<PathBuf>,
    /// Sequence length of the data the runs train on.
    #[arg(long, default_value_t = 256)]
    seq_len: usize,
    /// Sequences per forward/backward pass; batches are whole micro-batches.
    #[arg(long, default_value_t = 8)]
    micro_batch: usize,
    /// Plan folder: plan.json, plan.mk, shapes/.
    #[arg(long, short)]
    output: PathBuf,
    /// Runs folder the Makefile fragment trains into (default: <output>/runs).
    #[arg(long)]
    runs: Option<PathBuf>,
}

impl LawArgs {
    fn settings(&self) -> Result<PlanSettings> {
        let laws = match &self.laws {
            Some(path) => Fits::read_laws(path)?,
            None => ScalingLaws::PAPER,
        };
        if self.micro_batch == 0 || self.seq_len == 0 {
            bail!("--micro-batch and --seq-len must be positive");
        }
        Ok(PlanSettings { laws, seq_len: self.seq_len, micro_batch: self.micro_batch })
    }
    fn runs_dir(&self) -> PathBuf {
        self.runs.clone().unwrap_or_else(|| self.output.join("runs"))
    }
}

#[derive(Args)]
struct HparamArgs {
    /// The model every run trains; with --m-factor a template (see plan-isoflop).
    #[arg(long)]
    config: PathBuf,
    /// Train, at each budget, the template's shape nearest m_factor · M_opt(C) instead of --config's.
    #[arg(long)]
    m_factor: Option<f64>,
    /// Compute budgets C in FLOPs (comma-separated or repeated).
    #[arg(long, value_delimiter = ',', num_args = 1.., required = true)]
    budget: Vec<f64>,
    /// Learning rates per budget, log-spaced around η_opt(C).
    #[arg(long, default_value_t = 5)]
    lr_points: usize,
    /// Ratio of the largest to the smallest learning rate.
    #[arg(long, default_value_t = 16.0)]
    lr_span: f64,
    /// Batch sizes per budget, log-spaced around B_opt(C).
    #[arg(long, default_value_t = 5)]
    batch_points: usize,
    #[arg(long, default_value_t = 16.0)]
    batch_span: f64,
    #[command(flatten)]
    common: LawArgs,
}

#[derive(Args)]
struct IsoflopArgs {
    /// Template config: shapes keep its head size, K/V grouping, FFN ratio and aspect d_model/n_layer.
    #[arg(long)]
    config: PathBuf,
    /// Compute budgets C in FLOPs (comma-separated or repeated).
    #[arg(long, value_delimiter = ',', num_args = 1.., required = true)]
    budgets: Vec<f64>,
    /// Model scales per budget.
    #[arg(long, default_value_t = 7)]
    points: usize,
    /// Ratio of the largest to the smallest M on each curve.
    #[arg(long, default_value_t = 16.0)]
    span: f64,
    /// The curves centre on m_factor · M_opt(C) (1: on the law).
    #[arg(long, default_value_t = 1.0)]
    m_factor: f64,
    #[command(flatten)]
    common: LawArgs,
}

#[derive(Args)]
struct CollectArgs {
    /// Run folders, or folders of run folders.
    #[arg(long, num_args = 1.., required = true)]
    runs: Vec<PathBuf>,
    /// The Parquet table to write (its manifest goes beside it: <name>.manifest.json).
    #[arg(long, short)]
    output: PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
enum MetricArg {
    /// Validation bits per byte when every run has it, else loss.
    Auto,
    Bpb,
    Loss,
}

#[derive(Args)]
struct FitArgs {
    /// runs.parquet of `ds-scaling collect` (or `synth`).
    #[arg(long)]
    runs: PathBuf,
    /// Output folder: fits.json, fits.md, fig*.png, _manifest.json.
    #[arg(long, short)]
    output: PathBuf,
    /// Budgets to predict the loss and the optimal allocation for (default: 10× the largest).
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    predict: Vec<f64>,
    #[arg(long, default_value_t = 1000)]
    bootstrap: usize,
    #[arg(long, default_value_t = 0.95)]
    confidence: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Relative margin of the near-optimal set (the paper's 0.25%).
    #[arg(long, default_value_t = 0.0025)]
    near_optimal: f64,
    #[arg(long, value_enum, default_value_t = MetricArg::Auto)]
    metric: MetricArg,
    /// Skip the figures.
    #[arg(long)]
    no_plots: bool,
    /// Refit even when the output is up to date.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct SynthArgs {
    #[arg(long, short)]
    output: PathBuf,
    #[arg(long, value_delimiter = ',', default_values_t = [1e17, 3e17, 1e18, 3e18, 1e19, 3e19])]
    budgets: Vec<f64>,
    /// Relative noise of each loss.
    #[arg(long, default_value_t = 0.002)]
    noise: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn flops(args: &FlopsArgs) -> Result<serde_json::Value> {
    let mut reports = Vec::new();
    for path in &args.config {
        let mut config = ModelConfig::from_toml_file(path)?;
        if let Some(v) = args.vocab {
            config.vocab_size = v;
        }
        if config.vocab_size == 0 {
            eprintln!("{TOOL}: {} takes its vocabulary from the tokenizer: N2 and exact FLOPs count no vocabulary (pass --vocab)", path.display());
        }
        let l_seq = args.seq_len.unwrap_or(config.max_position_embeddings);
        let report = FlopsReport::new(&config, l_seq);
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        eprint!("{}", report.markdown(&name));
        reports.push(json!({"config": path, "report": report}));
    }
    let mut summary = json!({"tool": TOOL, "models": reports});
    if args.table3 {
        let rows = Table3Row::paper_table();
        eprint!("\nThe paper's Table 3 (idealised shapes: N1 = 12·n_layer·d_model², N2 = N1 + n_vocab·d_model):\n{}", Table3Row::markdown(&rows));
        summary["table3"] = serde_json::to_value(rows)?;
    }
    Ok(summary)
}

fn command_line() -> String {
    std::env::args().map(|a| if a.contains(' ') { format!("'{a}'") } else { a }).collect::<Vec<_>>().join(" ")
}

fn plan_hparams(args: &HparamArgs) -> Result<serde_json::Value> {
    let settings = args.common.settings()?;
    let config = ModelConfig::from_toml_file(&args.config)?;
    let models: Vec<_> = args.budget.iter().map(|&c| plan::hparam_model(&settings, &config, &args.config, c, args.m_factor)).collect();
    let runs = plan::hparam_grid(&settings, &models, &args.budget, (args.lr_points, args.lr_span), (args.batch_points, args.batch_span))?;
    let mut shapes: Vec<(String, ModelConfig)> = Vec::new();
    if args.m_factor.is_some() {
        for (config, _) in &models {
            let name = dsllm_scaling::shape::shape_name(config);
            if !shapes.iter().any(|(n, _)| *n == name) {
                shapes.push((name, config.clone()));
            }
        }
    }
    let mut summary = plan::write_plan(&args.common.output, &args.common.runs_dir(), &runs, &shapes, &settings, &command_line())?;
    summary["tool"] = TOOL.into();
    Ok(summary)
}

fn plan_isoflop(args: &IsoflopArgs) -> Result<serde_json::Value> {
    let settings = args.common.settings()?;
    let template = ModelConfig::from_toml_file(&args.config)?;
    let rule = ShapeRule::from_template(&template);
    let (runs, shapes) = plan::isoflop(&settings, &rule, &args.budgets, args.points, args.span, args.m_factor)?;
    for run in &runs {
        eprintln!("{TOOL}: C {:.2e}  {:>10}  M {:.3e}  D {:>9.0}  B {:>6.0}  lr {:.3e}", run.budget, run.name.rsplit('-').take(2).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("-"), run.m, run.tokens, run.batch_tokens, run.lr);
    }
    let mut summary = plan::write_plan(&args.common.output, &args.common.runs_dir(), &runs, &shapes, &settings, &command_line())?;
    summary["tool"] = TOOL.into();
    Ok(summary)
}

/// `runs.parquet` → `runs.manifest.json`.
fn sidecar_manifest(path: &Path) -> PathBuf {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "runs".into());
    path.with_file_name(format!("{stem}.manifest.json"))
}

fn collect_runs(args: &CollectArgs) -> Result<serde_json::Value> {
    let started = std::time::Instant::now();
    let dirs = collect::find_runs(&args.runs)?;
    let (records, counts) = collect::collect(&dirs)?;
    if records.is_empty() {
        bail!("no finished run with a final validation among {} folder(s) under {:?}", dirs.len(), args.runs);
    }
    let written = collect::write_parquet(&records, &args.output)?;
    let inputs = dirs.iter().map(|d| dsllm_core::manifest::InputFile::hash(d.join(collect::METRICS_FILE))).collect::<dsllm_core::Result<Vec<_>>>()?;
    let manifest = Manifest {
        tool: TOOL.into(),
        version: dsllm_core::VERSION.into(),
        task: Default::default(),
        parameters: json!({"command": "collect", "runs": args.runs}),
        inputs,
        outputs: vec![written],
        counts: counts.clone(),
        extra: Default::default(),
        started_unix: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        wall_seconds: started.elapsed().as_secs_f64(),
    };
    manifest.write(sidecar_manifest(&args.output))?;
    Ok(json!({"tool": TOOL, "output": args.output, "runs_found": counts.read, "collected": counts.kept, "skipped": counts.quarantined, "skipped_by_reason": counts.quarantined_by_reason}))
}

fn fit_runs(args: &FitArgs) -> Result<serde_json::Value> {
    let parameters = json!({"command": "fit", "predict": args.predict, "bootstrap": args.bootstrap, "confidence": args.confidence, "seed": args.seed,
        "near_optimal": args.near_optimal, "metric": format!("{:?}", args.metric as u8), "plots": !args.no_plots});
    let stage = match Stage::begin(TOOL, &args.output, parameters, std::slice::from_ref(&args.runs), Default::default(), args.force)? {
        StageStart::UpToDate(m) => return Ok(json!({"tool": TOOL, "output": args.output, "up_to_date": true, "outputs": m.outputs.len()})),
        StageStart::Run(stage) => stage,
    };
    let runs = collect::read_parquet(&args.runs)?;
    let largest = runs.iter().map(|r| r.budget).fold(0.0, f64::max);
    let predict = if args.predict.is_empty() { vec![largest * 10.0] } else { args.predict.clone() };
    let settings = FitSettings {
        near_optimal: args.near_optimal,
        bootstrap: args.bootstrap,
        confidence: args.confidence,
        seed: args.seed,
        predict,
        metric: match args.metric {
            MetricArg::Auto => None,
            MetricArg::Bpb => Some(Metric::ValBitsPerByte),
            MetricArg::Loss => Some(Metric::ValLoss),
        },
        ..FitSettings::default()
    };
    let fits = fit(&runs, &settings);
    let mut counts = Counts::default();
    for run in &runs {
        if settings.metric.unwrap_or(fits.metric).of(run).is_finite() {
            counts.keep();
        } else {
            counts.quarantine("no_metric");
        }
    }
    let mut outputs = Vec::new();
    let json_path = args.output.join("fits.json");
    dsllm_core::atomic::write_file(&json_path, serde_json::to_string_pretty(&fits)?.as_bytes())?;
    let md_path = args.output.join("fits.md");
    dsllm_core::atomic::write_file(&md_path, fits.markdown().as_bytes())?;
    let mut files = vec![json_path, md_path];
    if !args.no_plots {
        files.extend(dsllm_scaling::plots::figures(&runs, &fits, &args.output)?);
    }
    for path in &files {
        outputs.push(WrittenFile { path: path.clone(), rows: 0, bytes: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) });
    }
    eprint!("{}", fits.markdown());
    stage.finish(counts, outputs, Default::default())?;
    let exponent = |l: Option<dsllm_scaling::LawFit>| l.map(|l| json!({"exponent": l.exponent, "ci": l.exponent_ci, "coefficient": l.coefficient}));
    Ok(json!({
        "tool": TOOL,
        "output": args.output,
        "runs": fits.runs,
        "metric": fits.metric,
        "lr": exponent(fits.lr),
        "batch_tokens": exponent(fits.batch_tokens),
        "model_scale": exponent(fits.model_scale),
        "data_tokens": exponent(fits.data_tokens),
        "loss": exponent(fits.loss),
        "files": files,
    }))
}

fn synth(args: &SynthArgs) -> Result<serde_json::Value> {
    // A truth unlike the paper's, so a fit that returned the paper's laws would be caught.
    let truth = Truth {
        laws: ScalingLaws { lr: PowerLaw::new(0.5, -0.14), batch_tokens: PowerLaw::new(0.2, 0.34), model_scale: PowerLaw::new(0.09, 0.55), data_tokens: PowerLaw::new(1.0 / 0.09, 0.45) },
        loss: PowerLaw::new(12.0, -0.045),
        curvature_m: 0.02,
        curvature_lr: 0.01,
        curvature_batch: 0.006,
        noise: args.noise,
    };
    let mut runs = synthetic::isoflop_runs(&truth, &args.budgets, 9, 30.0, 1.3, args.seed);
    runs.extend(synthetic::hparam_runs(&truth, &args.budgets, (7, 30.0), (7, 30.0), 1.3, args.seed + 1));
    collect::write_parquet(&runs, &args.output)?;
    Ok(json!({"tool": TOOL, "output": args.output, "runs": runs.len(), "truth": {"laws": truth.laws, "loss": truth.loss}}))
}

fn main() {
    let args = Cli::parse();
    cli::run_main(TOOL, || {
        // Flags and configs that cannot make a plan are usage errors (exit 2); failures on runs
        // and tables are runtime errors (exit 1) naming the file.
        let runtime = |e: anyhow::Error, path: &Path| match e.downcast::<Error>() {
            Ok(core) => core,
            Err(e) => Error::input(path, None, format!("{e:#}")),
        };
        let usage = |e: anyhow::Error| Error::Usage(format!("{e:#}"));
        match &args.command {
            Command::Flops(a) => flops(a).map_err(usage),
            Command::PlanHparams(a) => plan_hparams(a).map_err(usage),
            Command::PlanIsoflop(a) => plan_isoflop(a).map_err(usage),
            Command::Collect(a) => collect_runs(a).map_err(|e| runtime(e, &a.output)),
            Command::Fit(a) => fit_runs(a).map_err(|e| runtime(e, &a.runs)),
            Command::Synth(a) => synth(a).map_err(|e| runtime(e, &a.output)),
        }
    })
}
