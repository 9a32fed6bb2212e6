//! Learning-rate schedules and the batch size and peak learning rate the paper's scaling laws
//! give for a compute budget.

use serde::{Deserialize, Serialize};

use crate::flops::ScalingLaws;

/// Learning rate as a function of the optimizer step. At a fixed batch size the fraction of
/// training tokens seen equals the fraction of steps done, so the paper's token fractions are
/// applied to steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum LrSchedule {
    /// The paper's: linear warmup, then the peak until 80% of training, 31.6% of it until 90%,
    /// 10% after.
    MultiStep { peak_lr: f64, warmup_steps: u64, total_steps: u64 },
    /// Linear warmup, then cosine decay to `min_lr_ratio · peak_lr` at the last step.
    Cosine { peak_lr: f64, warmup_steps: u64, total_steps: u64, min_lr_ratio: f64 },
}

/// The paper's warmup length.
pub const PAPER_WARMUP_STEPS: u64 = 2000;

impl LrSchedule {
    /// The paper's multi-step schedule with its 2000 warmup steps.
    pub fn paper_multi_step(peak_lr: f64, total_steps: u64) -> Self {
        Self::MultiStep { peak_lr, warmup_steps: PAPER_WARMUP_STEPS, total_steps }
    }

    /// Learning rate of update number `step` (0-based).
    pub fn learning_rate(&self, step: u64) -> f64 {
        let (peak_lr, warmup_steps, total_steps) = match *self {
            Self::MultiStep { peak_lr, warmup_steps, total_steps } => (peak_lr, warmup_steps, total_steps),
            Self::Cosine { peak_lr, warmup_steps, total_steps, .. } => (peak_lr, warmup_steps, total_steps),
        };
        if step < warmup_steps {
            return peak_lr * (step + 1) as f64 / warmup_steps as f64;
        }
        match *self {
            Self::MultiStep { .. } => {
                let progress = step as f64 / total_steps.max(1) as f64;
                let factor = if progress < 0.8 {
                    1.0
                } else if progress < 0.9 {
                    0.316
                } else {
                    0.1
                };
                peak_lr * factor
            }
            Self::Cosine { min_lr_ratio, .. } => {
                let decay_steps = total_steps.saturating_sub(warmup_steps).max(1);
                let progress = ((step - warmup_steps) as f64 / decay_steps as f64).min(1.0);
                let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
                peak_lr * (min_lr_ratio + (1.0 - min_lr_ratio) * cosine)
            }
        }
    }
}

/// Batch size and peak learning rate for a compute budget `C` (FLOPs), from
/// `η_opt = 0.3118·C^−0.125` and `B_opt = 0.2920·C^0.3271` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BatchPlan {
    pub peak_lr: f64,
    /// `B_opt` in tokens, before rounding.
    pub optimal_batch_tokens: f64,
    /// Sequences per optimizer step: `B_opt / seq_len` rounded to whole micro-batches (at least one).
    pub sequences_per_step: usize,
    pub grad_accum_steps: usize,
}

impl BatchPlan {
    /// With the paper's laws.
    pub fn from_compute_budget(compute_c: f64, seq_len: usize, micro_batch_size: usize) -> Self {
        Self::from_laws(&ScalingLaws::PAPER, compute_c, seq_len, micro_batch_size)
    }

    /// With `laws` (the paper's, or ones fitted by ds-scaling).
    pub fn from_laws(laws: &ScalingLaws, compute_c: f64, seq_len: usize, micro_batch_size: usize) -> Self {
        let batch_tokens = laws.batch_tokens.at(compute_c);
        let micro_batch_tokens = (seq_len * micro_batch_size) as f64;
        let grad_accum_steps = ((batch_tokens / micro_batch_tokens).round() as usize).max(1);
        Self {
            peak_lr: laws.lr.at(compute_c),
            optimal_batch_tokens: batch_tokens,
            sequences_per_step: grad_accum_steps * micro_batch_size,
            grad_accum_steps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_step_follows_the_paper() {
        let s = LrSchedule::paper_multi_step(4.2e-4, 10_000);
        assert_eq!(s.learning_rate(0), 4.2e-4 / 2000.0);
        assert_eq!(s.learning_rate(1999), 4.2e-4);
        assert_eq!(s.learning_rate(7999), 4.2e-4);
        assert_eq!(s.learning_rate(8000), 4.2e-4 * 0.316);
        assert_eq!(s.learning_rate(8999), 4.2e-4 * 0.316);
        assert_eq!(s.learning_rate(9000), 4.2e-4 * 0.1);
    }

    #[test]
    fn cosine_decays_to_its_floor() {
        let s = LrSchedule::Cosine { peak_lr: 1e-3, warmup_steps: 10, total_steps: 110, min_lr_ratio: 0.1 };
        assert_eq!(s.learning_rate(10), 1e-3);
        assert!((s.learning_rate(60) - 0.55e-3).abs() < 1e-12);
        assert!((s.learning_rate(110) - 1e-4).abs() < 1e-12);
    }

    #[test]
    fn batch_plan_rounds_to_micro_batches() {
        let plan = BatchPlan::from_compute_budget(1e20, 4096, 4);
        // B_opt ≈ 1.017M tokens ≈ 248 sequences of 4096 = 62 micro-batches of 4.
        assert_eq!(plan.grad_accum_steps, 62);
        assert_eq!(plan.sequences_per_step, 248);
        assert!((plan.peak_lr - 9.86e-4).abs() < 1e-6);
    }
}
