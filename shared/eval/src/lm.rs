//! The model side of evaluation: a checkpoint and its tokenizer answering lm-evaluation-harness's
//! three requests: the log-likelihood of a continuation given a context, greedy generation
//! until a stop sequence, and the log-likelihood of whole documents (bits per byte).
//!
//! Tokenization follows lm-eval's `HFLM` (0.4.13) so scores are comparable: text is encoded
//! with the tokenizer's default special tokens (a BOS where it adds one); trailing spaces of the
//! context move to the continuation; the continuation's tokens are those of
//! `encode(context + continuation)` after `len(encode(context))`; an empty context becomes the
//! BOS (else end-of-text) token; contexts are cut from the left to fit the context length.
//! Bits per byte is ds-pretrain's: documents encoded without special tokens, each after the
//! end-of-text token that ends the previous document in packed training data.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use dsllm_model::generate::{argmax, extend, greedy_generate_until, GenerationConfig, LogitRows, SequenceCache};
use dsllm_model::{Backend, Llama, ModelConfig, TokenBatch, IGNORE_TARGET};
use rayon::prelude::*;

/// A Hugging Face `tokenizer.json`, whatever trained it.
pub struct EvalTokenizer {
    inner: tokenizers::Tokenizer,
    /// End of text: stops generation.
    pub eos_id: u32,
    /// Stands for an empty context: BOS when the tokenizer has one, else end of text
    /// (lm-eval's `prefix_token_id`).
    pub prefix_id: u32,
}

impl EvalTokenizer {
    /// `dir/tokenizer.json`; the end-of-text and BOS ids from the model config, else
    /// `tokenizer_config.json`, else `dsllm_tokenizer.json`.
    pub fn load(dir: &Path, model: &ModelConfig) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| anyhow::anyhow!("cannot load {}: {e}", path.display()))?;
        let from_json = |file: &str, key: &str| -> Option<serde_json::Value> {
            let text = std::fs::read_to_string(dir.join(file)).ok()?;
            serde_json::from_str::<serde_json::Value>(&text).ok()?.get(key).cloned()
        };
        let special = |config_id: Option<u32>, name: &str, dsllm_key: &str| {
            config_id
                .or_else(|| {
                    let token = from_json("tokenizer_config.json", name)?;
                    let text = token.as_str().map(str::to_string).or_else(|| token.get("content")?.as_str().map(str::to_string))?;
                    inner.token_to_id(&text)
                })
                .or_else(|| from_json("dsllm_tokenizer.json", dsllm_key)?.as_u64().map(|id| id as u32))
        };
        let eos_id = special(model.eos_token_id, "eos_token", "eos_id")
            .with_context(|| format!("no end-of-text token: none in the model's config.json, {}/tokenizer_config.json or dsllm_tokenizer.json", dir.display()))?;
        let prefix_id = special(model.bos_token_id, "bos_token", "bos_id").unwrap_or(eos_id);
        Ok(Self { inner, eos_id, prefix_id })
    }

    /// As Python `tokenizer.encode(text)`: with the special tokens the tokenizer adds by
    /// default (a BOS for LLaMA and DeepSeek tokenizers), as lm-eval encodes.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_with(text, true)
    }

    /// As Python `tokenizer.encode(text, add_special_tokens=False)`.
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_with(text, false)
    }

    fn encode_with(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        let encoding = self.inner.encode_fast(text, special).map_err(|e| anyhow::anyhow!("cannot tokenize {:?}: {e}", preview(text)))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Text of `ids` without special tokens (as lm-eval decodes generations).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(|e| anyhow::anyhow!("cannot decode {ids:?}: {e}"))
    }
}

fn preview(text: &str) -> String {
    text.chars().take(60).collect()
}

/// `log P(continuation | context)` request, as text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LoglikelihoodRequest {
    pub context: String,
    pub continuation: String,
}

/// The answer to a [`LoglikelihoodRequest`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Loglikelihood {
    /// Summed natural-log probability of the continuation's tokens.
    pub logprob: f64,
    /// Whether greedy decoding reproduces the continuation (lm-eval's `is_greedy`).
    pub greedy: bool,
    pub tokens: usize,
}

/// How [`Evaluator::loglikelihoods`] shares work between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoringMode {
    /// Each distinct context runs once into a KV cache; every continuation of it extends a copy.
    PrefixCache,
    /// One forward over `context + continuation` per request, batched (lm-eval's way).
    FullForward,
}

/// Log-likelihood and bits-per-byte totals over documents.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TextLoss {
    pub nats: f64,
    pub tokens: u64,
    pub bytes: u64,
}

impl TextLoss {
    pub fn bits_per_byte(&self) -> f64 {
        self.nats / std::f64::consts::LN_2 / self.bytes.max(1) as f64
    }
    pub fn token_perplexity(&self) -> f64 {
        (self.nats / self.tokens.max(1) as f64).exp()
    }
}

/// A model and its tokenizer, answering evaluation requests.
pub struct Evaluator<B: Backend> {
    pub model: Llama<B>,
    pub tokenizer: EvalTokenizer,
    pub mode: ScoringMode,
    /// Upper bound of tokens per forward (rows of logits held at once).
    pub batch_tokens: usize,
    /// Prompts decoded together.
    pub generation_batch: usize,
}

impl<B: Backend> Evaluator<B> {
    pub fn new(model: Llama<B>, tokenizer: EvalTokenizer) -> Self {
        Self { model, tokenizer, mode: ScoringMode::PrefixCache, batch_tokens: 2048, generation_batch: 16 }
    }

    fn max_length(&self) -> usize {
        self.model.config.max_position_embeddings
    }

    /// lm-eval's `_encode_pair` and its left truncation: `(context, continuation)` tokens with
    /// `context.len() + continuation.len() <= max_length + 1` and a non-empty context.
    pub fn encode_pair(&self, context: &str, continuation: &str) -> Result<(Vec<u32>, Vec<u32>)> {
        let (mut context_enc, mut continuation_enc) = if context.is_empty() {
            let continuation_enc = self.tokenizer.encode_plain(continuation)?;
            match continuation_enc.first() {
                Some(&first) if first == self.tokenizer.prefix_id => (vec![first], continuation_enc[1..].to_vec()),
                _ => (vec![self.tokenizer.prefix_id], continuation_enc),
            }
        } else {
            let trimmed = context.trim_end();
            let (context, continuation) = (trimmed, format!("{}{continuation}", &context[trimmed.len()..]));
            let whole = self.tokenizer.encode(&format!("{context}{continuation}"))?;
            let context_enc = self.tokenizer.encode(context)?;
            let split = context_enc.len().min(whole.len());
            (context_enc, whole[split..].to_vec())
        };
        if context_enc.is_empty() {
            context_enc.push(self.tokenizer.prefix_id);
        }
        if continuation_enc.is_empty() {
            bail!("continuation {:?} has no tokens after context {:?}", preview(continuation), preview(context));
        }
        let max = self.max_length();
        if continuation_enc.len() > max {
            continuation_enc.drain(..continuation_enc.len() - max);
        }
        let keep = (max + 1 - continuation_enc.len()).min(context_enc.len());
        context_enc.drain(..context_enc.len() - keep);
        Ok((context_enc, continuation_enc))
    }

    /// The log-likelihood of each request's continuation.
    pub fn loglikelihoods(&mut self, requests: &[LoglikelihoodRequest]) -> Result<Vec<Loglikelihood>> {
        let pairs = requests.iter().map(|r| self.encode_pair(&r.context, &r.continuation)).collect::<Result<Vec<_>>>()?;
        self.score_tokens(&pairs)
    }

    /// [`Evaluator::loglikelihoods`] of already tokenized `(context, continuation)` pairs.
    pub fn score_tokens(&mut self, pairs: &[(Vec<u32>, Vec<u32>)]) -> Result<Vec<Loglikelihood>> {
        match self.mode {
            ScoringMode::PrefixCache => self.score_with_prefix_cache(pairs),
            ScoringMode::FullForward => self.score_with_full_forwards(pairs),
        }
    }

    fn score_with_prefix_cache(&mut self, pairs: &[(Vec<u32>, Vec<u32>)]) -> Result<Vec<Loglikelihood>> {
        let vocab = self.model.config.vocab_size;
        // Requests grouped by their context tokens, in order of first appearance.
        let mut group_of: HashMap<&[u32], usize> = HashMap::new();
        let mut groups: Vec<(&[u32], Vec<usize>)> = Vec::new();
        for (i, (context, _)) in pairs.iter().enumerate() {
            let g = *group_of.entry(context.as_slice()).or_insert_with(|| {
                groups.push((context.as_slice(), Vec::new()));
                groups.len() - 1
            });
            groups[g].1.push(i);
        }
        let mut results = vec![Loglikelihood { logprob: 0.0, greedy: true, tokens: 0 }; pairs.len()];
        let mut start = 0;
        while start < groups.len() {
            // As many groups as fit the token budget (at least one).
            let mut end = start;
            let mut tokens = 0;
            while end < groups.len() {
                let size = groups[end].0.len() + groups[end].1.iter().map(|&i| pairs[i].1.len()).sum::<usize>();
                if end > start && tokens + size > self.batch_tokens {
                    break;
                }
                tokens += size;
                end += 1;
            }
            let chunk = &groups[start..end];
            let mut context_caches: Vec<SequenceCache> = chunk.iter().map(|_| SequenceCache::new(&self.model.config)).collect();
            let last_logits = {
                let mut refs: Vec<&mut SequenceCache> = context_caches.iter_mut().collect();
                let contexts: Vec<&[u32]> = chunk.iter().map(|(c, _)| *c).collect();
                extend(&self.model, &mut refs, &contexts, LogitRows::Last)?
            };
            // Each continuation: its first token scored from the context's last row; the rest
            // from a copy of the context's cache extended by the continuation but its last token.
            let mut forks: Vec<(usize, SequenceCache)> = Vec::new();
            for (g, (_, members)) in chunk.iter().enumerate() {
                for &i in members {
                    let continuation = &pairs[i].1;
                    let (logprob, greedy) = score_row(&last_logits[g * vocab..(g + 1) * vocab], continuation[0]);
                    results[i] = Loglikelihood { logprob, greedy, tokens: continuation.len() };
                    if continuation.len() > 1 {
                        forks.push((i, context_caches[g].clone()));
                    }
                }
            }
            if !forks.is_empty() {
                let inputs: Vec<&[u32]> = forks.iter().map(|(i, _)| &pairs[*i].1[..pairs[*i].1.len() - 1]).collect();
                let logits = {
                    let mut refs: Vec<&mut SequenceCache> = forks.iter_mut().map(|(_, c)| c).collect();
                    extend(&self.model, &mut refs, &inputs, LogitRows::All)?
                };
                let mut row = 0;
                for (i, _) in &forks {
                    let targets = &pairs[*i].1[1..];
                    let scored: Vec<(f64, bool)> = targets
                        .par_iter()
                        .enumerate()
                        .map(|(j, &t)| score_row(&logits[(row + j) * vocab..(row + j + 1) * vocab], t))
                        .collect();
                    for (logprob, greedy) in scored {
                        results[*i].logprob += logprob;
                        results[*i].greedy &= greedy;
                    }
                    row += targets.len();
                }
            }
            start = end;
        }
        Ok(results)
    }

    fn score_with_full_forwards(&mut self, pairs: &[(Vec<u32>, Vec<u32>)]) -> Result<Vec<Loglikelihood>> {
        let vocab = self.model.config.vocab_size;
        let mut results = Vec::with_capacity(pairs.len());
        let mut start = 0;
        while start < pairs.len() {
            let length = |i: usize| pairs[i].0.len() + pairs[i].1.len() - 1;
            let mut end = start + 1;
            let mut longest = length(start);
            while end < pairs.len() && longest.max(length(end)) * (end + 1 - start) <= self.batch_tokens {
                longest = longest.max(length(end));
                end += 1;
            }
            let batch_size = end - start;
            let mut inputs = vec![0u32; batch_size * longest];
            for (row, (context, continuation)) in pairs[start..end].iter().enumerate() {
                let sequence: Vec<u32> = context.iter().chain(&continuation[..continuation.len() - 1]).copied().collect();
                inputs[row * longest..row * longest + sequence.len()].copy_from_slice(&sequence);
            }
            let batch = TokenBatch { batch_size, seq_len: longest, targets: vec![IGNORE_TARGET; inputs.len()], inputs };
            let logits = self.model.logits(&batch)?;
            for (row, (context, continuation)) in pairs[start..end].iter().enumerate() {
                let first = row * longest + context.len() - 1;
                let scored: Vec<(f64, bool)> = continuation
                    .par_iter()
                    .enumerate()
                    .map(|(j, &t)| score_row(&logits[(first + j) * vocab..(first + j + 1) * vocab], t))
                    .collect();
                results.push(Loglikelihood {
                    logprob: scored.iter().map(|s| s.0).sum(),
                    greedy: scored.iter().all(|s| s.1),
                    tokens: continuation.len(),
                });
            }
            start = end;
        }
        Ok(results)
    }

    /// Greedy continuations of `prompts`, each cut at the first of `stop` (not included).
    /// Prompts are cut from the left to leave room for `max_new_tokens`.
    pub fn generate(&mut self, prompts: &[String], stop: &[String], max_new_tokens: usize) -> Result<Vec<String>> {
        let room = self.max_length().saturating_sub(max_new_tokens).max(1);
        let encoded = prompts
            .iter()
            .map(|p| {
                let mut ids = self.tokenizer.encode(p)?;
                if ids.is_empty() {
                    ids.push(self.tokenizer.prefix_id);
                }
                ids.drain(..ids.len().saturating_sub(room));
                Ok(ids)
            })
            .collect::<Result<Vec<_>>>()?;
        let config = GenerationConfig { max_new_tokens, stop_token_ids: vec![self.tokenizer.eos_id] };
        let mut texts = Vec::with_capacity(prompts.len());
        for chunk in encoded.chunks(self.generation_batch.max(1)) {
            let tokenizer = &self.tokenizer;
            let outputs = greedy_generate_until(&mut self.model, chunk, &config, |_, new| {
                !stop.is_empty() && tokenizer.decode(new).is_ok_and(|text| stop.iter().any(|s| text.contains(s.as_str())))
            })?;
            for ids in outputs {
                texts.push(cut_at_stop(&self.tokenizer.decode(&ids)?, stop));
            }
        }
        Ok(texts)
    }

    /// Summed log-likelihood of each document after the end-of-text token, in disjoint windows
    /// of the context length (lm-eval's rolling log-likelihood); bytes are UTF-8 bytes.
    pub fn text_loss(&mut self, documents: &[String]) -> Result<TextLoss> {
        let length = self.max_length();
        let mut total = TextLoss::default();
        let mut windows: Vec<(Vec<u32>, Vec<u32>)> = Vec::new();
        for document in documents {
            let mut tokens = vec![self.tokenizer.eos_id];
            tokens.extend(self.tokenizer.encode_plain(document)?);
            total.bytes += document.len() as u64;
            total.tokens += tokens.len() as u64 - 1;
            for start in (0..tokens.len() - 1).step_by(length) {
                let end = (start + length).min(tokens.len() - 1);
                windows.push((tokens[start..end].to_vec(), tokens[start + 1..end + 1].to_vec()));
            }
        }
        total.nats = self.windows_loss(&windows, length)?;
        Ok(total)
    }

    /// Summed loss of `(inputs, targets)` windows of at most `length` tokens, padded and batched.
    pub fn windows_loss(&mut self, windows: &[(Vec<u32>, Vec<u32>)], length: usize) -> Result<f64> {
        let per_batch = (self.batch_tokens / length).max(1);
        let mut nats = 0.0;
        for chunk in windows.chunks(per_batch) {
            let mut inputs = vec![0u32; chunk.len() * length];
            let mut targets = vec![IGNORE_TARGET; chunk.len() * length];
            for (row, (input, target)) in chunk.iter().enumerate() {
                inputs[row * length..row * length + input.len()].copy_from_slice(input);
                targets[row * length..row * length + target.len()].copy_from_slice(target);
            }
            let batch = TokenBatch { batch_size: chunk.len(), seq_len: length, inputs, targets };
            nats += self.model.forward(&batch)?.sum_nats;
        }
        Ok(nats)
    }
}

/// `text` up to the first occurrence of any stop string.
pub fn cut_at_stop(text: &str, stop: &[String]) -> String {
    let end = stop.iter().filter(|s| !s.is_empty()).filter_map(|s| text.find(s.as_str())).min().unwrap_or(text.len());
    text[..end].to_string()
}

/// `(log_softmax(row)[target], argmax(row) == target)`, the sum in f64.
pub fn score_row(row: &[f32], target: u32) -> (f64, bool) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
    let logprob = row[target as usize] as f64 - max - sum.ln();
    (logprob, argmax(row) == target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_of_a_row() {
        let (lp, greedy) = score_row(&[0.0, (2.0f32).ln(), 0.0], 1);
        assert!((lp - 0.5f64.ln()).abs() < 1e-6);
        assert!(greedy);
        let (lp, greedy) = score_row(&[0.0, (2.0f32).ln(), 0.0], 2);
        assert!((lp - 0.25f64.ln()).abs() < 1e-6);
        assert!(!greedy);
    }

    #[test]
    fn stops_cut_at_the_earliest() {
        let stop = vec!["Question:".to_string(), "\n\n".to_string()];
        assert_eq!(cut_at_stop("a b\n\nQuestion: c", &stop), "a b");
        assert_eq!(cut_at_stop("no stop", &stop), "no stop");
    }
}
