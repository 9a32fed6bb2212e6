//! End-to-end tests of `ds-pretrain`: the real binary trains the tiny config on token shards
//! packed here from generated text with a tokenizer trained here.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use dsllm_tokens::{save_tokenizer, train_from_documents, DsTokenizer, PackConfig, Packer, TokenShards, TrainConfig};
use serde_json::Value;

/// Tokens per packed sequence: short, so a step is quick on CPU.
const SEQ_LEN: u32 = 64;

/// Text with structure a small model learns quickly (who does what to which thing), and a
/// unigram distribution spread over a few dozen words.
fn generated_documents(count: usize) -> Vec<String> {
    let names = ["Anna", "Boris", "Chen", "Dara", "Emil", "Farah", "Goran", "Hana", "Ivo", "Jia"];
    let verbs = ["paints", "carries", "finds", "sells", "washes", "draws", "hides", "opens"];
    let adjectives = ["red", "small", "old", "heavy", "bright", "wooden", "quiet", "green"];
    let nouns = ["box", "boat", "lamp", "door", "chair", "kettle", "drum", "basket"];
    let places = ["market", "harbor", "garden", "station"];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    };
    (0..count)
        .map(|_| {
            let sentences = 3 + next(5);
            (0..sentences)
                .map(|_| {
                    format!(
                        "{} {} the {} {} at the {}.",
                        names[next(names.len())],
                        verbs[next(verbs.len())],
                        adjectives[next(adjectives.len())],
                        nouns[next(nouns.len())],
                        places[next(places.len())]
                    )
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// `root/tokenizer` and `root/tokens` (ds-pack's layout), made once per test process under
/// cargo's temporary folder for tests (a static is never dropped, so no TempDir here).
fn corpus() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pretrain-corpus");
        if root.exists() {
            std::fs::remove_dir_all(&root).expect("removing the last run's corpus");
        }
        let documents = generated_documents(1500);
        let ids: Vec<String> = (0..documents.len()).map(|i| format!("doc-{i}")).collect();
        let config = TrainConfig { learned_tokens: 400, model_vocab_size: None, sample_bytes: 1 << 20, ..TrainConfig::default() };
        let (tokenizer, tokenizer_config) =
            train_from_documents(ids.iter().map(String::as_str).zip(documents.iter().map(String::as_str)), &config).expect("tokenizer training");
        let tokenizer_dir = root.join("tokenizer");
        save_tokenizer(&tokenizer_dir, &tokenizer, &tokenizer_config).expect("saving the tokenizer");
        let tokenizer = DsTokenizer::load(&tokenizer_dir).expect("loading the tokenizer");
        let pack = PackConfig { sequence_length: SEQ_LEN, validation_fraction: 0.05, sequences_per_shard: 500, ..PackConfig::default() };
        let mut packer = Packer::new(&tokenizer, &root.join("tokens"), pack).expect("packer");
        for (id, text) in ids.iter().zip(&documents) {
            packer.add(id, text, 1).expect("packing");
        }
        packer.finish().expect("finishing the shards");
        root
    })
}

fn tiny_config() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("pipelines/configs/tiny.toml")
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
