//! `ds-pretrain --budget C`: the model shape, tokens, batch and peak learning rate for a
//! compute budget, from scaling laws (the paper's, or ones `ds-scaling fit` wrote).

use dsllm_model::flops::{model_scale_m, ScalingLaws};
use dsllm_model::{BatchPlan, ModelConfig};
use serde::Serialize;

use crate::shape::{shape_name, ShapeRule};

/// What a budget buys.
#[derive(Debug, Clone, Serialize)]
pub struct BudgetPlan {
    pub budget: f64,
    pub shape: String,
    #[serde(skip)]
    pub config: ModelConfig,
    /// `M_opt(C)` from the laws, and the `M` of the shape chosen for it.
    pub m_opt: f64,
    pub m: f64,
    /// `D = C/M` of the chosen shape (`D_opt(C)` from the laws is beside it).
    pub tokens: f64,
    pub d_opt: f64,
    pub batch: BatchPlan,
}

/// The shape nearest `M_opt(C)` in `template`'s proportions (or `template` itself when
/// `keep_shape`), `D = C/M`, and Eq. 1's batch and learning rate.
pub fn plan_budget(laws: &ScalingLaws, budget: f64, template: &ModelConfig, keep_shape: bool, seq_len: usize, micro_batch: usize) -> BudgetPlan {
    let m_opt = laws.model_scale.at(budget);
    let config = if keep_shape { template.clone() } else { ShapeRule::from_template(template).for_model_scale(m_opt, seq_len) };
    let m = model_scale_m(&config, seq_len);
    BudgetPlan {
        budget,
        shape: shape_name(&config),
        m_opt,
        m,
        tokens: budget / m,
        d_opt: laws.data_tokens.at(budget),
        batch: BatchPlan::from_laws(laws, budget, seq_len, micro_batch),
        config,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_papers_7b_budget_gives_a_7b_like_model() {
        // The 7B trained 2T tokens: C = M·D = 42.3e9·2e12 ≈ 8.5e22.
        let path = std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())).join("../../pipelines/configs/7b.toml");
        let seven = ModelConfig::from_toml_file(&path).unwrap();
        let plan = plan_budget(&ScalingLaws::PAPER, 8.5e22, &seven, false, 4096, 4);
        // M_opt(8.5e22) = 0.1715·(8.5e22)^0.5243 ≈ 6.3e10, so somewhat larger than the 7B's M.
        assert!((plan.m / plan.m_opt - 1.0).abs() < 0.05, "{plan:?}");
        assert!((plan.tokens * plan.m / 8.5e22 - 1.0).abs() < 1e-9);
        assert!(plan.config.num_hidden_layers >= 30 && plan.config.hidden_size >= 4096, "{}", plan.shape);
        assert!((plan.batch.peak_lr - 0.3118 * 8.5e22f64.powf(-0.125)).abs() < 1e-12);
        let kept = plan_budget(&ScalingLaws::PAPER, 8.5e22, &seven, true, 4096, 4);
        assert_eq!(kept.shape, "L30-d4096");
    }
}
