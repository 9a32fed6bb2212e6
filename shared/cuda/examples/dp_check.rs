//! Data-parallel check and benchmark on the GPUs of one machine. Launch one process per GPU
//! with torchrun's variables, e.g. for two GPUs:
//!
//! ```text
//! for r in 0 1; do RANK=$r LOCAL_RANK=$r WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29511 \
//!   dp_check ds-1b & done; wait
//! ```
//!
//! Without those variables it runs as a world of one GPU, still through NCCL. Rank 0 first
//! trains alone on its GPU with the same global batch (one micro-batch per rank, accumulated);
//! then every rank trains from the same weights on the same data with NCCL and ZeRO-1. Rank 0
//! prints one JSON line: both loss curves, their largest relative difference (bf16 tolerance:
//! pass below 2e-2), weights equal on every rank, tokens/s on 1 and N GPUs and the scaling
//! efficiency tokens/s(N) / (N x tokens/s(1)). Configs come from pipelines/configs (run from
//! the repository root); micro-batches and sequence length are torch_llama.py's.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Result};
use dsllm_cuda::{gpu_unavailable_reason, CudaBackend, NcclCollective};
use dsllm_model::dist::{SingleProcess, World};
use dsllm_model::{Backend, LrSchedule, ModelConfig, Trainer, TrainerConfig, VecSource};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Timed steps follow the compared ones; the first `WARMUP` of them are not timed.
const WARMUP: usize = 3;

struct Run {
    losses: Vec<f64>,
    tokens_per_s: f64,
}

fn train(trainer: &mut Trainer<CudaBackend>, source: &mut VecSource, compared: usize, timed: usize) -> Result<Run> {
    let mut losses = Vec::new();
    for _ in 0..compared {
        losses.push(trainer.train_step(source)?.loss);
    }
    let mut times = Vec::new();
    for i in 0..WARMUP + timed {
        trainer.model.backend.synchronize();
        let started = Instant::now();
        trainer.train_step(source)?;
        trainer.model.backend.synchronize();
        if i >= WARMUP {
            times.push(started.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    let step_s = times[times.len() / 2];
    Ok(Run { losses, tokens_per_s: trainer.config.tokens_per_step() as f64 / step_s })
}

fn main() -> Result<()> {
    let name = std::env::args().nth(1).unwrap_or_else(|| "ds-160m".into());
    let compared: usize = std::env::var("DP_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let timed: usize = std::env::var("BENCH_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    if let Some(reason) = gpu_unavailable_reason() {
        println!("no data-parallel check: {reason}");
        return Ok(());
    }
    let world = World::from_env()?;
    let config = ModelConfig::from_toml_file(&Path::new("pipelines/configs").join(format!("{name}.toml")))?;
    let (seq_len, micro_batch) = (2048, if name == "ds-160m" { 8 } else { 4 });
    let trainer_config = TrainerConfig {
        seq_len,
        micro_batch_size: micro_batch,
        grad_accum_steps: world.world_size,
        schedule: LrSchedule::Cosine { peak_lr: 1e-3, warmup_steps: 5, total_steps: 1000, min_lr_ratio: 0.1 },
        optimizer: Default::default(),
        seed: 0,
    };
    // 32 sequences repeated: the loss falls as the model memorises them, so the curves compare
    // a run that learns, not one stuck at ln(vocab).
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let sequences: Vec<Vec<u32>> = (0..32).map(|_| (0..=seq_len).map(|_| rng.random_range(0..config.vocab_size as u32)).collect()).collect();

    let reference = if world.is_main() {
        let backend = CudaBackend::new(world.local_rank)?;
        let mut trainer = Trainer::new_distributed(backend, config.clone(), trainer_config.clone(), Box::new(SingleProcess::default()))?;
        Some(train(&mut trainer, &mut VecSource::new(sequences.clone(), true), compared, timed)?)
    } else {
        None
    };
    // The reference's memory is free again before the data-parallel model exists.

    let backend = CudaBackend::new(world.local_rank)?;
    let collective = NcclCollective::connect(world.clone(), &backend)?;
    let mut trainer = Trainer::new_distributed(backend, config.clone(), trainer_config, Box::new(collective))?;
    let parallel = train(&mut trainer, &mut VecSource::new(sequences, true), compared, timed)?;

    // Every rank's weights must be the same after the all-gathers: compare a checksum.
    let tensors = trainer.model.weights.tensors();
    let numels: Vec<usize> = trainer.model.specs.tensors().iter().map(|s| s.numel()).collect();
    let pairs: Vec<(&_, std::ops::Range<usize>)> = tensors.into_iter().zip(numels).map(|(t, n)| (t, 0..n)).collect();
    let checksum = trainer.model.backend.sum_squares_many(&pairs);
    let mut spread = [checksum, checksum * checksum];
    trainer.all_reduce_host(&mut spread)?;
    let n = world.world_size as f64;
    let variance = (spread[1] / n - (spread[0] / n).powi(2)).max(0.0);
    let weights_equal = variance.sqrt() <= 1e-12 * checksum.abs();

    if let Some(reference) = reference {
        let max_rel: f64 = parallel.losses.iter().zip(&reference.losses).map(|(a, b)| ((a - b) / b).abs()).fold(0.0, f64::max);
        let efficiency = parallel.tokens_per_s / (n * reference.tokens_per_s);
        let line = serde_json::json!({
            "config": name,
            "world_size": world.world_size,
            "micro_batch": micro_batch,
            "seq_len": seq_len,
            "losses_one_gpu": reference.losses,
            "losses_data_parallel": parallel.losses,
            "max_relative_loss_difference": max_rel,
            "weights_equal_on_all_ranks": weights_equal,
            "tokens_per_s_one_gpu": reference.tokens_per_s,
            "tokens_per_s_data_parallel": parallel.tokens_per_s,
            "scaling_efficiency": efficiency,
            "pass": max_rel < 2e-2 && weights_equal,
        });
        println!("{line}");
        if max_rel >= 2e-2 || !weights_equal {
            bail!("data-parallel training does not follow one GPU (max relative loss difference {max_rel:.2e}, weights equal: {weights_equal})");
        }
    }
    Ok(())
}
