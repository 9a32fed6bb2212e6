//! The acceptance checks that run on the CPU in seconds:
//! - a random-init model scores within the 95% interval of chance on the ARC-Easy, PIQA and
//!   CMMLU dev splits (from ../shared/data; skipped with a message when it is absent);
//! - a tiny model trained on data of a task's format beats chance on that task;
//! - greedy generation with the KV cache, stop sequences and GSM8K answer extraction solve
//!   GSM8K-format items the tiny model was trained on.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use dsllm_eval::fixture::{tiny_config, FACTS};
use dsllm_eval::{run_task, within_chance, EvalTokenizer, Evaluator, RunContext, TaskSpec};
use dsllm_model::{CpuBackend, HostTensor, Llama, LrSchedule, ModelConfig, Trainer, TrainerConfig, VecSource};
use dsllm_tokens::DsTokenizer;

fn fixture_tokenizer() -> PathBuf {
    std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())).join("tests/fixtures/tiny")
}

fn repo() -> PathBuf {
    std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())).join("../..")
}

fn evaluator_with(config: ModelConfig, tensors: Option<&[(String, HostTensor)]>) -> Evaluator<CpuBackend> {
    let tokenizer = EvalTokenizer::load(&fixture_tokenizer(), &config).unwrap();
    let model = match tensors {
        Some(t) => Llama::from_host_tensors(CpuBackend, config, &t.iter().cloned().collect()).unwrap(),
        None => Llama::new_random(CpuBackend, config, 1).unwrap(),
    };
    Evaluator::new(model, tokenizer)
}

#[test]
fn random_init_model_scores_at_chance_on_dev_splits() {
    let data_root = repo().join("../shared/data");
    if !data_root.join("eval").is_dir() {
        println!("skipped: {} is absent", data_root.display());
        return;
    }
    let tokenizer = DsTokenizer::load(&fixture_tokenizer()).unwrap();
    // Hugging Face's initialisation (N(0, 0.02²)): a model that knows nothing.
    let config = ModelConfig { initializer_range: 0.02, ..tiny_config(tokenizer.config().model_vocab_size as usize, tokenizer.eos_id()) };
    let mut evaluator = evaluator_with(config, None);
    for task in ["arc_easy", "piqa", "cmmlu_agronomy"] {
        let spec = TaskSpec::from_file(&repo().join(format!("pipelines/eval/tasks/{task}.toml"))).unwrap();
        let ctx = RunContext { data_root: &data_root, tokenizer_dir: &fixture_tokenizer(), progress: &|_, _| {} };
        let result = run_task(&mut evaluator, &spec, &ctx).unwrap();
        let chance = result.chance.unwrap();
        println!("{task}: {:?} over {} items; chance {:.3} in [{:.3}, {:.3}]", result.metrics, result.items, chance.accuracy, chance.low, chance.high);
        assert!(result.items >= 50, "{task}: {} items", result.items);
        // Every accuracy, not only the headline. One fixed draw of weights: a guesser leaves the
        // 95% interval one time in twenty (seed 11 does, with acc_uncond 0.15 on ARC-Easy;
        // seeds 1-4 are inside on every metric).
        for metric in result.metrics.keys().filter(|m| m.starts_with("acc")) {
            assert_eq!(within_chance(&result, metric), Some(true), "{task}: {metric} {:?}", result.metrics);
        }
    }
}

/// "Question: What color is the sky?\nAnswer: blue" and "Question: What is 3 plus 4?\nAnswer:
/// 3 + 4 = 7\n#### 7" sequences.
fn training_texts() -> Vec<String> {
    let mut texts: Vec<String> = FACTS.iter().map(|(thing, color)| format!("Question: What color is the {thing}?\nAnswer: {color}")).collect();
    texts.extend(sums().iter().map(|(a, b)| format!("Question: What is {a} plus {b}?\nAnswer: {a} + {b} = {}\n#### {}", a + b, a + b)));
    texts
}

fn sums() -> Vec<(u32, u32)> {
    vec![(2, 3), (4, 1), (6, 2), (3, 3), (5, 4), (1, 7)]
}

/// The tiny model after a few hundred steps on [`training_texts`] (trained once per test binary).
fn trained() -> &'static (ModelConfig, Vec<(String, HostTensor)>) {
    static TRAINED: OnceLock<(ModelConfig, Vec<(String, HostTensor)>)> = OnceLock::new();
    TRAINED.get_or_init(|| {
        let tokenizer = DsTokenizer::load(&fixture_tokenizer()).unwrap();
        let seq_len = 40;
        let sequences: Vec<Vec<u32>> = training_texts()
            .iter()
            .map(|t| {
                let mut ids = tokenizer.encode(t).unwrap();
                ids.push(tokenizer.eos_id());
                assert!(ids.len() <= seq_len + 1, "{t}: {} tokens", ids.len());
                ids.resize(seq_len + 1, tokenizer.eos_id());
                ids
            })
            .collect();
        let config = ModelConfig { initializer_range: 0.02, ..tiny_config(tokenizer.config().model_vocab_size as usize, tokenizer.eos_id()) };
        let steps = 300;
        let trainer_config = TrainerConfig {
            seq_len,
            micro_batch_size: sequences.len(),
            grad_accum_steps: 1,
            schedule: LrSchedule::Cosine { peak_lr: 1e-2, warmup_steps: 20, total_steps: steps, min_lr_ratio: 0.1 },
            optimizer: Default::default(),
            seed: 5,
        };
        let mut trainer = Trainer::new(CpuBackend, config.clone(), trainer_config).unwrap();
        let mut source = VecSource::new(sequences, true);
        let mut last = f64::NAN;
        for _ in 0..steps {
            last = trainer.train_step(&mut source).unwrap().loss;
        }
        println!("trained {steps} steps, final loss {last:.3}");
        (config, trainer.model.host_tensors())
    })
}

#[test]
fn tiny_model_trained_on_a_task_format_beats_chance() {
    let (config, tensors) = trained();
    let dir = tempfile::tempdir().unwrap();
    // Every fact asked with four colours, the right one at each position in turn.
    let colors: Vec<&str> = FACTS.iter().map(|f| f.1).collect();
    let mut lines = Vec::new();
    for (i, (thing, color)) in FACTS.iter().enumerate() {
        let mut choices: Vec<&str> = (1..4).map(|k| colors[(i + k) % colors.len()]).collect();
        let gold = i % 4;
        choices.insert(gold, color);
        lines.push(serde_json::json!({"query": format!("Question: What color is the {thing}?"), "choices": choices, "gold": gold}).to_string());
    }
    std::fs::write(dir.path().join("colors.jsonl"), lines.join("\n")).unwrap();
    let spec = TaskSpec::from_toml(
        "name = \"colors\"\nkind = \"multiple_choice\"\ndata = \"colors.jsonl\"\nprompt = \"{query}\\nAnswer:\"\nchoices = \"choices\"\ngold = \"gold\"\nunconditional_context = \"Answer:\"\n",
        Path::new("colors.toml"),
    )
    .unwrap();
    let mut evaluator = evaluator_with(config.clone(), Some(tensors));
    let ctx = RunContext { data_root: dir.path(), tokenizer_dir: &fixture_tokenizer(), progress: &|_, _| {} };
    let result = run_task(&mut evaluator, &spec, &ctx).unwrap();
    let chance = result.chance.unwrap();
    println!("colors: {:?}; chance interval [{:.3}, {:.3}]", result.metrics, chance.low, chance.high);
    for metric in ["acc", "acc_norm", "acc_uncond"] {
        assert!(result.metrics[metric] > chance.high, "{metric} {} is not above chance's interval", result.metrics[metric]);
    }
}

#[test]
fn greedy_generation_solves_gsm8k_format_items_it_was_trained_on() {
    let (config, tensors) = trained();
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = sums()
        .iter()
        .map(|(a, b)| serde_json::json!({"question": format!("What is {a} plus {b}?"), "answer": format!("{a} + {b} = {}\n#### {}", a + b, a + b)}).to_string())
        .collect();
    std::fs::write(dir.path().join("sums.jsonl"), lines.join("\n")).unwrap();
    // The repository's GSM8K task file, pointed at this file, without few-shot examples.
    let text = std::fs::read_to_string(repo().join("pipelines/eval/tasks/gsm8k.toml")).unwrap();
    let text = text.replace("data = \"eval/gsm8k.dev.jsonl\"", "data = \"sums.jsonl\"").replace("few_shot = 5", "few_shot = 0").replace("max_new_tokens = 256", "max_new_tokens = 24");
    let spec = TaskSpec::from_toml(&text, Path::new("gsm8k.toml")).unwrap();
    let mut evaluator = evaluator_with(config.clone(), Some(tensors));
    evaluator.generation_batch = 4; // two batches of different prompt lengths
    let ctx = RunContext { data_root: dir.path(), tokenizer_dir: &fixture_tokenizer(), progress: &|_, _| {} };
    let result = run_task(&mut evaluator, &spec, &ctx).unwrap();
    for item in &result.per_item {
        println!("{item}");
    }
    assert!(result.metrics["exact_match"] >= 5.0 / 6.0, "{:?}", result.metrics);
    // Generation stopped before the next "Question:" and the answers were extracted strictly.
    for item in &result.per_item {
        assert!(!item["generation"].as_str().unwrap().contains("Question:"));
    }
}

#[test]
fn bits_per_byte_of_a_token_folder_and_of_its_text_agree() {
    let tokenizer = DsTokenizer::load(&fixture_tokenizer()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let documents = dsllm_eval::fixture::corpus();
    let ids: Vec<String> = (0..documents.len()).map(|i| format!("doc-{i}")).collect();
    let config = dsllm_tokens::PackConfig { sequence_length: 64, validation_fraction: 0.3, threads: 1, ..Default::default() };
    dsllm_tokens::pack_documents(&tokenizer, &dir.path().join("tokens"), config, ids.iter().zip(&documents).map(|(id, text)| (id.as_str(), text.as_str(), 1)))
        .unwrap();
    std::fs::write(dir.path().join("heldout.txt"), documents.concat()).unwrap();
    let model_config = ModelConfig { initializer_range: 0.02, ..tiny_config(tokenizer.config().model_vocab_size as usize, tokenizer.eos_id()) };
    let mut evaluator = evaluator_with(model_config, None);
    let ctx = RunContext { data_root: dir.path(), tokenizer_dir: &fixture_tokenizer(), progress: &|_, _| {} };
    let mut bpb = Vec::new();
    for data in ["tokens", "heldout.txt"] {
        let spec = TaskSpec::from_toml(&format!("name = \"bpb\"\nkind = \"bits_per_byte\"\ndata = \"{data}\"\n"), Path::new("bpb.toml")).unwrap();
        let result = run_task(&mut evaluator, &spec, &ctx).unwrap();
        println!("{data}: {:?}", result.metrics);
        // A model that knows nothing: about log2(vocab) bits per token.
        let per_token = result.metrics["nats"] / result.metrics["tokens"] / std::f64::consts::LN_2;
        assert!((per_token - (512f64).log2()).abs() < 0.5, "{data}: {per_token} bits per token");
        bpb.push(result.metrics["bits_per_byte"]);
    }
    assert!((bpb[0] / bpb[1] - 1.0).abs() < 0.15, "token folder {} vs text {}", bpb[0], bpb[1]);
}
