//! The training loop end to end on synthetic tokens, as `ds-pretrain` wires it: trainer,
//! periodic validation, metrics JSONL, background checkpoints, and resume.
//!
//! `cargo run --release -p dsllm-model --example train_synthetic -- RUN_DIR [STEPS] [--resume]`
//!
//! The tokens come from a fixed random bigram model over 512 tokens, so the best possible loss
//! is the bigram entropy, printed at the start.

use std::path::PathBuf;

use anyhow::Result;
use dsllm_model::{
    checkpoint_name, flops, latest_checkpoint, CheckpointWriter, CpuBackend, LrSchedule, MetricsWriter, ModelConfig,
    Trainer, TrainerConfig, VecSource,
};

const VOCAB: usize = 512;
const SEQ_LEN: usize = 256;

/// Each token has four likely successors (probabilities 0.4, 0.3, 0.2, 0.1).
fn bigram_sequences(count: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let successor = |token: u64, choice: u64| (token * 31 + choice * 97 + 7) % VOCAB as u64;
    (0..count)
        .map(|_| {
            let mut token = next() % VOCAB as u64;
            (0..=SEQ_LEN)
                .map(|_| {
                    let current = token;
                    let r = next() % 10;
                    let choice = if r < 4 { 0 } else if r < 7 { 1 } else if r < 9 { 2 } else { 3 };
                    token = successor(token, choice);
                    current as u32
                })
                .collect()
        })
        .collect()
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let run_dir = PathBuf::from(args.first().map(String::as_str).unwrap_or("runs/synthetic"));
    let steps: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(100);
    let resume = args.iter().any(|a| a == "--resume");

    let configs = std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())).join("../../pipelines/configs");
    let model_config = ModelConfig::from_toml_file(&configs.join("tiny.toml"))?.with_vocab_size(VOCAB);
    let entropy_bits: f64 = [0.4f64, 0.3, 0.2, 0.1].iter().map(|p| -p * p.log2()).sum();
    println!(
        "tiny: {} parameters, 6N1 {:.3e} and M {:.3e} FLOPs/token; best loss {:.3} nats",
        flops::parameter_count(&model_config),
        flops::six_n1(&model_config),
        flops::model_scale_m(&model_config, SEQ_LEN),
        entropy_bits * std::f64::consts::LN_2
    );

    let mut train = VecSource::new(bigram_sequences(4096, 1), true);
    let mut trainer = match latest_checkpoint(&run_dir)? {
        Some(dir) if resume => {
            println!("resuming from {}", dir.display());
            Trainer::resume(CpuBackend, &dir, &mut train)?
        }
        _ => {
            let config = TrainerConfig {
                seq_len: SEQ_LEN,
                micro_batch_size: 8,
                grad_accum_steps: 1,
                schedule: LrSchedule::MultiStep { peak_lr: 3e-3, warmup_steps: steps / 10, total_steps: steps },
                optimizer: Default::default(),
                seed: 1,
            };
            Trainer::new(CpuBackend, model_config, config)?
        }
    };
    std::fs::create_dir_all(&run_dir)?;
    let mut metrics = MetricsWriter::append(&run_dir.join("metrics.jsonl"))?;
    let mut writer = CheckpointWriter::new();
    while trainer.state.step < steps {
        let step = trainer.train_step(&mut train)?;
        metrics.write(&step)?;
        if step.step % 20 == 0 || step.step == steps {
            let mut validation = VecSource::new(bigram_sequences(16, 2), false);
            let eval = trainer.evaluate(&mut validation, None, None)?;
            metrics.write(&serde_json::json!({ "step": step.step, "val_loss": eval.loss }))?;
            println!(
                "step {:4}  loss {:.4}  val {:.4}  lr {:.2e}  |g| {:.3}  {:.0} tok/s",
                step.step, step.loss, eval.loss, step.lr, step.grad_norm, step.tokens_per_second
            );
            writer.save(&run_dir, &checkpoint_name(step.step), trainer.checkpoint_data(vec![]))?;
        }
    }
    writer.wait()?;
    Ok(())
}
