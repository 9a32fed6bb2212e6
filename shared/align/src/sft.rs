//! Supervised fine-tuning as the paper does it: the loss on assistant tokens only, several
//! conversations packed per row without attention or loss crossing them, epochs over the data
//! (7B: 4 epochs at LR 1e-5; 67B: 2 epochs at 5e-6), the batch by gradient accumulation, and
//! optionally a second stage without math and code data (the paper's remedy for the
//! repetition math SFT data brings).

use std::time::Instant;

use anyhow::{bail, Result};
use dsllm_model::{AdamW, AdamWConfig, Backend, Llama, LrSchedule};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::chat::Encoded;
use crate::pack::{batch_of, pack};

/// SFT hyperparameters; the defaults are the paper's 7B ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SftConfig {
    pub seq_len: usize,
    /// Packed rows per forward/backward pass.
    pub micro_batch: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    pub epochs: usize,
    pub learning_rate: f64,
    /// Share of the steps spent warming up linearly; the LR then decays by cosine to
    /// `min_lr_ratio` of the peak.
    pub warmup_ratio: f64,
    pub min_lr_ratio: f64,
    pub seed: u64,
    pub optimizer: AdamWConfig,
}

impl Default for SftConfig {
    fn default() -> Self {
        Self {
            seq_len: 4096,
            micro_batch: 4,
            grad_accum: 32,
            epochs: 4,
            learning_rate: 1e-5,
            warmup_ratio: 0.03,
            min_lr_ratio: 0.1,
            seed: 0,
            optimizer: AdamWConfig { weight_decay: 0.0, ..AdamWConfig::default() },
        }
    }
}

/// What one optimizer step did (a line of metrics.jsonl).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SftStep {
    pub stage: usize,
    pub step: u64,
    pub epoch: usize,
    /// Mean loss over the step's assistant tokens.
    pub loss: f64,
    pub trained_tokens: usize,
    pub rows: usize,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens_per_second: f64,
}

/// Every epoch's rows, shuffled per epoch (conversation order), so the step count is known
/// before training: several conversations per row when `packed`, else one per row (padded; for
/// backends without segment-aware attention).
fn epoch_rows(examples: &[Encoded], config: &SftConfig, pad: u32, stage: usize, packed: bool) -> Vec<Vec<crate::pack::PackedRow>> {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ ((stage as u64) << 32));
    (0..config.epochs)
        .map(|_| {
            let mut order: Vec<&Encoded> = examples.iter().collect();
            order.shuffle(&mut rng);
            if packed {
                pack(&order, config.seq_len, pad)
            } else {
                order.iter().flat_map(|e| pack(std::slice::from_ref(e), config.seq_len, pad)).collect()
            }
        })
        .collect()
}

/// Trains `model` on `examples` (templated conversations no longer than `seq_len + 1`
/// tokens) for `config.epochs`; `stage` only labels the metrics. Calls `on_step` after every
/// optimizer step.
pub fn train_sft<B: Backend>(
    model: &mut Llama<B>,
    examples: &[Encoded],
    config: &SftConfig,
    pad: u32,
    stage: usize,
    mut on_step: impl FnMut(&SftStep) -> Result<()>,
) -> Result<Vec<SftStep>> {
    if examples.is_empty() {
        bail!("no conversations to train on");
    }
    let packed = model.backend.supports_segmented_attention();
    let epochs = epoch_rows(examples, config, pad, stage, packed);
    let rows_per_step = config.micro_batch * config.grad_accum;
    let total_steps: u64 = epochs.iter().map(|rows| rows.len().div_ceil(rows_per_step) as u64).sum();
    let warmup_steps = (config.warmup_ratio * total_steps as f64).round() as u64;
    let schedule = LrSchedule::Cosine { peak_lr: config.learning_rate, warmup_steps, total_steps, min_lr_ratio: config.min_lr_ratio };
    let mut optimizer = AdamW::new(model, config.optimizer.clone());
    let mut history = Vec::new();
    for (epoch, rows) in epochs.iter().enumerate() {
        for step_rows in rows.chunks(rows_per_step) {
            let started = Instant::now();
            // The mean over the step's assistant tokens, whatever the micro-batch they are in.
            let trained: usize = step_rows.iter().map(|r| r.targets.iter().filter(|&&t| t != dsllm_model::IGNORE_TARGET).count()).sum();
            model.zero_grads();
            let mut loss_sum = 0.0;
            for micro in step_rows.chunks(config.micro_batch) {
                let (batch, segments) = batch_of(micro, config.seq_len);
                let segments = packed.then_some(segments.as_slice());
                loss_sum += model.forward_backward_segmented(&batch, segments, 1.0 / trained.max(1) as f32)?.sum_nats;
            }
            let lr = schedule.learning_rate(optimizer.step);
            let grad_norm = optimizer.update(model, lr as f32);
            let seconds = started.elapsed().as_secs_f64();
            let step = SftStep {
                stage,
                step: optimizer.step,
                epoch,
                loss: loss_sum / trained.max(1) as f64,
                trained_tokens: trained,
                rows: step_rows.len(),
                lr,
                grad_norm,
                tokens_per_second: (step_rows.len() * config.seq_len) as f64 / seconds.max(1e-9),
            };
            if !step.loss.is_finite() {
                bail!("the SFT loss is {} at step {}: lower the learning rate", step.loss, step.step);
            }
            on_step(&step)?;
            history.push(step);
        }
    }
    Ok(history)
}

/// Number of optimizer steps [`train_sft`] will take (`packed`: the backend's
/// `supports_segmented_attention`).
pub fn planned_steps(examples: &[Encoded], config: &SftConfig, pad: u32, stage: usize, packed: bool) -> u64 {
    let rows_per_step = config.micro_batch * config.grad_accum;
    epoch_rows(examples, config, pad, stage, packed).iter().map(|rows| rows.len().div_ceil(rows_per_step) as u64).sum()
}
