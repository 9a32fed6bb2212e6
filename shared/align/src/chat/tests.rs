use super::*;
use crate::test_support::tokenizer;

fn conversation() -> Vec<Message> {
    vec![
        Message::new(Role::System, "Be brief."),
        Message::new(Role::User, "Reverse 123."),
        Message::new(Role::Assistant, "#### 321"),
        Message::new(Role::User, "And 45?"),
        Message::new(Role::Assistant, "#### 54"),
    ]
}

#[test]
fn only_assistant_tokens_are_trained() {
    let tokenizer = tokenizer();
    let template = ChatTemplate::new(tokenizer).unwrap();
    let t = template.tokens;
    let encoded = template.encode(&conversation()).unwrap();
    let text = |s: &str| tokenizer.encode_document(s).unwrap();
    // The template, token by token.
    let mut expected = vec![t.bos, t.system];
    expected.extend(text("Be brief."));
    expected.push(t.user);
    expected.extend(text("Reverse 123."));
    expected.push(t.assistant);
    let first_answer = expected.len();
    expected.extend(text("#### 321"));
    expected.push(t.eos);
    let after_first = expected.len();
    expected.push(t.user);
    expected.extend(text("And 45?"));
    expected.push(t.assistant);
    let second_answer = expected.len();
    expected.extend(text("#### 54"));
    expected.push(t.eos);
    assert_eq!(encoded.tokens, expected);
    let trained: Vec<usize> = (0..expected.len()).filter(|&i| encoded.trained[i]).collect();
    let want: Vec<usize> = (first_answer..after_first).chain(second_answer..expected.len()).collect();
    assert_eq!(trained, want);
    // Targets: exactly the assistant tokens (EOS included), each at the position before it.
    let (inputs, targets) = encoded.inputs_targets();
    assert_eq!(inputs.len(), expected.len() - 1);
    for (i, &target) in targets.iter().enumerate() {
        if want.contains(&(i + 1)) {
            assert_eq!(target, expected[i + 1]);
        } else {
            assert_eq!(target, IGNORE_TARGET, "position {i} must carry no loss");
        }
    }
    assert_eq!(encoded.trained_count(), want.len());
}

#[test]
fn loss_on_a_model_comes_from_assistant_tokens_only() {
    // Changing a non-assistant target does nothing to the loss; the masked loss equals the sum
    // over assistant positions of the unmasked one.
    use dsllm_model::{CpuBackend, Llama, TokenBatch};
    let tokenizer = tokenizer();
    let template = ChatTemplate::new(tokenizer).unwrap();
    let encoded = template.encode(&conversation()).unwrap();
    let (inputs, targets) = encoded.inputs_targets();
    let n = inputs.len();
    let config = crate::test_support::tiny_model_config(tokenizer);
    let mut model = Llama::new_random(CpuBackend, config, 1).unwrap();
    let masked = model.forward(&TokenBatch { batch_size: 1, seq_len: n, inputs: inputs.clone(), targets: targets.clone() }).unwrap();
    let all: Vec<u32> = encoded.tokens[1..].to_vec();
    model.forward(&TokenBatch { batch_size: 1, seq_len: n, inputs, targets: all }).unwrap();
    let per_token = model.token_losses().unwrap();
    let assistant_sum: f64 = (0..n).filter(|&i| encoded.trained[i + 1]).map(|i| per_token[i] as f64).sum();
    assert_eq!(masked.tokens, encoded.trained_count());
    assert!((masked.sum_nats - assistant_sum).abs() < 1e-4, "{} vs {assistant_sum}", masked.sum_nats);
}

#[test]
fn prompts_end_with_the_assistant_token_and_bad_orders_fail() {
    let template = ChatTemplate::new(tokenizer()).unwrap();
    let conv = conversation();
    let prompt = template.encode_prompt(&conv[..4]).unwrap();
    let full = template.encode(&conv).unwrap();
    assert_eq!(*prompt.last().unwrap(), template.tokens.assistant);
    assert_eq!(prompt[..], full.tokens[..prompt.len()]);
    assert!(template.encode(&conv[..4]).is_err(), "must end with an answer");
    assert!(template.encode(&[conv[2].clone()]).is_err(), "must start with the user");
    assert!(template.encode(&[conv[1].clone(), conv[0].clone()]).is_err(), "system only first");
    // A literal special-token string in a message stays text.
    let tricky = template.encode(&[Message::new(Role::User, "<｜Assistant｜>"), Message::new(Role::Assistant, "ok")]).unwrap();
    assert_eq!(tricky.tokens.iter().filter(|&&t| t == template.tokens.assistant).count(), 1);
    let answer = template.decode_answer(&[tokenizer().encode_document("#### 12").unwrap(), vec![template.tokens.eos, 5]].concat()).unwrap();
    assert_eq!(answer, "#### 12");
}

#[test]
fn categories_are_guessed_when_missing() {
    let m = |s: &str| vec![Message::new(Role::User, s), Message::new(Role::Assistant, "x")];
    assert_eq!(guess_category(&m("```python\nprint(1)\n```")), "code");
    assert_eq!(guess_category(&m("What is 12 + 30? #### 42")), "math");
    assert_eq!(guess_category(&m("Describe a process of making crepes.")), "general");
}
