//! End-to-end tests of `ds-pretrain`: the real binary trains the tiny config on token shards
//! packed here from generated text with a tokenizer trained here.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{corpus, SEQ_LEN};
use dsllm_tokens::TokenShards;
use serde_json::Value;

fn tiny_config() -> PathBuf {
    std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())).join("pipelines/configs/tiny.toml")
}

/// `ds-pretrain train` on the test corpus into `output`, with `extra` arguments.
fn train_command(output: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(dsllm::binary("ds-pretrain"));
    command
        .arg("train")
        .arg("--config")
        .arg(tiny_config())
        .arg("--data")
        .arg(corpus().join("tokens"))
        .arg("--output")
        .arg(output)
        .args(["--backend", "cpu"])
        .args(extra);
    if !extra.contains(&"--micro-batch") {
        command.args(["--micro-batch", "4"]);
    }
    command
}

fn run_ok(mut command: Command) -> Value {
    let Output { status, stdout, stderr } = command.output().expect("ds-pretrain runs");
    let stderr = String::from_utf8_lossy(&stderr);
    assert!(status.success(), "ds-pretrain failed ({status}):\n{stderr}");
    let stdout = String::from_utf8(stdout).expect("utf-8 stdout");
    serde_json::from_str(stdout.lines().last().expect("a summary line")).unwrap_or_else(|e| panic!("summary is not JSON ({e}): {stdout}"))
}

fn metrics(output: &Path) -> Vec<Value> {
    std::fs::read_to_string(output.join("metrics.jsonl"))
        .expect("metrics.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// Metrics without the wall-clock fields, which differ from run to run.
fn deterministic(records: Vec<Value>) -> Vec<Value> {
    records
        .into_iter()
        .map(|mut r| {
            if let Some(object) = r.as_object_mut() {
                object.remove("tokens_per_second");
            }
            r
        })
        .collect()
}

#[test]
fn trains_and_writes_metrics_checkpoints_and_a_loss_curve() {
    let run = tempfile::tempdir().unwrap();
    let output = run.path().join("run");
    let summary = run_ok(train_command(&output, &["--steps", "6", "--eval-every", "3", "--eval-batches", "2", "--save-every", "3"]));
    assert_eq!(summary["steps"], 6);
    assert_eq!(summary["backend"], "cpu");
    assert_eq!(summary["tokens_seen"], 6 * 4 * SEQ_LEN as u64);
    assert!(summary["val_bits_per_byte"].as_f64().unwrap() > 0.0, "{summary}");
    assert!(summary["flops_per_token"]["m"].as_f64().unwrap() > 0.0);

    let records = metrics(&output);
    let steps: Vec<u64> = records.iter().filter(|r| r.get("loss").is_some()).map(|r| r["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [1, 2, 3, 4, 5, 6]);
    let validations: Vec<u64> = records.iter().filter(|r| r.get("val_loss").is_some()).map(|r| r["step"].as_u64().unwrap()).collect();
    assert_eq!(validations, [3, 6]);
    let run_record = &records[0]["run"];
    let vocab = run_record["model"]["vocab_size"].as_u64().unwrap();
    let index: Value = serde_json::from_str(&std::fs::read_to_string(corpus().join("tokens/index.json")).unwrap()).unwrap();
    assert_eq!(vocab, index["model_vocab_size"].as_u64().unwrap(), "vocab_size 0 takes the padded tokenizer vocabulary");
    assert_eq!(run_record["trainer"]["schedule"]["kind"], "multi-step");
    assert_eq!(run_record["trainer"]["schedule"]["warmup_steps"], 0, "min(2000, 10% of 6 steps)");

    assert_eq!(std::fs::read_to_string(output.join("latest")).unwrap().trim(), "ckpt-6");
    for step in [3, 6] {
        let checkpoint = output.join(format!("ckpt-{step}"));
        for file in ["model.safetensors", "config.json", "optimizer.safetensors", "trainer_state.json", "tokenizer.json", "tokenizer_config.json"] {
            assert!(checkpoint.join(file).exists(), "{} has no {file}", checkpoint.display());
        }
        let state: Value = serde_json::from_str(&std::fs::read_to_string(checkpoint.join("trainer_state.json")).unwrap()).unwrap();
        assert_eq!(state["step"], step);
        assert_eq!(state["data_cursor"]["split"], "train");
        let config: Value = serde_json::from_str(&std::fs::read_to_string(checkpoint.join("config.json")).unwrap()).unwrap();
        assert_eq!(config["architectures"][0], "LlamaForCausalLM");
        assert_eq!(config["vocab_size"].as_u64().unwrap(), vocab);
    }
    let png = std::fs::read(output.join("loss.png")).expect("loss.png");
    assert_eq!(&png[1..4], b"PNG");

    // The same output again without --resume is a usage error.
    let again = train_command(&output, &["--steps", "6"]).output().unwrap();
    assert_eq!(again.status.code(), Some(2), "{}", String::from_utf8_lossy(&again.stderr));
}

#[test]
fn kill_then_resume_gives_bit_identical_losses() {
    let run = tempfile::tempdir().unwrap();
    let args = ["--steps", "30", "--eval-every", "5", "--eval-batches", "2", "--save-every", "4", "--seed", "3", "--lr", "3e-3"];

    let straight = run.path().join("straight");
    run_ok(train_command(&straight, &args));

    let killed = run.path().join("killed");
    let mut child = train_command(&killed, &args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let killed_at = loop {
        assert!(Instant::now() < deadline, "the run never reached step 10");
        assert!(child.try_wait().unwrap().is_none(), "the run finished before it could be killed");
        let step = std::fs::read_to_string(killed.join("metrics.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|r| r["step"].as_u64())
            .max()
            .unwrap_or(0);
        if step >= 10 && killed.join("latest").exists() {
            break step;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(killed_at < 30);

    let summary = run_ok(train_command(&killed, &[&args[..], &["--resume"]].concat()));
    let resumed_from = summary["resumed_from_step"].as_u64().expect("resumed from a checkpoint");
    assert!(resumed_from >= 4 && resumed_from % 4 == 0 && resumed_from <= killed_at, "{summary}");
    assert_eq!(summary["steps"], 30);
    assert_eq!(deterministic(metrics(&killed)), deterministic(metrics(&straight)));
}

/// Entropy (nats) of the token distribution of the train split: the loss of the best model
/// that ignores context.
fn unigram_entropy(tokens_dir: &Path) -> f64 {
    let shards = TokenShards::open(tokens_dir, "train").unwrap();
    let mut counts = std::collections::HashMap::<u32, u64>::new();
    for sequence in 0..shards.sequence_count() {
        for token in shards.sequence(sequence) {
            *counts.entry(token).or_default() += 1;
        }
    }
    let total: u64 = counts.values().sum();
    counts.values().map(|&c| c as f64 / total as f64).map(|p| -p * p.ln()).sum()
}

#[test]
fn validation_loss_falls_well_below_the_unigram_entropy() {
    let run = tempfile::tempdir().unwrap();
    let output = run.path().join("run");
    let summary = run_ok(train_command(&output, &["--steps", "120", "--micro-batch", "8", "--eval-every", "40", "--eval-batches", "4", "--lr", "1e-2"]));
    let entropy = unigram_entropy(&corpus().join("tokens"));
    let val_loss = summary["val_loss"].as_f64().unwrap();
    eprintln!("unigram entropy {entropy:.3} nats; validation loss after 120 steps {val_loss:.3}; summary {summary}");
    assert!(val_loss < 0.7 * entropy, "validation loss {val_loss:.3} is not well below the unigram entropy {entropy:.3}");
}

/// Two processes launched as torchrun launches them (RANK, WORLD_SIZE, LOCAL_RANK,
/// MASTER_ADDR, MASTER_PORT) train data-parallel with ZeRO-1 over TCP: their losses follow one
/// process's with the same global batch, only rank 0 writes the run folder, and a checkpoint
/// the two wrote resumes in one process.
#[test]
fn two_ranks_follow_one_process_and_their_checkpoint_resumes_in_one() {
    let run = tempfile::tempdir().unwrap();
    // Two micro-batches of 2 sequences a step: one per rank, or both in one process.
    let batch_tokens = (4 * SEQ_LEN).to_string();
    let args = ["--steps", "4", "--micro-batch", "2", "--batch-tokens", &batch_tokens, "--eval-every", "2", "--eval-batches", "2", "--save-every", "2", "--lr", "3e-3", "--seed", "3"];
    let single = run.path().join("single");
    run_ok(train_command(&single, &args));

    let parallel = run.path().join("parallel");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let children: Vec<_> = (0..2)
        .map(|rank| {
            let mut command = train_command(&parallel, &args);
            command.env("RANK", rank.to_string()).env("LOCAL_RANK", rank.to_string()).env("WORLD_SIZE", "2");
            command.env("MASTER_ADDR", "127.0.0.1").env("MASTER_PORT", &port).args(["--threads", "1"]);
            command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
        })
        .collect();
    let summaries: Vec<Value> = children
        .into_iter()
        .map(|child| {
            let Output { status, stdout, stderr } = child.wait_with_output().unwrap();
            assert!(status.success(), "a rank failed ({status}):\n{}", String::from_utf8_lossy(&stderr));
            serde_json::from_str(String::from_utf8(stdout).unwrap().lines().last().unwrap()).unwrap()
        })
        .collect();
    assert_eq!((summaries[0]["rank"].as_u64(), summaries[1]["rank"].as_u64()), (Some(0), Some(1)));
    assert_eq!(summaries[1]["world_size"], 2);
    assert_eq!(metrics(&parallel)[0]["run"]["world_size"], 2, "rank 0 wrote the run record");

    let losses = |records: &[Value], key: &str| -> Vec<f64> { records.iter().filter_map(|r| r.get(key)).map(|v| v.as_f64().unwrap()).collect() };
    let close = |a: &[f64], b: &[f64]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-4 * y.abs());
    let (one, two) = (metrics(&single), metrics(&parallel));
    for key in ["loss", "val_loss", "grad_norm"] {
        assert!(close(&losses(&two, key), &losses(&one, key)), "{key}: two ranks {:?}, one process {:?}", losses(&two, key), losses(&one, key));
    }
    assert_eq!(losses(&two, "loss").len(), 4, "one metrics line a step, not one a rank");

    // As if the two-rank run had died after step 2: one process takes over from its checkpoint.
    std::fs::remove_dir_all(parallel.join("ckpt-4")).unwrap();
    std::fs::write(parallel.join("latest"), "ckpt-2\n").unwrap();
    let summary = run_ok(train_command(&parallel, &[&args[..], &["--resume"]].concat()));
    assert_eq!((summary["resumed_from_step"].as_u64(), summary["world_size"].as_u64()), (Some(2), Some(1)));
    let resumed = metrics(&parallel);
    assert!(close(&losses(&resumed, "loss"), &losses(&one, "loss")), "{:?} vs {:?}", losses(&resumed, "loss"), losses(&one, "loss"));
}
