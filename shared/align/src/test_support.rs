//! A small tokenizer for the unit tests, trained once.

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
