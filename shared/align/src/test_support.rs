//! A small tokenizer for the unit tests, trained once, and a model shape to go with it.

use std::sync::OnceLock;

use dsllm_tokens::tokenizer::{train_from_documents, TrainConfig};
use dsllm_tokens::DsTokenizer;

pub fn tokenizer() -> &'static DsTokenizer {
    static TOKENIZER: OnceLock<DsTokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let texts: Vec<String> = (0..300)
            .map(|i| format!("Reverse the digits of {}. Read from right to left, the answer is #### {}. Be brief. And {i}?", i * 37 % 1000, i * 73 % 1000))
            .collect();
        let config = TrainConfig { learned_tokens: 400, model_vocab_size: None, sample_bytes: 1 << 20, ..TrainConfig::default() };
        let ids: Vec<String> = (0..texts.len()).map(|i| i.to_string()).collect();
        let (tokenizer, config) = train_from_documents(ids.iter().map(String::as_str).zip(texts.iter().map(String::as_str)), &config).expect("training");
        DsTokenizer::from_trained(tokenizer, config).expect("wrapping")
    })
}

/// A one-layer model shape for `tokenizer`'s vocabulary: small enough for finite differences.
pub fn tiny_model_config(tokenizer: &DsTokenizer) -> dsllm_model::ModelConfig {
    dsllm_model::ModelConfig {
        hidden_size: 16,
        intermediate_size: 24,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        num_key_value_heads: 1,
        vocab_size: tokenizer.vocab_size() as usize,
        max_position_embeddings: 64,
        rms_norm_eps: 1e-6,
        rope_theta: 10000.0,
        initializer_range: 0.2,
        bos_token_id: None,
        eos_token_id: None,
    }
}
