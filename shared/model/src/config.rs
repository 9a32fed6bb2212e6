//! Model shapes. Field names are Hugging Face `LlamaConfig`'s, so a config moves to and from
//! `config.json` unchanged; the TOML files in `pipelines/configs/` use the same names.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// A LLaMA-architecture decoder: pre-norm RMSNorm, SwiGLU, rotate-half RoPE, grouped-query
/// attention, no biases, untied input and output embeddings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// d_model.
    pub hidden_size: usize,
    /// Width of the SwiGLU feed-forward layer.
    pub intermediate_size: usize,
    /// n_layer.
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Grouped-query attention: each K/V head serves num_attention_heads / num_key_value_heads
    /// query heads.
    pub num_key_value_heads: usize,
    /// 0 means "set from the tokenizer at run time" (see [`ModelConfig::with_vocab_size`]).
    #[serde(default)]
    pub vocab_size: usize,
    /// Context length l_seq the model trains at.
    pub max_position_embeddings: usize,
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    /// Standard deviation of the normal initialisation of every matrix (Hugging Face's default).
    #[serde(default = "default_initializer_range")]
    pub initializer_range: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bos_token_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos_token_id: Option<u32>,
}

fn default_rms_norm_eps() -> f64 {
    1e-6
}
fn default_rope_theta() -> f64 {
    10000.0
}
fn default_initializer_range() -> f64 {
    0.02
}

impl ModelConfig {
    /// Reads a TOML model config such as `pipelines/configs/tiny.toml`.
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read model config {}", path.display()))?;
        let config: Self = toml::from_str(&text)
            .with_context(|| format!("{} is not a valid model config", path.display()))?;
        config.validate().with_context(|| format!("in {}", path.display()))?;
        Ok(config)
    }

    /// Returns a copy with the vocabulary size the tokenizer dictates.
    pub fn with_vocab_size(mut self, vocab_size: usize) -> Self {
        self.vocab_size = vocab_size;
        self
    }

    /// Size of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Width of the K and V projections.
    pub fn kv_dim(&self) -> usize {
        self.num_key_value_heads * self.head_dim()
    }

    /// Checks the shape constraints the model code relies on.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        for (name, value) in positive {
            if value == 0 {
                bail!("{name} must be positive");
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            bail!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size,
                self.num_attention_heads
            );
        }
        if !self.num_attention_heads.is_multiple_of(self.num_key_value_heads) {
            bail!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads,
                self.num_key_value_heads
            );
        }
        if !self.head_dim().is_multiple_of(2) {
            bail!("head_dim {} must be even for rotary embeddings", self.head_dim());
        }
        Ok(())
    }

    /// The `config.json` that transformers loads as `LlamaForCausalLM` in float32.
    pub fn to_hf_config_json(&self) -> serde_json::Value {
        let mut json = serde_json::json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_act": "silu",
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim(),
            "vocab_size": self.vocab_size,
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": null,
            "initializer_range": self.initializer_range,
            "attention_bias": false,
            "attention_dropout": 0.0,
            "mlp_bias": false,
            "pretraining_tp": 1,
            "tie_word_embeddings": false,
            "torch_dtype": "float32",
            "use_cache": true,
        });
        if let Some(id) = self.bos_token_id {
            json["bos_token_id"] = id.into();
        }
        if let Some(id) = self.eos_token_id {
            json["eos_token_id"] = id.into();
        }
        json
    }

    /// Reads a Hugging Face LLaMA `config.json`, refusing variants this model does not
    /// implement (biases, RoPE scaling, other activations).
    pub fn from_hf_config_json(json: &serde_json::Value) -> Result<Self> {
        let usize_field = |name: &str| -> Result<usize> {
            json.get(name)
                .and_then(|v| v.as_u64())
                .map(|v| v as usize)
                .with_context(|| format!("config.json has no integer field {name}"))
        };
        if let Some(model_type) = json.get("model_type").and_then(|v| v.as_str()) {
            if model_type != "llama" {
                bail!("config.json has model_type {model_type:?}; only \"llama\" is supported");
            }
        }
        let activation = json.get("hidden_act").and_then(|v| v.as_str()).unwrap_or("silu");
        if activation != "silu" {
            bail!("hidden_act {activation:?} is not supported; the model uses SwiGLU (silu)");
        }
        for flag in ["attention_bias", "mlp_bias"] {
            if json.get(flag).and_then(|v| v.as_bool()) == Some(true) {
                bail!("{flag} = true is not supported: the model has no biases");
            }
        }
        if json.get("rope_scaling").is_some_and(|v| !v.is_null()) {
            bail!("rope_scaling is not supported; only plain RoPE");
        }
        // transformers 5 moved rope_theta into rope_parameters.
        let rope_parameters = json.get("rope_parameters");
        if let Some(kind) = rope_parameters.and_then(|p| p.get("rope_type")).and_then(|v| v.as_str()) {
            if kind != "default" {
                bail!("rope_type {kind:?} is not supported; only \"default\"");
            }
        }
        let rope_theta = json
            .get("rope_theta")
            .or_else(|| rope_parameters.and_then(|p| p.get("rope_theta")))
            .and_then(|v| v.as_f64())
            .unwrap_or_else(default_rope_theta);
        let num_attention_heads = usize_field("num_attention_heads")?;
        let config = Self {
            hidden_size: usize_field("hidden_size")?,
            intermediate_size: usize_field("intermediate_size")?,
            num_hidden_layers: usize_field("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads: usize_field("num_key_value_heads").unwrap_or(num_attention_heads),
            vocab_size: usize_field("vocab_size")?,
            max_position_embeddings: usize_field("max_position_embeddings")?,
            rms_norm_eps: json.get("rms_norm_eps").and_then(|v| v.as_f64()).unwrap_or_else(default_rms_norm_eps),
            rope_theta,
            initializer_range: json
                .get("initializer_range")
                .and_then(|v| v.as_f64())
                .unwrap_or_else(default_initializer_range),
            bos_token_id: json.get("bos_token_id").and_then(|v| v.as_u64()).map(|v| v as u32),
            eos_token_id: json.get("eos_token_id").and_then(|v| v.as_u64()).map(|v| v as u32),
        };
        if let Some(head_dim) = json.get("head_dim").and_then(|v| v.as_u64()) {
            if head_dim as usize != config.head_dim() {
                bail!(
                    "head_dim {head_dim} differs from hidden_size / num_attention_heads = {}",
                    config.head_dim()
                );
            }
        }
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configs_dir() -> std::path::PathBuf {
        std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())).join("../../pipelines/configs")
    }

    #[test]
    fn every_shipped_config_parses_and_validates() {
        for name in ["tiny", "ds-160m", "ds-1b", "ds-1b-gqa", "7b", "67b"] {
            let config = ModelConfig::from_toml_file(&configs_dir().join(format!("{name}.toml"))).unwrap();
            assert_eq!(config.rms_norm_eps, 1e-6, "{name}");
            assert_eq!(config.rope_theta, 10000.0, "{name}");
        }
        let seven = ModelConfig::from_toml_file(&configs_dir().join("7b.toml")).unwrap();
        assert_eq!((seven.num_hidden_layers, seven.hidden_size, seven.intermediate_size), (30, 4096, 11008));
        let big = ModelConfig::from_toml_file(&configs_dir().join("67b.toml")).unwrap();
        assert_eq!((big.num_hidden_layers, big.num_attention_heads, big.num_key_value_heads), (95, 64, 8));
    }

    #[test]
    fn hf_config_json_round_trips() {
        let config = ModelConfig::from_toml_file(&configs_dir().join("ds-1b-gqa.toml")).unwrap();
        let back = ModelConfig::from_hf_config_json(&config.to_hf_config_json()).unwrap();
        assert_eq!(config, back);
    }

    #[test]
    fn unsupported_hf_variants_are_refused() {
        let mut json = ModelConfig::from_toml_file(&configs_dir().join("tiny.toml"))
            .unwrap()
            .with_vocab_size(100)
            .to_hf_config_json();
        json["attention_bias"] = true.into();
        let error = ModelConfig::from_hf_config_json(&json).unwrap_err().to_string();
        assert!(error.contains("attention_bias"), "{error}");
    }
}
