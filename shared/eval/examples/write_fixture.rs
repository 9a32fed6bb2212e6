//! Writes `tests/fixtures/tiny`: a 400-token tokenizer and a random-init 2-layer checkpoint, the
//! model `tests/fixtures/lm_eval_reference.py` scores with lm-eval + transformers.
//!
//! cargo run -p dsllm-eval --example write_fixture -- shared/eval/tests/fixtures/tiny

use dsllm_eval::fixture::{tiny_config, write_model, write_tokenizer};
use dsllm_model::{CpuBackend, Llama};
use dsllm_tokens::DsTokenizer;

fn main() -> anyhow::Result<()> {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).expect("usage: write_fixture DIR"));
    write_tokenizer(&dir, 400)?;
    let tokenizer = DsTokenizer::load(&dir)?;
    let config = tiny_config(tokenizer.config().model_vocab_size as usize, tokenizer.eos_id());
    let model = Llama::new_random(CpuBackend, config, 2024)?;
    write_model(&dir, &model)?;
    println!("wrote {}", dir.display());
    Ok(())
}
