//! AdamW with global gradient-norm clipping, as the paper trains (β1 0.9, β2 0.95, weight
//! decay 0.1, clip 1.0).
//!
//! Weight decay applies to every matrix, the input embedding and output projection included,
//! and not to the RMSNorm gains. That is Megatron-LM's and nanoGPT's practice (decay every
//! tensor with two or more dimensions); the paper says only "weight decay 0.1", and LLaMA's
//! reports say no more.

use std::ops::Range;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::backend::{AdamWStep, AdamWUpdate, Backend};
use crate::dist::{shard_range, Collective, SingleProcess, TensorRef, World};
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

/// The optimizer's state: first and second moments of every tensor (of this rank's ZeRO-1
/// shard of it, with several ranks), and the step count.
pub struct AdamW<B: Backend> {
    pub config: AdamWConfig,
    /// Number of updates done so far.
    pub step: u64,
    /// The part of each tensor (in [`Weights::tensors`] order) this rank updates and keeps
    /// moments for: the whole tensor in a single process.
    pub shards: Vec<Range<usize>>,
    pub exp_avg: Weights<B::Buffer>,
    pub exp_avg_sq: Weights<B::Buffer>,
}

impl<B: Backend> AdamW<B> {
    /// Zeroed moments for `model`'s tensors.
    pub fn new(model: &Llama<B>, config: AdamWConfig) -> Self {
        Self::sharded(model, config, &World::single())
    }

    /// Zeroed moments for `world.rank`'s ZeRO-1 shard of each of `model`'s tensors.
    pub fn sharded(model: &Llama<B>, config: AdamWConfig, world: &World) -> Self {
        let shards = model.specs.tensors().iter().map(|spec| shard_range(spec.numel(), world.world_size, world.rank)).collect();
        let zeros = || model.specs.map(|spec| model.backend.alloc(shard_range(spec.numel(), world.world_size, world.rank).len().max(1)));
        Self { config, step: 0, shards, exp_avg: zeros(), exp_avg_sq: zeros() }
    }

    /// Clips `model.grads` to the global norm and applies one update at `learning_rate`.
    /// Returns the gradient norm before clipping.
    pub fn update(&mut self, model: &mut Llama<B>, learning_rate: f32) -> f64 {
        self.update_with(model, learning_rate, &mut SingleProcess::default()).expect("a single process's update cannot fail")
    }

    /// [`AdamW::update`] under ZeRO-1: `model.grads` hold the sum over ranks in this rank's
    /// shards (after [`Collective::reduce_scatter`]); the global norm is summed over the ranks'
    /// shards, each rank updates its shards, and the weights are all-gathered.
    pub fn update_with(&mut self, model: &mut Llama<B>, learning_rate: f32, collective: &mut dyn Collective<B>) -> Result<f64> {
        let norm = global_grad_norm_sharded(model, &self.shards, collective)?;
        let clip = self.config.grad_clip as f64;
        // PyTorch's clip_grad_norm_: scale by clip / (norm + 1e-6) when that is below 1.
        let grad_scale = if clip > 0.0 && norm > clip { (clip / (norm + 1e-6)) as f32 } else { 1.0 };
        self.step += 1;
        let tensors = model
            .specs
            .tensors()
            .into_iter()
            .zip(&self.shards)
            .zip(model.weights.tensors_mut())
            .zip(model.grads.tensors())
            .zip(self.exp_avg.tensors_mut())
            .zip(self.exp_avg_sq.tensors_mut());
        let mut updates = Vec::new();
        for (((((spec, shard), param), grad), m), v) in tensors {
            if shard.is_empty() {
                continue;
            }
            let hp = AdamWStep {
                learning_rate,
                beta1: self.config.beta1,
                beta2: self.config.beta2,
                eps: self.config.eps,
                weight_decay: if spec.is_norm { 0.0 } else { self.config.weight_decay },
                step: self.step,
                grad_scale,
            };
            updates.push(AdamWUpdate { param, grad, m, v, range: shard.clone(), hp });
        }
        model.backend.adamw_update_many(&mut updates);
        drop(updates); // its borrows of the weights end before the all-gather's
        if !collective.is_identity() {
            let numels: Vec<usize> = model.specs.tensors().iter().map(|s| s.numel()).collect();
            let mut weights: Vec<TensorRef<'_, B::Buffer>> = model.weights.tensors_mut().into_iter().zip(numels).collect();
            collective.all_gather(&model.backend, &mut weights)?;
        }
        Ok(norm)
    }
}

/// L2 norm of all of `model`'s gradients together, summed tensor by tensor in a fixed order.
pub fn global_grad_norm<B: Backend>(model: &Llama<B>) -> f64 {
    let grads: Vec<(&B::Buffer, Range<usize>)> = model.specs.tensors().into_iter().zip(model.grads.tensors()).map(|(spec, grad)| (grad, 0..spec.numel())).collect();
    model.backend.sum_squares_many(&grads).sqrt()
}

/// The global gradient norm when each rank holds the reduced gradient of its `shards` only:
/// each rank's sum of squares over its shards, summed over the ranks.
fn global_grad_norm_sharded<B: Backend>(model: &Llama<B>, shards: &[Range<usize>], collective: &mut dyn Collective<B>) -> Result<f64> {
    let grads: Vec<(&B::Buffer, Range<usize>)> = model.grads.tensors().into_iter().zip(shards.iter().cloned()).collect();
    let mut sum = [model.backend.sum_squares_many(&grads)];
    collective.all_reduce_host(&mut sum)?;
    Ok(sum[0].sqrt())
}
