//! The model and training engine of dsllm: the DeepSeek LLM architecture (LLaMA's: pre-norm
//! RMSNorm, SwiGLU, rotate-half RoPE, grouped-query attention, untied embeddings), written once
//! against a [`Backend`] of primitive operations so a GPU backend can mirror the CPU one op for
//! op; AdamW, the paper's LR schedules, a trainer with exact resume, and Hugging Face
//! compatible checkpoints.
//!
//! - [`config`]: model shapes (`pipelines/configs/*.toml`, Hugging Face `config.json`).
//! - [`flops`]: parameter counts, FLOPs per token, the paper's `M`, `6N1`, `6N2`, scaling laws.
//! - [`backend`] and [`cpu`]: the primitive ops and their f32 CPU implementation.
//! - [`weights`] and [`model`]: tensor names and shapes; forward and backward.
//! - [`optimizer`], [`schedule`], [`train`]: AdamW, LR schedules, the trainer and its data trait.
//! - [`generate`]: KV-cache inference: scoring continuations and greedy decoding.
//! - [`checkpoint`]: save, load and import checkpoint directories.
//! - [`data`]: ds-pack token shards as the trainer's data source, and text bytes for bits per byte.
//! - [`bench`](mod@bench): CPU training throughput (and `examples/bench_cpu_train.rs`).
//!
//! `examples/train_synthetic.rs` shows the whole loop as `ds-pretrain` wires it: training,
//! validation, metrics JSONL, background checkpoints and `--resume`.

pub mod backend;
pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod cpu;
pub mod data;
pub mod dist;
pub mod flops;
pub mod generate;
pub mod model;
pub mod optimizer;
pub mod schedule;
pub mod train;
pub mod weights;

pub use backend::{AdamWStep, AdamWUpdate, AttentionShape, Backend, OutputGrad, IGNORE_TARGET, Store};
pub use checkpoint::{checkpoint_name, describe_checkpoint, latest_checkpoint, load_hf_model, save_checkpoint, CheckpointData, CheckpointWriter};
pub use config::ModelConfig;
pub use generate::{greedy_generate, greedy_generate_until, GenerationConfig, SequenceCache};
pub use data::{evaluated_text_bytes, token_text_bytes, ShardCursor, ShardSource};
pub use cpu::CpuBackend;
pub use model::{HostTensor, Llama, LossSum, TokenBatch};
pub use optimizer::{AdamW, AdamWConfig};
pub use schedule::{BatchPlan, LrSchedule};
pub use train::{bits_per_byte, EvalMetrics, MetricsWriter, SequenceSource, StepMetrics, Trainer, TrainerConfig, TrainerState, VecSource};
pub use weights::{LayerWeights, TensorSpec, Weights};

#[cfg(test)]
mod testutil;
