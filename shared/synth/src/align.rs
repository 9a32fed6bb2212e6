//! The embedded alignment data: a task the demo model can learn in minutes on a CPU, digit
//! reversal ("Reverse the digits of 4719." → 9174), written in the formats ds-sft, ds-dpo and
//! ds-eval read:
//!
//! - `sft_train.jsonl`: alpaca records. Most answers are verbose ("Read from right to left,
//!   4719 is 9174. #### 9174"), the rest concise ("#### 9174"): SFT teaches the task, and the
//!   verbose style is what the SFT model then prefers.
//! - `dpo_train.jsonl`: TRL preference pairs (`prompt`, `chosen`, `rejected`): chosen is the
//!   concise correct answer, rejected the verbose one, a wrong one (the digits not reversed,
//!   or two swapped), or one that loops without ending. DPO should move the model to the
//!   concise style: the rate of preferred answers goes up.
//! - `eval_task.jsonl`: held-out items in GSM8K's format (`question`, `answer` ending
//!   `#### n`), scored by exact match of the final answer.
//! - `eval_preferences.jsonl`: held-out preference pairs of the same kinds, with `choices`
//!   (`[chosen, rejected]`) and `label` (0) for ds-eval's multiple choice.
//! - `tasks/*.toml`: ds-eval task files over the held-out sets, prompts in the chat template
//!   (`<｜User｜>question<｜Assistant｜>` after the BOS the tokenizer adds): `digit_reversal`
//!   (greedy answer, exact match of `#### n`), `preferred_answer` (greedy answer exactly the
//!   chosen one) and `preferred_logprob` (log P(chosen) > log P(rejected)). Run them with
//!   `ds-eval run --tasks DIR/tasks --data-root DIR`.
//!
//! Numbers of the held-out sets never appear in the training files.

use std::io::Write;
use std::path::Path;

use dsllm_core::atomic::AtomicFile;
use dsllm_core::error::{IoContext, Result};
use dsllm_core::parquet_io::WrittenFile;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::text::Rng;

/// Sizes of the alignment set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlignConfig {
    pub seed: u64,
    pub sft_examples: usize,
    pub dpo_pairs: usize,
    pub eval_items: usize,
    pub eval_pairs: usize,
    /// Digits per number (from 1-9, so no leading zero is lost by the reversal).
    pub min_digits: usize,
    pub max_digits: usize,
    /// Share of SFT answers in the verbose style.
    pub verbose_share: f64,
}

impl Default for AlignConfig {
    fn default() -> Self {
        // Three digits: the reversal is then a fixed pattern of relative positions, which the
        // demo's tiny model learns in minutes (with 3-4 digits it did not, in 2 epochs).
        Self { seed: 20240105, sft_examples: 4000, dpo_pairs: 1200, eval_items: 100, eval_pairs: 100, min_digits: 3, max_digits: 3, verbose_share: 0.7 }
    }
}

pub const SFT_FILE: &str = "sft_train.jsonl";
pub const DPO_FILE: &str = "dpo_train.jsonl";
pub const EVAL_TASK_FILE: &str = "eval_task.jsonl";
pub const EVAL_PREFERENCES_FILE: &str = "eval_preferences.jsonl";
/// The folder of ds-eval task files.
pub const TASKS_DIR: &str = "tasks";
/// Token budget of a greedy answer in the task files (a verbose answer has about 30 tokens).
pub const MAX_NEW_TOKENS: usize = 48;

/// The ds-eval task files: `(file name, TOML)`. Prompts are the chat template's, with the
/// special tokens written as text (the tokenizer reads them as its special tokens).
pub fn task_files() -> Vec<(&'static str, String)> {
    let prompt = |field: &str| format!("<｜User｜>{{{field}}}<｜Assistant｜>");
    vec![
        (
            "digit_reversal.toml",
            format!(
                "# Held-out digit reversal: greedy answer, exact match of the number after \"#### \".\n\
                 name = \"digit_reversal\"\nkind = \"generate\"\ndata = \"{EVAL_TASK_FILE}\"\nprompt = \"{}\"\n\
                 gold = \"answer\"\nanswer = \"gsm8k\"\nmax_new_tokens = {MAX_NEW_TOKENS}\n",
                prompt("question")
            ),
        ),
        (
            "preferred_answer.toml",
            format!(
                "# Held-out preference pairs: share of greedy answers that are exactly the chosen one.\n\
                 name = \"preferred_answer\"\nkind = \"generate\"\ndata = \"{EVAL_PREFERENCES_FILE}\"\nprompt = \"{}\"\n\
                 gold = \"chosen\"\nanswer = \"text\"\nmax_new_tokens = {MAX_NEW_TOKENS}\n",
                prompt("prompt")
            ),
        ),
        (
            "preferred_logprob.toml",
            format!(
                "# Held-out preference pairs: acc is the share with log P(chosen) > log P(rejected).\n\
                 name = \"preferred_logprob\"\nkind = \"multiple_choice\"\ndata = \"{EVAL_PREFERENCES_FILE}\"\nprompt = \"{}\"\n\
                 choices = \"choices\"\ngold = \"label\"\ntarget_delimiter = \"\"\n",
                prompt("prompt")
            ),
        ),
    ]
}

const QUESTIONS: [&str; 4] = ["Reverse the digits of {n}.", "Write {n} backwards.", "What is {n} with its digits reversed?", "Reverse {n}."];

fn question(rng: &mut Rng, n: &str) -> String {
    QUESTIONS[rng.random_range(0..QUESTIONS.len())].replace("{n}", n)
}

pub fn reversed(n: &str) -> String {
    n.chars().rev().collect()
}

pub fn concise(n: &str) -> String {
    format!("#### {}", reversed(n))
}

pub fn verbose(n: &str) -> String {
    format!("Read from right to left, {n} is {}. #### {}", reversed(n), reversed(n))
}

/// A rejected answer: verbose (half), wrong, or looping without an end.
fn rejected(rng: &mut Rng, n: &str) -> (String, &'static str) {
    let roll: f64 = rng.random();
    if roll < 0.5 {
        return (verbose(n), "verbose");
    }
    if roll < 0.8 {
        let mut wrong: Vec<char> = reversed(n).chars().collect();
        if rng.random::<bool>() || wrong.iter().all(|&c| c == wrong[0]) {
            wrong = n.chars().collect(); // not reversed at all
        } else {
            let i = rng.random_range(0..wrong.len() - 1);
            wrong.swap(i, i + 1);
        }
        let wrong: String = wrong.into_iter().collect();
        if wrong != reversed(n) {
            return (format!("#### {wrong}"), "wrong");
        }
        return (format!("#### {n}{n}"), "wrong");
    }
    let r = reversed(n);
    (format!("#### {r} {r} {r} {r} {r} {r}"), "looping")
}

/// What [`write_align_set`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct AlignSummary {
    pub files: Vec<WrittenFile>,
    pub records: u64,
    pub rejected_kinds: std::collections::BTreeMap<String, u64>,
}

/// Writes the four files into `output` (atomically each).
pub fn write_align_set(config: &AlignConfig, output: &Path) -> Result<AlignSummary> {
    let mut rng = Rng::seed_from_u64(config.seed);
    let mut numbers: Vec<String> = Vec::new();
    for digits in config.min_digits..=config.max_digits {
        let count = 9usize.pow(digits as u32);
        for k in 0..count {
            let (mut k, mut s) = (k, String::new());
            for _ in 0..digits {
                s.push((b'1' + (k % 9) as u8) as char);
                k /= 9;
            }
            numbers.push(s);
        }
    }
    numbers.shuffle(&mut rng);
    let held_out = (config.eval_items + config.eval_pairs).min(numbers.len() / 2);
    let (eval_numbers, train_numbers) = numbers.split_at(held_out);
    let (eval_task_numbers, eval_pair_numbers) = eval_numbers.split_at(config.eval_items.min(held_out));
    let mut kinds = std::collections::BTreeMap::new();
    let pick = |rng: &mut Rng| train_numbers[rng.random_range(0..train_numbers.len())].clone();

    let sft: Vec<serde_json::Value> = (0..config.sft_examples)
        .map(|_| {
            let n = pick(&mut rng);
            let output = if rng.random::<f64>() < config.verbose_share { verbose(&n) } else { concise(&n) };
            json!({"instruction": question(&mut rng, &n), "input": "", "output": output, "category": "string"})
        })
        .collect();
    let pair = |rng: &mut Rng, n: &str, kinds: &mut std::collections::BTreeMap<String, u64>| {
        let (bad, kind) = rejected(rng, n);
        *kinds.entry(kind.to_string()).or_insert(0) += 1;
        json!({"prompt": question(rng, n), "chosen": concise(n), "rejected": bad, "rejected_kind": kind})
    };
    let dpo: Vec<serde_json::Value> = (0..config.dpo_pairs)
        .map(|_| {
            let n = pick(&mut rng);
            pair(&mut rng, &n, &mut kinds)
        })
        .collect();
    let eval_task: Vec<serde_json::Value> =
        eval_task_numbers.iter().map(|n| json!({"question": question(&mut rng, n), "answer": format!("{n} read backwards. #### {}", reversed(n))})).collect();
    let eval_pairs: Vec<serde_json::Value> = eval_pair_numbers
        .iter()
        .map(|n| {
            let mut record = pair(&mut rng, n, &mut kinds);
            record["choices"] = json!([record["chosen"], record["rejected"]]);
            record["label"] = json!(0);
            record
        })
        .collect();

    let mut files = Vec::new();
    for (name, records) in [(SFT_FILE, &sft), (DPO_FILE, &dpo), (EVAL_TASK_FILE, &eval_task), (EVAL_PREFERENCES_FILE, &eval_pairs)] {
        let path = output.join(name);
        let (atomic, file) = AtomicFile::create(&path)?;
        let mut writer = std::io::BufWriter::new(file);
        for record in records {
            writeln!(writer, "{record}").at(&path, "write")?;
        }
        writer.flush().at(&path, "write")?;
        drop(writer);
        let final_path = atomic.commit()?;
        let bytes = std::fs::metadata(&final_path).at(&final_path, "stat")?.len();
        files.push(WrittenFile { path: final_path, rows: records.len() as u64, bytes });
    }
    let records = files.iter().map(|f| f.rows).sum();
    let tasks = output.join(TASKS_DIR);
    std::fs::create_dir_all(&tasks).at(&tasks, "create")?;
    for (name, text) in task_files() {
        let path = tasks.join(name);
        dsllm_core::atomic::write_file(&path, text.as_bytes())?;
        files.push(WrittenFile { path, rows: 0, bytes: text.len() as u64 });
    }
    Ok(AlignSummary { files, records, rejected_kinds: kinds })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_out_numbers_never_appear_in_training_files() {
        let dir = tempfile::tempdir().unwrap();
        let config = AlignConfig { sft_examples: 500, dpo_pairs: 200, eval_items: 50, eval_pairs: 50, ..AlignConfig::default() };
        let summary = write_align_set(&config, dir.path()).unwrap();
        assert_eq!(summary.records, 800);
        let read = |name: &str| -> Vec<serde_json::Value> {
            std::fs::read_to_string(dir.path().join(name)).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
        };
        let number = |text: &str| text.split(|c: char| !c.is_ascii_digit()).find(|s| s.len() >= 3).unwrap().to_string();
        let eval: std::collections::HashSet<String> = read(EVAL_TASK_FILE).iter().map(|r| number(r["question"].as_str().unwrap())).collect();
        assert_eq!(eval.len(), 50);
        for r in read(SFT_FILE) {
            let n = number(r["instruction"].as_str().unwrap());
            assert!(!eval.contains(&n));
            assert!(r["output"].as_str().unwrap().ends_with(&format!("#### {}", reversed(&n))));
        }
        for r in read(DPO_FILE) {
            assert!(!eval.contains(&number(r["prompt"].as_str().unwrap())));
            assert_ne!(r["chosen"], r["rejected"]);
        }
        for r in read(EVAL_TASK_FILE) {
            let n = number(r["question"].as_str().unwrap());
            assert!(r["answer"].as_str().unwrap().ends_with(&format!("#### {}", reversed(&n))));
        }
        for r in read(EVAL_PREFERENCES_FILE) {
            assert_eq!(r["choices"][0], r["chosen"]);
            assert_eq!(r["choices"][1], r["rejected"]);
            assert_eq!(r["label"], 0);
        }
        // The task files are valid ds-eval tasks over the files written here.
        for (name, _) in task_files() {
            let spec = dsllm_eval::TaskSpec::from_file(&dir.path().join(TASKS_DIR).join(name)).unwrap();
            assert!(spec.data_path(dir.path()).exists(), "{name}");
            assert!(spec.prompt.unwrap().starts_with("<｜User｜>{"), "{name}");
        }
        // Deterministic from the seed.
        let again = tempfile::tempdir().unwrap();
        write_align_set(&config, again.path()).unwrap();
        assert_eq!(std::fs::read(dir.path().join(DPO_FILE)).unwrap(), std::fs::read(again.path().join(DPO_FILE)).unwrap());
    }
}
