//! CPU training throughput (full optimizer steps on random tokens), one JSON line per run:
//! `cargo run --release -p dsllm-model --example bench_cpu_train -- CONFIG.toml [SEQ_LEN]
//! [MICRO_BATCH] [STEPS] [VOCAB_IF_UNSET]`. Threads: rayon's default (RAYON_NUM_THREADS).

use std::path::PathBuf;

use dsllm_model::bench::cpu_training_throughput;
use dsllm_model::{flops, ModelConfig};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        anyhow::bail!("usage: bench_cpu_train CONFIG.toml [SEQ_LEN] [MICRO_BATCH] [STEPS] [VOCAB_IF_UNSET]");
    };
    let number = |i: usize, default: usize| args.get(i).map_or(Ok(default), |s| s.parse::<usize>());
    let mut config = ModelConfig::from_toml_file(&PathBuf::from(path))?;
    let seq_len = number(1, config.max_position_embeddings)?;
    let micro_batch = number(2, 1)?;
    let steps = number(3, 2)?;
    if config.vocab_size == 0 {
        config.vocab_size = number(4, 16384)?;
    }
    let result = cpu_training_throughput(&config, seq_len, micro_batch, steps)?;
    let summary = serde_json::json!({
        "config": path,
        "parameters": flops::parameter_count(&config),
        "vocab_size": config.vocab_size,
        "seq_len": seq_len,
        "micro_batch": micro_batch,
        "threads": rayon::current_num_threads(),
        "tokens_per_second": result.tokens_per_second,
        "gflops_per_second": result.flops_per_second / 1e9,
        "seconds_per_step": result.seconds_per_step,
    });
    println!("{summary}");
    Ok(())
}
