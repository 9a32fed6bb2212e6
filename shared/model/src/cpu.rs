//! The CPU backend: f32, matrix products by the `gemm` crate, everything else by rayon over
//! rows. Each op splits work so that every output value is reduced in one fixed order, so the
//! results do not depend on the number of threads.
//!
//! Attention runs one task per (sequence, K/V head) and does its products with gemm, in blocks
//! of [`ATTENTION_BLOCK`] query rows that each see only the keys up to their last row (masking
//! the rest in the softmax): 5/8 of the full `seq × seq` square at 256 positions, and gemm is an
//! order of magnitude faster than scalar loops. Like flash attention it keeps only the row
//! log-sum-exp and recomputes the probabilities in backward.

use std::cell::RefCell;
use std::ops::Range;

use gemm::Parallelism;
use rayon::prelude::*;

use crate::backend::{AdamWStep, AttentionShape, Backend, Store, IGNORE_TARGET};

/// f32 on the CPU; buffers are plain vectors. Uses rayon's current thread pool.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuBackend;

/// Work per rayon task for elementwise ops: big enough to amortise scheduling.
const ELEMENTWISE_CHUNK: usize = 1 << 14;

/// Query rows per attention block. Smaller blocks skip more of the masked triangle but make
/// gemm's products thinner; 64 measured fastest for the tiny models at 256 positions.
const ATTENTION_BLOCK: usize = 64;

mod math;

thread_local! {
    /// Attention's `seq × seq` score buffers, kept per thread: a fresh allocation per task
    /// costs page faults (zeroed pages from the kernel) on every call.
    static ATTENTION_SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's attention scratch of at least `len` floats (contents undefined).
fn with_attention_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    ATTENTION_SCRATCH.with(|cell| {
        let mut scratch = cell.borrow_mut();
        if scratch.len() < len {
            scratch.resize(len, 0.0);
        }
        f(&mut scratch[..len])
    })
}

impl Backend for CpuBackend {
    type Buffer = Vec<f32>;
    type Tokens = Vec<u32>;

    fn alloc(&self, len: usize) -> Vec<f32> {
        vec![0.0; len]
    }
    fn upload(&self, host: &[f32]) -> Vec<f32> {
        host.to_vec()
    }
    fn download(&self, buf: &Vec<f32>) -> Vec<f32> {
        buf.clone()
    }
    fn write(&self, buf: &mut Vec<f32>, host: &[f32]) {
        buf[..host.len()].copy_from_slice(host);
    }
    fn zero(&self, buf: &mut Vec<f32>) {
        buf.par_chunks_mut(ELEMENTWISE_CHUNK).for_each(|c| c.fill(0.0));
    }
    fn upload_tokens(&self, host: &[u32]) -> Vec<u32> {
        host.to_vec()
    }
    fn write_tokens(&self, buf: &mut Vec<u32>, host: &[u32]) {
        buf[..host.len()].copy_from_slice(host);
    }

    fn matmul_forward(&self, out: &mut Vec<f32>, inp: &Vec<f32>, weight: &Vec<f32>, rows: usize, in_dim: usize, out_dim: usize) {
        // out[rows, out] = inp[rows, in] · Wᵀ, where Wᵀ[in, out] is W read with swapped strides.
        gemm_row_major(
            &mut out[..rows * out_dim],
            (rows, out_dim, in_dim),
            Strided { data: &inp[..rows * in_dim], row_stride: in_dim, col_stride: 1 },
            Strided { data: &weight[..out_dim * in_dim], row_stride: 1, col_stride: in_dim },
            false,
            1.0,
            true,
        );
    }

    fn matmul_backward(
        &self,
        d_inp: &mut Vec<f32>,
        d_weight: &mut Vec<f32>,
        d_out: &Vec<f32>,
        inp: &Vec<f32>,
        weight: &Vec<f32>,
        rows: usize,
        in_dim: usize,
        out_dim: usize,
        d_inp_store: Store,
        d_weight_store: Store,
    ) {
        let d_out = &d_out[..rows * out_dim];
        // d_inp[rows, in] (+)= d_out[rows, out] · W[out, in]
        gemm_row_major(
            &mut d_inp[..rows * in_dim],
            (rows, in_dim, out_dim),
            Strided { data: d_out, row_stride: out_dim, col_stride: 1 },
            Strided { data: &weight[..out_dim * in_dim], row_stride: in_dim, col_stride: 1 },
            d_inp_store == Store::Add,
            1.0,
            true,
        );
        // d_W[out, in] (+)= d_outᵀ[out, rows] · inp[rows, in]
        gemm_row_major(
            &mut d_weight[..out_dim * in_dim],
            (out_dim, in_dim, rows),
            Strided { data: d_out, row_stride: 1, col_stride: out_dim },
            Strided { data: &inp[..rows * in_dim], row_stride: in_dim, col_stride: 1 },
            d_weight_store == Store::Add,
            1.0,
            true,
        );
    }

    fn rmsnorm_forward(&self, out: &mut Vec<f32>, rstd: &mut Vec<f32>, inp: &Vec<f32>, weight: &Vec<f32>, rows: usize, dim: usize, eps: f32) {
        out[..rows * dim]
            .par_chunks_mut(dim)
            .zip(rstd[..rows].par_iter_mut())
            .zip(inp[..rows * dim].par_chunks(dim))
            .for_each(|((out_row, rstd), x)| {
                let mean_square = x.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / dim as f64;
                let r = 1.0 / ((mean_square as f32) + eps).sqrt();
                *rstd = r;
                for ((o, &xv), &w) in out_row.iter_mut().zip(x).zip(&weight[..dim]) {
                    *o = w * (xv * r);
                }
            });
    }

    fn rmsnorm_backward(
        &self,
        d_inp: &mut Vec<f32>,
        d_weight: &mut Vec<f32>,
        d_out: &Vec<f32>,
        inp: &Vec<f32>,
        weight: &Vec<f32>,
        rstd: &Vec<f32>,
        rows: usize,
        dim: usize,
    ) {
        let weight = &weight[..dim];
        d_inp[..rows * dim]
            .par_chunks_mut(dim)
            .zip(d_out[..rows * dim].par_chunks(dim))
            .zip(inp[..rows * dim].par_chunks(dim))
            .zip(rstd[..rows].par_iter())
            .for_each(|(((dx, g), x), &r)| {
                // y = w·x·r with r = (mean(x²)+eps)^−½, so dx = r·w·g − r³/dim · x · Σ(g·w·x).
                let gwx: f64 = g.iter().zip(weight).zip(x).map(|((&g, &w), &x)| (g * w * x) as f64).sum();
                let correction = (gwx as f32) * r * r * r / dim as f32;
                for j in 0..dim {
                    dx[j] += r * weight[j] * g[j] - correction * x[j];
                }
            });
        // The weight gradient sums over rows: split by columns so each sum runs rows in order.
        const COLUMNS: usize = 64;
        d_weight[..dim].par_chunks_mut(COLUMNS).enumerate().for_each(|(chunk, dw)| {
            let first = chunk * COLUMNS;
            for (row, &r) in rstd[..rows].iter().enumerate() {
                let base = row * dim + first;
                for (j, dw) in dw.iter_mut().enumerate() {
                    *dw += d_out[base + j] * inp[base + j] * r;
                }
            }
        });
    }

    fn rope_table(&self, seq: usize, head_dim: usize, theta: f64) -> Vec<f32> {
        let half = head_dim / 2;
        let inverse_frequency: Vec<f32> =
            (0..half).map(|i| 1.0 / (theta as f32).powf((2 * i) as f32 / head_dim as f32)).collect();
        let mut table = vec![0.0; 2 * seq * half];
        let (cos, sin) = table.split_at_mut(seq * half);
        for t in 0..seq {
            for i in 0..half {
                let angle = t as f32 * inverse_frequency[i];
                cos[t * half + i] = angle.cos();
                sin[t * half + i] = angle.sin();
            }
        }
        table
    }

    fn qkv_rope_forward(&self, q: &mut Vec<f32>, k: &mut Vec<f32>, v: &mut Vec<f32>, qkv: &Vec<f32>, table: &Vec<f32>, shape: AttentionShape) {
        let (n, q_dim, kv_dim) = (shape.batch * shape.seq, shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim);
        let width = q_dim + 2 * kv_dim;
        q[..n * q_dim]
            .par_chunks_mut(q_dim)
            .zip(k[..n * kv_dim].par_chunks_mut(kv_dim))
            .zip(v[..n * kv_dim].par_chunks_mut(kv_dim))
            .zip(qkv[..n * width].par_chunks(width))
            .enumerate()
            .for_each(|(token, (((q, k), v), row))| {
                q.copy_from_slice(&row[..q_dim]);
                k.copy_from_slice(&row[q_dim..q_dim + kv_dim]);
                v.copy_from_slice(&row[q_dim + kv_dim..]);
                let t = token % shape.seq;
                rotate_heads(q, table, shape.seq, t, shape.head_dim, 1.0);
                rotate_heads(k, table, shape.seq, t, shape.head_dim, 1.0);
            });
    }

    fn qkv_rope_backward(&self, d_qkv: &mut Vec<f32>, d_q: &Vec<f32>, d_k: &Vec<f32>, d_v: &Vec<f32>, table: &Vec<f32>, shape: AttentionShape) {
        let (n, q_dim, kv_dim) = (shape.batch * shape.seq, shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim);
        let width = q_dim + 2 * kv_dim;
        d_qkv[..n * width].par_chunks_mut(width).enumerate().for_each(|(token, row)| {
            let (rq, rest) = row.split_at_mut(q_dim);
            let (rk, rv) = rest.split_at_mut(kv_dim);
            rq.copy_from_slice(&d_q[token * q_dim..(token + 1) * q_dim]);
            rk.copy_from_slice(&d_k[token * kv_dim..(token + 1) * kv_dim]);
            rv.copy_from_slice(&d_v[token * kv_dim..(token + 1) * kv_dim]);
            let t = token % shape.seq;
            rotate_heads(rq, table, shape.seq, t, shape.head_dim, -1.0);
            rotate_heads(rk, table, shape.seq, t, shape.head_dim, -1.0);
        });
    }

    fn attention_forward(&self, out: &mut Vec<f32>, lse: &mut Vec<f32>, q: &Vec<f32>, k: &Vec<f32>, v: &Vec<f32>, shape: AttentionShape) {
        attention_forward(out, lse, q, k, v, None, shape, ATTENTION_BLOCK);
    }

    fn supports_segmented_attention(&self) -> bool {
        true
    }

    fn attention_forward_segmented(
        &self,
        out: &mut Vec<f32>,
        lse: &mut Vec<f32>,
        q: &Vec<f32>,
        k: &Vec<f32>,
        v: &Vec<f32>,
        segments: &Vec<u32>,
        shape: AttentionShape,
    ) {
        attention_forward(out, lse, q, k, v, Some(&segments[..shape.batch * shape.seq]), shape, ATTENTION_BLOCK);
    }

    fn attention_backward(
        &self,
        d_q: &mut Vec<f32>,
        d_k: &mut Vec<f32>,
        d_v: &mut Vec<f32>,
        d_out: &Vec<f32>,
        out: &Vec<f32>,
        lse: &Vec<f32>,
        q: &Vec<f32>,
        k: &Vec<f32>,
        v: &Vec<f32>,
        shape: AttentionShape,
    ) {
        attention_backward([d_q, d_k, d_v], d_out, out, lse, [q, k, v], None, shape, ATTENTION_BLOCK);
    }

    fn attention_backward_segmented(
        &self,
        d_q: &mut Vec<f32>,
        d_k: &mut Vec<f32>,
        d_v: &mut Vec<f32>,
        d_out: &Vec<f32>,
        out: &Vec<f32>,
        lse: &Vec<f32>,
        q: &Vec<f32>,
        k: &Vec<f32>,
        v: &Vec<f32>,
        segments: &Vec<u32>,
        shape: AttentionShape,
    ) {
        attention_backward([d_q, d_k, d_v], d_out, out, lse, [q, k, v], Some(&segments[..shape.batch * shape.seq]), shape, ATTENTION_BLOCK);
    }

    fn swiglu_forward(&self, out: &mut Vec<f32>, gate_up: &Vec<f32>, rows: usize, width: usize) {
        out[..rows * width].par_chunks_mut(width).zip(gate_up[..2 * rows * width].par_chunks(2 * width)).for_each(|(o, row)| {
            let (g, u) = row.split_at(width);
            for i in 0..width {
                o[i] = g[i] * sigmoid(g[i]) * u[i];
            }
        });
    }

    fn swiglu_backward(&self, d_gate_up: &mut Vec<f32>, d_out: &Vec<f32>, gate_up: &Vec<f32>, rows: usize, width: usize) {
        d_gate_up[..2 * rows * width]
            .par_chunks_mut(2 * width)
            .zip(d_out[..rows * width].par_chunks(width))
            .zip(gate_up[..2 * rows * width].par_chunks(2 * width))
            .for_each(|((d_row, d), row)| {
                let (dg, du) = d_row.split_at_mut(width);
                let (g, u) = row.split_at(width);
                for i in 0..width {
                    let s = sigmoid(g[i]);
                    du[i] = d[i] * g[i] * s;
                    // d silu(g)/dg = s·(1 + g·(1 − s))
                    dg[i] = d[i] * u[i] * s * (1.0 + g[i] * (1.0 - s));
                }
            });
    }

    fn embedding_forward(&self, out: &mut Vec<f32>, tokens: &Vec<u32>, table: &Vec<f32>, n_tokens: usize, dim: usize) {
        out[..n_tokens * dim].par_chunks_mut(dim).zip(&tokens[..n_tokens]).for_each(|(row, &token)| {
            let at = token as usize * dim;
            row.copy_from_slice(&table[at..at + dim]);
        });
    }

    fn embedding_backward(&self, d_table: &mut Vec<f32>, d_out: &Vec<f32>, tokens: &Vec<u32>, n_tokens: usize, dim: usize) {
        // Serial: repeated tokens add into the same row, and this is a tiny share of a step.
        for (i, &token) in tokens[..n_tokens].iter().enumerate() {
            let at = token as usize * dim;
            add_into(&mut d_table[at..at + dim], &d_out[i * dim..(i + 1) * dim]);
        }
    }

    fn add(&self, out: &mut Vec<f32>, a: &Vec<f32>, b: &Vec<f32>, n: usize) {
        out[..n]
            .par_chunks_mut(ELEMENTWISE_CHUNK)
            .zip(a[..n].par_chunks(ELEMENTWISE_CHUNK))
            .zip(b[..n].par_chunks(ELEMENTWISE_CHUNK))
            .for_each(|((o, a), b)| {
                for i in 0..o.len() {
                    o[i] = a[i] + b[i];
                }
            });
    }

    fn cross_entropy_forward(&self, losses: &mut Vec<f32>, lse: &mut Vec<f32>, logits: &Vec<f32>, targets: &Vec<u32>, rows: usize, vocab: usize) {
        losses[..rows]
            .par_iter_mut()
            .zip(lse[..rows].par_iter_mut())
            .zip(logits[..rows * vocab].par_chunks(vocab))
            .zip(&targets[..rows])
            .for_each(|(((loss, lse), row), &target)| {
                *lse = log_sum_exp(row);
                *loss = if target == IGNORE_TARGET { 0.0 } else { *lse - row[target as usize] };
            });
    }

    fn cross_entropy_backward(&self, logits: &mut Vec<f32>, lse: &Vec<f32>, targets: &Vec<u32>, rows: usize, vocab: usize, scale: f32) {
        logits[..rows * vocab]
            .par_chunks_mut(vocab)
            .zip(&lse[..rows])
            .zip(&targets[..rows])
            .for_each(|((row, &lse), &target)| cross_entropy_gradient_row(row, lse, target, scale));
    }

    fn cross_entropy_backward_weighted(&self, logits: &mut Vec<f32>, lse: &Vec<f32>, targets: &Vec<u32>, row_scales: &[f32], rows: usize, vocab: usize) {
        assert!(row_scales.len() >= rows, "{} row scales for {rows} rows", row_scales.len());
        logits[..rows * vocab].par_chunks_mut(vocab).zip(&lse[..rows]).zip(&targets[..rows]).zip(&row_scales[..rows]).for_each(
            |(((row, &lse), &target), &scale)| cross_entropy_gradient_row(row, lse, target, scale),
        );
    }

    fn sum_squares(&self, x: &Vec<f32>, n: usize) -> f64 {
        sum_squares(&x[..n])
    }

    fn sum_squares_many(&self, xs: &[(&Vec<f32>, Range<usize>)]) -> f64 {
        xs.iter().map(|(x, range)| sum_squares(&x[range.clone()])).sum()
    }

    fn adamw_update(&self, param: &mut Vec<f32>, grad: &Vec<f32>, m: &mut Vec<f32>, v: &mut Vec<f32>, range: Range<usize>, hp: AdamWStep) {
        // The order of operations is PyTorch's AdamW (decay, moments, bias-corrected step).
        let decay = 1.0 - hp.learning_rate * hp.weight_decay;
        let step_size = hp.learning_rate / (1.0 - (hp.beta1 as f64).powi(hp.step as i32)) as f32;
        let bias_correction2_sqrt = (1.0 - (hp.beta2 as f64).powi(hp.step as i32)).sqrt() as f32;
        let n = range.len();
        param[range.clone()]
            .par_chunks_mut(ELEMENTWISE_CHUNK)
            .zip(m[..n].par_chunks_mut(ELEMENTWISE_CHUNK))
            .zip(v[..n].par_chunks_mut(ELEMENTWISE_CHUNK))
            .zip(grad[range].par_chunks(ELEMENTWISE_CHUNK))
            .for_each(|(((p, m), v), g)| {
                for i in 0..p.len() {
                    let g = g[i] * hp.grad_scale;
                    p[i] *= decay;
                    m[i] = hp.beta1 * m[i] + (1.0 - hp.beta1) * g;
                    v[i] = hp.beta2 * v[i] + (1.0 - hp.beta2) * g * g;
                    let denom = v[i].sqrt() / bias_correction2_sqrt + hp.eps;
                    p[i] -= step_size * m[i] / denom;
                }
            });
    }
}

/// Σ x² in f64, in chunks summed in order (the same total whatever the thread count).
fn sum_squares(x: &[f32]) -> f64 {
    let partial: Vec<f64> = x.par_chunks(ELEMENTWISE_CHUNK).map(|c| c.iter().map(|&v| (v as f64) * (v as f64)).sum()).collect();
    partial.iter().sum()
}

/// Causal attention, one task per (sequence, K/V head), in blocks of `block` query rows; with
/// `segments`, a query also skips the keys of other segments (packed sequences).
#[allow(clippy::too_many_arguments)]
fn attention_forward(
    out: &mut [f32],
    lse: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    segments: Option<&[u32]>,
    shape: AttentionShape,
    block: usize,
) {
    let AttentionShape { batch, seq, heads, kv_heads, head_dim } = shape;
    let group = heads / kv_heads;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let views = HeadViews { shape, q, k, v };
    // One task per (batch, K/V head) computes its query heads into local buffers, which are
    // then copied into place (they interleave in `out`, so tasks cannot write there).
    let partials: Vec<(Vec<f32>, Vec<f32>)> = (0..batch * kv_heads)
        .into_par_iter()
        .map(|task| {
            let (b, g) = (task / kv_heads, task % kv_heads);
            let mut head_out = vec![0.0f32; group * seq * head_dim];
            let mut head_lse = vec![0.0f32; group * seq];
            with_attention_scratch(block.min(seq) * seq, |scratch| {
                for r in 0..group {
                    let h = g * group + r;
                    for (first, rows) in causal_blocks(seq, block) {
                        // Rows first..first+rows see keys 0..keys: S = scale · Q Kᵀ there, the
                        // causal mask applied in the softmax, then O = P V.
                        let keys = first + rows;
                        let probabilities = &mut scratch[..rows * keys];
                        gemm_row_major(probabilities, (rows, keys, head_dim), views.q(b, h).skip_rows(first), views.k_transposed(b, g), false, scale, false);
                        for (i, row) in probabilities.chunks_exact_mut(keys).enumerate() {
                            let t = first + i;
                            head_lse[r * seq + t] = match segments {
                                None => softmax_causal_row(row, t),
                                Some(ids) => softmax_segment_row(row, t, &ids[b * seq..(b + 1) * seq]),
                            };
                        }
                        let o = &mut head_out[(r * seq + first) * head_dim..(r * seq + keys) * head_dim];
                        gemm_row_major(o, (rows, head_dim, keys), Strided::rows(probabilities, keys), views.v(b, g), false, 1.0, false);
                    }
                }
            });
            (head_out, head_lse)
        })
        .collect();
    for (task, (head_out, head_lse)) in partials.iter().enumerate() {
        let (b, g) = (task / kv_heads, task % kv_heads);
        for r in 0..group {
            let h = g * group + r;
            for t in 0..seq {
                let row = (b * seq + t) * heads + h;
                out[row * head_dim..(row + 1) * head_dim].copy_from_slice(&head_out[(r * seq + t) * head_dim..][..head_dim]);
                lse[row] = head_lse[r * seq + t];
            }
        }
    }
}

/// The backward of [`attention_forward`] (the same `segments` and blocks).
#[allow(clippy::too_many_arguments)]
fn attention_backward(
    [d_q, d_k, d_v]: [&mut [f32]; 3],
    d_out: &[f32],
    out: &[f32],
    lse: &[f32],
    [q, k, v]: [&[f32]; 3],
    segments: Option<&[u32]>,
    shape: AttentionShape,
    block: usize,
) {
    let AttentionShape { batch, seq, heads, kv_heads, head_dim } = shape;
    let group = heads / kv_heads;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let views = HeadViews { shape, q, k, v };
    let q_offset = |b: usize, t: usize, h: usize| ((b * seq + t) * heads + h) * head_dim;
    let kv_offset = |b: usize, t: usize, g: usize| ((b * seq + t) * kv_heads + g) * head_dim;
    // One task per (batch, K/V head): it owns the gradients of that K/V head and of its
    // query heads, so every sum runs in one fixed order. Results go to task-local buffers
    // and are copied into the outputs afterwards.
    let partials: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = (0..batch * kv_heads)
        .into_par_iter()
        .map(|task| {
            let (b, g) = (task / kv_heads, task % kv_heads);
            let mut dq = vec![0.0f32; group * seq * head_dim];
            let mut dk = vec![0.0f32; seq * head_dim];
            let mut dv = vec![0.0f32; seq * head_dim];
            let block_len = block.min(seq) * seq;
            with_attention_scratch(2 * block_len, |scratch| {
                let (probabilities, d_scores) = scratch.split_at_mut(block_len);
                for r in 0..group {
                    let h = g * group + r;
                    let d_out_h = Strided { data: &d_out[q_offset(b, 0, h)..], row_stride: heads * head_dim, col_stride: 1 };
                    for (first, rows) in causal_blocks(seq, block) {
                        let keys = first + rows;
                        let (p_block, ds_block) = (&mut probabilities[..rows * keys], &mut d_scores[..rows * keys]);
                        let q_rows = views.q(b, h).skip_rows(first);
                        let d_out_rows = d_out_h.skip_rows(first);
                        // Recompute P from the saved log-sum-exp.
                        gemm_row_major(p_block, (rows, keys, head_dim), q_rows.clone(), views.k_transposed(b, g), false, scale, false);
                        // dP = dO Vᵀ
                        gemm_row_major(ds_block, (rows, keys, head_dim), d_out_rows.clone(), views.v_transposed(b, g), false, 1.0, false);
                        for (i, (p, ds)) in p_block.chunks_exact_mut(keys).zip(ds_block.chunks_exact_mut(keys)).enumerate() {
                            let t = first + i;
                            let row_lse = lse[(b * seq + t) * heads + h];
                            let at = q_offset(b, t, h);
                            let do_dot_o = dot(&d_out[at..at + head_dim], &out[at..at + head_dim]);
                            for j in 0..=t {
                                p[j] = math::exp(p[j] - row_lse);
                                // dS = P ⊙ (dP − rowsum(dO ⊙ O)), then the 1/sqrt(d) of S.
                                ds[j] = scale * p[j] * (ds[j] - do_dot_o);
                            }
                            p[t + 1..].fill(0.0);
                            ds[t + 1..].fill(0.0);
                            if let Some(ids) = segments {
                                let ids = &ids[b * seq..(b + 1) * seq];
                                for j in (0..=t).filter(|&j| ids[j] != ids[t]) {
                                    p[j] = 0.0;
                                    ds[j] = 0.0;
                                }
                            }
                        }
                        // dQ = dS K for these rows; dK += dSᵀ Q and dV += Pᵀ dO for keys 0..keys.
                        let dq_rows = &mut dq[(r * seq + first) * head_dim..(r * seq + keys) * head_dim];
                        gemm_row_major(dq_rows, (rows, head_dim, keys), Strided::rows(ds_block, keys), views.k(b, g), false, 1.0, false);
                        gemm_row_major(&mut dk[..keys * head_dim], (keys, head_dim, rows), Strided::columns(ds_block, keys), q_rows, true, 1.0, false);
                        gemm_row_major(&mut dv[..keys * head_dim], (keys, head_dim, rows), Strided::columns(p_block, keys), d_out_rows, true, 1.0, false);
                    }
                }
            });
            (dq, dk, dv)
        })
        .collect();
    for (task, (dq, dk, dv)) in partials.iter().enumerate() {
        let (b, g) = (task / kv_heads, task % kv_heads);
        for t in 0..seq {
            for r in 0..group {
                let at = q_offset(b, t, g * group + r);
                d_q[at..at + head_dim].copy_from_slice(&dq[(r * seq + t) * head_dim..][..head_dim]);
            }
            let at = kv_offset(b, t, g);
            d_k[at..at + head_dim].copy_from_slice(&dk[t * head_dim..][..head_dim]);
            d_v[at..at + head_dim].copy_from_slice(&dv[t * head_dim..][..head_dim]);
        }
    }
}

/// A read-only matrix given by its data and strides (in elements).
#[derive(Clone)]
struct Strided<'a> {
    data: &'a [f32],
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Strided<'a> {
    /// A row-major matrix with `width` columns.
    fn rows(data: &'a [f32], width: usize) -> Self {
        Self { data, row_stride: width, col_stride: 1 }
    }
    /// The transpose of a row-major matrix with `width` columns.
    fn columns(data: &'a [f32], width: usize) -> Self {
        Self { data, row_stride: 1, col_stride: width }
    }
    /// The matrix without its first `rows` rows.
    fn skip_rows(&self, rows: usize) -> Self {
        Self { data: &self.data[rows * self.row_stride..], ..*self }
    }
}

/// `(first row, rows)` of each block of at most `block` query rows over `seq` positions.
fn causal_blocks(seq: usize, block: usize) -> impl Iterator<Item = (usize, usize)> {
    let block = block.max(1);
    (0..seq).step_by(block).map(move |first| (first, block.min(seq - first)))
}

/// Per-head views into attention's `[batch, seq, heads, head_dim]` tensors.
struct HeadViews<'a> {
    shape: AttentionShape,
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
}

impl<'a> HeadViews<'a> {
    /// Query head `h` of sequence `b` as a `[seq, head_dim]` matrix.
    fn q(&self, b: usize, h: usize) -> Strided<'a> {
        let s = self.shape;
        Strided::rows(&self.q[(b * s.seq * s.heads + h) * s.head_dim..], s.heads * s.head_dim)
    }
    fn kv(&self, data: &'a [f32], b: usize, g: usize) -> Strided<'a> {
        let s = self.shape;
        Strided::rows(&data[(b * s.seq * s.kv_heads + g) * s.head_dim..], s.kv_heads * s.head_dim)
    }
    fn k(&self, b: usize, g: usize) -> Strided<'a> {
        self.kv(self.k, b, g)
    }
    fn v(&self, b: usize, g: usize) -> Strided<'a> {
        self.kv(self.v, b, g)
    }
    fn transposed(m: Strided<'a>) -> Strided<'a> {
        Strided { data: m.data, row_stride: m.col_stride, col_stride: m.row_stride }
    }
    fn k_transposed(&self, b: usize, g: usize) -> Strided<'a> {
        Self::transposed(self.k(b, g))
    }
    fn v_transposed(&self, b: usize, g: usize) -> Strided<'a> {
        Self::transposed(self.v(b, g))
    }
}

/// Turns row `t` of causal attention scores into probabilities in place (zero after position
/// `t`) and returns its log-sum-exp.
fn softmax_causal_row(row: &mut [f32], t: usize) -> f32 {
    let (live, masked) = row.split_at_mut(t + 1);
    let max = math::max(live);
    live.iter_mut().for_each(|p| *p = math::exp(*p - max));
    let sum = math::sum_f64(live);
    let inverse = (1.0 / sum) as f32;
    live.iter_mut().for_each(|p| *p *= inverse);
    masked.fill(0.0);
    max + (sum as f32).ln()
}

/// [`softmax_causal_row`] over the keys `j <= t` with `segment_ids[j] == segment_ids[t]`
/// only (zero elsewhere): the other keys become −∞ first, so one segment per row gives the
/// same bits.
fn softmax_segment_row(row: &mut [f32], t: usize, segment_ids: &[u32]) -> f32 {
    let own = segment_ids[t];
    for j in (0..=t).filter(|&j| segment_ids[j] != own) {
        row[j] = f32::NEG_INFINITY;
    }
    softmax_causal_row(row, t)
}

/// `dst[m, n] (row-major) = (accumulate ? dst : 0) + scale · lhs[m, k] · rhs[k, n]`. `parallel`
/// splits the work over rayon's threads (never the k sums, so results do not depend on the
/// thread count); ops that already run one gemm per rayon task pass false.
fn gemm_row_major(dst: &mut [f32], (m, n, k): (usize, usize, usize), lhs: Strided, rhs: Strided, accumulate: bool, scale: f32, parallel: bool) {
    assert!(dst.len() >= m * n);
    let last = |s: &Strided, rows: usize, cols: usize| (rows.max(1) - 1) * s.row_stride + (cols.max(1) - 1) * s.col_stride;
    assert!(m == 0 || k == 0 || last(&lhs, m, k) < lhs.data.len(), "gemm lhs out of bounds");
    assert!(n == 0 || k == 0 || last(&rhs, k, n) < rhs.data.len(), "gemm rhs out of bounds");
    let threads = if parallel { rayon::current_num_threads() } else { 1 };
    let parallelism = if threads > 1 { Parallelism::Rayon(threads) } else { Parallelism::None };
    // SAFETY: the asserts above keep every index the strides reach inside the slices, and
    // `dst` does not alias the inputs (it is borrowed mutably).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Rotate-half RoPE: `direction` 1 rotates by +angle (forward), −1 by −angle (its transpose).
/// Rotate-half RoPE in place on one token's heads (`x` is a whole number of heads) at position
/// `t`; direction -1 applies the inverse rotation (the backward).
fn rotate_heads(x: &mut [f32], table: &[f32], seq: usize, t: usize, head_dim: usize, direction: f32) {
    let half = head_dim / 2;
    let (cos, sin) = table.split_at(seq * half);
    let (c, s) = (&cos[t * half..(t + 1) * half], &sin[t * half..(t + 1) * half]);
    for head in x.chunks_mut(head_dim) {
        let (first, second) = head.split_at_mut(half);
        for i in 0..half {
            let (a, b, sin) = (first[i], second[i], direction * s[i]);
            first[i] = a * c[i] - b * sin;
            second[i] = b * c[i] + a * sin;
        }
    }
}

/// Dot product with eight independent accumulators (so it vectorises) summed in a fixed order.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (a_chunks, b_chunks) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a_chunks.remainder().iter().zip(b_chunks.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7])) + tail
}

fn add_into(y: &mut [f32], x: &[f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += x;
    }
}

/// One row of the cross-entropy gradient in place: `scale · (softmax − onehot(target))`.
fn cross_entropy_gradient_row(row: &mut [f32], lse: f32, target: u32, scale: f32) {
    if target == IGNORE_TARGET {
        row.fill(0.0);
        return;
    }
    for value in row.iter_mut() {
        *value = scale * math::exp(*value - lse);
    }
    row[target as usize] -= scale;
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + math::exp(-x))
}

fn log_sum_exp(row: &[f32]) -> f32 {
    let max = math::max(row);
    // The exponentials go through a small stack buffer so both loops vectorise.
    let mut buffer = [0.0f32; 256];
    let mut sum = 0.0f64;
    for chunk in row.chunks(buffer.len()) {
        let exps = &mut buffer[..chunk.len()];
        exps.iter_mut().zip(chunk).for_each(|(e, &v)| *e = math::exp(v - max));
        sum += math::sum_f64(exps);
    }
    max + (sum as f32).ln()
}

#[cfg(test)]
mod tests;
