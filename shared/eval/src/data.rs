//! Readers for the benchmark files: JSON lines (llm-foundry's `query/choices/gold`,
//! `context_options/continuation/gold`, `context/continuation`; GSM8K; HumanEval), CSV with a
//! header (CMMLU), and plain text; each gzipped or not. Every reader gives records as JSON
//! objects, so task templates address any field by name.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::{Map, Value};

/// One benchmark item: its fields by name.
pub type Record = Map<String, Value>;

fn open(path: &Path) -> Result<Box<dyn Read>> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    Ok(if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    })
}

/// The file's name without a trailing `.gz`.
fn inner_name(path: &Path) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    name.strip_suffix(".gz").unwrap_or(&name).to_string()
}

/// Records of a `.jsonl` or `.csv` file (optionally `.gz`).
pub fn read_records(path: &Path) -> Result<Vec<Record>> {
    let name = inner_name(path);
    if name.ends_with(".jsonl") || name.ends_with(".json") {
        read_jsonl(open(path)?, path)
    } else if name.ends_with(".csv") {
        read_csv(open(path)?, path)
    } else {
        bail!("{}: unknown record format (expected .jsonl or .csv, optionally .gz)", path.display())
    }
}

/// One JSON object a line; blank lines are skipped. Errors name the line.
pub fn read_jsonl(reader: impl Read, origin: &Path) -> Result<Vec<Record>> {
    let mut records = Vec::new();
    for (i, line) in BufReader::new(reader).lines().enumerate() {
        let line = line.with_context(|| format!("{}: line {}: cannot read", origin.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(&line) {
            Ok(Value::Object(record)) => records.push(record),
            Ok(_) => bail!("{}: line {}: not a JSON object", origin.display(), i + 1),
            Err(e) => bail!("{}: line {}: {e}", origin.display(), i + 1),
        }
    }
    Ok(records)
}

/// CSV with a header row; every value a string. CMMLU's first column has an empty name and
/// holds the row number.
pub fn read_csv(reader: impl Read, origin: &Path) -> Result<Vec<Record>> {
    let mut csv = csv::ReaderBuilder::new().has_headers(true).flexible(false).from_reader(reader);
    let headers = csv.headers().with_context(|| format!("{}: no header row", origin.display()))?.clone();
    let mut records = Vec::new();
    for (i, row) in csv.records().enumerate() {
        let row = row.with_context(|| format!("{}: record {}", origin.display(), i + 1))?;
        records.push(headers.iter().zip(row.iter()).map(|(h, v)| (h.to_string(), Value::String(v.to_string()))).collect());
    }
    Ok(records)
}

/// Documents of held-out text: each JSON line's `text_field` for `.jsonl`, or the whole file
/// for `.txt` (each optionally `.gz`).
pub fn read_documents(path: &Path, text_field: &str) -> Result<Vec<String>> {
    let name = inner_name(path);
    if name.ends_with(".txt") {
        let mut text = String::new();
        open(path)?.read_to_string(&mut text).with_context(|| format!("{}: not UTF-8 text", path.display()))?;
        return Ok(vec![text]);
    }
    read_records(path)?
        .into_iter()
        .enumerate()
        .map(|(i, r)| match r.get(text_field) {
            Some(Value::String(s)) => Ok(s.clone()),
            _ => bail!("{}: record {}: no string field {text_field:?}", path.display(), i + 1),
        })
        .collect()
}

/// The string field `name` of `record`.
pub fn string_field<'r>(record: &'r Record, name: &str) -> Result<&'r str> {
    match record.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => bail!("field {name:?} is {other}, not a string"),
        None => bail!("no field {name:?}"),
    }
}

/// The list-of-strings field `name` of `record`.
pub fn string_list_field(record: &Record, name: &str) -> Result<Vec<String>> {
    match record.get(name) {
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string).with_context(|| format!("field {name:?} holds {v}, not a string")))
            .collect(),
        Some(other) => bail!("field {name:?} is {other}, not a list"),
        None => bail!("no field {name:?}"),
    }
}

/// The gold answer's index: an integer, an integer in a string, or a label among `labels`
/// (CMMLU's "B"; ARC's answerKey).
pub fn gold_index(record: &Record, name: &str, labels: &[String], n_choices: usize) -> Result<usize> {
    let index = match record.get(name) {
        Some(Value::Number(n)) => n.as_u64().with_context(|| format!("field {name:?} is {n}, not an index"))? as usize,
        Some(Value::Bool(b)) => *b as usize,
        Some(Value::String(s)) => match labels.iter().position(|l| l.trim() == s.trim()) {
            Some(i) => i,
            None => s.trim().parse::<usize>().with_context(|| format!("field {name:?} is {s:?}: neither an index nor one of {labels:?}"))?,
        },
        Some(other) => bail!("field {name:?} is {other}: not an answer index"),
        None => bail!("no field {name:?}"),
    };
    if index >= n_choices {
        bail!("answer index {index} but only {n_choices} choices");
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_jsonl_and_names_bad_lines() {
        let text = "{\"query\": \"q\", \"choices\": [\"a\", \"b\"], \"gold\": 1}\n\n{\"x\": 2}\n";
        let records = read_jsonl(text.as_bytes(), Path::new("t.jsonl")).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(string_list_field(&records[0], "choices").unwrap(), ["a", "b"]);
        assert_eq!(gold_index(&records[0], "gold", &[], 2).unwrap(), 1);
        let err = read_jsonl("{\"a\":1}\n[1]\n".as_bytes(), Path::new("t.jsonl")).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn reads_quoted_csv_and_letter_answers() {
        let text = ",Question,A,B,C,D,Answer\n0,\"a, b\nc\",x,y,z,w,C\n";
        let records = read_csv(text.as_bytes(), Path::new("t.csv")).unwrap();
        assert_eq!(string_field(&records[0], "Question").unwrap(), "a, b\nc");
        let labels: Vec<String> = ["A", "B", "C", "D"].map(String::from).to_vec();
        assert_eq!(gold_index(&records[0], "Answer", &labels, 4).unwrap(), 2);
        assert!(gold_index(&records[0], "Question", &labels, 4).is_err());
    }

    proptest! {
        #[test]
        fn csv_round_trips_any_strings(cells in proptest::collection::vec("[^\r]*", 1..5)) {
            let mut writer = csv::Writer::from_writer(Vec::new());
            let header: Vec<String> = (0..cells.len()).map(|i| format!("c{i}")).collect();
            writer.write_record(&header).unwrap();
            writer.write_record(&cells).unwrap();
            let bytes = writer.into_inner().unwrap();
            let records = read_csv(bytes.as_slice(), Path::new("p.csv")).unwrap();
            for (i, cell) in cells.iter().enumerate() {
                prop_assert_eq!(string_field(&records[0], &format!("c{i}")).unwrap(), cell.as_str());
            }
        }

        #[test]
        fn jsonl_reader_never_panics(text in ".*") {
            let _ = read_jsonl(text.as_bytes(), Path::new("p.jsonl"));
        }
    }
}
