//! End-to-end tests of `ds-synth --align`, `ds-sft` and `ds-dpo`: the real binaries fine-tune a
//! small random model with a tokenizer trained here, and what they write loads back: in
//! dsllm_model, in the ds-eval binary (whose figures equal those the stages measured through
//! ds-eval's library), and in transformers as LlamaForCausalLM when a Python with torch,
//! transformers and pyarrow is at hand (`DSLLM_PYTHON`, default `python3`; skipped otherwise).

use std::path::Path;
use std::process::Command;

use dsllm_model::{load_hf_model, save_checkpoint, CheckpointData, CpuBackend, Llama, ModelConfig};
use dsllm_tokens::{save_tokenizer, train_from_documents, TrainConfig};
use serde_json::Value;

fn run(name: &str, args: &[&str]) -> Value {
    let output = Command::new(dsllm::binary(name)).args(args).output().expect("running the binary");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{name} failed: {stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.lines().last().expect("a summary line")).expect("a JSON summary")
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn synth_sft_and_dpo_train_and_write_loadable_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = root.join("align-data");
    run("ds-synth", &["--align", "--output", data.to_str().unwrap(), "--sft-examples", "200", "--dpo-pairs", "48", "--eval-items", "8"]);
    // A tokenizer that knows the task's words, and a random model of its vocabulary.
    let texts: Vec<String> = std::fs::read_to_string(data.join("sft_train.jsonl")).unwrap().lines().map(str::to_string).collect();
    let ids: Vec<String> = (0..texts.len()).map(|i| i.to_string()).collect();
    let config = TrainConfig { learned_tokens: 400, model_vocab_size: None, sample_bytes: 1 << 20, ..TrainConfig::default() };
    let (tokenizer, tokenizer_config) = train_from_documents(ids.iter().map(String::as_str).zip(texts.iter().map(String::as_str)), &config).unwrap();
    let tokenizer_dir = root.join("tokenizer");
    save_tokenizer(&tokenizer_dir, &tokenizer, &tokenizer_config).unwrap();
    let model_config = ModelConfig {
        hidden_size: 32,
        intermediate_size: 64,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        vocab_size: tokenizer_config.model_vocab_size as usize,
        max_position_embeddings: 64,
        rms_norm_eps: 1e-6,
        rope_theta: 10000.0,
        initializer_range: 0.02,
        bos_token_id: Some(tokenizer_config.bos_id),
        eos_token_id: Some(tokenizer_config.eos_id),
    };
    let model = Llama::new_random(CpuBackend, model_config.clone(), 1).unwrap();
    let base = root.join("runs/base");
    let data_ckpt = CheckpointData { config: model_config.clone(), weights: model.host_tensors(), optimizer: vec![], trainer_state: None, extra_files: vec![] };
    save_checkpoint(&base, "ckpt-0", &data_ckpt).unwrap();

    // ds-eval's task files write the chat template as text: it tokenizes as the template does.
    let ds_tokenizer = dsllm_tokens::DsTokenizer::load(&tokenizer_dir).unwrap();
    let template = dsllm_align::chat::ChatTemplate::new(&ds_tokenizer).unwrap();
    let eval_tokenizer = dsllm_eval::EvalTokenizer::load(&tokenizer_dir, &model_config).unwrap();
    for line in std::fs::read_to_string(data.join("eval_task.jsonl")).unwrap().lines() {
        let question = serde_json::from_str::<Value>(line).unwrap()["question"].as_str().unwrap().to_string();
        let ours = template.encode_prompt(&[dsllm_align::chat::Message::new(dsllm_align::chat::Role::User, question.clone())]).unwrap();
        assert_eq!(eval_tokenizer.encode(&format!("<｜User｜>{question}<｜Assistant｜>")).unwrap(), ours, "{question}");
    }

    let (tok, sft_out, dpo_out) = (tokenizer_dir.to_str().unwrap(), root.join("runs/sft"), root.join("runs/dpo"));
    let tasks = data.join("tasks");
    let task = |name: &str| tasks.join(name).to_str().unwrap().to_string();
    let (reversal, preferred, preferred_logp) = (task("digit_reversal.toml"), task("preferred_answer.toml"), task("preferred_logprob.toml"));
    let file = |name: &str| data.join(name).to_str().unwrap().to_string();
    let (sft_train, eval_task, dpo_train, eval_preferences) = (file("sft_train.jsonl"), file("eval_task.jsonl"), file("dpo_train.jsonl"), file("eval_preferences.jsonl"));
    let sft_args = [
        "--model", base.to_str().unwrap(), "--tokenizer", tok, "--data", &sft_train,
        "--eval-task", &eval_task, "--eval-tasks", &reversal, "--eval-data-root", data.to_str().unwrap(),
        "--max-new-tokens", "8", "--output", sft_out.to_str().unwrap(),
        "--epochs", "1", "--lr", "3e-3", "--micro-batch", "4", "--grad-accum", "1", "--stage2-epochs", "1", "--backend", "cpu", "--threads", "2",
    ];
    let summary = run("ds-sft", &sft_args);
    let report = read_json(&sft_out.join("report.json"));
    assert_eq!(summary["checkpoint"], report["checkpoint"]);
    assert_eq!(report["conversations"], 200);
    assert!(report["before"]["accuracy"].is_number() && report["after"]["repetition_ratio"].is_number());
    assert_eq!(report["eval_before"]["digit_reversal"]["items"], 8);
    let sft_exact_match = report["eval_after"]["digit_reversal"]["metrics"]["exact_match"].as_f64().unwrap();
    // Both stages trained; the second had no math or code to leave out of this data.
    assert!(sft_out.join("stage1/model.safetensors").exists() && sft_out.join("stage2/config.json").exists());
    assert_eq!(std::fs::read_to_string(sft_out.join("latest")).unwrap().trim(), "stage2");
    let metrics = std::fs::read_to_string(sft_out.join("metrics.jsonl")).unwrap();
    let losses: Vec<f64> = metrics.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).filter_map(|v| v["loss"].as_f64()).collect();
    assert!(losses.len() >= 4);
    assert!(losses.last().unwrap() < &losses[0], "SFT loss must fall: {losses:?}");
    let manifest = read_json(&sft_out.join("_manifest.json"));
    assert_eq!(manifest["counts"]["read"], 200);
    // The checkpoint loads as a Hugging Face model, with the tokenizer beside it.
    let (config, tensors) = load_hf_model(&sft_out.join("stage2")).unwrap();
    assert_eq!(config.hidden_size, 32);
    assert!(tensors.contains_key("model.embed_tokens.weight"));
    assert!(sft_out.join("stage2/tokenizer.json").exists());
    // A rerun with the same inputs is skipped.
    assert_eq!(run("ds-sft", &sft_args)["skipped_up_to_date"], true);

    let dpo_args = [
        "--model", sft_out.to_str().unwrap(), "--tokenizer", tok, "--data", &dpo_train,
        "--eval-preferences", &eval_preferences, "--eval-task", &eval_task,
        "--eval-tasks", &preferred, &preferred_logp, "--eval-data-root", data.to_str().unwrap(),
        "--max-new-tokens", "8", "--output", dpo_out.to_str().unwrap(), "--lr", "1e-3", "--micro-batch", "8", "--grad-accum", "2",
        "--on-policy", "--backend", "cpu", "--threads", "2",
    ];
    run("ds-dpo", &dpo_args);
    let report = read_json(&dpo_out.join("report.json"));
    // On-policy: the SFT model's own answers to the 48 prompts are the rejected ones, except
    // where it answers the chosen one (those pairs are left out and counted as removed).
    let pairs = report["pairs"].as_u64().unwrap();
    assert_eq!(report["on_policy"]["prompts"], 48);
    assert_eq!(report["on_policy"]["pairs"], pairs);
    assert_eq!(report["on_policy"]["already_chosen"].as_u64().unwrap() + pairs, 48);
    assert!(pairs >= 16, "{}", report["on_policy"]);
    let on_policy: Vec<Value> = std::fs::read_to_string(dpo_out.join("on_policy_pairs.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(on_policy.len() as u64, pairs);
    for pair in &on_policy {
        assert_ne!(pair["chosen"], pair["rejected"]);
        assert!(pair["chosen"].as_str().unwrap().starts_with("#### "));
    }
    let steps_expected = pairs.div_ceil(16);
    assert_eq!(report["steps"], steps_expected);
    assert!(report["before"]["preferences"]["logp_preferred_rate"].is_number());
    assert!(report["after"]["task"]["accuracy"].is_number());
    for name in ["preferred_answer", "preferred_logprob"] {
        assert_eq!(report["eval_before"][name]["items"], 8, "{name}");
        assert!(report["eval_after"][name]["metrics"].as_object().is_some_and(|m| !m.is_empty()), "{name}");
    }
    // The gain DPO is for, on this small setup: it must not lower the held-out rate of pairs
    // whose chosen answer has the higher log-probability (the on-policy rejected answers here
    // are the SFT model's own, so DPO pushes its style down and the chosen one up).
    let logprob = |e: &Value| e["preferred_logprob"]["metrics"]["acc"].as_f64().unwrap();
    assert!(logprob(&report["eval_after"]) >= logprob(&report["eval_before"]), "{} -> {}", report["eval_before"], report["eval_after"]);
    let dpo_after = report["eval_after"].clone();
    let steps: Vec<Value> = std::fs::read_to_string(dpo_out.join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).filter(|v: &Value| v["loss"].is_number()).collect();
    assert_eq!(steps.len() as u64, steps_expected);
    // The first step's policy is the reference: zero rewards, loss log 2.
    assert!((steps[0]["loss"].as_f64().unwrap() - std::f64::consts::LN_2).abs() < 1e-4, "{}", steps[0]);
    assert!(steps[0]["reward_margin"].as_f64().unwrap().abs() < 1e-4);
    for key in ["reward_accuracy", "reward_margin", "kl_per_token", "chosen_reward", "rejected_reward", "chosen_nll"] {
        assert!(steps.last().unwrap()[key].is_number(), "{key}");
    }
    assert!(dpo_out.join("reference_logps.parquet").exists());
    let (_, tensors) = load_hf_model(&dpo_out.join("final")).unwrap();
    assert!(tensors.contains_key("lm_head.weight"));
    let manifest = read_json(&dpo_out.join("_manifest.json"));
    assert_eq!(manifest["counts"]["read"], 48);
    assert_eq!(manifest["counts"]["kept"], pairs);

    // The ds-eval binary loads both run folders (their `latest`) and gives the figures the stages
    // measured through its library.
    let eval_out = root.join("eval");
    for (run_dir, name, metric, expected) in [
        (&sft_out, "digit_reversal", "exact_match", sft_exact_match),
        (&dpo_out, "preferred_answer", "exact_match", dpo_after["preferred_answer"]["metrics"]["exact_match"].as_f64().unwrap()),
        (&dpo_out, "preferred_logprob", "acc", dpo_after["preferred_logprob"]["metrics"]["acc"].as_f64().unwrap()),
    ] {
        let out = eval_out.join(run_dir.file_name().unwrap()).join(name);
        run("ds-eval", &[
            "run", "--model", run_dir.to_str().unwrap(), "--tokenizer", tok, "--tasks", tasks.join(format!("{name}.toml")).to_str().unwrap(),
            "--data-root", data.to_str().unwrap(), "--limit", "8", "--output", out.to_str().unwrap(), "--backend", "cpu", "--threads", "2",
        ]);
        let results = read_json(&out.join("results.json"));
        let task = results["tasks"].as_array().unwrap().iter().find(|t| t["name"] == name).unwrap().clone();
        assert_eq!(task["metrics"][metric].as_f64().unwrap(), expected, "{name} {metric}");
    }

    // transformers loads both checkpoints and scores answers as ds-dpo did.
    let python = std::env::var("DSLLM_PYTHON").unwrap_or_else(|_| "python3".into());
    let usable = Command::new(&python).args(["-c", "import torch, transformers, pyarrow"]).output().is_ok_and(|o| o.status.success());
    if !usable {
        println!("skipped the transformers check: {python} cannot import torch, transformers and pyarrow (set DSLLM_PYTHON)");
        return;
    }
    let script = std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())).join("tests/python/check_align.py");
    let output = Command::new(&python)
        .arg(script)
        .args([sft_out.join("stage2").to_str().unwrap(), dpo_out.to_str().unwrap(), data.join("dpo_train.jsonl").to_str().unwrap()])
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "check_align.py failed: {text}");
    println!("{text}");
}
