//! Every backward op of the CPU backend against central finite differences of its forward,
//! with the loss `Σ r ⊙ out` for a fixed random `r`; and thread-count independence.

use super::*;
use crate::testutil::{numeric_gradient, random_vec, relative_error};

const B: CpuBackend = CpuBackend;
/// Finite-difference step and the relative error allowed: f32 forward passes limit the
/// precision of the numeric gradient (errors seen: 1e-6 to 3e-5).
const EPS: f32 = 1e-2;
const TOLERANCE: f64 = 1e-3;

fn weighted_sum(out: &[f32], r: &[f32]) -> f64 {
    out.iter().zip(r).map(|(&o, &r)| o as f64 * r as f64).sum()
}

/// Compares `analytic[i]` with finite differences of `loss` over `inputs[i]`, for each input.
fn check(name: &str, inputs: &[Vec<f32>], analytic: &[Vec<f32>], loss: impl Fn(&[Vec<f32>]) -> f64) {
    for (i, grad) in analytic.iter().enumerate() {
        let mut x = inputs[i].clone();
        let (indices, numeric) = numeric_gradient(&mut x, 48, EPS, |xi| {
            let mut all = inputs.to_vec();
            all[i] = xi.to_vec();
            loss(&all)
        });
        let analytic: Vec<f64> = indices.iter().map(|&j| grad[j] as f64).collect();
        let error = relative_error(&analytic, &numeric);
        println!("gradient check {name} input {i}: relative error {error:.2e}");
        assert!(error < TOLERANCE, "{name} input {i}: relative error {error:.2e}");
    }
}

#[test]
fn matmul_backward_matches_finite_differences() {
    let (rows, in_dim, out_dim) = (5, 7, 3);
    let inputs = vec![random_vec(1, rows * in_dim, 1.0), random_vec(2, out_dim * in_dim, 1.0)];
    let r = random_vec(3, rows * out_dim, 1.0);
    let forward = |x: &[Vec<f32>]| {
        let mut out = vec![0.0; rows * out_dim];
        B.matmul_forward(&mut out, &x[0], &x[1], rows, in_dim, out_dim);
        weighted_sum(&out, &r)
    };
    let (mut d_inp, mut d_w) = (vec![0.0; rows * in_dim], vec![0.0; out_dim * in_dim]);
    B.matmul_backward(&mut d_inp, &mut d_w, &r, &inputs[0], &inputs[1], rows, in_dim, out_dim, Store::Add, Store::Add);
    check("matmul", &inputs, &[d_inp, d_w], forward);
}

#[test]
fn rmsnorm_backward_matches_finite_differences() {
    let (rows, dim) = (4, 9);
    let inputs = vec![random_vec(4, rows * dim, 1.0), random_vec(5, dim, 1.0)];
    let r = random_vec(6, rows * dim, 1.0);
    let forward = |x: &[Vec<f32>]| {
        let (mut out, mut rstd) = (vec![0.0; rows * dim], vec![0.0; rows]);
        B.rmsnorm_forward(&mut out, &mut rstd, &x[0], &x[1], rows, dim, 1e-6);
        weighted_sum(&out, &r)
    };
    let (mut out, mut rstd) = (vec![0.0; rows * dim], vec![0.0; rows]);
    B.rmsnorm_forward(&mut out, &mut rstd, &inputs[0], &inputs[1], rows, dim, 1e-6);
    let (mut d_inp, mut d_w) = (vec![0.0; rows * dim], vec![0.0; dim]);
    B.rmsnorm_backward(&mut d_inp, &mut d_w, &r, &inputs[0], &inputs[1], &rstd, rows, dim);
    check("rmsnorm", &inputs, &[d_inp, d_w], forward);
}

#[test]
fn qkv_rope_backward_matches_finite_differences() {
    let shape = AttentionShape { batch: 2, seq: 5, heads: 4, kv_heads: 2, head_dim: 8 };
    let n = shape.batch * shape.seq;
    let (q_dim, kv_dim) = (shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim);
    let table = B.rope_table(shape.seq, shape.head_dim, 10000.0);
    let inputs = vec![random_vec(7, n * (q_dim + 2 * kv_dim), 1.0)];
    let (rq, rk, rv) = (random_vec(8, n * q_dim, 1.0), random_vec(9, n * kv_dim, 1.0), random_vec(10, n * kv_dim, 1.0));
    let forward = |x: &[Vec<f32>]| {
        let (mut q, mut k, mut v) = (vec![0.0; n * q_dim], vec![0.0; n * kv_dim], vec![0.0; n * kv_dim]);
        B.qkv_rope_forward(&mut q, &mut k, &mut v, &x[0], &table, shape);
        weighted_sum(&q, &rq) + weighted_sum(&k, &rk) + weighted_sum(&v, &rv)
    };
    let mut d_qkv = vec![f32::NAN; inputs[0].len()];
    B.qkv_rope_backward(&mut d_qkv, &rq, &rk, &rv, &table, shape);
    check("qkv_rope", &inputs, &[d_qkv], forward);
}

#[test]
fn qkv_rope_splits_and_matches_hugging_face_rotate_half() {
    // Position 1, head_dim 4: inverse frequencies 1 and 1/100; pairs are (x0, x2) and (x1, x3).
    let table = B.rope_table(2, 4, 10000.0);
    let shape = AttentionShape { batch: 1, seq: 2, heads: 1, kv_heads: 1, head_dim: 4 };
    let mut qkv = vec![0.0; 2 * 12];
    qkv[12..].copy_from_slice(&[1.0, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0, 40.0, 5.0, 6.0, 7.0, 8.0]);
    let (mut q, mut k, mut v) = (vec![0.0; 8], vec![0.0; 8], vec![0.0; 8]);
    B.qkv_rope_forward(&mut q, &mut k, &mut v, &qkv, &table, shape);
    let (c0, s0, c1, s1) = (1f32.cos(), 1f32.sin(), 0.01f32.cos(), 0.01f32.sin());
    let rotated = |x: [f32; 4]| [x[0] * c0 - x[2] * s0, x[1] * c1 - x[3] * s1, x[2] * c0 + x[0] * s0, x[3] * c1 + x[1] * s1];
    for (got, want) in q[4..].iter().chain(&k[4..]).zip(rotated([1.0, 2.0, 3.0, 4.0]).iter().chain(&rotated([10.0, 20.0, 30.0, 40.0]))) {
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }
    assert_eq!(&v[4..], &[5.0, 6.0, 7.0, 8.0]);
    assert_eq!(&q[..4], &[0.0; 4]);
}

#[test]
fn matmul_backward_overwrites_or_adds_the_input_gradient() {
    let (rows, in_dim, out_dim) = (5, 7, 3);
    let (inp, w, d_out) = (random_vec(50, rows * in_dim, 1.0), random_vec(51, out_dim * in_dim, 1.0), random_vec(52, rows * out_dim, 1.0));
    let run = |start: f32, store: Store| {
        let (mut d_inp, mut d_w) = (vec![start; rows * in_dim], vec![start; out_dim * in_dim]);
        B.matmul_backward(&mut d_inp, &mut d_w, &d_out, &inp, &w, rows, in_dim, out_dim, store, store);
        (d_inp, d_w)
    };
    let product = run(0.0, Store::Add);
    assert_eq!(run(f32::NAN, Store::Overwrite), product);
    assert_eq!(run(f32::NAN, Store::OverwriteLowPrecision).0, product.0);
    let added = run(2.0, Store::Add);
    for (added, p) in added.0.iter().chain(&added.1).zip(product.0.iter().chain(&product.1)) {
        assert!((added - (p + 2.0)).abs() < 1e-5, "{added} vs {p} + 2");
    }
}

#[test]
fn attention_backward_matches_finite_differences() {
    let shape = AttentionShape { batch: 2, seq: 5, heads: 4, kv_heads: 2, head_dim: 8 };
    let q_len = shape.batch * shape.seq * shape.heads * shape.head_dim;
    let kv_len = shape.batch * shape.seq * shape.kv_heads * shape.head_dim;
    let inputs = vec![random_vec(9, q_len, 1.0), random_vec(10, kv_len, 1.0), random_vec(11, kv_len, 1.0)];
    let r = random_vec(12, q_len, 1.0);
    let run = |x: &[Vec<f32>]| {
        let (mut out, mut lse) = (vec![0.0; q_len], vec![0.0; q_len / shape.head_dim]);
        B.attention_forward(&mut out, &mut lse, &x[0], &x[1], &x[2], shape);
        (out, lse)
    };
    let (out, lse) = run(&inputs);
    // NaN before: backward overwrites its outputs.
    let (mut d_q, mut d_k, mut d_v) = (vec![f32::NAN; q_len], vec![f32::NAN; kv_len], vec![f32::NAN; kv_len]);
    B.attention_backward(&mut d_q, &mut d_k, &mut d_v, &r, &out, &lse, &inputs[0], &inputs[1], &inputs[2], shape);
    check("attention", &inputs, &[d_q, d_k, d_v], |x| weighted_sum(&run(x).0, &r));
}

#[test]
fn attention_is_causal_and_matches_a_direct_softmax() {
    // One query head over one K/V head: the output at t uses only positions ≤ t.
    let shape = AttentionShape { batch: 1, seq: 3, heads: 1, kv_heads: 1, head_dim: 2 };
    let q = vec![1.0, 0.0, 0.5, 0.5, 0.0, 1.0];
    let k = vec![1.0, 2.0, -1.0, 0.0, 3.0, 1.0];
    let v = vec![1.0, 10.0, 2.0, 20.0, 3.0, 30.0];
    let (mut out, mut lse) = (vec![0.0; 6], vec![0.0; 3]);
    B.attention_forward(&mut out, &mut lse, &q, &k, &v, shape);
    assert_eq!(&out[..2], &[1.0, 10.0]);
    let scale = 1.0 / 2f32.sqrt();
    let (s0, s1) = (scale * (0.5 + 1.0), scale * (-0.5));
    let p0 = s0.exp() / (s0.exp() + s1.exp());
    assert!((out[2] - (p0 * 1.0 + (1.0 - p0) * 2.0)).abs() < 1e-6);
}

#[test]
fn swiglu_backward_matches_finite_differences() {
    let (rows, width) = (3, 13);
    let inputs = vec![random_vec(13, rows * 2 * width, 2.0)];
    let r = random_vec(15, rows * width, 1.0);
    let forward = |x: &[Vec<f32>]| {
        let mut out = vec![0.0; rows * width];
        B.swiglu_forward(&mut out, &x[0], rows, width);
        weighted_sum(&out, &r)
    };
    let mut d_gate_up = vec![f32::NAN; rows * 2 * width];
    B.swiglu_backward(&mut d_gate_up, &r, &inputs[0], rows, width);
    check("swiglu", &inputs, &[d_gate_up], forward);
}

#[test]
fn embedding_backward_matches_finite_differences() {
    let (vocab, dim) = (6, 5);
    let tokens = vec![3u32, 0, 3, 5, 1, 3];
    let inputs = vec![random_vec(16, vocab * dim, 1.0)];
    let r = random_vec(17, tokens.len() * dim, 1.0);
    let forward = |x: &[Vec<f32>]| {
        let mut out = vec![0.0; tokens.len() * dim];
        B.embedding_forward(&mut out, &tokens, &x[0], tokens.len(), dim);
        weighted_sum(&out, &r)
    };
    let mut d_table = vec![0.0; vocab * dim];
    B.embedding_backward(&mut d_table, &r, &tokens, tokens.len(), dim);
    check("embedding", &inputs, &[d_table], forward);
}

#[test]
fn cross_entropy_backward_matches_finite_differences() {
    let (rows, vocab) = (4, 7);
    let targets = vec![2u32, IGNORE_TARGET, 6, 0];
    let scale = 0.37;
    let inputs = vec![random_vec(18, rows * vocab, 2.0)];
    let forward = |x: &[Vec<f32>]| {
        let (mut losses, mut lse) = (vec![0.0; rows], vec![0.0; rows]);
        B.cross_entropy_forward(&mut losses, &mut lse, &x[0], &targets, rows, vocab);
        (scale as f64 * losses.iter().map(|&l| l as f64).sum::<f64>(), lse)
    };
    let mut grad = inputs[0].clone();
    B.cross_entropy_backward(&mut grad, &forward(&inputs).1, &targets, rows, vocab, scale);
    assert!(grad[vocab..2 * vocab].iter().all(|&g| g == 0.0), "ignored rows get no gradient");
    check("cross_entropy", &inputs, &[grad], |x| forward(x).0);
}

#[test]
fn adamw_matches_pytorch_formula() {
    let hp = AdamWStep { learning_rate: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, step: 3, grad_scale: 0.5 };
    let (mut p, g, mut m, mut v) = (vec![1.0f32, -2.0], vec![0.4f32, -0.2], vec![0.1f32, 0.0], vec![0.01f32, 0.02]);
    B.adamw_update(&mut p, &g, &mut m, &mut v, 0..2, hp);
    // The same update in f64, written as torch.optim.AdamW does it.
    let expected = |p: f64, g: f64, m: f64, v: f64| {
        let g = g * 0.5;
        let p = p * (1.0 - 1e-2 * 0.1);
        let m = 0.9 * m + 0.1 * g;
        let v = 0.95 * v + 0.05 * g * g;
        let denom = v.sqrt() / (1.0 - 0.95f64.powi(3)).sqrt() + 1e-8;
        p - 1e-2 / (1.0 - 0.9f64.powi(3)) * m / denom
    };
    assert!((p[0] as f64 - expected(1.0, 0.4, 0.1, 0.01)).abs() < 1e-6);
    assert!((p[1] as f64 - expected(-2.0, -0.2, 0.0, 0.02)).abs() < 1e-6);
}

#[test]
fn adamw_on_a_shard_updates_only_that_range() {
    let hp = AdamWStep { learning_rate: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, step: 1, grad_scale: 1.0 };
    let (mut full, g) = (vec![1.0f32, -2.0, 3.0, 0.5, -0.25], vec![0.4f32, -0.2, 0.1, 0.3, -0.6]);
    let (mut m, mut v) = (vec![0.0f32; 5], vec![0.0f32; 5]);
    let mut shard = full.clone();
    B.adamw_update(&mut full, &g, &mut m, &mut v, 0..5, hp);
    let (mut sm, mut sv) = (vec![0.0f32; 2], vec![0.0f32; 2]);
    B.adamw_update(&mut shard, &g, &mut sm, &mut sv, 2..4, hp);
    assert_eq!(&shard[2..4], &full[2..4]);
    assert_eq!((&sm[..], &sv[..]), (&m[2..4], &v[2..4]));
    assert_eq!((&shard[..2], shard[4]), (&[1.0f32, -2.0][..], -0.25), "outside the range nothing moves");
    let sums = B.sum_squares_many(&[(&g, 0..2), (&g, 3..5)]);
    assert!((sums - (0.16 + 0.04 + 0.09 + 0.36)).abs() < 1e-7);
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    // rows is the inner dimension of the weight gradient: large, so gemm splits it in blocks.
    let (rows, in_dim, out_dim) = (1300, 96, 170);
    let inp = random_vec(19, rows * in_dim, 1.0);
    let w = random_vec(20, out_dim * in_dim, 1.0);
    let d_out = random_vec(21, rows * out_dim, 1.0);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut out = vec![0.0; rows * out_dim];
            B.matmul_forward(&mut out, &inp, &w, rows, in_dim, out_dim);
            let (mut d_inp, mut d_w) = (vec![0.0; rows * in_dim], vec![0.0; out_dim * in_dim]);
            B.matmul_backward(&mut d_inp, &mut d_w, &d_out, &inp, &w, rows, in_dim, out_dim, Store::Add, Store::Add);
            let squares = B.sum_squares(&inp, inp.len());
            (out, d_inp, d_w, squares)
        })
    };
    let one = run(1);
    for threads in [2, 3, 4] {
        assert!(one == run(threads), "results differ with {threads} threads");
    }
}

/// Two rows of seven positions: segments 0,0,0,1,1,2,2 and 5,5,5,5,6,6,6.
const SEGMENTS: [u32; 14] = [0, 0, 0, 1, 1, 2, 2, 5, 5, 5, 5, 6, 6, 6];

#[test]
fn segmented_attention_backward_matches_finite_differences() {
    let shape = AttentionShape { batch: 2, seq: 7, heads: 4, kv_heads: 2, head_dim: 8 };
    let q_len = shape.batch * shape.seq * shape.heads * shape.head_dim;
    let kv_len = shape.batch * shape.seq * shape.kv_heads * shape.head_dim;
    let segments = SEGMENTS.to_vec();
    let inputs = vec![random_vec(31, q_len, 1.0), random_vec(32, kv_len, 1.0), random_vec(33, kv_len, 1.0)];
    let r = random_vec(34, q_len, 1.0);
    let run = |x: &[Vec<f32>]| {
        let (mut out, mut lse) = (vec![0.0; q_len], vec![0.0; q_len / shape.head_dim]);
        B.attention_forward_segmented(&mut out, &mut lse, &x[0], &x[1], &x[2], &segments, shape);
        (out, lse)
    };
    let (out, lse) = run(&inputs);
    let (mut d_q, mut d_k, mut d_v) = (vec![0.0; q_len], vec![0.0; kv_len], vec![0.0; kv_len]);
    B.attention_backward_segmented(&mut d_q, &mut d_k, &mut d_v, &r, &out, &lse, &inputs[0], &inputs[1], &inputs[2], &segments, shape);
    check("segmented attention", &inputs, &[d_q, d_k, d_v], |x| weighted_sum(&run(x).0, &r));
}

#[test]
fn segmented_attention_equals_each_segment_alone() {
    // Every segment of a packed row gives the outputs it gives as a sequence of its own.
    let shape = AttentionShape { batch: 2, seq: 7, heads: 2, kv_heads: 1, head_dim: 4 };
    let (qw, kw) = (shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim);
    let n = shape.batch * shape.seq;
    let (q, k, v) = (random_vec(41, n * qw, 1.0), random_vec(42, n * kw, 1.0), random_vec(43, n * kw, 1.0));
    let (mut out, mut lse) = (vec![0.0; n * qw], vec![0.0; n * shape.heads]);
    B.attention_forward_segmented(&mut out, &mut lse, &q, &k, &v, &SEGMENTS.to_vec(), shape);
    let mut start = 0;
    while start < n {
        let end = (start..n).find(|&i| SEGMENTS[i] != SEGMENTS[start]).unwrap_or(n);
        let len = end - start;
        let alone = AttentionShape { batch: 1, seq: len, ..shape };
        let (mut o, mut l) = (vec![0.0; len * qw], vec![0.0; len * shape.heads]);
        B.attention_forward(&mut o, &mut l, &q[start * qw..end * qw].to_vec(), &k[start * kw..end * kw].to_vec(), &v[start * kw..end * kw].to_vec(), alone);
        for (a, b) in o.iter().zip(&out[start * qw..end * qw]) {
            assert!((a - b).abs() < 1e-5, "segment at {start}: {a} vs {b}");
        }
        start = end;
    }
}

/// Random Q, K, V and output gradient for an attention shape (seeds `seed..seed + 4`).
struct AttentionCase {
    q_len: usize,
    kv_len: usize,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    d_out: Vec<f32>,
}

impl AttentionCase {
    fn random(shape: AttentionShape, seed: u64) -> Self {
        let q_len = shape.batch * shape.seq * shape.heads * shape.head_dim;
        let kv_len = shape.batch * shape.seq * shape.kv_heads * shape.head_dim;
        let (q, k, v) = (random_vec(seed, q_len, 1.0), random_vec(seed + 1, kv_len, 1.0), random_vec(seed + 2, kv_len, 1.0));
        Self { q_len, kv_len, q, k, v, d_out: random_vec(seed + 3, q_len, 1.0) }
    }
}

#[test]
fn one_segment_per_row_is_bit_identical_to_causal_attention() {
    let shape = AttentionShape { batch: 2, seq: 6, heads: 4, kv_heads: 2, head_dim: 8 };
    let AttentionCase { q_len, kv_len, q, k, v, d_out } = AttentionCase::random(shape, 51);
    let segments: Vec<u32> = (0..shape.batch * shape.seq).map(|i| (i / shape.seq) as u32 + 3).collect();
    let run = |segmented: bool| {
        let (mut out, mut lse) = (vec![0.0; q_len], vec![0.0; q_len / shape.head_dim]);
        let (mut d_q, mut d_k, mut d_v) = (vec![0.0; q_len], vec![0.0; kv_len], vec![0.0; kv_len]);
        if segmented {
            B.attention_forward_segmented(&mut out, &mut lse, &q, &k, &v, &segments, shape);
            B.attention_backward_segmented(&mut d_q, &mut d_k, &mut d_v, &d_out, &out, &lse, &q, &k, &v, &segments, shape);
        } else {
            B.attention_forward(&mut out, &mut lse, &q, &k, &v, shape);
            B.attention_backward(&mut d_q, &mut d_k, &mut d_v, &d_out, &out, &lse, &q, &k, &v, shape);
        }
        (out, lse, d_q, d_k, d_v)
    };
    assert!(run(true) == run(false));
}

#[test]
fn attention_blocks_give_the_full_square_results() {
    // Blocks of 1, 3 and 4 query rows (the last one partial) against one block over all rows,
    // which computes the whole `seq × seq` square; segments too. Only the order of dK's and
    // dV's sums over blocks differs, so the results agree to float rounding.
    let shape = AttentionShape { batch: 2, seq: 7, heads: 4, kv_heads: 2, head_dim: 8 };
    let AttentionCase { q_len, kv_len, q, k, v, d_out } = AttentionCase::random(shape, 71);
    let run = |block: usize, segments: Option<&[u32]>| {
        let (mut out, mut lse) = (vec![0.0; q_len], vec![0.0; q_len / shape.head_dim]);
        let (mut d_q, mut d_k, mut d_v) = (vec![f32::NAN; q_len], vec![f32::NAN; kv_len], vec![f32::NAN; kv_len]);
        attention_forward(&mut out, &mut lse, &q, &k, &v, segments, shape, block);
        attention_backward([&mut d_q, &mut d_k, &mut d_v], &d_out, &out, &lse, [&q, &k, &v], segments, shape, block);
        [out, lse, d_q, d_k, d_v]
    };
    for segments in [None, Some(&SEGMENTS[..])] {
        let full = run(shape.seq, segments);
        for block in [1, 3, 4] {
            for (name, (got, want)) in ["out", "lse", "d_q", "d_k", "d_v"].iter().zip(run(block, segments).iter().zip(&full)) {
                for (a, b) in got.iter().zip(want) {
                    assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{name}, blocks of {block}: {a} vs {b}");
                }
            }
        }
    }
}

#[test]
fn weighted_cross_entropy_backward_scales_each_row() {
    let (rows, vocab) = (4, 6);
    let logits = random_vec(61, rows * vocab, 1.0);
    let targets = vec![1, IGNORE_TARGET, 5, 0];
    let scales = [0.5, 2.0, -1.5, 0.0];
    let (mut losses, mut lse) = (vec![0.0; rows], vec![0.0; rows]);
    B.cross_entropy_forward(&mut losses, &mut lse, &logits, &targets, rows, vocab);
    let mut weighted = logits.clone();
    B.cross_entropy_backward_weighted(&mut weighted, &lse, &targets, &scales, rows, vocab);
    let mut unit = logits.clone();
    B.cross_entropy_backward(&mut unit, &lse, &targets, rows, vocab, 1.0);
    for r in 0..rows {
        for j in 0..vocab {
            assert_eq!(weighted[r * vocab + j], scales[r] * unit[r * vocab + j]);
        }
    }
    // The trait's default (unscaled op, then rows scaled on the host) gives the same.
    let mut via_default = logits.clone();
    <CpuBackend as Backend>::cross_entropy_backward(&B, &mut via_default, &lse, &targets, rows, vocab, 1.0);
    via_default.chunks_mut(vocab).zip(scales).for_each(|(row, s)| row.iter_mut().for_each(|x| *x *= s));
    assert_eq!(via_default, weighted);
}
