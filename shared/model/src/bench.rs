//! Training throughput on the CPU backend: tokens per second of full optimizer steps
//! (forward, backward, AdamW) on random tokens.
//!
//! Seen on 2026-11-29, release build, 2 cores of an idle Intel Xeon (the GPU machine's CPU,
//! `taskset -c 0,1`, RAYON_NUM_THREADS=2): tiny (seq 256, micro-batch 8) 2,980 tokens/s at
//! vocabulary 16,384 and 4,440 at 8,192 (about 55 GFLOP/s); ds-160m (seq 2048, micro-batch 1,
//! vocabulary 102,400) 61 tokens/s (34 s a step, 73 GFLOP/s). With 16 threads: 13,100 and 303.
//! The shared 2-core development machine gives about half of that under load.

use std::time::Instant;

use anyhow::Result;

use crate::config::ModelConfig;
use crate::cpu::CpuBackend;
use crate::schedule::LrSchedule;
use crate::train::{Trainer, TrainerConfig, VecSource};

/// Result of [`cpu_training_throughput`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct Throughput {
    pub tokens_per_second: f64,
    /// Model FLOPs per second, counting [`crate::flops::training_flops_per_token`].
    pub flops_per_second: f64,
    pub seconds_per_step: f64,
    pub tokens_per_step: usize,
}

/// Times `steps` optimizer steps of `micro_batch_size × seq_len` tokens after one warm-up step.
pub fn cpu_training_throughput(config: &ModelConfig, seq_len: usize, micro_batch_size: usize, steps: usize) -> Result<Throughput> {
    let trainer_config = TrainerConfig {
        seq_len,
        micro_batch_size,
        grad_accum_steps: 1,
        schedule: LrSchedule::Cosine { peak_lr: 1e-3, warmup_steps: 1, total_steps: 100, min_lr_ratio: 0.1 },
        optimizer: Default::default(),
        seed: 0,
    };
    let mut trainer = Trainer::new(CpuBackend, config.clone(), trainer_config)?;
    // Pseudo-random tokens from a fixed linear congruential sequence: content does not matter.
    let mut x: u64 = 1;
    let sequences = (0..micro_batch_size * (steps + 1))
        .map(|_| {
            (0..=seq_len)
                .map(|_| {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((x >> 33) % config.vocab_size as u64) as u32
                })
                .collect()
        })
        .collect();
    let mut source = VecSource::new(sequences, false);
    trainer.train_step(&mut source)?;
    let started = Instant::now();
    for _ in 0..steps {
        trainer.train_step(&mut source)?;
    }
    let seconds_per_step = started.elapsed().as_secs_f64() / steps as f64;
    let tokens_per_step = seq_len * micro_batch_size;
    let tokens_per_second = tokens_per_step as f64 / seconds_per_step;
    Ok(Throughput {
        tokens_per_second,
        flops_per_second: tokens_per_second * crate::flops::training_flops_per_token(config, seq_len),
        seconds_per_step,
        tokens_per_step,
    })
}
