//! Checkpoints as Hugging Face directories: `model.safetensors` with LLaMA tensor names and a
//! `config.json` that transformers loads as `LlamaForCausalLM`, plus this trainer's
//! `optimizer.safetensors` and `trainer_state.json`. A checkpoint is written to a temporary
//! folder and renamed into place, then `latest` is rewritten (also by rename) to name it, so
//! a crash never leaves a half-written checkpoint where a reader looks.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use anyhow::{bail, Context, Result};
use safetensors::tensor::{Dtype, View};
use safetensors::SafeTensors;

use crate::config::ModelConfig;
use crate::model::HostTensor;

pub const MODEL_FILE: &str = "model.safetensors";
pub const CONFIG_FILE: &str = "config.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const TRAINER_STATE_FILE: &str = "trainer_state.json";
/// File in a run directory naming its newest complete checkpoint.
pub const LATEST_FILE: &str = "latest";

/// Everything a checkpoint holds, in host memory, so it can be written on another thread
/// while training goes on.
#[derive(Debug, Clone)]
pub struct CheckpointData {
    pub config: ModelConfig,
    /// Weights keyed by Hugging Face name.
    pub weights: Vec<(String, HostTensor)>,
    /// Optimizer tensors (`<weight name>.exp_avg`, `<weight name>.exp_avg_sq`); empty for a
    /// weights-only export.
    pub optimizer: Vec<(String, HostTensor)>,
    /// `trainer_state.json`'s content, if any.
    pub trainer_state: Option<serde_json::Value>,
    /// Files copied into the checkpoint as they are (the tokenizer's, for instance).
    pub extra_files: Vec<PathBuf>,
}

/// Name of the checkpoint directory for an optimizer step.
pub fn checkpoint_name(step: u64) -> String {
    format!("ckpt-{step}")
}

/// Writes `data` as `run_dir/name` atomically and points `run_dir/latest` at it. Returns the
/// checkpoint's path.
pub fn save_checkpoint(run_dir: &Path, name: &str, data: &CheckpointData) -> Result<PathBuf> {
    std::fs::create_dir_all(run_dir).with_context(|| format!("cannot create run directory {}", run_dir.display()))?;
    let final_dir = run_dir.join(name);
    let temp_dir = run_dir.join(format!(".{name}.tmp"));
    if temp_dir.exists() {
        std::fs::remove_dir_all(&temp_dir).with_context(|| format!("cannot remove stale {}", temp_dir.display()))?;
    }
    std::fs::create_dir_all(&temp_dir).with_context(|| format!("cannot create {}", temp_dir.display()))?;

    write_safetensors(&temp_dir.join(MODEL_FILE), &data.weights)?;
    write_json(&temp_dir.join(CONFIG_FILE), &data.config.to_hf_config_json())?;
    if !data.optimizer.is_empty() {
        write_safetensors(&temp_dir.join(OPTIMIZER_FILE), &data.optimizer)?;
    }
    if let Some(state) = &data.trainer_state {
        write_json(&temp_dir.join(TRAINER_STATE_FILE), state)?;
    }
    for file in &data.extra_files {
        let file_name = file.file_name().with_context(|| format!("{} has no file name", file.display()))?;
        std::fs::copy(file, temp_dir.join(file_name))
            .with_context(|| format!("cannot copy {} into the checkpoint", file.display()))?;
    }

    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).with_context(|| format!("cannot replace {}", final_dir.display()))?;
    }
    std::fs::rename(&temp_dir, &final_dir)
        .with_context(|| format!("cannot rename {} to {}", temp_dir.display(), final_dir.display()))?;
    let latest_temp = run_dir.join(format!(".{LATEST_FILE}.tmp"));
    std::fs::write(&latest_temp, format!("{name}\n")).with_context(|| format!("cannot write {}", latest_temp.display()))?;
    std::fs::rename(&latest_temp, run_dir.join(LATEST_FILE))
        .with_context(|| format!("cannot update {}", run_dir.join(LATEST_FILE).display()))?;
    Ok(final_dir)
}

/// The checkpoint `run_dir/latest` names, if there is one.
pub fn latest_checkpoint(run_dir: &Path) -> Result<Option<PathBuf>> {
    let latest = run_dir.join(LATEST_FILE);
    if !latest.exists() {
        return Ok(None);
    }
    let name = std::fs::read_to_string(&latest).with_context(|| format!("cannot read {}", latest.display()))?;
    let dir = run_dir.join(name.trim());
    if !dir.join(MODEL_FILE).exists() {
        bail!("{} names {}, which has no {MODEL_FILE}", latest.display(), dir.display());
    }
    Ok(Some(dir))
}

/// Writes checkpoints on a background thread, one at a time: [`CheckpointWriter::save`]
/// returns at once unless the previous save is still running.
#[derive(Default)]
pub struct CheckpointWriter {
    pending: Option<JoinHandle<Result<PathBuf>>>,
}

impl CheckpointWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts writing `data` as `run_dir/name`. Waits for the previous save first and
    /// returns its error, if it failed.
    pub fn save(&mut self, run_dir: &Path, name: &str, data: CheckpointData) -> Result<()> {
        self.wait()?;
        let (run_dir, name) = (run_dir.to_path_buf(), name.to_string());
        self.pending = Some(std::thread::spawn(move || save_checkpoint(&run_dir, &name, &data)));
        Ok(())
    }

    /// Waits for the save in progress; returns where it wrote, if there was one.
    pub fn wait(&mut self) -> Result<Option<PathBuf>> {
        match self.pending.take() {
            None => Ok(None),
            Some(handle) => match handle.join() {
                Ok(result) => result.map(Some),
                Err(_) => bail!("the checkpoint writer thread panicked"),
            },
        }
    }
}

impl Drop for CheckpointWriter {
    fn drop(&mut self) {
        if let Err(error) = self.wait() {
            eprintln!("checkpoint save failed: {error:#}");
        }
    }
}

/// Reads a Hugging Face LLaMA-format model directory: `config.json` and the weights from
/// `model.safetensors` or the shards `model.safetensors.index.json` lists (f32, bf16 or f16,
/// converted to f32). A checkpoint with tied embeddings gets its embedding as `lm_head`.
pub fn load_hf_model(dir: &Path) -> Result<(ModelConfig, HashMap<String, HostTensor>)> {
    let config_path = dir.join(CONFIG_FILE);
    let config_json = read_json(&config_path)?;
    let config = ModelConfig::from_hf_config_json(&config_json).with_context(|| format!("in {}", config_path.display()))?;
    let index_path = dir.join("model.safetensors.index.json");
    let files: Vec<PathBuf> = if index_path.exists() {
        let index = read_json(&index_path)?;
        let map = index["weight_map"].as_object().with_context(|| format!("{} has no weight_map", index_path.display()))?;
        let mut names: Vec<&str> = map.values().filter_map(|v| v.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names.into_iter().map(|name| dir.join(name)).collect()
    } else {
        vec![dir.join(MODEL_FILE)]
    };
    let mut tensors = HashMap::new();
    for file in files {
        tensors.extend(read_safetensors(&file)?);
    }
    if !tensors.contains_key("lm_head.weight") {
        let tied = config_json.get("tie_word_embeddings").and_then(|v| v.as_bool()).unwrap_or(false);
        if let (true, Some(embedding)) = (tied, tensors.get("model.embed_tokens.weight")) {
            tensors.insert("lm_head.weight".to_string(), embedding.clone());
        }
    }
    Ok((config, tensors))
}

/// Reads every tensor of a safetensors file as f32.
pub fn read_safetensors(path: &Path) -> Result<HashMap<String, HostTensor>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file = SafeTensors::deserialize(&bytes).with_context(|| format!("{} is not a safetensors file", path.display()))?;
    let mut tensors = HashMap::new();
    for (name, view) in file.tensors() {
        let raw = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::BF16 => raw.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::F16 => raw.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            other => bail!("{}: tensor {name} has dtype {other:?}; only F32, BF16 and F16 are supported", path.display()),
        };
        tensors.insert(name, HostTensor { shape: view.shape().to_vec(), data });
    }
    Ok(tensors)
}

/// Writes f32 tensors with the `format: pt` metadata transformers expects.
pub fn write_safetensors(path: &Path, tensors: &[(String, HostTensor)]) -> Result<()> {
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let views = tensors.iter().map(|(name, tensor)| (name.as_str(), F32View(tensor)));
    safetensors::serialize_to_file(views, Some(metadata), path).with_context(|| format!("cannot write {}", path.display()))
}

/// Lets the safetensors writer read a [`HostTensor`] as little-endian f32 bytes.
struct F32View<'a>(&'a HostTensor);

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.0.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        self.0.data.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>().into()
    }
    fn data_len(&self) -> usize {
        self.0.data.len() * 4
    }
}

/// What `ds-inspect` shows for a checkpoint directory: its config, parameter counts, FLOPs per
/// token (6·N1, 6·N2, the paper's M and the exact count, at the config's context length),
/// tensor count and dtypes from the safetensors header, and the trainer's progress if present.
/// Reads no tensor data.
pub fn describe_checkpoint(dir: &Path) -> Result<serde_json::Value> {
    use crate::flops;
    let config = ModelConfig::from_hf_config_json(&read_json(&dir.join(CONFIG_FILE))?)
        .with_context(|| format!("in {}", dir.join(CONFIG_FILE).display()))?;
    let l_seq = config.max_position_embeddings;
    let mut dtypes = std::collections::BTreeMap::<String, usize>::new();
    let mut tensor_count = 0;
    let single = dir.join(MODEL_FILE);
    let index = dir.join("model.safetensors.index.json");
    if !single.exists() && index.exists() {
        // Sharded: count tensors from the index; dtypes would need every shard's header.
        tensor_count = read_json(&index)?["weight_map"].as_object().map_or(0, |m| m.len());
    }
    if single.exists() {
        let header = read_safetensors_header(&single)?;
        for (name, info) in header.as_object().into_iter().flatten() {
            if name != "__metadata__" {
                tensor_count += 1;
                *dtypes.entry(info["dtype"].as_str().unwrap_or("?").to_string()).or_default() += 1;
            }
        }
    }
    let progress = read_json(&dir.join(TRAINER_STATE_FILE)).ok().map(|state| {
        serde_json::json!({ "step": state["step"], "tokens_seen": state["tokens_seen"], "data_cursor": state["data_cursor"] })
    });
    Ok(serde_json::json!({
        "path": dir.display().to_string(),
        "config": config,
        "parameters": flops::parameter_count(&config),
        "non_embedding_parameters_n1": flops::non_embedding_parameter_count(&config),
        "flops_per_token": {
            "l_seq": l_seq,
            "six_n1": flops::six_n1(&config),
            "six_n2": flops::six_n2(&config),
            "m": flops::model_scale_m(&config, l_seq),
            "exact_training": flops::training_flops_per_token(&config, l_seq),
        },
        "tensors": tensor_count,
        "dtypes": dtypes,
        "trainer_state": progress,
    }))
}

/// The JSON header of a safetensors file (tensor names, dtypes, shapes, offsets).
fn read_safetensors_header(path: &Path) -> Result<serde_json::Value> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut length = [0u8; 8];
    file.read_exact(&mut length).with_context(|| format!("{} is too short for a safetensors file", path.display()))?;
    let mut header = vec![0u8; u64::from_le_bytes(length) as usize];
    file.read_exact(&mut header).with_context(|| format!("{} has a truncated header", path.display()))?;
    serde_json::from_slice(&header).with_context(|| format!("{} has a header that is not JSON", path.display()))
}

pub fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_config() -> ModelConfig {
        ModelConfig::from_hf_config_json(&serde_json::json!({
            "hidden_size": 8, "intermediate_size": 12, "num_hidden_layers": 1,
            "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 10,
            "max_position_embeddings": 16,
        }))
        .unwrap()
    }

    #[test]
    fn save_is_atomic_and_latest_names_the_newest() {
        let run = tempfile::tempdir().unwrap();
        let tensor = HostTensor { shape: vec![2, 3], data: vec![1.0, -2.0, 3.5, 0.0, 1e-8, 7.0] };
        let data = CheckpointData {
            config: tiny_config(),
            weights: vec![("model.norm.weight".into(), tensor.clone())],
            optimizer: vec![],
            trainer_state: Some(serde_json::json!({"step": 3})),
            extra_files: vec![],
        };
        let mut writer = CheckpointWriter::new();
        writer.save(run.path(), &checkpoint_name(3), data.clone()).unwrap();
        writer.save(run.path(), &checkpoint_name(5), data).unwrap();
        let written = writer.wait().unwrap().unwrap();
        assert_eq!(latest_checkpoint(run.path()).unwrap().unwrap(), written);
        assert!(written.ends_with("ckpt-5"));
        let leftovers: Vec<_> = std::fs::read_dir(run.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        let back = read_safetensors(&written.join(MODEL_FILE)).unwrap();
        assert_eq!(back["model.norm.weight"], tensor);
        assert_eq!(read_json(&written.join(TRAINER_STATE_FILE)).unwrap()["step"], 3);
        let summary = describe_checkpoint(&written).unwrap();
        assert_eq!(summary["tensors"], 1);
        assert_eq!(summary["dtypes"]["F32"], 1);
        assert_eq!(summary["trainer_state"]["step"], 3);
    }

    #[test]
    fn bf16_and_f16_tensors_import_as_f32() {
        let dir = tempfile::tempdir().unwrap();
        let values = [1.0f32, -0.5, 2.25];
        let bf16: Vec<u8> = values.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect();
        let f16: Vec<u8> = values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect();
        let views = vec![
            ("a", safetensors::tensor::TensorView::new(Dtype::BF16, vec![3], &bf16).unwrap()),
            ("b", safetensors::tensor::TensorView::new(Dtype::F16, vec![3], &f16).unwrap()),
        ];
        let path = dir.path().join("x.safetensors");
        safetensors::serialize_to_file(views, None, &path).unwrap();
        let back = read_safetensors(&path).unwrap();
        assert_eq!(back["a"].data, values);
        assert_eq!(back["b"].data, values);
    }
}
