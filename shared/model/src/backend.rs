//! The primitive operations the model is written against. The CPU backend (`cpu.rs`)
//! implements them in f32 with `gemm` and rayon; a CUDA backend implements the same list op for
//! op, so one model file serves both (llm.c's train_gpt2.c / train_gpt2.cu split).
//!
//! Conventions every implementation follows:
//! - Buffers are flat and row-major; shapes are passed explicitly.
//! - Activations of `n` tokens are `[n, width]`; attention tensors are `[batch, seq, heads,
//!   head_dim]`, i.e. exactly the output of the projection that made them.
//! - Linear weights are `[out, in]` (PyTorch / Hugging Face layout): `out = inp · Wᵀ`.
//! - Backward ops ADD into the gradients of their inputs (`+=`); the caller zeroes them. That
//!   makes residual branches and gradient accumulation over micro-batches free. Where the
//!   caller would only zero a buffer for one op to fill, the op overwrites instead (saving the
//!   zeroing pass and a read): `swiglu_backward` and `attention_backward` write their
//!   gradients, and `matmul_backward` takes a [`Store`] for its input gradient.
//! - Every reduction has a fixed order, so results are bit-identical whatever the thread count.

use std::ops::Range;

/// Target id meaning "no target here": contributes no loss and no gradient.
pub const IGNORE_TARGET: u32 = u32::MAX;

/// How an op stores a gradient: replacing the buffer's values or adding to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Overwrite,
    /// Overwrite with a value that only precision-tolerant readers use (SwiGLU's and attention's
    /// backward, whose inputs a mixed-precision backend rounds to bf16 anyway), so the backend
    /// may store it in bf16 alone, as autocast stores a product's output. The CPU overwrites.
    OverwriteLowPrecision,
    Add,
}

/// Shape of a causal grouped-query attention call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// Hyperparameters of one AdamW update of one tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWStep {
    pub learning_rate: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// 1-based step number, for bias correction.
    pub step: u64,
    /// Multiplies the gradient first (global-norm clipping).
    pub grad_scale: f32,
}

/// One tensor's AdamW update in [`Backend::adamw_update_many`]: the arguments of
/// [`Backend::adamw_update`].
pub struct AdamWUpdate<'a, B> {
    pub param: &'a mut B,
    pub grad: &'a B,
    pub m: &'a mut B,
    pub v: &'a mut B,
    pub range: Range<usize>,
    pub hp: AdamWStep,
}

/// Where [`Backend::output_loss`] puts the gradient of `scale · Σ losses`.
pub struct OutputGrad<'a, Buf> {
    /// Overwritten with the gradient of the output layer's input.
    pub d_hidden: &'a mut Buf,
    /// The output weight's gradient, added or written as `weight_store` says.
    pub d_weight: &'a mut Buf,
    pub scale: f32,
    pub weight_store: Store,
}

/// Primitive operations over device buffers.
pub trait Backend {
    /// A buffer of f32 on the device.
    type Buffer;
    /// A buffer of u32 token ids on the device.
    type Tokens;

    /// A zeroed buffer of `len` floats.
    fn alloc(&self, len: usize) -> Self::Buffer;
    fn upload(&self, host: &[f32]) -> Self::Buffer;
    fn download(&self, buf: &Self::Buffer) -> Vec<f32>;
    /// Overwrites the first `host.len()` floats of `buf`.
    fn write(&self, buf: &mut Self::Buffer, host: &[f32]);
    fn zero(&self, buf: &mut Self::Buffer);
    fn upload_tokens(&self, host: &[u32]) -> Self::Tokens;
    /// Overwrites the first `host.len()` ids of `buf`.
    fn write_tokens(&self, buf: &mut Self::Tokens, host: &[u32]);

    /// `out[rows, out_dim] = inp[rows, in_dim] · weight[out_dim, in_dim]ᵀ`.
    fn matmul_forward(&self, out: &mut Self::Buffer, inp: &Self::Buffer, weight: &Self::Buffer, rows: usize, in_dim: usize, out_dim: usize);
    /// `out = residual + inp · weightᵀ`: a product whose result joins the residual stream. The
    /// default runs [`Backend::matmul_forward`] into `scratch` (at least `rows · out_dim` floats)
    /// and [`Backend::add`]s; a backend may add in the product's epilogue instead (the CUDA
    /// backend does, so the product itself is never stored).
    #[allow(clippy::too_many_arguments)]
    fn matmul_forward_residual(
        &self,
        out: &mut Self::Buffer,
        residual: &Self::Buffer,
        inp: &Self::Buffer,
        weight: &Self::Buffer,
        scratch: &mut Self::Buffer,
        rows: usize,
        in_dim: usize,
        out_dim: usize,
    ) {
        self.matmul_forward(scratch, inp, weight, rows, in_dim, out_dim);
        self.add(out, residual, scratch, rows * out_dim);
    }
    /// `d_inp (=|+=) d_out · weight` as `d_inp_store` says, and `d_weight (=|+=) d_outᵀ · inp` as
    /// `d_weight_store` says (`Overwrite` for the first micro-batch of a step saves clearing the
    /// gradient first and reading it back: [`crate::Llama::overwrite_grads_next`]).
    #[allow(clippy::too_many_arguments)]
    fn matmul_backward(
        &self,
        d_inp: &mut Self::Buffer,
        d_weight: &mut Self::Buffer,
        d_out: &Self::Buffer,
        inp: &Self::Buffer,
        weight: &Self::Buffer,
        rows: usize,
        in_dim: usize,
        out_dim: usize,
        d_inp_store: Store,
        d_weight_store: Store,
    );

    /// `out = inp / sqrt(mean(inp²) + eps) · weight` per row; saves `rstd[rows]` for backward.
    #[allow(clippy::too_many_arguments)]
    fn rmsnorm_forward(&self, out: &mut Self::Buffer, rstd: &mut Self::Buffer, inp: &Self::Buffer, weight: &Self::Buffer, rows: usize, dim: usize, eps: f32);
    #[allow(clippy::too_many_arguments)]
    fn rmsnorm_backward(
        &self,
        d_inp: &mut Self::Buffer,
        d_weight: &mut Self::Buffer,
        d_out: &Self::Buffer,
        inp: &Self::Buffer,
        weight: &Self::Buffer,
        rstd: &Self::Buffer,
        rows: usize,
        dim: usize,
    );

    /// The `[seq, head_dim / 2]` cos table followed by the sin table, as Hugging Face computes
    /// them (f32 inverse frequencies `1 / theta^(2i / head_dim)`).
    fn rope_table(&self, seq: usize, head_dim: usize, theta: f64) -> Self::Buffer;
    /// Splits the q/k/v product `qkv[batch · seq, q_dim + 2 kv_dim]` (each row q's `heads`
    /// heads, then k's and v's `kv_heads`) into `q[batch, seq, heads, head_dim]`,
    /// `k[.., kv_heads, ..]` and `v`, applying rotate-half RoPE to q and k on the way.
    #[allow(clippy::too_many_arguments)]
    fn qkv_rope_forward(&self, q: &mut Self::Buffer, k: &mut Self::Buffer, v: &mut Self::Buffer, qkv: &Self::Buffer, table: &Self::Buffer, shape: AttentionShape);
    /// The backward of [`Backend::qkv_rope_forward`]: overwrites `d_qkv` with `d_q` and `d_k`
    /// rotated back (the inverse rotation) and `d_v`, side by side as the product's rows.
    #[allow(clippy::too_many_arguments)]
    fn qkv_rope_backward(&self, d_qkv: &mut Self::Buffer, d_q: &Self::Buffer, d_k: &Self::Buffer, d_v: &Self::Buffer, table: &Self::Buffer, shape: AttentionShape);

    /// Causal softmax attention with scale `1/sqrt(head_dim)`; query head `h` reads K/V head
    /// `h / (heads / kv_heads)`. Saves the row log-sum-exp `lse[batch, seq, heads]` so backward
    /// recomputes the probabilities instead of storing them.
    #[allow(clippy::too_many_arguments)]
    fn attention_forward(&self, out: &mut Self::Buffer, lse: &mut Self::Buffer, q: &Self::Buffer, k: &Self::Buffer, v: &Self::Buffer, shape: AttentionShape);
    /// Writes (overwrites) `d_q`, `d_k` and `d_v`.
    #[allow(clippy::too_many_arguments)]
    fn attention_backward(
        &self,
        d_q: &mut Self::Buffer,
        d_k: &mut Self::Buffer,
        d_v: &mut Self::Buffer,
        d_out: &Self::Buffer,
        out: &Self::Buffer,
        lse: &Self::Buffer,
        q: &Self::Buffer,
        k: &Self::Buffer,
        v: &Self::Buffer,
        shape: AttentionShape,
    );

    /// Whether [`Backend::attention_forward_segmented`] and its backward are implemented
    /// (callers that can do without packing, as SFT can, check this first).
    fn supports_segmented_attention(&self) -> bool {
        false
    }

    /// [`Backend::attention_forward`] for packed sequences: `segments[batch · seq]` gives each
    /// position a segment id, and a query attends only to the keys at or before it that carry
    /// its own id, so several conversations packed into one row never see each other. With one
    /// id per row it equals `attention_forward` exactly.
    #[allow(clippy::too_many_arguments)]
    fn attention_forward_segmented(
        &self,
        out: &mut Self::Buffer,
        lse: &mut Self::Buffer,
        q: &Self::Buffer,
        k: &Self::Buffer,
        v: &Self::Buffer,
        segments: &Self::Tokens,
        shape: AttentionShape,
    ) {
        let _ = (out, lse, q, k, v, segments, shape);
        panic!("this backend does not implement packed-segment attention (attention_forward_segmented)");
    }
    /// The backward of [`Backend::attention_forward_segmented`]; writes `d_q`, `d_k`, `d_v`.
    #[allow(clippy::too_many_arguments)]
    fn attention_backward_segmented(
        &self,
        d_q: &mut Self::Buffer,
        d_k: &mut Self::Buffer,
        d_v: &mut Self::Buffer,
        d_out: &Self::Buffer,
        out: &Self::Buffer,
        lse: &Self::Buffer,
        q: &Self::Buffer,
        k: &Self::Buffer,
        v: &Self::Buffer,
        segments: &Self::Tokens,
        shape: AttentionShape,
    ) {
        let _ = (d_q, d_k, d_v, d_out, out, lse, q, k, v, segments, shape);
        panic!("this backend does not implement packed-segment attention (attention_backward_segmented)");
    }

    /// `out[rows, width] = silu(gate) · up`, where `gate_up[rows, 2 width]` holds each row's
    /// gate values then its up values (the stacked gate/up product's output).
    fn swiglu_forward(&self, out: &mut Self::Buffer, gate_up: &Self::Buffer, rows: usize, width: usize);
    /// Writes (overwrites) `d_gate_up[rows, 2 width]`: each row's d_gate then its d_up.
    fn swiglu_backward(&self, d_gate_up: &mut Self::Buffer, d_out: &Self::Buffer, gate_up: &Self::Buffer, rows: usize, width: usize);

    /// `out[i] = table[tokens[i]]`.
    fn embedding_forward(&self, out: &mut Self::Buffer, tokens: &Self::Tokens, table: &Self::Buffer, n_tokens: usize, dim: usize);
    fn embedding_backward(&self, d_table: &mut Self::Buffer, d_out: &Self::Buffer, tokens: &Self::Tokens, n_tokens: usize, dim: usize);

    /// `out = a + b` over `n` values (the residual connection).
    fn add(&self, out: &mut Self::Buffer, a: &Self::Buffer, b: &Self::Buffer, n: usize);

    /// Per-row loss `logsumexp(logits) − logits[target]` (0 where the target is
    /// [`IGNORE_TARGET`]); saves the row log-sum-exp `lse[rows]` for backward.
    #[allow(clippy::too_many_arguments)]
    fn cross_entropy_forward(&self, losses: &mut Self::Buffer, lse: &mut Self::Buffer, logits: &Self::Buffer, targets: &Self::Tokens, rows: usize, vocab: usize);
    /// Replaces `logits` by `scale · (softmax(logits) − onehot(target))`, the gradient of
    /// `scale · Σ losses` (zero rows where the target is ignored).
    #[allow(clippy::too_many_arguments)]
    fn cross_entropy_backward(&self, logits: &mut Self::Buffer, lse: &Self::Buffer, targets: &Self::Tokens, rows: usize, vocab: usize, scale: f32);

    /// Like [`Backend::cross_entropy_backward`] with a scale per row: `logits[r]` becomes
    /// `row_scales[r] · (softmax − onehot(target))`, the gradient of `Σ row_scales[r] · loss[r]`
    /// (DPO weighs each sequence's tokens by its own coefficient). The default runs the
    /// unscaled op and scales the rows on the host: correct on every backend, and a device
    /// backend may override it with one kernel.
    #[allow(clippy::too_many_arguments)]
    fn cross_entropy_backward_weighted(
        &self,
        logits: &mut Self::Buffer,
        lse: &Self::Buffer,
        targets: &Self::Tokens,
        row_scales: &[f32],
        rows: usize,
        vocab: usize,
    ) {
        assert!(row_scales.len() >= rows, "{} row scales for {rows} rows", row_scales.len());
        self.cross_entropy_backward(logits, lse, targets, rows, vocab, 1.0);
        let mut host = self.download(logits);
        for (row, &scale) in host[..rows * vocab].chunks_mut(vocab).zip(row_scales) {
            row.iter_mut().for_each(|x| *x *= scale);
        }
        self.write(logits, &host[..rows * vocab]);
    }

    /// Σ x² over the first `n` values, in f64, in a fixed order.
    fn sum_squares(&self, x: &Self::Buffer, n: usize) -> f64;
    /// Σ x² over each `(buffer, range)` pair's values, each pair summed as
    /// [`Backend::sum_squares`] sums, the pairs added in list order (the squared global gradient
    /// norm; ranges are ZeRO-1 shards).
    fn sum_squares_many(&self, xs: &[(&Self::Buffer, Range<usize>)]) -> f64;
    /// Starts [`Backend::sum_squares_many`]'s work on gradients that are final while the caller
    /// goes on (the backward pass of the earlier layers); a later `sum_squares_many` over the same
    /// buffers and ranges, unchanged since, uses what was computed, with the same result. The
    /// default does nothing (the sums are taken when asked).
    fn prefetch_sum_squares(&self, _xs: &[(&Self::Buffer, Range<usize>)]) {}
    /// One AdamW step (PyTorch's decoupled weight decay) of `param[range]` with `grad[range]`,
    /// whose moments are `m[..range.len()]` and `v[..range.len()]` (under ZeRO-1 a rank keeps
    /// the moments of its shard only).
    fn adamw_update(&self, param: &mut Self::Buffer, grad: &Self::Buffer, m: &mut Self::Buffer, v: &mut Self::Buffer, range: Range<usize>, hp: AdamWStep);

    /// Every tensor's update of one optimizer step, in order: the same results as
    /// [`Backend::adamw_update`] on each (the default), which a device backend may launch
    /// several tensors at a time.
    fn adamw_update_many(&self, updates: &mut [AdamWUpdate<'_, Self::Buffer>]) {
        for u in updates {
            self.adamw_update(u.param, u.grad, u.m, u.v, u.range.clone(), u.hp);
        }
    }

    /// Rows of the batch [`Backend::output_loss`] turns into logits at a time; its `scratch`
    /// holds [`Backend::output_scratch_floats`]. The default: all rows at once.
    fn output_chunk_rows(&self, rows: usize, _vocab: usize) -> usize {
        rows
    }

    /// Length of [`Backend::output_loss`]'s `scratch`: one chunk's logits. The default
    /// `output_chunk_rows · vocab` floats; a backend that keeps logits in 16 bits needs half.
    fn output_scratch_floats(&self, rows: usize, vocab: usize) -> usize {
        self.output_chunk_rows(rows, vocab) * vocab
    }

    /// The output layer and its loss: `logits = hidden[rows, dim] · weight[vocab, dim]ᵀ`, then
    /// `losses` and `lse` as [`Backend::cross_entropy_forward`] computes them; with `grad`, also
    /// the gradient of `grad.scale · Σ losses`. A device backend works in chunks of
    /// [`Backend::output_chunk_rows`] so the batch's fp32 logits never exist at once (the
    /// paper's in-place cross-entropy); the default is the unchunked composition of the ops.
    #[allow(clippy::too_many_arguments)]
    fn output_loss(
        &self,
        losses: &mut Self::Buffer,
        lse: &mut Self::Buffer,
        scratch: &mut Self::Buffer,
        hidden: &Self::Buffer,
        weight: &Self::Buffer,
        targets: &Self::Tokens,
        rows: usize,
        dim: usize,
        vocab: usize,
        grad: Option<OutputGrad<'_, Self::Buffer>>,
    ) {
        self.matmul_forward(scratch, hidden, weight, rows, dim, vocab);
        self.cross_entropy_forward(losses, lse, scratch, targets, rows, vocab);
        if let Some(grad) = grad {
            self.cross_entropy_backward(scratch, lse, targets, rows, vocab, grad.scale);
            self.matmul_backward(grad.d_hidden, grad.d_weight, scratch, hidden, weight, rows, dim, vocab, Store::Overwrite, grad.weight_store);
        }
    }

    /// [`Backend::output_loss`] with the gradient of `grad.scale · Σ row_scales[r] · losses[r]`:
    /// each row weighted on its own (DPO weighs each sequence's tokens by its own coefficient).
    /// The default is the unchunked composition, so it needs `scratch` to hold the whole batch's
    /// logits: a backend that chunks the output layer ([`Backend::output_chunk_rows`] below
    /// `rows`) must override it, and until it does the default stops with a message.
    #[allow(clippy::too_many_arguments)]
    fn output_loss_weighted(
        &self,
        losses: &mut Self::Buffer,
        lse: &mut Self::Buffer,
        scratch: &mut Self::Buffer,
        hidden: &Self::Buffer,
        weight: &Self::Buffer,
        targets: &Self::Tokens,
        rows: usize,
        dim: usize,
        vocab: usize,
        grad: OutputGrad<'_, Self::Buffer>,
        row_scales: &[f32],
    ) {
        assert!(
            self.output_chunk_rows(rows, vocab) >= rows,
            "this backend computes the output layer in chunks of {} rows and does not implement the per-row weighted output_loss for {rows} rows yet",
            self.output_chunk_rows(rows, vocab)
        );
        let scaled: Vec<f32> = row_scales[..rows].iter().map(|&s| s * grad.scale).collect();
        self.matmul_forward(scratch, hidden, weight, rows, dim, vocab);
        self.cross_entropy_forward(losses, lse, scratch, targets, rows, vocab);
        self.cross_entropy_backward_weighted(scratch, lse, targets, &scaled, rows, vocab);
        self.matmul_backward(grad.d_hidden, grad.d_weight, scratch, hidden, weight, rows, dim, vocab, Store::Overwrite, grad.weight_store);
    }
}
