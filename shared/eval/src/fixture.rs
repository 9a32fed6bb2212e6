//! A small tokenizer, checkpoint and item set for tests, the transformers parity fixture and
//! benchmarks: English sentences of the benchmarks' shapes, written out here (no external data).

use std::path::Path;

use anyhow::Result;
use dsllm_model::checkpoint::write_safetensors;
use dsllm_model::{CpuBackend, Llama, ModelConfig};
use dsllm_tokens::{save_tokenizer, train_from_documents, TrainConfig};

/// Facts of a synthetic multiple-choice task a tiny model learns in seconds:
/// "Question: What color is the <thing>?\nAnswer: <color>".
pub const FACTS: [(&str, &str); 8] = [
    ("sky", "blue"),
    ("grass", "green"),
    ("snow", "white"),
    ("coal", "black"),
    ("sun", "yellow"),
    ("blood", "red"),
    ("orange", "orange"),
    ("plum", "purple"),
];

/// Text of the benchmarks' shapes: questions, answers, short science and everyday sentences.
pub fn corpus() -> Vec<String> {
    let sentences = [
        "Question: Which statement best explains why plants need sunlight?\nAnswer: Plants use light to make food.",
        "Question: What do you use to keep water out of your shoes?\nAnswer: Wear rubber boots in the rain.",
        "The students measured the temperature of the water every hour and wrote the results in a table.",
        "Janet has 16 eggs. She eats 3 and bakes with 4. She sells the rest for $2 each. 16 - 3 - 4 = 9, 9 * 2 = 18.\n#### 18",
        "A robe takes 2 bolts of blue fiber and half that much white fiber. 2 / 2 = 1, 2 + 1 = 3.\n#### 3",
        "def add(a, b):\n    return a + b\n",
        "The passage says the river floods every spring, so the farmers plant after the water goes down.",
        "Which tool is best for measuring the length of a table? A ruler or a measuring tape.",
    ];
    let mut texts: Vec<String> = sentences.iter().map(|s| s.to_string()).collect();
    for (thing, color) in FACTS {
        texts.push(format!("Question: What color is the {thing}?\nAnswer: {color}"));
    }
    texts.iter().cycle().take(400).enumerate().map(|(i, t)| format!("{t} {i}\n")).collect()
}

/// Trains a BPE tokenizer of `learned_tokens` on [`corpus`] and saves it to `dir`.
pub fn write_tokenizer(dir: &Path, learned_tokens: usize) -> Result<()> {
    let texts = corpus();
    let ids: Vec<String> = (0..texts.len()).map(|i| i.to_string()).collect();
    let config = TrainConfig { learned_tokens, model_vocab_size: None, sample_bytes: 1 << 20, ..TrainConfig::default() };
    let (tokenizer, config) = train_from_documents(ids.iter().map(String::as_str).zip(texts.iter().map(String::as_str)), &config)?;
    save_tokenizer(dir, &tokenizer, &config)?;
    Ok(())
}

/// The fixture's model shape: two layers, grouped-query attention, 512 positions.
pub fn tiny_config(vocab_size: usize, eos: u32) -> ModelConfig {
    ModelConfig {
        hidden_size: 32,
        intermediate_size: 64,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        vocab_size,
        max_position_embeddings: 512,
        rms_norm_eps: 1e-6,
        rope_theta: 10000.0,
        // Wider than Hugging Face's 0.02 so the logits differ enough to test against a reference.
        initializer_range: 0.2,
        bos_token_id: None,
        eos_token_id: Some(eos),
    }
}

/// Writes `model`'s weights and config as a Hugging Face LlamaForCausalLM folder.
pub fn write_model(dir: &Path, model: &Llama<CpuBackend>) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    write_safetensors(&dir.join("model.safetensors"), &model.host_tensors())?;
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&model.config.to_hf_config_json())?)?;
    Ok(())
}
