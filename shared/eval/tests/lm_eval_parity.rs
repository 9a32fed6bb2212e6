//! Per-item log-likelihoods against lm-evaluation-harness + transformers on the same checkpoint
//! and inputs: `fixtures/lm_eval_reference.json` was computed by `fixtures/lm_eval_reference.py`
//! (lm-eval's HFLM, LlamaForCausalLM in float32 on the CPU) from `fixtures/tiny`, which
//! `examples/write_fixture.rs` wrote. Both scoring modes must match within 1e-3 per token.

use std::path::PathBuf;

use dsllm_eval::{run_task, EvalTokenizer, Evaluator, RunContext, ScoringMode, TaskSpec};
use dsllm_model::{load_hf_model, CpuBackend, Llama};
use serde_json::Value;

fn fixtures() -> PathBuf {
    std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())).join("tests/fixtures")
}

fn evaluator(mode: ScoringMode) -> Evaluator<CpuBackend> {
    let dir = fixtures().join("tiny");
    let (config, tensors) = load_hf_model(&dir).unwrap();
    let tokenizer = EvalTokenizer::load(&dir, &config).unwrap();
    let mut evaluator = Evaluator::new(Llama::from_host_tensors(CpuBackend, config, &tensors).unwrap(), tokenizer);
    evaluator.mode = mode;
    // Small batches so several forwards and prefix groups are exercised.
    evaluator.batch_tokens = 64;
    evaluator
}

#[test]
fn per_item_loglikelihoods_match_lm_eval_with_transformers() {
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(fixtures().join("lm_eval_reference.json")).unwrap()).unwrap();
    let tiny = fixtures().join("tiny");
    let mut worst = 0.0f64;
    for mode in [ScoringMode::PrefixCache, ScoringMode::FullForward] {
        let mut evaluator = evaluator(mode);
        for task in ["qa", "winograd", "cloze"] {
            let spec = TaskSpec::from_file(&fixtures().join(format!("{task}.toml"))).unwrap();
            let ctx = RunContext { data_root: &fixtures(), tokenizer_dir: &tiny, progress: &|_, _| {} };
            let result = run_task(&mut evaluator, &spec, &ctx).unwrap();
            let expected = reference["tasks"][&spec.name].as_array().unwrap();
            assert_eq!(result.per_item.len(), expected.len(), "{}", spec.name);
            for (item, want) in result.per_item.iter().zip(expected) {
                // Ours: per choice, then the unconditional ones; cloze: one logprob per item.
                let mut got: Vec<f64> = match item.get("logprobs") {
                    Some(v) => serde_json::from_value(v.clone()).unwrap(),
                    None => vec![item["logprob"].as_f64().unwrap()],
                };
                if let Some(u) = item.get("logprobs_unconditional") {
                    got.extend(serde_json::from_value::<Vec<f64>>(u.clone()).unwrap());
                }
                let want_lp: Vec<f64> = serde_json::from_value(want["logprobs"].clone()).unwrap();
                let tokens: Vec<usize> = serde_json::from_value(want["tokens"].clone()).unwrap();
                assert_eq!(got.len(), want_lp.len(), "{}: {item}", spec.name);
                for ((g, w), n) in got.iter().zip(&want_lp).zip(&tokens) {
                    let per_token = (g - w).abs() / *n as f64;
                    worst = worst.max(per_token);
                    assert!(per_token <= 1e-3, "{} {mode:?}: {g} vs lm-eval {w} over {n} tokens", spec.name);
                }
                if let Some(greedy) = item.get("greedy") {
                    assert_eq!(greedy, &want["greedy"][0], "{}: is_greedy", spec.name);
                }
            }
        }
    }
    println!(
        "max |ds-eval − lm-eval {} / transformers {}| per token = {worst:.2e}",
        reference["lm_eval"].as_str().unwrap_or("?"),
        reference["transformers"].as_str().unwrap_or("?")
    );
}
