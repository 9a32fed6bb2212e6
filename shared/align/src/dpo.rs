//! Direct Preference Optimization (Rafailov et al. 2023) as the paper uses it: β 0.1, LR 5e-6,
//! one epoch, the reference model's log-probs computed once before training.
//!
//! The loss of a pair is TRL's `sigmoid` loss, `−log σ(β · ((πc − rc) − (πr − rr)))` with π and
//! r the summed log-probabilities of the answer under policy and reference. Its gradient
//! reaches the policy through the per-token log-probs: with `z` the argument of σ,
//! `∂L/∂πc = −β σ(−z)` and `∂L/∂πr = +β σ(−z)`, and `πc = −Σ token losses`, so each token of
//! the chosen answer gets the cross-entropy gradient weighted by `β σ(−z)` and each token of
//! the rejected one by `−β σ(−z)` (`Llama::backward_weighted`).
//!
//! Optional, off by default and in the paper's settings: an SFT term on the chosen answer
//! (`nll_weight` α, the "RPO" or DPO+NLL loss of Pang et al. 2024 and TRL's `rpo_alpha`),
//! `α · (−πc / nc)` with nc the chosen answer's tokens: each chosen token's gradient weight
//! gains `α / nc`. It keeps DPO from lowering the chosen answers' likelihood along with the
//! rejected ones'.

use std::time::Instant;

use anyhow::{bail, Result};
use dsllm_model::{AdamW, AdamWConfig, Backend, Llama, LrSchedule, TokenBatch, IGNORE_TARGET};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::chat::ChatTemplate;
use crate::data::PreferencePair;
use crate::{padded_batch, pair_rows, row_logps};

/// The loss of one pair and what is logged about it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpoTerms {
    pub loss: f64,
    /// ∂loss/∂(policy log p(chosen)); ∂loss/∂(policy log p(rejected)) is its negative.
    pub d_policy_chosen: f64,
    /// β (πc − rc), the implicit reward of the chosen answer.
    pub chosen_reward: f64,
    /// β (πr − rr).
    pub rejected_reward: f64,
}

impl DpoTerms {
    pub fn margin(&self) -> f64 {
        self.chosen_reward - self.rejected_reward
    }
}

/// `log σ(x)`, stable for large |x|.
pub fn log_sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        -(-x).exp().ln_1p()
    } else {
        x - x.exp().ln_1p()
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// TRL's sigmoid DPO loss (label smoothing 0) for one pair of summed log-probs.
pub fn dpo_loss(policy_chosen: f64, policy_rejected: f64, reference_chosen: f64, reference_rejected: f64, beta: f64) -> DpoTerms {
    let logits = (policy_chosen - policy_rejected) - (reference_chosen - reference_rejected);
    let z = beta * logits;
    DpoTerms {
        loss: -log_sigmoid(z),
        d_policy_chosen: -beta * sigmoid(-z),
        chosen_reward: beta * (policy_chosen - reference_chosen),
        rejected_reward: beta * (policy_rejected - reference_rejected),
    }
}

/// The SFT term of a pair: `(α · mean NLL of the chosen tokens, ∂term/∂(a chosen token's
/// loss) = α / nc)`, for `policy_chosen` summed over `chosen_tokens` tokens.
pub fn nll_term(policy_chosen: f64, chosen_tokens: usize, weight: f64) -> (f64, f64) {
    let n = chosen_tokens.max(1) as f64;
    (weight * -policy_chosen / n, weight / n)
}

/// What [`dpo_forward_backward`] computed.
#[derive(Debug, Clone, PartialEq)]
pub struct MicroBatchDpo {
    pub terms: Vec<DpoTerms>,
    /// Per pair, the mean NLL of the chosen answer's tokens (whatever `nll_weight`).
    pub chosen_nll: Vec<f64>,
    /// `(log π(chosen), log π(rejected))` per pair.
    pub policy: Vec<(f64, f64)>,
    /// Answer tokens (targets) in the batch.
    pub answer_tokens: usize,
}

/// The forward and backward of `scale · Σ (loss + nll_weight · mean NLL of chosen)` over a
/// batch whose rows alternate chosen and rejected answers of the pairs (targets on the answers
/// only): adds the gradient into `model.grads`.
pub fn dpo_forward_backward<B: Backend>(model: &mut Llama<B>, batch: &TokenBatch, reference: &[(f64, f64)], beta: f64, nll_weight: f64, scale: f64) -> Result<MicroBatchDpo> {
    if batch.batch_size != 2 * reference.len() {
        bail!("{} rows for {} pairs", batch.batch_size, reference.len());
    }
    model.forward(batch)?;
    let losses = model.token_losses()?;
    let logps = row_logps(&losses, batch);
    let mut row_scales = vec![0.0f32; losses.len()];
    let mut out = MicroBatchDpo { terms: Vec::new(), chosen_nll: Vec::new(), policy: Vec::new(), answer_tokens: 0 };
    let targeted = |row: usize| batch.targets[row * batch.seq_len..(row + 1) * batch.seq_len].iter().filter(|&&t| t != IGNORE_TARGET).count();
    for (k, &(rc, rr)) in reference.iter().enumerate() {
        let terms = dpo_loss(logps[2 * k], logps[2 * k + 1], rc, rr, beta);
        let (nll, d_nll) = nll_term(logps[2 * k], targeted(2 * k), 1.0);
        // ∂L/∂(token loss) = −∂L/∂(log p): chosen tokens get −∂L/∂πc (plus the SFT term's
        // α / nc), rejected ones +∂L/∂πc.
        let dpo_weight = -terms.d_policy_chosen * scale;
        let chosen_weight = (dpo_weight + nll_weight * d_nll * scale) as f32;
        for (row, weight) in [(2 * k, chosen_weight), (2 * k + 1, -dpo_weight as f32)] {
            for p in row * batch.seq_len..(row + 1) * batch.seq_len {
                if batch.targets[p] != IGNORE_TARGET {
                    row_scales[p] = weight;
                    out.answer_tokens += 1;
                }
            }
        }
        out.terms.push(terms);
        out.chosen_nll.push(nll);
        out.policy.push((logps[2 * k], logps[2 * k + 1]));
    }
    model.backward_weighted(&row_scales);
    Ok(out)
}

/// DPO hyperparameters; the defaults are the paper's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DpoConfig {
    pub beta: f64,
    pub learning_rate: f64,
    pub epochs: usize,
    /// Pairs per forward/backward pass.
    pub micro_batch: usize,
    /// Micro-batches per optimizer step (the batch is micro_batch · grad_accum pairs).
    pub grad_accum: usize,
    /// Share of the steps spent warming up linearly; the LR then decays by cosine to 10%.
    pub warmup_ratio: f64,
    /// Weight α of the SFT term on the chosen answers (0: plain DPO, the paper's).
    #[serde(default)]
    pub nll_weight: f64,
    pub seed: u64,
    pub optimizer: AdamWConfig,
}

impl Default for DpoConfig {
    fn default() -> Self {
        Self {
            beta: 0.1,
            learning_rate: 5e-6,
            epochs: 1,
            micro_batch: 8,
            grad_accum: 8,
            warmup_ratio: 0.1,
            nll_weight: 0.0,
            seed: 0,
            // No weight decay in fine-tuning (TRL's and LLaMA-Factory's default).
            optimizer: AdamWConfig { weight_decay: 0.0, ..AdamWConfig::default() },
        }
    }
}

/// What one optimizer step did (a line of metrics.jsonl).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DpoStep {
    pub step: u64,
    pub epoch: usize,
    pub pairs: usize,
    /// The DPO loss plus, with `nll_weight`, its SFT term.
    pub loss: f64,
    /// Mean NLL per token of the chosen answers.
    #[serde(default)]
    pub chosen_nll: f64,
    /// Share of pairs whose chosen reward exceeds the rejected one.
    pub reward_accuracy: f64,
    pub reward_margin: f64,
    pub chosen_reward: f64,
    pub rejected_reward: f64,
    /// Mean over the step's answers (chosen and rejected) of log π − log π_ref, per token: the
    /// sample estimate of KL(π ‖ π_ref) on the preference data (exact only for answers drawn
    /// from π; a drift gauge here).
    pub kl_per_token: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub seconds: f64,
}

/// Trains `model` on `pairs` against `reference` log-probs (one `(chosen, rejected)` per
/// pair, from [`crate::sequence_logps`] with the initial model). Calls `on_step` after every
/// optimizer step.
pub fn train_dpo<B: Backend>(
    model: &mut Llama<B>,
    template: &ChatTemplate,
    pairs: &[PreferencePair],
    reference: &[(f64, f64)],
    config: &DpoConfig,
    mut on_step: impl FnMut(&DpoStep) -> Result<()>,
) -> Result<Vec<DpoStep>> {
    if reference.len() != pairs.len() {
        bail!("{} reference log-probs for {} pairs", reference.len(), pairs.len());
    }
    let rows = pair_rows(template, pairs)?;
    let pairs_per_step = config.micro_batch * config.grad_accum;
    let steps_per_epoch = pairs.len().div_ceil(pairs_per_step);
    let total_steps = (steps_per_epoch * config.epochs) as u64;
    let warmup_steps = (config.warmup_ratio * total_steps as f64).round() as u64;
    let schedule = LrSchedule::Cosine { peak_lr: config.learning_rate, warmup_steps, total_steps, min_lr_ratio: 0.1 };
    let mut optimizer = AdamW::new(model, config.optimizer.clone());
    let mut history = Vec::new();
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    for epoch in 0..config.epochs {
        let mut order: Vec<usize> = (0..pairs.len()).collect();
        order.shuffle(&mut rng);
        for step_pairs in order.chunks(pairs_per_step) {
            let started = Instant::now();
            model.zero_grads();
            let scale = 1.0 / step_pairs.len() as f64;
            let (mut loss, mut correct, mut margin, mut chosen, mut rejected, mut kl, mut answer_tokens) = (0.0, 0, 0.0, 0.0, 0.0, 0.0, 0usize);
            let mut chosen_nll = 0.0;
            for micro in step_pairs.chunks(config.micro_batch) {
                let flat: Vec<_> = micro.iter().flat_map(|&i| rows[i].iter().cloned()).collect();
                let batch = padded_batch(&flat, template.tokens.pad);
                let refs: Vec<(f64, f64)> = micro.iter().map(|&i| reference[i]).collect();
                let result = dpo_forward_backward(model, &batch, &refs, config.beta, config.nll_weight, scale)?;
                for ((terms, nll), (policy, reference)) in result.terms.iter().zip(&result.chosen_nll).zip(result.policy.iter().zip(&refs)) {
                    loss += (terms.loss + config.nll_weight * nll) * scale;
                    chosen_nll += nll * scale;
                    correct += (terms.chosen_reward > terms.rejected_reward) as usize;
                    margin += terms.margin() * scale;
                    chosen += terms.chosen_reward * scale;
                    rejected += terms.rejected_reward * scale;
                    kl += (policy.0 - reference.0) + (policy.1 - reference.1);
                }
                answer_tokens += result.answer_tokens;
            }
            let lr = schedule.learning_rate(optimizer.step);
            let grad_norm = optimizer.update(model, lr as f32);
            let step = DpoStep {
                step: optimizer.step,
                epoch,
                pairs: step_pairs.len(),
                loss,
                chosen_nll,
                reward_accuracy: correct as f64 * scale,
                reward_margin: margin,
                chosen_reward: chosen,
                rejected_reward: rejected,
                kl_per_token: kl / answer_tokens.max(1) as f64,
                lr,
                grad_norm,
                seconds: started.elapsed().as_secs_f64(),
            };
            if !step.loss.is_finite() {
                bail!("the DPO loss is {} at step {}: lower the learning rate", step.loss, step.step);
            }
            on_step(&step)?;
            history.push(step);
        }
    }
    Ok(history)
}

/// Preference pairs whose rejected answers are the model's own: what [`on_policy_pairs`] made.
#[derive(Debug, Clone, PartialEq)]
pub struct OnPolicy {
    /// The pairs the model answers wrongly: prompt and chosen kept, its greedy answer rejected.
    pub pairs: Vec<PreferencePair>,
    /// The model's greedy answer to each input pair's prompt (cut at EOS), in input order.
    pub answers: Vec<String>,
    /// Input pairs left out because the model already answers the chosen one.
    pub already_chosen: usize,
}

/// [`on_policy_pairs`] once the greedy answers are known: a pair whose answer is the chosen
/// one (spaces trimmed) is left out, the others get the answer as their rejected one.
pub fn on_policy_from_answers(pairs: &[PreferencePair], answers: Vec<String>) -> OnPolicy {
    let mut out = OnPolicy { pairs: Vec::new(), answers: Vec::new(), already_chosen: 0 };
    for (pair, answer) in pairs.iter().zip(&answers) {
        if answer.trim() == pair.chosen.trim() {
            out.already_chosen += 1;
        } else {
            out.pairs.push(PreferencePair { rejected: answer.trim().to_string(), ..pair.clone() });
        }
    }
    out.answers = answers;
    out
}

/// On-policy preference pairs: the model's greedy answer to each pair's prompt replaces the
/// rejected answer where it is not the chosen one. Made-up rejected answers can be ones the
/// model already ranks far below the chosen, leaving DPO nothing to fix; its own mistakes are
/// what it actually says.
pub fn on_policy_pairs<B: Backend>(model: &mut Llama<B>, template: &ChatTemplate, pairs: &[PreferencePair], max_new_tokens: usize) -> Result<OnPolicy> {
    let prompts = pairs.iter().map(|p| template.encode_prompt(&p.prompt)).collect::<Result<Vec<_>>>()?;
    let outputs = crate::measure::greedy_answers(model, template, &prompts, max_new_tokens)?;
    let answers = outputs.iter().map(|ids| template.decode_answer(ids)).collect::<Result<Vec<_>>>()?;
    Ok(on_policy_from_answers(pairs, answers))
}

#[cfg(test)]
mod tests;
