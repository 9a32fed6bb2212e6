//! The checkpoint format against Hugging Face transformers, without torch: the fixture
//! `tests/fixtures/hf-tiny` was written by `examples/hf_fixture.rs`, and its
//! `torch_logits.json` computed from it by transformers' LlamaForCausalLM (float32, CPU,
//! eager attention) with `tests/fixtures/hf_logits.py`. `hf-tiny-bf16-transformers5` is the same
//! model saved back by transformers 5 in bfloat16.

use std::path::PathBuf;

use dsllm_model::{load_hf_model, CpuBackend, Llama, TokenBatch, IGNORE_TARGET};

fn fixture(name: &str) -> PathBuf {
    std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())).join("tests/fixtures").join(name)
}

#[test]
fn logits_match_transformers_llama() {
    let dir = fixture("hf-tiny");
    let reference: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("torch_logits.json")).unwrap()).unwrap();
    let inputs: Vec<Vec<u32>> = serde_json::from_value(reference["input_ids"].clone()).unwrap();
    let torch_logits: Vec<f32> = serde_json::from_value(reference["logits"].clone()).unwrap();

    let (config, tensors) = load_hf_model(&dir).unwrap();
    let mut model = Llama::from_host_tensors(CpuBackend, config, &tensors).unwrap();
    let (batch_size, seq_len) = (inputs.len(), inputs[0].len());
    let batch = TokenBatch {
        batch_size,
        seq_len,
        inputs: inputs.concat(),
        targets: vec![IGNORE_TARGET; batch_size * seq_len],
    };
    let logits = model.logits(&batch).unwrap();
    assert_eq!(logits.len(), torch_logits.len());
    let max_diff = logits.iter().zip(&torch_logits).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    println!(
        "max |logits − transformers {} logits| = {max_diff:.2e}",
        reference["transformers"].as_str().unwrap_or("?")
    );
    assert!(max_diff <= 1e-4, "max abs diff {max_diff:e}");
}

#[test]
fn transformers_bf16_checkpoint_imports() {
    let (f32_config, f32_tensors) = load_hf_model(&fixture("hf-tiny")).unwrap();
    let (config, tensors) = load_hf_model(&fixture("hf-tiny-bf16-transformers5")).unwrap();
    // transformers 5 keeps rope_theta under rope_parameters and adds bos/eos ids.
    assert_eq!(config.rope_theta, 10000.0);
    assert_eq!((config.hidden_size, config.num_key_value_heads), (f32_config.hidden_size, f32_config.num_key_value_heads));
    for (name, tensor) in &f32_tensors {
        let rounded: Vec<f32> = tensor.data.iter().map(|&v| half::bf16::from_f32(v).to_f32()).collect();
        assert_eq!(tensors[name].data, rounded, "{name}");
    }
    Llama::from_host_tensors(CpuBackend, config, &tensors).unwrap();
}
