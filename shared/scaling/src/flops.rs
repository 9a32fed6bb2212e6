//! `ds-scaling flops`: a model's scale in the paper's three measures (`M`, `6N1`, `6N2`, its
//! Table 3), its parameter counts and the exact matrix-product FLOPs of our SwiGLU/GQA
//! architecture. The counts themselves live in `dsllm_model::flops`.

use dsllm_model::flops;
use dsllm_model::ModelConfig;
use serde::Serialize;

/// Every measure of one model at one sequence length.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlopsReport {
    pub n_layer: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub d_ffn: usize,
    pub n_vocab: usize,
    pub l_seq: usize,
    /// All stored parameters (input embedding and output projection both counted).
    pub parameters: u64,
    /// Non-embedding parameters.
    pub n1: u64,
    /// `N1` plus the output projection.
    pub n2: u64,
    /// `72·n_layer·d_model² + 12·n_layer·d_model·l_seq`.
    pub m: f64,
    pub six_n1: f64,
    pub six_n2: f64,
    pub six_n1_over_m: f64,
    pub six_n2_over_m: f64,
    /// Training FLOPs per token of every matrix product this architecture runs (GQA's narrow
    /// K/V, SwiGLU's three matrices, the vocabulary projection, full-square attention).
    pub exact_matmul_flops: f64,
    pub exact_over_m: f64,
}

impl FlopsReport {
    pub fn new(config: &ModelConfig, l_seq: usize) -> Self {
        let m = flops::model_scale_m(config, l_seq);
        let (six_n1, six_n2) = (flops::six_n1(config), flops::six_n2(config));
        let exact = flops::training_flops_per_token(config, l_seq);
        Self {
            n_layer: config.num_hidden_layers,
            d_model: config.hidden_size,
            n_heads: config.num_attention_heads,
            n_kv_heads: config.num_key_value_heads,
            d_ffn: config.intermediate_size,
            n_vocab: config.vocab_size,
            l_seq,
            parameters: flops::parameter_count(config),
            n1: flops::non_embedding_parameter_count(config),
            n2: flops::n2_parameter_count(config),
            m,
            six_n1,
            six_n2,
            six_n1_over_m: six_n1 / m,
            six_n2_over_m: six_n2 / m,
            exact_matmul_flops: exact,
            exact_over_m: exact / m,
        }
    }

    /// A markdown table of the report.
    pub fn markdown(&self, name: &str) -> String {
        format!(
            "| model | n_layer | d_model | heads (kv) | d_ffn | n_vocab | l_seq | params | N1 | N2 | M | 6N1 | 6N2 | 6N1/M | 6N2/M | exact matmul FLOPs/token | exact/M |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n\
             | {name} | {} | {} | {} ({}) | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.3} | {:.3} | {} | {:.3} |\n",
            self.n_layer,
            self.d_model,
            self.n_heads,
            self.n_kv_heads,
            self.d_ffn,
            self.n_vocab,
            self.l_seq,
            si(self.parameters as f64),
            si(self.n1 as f64),
            si(self.n2 as f64),
            si(self.m),
            si(self.six_n1),
            si(self.six_n2),
            self.six_n1_over_m,
            self.six_n2_over_m,
            si(self.exact_matmul_flops),
            self.exact_over_m,
        )
    }
}

/// One row of the paper's Table 3: the idealised shapes it uses (`N1 = 12·n_layer·d_model²`,
/// i.e. multi-head attention and an FFN of 8/3·d_model; `N2 = N1 + n_vocab·d_model`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Table3Row {
    pub n_layer: usize,
    pub d_model: usize,
    pub n_vocab: usize,
    pub l_seq: usize,
    pub n1: f64,
    pub n2: f64,
    pub m: f64,
    pub six_n1_over_m: f64,
    pub six_n2_over_m: f64,
}

/// The shapes of the paper's Table 3 (vocabulary 102,400, sequences of 4096).
pub const TABLE3_SHAPES: [(usize, usize); 7] = [(8, 512), (12, 768), (24, 1024), (24, 2048), (32, 4096), (40, 5120), (80, 8192)];

impl Table3Row {
    pub fn new(n_layer: usize, d_model: usize, n_vocab: usize, l_seq: usize) -> Self {
        let (l, d) = (n_layer as f64, d_model as f64);
        let n1 = 12.0 * l * d * d;
        let n2 = n1 + n_vocab as f64 * d;
        let m = 72.0 * l * d * d + 12.0 * l * d * l_seq as f64;
        Self { n_layer, d_model, n_vocab, l_seq, n1, n2, m, six_n1_over_m: 6.0 * n1 / m, six_n2_over_m: 6.0 * n2 / m }
    }

    pub fn paper_table() -> Vec<Self> {
        TABLE3_SHAPES.iter().map(|&(l, d)| Self::new(l, d, 102_400, 4096)).collect()
    }

    pub fn markdown(rows: &[Self]) -> String {
        let mut out = String::from("| n_layer | d_model | n_vocab | l_seq | N1 | N2 | M | 6N1/M | 6N2/M |\n|---|---|---|---|---|---|---|---|---|\n");
        for r in rows {
            out += &format!(
                "| {} | {} | {} | {} | {} | {} | {} | {:.2} | {:.2} |\n",
                r.n_layer,
                r.d_model,
                r.n_vocab,
                r.l_seq,
                si(r.n1),
                si(r.n2),
                si(r.m),
                r.six_n1_over_m,
                r.six_n2_over_m
            );
        }
        out
    }
}

/// `1.23B`, `456M`, `7.8k`: three significant digits with a unit prefix.
pub fn si(value: f64) -> String {
    let units = [(1e15, "P"), (1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")];
    for (scale, unit) in units {
        if value.abs() >= scale {
            return format!("{}{unit}", three_digits(value / scale));
        }
    }
    three_digits(value)
}

fn three_digits(v: f64) -> String {
    match v.abs() {
        a if a >= 100.0 => format!("{v:.0}"),
        a if a >= 10.0 => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    

    fn config(name: &str) -> ModelConfig {
        let path = std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())).join("../../pipelines/configs").join(format!("{name}.toml"));
        ModelConfig::from_toml_file(&path).unwrap()
    }

    #[test]
    fn seven_b_by_hand() {
        // 30 layers, d 4096, 32 heads (MHA), FFN 11008, vocab 102400, l_seq 4096.
        let r = FlopsReport::new(&config("7b"), 4096);
        // M = 72·30·4096² + 12·30·4096·4096 = (2160 + 360)·16,777,216 = 42,278,584,320
        assert_eq!(r.m, 42_278_584_320.0);
        // block: q,k,v,o 4·4096² = 67,108,864; SwiGLU 3·4096·11008 = 135,266,304; norms 8192
        // N1 = 30·202,383,360 + 4096 = 6,071,504,896; N2 = N1 + 102400·4096 = 6,490,935,296
        assert_eq!(r.n1, 6_071_504_896);
        assert_eq!(r.n2, 6_490_935_296);
        assert_eq!(r.parameters, 6_490_935_296 + 419_430_400);
        assert_eq!(r.six_n1, 36_429_029_376.0);
        assert!((r.six_n1_over_m - 0.8617).abs() < 1e-4, "{}", r.six_n1_over_m);
        assert!((r.six_n2_over_m - 0.9212).abs() < 1e-4, "{}", r.six_n2_over_m);
        // exact: 6·(30·(67,108,864 + 135,266,304) + 419,430,400) + 6·30·2·4096·4096
        //      = 6·6,490,685,440 + 6,039,797,760 = 44,983,910,400
        assert_eq!(r.exact_matmul_flops, 44_983_910_400.0);
    }

    #[test]
    fn sixty_seven_b_by_hand() {
        // 95 layers, d 8192, 64 heads of 128, 8 KV heads, FFN 22016, vocab 102400, l_seq 4096.
        let r = FlopsReport::new(&config("67b"), 4096);
        // M = 95·8192·(72·8192 + 12·4096) = 778,240·638,976 = 497,271,029,760
        assert_eq!(r.m, 497_276_682_240.0);
        // block: q,o 2·8192² = 134,217,728; k,v 2·8192·1024 = 16,777,216;
        // SwiGLU 3·8192·22016 = 541,065,216; norms 16,384 → 692,076,544
        // N1 = 95·692,076,544 + 8192 = 65,747,279,872; N2 = N1 + 102400·8192 = 66,586,140,672
        assert_eq!(r.n1, 65_747_279_872);
        assert_eq!(r.n2, 66_586_140_672);
        assert!((r.six_n1_over_m - 0.7933).abs() < 1e-4, "{}", r.six_n1_over_m);
        assert!((r.six_n2_over_m - 0.8034).abs() < 1e-4, "{}", r.six_n2_over_m);
    }

    #[test]
    fn ds_1b_by_hand() {
        // 16 layers, d 2048, 16 heads (MHA), FFN 5504, vocab 102400, l_seq 2048.
        let r = FlopsReport::new(&config("ds-1b"), 2048);
        // M = 16·2048²·(72 + 12) = 5,637,144,576
        assert_eq!(r.m, 5_637_144_576.0);
        // block: 4·2048² = 16,777,216; 3·2048·5504 = 33,816,576; norms 4096 → 50,597,888
        // N1 = 16·50,597,888 + 2048 = 809,568,256; N2 = N1 + 209,715,200 = 1,019,283,456
        assert_eq!(r.n1, 809_568_256);
        assert_eq!(r.n2, 1_019_283_456);
        // exact: 6·(16·50,593,792 + 209,715,200) + 6·16·2·2048·2048 = 6,115,295,232 + 805,306,368
        assert_eq!(r.exact_matmul_flops, 6_920_601_600.0);
    }

    #[test]
    fn papers_table_3() {
        // The paper's Table 3 (N1, N2, M, 6N1/M, 6N2/M) for its seven shapes.
        let expected = [
            (25.2e6, 77.6e6, 352e6, 0.43, 1.32),
            (84.9e6, 164e6, 963e6, 0.53, 1.02),
            (302e6, 407e6, 3.02e9, 0.60, 0.81),
            (1.21e9, 1.42e9, 9.66e9, 0.75, 0.88),
            (6.44e9, 6.86e9, 45.1e9, 0.86, 0.91),
            (12.6e9, 13.1e9, 85.6e9, 0.88, 0.92),
            (64.4e9, 65.3e9, 419e9, 0.92, 0.94),
        ];
        for (row, (n1, n2, m, r1, r2)) in Table3Row::paper_table().iter().zip(expected) {
            let close = |a: f64, b: f64| (a / b - 1.0).abs() < 0.006;
            assert!(close(row.n1, n1) && close(row.n2, n2) && close(row.m, m), "{row:?}");
            assert!((row.six_n1_over_m - r1).abs() < 0.006 && (row.six_n2_over_m - r2).abs() < 0.006, "{row:?}");
        }
        // First row by hand: M = 72·8·512² + 12·8·512·4096 = 150,994,944 + 201,326,592
        assert_eq!(Table3Row::paper_table()[0].m, 352_321_536.0);
    }

    #[test]
    fn si_prefixes() {
        assert_eq!(si(42_278_584_320.0), "42.3B");
        assert_eq!(si(352_321_536.0), "352M");
        assert_eq!(si(7.0), "7.00");
    }
}
