//! ds-pretrain: trains the DeepSeek LLM architecture on ds-pack token shards (`train`), and
//! measures training throughput on synthetic tokens (`bench`).

mod bench;
mod plot;
mod train;

use clap::{Parser, Subcommand, ValueEnum};
use dsllm_core::{cli, Error};
use dsllm_cuda::{gpu_unavailable_reason, CudaBackend};
use dsllm_cuda::open_gpu_ordinal as open_cuda;
use dsllm_model::dist::World;
use std::path::{Path, PathBuf};

pub const TOOL: &str = "ds-pretrain";

#[derive(Parser)]
#[command(version, about = "Pretraining on ds-pack token shards, with the paper's optimizer, LR schedule and scaling-law hyperparameters")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model on token shards; checkpoints, metrics.jsonl and loss.png go to --output.
    #[command(after_help = train::DERIVED_HYPERPARAMETERS)]
    Train(train::TrainArgs),
    /// Training throughput on random tokens: tokens/s, step time, MFU, peak memory (one JSON line).
    Bench(bench::BenchArgs),
}

/// Which implementation of the model's primitive operations runs the training.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// CUDA when a GPU is usable, else CPU (the reason is printed).
    Auto,
    Cpu,
    Cuda,
}

/// The backend picked, with the sentence that says why.
pub enum ChosenBackend {
    Cpu { reason: String },
    Cuda { backend: Box<CudaBackend>, reason: String },
}

impl ChosenBackend {
    pub fn name(&self) -> &'static str {
        match self {
            ChosenBackend::Cpu { .. } => "cpu",
            ChosenBackend::Cuda { .. } => "cuda",
        }
    }
    pub fn reason(&self) -> &str {
        match self {
            ChosenBackend::Cpu { reason } | ChosenBackend::Cuda { reason, .. } => reason,
        }
    }
}

/// Picks the backend (for a model with heads of `head_dim`, when known) and says on stderr
/// which one and why.
pub fn choose_backend(kind: BackendKind, head_dim: Option<usize>) -> anyhow::Result<ChosenBackend> {
    choose_backend_for(kind, head_dim, &World::single())
}

/// [`choose_backend`] for one rank of a data-parallel run: its GPU is LOCAL_RANK's.
pub fn choose_backend_for(kind: BackendKind, head_dim: Option<usize>, world: &World) -> anyhow::Result<ChosenBackend> {
    let open_gpu = || -> anyhow::Result<ChosenBackend> {
        let (backend, reason) = open_cuda(head_dim, world.local_rank)?;
        Ok(ChosenBackend::Cuda { backend: Box::new(backend), reason })
    };
    let chosen = match kind {
        BackendKind::Cpu => ChosenBackend::Cpu { reason: "asked for with --backend cpu".into() },
        BackendKind::Cuda => open_gpu()?,
        BackendKind::Auto => match gpu_unavailable_reason() {
            Some(reason) => ChosenBackend::Cpu { reason },
            None => match open_gpu() {
                Ok(chosen) => chosen,
                Err(error) => ChosenBackend::Cpu { reason: format!("the GPU could not be used: {error:#}") },
            },
        },
    };
    let threads = match chosen {
        ChosenBackend::Cpu { .. } => format!(", {} threads", rayon_threads()),
        ChosenBackend::Cuda { .. } => String::new(),
    };
    let rank = if world.world_size > 1 { format!(" (rank {} of {})", world.rank, world.world_size) } else { String::new() };
    eprintln!("{TOOL}: backend {}{rank}: {}{threads}", chosen.name(), chosen.reason());
    Ok(chosen)
}

/// Threads of rayon's global pool (the CPU backend's).
pub fn rayon_threads() -> usize {
    rayon::current_num_threads()
}

/// An error the user made (exit code 2), as opposed to one the run met (exit code 1).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// `anyhow::bail!` for usage errors.
#[macro_export]
macro_rules! usage {
    ($($arg:tt)*) => { return Err(anyhow::Error::new($crate::UsageError(format!($($arg)*)))) };
}

fn to_core_error(error: anyhow::Error, path: &Path) -> Error {
    match error.downcast_ref::<UsageError>() {
        Some(usage) => Error::Usage(usage.0.clone()),
        None => Error::input(path, None, format!("{error:#}")),
    }
}

fn main() {
    let args = Args::parse();
    cli::run_main(TOOL, || {
        let (threads, path): (Option<usize>, PathBuf) = match &args.command {
            Command::Train(a) => (a.threads, a.output.clone()),
            Command::Bench(a) => (a.threads, a.config.clone()),
        };
        cli::init_threads(threads)?;
        let result = match &args.command {
            Command::Train(a) => train::run(a),
            Command::Bench(a) => bench::run(a),
        };
        result.map_err(|e| to_core_error(e, &path))
    })
}
