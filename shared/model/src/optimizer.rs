//! AdamW with global gradient-norm clipping, as the paper trains (β1 0.9, β2 0.95, weight
//! decay 0.1, clip 1.0).
//!
//! Weight decay applies to every matrix, the input embedding and output projection included,
//! and not to the RMSNorm gains. That is Megatron-LM's and nanoGPT's practice (decay every
//! tensor with two or more dimensions); the paper says only "weight decay 0.1", and LLaMA's
//! reports say no more.

use serde::{Deserialize, Serialize};

use crate::backend::{AdamWStep, Backend};
use crate::model::Llama;
use crate::weights::Weights;

/// AdamW hyperparameters; the defaults are the paper's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AdamWConfig {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// Global L2 norm the gradients are clipped to; 0 disables clipping.
    pub grad_clip: f32,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, grad_clip: 1.0 }
    }
}

/// The optimizer's state: first and second moments of every tensor, and the step count.
pub struct AdamW<B: Backend> {
    pub config: AdamWConfig,
    /// Number of updates done so far.
    pub step: u64,
    pub exp_avg: Weights<B::Buffer>,
    pub exp_avg_sq: Weights<B::Buffer>,
}

impl<B: Backend> AdamW<B> {
    /// Zeroed moments for `model`'s tensors.
    pub fn new(model: &Llama<B>, config: AdamWConfig) -> Self {
        let zeros = || model.specs.map(|spec| model.backend.alloc(spec.numel()));
        Self { config, step: 0, exp_avg: zeros(), exp_avg_sq: zeros() }
    }

    /// Clips `model.grads` to the global norm and applies one update at `learning_rate`.
    /// Returns the gradient norm before clipping.
    pub fn update(&mut self, model: &mut Llama<B>, learning_rate: f32) -> f64 {
        let norm = global_grad_norm(model);
        let clip = self.config.grad_clip as f64;
        // PyTorch's clip_grad_norm_: scale by clip / (norm + 1e-6) when that is below 1.
        let grad_scale = if clip > 0.0 && norm > clip { (clip / (norm + 1e-6)) as f32 } else { 1.0 };
        self.step += 1;
        let tensors = model
            .specs
            .tensors()
            .into_iter()
            .zip(model.weights.tensors_mut())
            .zip(model.grads.tensors())
            .zip(self.exp_avg.tensors_mut())
            .zip(self.exp_avg_sq.tensors_mut());
        for ((((spec, param), grad), m), v) in tensors {
            let hp = AdamWStep {
                learning_rate,
                beta1: self.config.beta1,
                beta2: self.config.beta2,
                eps: self.config.eps,
                weight_decay: if spec.is_norm { 0.0 } else { self.config.weight_decay },
                step: self.step,
                grad_scale,
            };
            model.backend.adamw_update(param, grad, m, v, spec.numel(), hp);
        }
        norm
    }
}

/// L2 norm of all of `model`'s gradients together, summed tensor by tensor in a fixed order.
pub fn global_grad_norm<B: Backend>(model: &Llama<B>) -> f64 {
    let grads: Vec<(&B::Buffer, usize)> = model.specs.tensors().into_iter().zip(model.grads.tensors()).map(|(spec, grad)| (grad, spec.numel())).collect();
    model.backend.sum_squares_many(&grads).sqrt()
}
