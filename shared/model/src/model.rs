//! The LLaMA model, forward and backward, written once against [`Backend`]: pre-norm
//! RMSNorm, rotate-half RoPE, causal grouped-query attention, SwiGLU, no biases, untied
//! embeddings. Same semantics as Hugging Face `LlamaForCausalLM`.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::backend::{AttentionShape, Backend, OutputGrad, Store, IGNORE_TARGET};
use crate::config::ModelConfig;
use crate::dist::TensorRef;
use crate::weights::{TensorSpec, Weights};

/// A tensor in host memory (f32, row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// `batch_size` sequences of `seq_len` input tokens and their next-token targets
/// ([`IGNORE_TARGET`] where there is none).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBatch {
    pub batch_size: usize,
    pub seq_len: usize,
    pub inputs: Vec<u32>,
    pub targets: Vec<u32>,
}

impl TokenBatch {
    /// Number of positions that have a target.
    pub fn target_count(&self) -> usize {
        self.targets.iter().filter(|&&t| t != IGNORE_TARGET).count()
    }
}

/// Summed next-token loss (nats) over `tokens` targets.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LossSum {
    pub sum_nats: f64,
    pub tokens: usize,
}

impl LossSum {
    pub fn mean(&self) -> f64 {
        self.sum_nats / self.tokens.max(1) as f64
    }
}

/// How backward weighs the per-position losses.
/// Called by [`Llama::forward_backward_bucketed`] with the backend and each finished bucket of
/// gradients (buffer and length of each tensor).
pub type GradientsReady<'a, B> = dyn FnMut(&B, &mut [TensorRef<'_, <B as Backend>::Buffer>]) + 'a;

enum LossWeights<'a> {
    Uniform(f32),
    PerRow(&'a [f32]),
}

/// What one block saves in forward for backward.
struct LayerActivations<Buf> {
    attn_norm: Buf,
    attn_rstd: Buf,
    /// Q and K after RoPE, and V: each its own `[batch, seq, heads, head_dim]` tensor, as attention reads them.
    q: Buf,
    k: Buf,
    v: Buf,
    attn_out: Buf,
    attn_lse: Buf,
    /// The residual stream after attention.
    mid: Buf,
    mlp_norm: Buf,
    mlp_rstd: Buf,
    /// The gate and up products side by side, `[tokens, 2 intermediate]`.
    gate_up: Buf,
    swiglu: Buf,
}

/// Buffers sized for one (batch, seq): forward's saved values and backward's scratch.
struct Activations<B: Backend> {
    batch: usize,
    seq: usize,
    inputs: B::Tokens,
    targets: B::Tokens,
    /// Segment ids of packed sequences, used when `segmented` (the last forward had them).
    segments: B::Tokens,
    segmented: bool,
    rope: B::Buffer,
    /// `residuals[l]` is block l's input; the last one feeds the final norm.
    residuals: Vec<B::Buffer>,
    layers: Vec<LayerActivations<B::Buffer>>,
    final_norm: B::Buffer,
    final_rstd: B::Buffer,
    /// The output layer's logits, one chunk of rows at a time (see [`Backend::output_loss`]).
    head_scratch: B::Buffer,
    /// The whole batch's logits, allocated by the first [`Llama::logits`] call only.
    logits: Option<B::Buffer>,
    logits_lse: B::Buffer,
    losses: B::Buffer,
    projection: B::Buffer,
    /// The q/k/v product `[tokens, q_dim + 2 kv_dim]` before RoPE splits it (forward only).
    qkv: B::Buffer,
    d_residual: B::Buffer,
    d_norm: B::Buffer,
    d_attn_out: B::Buffer,
    d_q: B::Buffer,
    d_k: B::Buffer,
    d_v: B::Buffer,
    /// d_q, d_k and d_v side by side, the q/k/v product's output gradient.
    d_qkv: B::Buffer,
    d_gate_up: B::Buffer,
    d_swiglu: B::Buffer,
    /// Whether the last forward computed losses that backward may use.
    ready_for_backward: bool,
    /// Whether the last forward also left the output layer's gradient (d_norm, lm_head's).
    head_grad_done: bool,
}

impl<B: Backend> Activations<B> {
    fn new(backend: &B, config: &ModelConfig, batch: usize, seq: usize) -> Self {
        let n = batch * seq;
        let (d, ff, v) = (config.hidden_size, config.intermediate_size, config.vocab_size);
        let heads = config.num_attention_heads;
        let (q_dim, kv_dim) = (heads * config.head_dim(), config.kv_dim());
        let alloc = |len: usize| backend.alloc(len);
        Self {
            batch,
            seq,
            inputs: backend.upload_tokens(&vec![0; n]),
            targets: backend.upload_tokens(&vec![IGNORE_TARGET; n]),
            segments: backend.upload_tokens(&vec![0; n]),
            segmented: false,
            rope: backend.rope_table(seq, config.head_dim(), config.rope_theta),
            residuals: (0..=config.num_hidden_layers).map(|_| alloc(n * d)).collect(),
            layers: (0..config.num_hidden_layers)
                .map(|_| LayerActivations {
                    attn_norm: alloc(n * d),
                    attn_rstd: alloc(n),
                    q: alloc(n * q_dim),
                    k: alloc(n * kv_dim),
                    v: alloc(n * kv_dim),
                    attn_out: alloc(n * q_dim),
                    attn_lse: alloc(n * heads),
                    mid: alloc(n * d),
                    mlp_norm: alloc(n * d),
                    mlp_rstd: alloc(n),
                    gate_up: alloc(n * 2 * ff),
                    swiglu: alloc(n * ff),
                })
                .collect(),
            final_norm: alloc(n * d),
            final_rstd: alloc(n),
            head_scratch: alloc(backend.output_scratch_floats(n, v)),
            logits: None,
            logits_lse: alloc(n),
            losses: alloc(n),
            projection: alloc(n * d),
            qkv: alloc(n * (q_dim + 2 * kv_dim)),
            d_residual: alloc(n * d),
            d_norm: alloc(n * d),
            d_attn_out: alloc(n * q_dim),
            d_q: alloc(n * q_dim),
            d_k: alloc(n * kv_dim),
            d_v: alloc(n * kv_dim),
            d_qkv: alloc(n * (q_dim + 2 * kv_dim)),
            d_gate_up: alloc(n * 2 * ff),
            d_swiglu: alloc(n * ff),
            ready_for_backward: false,
            head_grad_done: false,
        }
    }
}

/// What the forward pass does at the output layer.
#[derive(Clone, Copy)]
enum Head {
    /// The whole batch's logits, for [`Llama::logits`].
    Logits,
    /// The loss, for [`Llama::forward`].
    Loss,
    /// The loss and the output layer's gradient at this loss scale.
    LossAndGradient(f32),
}

/// The model: its weights, their gradients, and the activations of the last forward.
pub struct Llama<B: Backend> {
    pub backend: B,
    pub config: ModelConfig,
    pub specs: Weights<TensorSpec>,
    pub weights: Weights<B::Buffer>,
    /// Accumulated by [`Llama::backward`]; cleared by [`Llama::zero_grads`].
    pub grads: Weights<B::Buffer>,
    activations: Option<Activations<B>>,
    /// The next backward writes the gradients rather than adding to them
    /// ([`Llama::overwrite_grads_next`]).
    overwrite_grads: bool,
}

impl<B: Backend> Llama<B> {
    /// A freshly initialised model, as Hugging Face initialises LLaMA: every matrix (the
    /// embedding included) from N(0, initializer_range²), norm gains at 1. The same seed gives
    /// the same weights on every backend.
    pub fn new_random(backend: B, config: ModelConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        if config.vocab_size == 0 {
            bail!("vocab_size is 0: set it from the tokenizer (ModelConfig::with_vocab_size)");
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let normal = Normal::new(0.0f32, config.initializer_range as f32).context("bad initializer_range")?;
        let specs = Weights::specs(&config);
        let weights = specs.map(|spec| {
            let host: Vec<f32> = if spec.is_norm {
                vec![1.0; spec.numel()]
            } else {
                (0..spec.numel()).map(|_| normal.sample(&mut rng)).collect()
            };
            backend.upload(&host)
        });
        Ok(Self::with_weights(backend, config, specs, weights))
    }

    /// A model with the given tensors, keyed by their Hugging Face names.
    pub fn from_host_tensors(backend: B, config: ModelConfig, tensors: &HashMap<String, HostTensor>) -> Result<Self> {
        config.validate()?;
        let specs = Weights::specs(&config);
        for spec in specs.tensors() {
            spec.find(tensors, "")?;
        }
        // Joined and uploaded one tensor at a time: at most one stacked copy on the host.
        let weights = specs.map(|spec| backend.upload(&spec.join(tensors, "").expect("checked above")));
        Ok(Self::with_weights(backend, config, specs, weights))
    }

    fn with_weights(backend: B, config: ModelConfig, specs: Weights<TensorSpec>, weights: Weights<B::Buffer>) -> Self {
        let grads = specs.map(|spec| backend.alloc(spec.numel()));
        Self { backend, config, specs, weights, grads, activations: None, overwrite_grads: false }
    }

    /// Copies of every weight, keyed by Hugging Face name (stacked tensors split into theirs).
    pub fn host_tensors(&self) -> Vec<(String, HostTensor)> {
        self.specs.tensors().into_iter().zip(self.weights.tensors()).flat_map(|(spec, buf)| spec.split(&self.backend.download(buf), "")).collect()
    }

    pub fn zero_grads(&mut self) {
        for grad in self.grads.tensors_mut() {
            self.backend.zero(grad);
        }
        self.overwrite_grads = false;
    }

    /// Makes the next backward write the gradients instead of adding to them: what
    /// [`Llama::zero_grads`] then a backward give, without clearing every gradient first (on the
    /// GPU a pass over all of them, after which the products would read the zeros back). Until
    /// that backward, [`Llama::grads`] holds stale values: call it right before one, as the
    /// trainer does for each step's first micro-batch.
    pub fn overwrite_grads_next(&mut self) {
        self.overwrite_grads = true;
    }

    /// How the next backward stores weight gradients.
    fn weight_store(&self) -> Store {
        if self.overwrite_grads {
            Store::Overwrite
        } else {
            Store::Add
        }
    }

    /// Runs the model on `batch` and returns the summed next-token loss. Saves what
    /// [`Llama::backward`] needs.
    pub fn forward(&mut self, batch: &TokenBatch) -> Result<LossSum> {
        self.run_forward(batch, None, Head::Loss)?;
        self.summed_loss(batch)
    }

    /// [`Llama::forward`] over packed sequences: `segments[batch_size · seq_len]` gives each
    /// position the id of the sequence it belongs to (ids are contiguous runs within a row), and
    /// attention never crosses from one id to another; `None` is plain causal attention.
    /// Positions keep counting across a row's segments: RoPE makes attention scores depend on
    /// the distance between query and key only, and a segment sees only itself, so a
    /// conversation packed at offset 100 is scored as one at offset 0 (up to f32 rounding).
    pub fn forward_segmented(&mut self, batch: &TokenBatch, segments: Option<&[u32]>) -> Result<LossSum> {
        self.run_forward(batch, segments, Head::Loss)?;
        self.summed_loss(batch)
    }

    /// [`Llama::forward`] then [`Llama::backward`]`(loss_scale)`, with the output layer's
    /// gradient taken while its logits are at hand (no second pass over them): what training
    /// runs.
    pub fn forward_backward(&mut self, batch: &TokenBatch, loss_scale: f32) -> Result<LossSum> {
        self.forward_backward_segmented(batch, None, loss_scale)
    }

    /// [`Llama::forward_backward`] over packed sequences (see [`Llama::forward_segmented`]).
    pub fn forward_backward_segmented(&mut self, batch: &TokenBatch, segments: Option<&[u32]>, loss_scale: f32) -> Result<LossSum> {
        self.run_forward(batch, segments, Head::LossAndGradient(loss_scale))?;
        let loss = self.summed_loss(batch)?;
        self.backward(loss_scale);
        Ok(loss)
    }

    /// [`Llama::forward_backward`] that hands each bucket of gradients to `on_ready` as soon as
    /// the backward pass has finished it (output layer and final norm, then each block from the
    /// last, then the embedding), so data parallelism can reduce them while the rest of the
    /// backward pass runs.
    pub fn forward_backward_bucketed(&mut self, batch: &TokenBatch, loss_scale: f32, on_ready: &mut GradientsReady<'_, B>) -> Result<LossSum> {
        self.run_forward(batch, None, Head::LossAndGradient(loss_scale))?;
        let loss = self.summed_loss(batch)?;
        self.backward_with(LossWeights::Uniform(loss_scale), Some(on_ready));
        Ok(loss)
    }

    fn summed_loss(&mut self, batch: &TokenBatch) -> Result<LossSum> {
        let acts = self.activations.as_mut().expect("forward allocated activations");
        acts.ready_for_backward = true;
        let losses = self.backend.download(&acts.losses);
        let n = batch.batch_size * batch.seq_len;
        // Summed on the host in position order: the same total whatever the backend's threads.
        let sum_nats = losses[..n].iter().map(|&l| l as f64).sum();
        Ok(LossSum { sum_nats, tokens: batch.target_count() })
    }

    /// The logits `[batch_size · seq_len, vocab_size]` for `batch.inputs` (targets unused).
    pub fn logits(&mut self, batch: &TokenBatch) -> Result<Vec<f32>> {
        self.run_forward(batch, None, Head::Logits)?;
        let acts = self.activations.as_ref().expect("forward allocated activations");
        let mut logits = self.backend.download(acts.logits.as_ref().expect("run_forward computed the logits"));
        logits.truncate(batch.batch_size * batch.seq_len * self.config.vocab_size);
        Ok(logits)
    }

    /// The per-position losses of the last [`Llama::forward`] (`lse − logit[target]`, the
    /// negative log-probability of the target; 0 where it is ignored).
    pub fn token_losses(&self) -> Result<Vec<f32>> {
        let acts = self.activations.as_ref().filter(|a| a.ready_for_backward).context("token_losses needs a fresh forward with targets")?;
        let mut losses = self.backend.download(&acts.losses);
        losses.truncate(acts.batch * acts.seq);
        Ok(losses)
    }

    fn run_forward(&mut self, batch: &TokenBatch, segments: Option<&[u32]>, head: Head) -> Result<()> {
        let (b, t) = (batch.batch_size, batch.seq_len);
        let n = b * t;
        if batch.inputs.len() != n || batch.targets.len() != n {
            bail!("batch of {b}×{t} has {} inputs and {} targets", batch.inputs.len(), batch.targets.len());
        }
        if let Some(ids) = segments {
            if ids.len() != n {
                bail!("batch of {b}×{t} has {} segment ids", ids.len());
            }
        }
        if t > self.config.max_position_embeddings {
            bail!("sequence length {t} exceeds max_position_embeddings {}", self.config.max_position_embeddings);
        }
        let vocab = self.config.vocab_size;
        if let Some(bad) = batch.inputs.iter().chain(&batch.targets).find(|&&id| id as usize >= vocab && id != IGNORE_TARGET) {
            bail!("token id {bad} is outside the model's vocabulary of {vocab}");
        }
        let needs_new = self.activations.as_ref().is_none_or(|a| a.batch != b || a.seq != t);
        if needs_new {
            self.activations = None; // free the old buffers before allocating the new ones
            self.activations = Some(Activations::new(&self.backend, &self.config, b, t));
        }
        let weight_store = self.weight_store();
        let acts = self.activations.as_mut().expect("just allocated");
        let (be, c, w, g) = (&self.backend, &self.config, &self.weights, &mut self.grads);
        let (d, ff) = (c.hidden_size, c.intermediate_size);
        let (heads, kv_heads, head_dim) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim());
        let (q_dim, kv_dim) = (heads * head_dim, c.kv_dim());
        let qkv_dim = q_dim + 2 * kv_dim;
        let shape = AttentionShape { batch: b, seq: t, heads, kv_heads, head_dim };
        let eps = c.rms_norm_eps as f32;
        acts.ready_for_backward = false;
        acts.head_grad_done = false;
        be.write_tokens(&mut acts.inputs, &batch.inputs);
        be.write_tokens(&mut acts.targets, &batch.targets);
        acts.segmented = segments.is_some();
        if let Some(ids) = segments {
            be.write_tokens(&mut acts.segments, ids);
        }

        be.embedding_forward(&mut acts.residuals[0], &acts.inputs, &w.embed_tokens, n, d);
        for (l, (lw, la)) in w.layers.iter().zip(acts.layers.iter_mut()).enumerate() {
            let (before, after) = acts.residuals.split_at_mut(l + 1);
            let (x, x_next) = (&before[l], &mut after[0]);
            be.rmsnorm_forward(&mut la.attn_norm, &mut la.attn_rstd, x, &lw.input_layernorm, n, d, eps);
            be.matmul_forward(&mut acts.qkv, &la.attn_norm, &lw.qkv_proj, n, d, qkv_dim);
            be.qkv_rope_forward(&mut la.q, &mut la.k, &mut la.v, &acts.qkv, &acts.rope, shape);
            if acts.segmented {
                be.attention_forward_segmented(&mut la.attn_out, &mut la.attn_lse, &la.q, &la.k, &la.v, &acts.segments, shape);
            } else {
                be.attention_forward(&mut la.attn_out, &mut la.attn_lse, &la.q, &la.k, &la.v, shape);
            }
            be.matmul_forward_residual(&mut la.mid, x, &la.attn_out, &lw.o_proj, &mut acts.projection, n, q_dim, d);
            be.rmsnorm_forward(&mut la.mlp_norm, &mut la.mlp_rstd, &la.mid, &lw.post_attention_layernorm, n, d, eps);
            be.matmul_forward(&mut la.gate_up, &la.mlp_norm, &lw.gate_up_proj, n, d, 2 * ff);
            be.swiglu_forward(&mut la.swiglu, &la.gate_up, n, ff);
            be.matmul_forward_residual(x_next, &la.mid, &la.swiglu, &lw.down_proj, &mut acts.projection, n, ff, d);
        }
        let last = &acts.residuals[c.num_hidden_layers];
        be.rmsnorm_forward(&mut acts.final_norm, &mut acts.final_rstd, last, &w.norm, n, d, eps);
        let vocab = c.vocab_size;
        let grad = match head {
            Head::Logits => {
                let logits = acts.logits.get_or_insert_with(|| be.alloc(n * vocab));
                be.matmul_forward(logits, &acts.final_norm, &w.lm_head, n, d, vocab);
                return Ok(());
            }
            Head::Loss => None,
            Head::LossAndGradient(scale) => Some(OutputGrad { d_hidden: &mut acts.d_norm, d_weight: &mut g.lm_head, scale, weight_store }),
        };
        acts.head_grad_done = grad.is_some();
        be.output_loss(&mut acts.losses, &mut acts.logits_lse, &mut acts.head_scratch, &acts.final_norm, &w.lm_head, &acts.targets, n, d, vocab, grad);
        Ok(())
    }

    /// Adds the gradient of `loss_scale · Σ losses` of the last [`Llama::forward`] into
    /// [`Llama::grads`]. Use `loss_scale = 1 / (targets in the whole optimizer step)` to
    /// accumulate the mean loss's gradient over micro-batches.
    pub fn backward(&mut self, loss_scale: f32) {
        self.backward_with(LossWeights::Uniform(loss_scale), None);
    }

    /// Adds the gradient of `Σ row_scales[i] · losses[i]` of the last [`Llama::forward`]: each
    /// position weighted on its own (DPO weighs each sequence's summed log-probability by its
    /// own coefficient). `row_scales` has one value per position of the batch.
    pub fn backward_weighted(&mut self, row_scales: &[f32]) {
        self.backward_with(LossWeights::PerRow(row_scales), None);
    }

    fn backward_with(&mut self, weights: LossWeights, mut on_ready: Option<&mut GradientsReady<'_, B>>) {
        let ws = self.weight_store();
        self.overwrite_grads = false;
        let acts = self.activations.as_mut().expect("backward needs a forward first");
        assert!(acts.ready_for_backward, "backward needs a fresh forward with targets");
        acts.ready_for_backward = false;
        let (be, c, w, g, specs) = (&self.backend, &self.config, &self.weights, &mut self.grads, &self.specs);
        let mut ready = |tensors: Vec<(&mut B::Buffer, &TensorSpec)>| {
            if let Some(on_ready) = on_ready.as_mut() {
                let mut bucket: Vec<TensorRef<'_, B::Buffer>> = tensors.into_iter().map(|(buf, spec)| (buf, spec.numel())).collect();
                on_ready(be, &mut bucket);
            }
        };
        let (b, t) = (acts.batch, acts.seq);
        let n = b * t;
        let (d, ff) = (c.hidden_size, c.intermediate_size);
        let (heads, kv_heads, head_dim) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim());
        let (q_dim, kv_dim) = (heads * head_dim, c.kv_dim());
        let shape = AttentionShape { batch: b, seq: t, heads, kv_heads, head_dim };

        match weights {
            LossWeights::Uniform(scale) if !acts.head_grad_done => {
                // The output layer again, this time with its gradient (forward_backward avoids this).
                let grad = Some(OutputGrad { d_hidden: &mut acts.d_norm, d_weight: &mut g.lm_head, scale, weight_store: ws });
                be.output_loss(&mut acts.losses, &mut acts.logits_lse, &mut acts.head_scratch, &acts.final_norm, &w.lm_head, &acts.targets, n, d, c.vocab_size, grad);
            }
            // forward_backward took the output layer's gradient at this scale already.
            LossWeights::Uniform(_) => {}
            LossWeights::PerRow(scales) => {
                assert!(!acts.head_grad_done, "backward_weighted follows a forward, not a forward_backward");
                assert_eq!(scales.len(), n, "backward_weighted needs one scale per position");
                let grad = OutputGrad { d_hidden: &mut acts.d_norm, d_weight: &mut g.lm_head, scale: 1.0, weight_store: ws };
                be.output_loss_weighted(&mut acts.losses, &mut acts.logits_lse, &mut acts.head_scratch, &acts.final_norm, &w.lm_head, &acts.targets, n, d, c.vocab_size, grad, scales);
            }
        }
        acts.head_grad_done = false;
        if ws == Store::Overwrite {
            // What the products do not overwrite: the norm gains (added to by their backward)
            // and the embedding (zeroed right before its backward, below).
            be.zero(&mut g.norm);
            for layer in &mut g.layers {
                be.zero(&mut layer.input_layernorm);
                be.zero(&mut layer.post_attention_layernorm);
            }
        }
        be.zero(&mut acts.d_residual);
        let last = &acts.residuals[c.num_hidden_layers];
        be.rmsnorm_backward(&mut acts.d_residual, &mut g.norm, &acts.d_norm, last, &w.norm, &acts.final_rstd, n, d);
        ready(vec![(&mut g.lm_head, &specs.lm_head), (&mut g.norm, &specs.norm)]);
        // d_residual now holds dL/d(block output); walk the blocks back.
        for l in (0..c.num_hidden_layers).rev() {
            let (lw, lg, la) = (&w.layers[l], &mut g.layers[l], &acts.layers[l]);
            // Feed-forward branch: out = mid + down(silu(gate(norm(mid))) · up(norm(mid))).
            be.matmul_backward(&mut acts.d_swiglu, &mut lg.down_proj, &acts.d_residual, &la.swiglu, &lw.down_proj, n, ff, d, Store::OverwriteLowPrecision, ws);
            be.swiglu_backward(&mut acts.d_gate_up, &acts.d_swiglu, &la.gate_up, n, ff);
            be.matmul_backward(&mut acts.d_norm, &mut lg.gate_up_proj, &acts.d_gate_up, &la.mlp_norm, &lw.gate_up_proj, n, d, 2 * ff, Store::Overwrite, ws);
            be.rmsnorm_backward(
                &mut acts.d_residual,
                &mut lg.post_attention_layernorm,
                &acts.d_norm,
                &la.mid,
                &lw.post_attention_layernorm,
                &la.mlp_rstd,
                n,
                d,
            );
            // Attention branch: mid = x + o(attention(rope(q(norm(x))), rope(k(norm(x))), v(norm(x)))).
            be.matmul_backward(&mut acts.d_attn_out, &mut lg.o_proj, &acts.d_residual, &la.attn_out, &lw.o_proj, n, q_dim, d, Store::OverwriteLowPrecision, ws);
            if acts.segmented {
                be.attention_backward_segmented(
                    &mut acts.d_q,
                    &mut acts.d_k,
                    &mut acts.d_v,
                    &acts.d_attn_out,
                    &la.attn_out,
                    &la.attn_lse,
                    &la.q,
                    &la.k,
                    &la.v,
                    &acts.segments,
                    shape,
                );
            } else {
                be.attention_backward(
                    &mut acts.d_q,
                    &mut acts.d_k,
                    &mut acts.d_v,
                    &acts.d_attn_out,
                    &la.attn_out,
                    &la.attn_lse,
                    &la.q,
                    &la.k,
                    &la.v,
                    shape,
                );
            }
            be.qkv_rope_backward(&mut acts.d_qkv, &acts.d_q, &acts.d_k, &acts.d_v, &acts.rope, shape);
            be.matmul_backward(&mut acts.d_norm, &mut lg.qkv_proj, &acts.d_qkv, &la.attn_norm, &lw.qkv_proj, n, d, q_dim + 2 * kv_dim, Store::Overwrite, ws);
            be.rmsnorm_backward(
                &mut acts.d_residual,
                &mut lg.input_layernorm,
                &acts.d_norm,
                &acts.residuals[l],
                &lw.input_layernorm,
                &la.attn_rstd,
                n,
                d,
            );
            ready(g.layers[l].tensors_mut().into_iter().zip(specs.layers[l].tensors()).collect());
        }
        // The embedding's backward adds into the rows of the batch's tokens only. Its gradient
        // is cleared here, not with the others above: on the GPU the last step's update of the
        // table, held back until this forward's lookup, may still be reading it, and the
        // backward of every block can run meanwhile instead of waiting for it.
        if ws == Store::Overwrite {
            be.zero(&mut g.embed_tokens);
        }
        be.embedding_backward(&mut g.embed_tokens, &acts.d_residual, &acts.inputs, n, d);
        ready(vec![(&mut g.embed_tokens, &specs.embed_tokens)]);
    }
}

#[cfg(test)]
mod tests;
