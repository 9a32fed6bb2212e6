//! Training throughput of the CUDA backend on the GPU benchmark shapes, with the ratio to
//! PyTorch when given its results.
//!
//! `bench [configs] [--torch torch_llama.json]`, e.g. `bench ds-160m,ds-1b,ds-1b-gqa --torch
//! $OUT/torch_llama.json`; run from the repository root (configs come from pipelines/configs).
//! Micro-batches and sequence length are torch_llama.py's.

use std::path::Path;

use dsllm_cuda::bench::bench_training;
use dsllm_cuda::gpu_unavailable_reason;
use dsllm_model::ModelConfig;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let names = args.first().filter(|a| !a.starts_with("--")).cloned().unwrap_or_else(|| "ds-160m,ds-1b,ds-1b-gqa".into());
    let torch: Vec<serde_json::Value> = match args.iter().position(|a| a == "--torch") {
        Some(i) => serde_json::from_str(&std::fs::read_to_string(&args[i + 1])?)?,
        None => Vec::new(),
    };
    let steps: usize = std::env::var("BENCH_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    if let Some(reason) = gpu_unavailable_reason() {
        println!("no benchmark: {reason}");
        return Ok(());
    }
    for name in names.split(',') {
        let config = ModelConfig::from_toml_file(&Path::new("pipelines/configs").join(format!("{name}.toml")))?;
        let micro_batch = if name == "ds-160m" { 8 } else { 4 };
        let result = bench_training(name, &config, 2048, micro_batch, 3, steps)?;
        let mut json = serde_json::to_value(&result)?;
        let baseline = torch.iter().find(|r| r["config"] == name && r["mode"] == "compile").and_then(|r| r["tokens_per_s"].as_f64());
        if let Some(baseline) = baseline {
            json["torch_compile_tokens_per_s"] = baseline.into();
            json["ratio_vs_torch_compile"] = (result.tokens_per_s / baseline).into();
        }
        println!("{json}");
    }
    Ok(())
}
