//! Training throughput of the CUDA backend: full optimizer steps (forward, backward, clipping,
//! AdamW) through the real [`Trainer`] on random tokens, timed after warm-up steps; then one
//! step split into phases. FLOPs per token are [`training_flops_per_token`], the count
//! `../shared/bench/torch_llama.py` uses, so MFU compares directly with PyTorch's.

use std::time::Instant;

use anyhow::Result;
use dsllm_model::flops::training_flops_per_token;
use dsllm_model::{LrSchedule, ModelConfig, TokenBatch, Trainer, TrainerConfig, VecSource};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::backend::CudaBackend;
use crate::profile::{OpTime, WaitTime};

/// Dense bf16 peak of an H100/H200 SXM (the datasheet's, as torch_llama.py uses).
pub const PEAK_FLOPS: f64 = 989e12;

/// What [`bench_training`] measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchResult {
    pub config: String,
    /// The attention kernels that ran ([`CudaBackend::attention_in_use`]) and whether the
    /// backward was bit-reproducible (`DSLLM_DETERMINISTIC`).
    pub attention: String,
    pub deterministic: bool,
    pub micro_batch: usize,
    pub seq_len: usize,
    pub tokens_per_s: f64,
    /// Mean over the timed steps, run back to back.
    pub step_ms: f64,
    pub mfu: f64,
    pub tflops: f64,
    /// Device memory in use at the peak, minus what was in use before the model existed.
    pub peak_mem_gib: f64,
    pub warmup_s: f64,
    pub loss: f64,
    pub forward_ms: f64,
    pub backward_ms: f64,
    pub optimizer_ms: f64,
    /// GPU time per op over one more step, when `DSLLM_PROFILE` is set (see [`crate::profile`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub profile: Vec<OpTime>,
    /// How long the main stream stalled on the optimizer stream in one more step, by buffer
    /// size, when `DSLLM_STREAM_WAITS` is set (AdamW on its own stream, as in the timed steps).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stream_waits: Vec<WaitTime>,
}

/// Trains `config` for `warmup + steps` steps of `micro_batch × seq_len` random tokens.
pub fn bench_training(name: &str, config: &ModelConfig, seq_len: usize, micro_batch: usize, warmup: usize, steps: usize) -> Result<BenchResult> {
    anyhow::ensure!(steps > 0, "the benchmark needs at least one timed step (BENCH_STEPS)");
    let backend = CudaBackend::new(0)?;
    backend.synchronize();
    let baseline = backend.memory_in_use();
    let trainer_config = TrainerConfig {
        seq_len,
        micro_batch_size: micro_batch,
        grad_accum_steps: 1,
        schedule: LrSchedule::Cosine { peak_lr: 3e-4, warmup_steps: 1, total_steps: 1000, min_lr_ratio: 0.1 },
        optimizer: Default::default(),
        seed: 0,
    };
    let mut trainer = Trainer::new(backend, config.clone(), trainer_config)?;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let sequences: Vec<Vec<u32>> = (0..micro_batch * (warmup + steps + 1))
        .map(|_| (0..=seq_len).map(|_| rng.random_range(0..config.vocab_size as u32)).collect())
        .collect();
    let mut source = VecSource::new(sequences, true);
    let mut peak = 0usize;

    let started = Instant::now();
    let mut loss = 0.0;
    for _ in 0..warmup {
        loss = trainer.train_step(&mut source)?.loss;
    }
    trainer.model.backend.synchronize();
    let warmup_s = started.elapsed().as_secs_f64();
    // Back to back, as training runs and as torch_llama.py times (one clock over all steps):
    // a step's AdamW overlaps the next step's forward (see CudaBackend::optimizer_stream).
    let timed = Instant::now();
    for _ in 0..steps {
        loss = trainer.train_step(&mut source)?.loss;
        peak = peak.max(trainer.model.backend.memory_in_use());
    }
    trainer.model.backend.synchronize();
    let step_s = timed.elapsed().as_secs_f64() / steps as f64;

    // One more step, phase by phase.
    let batch = TokenBatch {
        batch_size: micro_batch,
        seq_len,
        inputs: (0..micro_batch * seq_len).map(|_| rng.random_range(0..config.vocab_size as u32)).collect(),
        targets: (0..micro_batch * seq_len).map(|_| rng.random_range(0..config.vocab_size as u32)).collect(),
    };
    let phase = |f: &mut dyn FnMut(&mut Trainer<CudaBackend>), trainer: &mut Trainer<CudaBackend>| {
        let t = Instant::now();
        f(trainer);
        trainer.model.backend.synchronize();
        t.elapsed().as_secs_f64() * 1e3
    };
    trainer.model.zero_grads();
    let forward_ms = phase(&mut |t| { t.model.forward(&batch).expect("forward"); }, &mut trainer);
    let scale = 1.0 / batch.target_count() as f32;
    // Training runs forward and backward as one call (the output layer's gradient is taken in
    // the forward pass): backward's share is the difference.
    let forward_backward_ms = phase(&mut |t| { t.model.forward_backward(&batch, scale).expect("forward_backward"); }, &mut trainer);
    let backward_ms = forward_backward_ms - forward_ms;
    let optimizer_ms = phase(&mut |t| { t.optimizer.update(&mut t.model, 1e-4); }, &mut trainer);

    let profile = if std::env::var_os("DSLLM_PROFILE").is_some() {
        trainer.model.backend.set_profiling(true);
        trainer.train_step(&mut source)?;
        let ops = trainer.model.backend.take_profile();
        trainer.model.backend.set_profiling(false);
        ops
    } else {
        Vec::new()
    };

    let stream_waits = if std::env::var_os("DSLLM_STREAM_WAITS").is_some() {
        // A step after an ordinary one, so its forward waits for a whole step's AdamW.
        trainer.train_step(&mut source)?;
        trainer.model.backend.set_stream_waits(true);
        trainer.train_step(&mut source)?;
        let waits = trainer.model.backend.take_stream_waits();
        trainer.model.backend.set_stream_waits(false);
        waits
    } else {
        Vec::new()
    };

    let attention = trainer.model.backend.attention_in_use(config.head_dim());
    let deterministic = trainer.model.backend.deterministic;
    let tokens = (seq_len * micro_batch) as f64;
    let tokens_per_s = tokens / step_s;
    let flops = tokens_per_s * training_flops_per_token(config, seq_len);
    Ok(BenchResult {
        config: name.to_string(),
        attention,
        deterministic,
        micro_batch,
        seq_len,
        tokens_per_s,
        step_ms: step_s * 1e3,
        mfu: flops / PEAK_FLOPS,
        tflops: flops / 1e12,
        peak_mem_gib: peak.saturating_sub(baseline) as f64 / (1u64 << 30) as f64,
        warmup_s,
        loss,
        forward_ms,
        backward_ms,
        optimizer_ms,
        profile,
        stream_waits,
    })
}
