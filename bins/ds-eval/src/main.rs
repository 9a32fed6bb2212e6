//! ds-eval: evaluates a checkpoint on task files (`run`), and writes a random-init checkpoint
//! for chance baselines, fixtures and benchmarks (`random-model`). The logic is in shared/eval.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use dsllm_core::manifest::{Counts, Stage, StageStart};
use dsllm_core::parquet_io::WrittenFile;
use dsllm_core::{atomic, cli, inputs::TaskSlice, progress, Error};
use dsllm_cuda::{gpu_unavailable_reason, open_gpu as open_cuda, CudaBackend, Precision};
use dsllm_eval::{load_task_dir, run_task, EvalReport, EvalTokenizer, Evaluator, RunContext, ScoringMode, TaskSpec};
use dsllm_model::{latest_checkpoint, load_hf_model, Backend, CpuBackend, Llama, ModelConfig};

const TOOL: &str = "ds-eval";

#[derive(Parser)]
#[command(version, about = "Evaluates a LLaMA-format checkpoint on benchmark tasks, as the DeepSeek LLM paper reports them")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Evaluate a checkpoint on tasks; writes results.json, results.md and _manifest.json.
    Run(RunArgs),
    /// Write a randomly initialised checkpoint (config.json, model.safetensors, tokenizer files).
    RandomModel(RandomModelArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum BackendKind {
    /// CUDA when a GPU is usable, else CPU (the reason is printed).
    Auto,
    Cpu,
    Cuda,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum GpuPrecision {
    /// fp32 products and attention: log-likelihoods within 1e-6 per token of an fp32 reference
    /// (transformers' default dtype).
    Fp32,
    /// bf16 products on the tensor cores, as training runs: faster, ~1e-2 per token.
    Bf16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scoring {
    /// Each item's context runs once into a KV cache shared by its choices.
    Prefix,
    /// One forward over context + continuation per choice (lm-eval's way).
    Full,
}

#[derive(clap::Args)]
struct RunArgs {
    /// A checkpoint folder (Hugging Face LlamaForCausalLM safetensors), or a ds-pretrain run
    /// folder (its `latest` checkpoint is used).
    #[arg(long)]
    model: PathBuf,
    /// Folder with tokenizer.json (default: the checkpoint folder).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Task files (.toml) or folders of them.
    #[arg(long, num_args = 0.., default_value = "pipelines/eval/tasks")]
    tasks: Vec<PathBuf>,
    /// Where task files' relative data paths start.
    #[arg(long, default_value = "../shared/data")]
    data_root: PathBuf,
    /// Held-out text for bits per byte (the paper's Pile-test metric): a .txt or .jsonl file
    /// (optionally .gz) or a ds-pack token folder (its `val` split). Adds a task `heldout_bpb`.
    #[arg(long)]
    heldout: Option<PathBuf>,
    #[arg(long)]
    output: PathBuf,
    #[arg(long, value_enum, default_value_t = BackendKind::Auto)]
    backend: BackendKind,
    /// The arithmetic of the CUDA backend (the CPU backend is always fp32).
    #[arg(long, value_enum, default_value_t = GpuPrecision::Fp32)]
    precision: GpuPrecision,
    /// How multiple-choice continuations share their context.
    #[arg(long, value_enum, default_value_t = Scoring::Prefix)]
    scoring: Scoring,
    /// Tokens per forward pass.
    #[arg(long, default_value_t = 2048)]
    batch_tokens: usize,
    /// Prompts decoded together.
    #[arg(long, default_value_t = 16)]
    generation_batch: usize,
    /// At most this many items per task (overrides the task files' `limit`).
    #[arg(long)]
    limit: Option<usize>,
    /// Worker threads of the CPU backend (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Rerun even when the output's manifest matches.
    #[arg(long)]
    force: bool,
}

#[derive(clap::Args)]
struct RandomModelArgs {
    /// Model config (pipelines/configs/*.toml); vocab_size 0 takes the tokenizer's.
    #[arg(long)]
    config: PathBuf,
    /// Tokenizer folder; its files are copied into the checkpoint.
    #[arg(long)]
    tokenizer: PathBuf,
    #[arg(long)]
    output: PathBuf,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn main() {
    let args = Args::parse();
    cli::run_main(TOOL, || {
        let (threads, path) = match &args.command {
            Command::Run(a) => (a.threads, a.output.clone()),
            Command::RandomModel(a) => (None, a.output.clone()),
        };
        cli::init_threads(threads)?;
        let result = match &args.command {
            Command::Run(a) => run(a),
            Command::RandomModel(a) => random_model(a),
        };
        result.map_err(|e| Error::input(&path, None, format!("{e:#}")))
    })
}

/// The checkpoint folder `path` names: itself, or a run folder's latest checkpoint.
fn checkpoint_dir(path: &Path) -> Result<PathBuf> {
    if path.join("config.json").exists() {
        return Ok(path.to_path_buf());
    }
    latest_checkpoint(path)?.with_context(|| format!("{} is neither a checkpoint (no config.json) nor a run folder with a checkpoint", path.display()))
}

fn task_files(paths: &[PathBuf]) -> Result<Vec<(PathBuf, TaskSpec)>> {
    let mut specs = Vec::new();
    for path in paths {
        if path.is_dir() {
            specs.extend(load_task_dir(path)?);
        } else {
            specs.push((path.clone(), TaskSpec::from_file(path)?));
        }
    }
    if specs.is_empty() {
        bail!("no task files in {paths:?}");
    }
    Ok(specs)
}

fn run(args: &RunArgs) -> Result<serde_json::Value> {
    let model_dir = checkpoint_dir(&args.model)?;
    let tokenizer_dir = args.tokenizer.clone().unwrap_or_else(|| model_dir.clone());
    let mut specs = if args.tasks.is_empty() { Vec::new() } else { task_files(&args.tasks)? };
    if let Some(heldout) = &args.heldout {
        let heldout = std::path::absolute(heldout)?;
        let toml = format!("name = \"heldout_bpb\"\nkind = \"bits_per_byte\"\ndata = {:?}\n", heldout.display().to_string());
        specs.push((heldout.clone(), TaskSpec::from_toml(&toml, &heldout)?));
    }
    if specs.is_empty() {
        bail!("nothing to evaluate: give --tasks or --heldout");
    }
    if let Some(limit) = args.limit {
        for (_, spec) in &mut specs {
            spec.limit = Some(spec.limit.map_or(limit, |l| l.min(limit)));
        }
    }
    // Inputs: the weights, the tokenizer, the task files and the data files that exist.
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&model_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors") && !p.ends_with("optimizer.safetensors"))
        .collect();
    inputs.sort();
    inputs.push(tokenizer_dir.join("tokenizer.json"));
    for (file, spec) in &specs {
        if file.is_file() && file.extension().is_some_and(|e| e == "toml") {
            inputs.push(file.clone());
        }
        let data = spec.data_path(&args.data_root);
        if data.is_file() {
            inputs.push(data);
        } else if data.join("index.json").is_file() {
            inputs.push(data.join("index.json")); // a token folder: its index holds the shards' checksums
        }
    }
    let parameters = serde_json::json!({
        "model": model_dir, "scoring": format!("{:?}", args.scoring), "precision": format!("{:?}", args.precision), "batch_tokens": args.batch_tokens,
        "limit": args.limit, "data_root": args.data_root,
    });
    let stage = match Stage::begin(TOOL, &args.output, parameters, &inputs, TaskSlice::new(0, 1)?, args.force)? {
        StageStart::UpToDate(manifest) => {
            eprintln!("{TOOL}: {} is up to date (use --force to rerun)", args.output.display());
            eprint!("{}", std::fs::read_to_string(args.output.join("results.md")).unwrap_or_default());
            return Ok(serde_json::json!({"output": args.output, "skipped": "up to date", "tasks": manifest.counts.read}));
        }
        StageStart::Run(stage) => stage,
    };
    let (config, tensors) = load_hf_model(&model_dir).with_context(|| format!("cannot load the checkpoint {}", model_dir.display()))?;
    let tokenizer = EvalTokenizer::load(&tokenizer_dir, &config)?;
    let report = match choose_backend(args.backend, config.head_dim(), args.precision)? {
        Chosen::Cpu(reason) => evaluate_on(CpuBackend, &reason, "cpu", config, &tensors, tokenizer, &specs, &model_dir, &tokenizer_dir, args)?,
        Chosen::Cuda(backend, reason) => evaluate_on(*backend, &reason, "cuda", config, &tensors, tokenizer, &specs, &model_dir, &tokenizer_dir, args)?,
    };
    let markdown = report.markdown();
    let json_path = args.output.join("results.json");
    let md_path = args.output.join("results.md");
    atomic::write_file(&json_path, serde_json::to_string_pretty(&report)?.as_bytes())?;
    atomic::write_file(&md_path, markdown.as_bytes())?;
    eprint!("{markdown}");
    let mut counts = Counts::default();
    for task in &report.tasks {
        match &task.skipped {
            None => counts.keep(),
            Some(_) => counts.remove("task skipped: data or interpreter missing"),
        }
    }
    let outputs = [&json_path, &md_path]
        .iter()
        .map(|p| Ok(WrittenFile { path: p.to_path_buf(), rows: report.tasks.len() as u64, bytes: std::fs::metadata(p)?.len() }))
        .collect::<Result<Vec<_>>>()?;
    let headline: BTreeMap<String, f64> =
        report.tasks.iter().filter_map(|t| t.metrics.get(&t.headline).map(|v| (format!("{}/{}", t.name, t.headline), *v))).collect();
    stage.finish(counts, outputs, BTreeMap::new())?;
    Ok(serde_json::json!({"output": args.output, "backend": report.backend, "results": headline}))
}

#[allow(clippy::too_many_arguments)]
fn evaluate_on<B: Backend>(
    backend: B,
    reason: &str,
    name: &str,
    config: ModelConfig,
    tensors: &std::collections::HashMap<String, dsllm_model::HostTensor>,
    tokenizer: EvalTokenizer,
    specs: &[(PathBuf, TaskSpec)],
    model_dir: &Path,
    tokenizer_dir: &Path,
    args: &RunArgs,
) -> Result<EvalReport> {
    let model = Llama::from_host_tensors(backend, config, tensors)?;
    let parameters = model.specs.tensors().iter().map(|s| s.numel() as u64).sum();
    let mut evaluator = Evaluator::new(model, tokenizer);
    evaluator.mode = match args.scoring {
        Scoring::Prefix => ScoringMode::PrefixCache,
        Scoring::Full => ScoringMode::FullForward,
    };
    evaluator.batch_tokens = args.batch_tokens.max(1);
    evaluator.generation_batch = args.generation_batch.max(1);
    let mut tasks = Vec::with_capacity(specs.len());
    for (_, spec) in specs {
        let bar = progress::bar(0, &spec.name, "items");
        let progress = |done: usize, total: usize| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        };
        let ctx = RunContext { data_root: &args.data_root, tokenizer_dir, progress: &progress };
        let result = run_task(&mut evaluator, spec, &ctx)?;
        bar.finish_and_clear();
        match &result.skipped {
            Some(reason) => eprintln!("{TOOL}: {}: skipped: {reason}", spec.name),
            None => eprintln!(
                "{TOOL}: {}: {} {:.4} on {} items in {:.1} s ({:.1} items/s)",
                spec.name,
                result.headline,
                result.metrics.get(&result.headline).copied().unwrap_or(f64::NAN),
                result.items,
                result.seconds,
                result.items as f64 / result.seconds.max(1e-9)
            ),
        }
        tasks.push(result);
    }
    Ok(EvalReport { model: model_dir.display().to_string(), backend: format!("{name} ({reason})"), parameters, tasks })
}

enum Chosen {
    Cpu(String),
    Cuda(Box<CudaBackend>, String),
}

/// ds-pretrain's backend choice: CUDA when asked or when `auto` finds a usable GPU.
fn choose_backend(kind: BackendKind, head_dim: usize, precision: GpuPrecision) -> Result<Chosen> {
    let open_gpu = || -> Result<Chosen> {
        let (mut backend, reason) = open_cuda(Some(head_dim))?;
        backend.precision = match precision {
            GpuPrecision::Fp32 => Precision::Fp32,
            GpuPrecision::Bf16 => Precision::Mixed,
        };
        let reason = format!("{reason}, {} products", backend.precision.name());
        Ok(Chosen::Cuda(Box::new(backend), reason))
    };
    let chosen = match kind {
        BackendKind::Cpu => Chosen::Cpu("asked for with --backend cpu".into()),
        BackendKind::Cuda => open_gpu()?,
        BackendKind::Auto => match gpu_unavailable_reason() {
            Some(reason) => Chosen::Cpu(reason),
            None => open_gpu().unwrap_or_else(|error| Chosen::Cpu(format!("the GPU could not be used: {error:#}"))),
        },
    };
    match &chosen {
        Chosen::Cpu(reason) => eprintln!("{TOOL}: backend cpu: {reason}, {} threads", rayon::current_num_threads()),
        Chosen::Cuda(_, reason) => eprintln!("{TOOL}: backend cuda: {reason}"),
    }
    Ok(chosen)
}

const TOKENIZER_FILES: [&str; 4] = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "dsllm_tokenizer.json"];

fn random_model(args: &RandomModelArgs) -> Result<serde_json::Value> {
    let mut config = ModelConfig::from_toml_file(&args.config)?;
    if config.vocab_size == 0 {
        // ds-tokenizer's padded embedding size, else the ids tokenizer.json can produce.
        let padded = std::fs::read_to_string(args.tokenizer.join("dsllm_tokenizer.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok()?["model_vocab_size"].as_u64());
        config.vocab_size = match padded {
            Some(size) => size as usize,
            None => tokenizer_vocab_size(&args.tokenizer.join("tokenizer.json"))?,
        };
    }
    let eos = EvalTokenizer::load(&args.tokenizer, &config).ok().map(|t| t.eos_id);
    config.eos_token_id = config.eos_token_id.or(eos);
    let model = Llama::new_random(CpuBackend, config.clone(), args.seed)?;
    dsllm_eval::fixture::write_model(&args.output, &model).with_context(|| format!("cannot write {}", args.output.display()))?;
    for name in TOKENIZER_FILES {
        let from = args.tokenizer.join(name);
        if from.exists() {
            std::fs::copy(&from, args.output.join(name)).with_context(|| format!("cannot copy {}", from.display()))?;
        }
    }
    let parameters: usize = model.specs.tensors().iter().map(|s| s.numel()).sum();
    Ok(serde_json::json!({"output": args.output, "parameters": parameters, "vocab_size": config.vocab_size, "seed": args.seed}))
}

/// The vocabulary size of a tokenizer.json (added tokens included).
fn tokenizer_vocab_size(path: &Path) -> Result<usize> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let model_vocab = json["model"]["vocab"].as_object().map_or(0, |v| v.values().filter_map(|id| id.as_u64()).max().map_or(0, |m| m as usize + 1));
    let added = json["added_tokens"].as_array().map_or(0, |a| a.iter().filter_map(|t| t["id"].as_u64()).max().map_or(0, |m| m as usize + 1));
    let size = model_vocab.max(added);
    if size == 0 {
        bail!("{} lists no tokens", path.display());
    }
    Ok(size)
}
