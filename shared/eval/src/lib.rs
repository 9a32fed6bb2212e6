//! Evaluation of LLaMA-format checkpoints the way the DeepSeek LLM paper reports them, in
//! lm-evaluation-harness's conventions so numbers compare with other models':
//!
//! - [`task`]: tasks as data, one TOML file each (data file, templates, few-shot, metric).
//! - [`data`]: readers for the benchmark files (JSON lines, CSV, text; gzipped or not).
//! - [`lm`]: the model answering requests: continuation log-likelihoods (the shared context
//!   computed once per item through a KV cache), greedy generation, rolling log-likelihood.
//! - [`metrics`]: acc, acc_norm, acc_uncond, answer extraction, chance intervals.
//! - [`sandbox`]: running generated programs with time, memory and network limits.
//! - [`fixture`]: a tiny tokenizer and checkpoint for tests and benchmarks.
//! - [`run`]: one task from records to metrics and per-item results; [`report`]: JSON and the
//!   markdown table.

pub mod data;
pub mod fixture;
pub mod lm;
pub mod metrics;
pub mod report;
pub mod run;
pub mod sandbox;
pub mod task;

pub use lm::{EvalTokenizer, Evaluator, Loglikelihood, LoglikelihoodRequest, ScoringMode, TextLoss};
pub use report::EvalReport;
pub use run::{run_task, within_chance, RunContext, TaskResult};
pub use task::{load_task_dir, TaskKind, TaskSpec};
