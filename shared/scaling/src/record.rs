//! One finished training run as the fits see it: its shape, `M`, tokens, budget,
//! hyperparameters and validation results (a row of `runs.parquet`).

use serde::{Deserialize, Serialize};

/// The columns of `runs.parquet`, in order (the fields of [`RunRecord`]).
pub const COLUMNS: [&str; 25] = [
    "run", "path", "n_layer", "d_model", "n_heads", "n_kv_heads", "d_ffn", "n_vocab", "seq_len", "parameters", "n1", "n2", "m", "tokens",
    "compute", "budget", "batch_tokens", "peak_lr", "steps", "final_train_loss", "final_val_loss", "min_val_loss", "final_val_bpb",
    "min_val_bpb", "backend",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run folder's name.
    pub run: String,
    pub path: String,
    pub n_layer: i64,
    pub d_model: i64,
    pub n_heads: i64,
    pub n_kv_heads: i64,
    pub d_ffn: i64,
    pub n_vocab: i64,
    pub seq_len: i64,
    pub parameters: i64,
    pub n1: i64,
    pub n2: i64,
    /// Non-embedding FLOPs per token.
    pub m: f64,
    /// Tokens actually trained.
    pub tokens: f64,
    /// `M·D` actually trained.
    pub compute: f64,
    /// The nominal budget the run was planned for (`--budget`), else `compute`.
    pub budget: f64,
    pub batch_tokens: f64,
    pub peak_lr: f64,
    pub steps: i64,
    pub final_train_loss: f64,
    pub final_val_loss: f64,
    pub min_val_loss: f64,
    /// None when the run had no tokenizer to count bytes.
    pub final_val_bpb: Option<f64>,
    pub min_val_bpb: Option<f64>,
    pub backend: String,
}

impl RunRecord {
    /// A record of zeros (its field types give the table's column types).
    pub fn empty() -> Self {
        Self {
            run: String::new(),
            path: String::new(),
            n_layer: 0,
            d_model: 0,
            n_heads: 0,
            n_kv_heads: 0,
            d_ffn: 0,
            n_vocab: 0,
            seq_len: 0,
            parameters: 0,
            n1: 0,
            n2: 0,
            m: 0.0,
            tokens: 0.0,
            compute: 0.0,
            budget: 0.0,
            batch_tokens: 0.0,
            peak_lr: 0.0,
            steps: 0,
            final_train_loss: 0.0,
            final_val_loss: 0.0,
            min_val_loss: 0.0,
            final_val_bpb: Some(0.0),
            min_val_bpb: Some(0.0),
            backend: String::new(),
        }
    }
}

/// Which number of a run the fits minimise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Final validation bits per byte (the paper's measure in Figure 5).
    #[default]
    ValBitsPerByte,
    /// Final validation loss in nats.
    ValLoss,
}

impl Metric {
    pub fn of(self, run: &RunRecord) -> f64 {
        match self {
            Metric::ValBitsPerByte => run.final_val_bpb.unwrap_or(f64::NAN),
            Metric::ValLoss => run.final_val_loss,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Metric::ValBitsPerByte => "validation bits per byte",
            Metric::ValLoss => "validation loss (nats)",
        }
    }

    /// Bits per byte when every run has it, else loss.
    pub fn choose(runs: &[RunRecord]) -> Self {
        if !runs.is_empty() && runs.iter().all(|r| r.final_val_bpb.is_some_and(f64::is_finite)) {
            Metric::ValBitsPerByte
        } else {
            Metric::ValLoss
        }
    }
}
