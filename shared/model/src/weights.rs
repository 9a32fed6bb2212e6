//! The model's tensors. One generic struct holds weights, gradients and optimizer moments alike
//! (`Weights<Buffer>`), or their shapes (`Weights<TensorSpec>`), so all of them walk the tensors
//! in the same order.
//!
//! A block's q, k and v projections are one tensor stacked by rows, and so are its gate and up
//! projections: one matrix product each instead of three and two (on the GPU the fused products
//! fill the SMs where ds-160m's 768-wide ones leave most idle). Checkpoints keep Hugging Face's
//! separate tensors: [`TensorSpec::parts`] names the row blocks a tensor is saved as.

use std::collections::HashMap;
use std::ops::Range;

use anyhow::{bail, Context, Result};

use crate::config::ModelConfig;
use crate::model::HostTensor;

/// One transformer block's tensors.
#[derive(Debug, Clone)]
pub struct LayerWeights<T> {
    pub input_layernorm: T,
    /// `q_proj`, `k_proj` and `v_proj` stacked: `[q_dim + 2 kv_dim, hidden]`.
    pub qkv_proj: T,
    pub o_proj: T,
    pub post_attention_layernorm: T,
    /// `gate_proj` then `up_proj`: `[2 intermediate, hidden]`.
    pub gate_up_proj: T,
    pub down_proj: T,
}

impl<T> LayerWeights<T> {
    /// The block's tensors in checkpoint order.
    pub fn tensors(&self) -> [&T; 6] {
        [&self.input_layernorm, &self.qkv_proj, &self.o_proj, &self.post_attention_layernorm, &self.gate_up_proj, &self.down_proj]
    }

    /// The block's tensors mutably, in the order of [`LayerWeights::tensors`].
    pub fn tensors_mut(&mut self) -> [&mut T; 6] {
        [&mut self.input_layernorm, &mut self.qkv_proj, &mut self.o_proj, &mut self.post_attention_layernorm, &mut self.gate_up_proj, &mut self.down_proj]
    }
}

/// All of the model's tensors.
#[derive(Debug, Clone)]
pub struct Weights<T> {
    pub embed_tokens: T,
    pub layers: Vec<LayerWeights<T>>,
    pub norm: T,
    pub lm_head: T,
}

/// Name, shape and kind of one tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// Hugging Face's name; for a stacked tensor, one in the same style (`...qkv_proj.weight`).
    pub name: String,
    pub shape: Vec<usize>,
    /// RMSNorm gains: initialised to 1 and not weight-decayed.
    pub is_norm: bool,
    /// The Hugging Face tensors this one stacks by rows, in order, with their row counts; empty
    /// when it is saved as itself under `name`.
    pub parts: Vec<(String, usize)>,
}

impl TensorSpec {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The tensors a checkpoint holds for this one: name, shape and range of this tensor's values.
    pub fn saved_tensors(&self) -> Vec<(String, Vec<usize>, Range<usize>)> {
        if self.parts.is_empty() {
            return vec![(self.name.clone(), self.shape.clone(), 0..self.numel())];
        }
        let cols: usize = self.shape[1..].iter().product();
        let mut start = 0;
        self.parts
            .iter()
            .map(|(name, rows)| {
                let mut shape = self.shape.clone();
                shape[0] = *rows;
                let range = start..start + rows * cols;
                start = range.end;
                (name.clone(), shape, range)
            })
            .collect()
    }

    /// `data` (this tensor's values) as the named tensors a checkpoint holds, each name followed
    /// by `suffix` (`""` for weights, `".exp_avg"` for optimizer moments).
    pub fn split(&self, data: &[f32], suffix: &str) -> Vec<(String, HostTensor)> {
        assert_eq!(data.len(), self.numel(), "{}: {} values for shape {:?}", self.name, data.len(), self.shape);
        self.saved_tensors().into_iter().map(|(name, shape, range)| (format!("{name}{suffix}"), HostTensor { shape, data: data[range].to_vec() })).collect()
    }

    /// The named tensors of a checkpoint (names followed by `suffix`) that make this one, each
    /// checked for its shape.
    pub fn find<'a>(&self, tensors: &'a HashMap<String, HostTensor>, suffix: &str) -> Result<Vec<&'a HostTensor>> {
        self.saved_tensors()
            .into_iter()
            .map(|(name, shape, _)| {
                let key = format!("{name}{suffix}");
                let tensor = tensors.get(&key).with_context(|| format!("checkpoint has no tensor {key}"))?;
                if tensor.shape != shape {
                    bail!("tensor {key} has shape {:?}; the config expects {shape:?}", tensor.shape);
                }
                Ok(tensor)
            })
            .collect()
    }

    /// This tensor's values from the named tensors of a checkpoint (see [`TensorSpec::find`]).
    pub fn join(&self, tensors: &HashMap<String, HostTensor>, suffix: &str) -> Result<Vec<f32>> {
        Ok(self.find(tensors, suffix)?.into_iter().flat_map(|t| t.data.iter().copied()).collect())
    }
}

impl<T> Weights<T> {
    /// Every tensor, in a fixed order (embedding, blocks, final norm, output projection).
    pub fn tensors(&self) -> Vec<&T> {
        let mut all = vec![&self.embed_tokens];
        for l in &self.layers {
            all.extend(l.tensors());
        }
        all.extend([&self.norm, &self.lm_head]);
        all
    }

    /// Every tensor mutably, in the order of [`Weights::tensors`].
    pub fn tensors_mut(&mut self) -> Vec<&mut T> {
        let mut all = vec![&mut self.embed_tokens];
        for l in &mut self.layers {
            all.extend(l.tensors_mut());
        }
        all.extend([&mut self.norm, &mut self.lm_head]);
        all
    }

    /// Applies `f` to every tensor, keeping the structure.
    pub fn map<U>(&self, mut f: impl FnMut(&T) -> U) -> Weights<U> {
        Weights {
            embed_tokens: f(&self.embed_tokens),
            layers: self
                .layers
                .iter()
                .map(|l| LayerWeights {
                    input_layernorm: f(&l.input_layernorm),
                    qkv_proj: f(&l.qkv_proj),
                    o_proj: f(&l.o_proj),
                    post_attention_layernorm: f(&l.post_attention_layernorm),
                    gate_up_proj: f(&l.gate_up_proj),
                    down_proj: f(&l.down_proj),
                })
                .collect(),
            norm: f(&self.norm),
            lm_head: f(&self.lm_head),
        }
    }
}

impl Weights<TensorSpec> {
    /// Names and shapes of every tensor of a model with this config.
    pub fn specs(config: &ModelConfig) -> Self {
        let (d, ff, v) = (config.hidden_size, config.intermediate_size, config.vocab_size);
        let q_dim = config.num_attention_heads * config.head_dim();
        let kv_dim = config.kv_dim();
        let matrix = |name: String, rows: usize, cols: usize| TensorSpec { name, shape: vec![rows, cols], is_norm: false, parts: Vec::new() };
        // Parts stacked in Hugging Face's order, so a fresh model's random values (drawn tensor
        // by tensor, row by row) are those of the separate tensors.
        let stacked = |name: String, parts: Vec<(String, usize)>| {
            let rows = parts.iter().map(|(_, r)| r).sum();
            TensorSpec { name, shape: vec![rows, d], is_norm: false, parts }
        };
        let norm = |name: String| TensorSpec { name, shape: vec![d], is_norm: true, parts: Vec::new() };
        Weights {
            embed_tokens: matrix("model.embed_tokens.weight".into(), v, d),
            layers: (0..config.num_hidden_layers)
                .map(|i| {
                    let p = format!("model.layers.{i}");
                    LayerWeights {
                        input_layernorm: norm(format!("{p}.input_layernorm.weight")),
                        qkv_proj: stacked(
                            format!("{p}.self_attn.qkv_proj.weight"),
                            vec![(format!("{p}.self_attn.q_proj.weight"), q_dim), (format!("{p}.self_attn.k_proj.weight"), kv_dim), (format!("{p}.self_attn.v_proj.weight"), kv_dim)],
                        ),
                        o_proj: matrix(format!("{p}.self_attn.o_proj.weight"), d, q_dim),
                        post_attention_layernorm: norm(format!("{p}.post_attention_layernorm.weight")),
                        gate_up_proj: stacked(format!("{p}.mlp.gate_up_proj.weight"), vec![(format!("{p}.mlp.gate_proj.weight"), ff), (format!("{p}.mlp.up_proj.weight"), ff)]),
                        down_proj: matrix(format!("{p}.mlp.down_proj.weight"), d, ff),
                    }
                })
                .collect(),
            norm: norm("model.norm.weight".into()),
            lm_head: matrix("lm_head.weight".into(), v, d),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_count_the_flops_module_parameters() {
        let config = ModelConfig::from_toml_file(
            &std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())).join("../../pipelines/configs/ds-1b-gqa.toml"),
        )
        .unwrap();
        let specs = Weights::specs(&config);
        let total: usize = specs.tensors().iter().map(|s| s.numel()).sum();
        assert_eq!(total as u64, crate::flops::parameter_count(&config));
        assert_eq!(specs.tensors().len(), 3 + 6 * config.num_hidden_layers);
        assert_eq!(specs.layers[3].qkv_proj.shape, vec![2048 + 2 * 512, 2048]);
        let saved: Vec<_> = specs.tensors().iter().flat_map(|s| s.saved_tensors()).collect();
        assert_eq!(saved.len(), 3 + 9 * config.num_hidden_layers);
        let k = saved.iter().find(|(name, ..)| name == "model.layers.3.self_attn.k_proj.weight").unwrap();
        assert_eq!((k.1.clone(), k.2.clone()), (vec![512, 2048], 2048 * 2048..2560 * 2048));
    }

    #[test]
    fn stacked_tensors_split_and_join_back() {
        let spec = TensorSpec { name: "w".into(), shape: vec![5, 2], is_norm: false, parts: vec![("a".into(), 3), ("b".into(), 2)] };
        let data: Vec<f32> = (0..10).map(|x| x as f32).collect();
        let parts = spec.split(&data, ".m");
        assert_eq!(parts[1], ("b.m".to_string(), HostTensor { shape: vec![2, 2], data: vec![6.0, 7.0, 8.0, 9.0] }));
        let map: HashMap<_, _> = parts.into_iter().collect();
        assert_eq!(spec.join(&map, ".m").unwrap(), data);
        let mut bad = map.clone();
        bad.get_mut("a.m").unwrap().shape = vec![2, 3];
        assert!(spec.join(&bad, ".m").unwrap_err().to_string().contains("a.m has shape [2, 3]"));
        assert!(spec.join(&map, "").unwrap_err().to_string().contains("no tensor a"));
    }
}
