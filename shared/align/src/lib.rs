//! Alignment as the DeepSeek LLM paper does it (§5): supervised fine-tuning on chat
//! conversations, then DPO on preference pairs, and the measurements that judge them.
//!
//! - [`chat`]: conversations and the chat template (loss on assistant tokens only).
//! - [`data`]: SFT and preference records from JSON/JSONL/Parquet (alpaca, ShareGPT,
//!   OpenAI messages, TRL and LLaMA-Factory preference formats); GSM8K-format task items.
//! - [`pack`]: several conversations per row, attention and loss kept inside each.
//! - [`sft`], [`dpo`]: the training loops; [`dpo`] also holds the loss (TRL's sigmoid loss).
//! - [`measure`]: task accuracy, repetition ratio, preferred-answer rate (greedy decoding with
//!   `dsllm_model`'s KV cache, answers scored with `dsllm_eval`'s extraction).

pub mod chat;
pub mod data;
pub mod dpo;
pub mod measure;
pub mod pack;
pub mod sft;
pub mod stage;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use dsllm_cuda::{gpu_unavailable_reason, CudaBackend};
use dsllm_model::checkpoint::MODEL_FILE;
use dsllm_model::{latest_checkpoint, load_hf_model, save_checkpoint, Backend, CheckpointData, Llama, TokenBatch, IGNORE_TARGET};
use dsllm_tokens::tokenizer::{DSLLM_TOKENIZER_CONFIG_FILE, HF_TOKENIZER_CONFIG_FILE, TOKENIZER_FILE};

use crate::chat::ChatTemplate;
use crate::data::PreferencePair;

/// A checkpoint folder (with `model.safetensors`), or a run folder whose `latest` names one.
pub fn resolve_checkpoint(path: &Path) -> Result<PathBuf> {
    if path.join(MODEL_FILE).exists() {
        return Ok(path.to_path_buf());
    }
    latest_checkpoint(path)?.with_context(|| format!("{} holds neither {MODEL_FILE} nor a run's `latest` checkpoint", path.display()))
}

/// The model of a Hugging Face LLaMA checkpoint (ds-pretrain's, ds-sft's, or transformers').
pub fn load_model<B: Backend>(backend: B, checkpoint: &Path) -> Result<Llama<B>> {
    let (config, tensors) = load_hf_model(checkpoint).with_context(|| format!("cannot load the model in {}", checkpoint.display()))?;
    Llama::from_host_tensors(backend, config, &tensors)
}

/// The tokenizer's files, copied into checkpoints so transformers loads model and tokenizer
/// from one folder.
pub fn tokenizer_files(dir: &Path) -> Vec<PathBuf> {
    [TOKENIZER_FILE, HF_TOKENIZER_CONFIG_FILE, DSLLM_TOKENIZER_CONFIG_FILE].iter().map(|f| dir.join(f)).filter(|p| p.exists()).collect()
}

/// Writes `model` as the Hugging Face checkpoint `run_dir/name` (weights only) and points
/// `run_dir/latest` at it.
pub fn save_model<B: Backend>(model: &Llama<B>, run_dir: &Path, name: &str, state: serde_json::Value, tokenizer_dir: &Path) -> Result<PathBuf> {
    let data = CheckpointData {
        config: model.config.clone(),
        weights: model.host_tensors(),
        optimizer: Vec::new(),
        trainer_state: Some(state),
        extra_files: tokenizer_files(tokenizer_dir),
    };
    save_checkpoint(run_dir, name, &data)
}

/// Where training runs.
pub enum ChosenBackend {
    Cpu,
    Cuda(Box<CudaBackend>),
}

/// `cpu`, `cuda`, or `auto` (CUDA when a GPU is usable). Says on stderr which one and why.
pub fn choose_backend(tool: &str, kind: &str) -> Result<ChosenBackend> {
    let gpu = || -> Result<ChosenBackend> { Ok(ChosenBackend::Cuda(Box::new(CudaBackend::new(0)?))) };
    let (chosen, why) = match kind {
        "cpu" => (ChosenBackend::Cpu, "asked for".to_string()),
        "cuda" => (gpu()?, "asked for".to_string()),
        _ => match gpu_unavailable_reason() {
            Some(reason) => (ChosenBackend::Cpu, reason),
            None => match gpu() {
                Ok(chosen) => (chosen, "a GPU is usable".to_string()),
                Err(error) => (ChosenBackend::Cpu, format!("the GPU could not be used: {error:#}")),
            },
        },
    };
    let name = match &chosen {
        ChosenBackend::Cpu => format!("cpu ({} threads)", rayon::current_num_threads()),
        ChosenBackend::Cuda(b) => format!("cuda ({})", b.device_name()),
    };
    eprintln!("{tool}: backend {name}: {why}");
    Ok(chosen)
}

/// One row of a preference pair: the prompt, then one answer and EOS, the answer's tokens
/// (EOS included) as the targets.
pub fn answer_row(template: &ChatTemplate, prompt: &[u32], answer: &str) -> Result<(Vec<u32>, Vec<u32>)> {
    let (tokens, range) = template.encode_response(prompt, answer)?;
    let n = tokens.len() - 1;
    let targets = (1..=n).map(|i| if range.contains(&i) { tokens[i] } else { IGNORE_TARGET }).collect();
    Ok((tokens[..n].to_vec(), targets))
}

/// Rows of different lengths as one batch, right-padded with `pad` (no targets there; causal
/// attention keeps the padding out of the real positions).
pub fn padded_batch(rows: &[(Vec<u32>, Vec<u32>)], pad: u32) -> TokenBatch {
    let seq_len = rows.iter().map(|r| r.0.len()).max().unwrap_or(1);
    let mut batch = TokenBatch { batch_size: rows.len(), seq_len, inputs: Vec::new(), targets: Vec::new() };
    for (inputs, targets) in rows {
        batch.inputs.extend_from_slice(inputs);
        batch.inputs.extend(std::iter::repeat_n(pad, seq_len - inputs.len()));
        batch.targets.extend_from_slice(targets);
        batch.targets.extend(std::iter::repeat_n(IGNORE_TARGET, seq_len - targets.len()));
    }
    batch
}

/// Per row of the last forward: Σ log p(target) over its targeted positions.
pub fn row_logps(token_losses: &[f32], batch: &TokenBatch) -> Vec<f64> {
    token_losses.chunks(batch.seq_len).map(|row| -row.iter().map(|&l| l as f64).sum::<f64>()).collect()
}

/// The rows of `pairs`: chosen then rejected per pair.
pub fn pair_rows(template: &ChatTemplate, pairs: &[PreferencePair]) -> Result<Vec<[(Vec<u32>, Vec<u32>); 2]>> {
    pairs
        .iter()
        .map(|pair| {
            let prompt = template.encode_prompt(&pair.prompt)?;
            Ok([answer_row(template, &prompt, &pair.chosen)?, answer_row(template, &prompt, &pair.rejected)?])
        })
        .collect()
}

/// `(log p(chosen | prompt), log p(rejected | prompt))` per pair under `model`, summed over the
/// answer tokens and their EOS.
pub fn sequence_logps<B: Backend>(model: &mut Llama<B>, template: &ChatTemplate, pairs: &[PreferencePair], micro_batch: usize) -> Result<Vec<(f64, f64)>> {
    let rows = pair_rows(template, pairs)?;
    let mut out = Vec::with_capacity(pairs.len());
    for chunk in rows.chunks(micro_batch.max(1)) {
        let flat: Vec<_> = chunk.iter().flat_map(|p| p.iter().cloned()).collect();
        let batch = padded_batch(&flat, template.tokens.pad);
        model.forward(&batch)?;
        let logps = row_logps(&model.token_losses()?, &batch);
        out.extend(logps.chunks(2).map(|c| (c[0], c[1])));
    }
    Ok(out)
}

#[cfg(test)]
mod test_support;
