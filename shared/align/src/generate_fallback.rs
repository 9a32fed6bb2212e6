//! Greedy decoding with the API of `dsllm_model::generate` (being written with a KV cache on
//! another branch): until that lands, this one reruns the whole forward per new token via
//! `Llama::logits`. Slow for long outputs, exact, and enough for the short answers measured
//! here. Prompts of equal length are decoded together so no padding is needed.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use dsllm_model::{Backend, Llama, TokenBatch, IGNORE_TARGET};

/// How long to decode and where to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationConfig {
    pub max_new_tokens: usize,
    pub stop_token_ids: Vec<u32>,
}

/// Prompts decoded together (bounds the logits held at once).
const GROUP: usize = 32;

/// The new tokens greedy decoding appends to each prompt (a stop token, when reached, is the
/// last one), in prompt order.
pub fn greedy_generate<B: Backend>(model: &mut Llama<B>, prompts: &[Vec<u32>], config: &GenerationConfig) -> Result<Vec<Vec<u32>>> {
    let limit = model.config.max_position_embeddings;
    let vocab = model.config.vocab_size;
    let mut by_length: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, prompt) in prompts.iter().enumerate() {
        if prompt.is_empty() {
            bail!("prompt {i} is empty");
        }
        if prompt.len() >= limit {
            bail!("prompt {i} has {} tokens; the model reads at most {limit}", prompt.len());
        }
        by_length.entry(prompt.len()).or_default().push(i);
    }
    let mut outputs = vec![Vec::new(); prompts.len()];
    for (length, members) in by_length {
        let steps = config.max_new_tokens.min(limit - length);
        for chunk in members.chunks(GROUP) {
            let mut sequences: Vec<Vec<u32>> = chunk.iter().map(|&i| prompts[i].clone()).collect();
            let mut done = vec![false; chunk.len()];
            for _ in 0..steps {
                let seq_len = sequences[0].len();
                let batch = TokenBatch {
                    batch_size: sequences.len(),
                    seq_len,
                    inputs: sequences.concat(),
                    targets: vec![IGNORE_TARGET; sequences.len() * seq_len],
                };
                let logits = model.logits(&batch)?;
                for (b, sequence) in sequences.iter_mut().enumerate() {
                    let row = &logits[(b * seq_len + seq_len - 1) * vocab..][..vocab];
                    let next = argmax(row);
                    sequence.push(next);
                    if !done[b] {
                        outputs[chunk[b]].push(next);
                        done[b] = config.stop_token_ids.contains(&next);
                    }
                }
                if done.iter().all(|&d| d) {
                    break;
                }
            }
        }
    }
    Ok(outputs)
}

/// Index of the largest value; the first one on ties (as torch.argmax).
fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use dsllm_model::{CpuBackend, ModelConfig};

    fn tiny() -> Llama<CpuBackend> {
        let config = ModelConfig {
            hidden_size: 16,
            intermediate_size: 24,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            vocab_size: 13,
            max_position_embeddings: 16,
            rms_norm_eps: 1e-6,
            rope_theta: 10000.0,
            initializer_range: 0.5,
            bos_token_id: None,
            eos_token_id: None,
        };
        Llama::new_random(CpuBackend, config, 3).unwrap()
    }

    #[test]
    fn batched_decoding_equals_one_prompt_at_a_time_and_stops() {
        let mut model = tiny();
        let prompts = vec![vec![1, 2, 3], vec![4, 5], vec![6, 7, 8], vec![9]];
        let free = GenerationConfig { max_new_tokens: 6, stop_token_ids: vec![] };
        let together = greedy_generate(&mut model, &prompts, &free).unwrap();
        for (prompt, out) in prompts.iter().zip(&together) {
            assert_eq!(out.len(), 6);
            assert_eq!(&greedy_generate(&mut model, std::slice::from_ref(prompt), &free).unwrap()[0], out);
            // Each token is the argmax of the logits after the sequence so far.
            let mut seq = prompt.clone();
            for &token in out {
                let n = seq.len();
                let logits = model.logits(&TokenBatch { batch_size: 1, seq_len: n, inputs: seq.clone(), targets: vec![IGNORE_TARGET; n] }).unwrap();
                assert_eq!(argmax(&logits[(n - 1) * 13..]), token);
                seq.push(token);
            }
        }
        let stop = together[0][2];
        let stopped = greedy_generate(&mut model, &prompts[..1], &GenerationConfig { max_new_tokens: 6, stop_token_ids: vec![stop] }).unwrap();
        let first_stop = together[0].iter().position(|&t| t == stop).unwrap();
        assert_eq!(stopped[0], together[0][..=first_stop].to_vec());
        // The context limit caps the new tokens.
        let long = vec![vec![1; 14]];
        assert_eq!(greedy_generate(&mut model, &long, &free).unwrap()[0].len(), 2);
    }
}
