use super::*;
use dsllm_model::{CpuBackend, ModelConfig};

#[test]
fn loss_and_gradient_equal_a_hand_computed_example() {
    // π(chosen) −1, π(rejected) −2, both references −1.5, β 0.1:
    // logits = (−1 − −2) − (−1.5 − −1.5) = 1, z = 0.1,
    // loss = −log σ(0.1) = log(1 + e^−0.1) = 0.6443966600735709,
    // ∂loss/∂πc = −β σ(−0.1) = −0.1 · 0.47502081252105999 = −0.047502081252106,
    // rewards: 0.1 · (−1 + 1.5) = 0.05 and 0.1 · (−2 + 1.5) = −0.05.
    let t = dpo_loss(-1.0, -2.0, -1.5, -1.5, 0.1);
    assert!((t.loss - 0.6443966600735709).abs() < 1e-15, "{}", t.loss);
    assert!((t.d_policy_chosen + 0.047502081252106).abs() < 1e-15, "{}", t.d_policy_chosen);
    assert!((t.chosen_reward - 0.05).abs() < 1e-15 && (t.rejected_reward + 0.05).abs() < 1e-15);
    assert!((t.margin() - 0.1).abs() < 1e-15);
    // And the gradient is the derivative: central differences of the loss.
    let h = 1e-6;
    let numeric = (dpo_loss(-1.0 + h, -2.0, -1.5, -1.5, 0.1).loss - dpo_loss(-1.0 - h, -2.0, -1.5, -1.5, 0.1).loss) / (2.0 * h);
    assert!((numeric - t.d_policy_chosen).abs() < 1e-9);
    let numeric_r = (dpo_loss(-1.0, -2.0 + h, -1.5, -1.5, 0.1).loss - dpo_loss(-1.0, -2.0 - h, -1.5, -1.5, 0.1).loss) / (2.0 * h);
    assert!((numeric_r + t.d_policy_chosen).abs() < 1e-9);
}

#[test]
fn loss_equals_trl_sigmoid_loss_test_vector() {
    let path = std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())).join("tests/fixtures/trl_dpo_sigmoid.json");
    let fixture: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    for case in cases {
        let f = |k: &str| case[k].as_f64().unwrap();
        let t = dpo_loss(f("policy_chosen_logps"), f("policy_rejected_logps"), f("reference_chosen_logps"), f("reference_rejected_logps"), f("beta"));
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs().max(1.0);
        assert!(close(t.loss, f("loss")), "loss {} vs {} in {case}", t.loss, f("loss"));
        assert!(close(t.chosen_reward, f("chosen_rewards")) && close(t.rejected_reward, f("rejected_rewards")), "{case}");
        assert!(close(t.d_policy_chosen, f("d_loss_d_policy_chosen")), "{case}");
        assert!(close(-t.d_policy_chosen, f("d_loss_d_policy_rejected")), "{case}");
        assert!(close(t.margin(), f("reward_margin")), "{case}");
        assert_eq!(t.chosen_reward > t.rejected_reward, f("reward_accuracy") == 1.0, "{case}");
    }
}

fn tiny() -> Llama<CpuBackend> {
    let config = ModelConfig {
        hidden_size: 16,
        intermediate_size: 24,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        vocab_size: 11,
        max_position_embeddings: 16,
        rms_norm_eps: 1e-6,
        rope_theta: 10000.0,
        initializer_range: 0.3,
        bos_token_id: None,
        eos_token_id: None,
    };
    Llama::new_random(CpuBackend, config, 21).unwrap()
}

/// Two pairs: rows chosen₀, rejected₀, chosen₁, rejected₁ sharing a prompt prefix, answers
/// targeted only.
fn pair_batch() -> TokenBatch {
    let rows: [(&[u32], usize); 4] = [(&[1, 2, 3, 4, 5, 6], 3), (&[1, 2, 3, 7, 8, 0], 3), (&[2, 9, 4, 4, 1, 0], 2), (&[2, 9, 5, 0, 0, 0], 2)];
    let lens = [6, 5, 5, 3];
    let mut batch = TokenBatch { batch_size: 4, seq_len: 5, inputs: vec![], targets: vec![] };
    for ((tokens, answer_from), len) in rows.iter().zip(lens) {
        batch.inputs.extend_from_slice(&tokens[..5]);
        for i in 0..5 {
            let target = i + 1;
            batch.targets.push(if target >= *answer_from && target < len { tokens[target] } else { IGNORE_TARGET });
        }
    }
    batch
}

#[test]
fn sft_term_equals_a_hand_computed_example() {
    // log π(chosen) −6 over 3 tokens, α 0.5: term 0.5 · 6 / 3 = 1, each token's weight 0.5 / 3.
    let (term, d_token) = nll_term(-6.0, 3, 0.5);
    assert!((term - 1.0).abs() < 1e-15 && (d_token - 0.5 / 3.0).abs() < 1e-15);
    // The derivative: central differences in log π(chosen), which is −Σ token losses.
    let h = 1e-6;
    let numeric = (nll_term(-6.0 - h, 3, 0.5).0 - nll_term(-6.0 + h, 3, 0.5).0) / (2.0 * h);
    assert!((numeric - d_token).abs() < 1e-9);
    assert_eq!(nll_term(-6.0, 3, 0.0).0, 0.0);
}

#[test]
fn model_gradient_of_the_dpo_loss_matches_finite_differences() {
    model_gradient_matches_finite_differences(0.0);
}

#[test]
fn model_gradient_of_dpo_plus_sft_term_matches_finite_differences() {
    model_gradient_matches_finite_differences(0.7);
}

fn model_gradient_matches_finite_differences(nll_weight: f64) {
    let mut model = tiny();
    let batch = pair_batch();
    let reference = [(-6.0, -5.5), (-3.0, -4.0)];
    let beta = 0.5;
    let targeted = |row: usize| batch.targets[row * 5..(row + 1) * 5].iter().filter(|&&t| t != IGNORE_TARGET).count();
    let chosen_tokens = [targeted(0), targeted(2)];
    assert_eq!(chosen_tokens, [3, 3]);
    let objective = |model: &mut Llama<CpuBackend>| -> f64 {
        model.forward(&batch).unwrap();
        let logps = row_logps(&model.token_losses().unwrap(), &batch);
        (0..2)
            .map(|k| dpo_loss(logps[2 * k], logps[2 * k + 1], reference[k].0, reference[k].1, beta).loss + nll_term(logps[2 * k], chosen_tokens[k], nll_weight).0)
            .sum::<f64>()
            / 2.0
    };
    model.zero_grads();
    let result = dpo_forward_backward(&mut model, &batch, &reference, beta, nll_weight, 0.5).unwrap();
    assert_eq!(result.answer_tokens, batch.target_count());
    let loss: f64 = result.terms.iter().zip(&result.chosen_nll).map(|(t, nll)| t.loss + nll_weight * nll).sum::<f64>() / 2.0;
    assert!((loss - objective(&mut model)).abs() < 1e-9);
    let grads: Vec<Vec<f32>> = model.grads.tensors().into_iter().cloned().collect();
    let (mut analytic, mut numeric) = (Vec::new(), Vec::new());
    for t in 0..grads.len() {
        let original = model.weights.tensors()[t].clone();
        let step = (original.len() / 5).max(1);
        for i in (0..original.len()).step_by(step).take(5) {
            let h = 3e-3;
            let mut x = original.clone();
            x[i] = original[i] + h;
            *model.weights.tensors_mut()[t] = x.clone();
            let plus = objective(&mut model);
            x[i] = original[i] - h;
            *model.weights.tensors_mut()[t] = x;
            let minus = objective(&mut model);
            numeric.push((plus - minus) / (2.0 * h as f64));
            analytic.push(grads[t][i] as f64);
        }
        *model.weights.tensors_mut()[t] = original;
    }
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let diff: Vec<f64> = analytic.iter().zip(&numeric).map(|(a, b)| a - b).collect();
    let error = norm(&diff) / norm(&analytic).max(norm(&numeric));
    println!("DPO gradient through the model: relative error {error:.2e}");
    assert!(error < 2e-3, "relative error {error:.2e}");
}

#[test]
fn padding_and_prompt_tokens_get_no_gradient_weight() {
    // Rows are independent: a pair's loss does not change when another pair's tokens do.
    let mut model = tiny();
    let mut batch = pair_batch();
    let reference = [(-6.0, -5.5), (-3.0, -4.0)];
    let first = dpo_forward_backward(&mut model, &batch, &reference, 0.1, 0.0, 1.0).unwrap();
    batch.inputs[10..15].copy_from_slice(&[3, 3, 3, 3, 3]);
    let second = dpo_forward_backward(&mut model, &batch, &reference, 0.1, 0.0, 1.0).unwrap();
    assert_eq!(first.terms[0], second.terms[0]);
    assert_ne!(first.terms[1], second.terms[1]);
}

fn pair(prompt: &str, chosen: &str, rejected: &str) -> PreferencePair {
    PreferencePair { prompt: vec![crate::chat::Message::new(crate::chat::Role::User, prompt)], chosen: chosen.into(), rejected: rejected.into() }
}

#[test]
fn on_policy_pairs_reject_the_models_own_wrong_answers() {
    let pairs = [pair("Reverse 123.", "#### 321", "#### 123"), pair("Reverse 405.", "#### 504", "#### 405"), pair("Reverse 78.", "#### 87", "#### 78")];
    let answers = vec![" #### 321".to_string(), "#### 540".to_string(), String::new()];
    let made = on_policy_from_answers(&pairs, answers.clone());
    // The first is answered right: left out. The others keep prompt and chosen.
    assert_eq!(made.already_chosen, 1);
    assert_eq!(made.pairs, vec![pair("Reverse 405.", "#### 504", "#### 540"), pair("Reverse 78.", "#### 87", "")]);
    assert_eq!(made.answers, answers);
}

#[test]
fn on_policy_pairs_take_the_greedy_answers_of_the_model() {
    let tokenizer = crate::test_support::tokenizer();
    let template = ChatTemplate::new(tokenizer).unwrap();
    let config = crate::test_support::tiny_model_config(tokenizer);
    let mut model = Llama::new_random(CpuBackend, config, 5).unwrap();
    let mut pairs = vec![pair("Reverse the digits of 123.", "#### 321", "#### 123"), pair("Reverse the digits of 405.", "#### 504", "#### 405")];
    let first = on_policy_pairs(&mut model, &template, &pairs, 6).unwrap();
    let greedy: Vec<String> = pairs
        .iter()
        .map(|p| {
            let prompt = template.encode_prompt(&p.prompt).unwrap();
            let ids = crate::measure::greedy_answers(&mut model, &template, &[prompt], 6).unwrap();
            template.decode_answer(&ids[0]).unwrap()
        })
        .collect();
    assert_eq!(first.answers, greedy);
    assert_eq!(first.pairs.len(), 2);
    assert_eq!(first.pairs[1].rejected, greedy[1].trim());
    // A pair whose chosen answer is what the model says is left out.
    pairs[0].chosen = greedy[0].clone();
    let second = on_policy_pairs(&mut model, &template, &pairs, 6).unwrap();
    assert_eq!((second.already_chosen, second.pairs.len()), (1, 1));
    assert_eq!(second.pairs[0].prompt, pairs[1].prompt);
}
