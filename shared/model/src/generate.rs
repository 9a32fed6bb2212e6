//! Inference with a KV cache: feed new tokens to sequences whose past keys and values are
//! kept, get their logits, and decode greedily.
//!
//! The projections, norms, feed-forward and output layer run on the model's [`Backend`] over
//! all new tokens of all sequences at once (one row each), so they batch on both CPU and
//! CUDA. RoPE and attention against the cache run on the host: sequences of a batch sit at
//! different positions and have caches of different lengths, which the backend's square
//! causal `attention_forward` does not express, and per-row work over a cache is small next to
//! the matmuls for the models this runs on. Each layer downloads the new rows' Q, K and V and
//! uploads the attention output (rows × width, never the cache), so no backend method was added.
//!
//! The same [`extend`] scores multiple-choice continuations with the shared context computed
//! once: extend a cache with the context, clone it per choice, extend each clone with its choice.

use anyhow::{bail, Result};
use rayon::prelude::*;

use crate::backend::Backend;
use crate::config::ModelConfig;
use crate::model::Llama;

/// When [`greedy_generate`] stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationConfig {
    /// At most this many new tokens per prompt.
    pub max_new_tokens: usize,
    /// Generating one of these ends the sequence; the stop token is not returned.
    pub stop_token_ids: Vec<u32>,
}

/// Keys (after RoPE) and values of one sequence's past tokens, per layer, in host memory.
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceCache {
    len: usize,
    /// `keys[layer]` is `[len, kv_dim]`.
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
}

impl SequenceCache {
    /// An empty cache for a sequence of `config`'s model.
    pub fn new(config: &ModelConfig) -> Self {
        let layers = config.num_hidden_layers;
        Self { len: 0, keys: vec![Vec::new(); layers], values: vec![Vec::new(); layers] }
    }

    /// Tokens seen so far (the position of the next one).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Which rows of logits [`extend`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitRows {
    /// One row per new token, sequences in order.
    All,
    /// One row per sequence: after its last new token (what decoding needs).
    Last,
}

/// Feeds `tokens[i]` to the sequence of `caches[i]`, appends their keys and values, and returns
/// the logits (`[rows, vocab_size]`, f32) of the rows `rows` asks for. Equal to the logits a
/// full forward over each whole sequence gives at those positions.
pub fn extend<B: Backend>(model: &Llama<B>, caches: &mut [&mut SequenceCache], tokens: &[&[u32]], rows: LogitRows) -> Result<Vec<f32>> {
    if caches.len() != tokens.len() {
        bail!("{} caches for {} token lists", caches.len(), tokens.len());
    }
    let c = &model.config;
    let vocab = c.vocab_size;
    for (cache, new) in caches.iter().zip(tokens) {
        if new.is_empty() {
            bail!("extend needs at least one new token per sequence");
        }
        if cache.len + new.len() > c.max_position_embeddings {
            bail!("sequence of {} tokens exceeds max_position_embeddings {}", cache.len + new.len(), c.max_position_embeddings);
        }
        if let Some(bad) = new.iter().find(|&&id| id as usize >= vocab) {
            bail!("token id {bad} is outside the model's vocabulary of {vocab}");
        }
    }
    let (be, w) = (&model.backend, &model.weights);
    let (d, ff) = (c.hidden_size, c.intermediate_size);
    let (heads, kv_heads, head_dim) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim());
    let (q_dim, kv_dim) = (heads * head_dim, c.kv_dim());
    let eps = c.rms_norm_eps as f32;
    let all_tokens: Vec<u32> = tokens.concat();
    let n = all_tokens.len();
    // Row r of the batch: (sequence, position).
    let row_positions: Vec<(usize, usize)> = caches
        .iter()
        .zip(tokens)
        .enumerate()
        .flat_map(|(s, (cache, new))| (0..new.len()).map(move |j| (s, cache.len + j)))
        .collect();
    let rope = HostRope::new(head_dim, c.rope_theta);

    let token_buf = be.upload_tokens(&all_tokens);
    let mut x = be.alloc(n * d);
    let (mut norm, mut rstd, mut mid, mut projection) = (be.alloc(n * d), be.alloc(n), be.alloc(n * d), be.alloc(n * d));
    let qkv_dim = q_dim + 2 * kv_dim;
    let (mut qkv, mut attn) = (be.alloc(n * qkv_dim), be.alloc(n * q_dim));
    let (mut gate_up, mut swiglu) = (be.alloc(n * 2 * ff), be.alloc(n * ff));
    be.embedding_forward(&mut x, &token_buf, &w.embed_tokens, n, d);
    for (l, lw) in w.layers.iter().enumerate() {
        be.rmsnorm_forward(&mut norm, &mut rstd, &x, &lw.input_layernorm, n, d, eps);
        be.matmul_forward(&mut qkv, &norm, &lw.qkv_proj, n, d, qkv_dim);
        // Split on the host: RoPE here rotates each row at its own cache position.
        let host_qkv = be.download(&qkv);
        let part = |range: std::ops::Range<usize>| -> Vec<f32> { host_qkv[..n * qkv_dim].chunks(qkv_dim).flat_map(|row| row[range.clone()].to_vec()).collect() };
        let (mut host_q, mut host_k, host_v) = (part(0..q_dim), part(q_dim..q_dim + kv_dim), part(q_dim + kv_dim..qkv_dim));
        rope.rotate_rows(&mut host_q, &row_positions, heads);
        rope.rotate_rows(&mut host_k, &row_positions, kv_heads);
        let mut row = 0;
        for (cache, new) in caches.iter_mut().zip(tokens) {
            let span = row * kv_dim..(row + new.len()) * kv_dim;
            cache.keys[l].extend_from_slice(&host_k[span.clone()]);
            cache.values[l].extend_from_slice(&host_v[span]);
            row += new.len();
        }
        let out = cached_attention(&host_q, caches, l, &row_positions, heads, kv_heads, head_dim);
        be.write(&mut attn, &out);
        be.matmul_forward(&mut projection, &attn, &lw.o_proj, n, q_dim, d);
        be.add(&mut mid, &x, &projection, n * d);
        be.rmsnorm_forward(&mut norm, &mut rstd, &mid, &lw.post_attention_layernorm, n, d, eps);
        be.matmul_forward(&mut gate_up, &norm, &lw.gate_up_proj, n, d, 2 * ff);
        be.swiglu_forward(&mut swiglu, &gate_up, n, ff);
        be.matmul_forward(&mut projection, &swiglu, &lw.down_proj, n, ff, d);
        be.add(&mut x, &mid, &projection, n * d);
    }
    for (cache, new) in caches.iter_mut().zip(tokens) {
        cache.len += new.len();
    }
    be.rmsnorm_forward(&mut norm, &mut rstd, &x, &w.norm, n, d, eps);
    let (selected, out_rows) = match rows {
        LogitRows::All => (norm, n),
        LogitRows::Last => {
            // Only the last row of each sequence goes through the output layer.
            let hidden = be.download(&norm);
            let mut last_rows = Vec::with_capacity(tokens.len() * d);
            let mut end = 0;
            for new in tokens {
                end += new.len();
                last_rows.extend_from_slice(&hidden[(end - 1) * d..end * d]);
            }
            (be.upload(&last_rows), tokens.len())
        }
    };
    let mut logits = be.alloc(out_rows * vocab);
    be.matmul_forward(&mut logits, &selected, &w.lm_head, out_rows, d, vocab);
    let mut host = be.download(&logits);
    host.truncate(out_rows * vocab);
    Ok(host)
}

/// Rotate-half RoPE at arbitrary positions, with the CPU backend's table arithmetic (f32
/// inverse frequencies, `angle = position · frequency`), so cached and full forwards agree.
struct HostRope {
    inverse_frequency: Vec<f32>,
}

impl HostRope {
    fn new(head_dim: usize, theta: f64) -> Self {
        let half = head_dim / 2;
        let inverse_frequency = (0..half).map(|i| 1.0 / (theta as f32).powf((2 * i) as f32 / head_dim as f32)).collect();
        Self { inverse_frequency }
    }

    /// `x[rows, heads, head_dim]` in place; row r is at position `row_positions[r].1`.
    fn rotate_rows(&self, x: &mut [f32], row_positions: &[(usize, usize)], heads: usize) {
        let half = self.inverse_frequency.len();
        let width = heads * 2 * half;
        x[..row_positions.len() * width].par_chunks_mut(width).zip(row_positions).for_each(|(row, &(_, position))| {
            let (cos, sin): (Vec<f32>, Vec<f32>) = self
                .inverse_frequency
                .iter()
                .map(|f| {
                    let angle = position as f32 * f;
                    (angle.cos(), angle.sin())
                })
                .unzip();
            for head in row.chunks_mut(2 * half) {
                let (first, second) = head.split_at_mut(half);
                for i in 0..half {
                    let (a, b) = (first[i], second[i]);
                    first[i] = a * cos[i] - b * sin[i];
                    second[i] = b * cos[i] + a * sin[i];
                }
            }
        });
    }
}

/// Softmax attention of each new row's query heads over its sequence's cached keys and values
/// up to and including its own position; returns `[rows, heads · head_dim]`.
fn cached_attention(
    q: &[f32],
    caches: &[&mut SequenceCache],
    layer: usize,
    row_positions: &[(usize, usize)],
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
) -> Vec<f32> {
    let q_dim = heads * head_dim;
    let kv_dim = kv_heads * head_dim;
    let group = heads / kv_heads;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let mut out = vec![0.0f32; row_positions.len() * q_dim];
    out.par_chunks_mut(q_dim).zip(q.par_chunks(q_dim)).zip(row_positions).for_each(|((out_row, q_row), &(s, position))| {
        let (keys, values) = (&caches[s].keys[layer], &caches[s].values[layer]);
        let visible = position + 1;
        let mut scores = vec![0.0f32; visible];
        for h in 0..heads {
            let g = h / group;
            let qh = &q_row[h * head_dim..(h + 1) * head_dim];
            let mut max = f32::NEG_INFINITY;
            for (t, score) in scores.iter_mut().enumerate() {
                let kt = &keys[t * kv_dim + g * head_dim..][..head_dim];
                *score = scale * qh.iter().zip(kt).map(|(a, b)| a * b).sum::<f32>();
                max = max.max(*score);
            }
            let mut total = 0.0f32;
            for score in scores.iter_mut() {
                *score = (*score - max).exp();
                total += *score;
            }
            let oh = &mut out_row[h * head_dim..(h + 1) * head_dim];
            for (t, &p) in scores.iter().enumerate() {
                let vt = &values[t * kv_dim + g * head_dim..][..head_dim];
                for (o, &vv) in oh.iter_mut().zip(vt) {
                    *o += p * vv;
                }
            }
            for o in oh.iter_mut() {
                *o /= total;
            }
        }
    });
    out
}

/// Index of the largest value (the first one on ties, as `torch.argmax`).
pub fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &value) in row.iter().enumerate() {
        if value > row[best] {
            best = i;
        }
    }
    best as u32
}

/// Greedy decoding of every prompt, batched, with a KV cache; returns only the new tokens of
/// each prompt. A sequence ends at a stop token (not returned), after `max_new_tokens`, or
/// when it reaches the model's context length.
pub fn greedy_generate<B: Backend>(model: &mut Llama<B>, prompts: &[Vec<u32>], config: &GenerationConfig) -> Result<Vec<Vec<u32>>> {
    greedy_generate_until(model, prompts, config, |_, _| false)
}

/// [`greedy_generate`] that also ends sequence `i` when `stop(i, new_tokens_so_far)` says so
/// (checked after each new token): stop sequences on decoded text live in the caller.
pub fn greedy_generate_until<B: Backend>(
    model: &mut Llama<B>,
    prompts: &[Vec<u32>],
    config: &GenerationConfig,
    mut stop: impl FnMut(usize, &[u32]) -> bool,
) -> Result<Vec<Vec<u32>>> {
    let vocab = model.config.vocab_size;
    let context = model.config.max_position_embeddings;
    let mut outputs = vec![Vec::new(); prompts.len()];
    if config.max_new_tokens == 0 || prompts.is_empty() {
        return Ok(outputs);
    }
    for (i, prompt) in prompts.iter().enumerate() {
        if prompt.is_empty() {
            bail!("prompt {i} is empty: greedy decoding needs at least one token to condition on");
        }
        if prompt.len() > context {
            bail!("prompt {i} has {} tokens; the model's context is {context}", prompt.len());
        }
    }
    let mut caches: Vec<SequenceCache> = prompts.iter().map(|_| SequenceCache::new(&model.config)).collect();
    let mut active: Vec<usize> = (0..prompts.len()).collect();
    let mut feed: Vec<Vec<u32>> = prompts.to_vec();
    while !active.is_empty() {
        let logits = {
            let mut refs: Vec<&mut SequenceCache> = caches.iter_mut().enumerate().filter(|(i, _)| active.contains(i)).map(|(_, c)| c).collect();
            let token_refs: Vec<&[u32]> = active.iter().map(|&i| feed[i].as_slice()).collect();
            extend(model, &mut refs, &token_refs, LogitRows::Last)?
        };
        let mut still_active = Vec::with_capacity(active.len());
        for (row, &i) in active.iter().enumerate() {
            let next = argmax(&logits[row * vocab..(row + 1) * vocab]);
            if config.stop_token_ids.contains(&next) {
                continue;
            }
            outputs[i].push(next);
            let done = outputs[i].len() >= config.max_new_tokens || caches[i].len() >= context || stop(i, &outputs[i]);
            if !done {
                feed[i] = vec![next];
                still_active.push(i);
            }
        }
        active = still_active;
    }
    Ok(outputs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::CpuBackend;
    use crate::model::TokenBatch;
    use crate::testutil::tiny_test_config;
    use crate::IGNORE_TARGET;

    fn model() -> Llama<CpuBackend> {
        Llama::new_random(CpuBackend, tiny_test_config(), 7).unwrap()
    }

    fn full_logits(model: &mut Llama<CpuBackend>, tokens: &[u32]) -> Vec<f32> {
        let batch = TokenBatch { batch_size: 1, seq_len: tokens.len(), inputs: tokens.to_vec(), targets: vec![IGNORE_TARGET; tokens.len()] };
        model.logits(&batch).unwrap()
    }

    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    #[test]
    fn cached_decode_matches_full_forward() {
        let mut model = model();
        let vocab = model.config.vocab_size;
        let first: Vec<u32> = vec![1, 5, 9, 3, 0, 7, 2, 8, 10, 4, 6, 1, 3];
        let second: Vec<u32> = vec![4, 4, 2, 9, 1];
        let (full_a, full_b) = (full_logits(&mut model, &first), full_logits(&mut model, &second));
        let (mut a, mut b) = (SequenceCache::new(&model.config), SequenceCache::new(&model.config));
        // Prefill both sequences together (different lengths), then decode in uneven chunks.
        let got = extend(&model, &mut [&mut a, &mut b], &[&first[..6], &second[..2]], LogitRows::All).unwrap();
        assert!(max_abs_diff(&got[..6 * vocab], &full_a[..6 * vocab]) < 1e-5);
        assert!(max_abs_diff(&got[6 * vocab..], &full_b[..2 * vocab]) < 1e-5);
        let got = extend(&model, &mut [&mut a, &mut b], &[&first[6..7], &second[2..5]], LogitRows::All).unwrap();
        assert!(max_abs_diff(&got[..vocab], &full_a[6 * vocab..7 * vocab]) < 1e-5);
        assert!(max_abs_diff(&got[vocab..], &full_b[2 * vocab..5 * vocab]) < 1e-5);
        for t in 7..first.len() {
            let got = extend(&model, &mut [&mut a], &[&first[t..t + 1]], LogitRows::Last).unwrap();
            let diff = max_abs_diff(&got, &full_a[t * vocab..(t + 1) * vocab]);
            assert!(diff < 1e-5, "position {t}: {diff:e}");
        }
        assert_eq!((a.len(), b.len()), (first.len(), second.len()));
    }

    #[test]
    fn forked_caches_score_like_separate_sequences() {
        let model = model();
        let vocab = model.config.vocab_size;
        let mut context = SequenceCache::new(&model.config);
        extend(&model, &mut [&mut context], &[&[3, 1, 4, 1, 5]], LogitRows::Last).unwrap();
        let (mut x, mut y) = (context.clone(), context.clone());
        let forked = extend(&model, &mut [&mut x, &mut y], &[&[9, 2], &[6]], LogitRows::All).unwrap();
        let mut alone = SequenceCache::new(&model.config);
        let direct = extend(&model, &mut [&mut alone], &[&[3, 1, 4, 1, 5, 6]], LogitRows::Last).unwrap();
        assert!(max_abs_diff(&forked[2 * vocab..], &direct) < 1e-5);
    }

    #[test]
    fn greedy_generation_equals_repeated_full_forwards() {
        let mut model = model();
        let vocab = model.config.vocab_size;
        let prompts = vec![vec![1, 2, 3], vec![7], vec![5, 5, 5, 5, 5, 5]];
        let config = GenerationConfig { max_new_tokens: 8, stop_token_ids: vec![] };
        let generated = greedy_generate(&mut model, &prompts, &config).unwrap();
        for (prompt, new) in prompts.iter().zip(&generated) {
            assert_eq!(new.len(), 8);
            let mut sequence = prompt.clone();
            for _ in 0..8 {
                let logits = full_logits(&mut model, &sequence);
                sequence.push(argmax(&logits[(sequence.len() - 1) * vocab..]));
            }
            assert_eq!(&sequence[prompt.len()..], new.as_slice());
        }
    }

    #[test]
    fn generation_stops_at_stop_tokens_callbacks_and_context() {
        let mut model = model();
        let prompts = vec![vec![1, 2, 3]];
        let free = greedy_generate(&mut model, &prompts, &GenerationConfig { max_new_tokens: 6, stop_token_ids: vec![] }).unwrap();
        let stop_at = free[0][2];
        let first_stop = free[0].iter().position(|&t| t == stop_at).unwrap();
        let stopped = greedy_generate(&mut model, &prompts, &GenerationConfig { max_new_tokens: 6, stop_token_ids: vec![stop_at] }).unwrap();
        assert_eq!(stopped[0], free[0][..first_stop]);
        let config = GenerationConfig { max_new_tokens: 6, stop_token_ids: vec![] };
        let two = greedy_generate_until(&mut model, &prompts, &config, |_, new| new.len() == 2).unwrap();
        assert_eq!(two[0], free[0][..2]);
        let long = greedy_generate(&mut model, &[vec![1; 30]], &GenerationConfig { max_new_tokens: 10, stop_token_ids: vec![] }).unwrap();
        assert_eq!(long[0].len(), 3, "32-token context: 30 prompt tokens leave room to predict 3");
        assert!(greedy_generate(&mut model, &[vec![]], &config).is_err());
    }
}
