//! What alignment is judged by: task accuracy by greedy decoding (KV cache) and exact match of
//! the final answer (GSM8K's `#### n`, extracted and compared as ds-eval's GSM8K task does), the
//! repetition ratio the paper reports (share of answers to held-out prompts that loop without
//! ending), and the preferred-answer rate on held-out preference pairs. `make demo` reports the
//! same task accuracy and preferred-answer rates through ds-eval itself (the task files
//! `ds-synth --align` writes).

use anyhow::Result;
use dsllm_eval::metrics::answers_match;
use dsllm_model::{greedy_generate_until, Backend, GenerationConfig, Llama};
use serde::Serialize;

use crate::chat::{ChatTemplate, Message, Role};
use crate::data::{extract_final_answer, PreferencePair, TaskItem};
use crate::sequence_logps;

/// One decoded answer, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub question: String,
    pub expected: String,
    pub generated: String,
    pub correct: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskReport {
    pub items: usize,
    pub correct: usize,
    pub accuracy: f64,
    /// Answers that end neither with EOS nor within the token budget and repeat a pattern.
    pub repetition_ratio: f64,
    /// Answers without EOS within the budget (looping or merely long).
    pub unfinished_ratio: f64,
    pub max_new_tokens: usize,
    pub samples: Vec<Sample>,
}

/// Whether `ids` (an answer that did not reach EOS) ends in a loop: its tail repeats a pattern
/// of 1 to `len / 3` tokens at least three times.
pub fn ends_in_loop(ids: &[u32]) -> bool {
    let n = ids.len();
    (1..=n / 3).any(|period| (n - 3 * period..n - period).all(|i| ids[i] == ids[i + period]))
}

/// Greedy answers (KV-cache decoding) to `prompts`, each ending with EOS when the model
/// produced one within `max_new_tokens`.
pub fn greedy_answers<B: Backend>(model: &mut Llama<B>, template: &ChatTemplate, prompts: &[Vec<u32>], max_new_tokens: usize) -> Result<Vec<Vec<u32>>> {
    // EOS ends a sequence through the stop predicate, not as a stop token, so it stays in the
    // output and a finished answer tells itself from one cut by the budget.
    let config = GenerationConfig { max_new_tokens, stop_token_ids: Vec::new() };
    let eos = template.tokens.eos;
    greedy_generate_until(model, prompts, &config, |_, new| new.last() == Some(&eos))
}

/// Greedy answers to `items` and their exact-match accuracy.
pub fn task_accuracy<B: Backend>(model: &mut Llama<B>, template: &ChatTemplate, items: &[TaskItem], max_new_tokens: usize) -> Result<TaskReport> {
    let prompts = items.iter().map(|item| template.encode_prompt(&[Message::new(Role::User, item.question.clone())])).collect::<Result<Vec<_>>>()?;
    let outputs = greedy_answers(model, template, &prompts, max_new_tokens)?;
    let (mut correct, mut looping, mut unfinished) = (0, 0, 0);
    let mut samples = Vec::new();
    for (item, ids) in items.iter().zip(&outputs) {
        let generated = template.decode_answer(ids)?;
        let ok = extract_final_answer(&generated).is_some_and(|a| answers_match(&a, &item.answer));
        correct += ok as usize;
        if !ids.contains(&template.tokens.eos) {
            unfinished += 1;
            looping += ends_in_loop(ids) as usize;
        }
        if samples.len() < 5 {
            samples.push(Sample { question: item.question.clone(), expected: item.answer.clone(), generated, correct: ok });
        }
    }
    let share = |k: usize| if items.is_empty() { 0.0 } else { k as f64 / items.len() as f64 };
    Ok(TaskReport {
        items: items.len(),
        correct,
        accuracy: share(correct),
        repetition_ratio: share(looping),
        unfinished_ratio: share(unfinished),
        max_new_tokens,
        samples,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct PreferenceReport {
    pub pairs: usize,
    /// Share of pairs where the policy gives the chosen answer the higher log-probability.
    pub logp_preferred_rate: f64,
    /// Share of pairs whose greedy answer is exactly the chosen one.
    pub generated_chosen_rate: f64,
    /// Share of pairs whose greedy answer is exactly the rejected one.
    pub generated_rejected_rate: f64,
    pub mean_logp_margin: f64,
    /// Share of pairs whose greedy answer has the chosen answer's final answer (`#### n`), when
    /// the chosen answers have one.
    pub final_answer_accuracy: Option<f64>,
}

/// How often the policy prefers the chosen answers of held-out pairs, by log-probability and
/// by what it generates.
pub fn preference_rate<B: Backend>(model: &mut Llama<B>, template: &ChatTemplate, pairs: &[PreferencePair], max_new_tokens: usize, micro_batch: usize) -> Result<PreferenceReport> {
    let logps = sequence_logps(model, template, pairs, micro_batch)?;
    let prompts = pairs.iter().map(|p| template.encode_prompt(&p.prompt)).collect::<Result<Vec<_>>>()?;
    let outputs = greedy_answers(model, template, &prompts, max_new_tokens)?;
    let (mut preferred, mut gen_chosen, mut gen_rejected, mut margin, mut scored, mut right) = (0, 0, 0, 0.0, 0, 0);
    for ((pair, ids), (c, r)) in pairs.iter().zip(&outputs).zip(&logps) {
        preferred += (c > r) as usize;
        margin += c - r;
        let finished = ids.contains(&template.tokens.eos);
        let text = template.decode_answer(ids)?;
        gen_chosen += (finished && text.trim() == pair.chosen.trim()) as usize;
        gen_rejected += (finished && text.trim() == pair.rejected.trim()) as usize;
        if let Some(expected) = extract_final_answer(&pair.chosen) {
            scored += 1;
            right += extract_final_answer(&text).is_some_and(|a| answers_match(&a, &expected)) as usize;
        }
    }
    let n = pairs.len().max(1) as f64;
    Ok(PreferenceReport {
        pairs: pairs.len(),
        logp_preferred_rate: preferred as f64 / n,
        generated_chosen_rate: gen_chosen as f64 / n,
        generated_rejected_rate: gen_rejected as f64 / n,
        mean_logp_margin: margin / n,
        final_answer_accuracy: (scored > 0).then(|| right as f64 / scored as f64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loops_are_periodic_tails() {
        assert!(ends_in_loop(&[5, 1, 2, 1, 2, 1, 2]));
        assert!(ends_in_loop(&[7, 7, 7]));
        assert!(!ends_in_loop(&[1, 2, 3, 4, 5, 6]));
        assert!(!ends_in_loop(&[1, 2, 1, 2]));
        assert!(!ends_in_loop(&[]));
    }
}
