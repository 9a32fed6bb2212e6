//! Model shapes for a target model scale `M`: the `n_layer`/`d_model` pair whose `M` is
//! closest to the target, preferring the template's aspect ratio `d_model/n_layer`; heads,
//! K/V groups and FFN width follow the template's proportions.

use dsllm_model::flops::model_scale_m;
use dsllm_model::ModelConfig;
use serde::Serialize;

/// How shapes are derived from a template config.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShapeRule {
    /// The config the shapes are derived from (vocabulary, norms, RoPE, context are kept).
    #[serde(skip)]
    pub template: ModelConfig,
    /// `d_model` is a multiple of this (the template's head size).
    pub head_dim: usize,
    /// Query heads per K/V head (the template's grouping).
    pub kv_group: usize,
    /// `d_ffn / d_model` (the template's), rounded to multiples of `ffn_multiple`.
    pub ffn_ratio: f64,
    pub ffn_multiple: usize,
    /// Preferred `d_model / n_layer` (the template's).
    pub aspect: f64,
    /// Shapes whose `M` is within this relative distance of the target count as hitting it;
    /// among them the one closest to `aspect` wins.
    pub tolerance: f64,
}

impl ShapeRule {
    pub fn from_template(template: &ModelConfig) -> Self {
        let head_dim = template.head_dim();
        Self {
            template: template.clone(),
            head_dim,
            kv_group: template.num_attention_heads / template.num_key_value_heads,
            ffn_ratio: template.intermediate_size as f64 / template.hidden_size as f64,
            ffn_multiple: 16,
            aspect: template.hidden_size as f64 / template.num_hidden_layers as f64,
            tolerance: 0.15,
        }
    }

    /// The config of `n_layer` layers of width `d_model` in the template's proportions.
    pub fn config(&self, n_layer: usize, d_model: usize) -> ModelConfig {
        let heads = (d_model / self.head_dim).max(1);
        let kv_heads = if heads.is_multiple_of(self.kv_group) { heads / self.kv_group } else { heads };
        let ffn = ((d_model as f64 * self.ffn_ratio / self.ffn_multiple as f64).round() as usize).max(1) * self.ffn_multiple;
        ModelConfig {
            hidden_size: d_model,
            intermediate_size: ffn,
            num_hidden_layers: n_layer,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            ..self.template.clone()
        }
    }

    /// The shape whose `M` at `l_seq` is closest to `target_m` (see [`ShapeRule::tolerance`]).
    pub fn for_model_scale(&self, target_m: f64, l_seq: usize) -> ModelConfig {
        let mut candidates = Vec::new();
        for n_layer in 1..=256usize {
            // Widths around the root of 72·L·d² + 12·L·l·d = M.
            let (a, b) = (72.0 * n_layer as f64, 12.0 * n_layer as f64 * l_seq as f64);
            let d = (-b + (b * b + 4.0 * a * target_m).sqrt()) / (2.0 * a);
            let step = self.head_dim as f64;
            let below = ((d / step).floor() * step).max(step) as usize;
            for d_model in [below, below + self.head_dim] {
                let config = self.config(n_layer, d_model);
                let miss = (model_scale_m(&config, l_seq) / target_m).ln().abs();
                let aspect_miss = (d_model as f64 / n_layer as f64 / self.aspect).ln().abs();
                candidates.push((miss, aspect_miss, n_layer, d_model));
            }
        }
        let tolerance = (1.0 + self.tolerance).ln();
        let hit = candidates.iter().filter(|c| c.0 <= tolerance).min_by(|x, y| x.1.total_cmp(&y.1).then(x.0.total_cmp(&y.0)));
        let best = hit.or_else(|| candidates.iter().min_by(|x, y| x.0.total_cmp(&y.0).then(x.1.total_cmp(&y.1)))).expect("candidates");
        self.config(best.2, best.3)
    }
}

/// A short name for a shape: `L4-d128`.
pub fn shape_name(config: &ModelConfig) -> String {
    format!("L{}-d{}", config.num_hidden_layers, config.hidden_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> ModelConfig {
        let path = std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())).join("../../pipelines/configs/tiny.toml");
        ModelConfig::from_toml_file(&path).unwrap()
    }

    #[test]
    fn template_shape_is_found_again() {
        let rule = ShapeRule::from_template(&tiny());
        let m = model_scale_m(&tiny(), 256);
        let c = rule.for_model_scale(m, 256);
        assert_eq!((c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.intermediate_size), (4, 128, 4, 2, 352));
        c.validate().unwrap();
    }

    #[test]
    fn shapes_hit_their_targets() {
        let rule = ShapeRule::from_template(&tiny());
        for target in [3e5, 1e6, 2e6, 5e6, 2e7, 1e8] {
            let c = rule.for_model_scale(target, 256);
            c.validate().unwrap();
            let m = model_scale_m(&c, 256);
            assert!((m / target - 1.0).abs() < 0.2, "{target}: {} gives {m}", shape_name(&c));
        }
        // Larger targets give deeper and wider models.
        let small = rule.for_model_scale(1e6, 256);
        let large = rule.for_model_scale(1e8, 256);
        assert!(large.num_hidden_layers > small.num_hidden_layers && large.hidden_size > small.hidden_size);
    }

    #[test]
    fn paper_7b_scale_from_the_7b_template() {
        let path = std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())).join("../../pipelines/configs/7b.toml");
        let seven = ModelConfig::from_toml_file(&path).unwrap();
        let c = ShapeRule::from_template(&seven).for_model_scale(model_scale_m(&seven, 4096), 4096);
        assert_eq!((c.num_hidden_layers, c.hidden_size, c.num_attention_heads), (30, 4096, 32));
        assert!((c.intermediate_size as f64 / 11008.0 - 1.0).abs() < 0.01);
    }
}
