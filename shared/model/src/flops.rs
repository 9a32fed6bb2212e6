//! FLOPs and parameter accounting, and the paper's scaling laws. The paper's symbols are
//! defined here once:
//!
//! - `M`: non-embedding FLOPs per token, `72·n_layer·d_model² + 12·n_layer·d_model·l_seq`
//!   (the paper's model scale; it counts attention's score and value products but not the
//!   vocabulary projection).
//! - `N1`: non-embedding parameters; `6·N1` is the usual FLOPs-per-token approximation.
//! - `N2`: `N1` plus the output projection (`n_vocab·d_model`); the input embedding is a lookup
//!   and costs no FLOPs, so it is not in `N2`.
//! - `D`: training tokens; `C = M·D`: compute budget.
//! - `η_opt`, `B_opt`, `M_opt`, `D_opt`: the paper's fitted optimal learning rate, batch size
//!   (tokens), model scale and data size for a budget `C`.

use serde::{Deserialize, Serialize};

use crate::config::ModelConfig;

/// The paper's `M`: non-embedding FLOPs per token for training (forward and backward) at
/// sequence length `l_seq`.
pub fn model_scale_m(config: &ModelConfig, l_seq: usize) -> f64 {
    let n_layer = config.num_hidden_layers as f64;
    let d_model = config.hidden_size as f64;
    72.0 * n_layer * d_model * d_model + 12.0 * n_layer * d_model * l_seq as f64
}

/// Parameters of one transformer block: the seven projections and two RMSNorm weights.
pub fn block_parameter_count(config: &ModelConfig) -> u64 {
    let d = config.hidden_size as u64;
    let q_and_o = 2 * d * (config.num_attention_heads * config.head_dim()) as u64;
    let k_and_v = 2 * d * config.kv_dim() as u64;
    let mlp = 3 * d * config.intermediate_size as u64;
    q_and_o + k_and_v + mlp + 2 * d
}

/// The paper's `N1`: every parameter except the input embedding and the output projection.
pub fn non_embedding_parameter_count(config: &ModelConfig) -> u64 {
    config.num_hidden_layers as u64 * block_parameter_count(config) + config.hidden_size as u64
}

/// The paper's `N2`: `N1` plus the output projection.
pub fn n2_parameter_count(config: &ModelConfig) -> u64 {
    non_embedding_parameter_count(config) + (config.vocab_size * config.hidden_size) as u64
}

/// Every stored parameter (untied: input embedding and output projection both counted).
pub fn parameter_count(config: &ModelConfig) -> u64 {
    n2_parameter_count(config) + (config.vocab_size * config.hidden_size) as u64
}

/// `6·N1` FLOPs per token.
pub fn six_n1(config: &ModelConfig) -> f64 {
    6.0 * non_embedding_parameter_count(config) as f64
}

/// `6·N2` FLOPs per token.
pub fn six_n2(config: &ModelConfig) -> f64 {
    6.0 * n2_parameter_count(config) as f64
}

/// Exact training FLOPs per token of the matrix products this model runs (forward plus the
/// two backward products, so 6 per weight), with GQA's narrower K/V projections and the
/// SwiGLU's three matrices, plus attention's `QKᵀ` and `AV` counted over the full `l_seq × l_seq`
/// square (the convention of PaLM's MFU and of `../shared/bench/torch_llama.py`, although the
/// causal mask lets kernels skip half of it). Elementwise work (norms, softmax) is left out.
pub fn training_flops_per_token(config: &ModelConfig, l_seq: usize) -> f64 {
    let d = config.hidden_size as f64;
    let per_layer_weights = (block_parameter_count(config) - 2 * config.hidden_size as u64) as f64;
    let matmul_weights = config.num_hidden_layers as f64 * per_layer_weights + config.vocab_size as f64 * d;
    let attention = config.num_hidden_layers as f64 * 2.0 * l_seq as f64 * d;
    6.0 * matmul_weights + 6.0 * attention
}

/// `C = M·D`.
pub fn compute_budget(m: f64, tokens_d: f64) -> f64 {
    m * tokens_d
}

/// `y = coefficient · C^exponent`: the form of every scaling law of the paper.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PowerLaw {
    pub coefficient: f64,
    pub exponent: f64,
}

impl PowerLaw {
    pub const fn new(coefficient: f64, exponent: f64) -> Self {
        Self { coefficient, exponent }
    }

    /// The law's value at `x` (a compute budget `C` for the paper's laws).
    pub fn at(&self, x: f64) -> f64 {
        self.coefficient * x.powf(self.exponent)
    }
}

/// The four compute-budget laws: Eq. 1 (`η_opt`, `B_opt`) and Eq. 4 (`M_opt`, `D_opt`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScalingLaws {
    /// Peak learning rate `η_opt(C)`.
    pub lr: PowerLaw,
    /// Batch size in tokens `B_opt(C)`.
    pub batch_tokens: PowerLaw,
    /// Model scale (non-embedding FLOPs per token) `M_opt(C)`.
    pub model_scale: PowerLaw,
    /// Training tokens `D_opt(C)`.
    pub data_tokens: PowerLaw,
}

impl ScalingLaws {
    /// The paper's: `η_opt = 0.3118·C^−0.1250`, `B_opt = 0.2920·C^0.3271`,
    /// `M_opt = 0.1715·C^0.5243`, `D_opt = 5.8316·C^0.4757`.
    pub const PAPER: ScalingLaws = ScalingLaws {
        lr: PowerLaw::new(0.3118, -0.1250),
        batch_tokens: PowerLaw::new(0.2920, 0.3271),
        model_scale: PowerLaw::new(0.1715, 0.5243),
        data_tokens: PowerLaw::new(5.8316, 0.4757),
    };
}

impl Default for ScalingLaws {
    fn default() -> Self {
        Self::PAPER
    }
}

/// `η_opt = 0.3118·C^−0.1250`: the paper's near-optimal peak learning rate for budget `C`.
pub fn optimal_peak_lr(compute_c: f64) -> f64 {
    ScalingLaws::PAPER.lr.at(compute_c)
}

/// `B_opt = 0.2920·C^0.3271`: the paper's near-optimal batch size in tokens for budget `C`.
pub fn optimal_batch_tokens(compute_c: f64) -> f64 {
    ScalingLaws::PAPER.batch_tokens.at(compute_c)
}

/// `M_opt = 0.1715·C^0.5243`: the compute-optimal model scale (FLOPs per token).
pub fn optimal_model_scale(compute_c: f64) -> f64 {
    ScalingLaws::PAPER.model_scale.at(compute_c)
}

/// `D_opt = 5.8316·C^0.4757`: the compute-optimal number of training tokens.
pub fn optimal_data_tokens(compute_c: f64) -> f64 {
    ScalingLaws::PAPER.data_tokens.at(compute_c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(d: usize, layers: usize, heads: usize, kv: usize, ffn: usize, vocab: usize) -> ModelConfig {
        ModelConfig {
            hidden_size: d,
            intermediate_size: ffn,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: kv,
            vocab_size: vocab,
            max_position_embeddings: 4096,
            rms_norm_eps: 1e-6,
            rope_theta: 10000.0,
            initializer_range: 0.02,
            bos_token_id: None,
            eos_token_id: None,
        }
    }

    #[test]
    fn paper_7b_and_67b_parameter_counts() {
        // The paper reports 6.9B and 67.4B parameters (embeddings included, untied).
        let seven = config(4096, 30, 32, 32, 11008, 102400);
        assert!((parameter_count(&seven) as f64 / 1e9 - 6.91).abs() < 0.01, "{}", parameter_count(&seven));
        let big = config(8192, 95, 64, 8, 22016, 102400);
        assert!((parameter_count(&big) as f64 / 1e9 - 67.4).abs() < 0.1, "{}", parameter_count(&big));
    }

    #[test]
    fn m_matches_six_n1_when_ffn_is_eight_thirds_d() {
        // With MHA and ffn = 8/3·d a block has 12·d² weights, so 6·N1 ≈ 72·n_layer·d², the first
        // term of M.
        let c = config(768, 12, 12, 12, 2048, 102400);
        let ratio = six_n1(&c) / (model_scale_m(&c, 0));
        assert!((ratio - 1.0).abs() < 1e-3, "{ratio}");
        assert_eq!(model_scale_m(&c, 2048) - model_scale_m(&c, 0), 12.0 * 12.0 * 768.0 * 2048.0);
    }

    #[test]
    fn training_flops_match_the_torch_benchmark_formula() {
        // ds-1b-gqa in ../shared/bench/torch_llama.py: 6·matmul params + 6·L·2·T·d.
        let (d, l, h, hkv, ff, v, t) = (2048usize, 16usize, 16usize, 4usize, 5504usize, 102400usize, 2048usize);
        let hd = d / h;
        let matmul_params = l * (2 * d * d + 2 * d * hkv * hd + 3 * d * ff) + d * v;
        let expected = 6.0 * matmul_params as f64 + 6.0 * (l * 2 * t * d) as f64;
        assert_eq!(training_flops_per_token(&config(d, l, h, hkv, ff, v), t), expected);
    }

    #[test]
    fn scaling_laws_give_the_papers_hyperparameters_at_1e20() {
        // At C = 1e20: η_opt = 0.3118·10^−2.5 ≈ 9.86e-4 and B_opt ≈ 1.02M tokens.
        let lr = optimal_peak_lr(1e20);
        let batch = optimal_batch_tokens(1e20);
        assert!((lr - 9.860e-4).abs() < 1e-6, "{lr}");
        assert!((1.0e6..1.4e6).contains(&batch), "{batch}");
        let c = 3e20;
        let m = optimal_model_scale(c);
        let d = optimal_data_tokens(c);
        assert!((m * d / c - 1.0).abs() < 0.01, "M_opt·D_opt should be close to C");
    }
}
