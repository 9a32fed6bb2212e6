//! The model's tensors, named as Hugging Face LLaMA names them. One generic struct holds
//! weights, gradients and optimizer moments alike (`Weights<Buffer>`), or their shapes
//! (`Weights<TensorSpec>`), so all of them walk the tensors in the same order.

use crate::config::ModelConfig;

/// One transformer block's tensors.
#[derive(Debug, Clone)]
pub struct LayerWeights<T> {
    pub input_layernorm: T,
    pub q_proj: T,
    pub k_proj: T,
    pub v_proj: T,
    pub o_proj: T,
    pub post_attention_layernorm: T,
    pub gate_proj: T,
    pub up_proj: T,
    pub down_proj: T,
}

impl<T> LayerWeights<T> {
    /// The block's tensors in checkpoint order.
    pub fn tensors(&self) -> [&T; 9] {
        [&self.input_layernorm, &self.q_proj, &self.k_proj, &self.v_proj, &self.o_proj, &self.post_attention_layernorm, &self.gate_proj, &self.up_proj, &self.down_proj]
    }

    /// The block's tensors mutably, in the order of [`LayerWeights::tensors`].
    pub fn tensors_mut(&mut self) -> [&mut T; 9] {
        [
            &mut self.input_layernorm,
            &mut self.q_proj,
            &mut self.k_proj,
            &mut self.v_proj,
            &mut self.o_proj,
            &mut self.post_attention_layernorm,
            &mut self.gate_proj,
            &mut self.up_proj,
            &mut self.down_proj,
        ]
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

/// Name (Hugging Face's), shape and kind of one tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    /// RMSNorm gains: initialised to 1 and not weight-decayed.
    pub is_norm: bool,
}

impl TensorSpec {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
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
                    q_proj: f(&l.q_proj),
                    k_proj: f(&l.k_proj),
                    v_proj: f(&l.v_proj),
                    o_proj: f(&l.o_proj),
                    post_attention_layernorm: f(&l.post_attention_layernorm),
                    gate_proj: f(&l.gate_proj),
                    up_proj: f(&l.up_proj),
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
        let matrix = |name: String, rows: usize, cols: usize| TensorSpec { name, shape: vec![rows, cols], is_norm: false };
        let norm = |name: String| TensorSpec { name, shape: vec![d], is_norm: true };
        Weights {
            embed_tokens: matrix("model.embed_tokens.weight".into(), v, d),
            layers: (0..config.num_hidden_layers)
                .map(|i| {
                    let p = format!("model.layers.{i}");
                    LayerWeights {
                        input_layernorm: norm(format!("{p}.input_layernorm.weight")),
                        q_proj: matrix(format!("{p}.self_attn.q_proj.weight"), q_dim, d),
                        k_proj: matrix(format!("{p}.self_attn.k_proj.weight"), kv_dim, d),
                        v_proj: matrix(format!("{p}.self_attn.v_proj.weight"), kv_dim, d),
                        o_proj: matrix(format!("{p}.self_attn.o_proj.weight"), d, q_dim),
                        post_attention_layernorm: norm(format!("{p}.post_attention_layernorm.weight")),
                        gate_proj: matrix(format!("{p}.mlp.gate_proj.weight"), ff, d),
                        up_proj: matrix(format!("{p}.mlp.up_proj.weight"), ff, d),
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
        assert_eq!(specs.tensors().len(), 3 + 9 * config.num_hidden_layers);
        assert_eq!(specs.layers[3].k_proj.shape, vec![512, 2048]);
    }
}
