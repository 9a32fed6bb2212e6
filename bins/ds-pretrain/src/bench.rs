//! `ds-pretrain bench`: full optimizer steps (forward, backward, clipping, AdamW) on random
//! tokens through the real trainer. MFU counts `flops::training_flops_per_token`, the count
//! `../shared/bench/torch_llama.py` uses (6 per matmul weight plus attention's full square),
//! against the GPU's dense bf16 peak; on CPU only when `--peak-tflops` gives a peak.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use dsllm_model::bench::cpu_training_throughput;
use dsllm_model::{flops, ModelConfig};
use serde_json::json;

use crate::{choose_backend, ChosenBackend, TOOL};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Model config (pipelines/configs/*.toml).
    #[arg(long)]
    pub config: PathBuf,
    #[arg(long, value_enum, default_value_t = crate::BackendKind::Auto)]
    pub backend: crate::BackendKind,
    /// Timed optimizer steps (after warm-up steps: 1 on CPU, 3 on CUDA).
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Sequences per step (default: 8 on CPU and for ds-160m, else 4 (torch_llama.py's)).
    #[arg(long)]
    pub micro_batch: Option<usize>,
    /// Tokens per sequence (default: 2048 on CUDA as torch_llama.py, the config's context on CPU).
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// Vocabulary for configs whose vocab_size is 0 (set from a tokenizer in training).
    #[arg(long, default_value_t = 16384)]
    pub vocab: usize,
    /// Peak FLOP/s of the device in TFLOP/s, for MFU (default: 989, the H100/H200 dense bf16
    /// peak, on CUDA; none on CPU).
    #[arg(long)]
    pub peak_tflops: Option<f64>,
    /// Worker threads of the CPU backend (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Peak resident memory of this process (VmHWM), in GiB; Linux only.
fn peak_rss_gib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / (1u64 << 20) as f64)
}

pub fn run(args: &BenchArgs) -> Result<serde_json::Value> {
    let mut config = ModelConfig::from_toml_file(&args.config)?;
    if config.vocab_size == 0 {
        config.vocab_size = args.vocab;
    }
    let name = args.config.file_stem().and_then(|s| s.to_str()).unwrap_or("model").to_string();
    if args.steps == 0 {
        crate::usage!("--steps must be at least 1");
    }
    let chosen = choose_backend(args.backend, None)?;
    let backend_name = chosen.name();
    let mut result = match chosen {
        ChosenBackend::Cpu { .. } => {
            let seq_len = args.seq_len.unwrap_or(config.max_position_embeddings);
            let micro_batch = args.micro_batch.unwrap_or(8);
            let t = cpu_training_throughput(&config, seq_len, micro_batch, args.steps)?;
            let peak = args.peak_tflops.map(|p| p * 1e12);
            json!({
                "config": name,
                "micro_batch": micro_batch,
                "seq_len": seq_len,
                "tokens_per_s": t.tokens_per_second,
                "step_ms": t.seconds_per_step * 1e3,
                "mfu": peak.map(|p| t.flops_per_second / p),
                "tflops": t.flops_per_second / 1e12,
                "peak_mem_gib": peak_rss_gib(),
                "peak_mem_kind": "process peak resident memory (VmHWM)",
                "threads": rayon::current_num_threads(),
            })
        }
        ChosenBackend::Cuda { backend, .. } => {
            // bench_training opens its own context on GPU 0; this one has done its job (the check).
            drop(backend);
            let seq_len = args.seq_len.unwrap_or(2048.min(config.max_position_embeddings));
            let micro_batch = args.micro_batch.unwrap_or(if name == "ds-160m" { 8 } else { 4 });
            let r = dsllm_cuda::bench::bench_training(&name, &config, seq_len, micro_batch, 3, args.steps)?;
            let mut value = serde_json::to_value(&r)?;
            if let Some(peak) = args.peak_tflops {
                value["mfu"] = (r.tflops / peak).into();
            }
            value["peak_mem_kind"] = "device memory in use at the peak, less that before the model".into();
            value
        }
    };
    result["tool"] = TOOL.into();
    result["backend"] = backend_name.into();
    result["parameters"] = flops::parameter_count(&config).into();
    result["vocab_size"] = config.vocab_size.into();
    result["flops_per_token"] = flops::training_flops_per_token(&config, result["seq_len"].as_u64().unwrap_or(0) as usize).into();
    Ok(result)
}
