//! ds-eval end to end: a random-init checkpoint written by `ds-eval random-model`, evaluated on
//! multiple-choice, cloze, code (sandbox) and bits-per-byte tasks, a task with missing data
//! skipped with its reason, results.json / results.md / _manifest.json, and a rerun skipped.

use std::process::Command;

use dsllm::binary;

fn run(args: &[&str]) -> std::process::Output {
    let output = Command::new(binary("ds-eval")).args(args).output().expect("ds-eval runs");
    assert!(output.status.success(), "ds-eval {args:?} failed:\n{}", String::from_utf8_lossy(&output.stderr));
    output
}

#[test]
fn ds_eval_scores_a_checkpoint_and_writes_results() {
    let root = std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()));
    let fixtures = root.join("shared/eval/tests/fixtures");
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    run(&[
        "random-model",
        "--config",
        root.join("pipelines/configs/tiny.toml").to_str().unwrap(),
        "--tokenizer",
        fixtures.join("tiny").to_str().unwrap(),
        "--output",
        model.to_str().unwrap(),
    ]);
    assert!(model.join("model.safetensors").exists() && model.join("tokenizer.json").exists());

    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    for file in ["items.jsonl", "cloze.jsonl"] {
        std::fs::copy(fixtures.join(file), data.join(file)).unwrap();
    }
    std::fs::write(
        data.join("code.jsonl"),
        "{\"task_id\": \"t/0\", \"prompt\": \"def add(a, b):\\n\", \"test\": \"def check(f):\\n    assert f(2, 3) == 5\\n\", \"entry_point\": \"add\"}\n",
    )
    .unwrap();
    let tasks = tmp.path().join("tasks");
    std::fs::create_dir_all(&tasks).unwrap();
    for file in ["qa.toml", "cloze.toml"] {
        std::fs::copy(fixtures.join(file), tasks.join(file)).unwrap();
    }
    std::fs::write(
        tasks.join("code.toml"),
        "name = \"code\"\nkind = \"code\"\ndata = \"code.jsonl\"\nprompt = \"{prompt}\"\nstop = [\"\\ndef\"]\nmax_new_tokens = 8\ntest_template = \"{test}\\ncheck({entry_point})\\n\"\ntimeout_seconds = 5.0\n",
    )
    .unwrap();
    std::fs::write(tasks.join("missing.toml"), "name = \"missing\"\nkind = \"cloze\"\ndata = \"nowhere.jsonl\"\nprompt = \"{context}\"\ncontinuation = \"continuation\"\n").unwrap();
    let heldout = tmp.path().join("heldout.txt");
    std::fs::write(&heldout, "The students measured the temperature of the water every hour.\n".repeat(20)).unwrap();
    let output = tmp.path().join("eval");
    let args = [
        "run",
        "--model",
        model.to_str().unwrap(),
        "--tasks",
        tasks.to_str().unwrap(),
        "--data-root",
        data.to_str().unwrap(),
        "--heldout",
        heldout.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--backend",
        "cpu",
    ];
    let first = run(&args);
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(stderr.contains("missing: skipped: no data at"), "{stderr}");

    let results: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(output.join("results.json")).unwrap()).unwrap();
    let tasks = results["tasks"].as_array().unwrap();
    let by_name = |name: &str| tasks.iter().find(|t| t["name"] == name).unwrap_or_else(|| panic!("no task {name}"));
    assert_eq!(tasks.len(), 5);
    let qa = by_name("fixture_qa");
    assert_eq!(qa["items"], 6);
    assert_eq!(qa["per_item"][0]["logprobs"].as_array().unwrap().len(), 4);
    assert!(qa["metrics"]["acc_uncond"].is_number());
    assert!(by_name("missing")["skipped"].as_str().unwrap().contains("nowhere.jsonl"));
    let code = by_name("code");
    if code["skipped"].is_null() {
        assert_eq!(code["items"], 1);
        assert!(code["per_item"][0]["sandbox"]["outcome"].is_string());
    }
    let bpb = by_name("heldout_bpb")["metrics"]["bits_per_byte"].as_f64().unwrap();
    // A random model over a 512-token vocabulary: about log2(512) bits per token, a few bytes each.
    assert!(bpb.is_finite() && bpb > 0.5 && bpb < 9.0, "bits per byte {bpb}");
    let markdown = std::fs::read_to_string(output.join("results.md")).unwrap();
    assert!(markdown.contains("| fixture_qa | acc_uncond |") && markdown.contains("| missing | acc | skipped |"), "{markdown}");
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(output.join("_manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["counts"]["read"], 5);
    assert_eq!(manifest["counts"]["kept"].as_u64().unwrap() + manifest["counts"]["removed"].as_u64().unwrap(), 5);
    let summary: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&first.stdout).lines().last().unwrap()).unwrap();
    assert!(summary["results"]["heldout_bpb/bits_per_byte"].is_number(), "{summary}");

    let again = run(&args);
    assert!(String::from_utf8_lossy(&again.stderr).contains("up to date"));
}
