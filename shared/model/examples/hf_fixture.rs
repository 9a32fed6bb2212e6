//! Writes the small random checkpoint behind the Hugging Face logits test:
//! `cargo run -p dsllm-model --example hf_fixture -- shared/model/tests/fixtures/hf-tiny`.
//! `tests/fixtures/hf_logits.py` then computes transformers' logits for it (on a machine with
//! torch) into `torch_logits.json`, which `tests/hf_logits.rs` compares against.

use dsllm_model::{save_checkpoint, CpuBackend, Llama, ModelConfig, Trainer};

fn main() -> anyhow::Result<()> {
    let out = std::path::PathBuf::from(std::env::args().nth(1).expect("usage: hf_fixture OUT_DIR"));
    let config = ModelConfig {
        hidden_size: 32,
        intermediate_size: 48,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        vocab_size: 64,
        max_position_embeddings: 64,
        rms_norm_eps: 1e-6,
        rope_theta: 10000.0,
        // Large enough that the logits differ clearly from position to position.
        initializer_range: 0.25,
        bos_token_id: None,
        eos_token_id: None,
    };
    let model = Llama::new_random(CpuBackend, config, 2024)?;
    let trainer_config = dsllm_model::TrainerConfig {
        seq_len: 16,
        micro_batch_size: 1,
        grad_accum_steps: 1,
        schedule: dsllm_model::LrSchedule::Cosine { peak_lr: 1e-3, warmup_steps: 1, total_steps: 1, min_lr_ratio: 0.1 },
        optimizer: Default::default(),
        seed: 0,
    };
    let mut data = Trainer::from_model(model, trainer_config)?.checkpoint_data(vec![]);
    data.optimizer.clear();
    data.trainer_state = None;
    let parent = out.parent().expect("OUT_DIR has a parent");
    let name = out.file_name().expect("OUT_DIR has a name").to_string_lossy().to_string();
    save_checkpoint(parent, &name, &data)?;
    std::fs::remove_file(parent.join(dsllm_model::checkpoint::LATEST_FILE))?;
    println!("wrote {}", out.display());
    Ok(())
}
