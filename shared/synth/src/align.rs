//! The embedded alignment data: a task the demo model can learn in minutes on a CPU, digit
//! reversal ("Reverse the digits of 4709." → `#### 9074`), written in the formats ds-sft,
//! ds-dpo and ds-eval read:
//!
//! - `sft_train.jsonl`: alpaca records, one phrasing; 70% of the answers in a verbose style
//!   (`4709 reversed is #### 9074`), the rest concise (`#### 9074`). One phrasing and short
//!   answers let the tiny model spend its few CPU minutes on the digits (with four phrasings
//!   and long answers it learned the format but not the reversal); the verbose majority is
//!   the style the SFT model then answers in.
//! - `dpo_train.jsonl`: TRL preference pairs (`prompt`, `chosen`, `rejected`) over numbers SFT
//!   never sees: chosen is the concise answer, rejected the verbose one or a plausible wrong
//!   reversal. The demo (`ds-dpo --on-policy`) uses their prompts and chosen answers and
//!   takes the SFT model's own answers as the rejected ones: made-up mistakes the SFT model
//!   already ranks below the right answer leave DPO nothing to fix (measured: no gain).
//! - `eval_task.jsonl`: held-out items in GSM8K's format (`question`, `answer` ending
//!   `#### n`), scored by exact match of the final answer.
//! - `eval_preferences.jsonl`: held-out preference pairs of the same kind, with `choices`
//!   (`[chosen, rejected]`) and `label` (0) for ds-eval's multiple choice.
//! - `tasks/*.toml`: ds-eval task files over the held-out sets, prompts in the chat template
//!   (`<｜User｜>question<｜Assistant｜>` after the BOS the tokenizer adds): `digit_reversal`
//!   (greedy answer, exact match of `#### n`), `preferred_answer` (greedy answer exactly the
//!   chosen one) and `preferred_logprob` (log P(chosen) > log P(rejected)). Run them with
//!   `ds-eval run --tasks DIR/tasks --data-root DIR`.
//!
//! Numbers have `digits` digits, zeros allowed inside but not first or last (a reversal then
//! never starts with 0): 810 numbers of 3 digits. The held-out numbers, the DPO numbers and
//! the SFT numbers are disjoint sets.

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
    /// SFT examples, drawn (with repeats) from the SFT numbers.
    pub sft_examples: usize,
    /// DPO pairs, one per number (distinct numbers, none used by SFT or the held-out sets).
    pub dpo_pairs: usize,
    pub eval_items: usize,
    pub eval_pairs: usize,
    /// Digits per number (2 or more).
    pub digits: usize,
    /// Share of SFT answers in the verbose style.
    pub verbose_share: f64,
}

impl Default for AlignConfig {
    fn default() -> Self {
        // Three digits: the reversal is a fixed pattern of relative positions the demo's tiny
        // model learns in minutes on a CPU. Of the 810 numbers, 200 are held out, 200 are
        // DPO's and 410 SFT's, each seen ~20 times in 8,000 SFT examples.
        Self { seed: 20240105, sft_examples: 8000, dpo_pairs: 200, eval_items: 100, eval_pairs: 100, digits: 3, verbose_share: 0.7 }
    }
}
pub const SFT_FILE: &str = "sft_train.jsonl";
pub const DPO_FILE: &str = "dpo_train.jsonl";
pub const EVAL_TASK_FILE: &str = "eval_task.jsonl";
pub const EVAL_PREFERENCES_FILE: &str = "eval_preferences.jsonl";
/// The folder of ds-eval task files.
pub const TASKS_DIR: &str = "tasks";
/// Token budget of a greedy answer in the task files (a verbose answer has about 16 tokens; a model
/// that loops is cut here).
pub const MAX_NEW_TOKENS: usize = 32;

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

/// The one phrasing of the task.
pub fn question(n: &str) -> String {
    format!("Reverse the digits of {n}.")
}

pub fn reversed(n: &str) -> String {
    n.chars().rev().collect()
}

/// The answer DPO prefers.
pub fn concise(n: &str) -> String {
    format!("#### {}", reversed(n))
}

/// The other style SFT teaches (most of its answers): right, but wordier.
pub fn verbose(n: &str) -> String {
    format!("{n} reversed is #### {}", reversed(n))
}

/// The numbers of `digits` digits with no 0 first or last, in order.
pub fn numbers(digits: usize) -> Vec<String> {
    let digits = digits.max(2) as u32;
    let inner = 10u64.pow(digits - 2);
    (0..81 * inner)
        .map(|k| {
            let (first, last, middle) = (1 + k / (9 * inner), 1 + (k / inner) % 9, k % inner);
            let middle = if digits > 2 { format!("{middle:0width$}", width = digits as usize - 2) } else { String::new() };
            format!("{first}{middle}{last}")
        })
        .collect()
}

/// A plausible wrong answer: the number not reversed, two neighbouring digits of the reversal
/// swapped, or one of its digits off by one (whichever differs from the right answer and
/// starts with no 0).
pub fn rejected(rng: &mut Rng, n: &str) -> (String, &'static str) {
    let right: Vec<u8> = reversed(n).into_bytes();
    let mut candidates: Vec<(Vec<u8>, &'static str)> = Vec::new();
    candidates.push((n.as_bytes().to_vec(), "not_reversed"));
    let i = rng.random_range(0..right.len() - 1);
    let mut swapped = right.clone();
    swapped.swap(i, i + 1);
    candidates.push((swapped, "swapped"));
    let j = rng.random_range(0..right.len());
    let mut changed = right.clone();
    // Up by one (9 down to 8): never a 0 first.
    changed[j] = if changed[j] == b'9' { b'8' } else { changed[j] + 1 };
    candidates.push((changed, "digit_changed"));
    candidates.shuffle(rng);
    // A swap can bring a 0 first; a changed digit is always a fit.
    let (wrong, kind) = candidates.into_iter().find(|(c, _)| *c != right && c[0] != b'0').expect("a changed digit always fits");
    (format!("#### {}", String::from_utf8(wrong).expect("digits")), kind)
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
    let mut numbers = numbers(config.digits);
    numbers.shuffle(&mut rng);
    // Held out first, then DPO's, the rest SFT's: SFT keeps at least half of the numbers.
    let held_out = (config.eval_items + config.eval_pairs).min(numbers.len() / 4);
    let (eval_numbers, rest) = numbers.split_at(held_out);
    let (eval_task_numbers, eval_pair_numbers) = eval_numbers.split_at(config.eval_items.min(held_out));
    let (dpo_numbers, sft_numbers) = rest.split_at(config.dpo_pairs.min(rest.len() / 2));
    let mut kinds = std::collections::BTreeMap::new();

    let sft: Vec<serde_json::Value> = (0..config.sft_examples)
        .map(|_| {
            let n = &sft_numbers[rng.random_range(0..sft_numbers.len())];
            let output = if rng.random::<f64>() < config.verbose_share { verbose(n) } else { concise(n) };
            json!({"instruction": question(n), "input": "", "output": output, "category": "string"})
        })
        .collect();
    let pair = |rng: &mut Rng, n: &str, kinds: &mut std::collections::BTreeMap<String, u64>| {
        let (bad, kind) = if rng.random::<bool>() { (verbose(n), "verbose") } else { rejected(rng, n) };
        *kinds.entry(kind.to_string()).or_insert(0) += 1;
        json!({"prompt": question(n), "chosen": concise(n), "rejected": bad, "rejected_kind": kind})
    };
    let dpo: Vec<serde_json::Value> = dpo_numbers.iter().map(|n| pair(&mut rng, n, &mut kinds)).collect();
    let eval_task: Vec<serde_json::Value> = eval_task_numbers.iter().map(|n| json!({"question": question(n), "answer": concise(n)})).collect();
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
    fn numbers_have_no_zero_first_or_last() {
        let three = numbers(3);
        assert_eq!(three.len(), 810);
        assert_eq!(three.iter().collect::<std::collections::HashSet<_>>().len(), 810);
        assert!(three.iter().all(|n| n.len() == 3 && !n.starts_with('0') && !n.ends_with('0')));
        assert!(three.contains(&"101".to_string()) && three.contains(&"909".to_string()));
        assert_eq!(numbers(4).len(), 8100);
        assert_eq!(numbers(2).len(), 81);
    }

    #[test]
    fn rejected_answers_are_wrong_numbers_of_as_many_digits() {
        let mut rng = Rng::seed_from_u64(3);
        let mut kinds = std::collections::BTreeSet::new();
        for n in numbers(3) {
            let (answer, kind) = rejected(&mut rng, &n);
            kinds.insert(kind);
            let digits = answer.strip_prefix("#### ").unwrap();
            assert_ne!(answer, concise(&n));
            assert_eq!(digits.len(), 3, "{n}: {answer}");
            assert!(digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0'), "{n}: {answer}");
        }
        assert_eq!(kinds.len(), 3, "{kinds:?}");
    }

    #[test]
    fn held_out_dpo_and_sft_numbers_are_disjoint() {
        let dir = tempfile::tempdir().unwrap();
        let config = AlignConfig { sft_examples: 500, dpo_pairs: 150, eval_items: 50, eval_pairs: 50, ..AlignConfig::default() };
        let summary = write_align_set(&config, dir.path()).unwrap();
        assert_eq!(summary.records, 750);
        let read = |name: &str| -> Vec<serde_json::Value> {
            std::fs::read_to_string(dir.path().join(name)).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
        };
        let number = |text: &str| text.split(|c: char| !c.is_ascii_digit()).find(|s| s.len() >= 3).unwrap().to_string();
        let set = |name: &str, key: &str| -> std::collections::HashSet<String> { read(name).iter().map(|r| number(r[key].as_str().unwrap())).collect() };
        let (eval, eval_pairs, dpo, sft) =
            (set(EVAL_TASK_FILE, "question"), set(EVAL_PREFERENCES_FILE, "prompt"), set(DPO_FILE, "prompt"), set(SFT_FILE, "instruction"));
        assert_eq!((eval.len(), eval_pairs.len(), dpo.len()), (50, 50, 150));
        assert!(sft.len() > 300, "{}", sft.len());
        for (a, b) in [(&eval, &eval_pairs), (&eval, &dpo), (&eval, &sft), (&eval_pairs, &dpo), (&eval_pairs, &sft), (&dpo, &sft)] {
            assert!(a.is_disjoint(b));
        }
        for r in read(SFT_FILE) {
            let n = number(r["instruction"].as_str().unwrap());
            assert_eq!(r["instruction"], question(&n));
            assert!(r["output"] == concise(&n) || r["output"] == verbose(&n), "{r}");
        }
        for r in read(DPO_FILE) {
            assert_eq!(r["chosen"], concise(&number(r["prompt"].as_str().unwrap())));
            assert_ne!(r["chosen"], r["rejected"]);
        }
        for r in read(EVAL_TASK_FILE) {
            let n = number(r["question"].as_str().unwrap());
            assert_eq!(r["answer"], concise(&n));
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
