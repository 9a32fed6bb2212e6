//! Alignment data files: JSON (an array), JSONL, or Parquet, optionally gzipped, in the formats
//! of LLaMA-Factory and TRL:
//!
//! - SFT, alpaca: `instruction`, `input`, `output`, optional `system` and `history`
//!   (`[[user, assistant], ...]`).
//! - SFT, multi-turn: `conversations: [{from: human|gpt|system, value}]` (ShareGPT) or
//!   `messages: [{role: user|assistant|system, content}]` (OpenAI/TRL).
//! - Preference pairs: `prompt`, `chosen`, `rejected` as strings (TRL), or the prompt as
//!   `conversations`/`messages` with `chosen`/`rejected` as strings or `{from, value}` /
//!   `{role, content}` messages (LLaMA-Factory).

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use anyhow::{bail, Context, Result};
use parquet::file::reader::{FileReader, SerializedFileReader};
use serde_json::Value;

use crate::chat::{guess_category, Conversation, Message, Role};

/// A preference pair: the prompt conversation (ending with a user message) and two answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreferencePair {
    pub prompt: Vec<Message>,
    pub chosen: String,
    pub rejected: String,
}

/// Every record of `path` as a JSON value, in file order.
pub fn read_records(path: &Path) -> Result<Vec<Value>> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_ascii_lowercase();
    let name = name.strip_suffix(".gz").unwrap_or(&name).to_string();
    if name.ends_with(".parquet") {
        return read_parquet(path);
    }
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let reader: Box<dyn Read> =
        if path.extension().is_some_and(|e| e == "gz") { Box::new(flate2::read::MultiGzDecoder::new(file)) } else { Box::new(file) };
    let mut reader = BufReader::new(reader);
    let mut text = String::new();
    if name.ends_with(".jsonl") {
        let mut records = Vec::new();
        for (i, line) in reader.lines().enumerate() {
            let line = line.with_context(|| format!("cannot read {} line {}", path.display(), i + 1))?;
            if line.trim().is_empty() {
                continue;
            }
            records.push(serde_json::from_str(&line).with_context(|| format!("{} line {}: not JSON", path.display(), i + 1))?);
        }
        return Ok(records);
    }
    reader.read_to_string(&mut text).with_context(|| format!("cannot read {}", path.display()))?;
    match serde_json::from_str::<Value>(&text).with_context(|| format!("{}: not JSON (a .json file holds one array of records)", path.display()))? {
        Value::Array(records) => Ok(records),
        _ => bail!("{}: a .json file must hold an array of records (use .jsonl for one record per line)", path.display()),
    }
}

fn read_parquet(path: &Path) -> Result<Vec<Value>> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let reader = SerializedFileReader::new(file).with_context(|| format!("{}: not a Parquet file", path.display()))?;
    let rows = reader.get_row_iter(None).with_context(|| format!("cannot read {}", path.display()))?;
    rows.enumerate()
        .map(|(i, row)| row.map(|r| row_json(&r)).with_context(|| format!("{} row {i}: unreadable", path.display())))
        .collect()
}

/// A Parquet row as JSON (parquet's own `to_json_value` needs its `json` feature, which pulls
/// in another dependency tree; the conversion is a few lines).
fn row_json(row: &parquet::record::Row) -> Value {
    Value::Object(row.get_column_iter().map(|(name, field)| (name.clone(), field_json(field))).collect())
}

fn field_json(field: &parquet::record::Field) -> Value {
    use parquet::record::Field;
    match field {
        Field::Null => Value::Null,
        Field::Bool(b) => Value::Bool(*b),
        Field::Byte(v) => json_number(*v as f64),
        Field::Short(v) => json_number(*v as f64),
        Field::Int(v) => json_number(*v as f64),
        Field::Long(v) => json_number(*v as f64),
        Field::UByte(v) => json_number(*v as f64),
        Field::UShort(v) => json_number(*v as f64),
        Field::UInt(v) => json_number(*v as f64),
        Field::ULong(v) => json_number(*v as f64),
        Field::Float(v) => json_number(*v as f64),
        Field::Double(v) => json_number(*v),
        Field::Str(s) => Value::String(s.clone()),
        Field::Group(row) => row_json(row),
        Field::ListInternal(list) => Value::Array(list.elements().iter().map(field_json).collect()),
        Field::MapInternal(map) => {
            Value::Object(map.entries().iter().map(|(k, v)| (match field_json(k) { Value::String(s) => s, other => other.to_string() }, field_json(v))).collect())
        }
        other => Value::String(other.to_string()),
    }
}

fn json_number(v: f64) -> Value {
    serde_json::Number::from_f64(v).map(Value::Number).unwrap_or(Value::Null)
}

fn str_field<'a>(record: &'a Value, key: &str) -> Option<&'a str> {
    record.get(key).and_then(Value::as_str)
}

/// A ShareGPT `{from, value}` or OpenAI `{role, content}` message.
fn message(value: &Value) -> Result<Message> {
    let (role, content) = match (str_field(value, "from"), str_field(value, "role")) {
        (Some(from), _) => (from, str_field(value, "value").context("a ShareGPT message needs \"value\"")?),
        (None, Some(role)) => (role, str_field(value, "content").context("a message needs \"content\"")?),
        _ => bail!("a message needs \"from\"/\"value\" or \"role\"/\"content\""),
    };
    let role = match role {
        "human" | "user" => Role::User,
        "gpt" | "assistant" | "bot" | "model" => Role::Assistant,
        "system" => Role::System,
        other => bail!("unknown message role {other:?}"),
    };
    Ok(Message::new(role, content))
}

fn message_list(record: &Value) -> Option<Result<Vec<Message>>> {
    let list = record.get("conversations").or_else(|| record.get("messages"))?;
    Some(match list.as_array() {
        Some(items) => items.iter().map(message).collect(),
        None => Err(anyhow::anyhow!("\"conversations\"/\"messages\" must be a list")),
    })
}

/// The conversation of an SFT record (alpaca or multi-turn).
pub fn conversation(record: &Value) -> Result<Conversation> {
    let mut messages = Vec::new();
    if let Some(list) = message_list(record) {
        messages = list?;
    } else if let Some(instruction) = str_field(record, "instruction") {
        if let Some(system) = str_field(record, "system").filter(|s| !s.is_empty()) {
            messages.push(Message::new(Role::System, system));
        }
        if let Some(history) = record.get("history").and_then(Value::as_array) {
            for turn in history {
                let pair = turn.as_array().filter(|p| p.len() == 2).context("\"history\" holds [user, assistant] pairs")?;
                let text = |v: &Value| v.as_str().map(str::to_string).context("\"history\" entries are strings");
                messages.push(Message::new(Role::User, text(&pair[0])?));
                messages.push(Message::new(Role::Assistant, text(&pair[1])?));
            }
        }
        let user = match str_field(record, "input").filter(|s| !s.is_empty()) {
            Some(input) => format!("{instruction}\n{input}"),
            None => instruction.to_string(),
        };
        messages.push(Message::new(Role::User, user));
        messages.push(Message::new(Role::Assistant, str_field(record, "output").context("an alpaca record needs \"output\"")?));
    } else {
        bail!("not an SFT record: no \"conversations\", \"messages\" or \"instruction\"");
    }
    if messages.iter().any(|m| m.role == Role::Assistant && m.content.trim().is_empty()) {
        bail!("an empty assistant answer");
    }
    let category = ["category", "type", "domain", "task"]
        .iter()
        .find_map(|k| str_field(record, k))
        .map(|c| c.to_ascii_lowercase())
        .unwrap_or_else(|| guess_category(&messages));
    Ok(Conversation { messages, category })
}

/// A preference pair of a DPO record.
pub fn preference_pair(record: &Value) -> Result<PreferencePair> {
    let answer = |key: &str| -> Result<String> {
        match record.get(key) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v @ Value::Object(_)) => {
                let m = message(v)?;
                if m.role != Role::Assistant {
                    bail!("\"{key}\" is a {:?} message, not an assistant one", m.role);
                }
                Ok(m.content)
            }
            // TRL's conversational format: a list ending with the assistant message.
            Some(Value::Array(items)) => match items.last().map(message).transpose()? {
                Some(m) if m.role == Role::Assistant => Ok(m.content),
                _ => bail!("\"{key}\" must end with an assistant message"),
            },
            _ => bail!("a preference record needs \"{key}\""),
        }
    };
    let prompt = match (message_list(record), record.get("prompt")) {
        (Some(list), _) => list?,
        (None, Some(Value::String(p))) => vec![Message::new(Role::User, p.clone())],
        (None, Some(Value::Array(items))) => items.iter().map(message).collect::<Result<_>>()?,
        _ => bail!("a preference record needs \"prompt\", \"conversations\" or \"messages\""),
    };
    if prompt.last().is_none_or(|m| m.role != Role::User) {
        bail!("the prompt must end with a user message");
    }
    let pair = PreferencePair { prompt, chosen: answer("chosen")?, rejected: answer("rejected")? };
    if pair.chosen == pair.rejected {
        bail!("\"chosen\" and \"rejected\" are the same answer");
    }
    Ok(pair)
}

/// A held-out task item in GSM8K's format: `question`, `answer` ending in `#### <answer>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskItem {
    pub question: String,
    /// The number after `####` ([`extract_final_answer`]).
    pub answer: String,
}

pub fn task_item(record: &Value) -> Result<TaskItem> {
    let question = str_field(record, "question").context("a task item needs \"question\"")?;
    let answer = str_field(record, "answer").context("a task item needs \"answer\"")?;
    let final_answer = extract_final_answer(answer).context("the answer has no \"#### <answer>\"")?;
    Ok(TaskItem { question: question.to_string(), answer: final_answer })
}

/// The final answer of a GSM8K-format text (`#### n`), as ds-eval's GSM8K task extracts it
/// (strict: the number after `#### `, separators removed); `None` when there is none.
pub fn extract_final_answer(text: &str) -> Option<String> {
    dsllm_eval::metrics::extract_answer(text, dsllm_eval::task::AnswerExtraction::Gsm8k, false)
}

#[cfg(test)]
mod tests;
