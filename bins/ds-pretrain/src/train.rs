//! `ds-pretrain train`: the wiring of shards, tokenizer, model config, backend, trainer,
//! validation, metrics, checkpoints and the loss curve.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use dsllm_core::progress;
use dsllm_cuda::{nccl_unavailable_reason, CudaBackend, NcclCollective};
use dsllm_model::checkpoint::LATEST_FILE;
use dsllm_model::dist::{Collective, SingleProcess, TcpCollective, World};
use dsllm_model::flops::{self, ScalingLaws};
use dsllm_model::schedule::PAPER_WARMUP_STEPS;
use dsllm_model::{
    checkpoint_name, evaluated_text_bytes, latest_checkpoint, token_text_bytes, Backend, CheckpointWriter, CpuBackend,
    LrSchedule, MetricsWriter, ModelConfig, ShardSource, Trainer, TrainerConfig,
};
use dsllm_scaling::budget::{plan_budget, BudgetPlan};
use dsllm_scaling::fit::Fits;
use dsllm_tokens::tokenizer::{DSLLM_TOKENIZER_CONFIG_FILE, HF_TOKENIZER_CONFIG_FILE, TOKENIZER_FILE};
use dsllm_tokens::{DsTokenizer, TokenShards};
use serde_json::json;

use crate::{choose_backend_for, plot, usage, BackendKind, ChosenBackend, TOOL};

pub const METRICS_FILE: &str = "metrics.jsonl";
pub const LOSS_CURVE_FILE: &str = "loss.png";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScheduleKind {
    /// The paper's: warmup, 100% of the peak until 80% of the tokens, 31.6% until 90%, 10% after.
    Multistep,
    /// Warmup, then cosine decay to --min-lr-ratio of the peak.
    Cosine,
}

/// How the hyperparameters left out are derived (shown by `ds-pretrain train --help`).
pub const DERIVED_HYPERPARAMETERS: &str = "\
Hyperparameters left out are derived:
  model shape    with --budget C: the shape whose M is nearest M_opt = 0.1715*C^0.5243, in the
                 proportions of --config (head size, K/V groups, FFN ratio, d_model/n_layer);
                 --keep-shape trains --config's shape as it is
  batch size B   --batch-tokens; else B_opt = 0.2920*C^0.3271 tokens with --budget C; else one
                 micro-batch a process (no gradient accumulation); with N processes (torchrun,
                 srun) the micro-batches a step are rounded to a multiple of N
  length         --steps; else --tokens; else D = C/M tokens with --budget; else one pass over
                 the train split
  peak LR        --lr; else eta_opt = 0.3118*C^-0.125 at this run's budget (--budget C, or C = M*D)
  laws           --laws FITS.json (from ds-scaling fit) replaces the paper's coefficients above
  warmup         --warmup; else min(2000, 10% of the steps): the paper's 2000 steps would be
                 the whole of a short run
  schedule       the paper's multi-step: 100% of the peak until 80% of the tokens, 31.6% until
                 90%, 10% after; AdamW beta1 0.9, beta2 0.95, weight decay 0.1, clip 1.0";

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Model config (pipelines/configs/*.toml); vocab_size 0 takes the tokenizer's padded vocabulary.
    #[arg(long)]
    pub config: PathBuf,
    /// ds-pack's output folder (index.json, train/, val/).
    #[arg(long)]
    pub data: PathBuf,
    /// Run folder: ckpt-<step>/, latest, metrics.jsonl, loss.png.
    #[arg(long, short)]
    pub output: PathBuf,
    /// Tokenizer folder (tokenizer.json, dsllm_tokenizer.json); default: the first of DATA,
    /// DATA/tokenizer, DATA/../tokenizer that holds one. Used for bits per byte and copied into
    /// checkpoints.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Optimizer steps to train for.
    #[arg(long, conflicts_with = "tokens")]
    pub steps: Option<u64>,
    /// Tokens to train for (rounded up to whole steps).
    #[arg(long)]
    pub tokens: Option<f64>,
    /// Batch size B in tokens per optimizer step, over all data-parallel processes (rounded to
    /// whole micro-batches, a multiple of the number of processes; default one micro-batch a
    /// process).
    #[arg(long)]
    pub batch_tokens: Option<f64>,
    /// Sequences per forward/backward pass; larger batches accumulate gradients over several.
    #[arg(long, default_value_t = 8)]
    pub micro_batch: usize,
    /// Peak learning rate η.
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long, value_enum, default_value_t = ScheduleKind::Multistep)]
    pub schedule: ScheduleKind,
    /// Warmup steps.
    #[arg(long)]
    pub warmup: Option<u64>,
    /// Cosine schedule only: the final learning rate as a fraction of the peak.
    #[arg(long, default_value_t = 0.1)]
    pub min_lr_ratio: f64,
    /// Compute budget C in FLOPs (C = M·D): model shape, tokens, batch size and peak LR from
    /// the scaling laws (the paper's, or --laws).
    #[arg(long)]
    pub budget: Option<f64>,
    /// With --budget: train --config's shape instead of the one the laws choose.
    #[arg(long, requires = "budget")]
    pub keep_shape: bool,
    /// With --budget: the laws of a fits.json written by `ds-scaling fit` instead of the paper's.
    #[arg(long, requires = "budget")]
    pub laws: Option<PathBuf>,
    /// Validation every N steps (and at the end); 0: only at the end.
    #[arg(long, default_value_t = 100)]
    pub eval_every: u64,
    /// Micro-batches of the val split per validation (the same ones every time).
    #[arg(long, default_value_t = 16)]
    pub eval_batches: usize,
    /// Checkpoint every N steps (and at the end); 0: only at the end and by --save-minutes.
    #[arg(long, default_value_t = 1000)]
    pub save_every: u64,
    /// Checkpoint also when this many minutes passed since the last one; 0: never by time.
    #[arg(long, default_value_t = 30.0)]
    pub save_minutes: f64,
    /// Seeds the weights and the order of the training sequences.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker threads of the CPU backend (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long, value_enum, default_value_t = BackendKind::Auto)]
    pub backend: BackendKind,
    /// Continue from the run folder's latest checkpoint, exactly (the checkpoint's
    /// hyperparameters and data position); starts afresh if it has none yet.
    #[arg(long)]
    pub resume: bool,
}

/// Everything read before a backend exists.
struct Setup<'a> {
    args: &'a TrainArgs,
    model_config: ModelConfig,
    train: TokenShards,
    val: Option<TokenShards>,
    tokenizer: Option<(PathBuf, DsTokenizer)>,
    seq_len: usize,
    m: f64,
    budget_plan: Option<BudgetPlan>,
    /// Data-parallel processes: a step's micro-batches are a multiple of it.
    world_size: usize,
}

pub fn run(args: &TrainArgs) -> Result<serde_json::Value> {
    let started = Instant::now();
    // One process per GPU under torchrun or srun: their variables say which this is.
    let world = World::from_env()?;
    let metrics_path = args.output.join(METRICS_FILE);
    if !args.resume && (metrics_path.exists() || args.output.join(LATEST_FILE).exists()) {
        usage!("{} already holds a run: pass --resume to continue it, or choose another --output", args.output.display());
    }
    if args.micro_batch == 0 {
        usage!("--micro-batch must be at least 1");
    }

    let train = TokenShards::open(&args.data, "train")
        .with_context(|| format!("cannot open the train split of {} (ds-pack's output folder, with index.json)", args.data.display()))?;
    let index = train.index().clone();
    let val = match index.splits.get("val") {
        Some(split) if split.sequences as usize >= args.micro_batch => Some(TokenShards::open(&args.data, "val")?),
        _ => {
            eprintln!("{TOOL}: no validation: the val split of {} holds fewer than --micro-batch {} sequences", args.data.display(), args.micro_batch);
            None
        }
    };
    let tokenizer = find_tokenizer(args, &index.tokenizer_hash)?;

    let mut model_config = ModelConfig::from_toml_file(&args.config)?;
    if model_config.vocab_size == 0 {
        model_config.vocab_size = index.model_vocab_size as usize;
    } else if model_config.vocab_size < index.vocab_size as usize {
        usage!(
            "{} has vocab_size {}, but the tokenizer of {} produces ids up to {}: set vocab_size = 0 to take it from the tokenizer",
            args.config.display(),
            model_config.vocab_size,
            args.data.display(),
            index.vocab_size - 1
        );
    }
    model_config.eos_token_id = Some(index.eos_id);
    model_config.bos_token_id = tokenizer.as_ref().map(|(_, t)| t.config().bos_id);
    let seq_len = index.sequence_length as usize;
    let laws = match &args.laws {
        Some(path) => Fits::read_laws(path)?,
        None => ScalingLaws::PAPER,
    };
    let budget_plan = args.budget.map(|c| plan_budget(&laws, c, &model_config, args.keep_shape, seq_len, args.micro_batch));
    if let Some(plan) = &budget_plan {
        eprintln!(
            "{TOOL}: budget C {:.3e} ({}): shape {} (M {:.4e}; M_opt {:.4e}), D = C/M {:.4e} tokens (D_opt {:.4e}), B_opt {:.0} tokens, peak LR {:.4e}",
            plan.budget,
            args.laws.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "the paper's laws".into()),
            plan.shape,
            plan.m,
            plan.m_opt,
            plan.tokens,
            plan.d_opt,
            plan.batch.optimal_batch_tokens,
            plan.batch.peak_lr
        );
        model_config = plan.config.clone();
    }
    if seq_len > model_config.max_position_embeddings {
        usage!(
            "the shards hold sequences of {seq_len} tokens, longer than the model's max_position_embeddings {} in {}",
            model_config.max_position_embeddings,
            args.config.display()
        );
    }
    let m = flops::model_scale_m(&model_config, seq_len);
    eprintln!(
        "{TOOL}: model {}: {:.2}M parameters ({:.2}M non-embedding); FLOPs per token: 6N1 {:.4e}, 6N2 {:.4e}, M {:.4e} (l_seq {seq_len})",
        args.config.display(),
        flops::parameter_count(&model_config) as f64 / 1e6,
        flops::non_embedding_parameter_count(&model_config) as f64 / 1e6,
        flops::six_n1(&model_config),
        flops::six_n2(&model_config),
        m
    );
    let setup = Setup { args, model_config, train, val, tokenizer, seq_len, m, budget_plan, world_size: world.world_size };
    let summary = match choose_backend_for(args.backend, Some(setup.model_config.head_dim()), &world)? {
        ChosenBackend::Cpu { reason } => {
            let collective: Box<dyn Collective<CpuBackend>> = match world.world_size {
                1 => Box::new(SingleProcess::default()),
                _ => Box::new(TcpCollective::connect(world.clone()).context("cannot join the data-parallel run")?),
            };
            train_on(CpuBackend, collective, &setup, ("cpu", reason))?
        }
        ChosenBackend::Cuda { backend, reason } => {
            let collective: Box<dyn Collective<CudaBackend>> = match (world.world_size, nccl_unavailable_reason()) {
                (1, _) => Box::new(SingleProcess::default()),
                (_, None) => Box::new(NcclCollective::connect(world.clone(), &backend).context("cannot join the data-parallel run")?),
                (_, Some(why)) => {
                    eprintln!("{TOOL}: warning: gradients go through TCP on the host, much slower than NCCL: {why}");
                    Box::new(TcpCollective::connect(world.clone()).context("cannot join the data-parallel run")?)
                }
            };
            train_on(*backend, collective, &setup, ("cuda", reason))?
        }
    };
    let mut summary = summary;
    summary["wall_seconds"] = started.elapsed().as_secs_f64().into();
    Ok(summary)
}

/// The tokenizer the shards were packed with: `--tokenizer`, or the first candidate folder
/// holding one. Its hash must be index.json's.
fn find_tokenizer(args: &TrainArgs, expected_hash: &str) -> Result<Option<(PathBuf, DsTokenizer)>> {
    let candidates: Vec<PathBuf> = match &args.tokenizer {
        Some(dir) => vec![dir.clone()],
        None => vec![args.data.clone(), args.data.join("tokenizer"), args.data.join("../tokenizer")],
    };
    let Some(dir) = candidates.iter().find(|d| d.join(TOKENIZER_FILE).exists()) else {
        if let Some(dir) = &args.tokenizer {
            usage!("{} holds no {TOKENIZER_FILE}", dir.display());
        }
        eprintln!(
            "{TOOL}: no tokenizer found in {}: validation reports no bits per byte and checkpoints hold no tokenizer files (pass --tokenizer)",
            candidates.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
        );
        return Ok(None);
    };
    let tokenizer = DsTokenizer::load(dir).with_context(|| format!("cannot load the tokenizer in {}", dir.display()))?;
    let hash = format!("{:016x}", tokenizer.hash());
    if hash != expected_hash {
        usage!(
            "the tokenizer in {} (hash {hash}) is not the one the shards were packed with (index.json says {expected_hash})",
            dir.display()
        );
    }
    Ok(Some((dir.clone(), tokenizer)))
}

/// Batch size, length, peak LR and schedule of a fresh run.
fn plan(setup: &Setup) -> Result<(TrainerConfig, serde_json::Value)> {
    let args = setup.args;
    let (seq_len, micro) = (setup.seq_len, args.micro_batch);
    let micro_tokens = (seq_len * micro) as f64;
    let budget_plan = setup.budget_plan.as_ref().map(|p| p.batch);
    let asked = match (args.batch_tokens, &budget_plan) {
        (Some(b), _) => ((b / micro_tokens).round() as usize).max(1),
        (None, Some(plan)) => plan.grad_accum_steps,
        (None, None) => 1,
    };
    // Every rank runs the same number of micro-batches: the nearest multiple of the world size.
    let world = setup.world_size;
    let grad_accum_steps = ((asked as f64 / world as f64).round() as usize).max(1) * world;
    if grad_accum_steps != asked && (args.batch_tokens.is_some() || budget_plan.is_some()) {
        eprintln!("{TOOL}: {asked} micro-batches a step rounded to {grad_accum_steps}, a multiple of the {world} processes");
    }
    let tokens_per_step = (seq_len * micro * grad_accum_steps) as u64;
    let total_steps = match (args.steps, args.tokens, args.budget) {
        (Some(steps), _, _) => steps,
        (None, Some(tokens), _) => (tokens / tokens_per_step as f64).ceil() as u64,
        (None, None, Some(c)) => (c / setup.m / tokens_per_step as f64).ceil() as u64,
        (None, None, None) => setup.train.sequence_count() * seq_len as u64 / tokens_per_step,
    };
    if total_steps == 0 {
        usage!("this run would train for 0 steps of {tokens_per_step} tokens");
    }
    let tokens_d = (total_steps * tokens_per_step) as f64;
    let compute_c = args.budget.unwrap_or(setup.m * tokens_d);
    let peak_lr = args.lr.or(budget_plan.map(|p| p.peak_lr)).unwrap_or_else(|| flops::optimal_peak_lr(compute_c));
    let warmup_steps = args.warmup.unwrap_or_else(|| PAPER_WARMUP_STEPS.min(total_steps / 10));
    let schedule = match args.schedule {
        ScheduleKind::Multistep => LrSchedule::MultiStep { peak_lr, warmup_steps, total_steps },
        ScheduleKind::Cosine => LrSchedule::Cosine { peak_lr, warmup_steps, total_steps, min_lr_ratio: args.min_lr_ratio },
    };
    let config = TrainerConfig { seq_len, micro_batch_size: micro, grad_accum_steps, schedule, optimizer: Default::default(), seed: args.seed };
    let description = json!({
        "steps": total_steps,
        "tokens_per_step": tokens_per_step,
        "grad_accum_steps": grad_accum_steps,
        "tokens_d": tokens_d,
        "compute_c": compute_c,
        "peak_lr": peak_lr,
        "peak_lr_from": if args.lr.is_some() { "--lr" } else { "eta_opt(C)" },
        "warmup_steps": warmup_steps,
        "optimal_batch_tokens": budget_plan.map(|p| p.optimal_batch_tokens),
    });
    Ok((config, description))
}

fn schedule_total_steps(schedule: &LrSchedule) -> u64 {
    match *schedule {
        LrSchedule::MultiStep { total_steps, .. } | LrSchedule::Cosine { total_steps, .. } => total_steps,
    }
}

fn train_on<B: Backend>(
    backend: B,
    collective: Box<dyn Collective<B>>,
    setup: &Setup,
    (backend_name, backend_reason): (&str, String),
) -> Result<serde_json::Value> {
    let args = setup.args;
    let world = collective.world().clone();
    // Rank 0 writes the run folder and reports; every rank trains, validates and takes part in
    // checkpoints (the optimizer state is sharded).
    let main = world.is_main();
    let mut source = ShardSource::training(&setup.train, args.seed)?;
    let resume_from = if args.resume { latest_checkpoint(&args.output)? } else { None };
    let mut trainer = match &resume_from {
        Some(dir) => {
            let trainer = Trainer::resume_distributed(backend, dir, &mut source, collective).with_context(|| format!("cannot resume from {}", dir.display()))?;
            if trainer.model.config.vocab_size != setup.model_config.vocab_size || trainer.config.seq_len != setup.seq_len {
                bail!(
                    "{} was trained with vocabulary {} and sequences of {}; these shards need {} and {}",
                    dir.display(),
                    trainer.model.config.vocab_size,
                    trainer.config.seq_len,
                    setup.model_config.vocab_size,
                    setup.seq_len
                );
            }
            eprintln!(
                "{TOOL}: resuming {} at step {} ({} tokens seen) with its recorded hyperparameters",
                dir.display(),
                trainer.state.step,
                trainer.state.tokens_seen
            );
            trainer
        }
        None => {
            if args.resume {
                eprintln!("{TOOL}: {} has no checkpoint yet: starting afresh", args.output.display());
            }
            let (config, description) = plan(setup)?;
            if main {
                eprintln!("{TOOL}: plan {description}");
            }
            Trainer::new_distributed(backend, setup.model_config.clone(), config, collective)?
        }
    };
    let total_steps = schedule_total_steps(&trainer.config.schedule);
    let tokens_per_step = trainer.config.tokens_per_step() as u64;
    let micro = trainer.config.micro_batch_size;

    let metrics_path = args.output.join(METRICS_FILE);
    let png_path = args.output.join(LOSS_CURVE_FILE);
    let mut metrics = if main {
        std::fs::create_dir_all(&args.output).with_context(|| format!("cannot create {}", args.output.display()))?;
        if resume_from.is_none() && metrics_path.exists() {
            // --resume of a run killed before its first checkpoint: nothing of it is kept.
            std::fs::remove_file(&metrics_path).with_context(|| format!("cannot remove {}", metrics_path.display()))?;
        }
        Some(MetricsWriter::resume(&metrics_path, trainer.state.step)?)
    } else {
        None
    };
    if let (None, Some(metrics)) = (&resume_from, &mut metrics) {
        metrics.write(&json!({
            "step": 0,
            "run": {
                "model": trainer.model.config,
                "trainer": trainer.config,
                "parameters": flops::parameter_count(&trainer.model.config),
                "m": setup.m,
                "six_n1": flops::six_n1(&trainer.model.config),
                "six_n2": flops::six_n2(&trainer.model.config),
                "data": args.data,
                "backend": backend_name,
                "world_size": world.world_size,
                "launcher": world.launcher,
                "budget": args.budget,
            }
        }))?;
    }

    // Validation reads the same sequences every time; their text bytes are counted once.
    let val_micro_batches = setup.val.as_ref().map(|v| (v.sequence_count() as usize / micro).min(args.eval_batches)).filter(|&n| n > 0);
    let val_bytes = match (&setup.val, &setup.tokenizer, val_micro_batches) {
        (Some(val), Some((_, tokenizer)), Some(batches)) => {
            Some(evaluated_text_bytes(&mut ShardSource::single_pass(val)?, micro, Some(batches), &token_text_bytes(tokenizer))?)
        }
        _ => None,
    };
    let tokenizer_files: Vec<PathBuf> = match &setup.tokenizer {
        Some((dir, _)) => [TOKENIZER_FILE, HF_TOKENIZER_CONFIG_FILE, DSLLM_TOKENIZER_CONFIG_FILE].iter().map(|f| dir.join(f)).filter(|p| p.exists()).collect(),
        None => Vec::new(),
    };

    let bar = if main { progress::bar(total_steps * tokens_per_step, "train", "tokens") } else { progress::ProgressBar::hidden() };
    bar.set_position(trainer.state.tokens_seen);
    bar.reset_eta();
    let mut writer = CheckpointWriter::new();
    let mut last_save = Instant::now();
    let first_step = trainer.state.step;
    let run_started = Instant::now();
    let (mut last_loss, mut last_eval) = (None, None);
    let mut saved_at = None;

    while trainer.state.step < total_steps {
        let step = trainer.train_step(&mut source)?;
        if !step.loss.is_finite() {
            bail!("the training loss is {} at step {}: lower the learning rate (--lr) or check the data", step.loss, step.step);
        }
        if let Some(metrics) = &mut metrics {
            metrics.write(&step)?;
        }
        last_loss = Some(step.loss);
        bar.set_position(step.tokens_seen);
        bar.set_message(format!("loss {:.3}", step.loss));
        let last = step.step == total_steps;

        if (last || (args.eval_every > 0 && step.step % args.eval_every == 0)) && val_micro_batches.is_some() {
            let val = setup.val.as_ref().expect("validation shards");
            let eval = trainer.evaluate(&mut ShardSource::single_pass(val)?, val_micro_batches, val_bytes)?;
            if let Some(metrics) = &mut metrics {
                metrics.write(&json!({
                    "step": step.step,
                    "tokens_seen": step.tokens_seen,
                    "val_loss": eval.loss,
                    "val_tokens": eval.tokens,
                    "val_bits_per_byte": eval.bits_per_byte,
                }))?;
            }
            last_eval = Some(eval);
            let bpb = eval.bits_per_byte.map(|b| format!("  val bpb {b:.4}")).unwrap_or_default();
            if main {
                bar.suspend(|| {
                    eprintln!(
                        "step {:>6}/{total_steps}  tokens {:>10}  loss {:.4}  val {:.4}{bpb}  lr {:.3e}  |g| {:.3}  {:.0} tok/s",
                        step.step, step.tokens_seen, step.loss, eval.loss, step.lr, step.grad_norm, step.tokens_per_second
                    )
                });
            }
        }

        let by_steps = args.save_every > 0 && step.step % args.save_every == 0;
        let mut by_time = [(args.save_minutes > 0.0 && last_save.elapsed().as_secs_f64() >= args.save_minutes * 60.0) as u8 as f64];
        if world.world_size > 1 {
            // Every rank must take part in a checkpoint: any rank's clock asks for all.
            trainer.all_reduce_host(&mut by_time)?;
        }
        if last || by_steps || by_time[0] > 0.0 {
            if let Some(data) = trainer.gather_checkpoint(tokenizer_files.clone())? {
                writer.save(&args.output, &checkpoint_name(step.step), data)?;
                plot_or_warn(&metrics_path, &png_path, &bar);
            }
            last_save = Instant::now();
            saved_at = Some(step.step);
        }
    }
    writer.wait()?;
    bar.finish_and_clear();
    if main {
        plot_or_warn(&metrics_path, &png_path, &bar);
    }

    let trained_steps = trainer.state.step - first_step;
    let seconds = run_started.elapsed().as_secs_f64();
    Ok(json!({
        "tool": TOOL,
        "output": args.output,
        "backend": backend_name,
        "backend_reason": backend_reason,
        "rank": world.rank,
        "world_size": world.world_size,
        "resumed_from_step": resume_from.as_ref().map(|_| first_step),
        "steps": trainer.state.step,
        "tokens_seen": trainer.state.tokens_seen,
        "tokens_per_step": tokens_per_step,
        "train_loss": last_loss,
        "val_loss": last_eval.map(|e| e.loss),
        "val_bits_per_byte": last_eval.and_then(|e| e.bits_per_byte),
        "tokens_per_second": if seconds > 0.0 { (trained_steps * tokens_per_step) as f64 / seconds } else { 0.0 },
        "checkpoint": saved_at.map(|s| args.output.join(checkpoint_name(s))),
        "metrics": metrics_path,
        "loss_curve": png_path,
        "parameters": flops::parameter_count(&trainer.model.config),
        "flops_per_token": { "six_n1": flops::six_n1(&trainer.model.config), "six_n2": flops::six_n2(&trainer.model.config), "m": setup.m },
    }))
}

/// The loss curve is a convenience: failing to draw it is reported, never fatal.
fn plot_or_warn(metrics: &Path, png: &Path, bar: &progress::ProgressBar) {
    if let Err(error) = plot::loss_curve(metrics, png) {
        bar.suspend(|| eprintln!("{TOOL}: warning: no loss curve: {error:#}"));
    }
}
