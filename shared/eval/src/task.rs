//! Tasks as data: one TOML file per task names its data file, how a record becomes a prompt,
//! the few-shot count and the metric. `pipelines/eval/tasks/*.toml` holds the paper's
//! benchmarks in lm-evaluation-harness's conventions.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// How a task is scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// Pick the choice with the highest log-likelihood: acc, acc_norm (per character) and,
    /// with `unconditional_context`, acc_uncond.
    MultipleChoice,
    /// Log-likelihood of one continuation (LAMBADA): acc = greedy decoding reproduces it, and
    /// perplexity.
    Cloze,
    /// Greedy generation, answer extraction, exact match (GSM8K, MATH).
    Generate,
    /// Greedy generation of a function body run against tests in a sandbox: pass@1 (HumanEval).
    Code,
    /// Bits per byte and token perplexity of held-out text.
    BitsPerByte,
}

/// How the answer is pulled out of generated text and out of the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerExtraction {
    /// The whole text, trimmed.
    #[default]
    Text,
    /// GSM8K: the number after `#### ` (strict); falls back to the last number (flexible).
    Gsm8k,
    /// MATH: the content of the last `\boxed{...}`.
    Boxed,
}

/// One task file. Templates name record fields in braces: `"{query}\nAnswer:"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    pub name: String,
    pub kind: TaskKind,
    /// The data file (`.jsonl`, `.jsonl.gz`, `.csv`, `.txt`, `.txt.gz`) or a ds-pack token
    /// folder, relative to the data root (`--data-root`) unless absolute.
    pub data: PathBuf,
    /// Template of the context (multiple choice, cloze) or the prompt (generate, code).
    #[serde(default)]
    pub prompt: Option<String>,
    /// Text before everything (lm-eval's `description`).
    #[serde(default)]
    pub description: String,
    /// Examples of solved items before each item, from the same file (the items after it).
    #[serde(default)]
    pub few_shot: usize,
    #[serde(default = "default_few_shot_separator")]
    pub few_shot_separator: String,
    /// Between the context and the continuation (lm-eval's `target_delimiter`).
    #[serde(default = "default_target_delimiter")]
    pub target_delimiter: String,
    /// Multiple choice: the field holding the list of choices...
    #[serde(default)]
    pub choices: Option<String>,
    /// ...or fixed choice texts (CMMLU: `["A", "B", "C", "D"]`).
    #[serde(default)]
    pub choice_labels: Vec<String>,
    /// Multiple choice with one context per choice (WinoGrande): the field holding them.
    #[serde(default)]
    pub contexts: Option<String>,
    /// The field of the continuation (cloze; WinoGrande's shared continuation).
    #[serde(default)]
    pub continuation: Option<String>,
    /// The field of the answer: an index or a label for multiple choice, the reference
    /// solution for generation.
    #[serde(default)]
    pub gold: Option<String>,
    /// acc_uncond: log P(choice | context) − log P(choice | this), as the paper for ARC and
    /// OpenBookQA ("Answer:").
    #[serde(default)]
    pub unconditional_context: Option<String>,
    /// Template of a few-shot example's answer (generation): `" {answer}"`.
    #[serde(default)]
    pub few_shot_target: Option<String>,
    #[serde(default)]
    pub answer: AnswerExtraction,
    /// Generation ends at the first of these strings (not included).
    #[serde(default)]
    pub stop: Vec<String>,
    #[serde(default = "default_max_new_tokens")]
    pub max_new_tokens: usize,
    /// Code: the test program appended to the completion; `{entry_point}` etc. are fields.
    #[serde(default)]
    pub test_template: Option<String>,
    /// Code: seconds of wall time per program.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: f64,
    /// Code: address-space limit per program in MiB.
    #[serde(default = "default_memory")]
    pub memory_mib: u64,
    /// Bits per byte of JSON lines: the text field.
    #[serde(default = "default_text_field")]
    pub text_field: String,
    /// Bits per byte of a token folder: the split.
    #[serde(default = "default_split")]
    pub split: String,
    /// Evaluate at most this many items (or sequences, for bits per byte).
    #[serde(default)]
    pub limit: Option<usize>,
}

fn default_few_shot_separator() -> String {
    "\n\n".into()
}
fn default_target_delimiter() -> String {
    " ".into()
}
fn default_max_new_tokens() -> usize {
    256
}
fn default_timeout() -> f64 {
    10.0
}
fn default_memory() -> u64 {
    1024
}
fn default_text_field() -> String {
    "text".into()
}
fn default_split() -> String {
    "val".into()
}

impl TaskSpec {
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self> {
        let spec: TaskSpec = toml::from_str(text).with_context(|| format!("{}: not a task file", origin.display()))?;
        spec.validate().with_context(|| format!("{}: task {}", origin.display(), spec.name))?;
        Ok(spec)
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read task file {}", path.display()))?;
        Self::from_toml(&text, path)
    }

    fn validate(&self) -> Result<()> {
        match self.kind {
            TaskKind::MultipleChoice => {
                let ways = [self.choices.is_some(), !self.choice_labels.is_empty(), self.contexts.is_some()];
                if ways.iter().filter(|&&w| w).count() != 1 {
                    bail!("multiple_choice needs exactly one of `choices` (a field), `choice_labels` (fixed texts) or `contexts` (a field)");
                }
                if self.contexts.is_some() && self.continuation.is_none() {
                    bail!("`contexts` needs `continuation`, the field continuing every context");
                }
                if self.gold.is_none() {
                    bail!("multiple_choice needs `gold`, the field with the answer");
                }
                if self.contexts.is_none() && self.prompt.is_none() {
                    bail!("multiple_choice needs a `prompt` template");
                }
            }
            TaskKind::Cloze => {
                if self.prompt.is_none() || self.continuation.is_none() {
                    bail!("cloze needs `prompt` and `continuation`");
                }
            }
            TaskKind::Generate => {
                if self.prompt.is_none() || self.gold.is_none() {
                    bail!("generate needs `prompt` and `gold`");
                }
                if self.few_shot > 0 && self.few_shot_target.is_none() {
                    bail!("few-shot generation needs `few_shot_target`, the template of an example's answer");
                }
            }
            TaskKind::Code => {
                if self.prompt.is_none() || self.test_template.is_none() {
                    bail!("code needs `prompt` and `test_template`");
                }
            }
            TaskKind::BitsPerByte => {}
        }
        Ok(())
    }

    /// The data path under `data_root` (absolute paths stay as they are).
    pub fn data_path(&self, data_root: &Path) -> PathBuf {
        if self.data.is_absolute() {
            self.data.clone()
        } else {
            data_root.join(&self.data)
        }
    }
}

/// Every `*.toml` in `dir` with its path, sorted by file name.
pub fn load_task_dir(dir: &Path) -> Result<Vec<(PathBuf, TaskSpec)>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list task folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    paths.into_iter().map(|p| Ok((p.clone(), TaskSpec::from_file(&p)?))).collect()
}

/// `{field}` replaced by the record's field (strings as they are, numbers and lists as JSON;
/// `{{` and `}}` are literal braces). Fails naming the missing field.
pub fn render(template: &str, record: &serde_json::Map<String, serde_json::Value>) -> Result<String> {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find(['{', '}']) {
        out.push_str(&rest[..open]);
        let tail = &rest[open..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
            continue;
        }
        if tail.starts_with('}') {
            bail!("unmatched '}}' in template {template:?}");
        }
        let close = tail.find('}').with_context(|| format!("unclosed '{{' in template {template:?}"))?;
        let field = &tail[1..close];
        match record.get(field) {
            Some(serde_json::Value::String(s)) => out.push_str(s),
            Some(other) => out.push_str(&other.to_string()),
            None => bail!("the record has no field {field:?} (template {template:?})"),
        }
        rest = &tail[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(pairs: &[(&str, &str)]) -> serde_json::Map<String, serde_json::Value> {
        pairs.iter().map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string()))).collect()
    }

    #[test]
    fn renders_fields_and_literal_braces() {
        let r = record(&[("query", "Question: 2+2?"), ("x", "{not a field}")]);
        assert_eq!(render("{query}\nAnswer:", &r).unwrap(), "Question: 2+2?\nAnswer:");
        assert_eq!(render("{{literal}} {x}", &r).unwrap(), "{literal} {not a field}");
        let err = render("{missing}", &r).unwrap_err().to_string();
        assert!(err.contains("missing"), "{err}");
        assert!(render("{query", &r).is_err());
    }

    #[test]
    fn task_files_are_checked() {
        let ok = "name = \"t\"\nkind = \"multiple_choice\"\ndata = \"x.jsonl\"\nprompt = \"{query}\"\nchoices = \"choices\"\ngold = \"gold\"\n";
        let spec = TaskSpec::from_toml(ok, Path::new("t.toml")).unwrap();
        assert_eq!(spec.target_delimiter, " ");
        assert_eq!(spec.data_path(Path::new("/root")), PathBuf::from("/root/x.jsonl"));
        let no_gold = ok.replace("gold = \"gold\"\n", "");
        assert!(TaskSpec::from_toml(&no_gold, Path::new("t.toml")).is_err());
        let typo = format!("{ok}few_shots = 5\n");
        assert!(TaskSpec::from_toml(&typo, Path::new("t.toml")).is_err());
    }

    proptest! {
        #[test]
        fn text_without_braces_renders_unchanged(text in "[^{}]*") {
            prop_assert_eq!(render(&text, &serde_json::Map::new()).unwrap(), text);
        }

        #[test]
        fn any_template_renders_or_fails_cleanly(template in ".*", value in ".*") {
            let _ = render(&template, &record(&[("a", &value)]));
        }
    }
}
