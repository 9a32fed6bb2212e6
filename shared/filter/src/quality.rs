//! The model-based ("semantic") quality score: logistic regression over hashed word unigrams
//! and bigrams (CJK characters are words), trained by the project on files the user names:
//! reference-quality text as positives, web noise as negatives. Small (2^18 weights, 1 MB),
//! fast to score (one pass over the text), no external model.
//!
//! File format: `DSQM1\n`, a little-endian u32 length, that many bytes of JSON
//! ([`ModelInfo`]), then the bias and `2^bits` weights as little-endian f32.

use dsllm_core::error::{Error, IoContext, Result};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

const MAGIC: &[u8; 6] = b"DSQM1\n";
/// Tokens of a document used for its features (enough to judge a page; bounds the cost).
const MAX_TOKENS: usize = 20_000;

/// Training settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainParams {
    /// log2 of the number of hashed features.
    pub bits: u32,
    pub epochs: u32,
    pub learning_rate: f32,
    pub l2: f32,
    /// Every k-th document (in input order) is held out to measure accuracy.
    pub holdout_every: usize,
    pub seed: u64,
}

impl Default for TrainParams {
    fn default() -> Self {
        TrainParams { bits: 18, epochs: 8, learning_rate: 0.5, l2: 1e-6, holdout_every: 10, seed: 1 }
    }
}

/// What a model file says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub format: u32,
    pub bits: u32,
    pub params: TrainParams,
    pub train_positives: u64,
    pub train_negatives: u64,
    pub heldout_positives: u64,
    pub heldout_negatives: u64,
    /// Accuracy at a 0.5 threshold on the held-out documents.
    pub heldout_accuracy: f64,
    /// Where the training documents came from.
    pub sources: Vec<String>,
}

pub struct QualityModel {
    pub info: ModelInfo,
    bias: f32,
    weights: Vec<f32>,
}

/// Appends the hashed unigram and bigram features of `text` to `out` (cleared first).
pub fn features(text: &str, bits: u32, out: &mut Vec<u32>) {
    out.clear();
    let mask = (1u64 << bits) - 1;
    let mut prev: u64 = 0x51_7CC1_B727_220A; // start-of-text marker
    let mut cur: u64 = 0;
    let mut in_word = false;
    let emit = |h: u64, prev: &mut u64, out: &mut Vec<u32>| {
        let h = mix(h);
        out.push((h & mask) as u32);
        out.push((mix(prev.rotate_left(29) ^ h.wrapping_mul(3)) & mask) as u32);
        *prev = h;
    };
    for c in text.chars() {
        if out.len() >= 2 * MAX_TOKENS {
            break;
        }
        if crate::text::is_cjk(c) {
            if in_word {
                emit(cur, &mut prev, out);
                in_word = false;
            }
            emit(c as u64 | 1 << 40, &mut prev, out);
        } else if c.is_alphanumeric() {
            let lower = if c.is_ascii() { c.to_ascii_lowercase() } else { c.to_lowercase().next().unwrap_or(c) };
            let d = if lower.is_ascii_digit() { '0' } else { lower };
            cur = if in_word { (cur ^ d as u64).wrapping_mul(0x100_0000_01B3) } else { 0xCBF2_9CE4_8422_2325 ^ d as u64 };
            in_word = true;
        } else {
            if in_word {
                emit(cur, &mut prev, out);
                in_word = false;
            }
            if !c.is_whitespace() {
                // Punctuation is a token too: noise pages are full of `|`, `>>`, `$`.
                emit(c as u64 | 1 << 41, &mut prev, out);
            }
        }
    }
    if in_word {
        emit(cur, &mut prev, out);
    }
}

#[inline]
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

impl QualityModel {
    /// Probability that `text` is reference-quality; `scratch` is reused between calls.
    pub fn score_with(&self, text: &str, scratch: &mut Vec<u32>) -> f32 {
        features(text, self.info.bits, scratch);
        sigmoid(self.bias + self.dot(scratch))
    }

    pub fn score(&self, text: &str) -> f32 {
        self.score_with(text, &mut Vec::new())
    }

    fn dot(&self, feats: &[u32]) -> f32 {
        if feats.is_empty() {
            return 0.0;
        }
        let scale = 1.0 / (feats.len() as f32).sqrt();
        feats.iter().map(|&i| self.weights[i as usize]).sum::<f32>() * scale
    }

    /// Trains on `(text, is_reference)` documents, holding every `holdout_every`-th out.
    pub fn train(docs: &[(String, bool)], params: &TrainParams, sources: Vec<String>) -> Result<QualityModel> {
        if !(8..=26).contains(&params.bits) {
            return Err(Error::Usage("--bits must be between 8 and 26".into()));
        }
        let holdout = |i: usize| params.holdout_every > 1 && i % params.holdout_every == params.holdout_every - 1;
        let mut train: Vec<(Vec<u32>, bool)> = Vec::new();
        let mut test: Vec<(Vec<u32>, bool)> = Vec::new();
        for (i, (text, label)) in docs.iter().enumerate() {
            let mut f = Vec::new();
            features(text, params.bits, &mut f);
            if holdout(i) { test.push((f, *label)) } else { train.push((f, *label)) }
        }
        let positives = train.iter().filter(|(_, y)| *y).count();
        let negatives = train.len() - positives;
        if positives == 0 || negatives == 0 {
            return Err(Error::Usage(format!(
                "training needs reference and noise documents; got {positives} reference and {negatives} noise"
            )));
        }
        // Classes weighted to balance: a 9:1 corpus should not teach "always say noise".
        let (w_pos, w_neg) = (train.len() as f32 / (2.0 * positives as f32), train.len() as f32 / (2.0 * negatives as f32));
        let mut model = QualityModel { info: ModelInfo::empty(params, sources), bias: 0.0, weights: vec![0.0; 1 << params.bits] };
        let mut order: Vec<usize> = (0..train.len()).collect();
        let mut rng = params.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        for epoch in 0..params.epochs {
            // Fisher-Yates with xorshift: deterministic, no dependency for one shuffle.
            for i in (1..order.len()).rev() {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                order.swap(i, (rng % (i as u64 + 1)) as usize);
            }
            let lr = params.learning_rate / (1.0 + epoch as f32);
            for &k in &order {
                let (f, y) = &train[k];
                let p = sigmoid(model.bias + model.dot(f));
                let g = (p - if *y { 1.0 } else { 0.0 }) * if *y { w_pos } else { w_neg };
                let scale = if f.is_empty() { 0.0 } else { 1.0 / (f.len() as f32).sqrt() };
                model.bias -= lr * g;
                for &i in f {
                    let w = &mut model.weights[i as usize];
                    *w -= lr * (g * scale + params.l2 * *w);
                }
            }
        }
        let correct = test.iter().filter(|(f, y)| (sigmoid(model.bias + model.dot(f)) >= 0.5) == *y).count();
        model.info.train_positives = positives as u64;
        model.info.train_negatives = negatives as u64;
        model.info.heldout_positives = test.iter().filter(|(_, y)| *y).count() as u64;
        model.info.heldout_negatives = test.len() as u64 - model.info.heldout_positives;
        model.info.heldout_accuracy = if test.is_empty() { f64::NAN } else { correct as f64 / test.len() as f64 };
        Ok(model)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec(&self.info).map_err(|e| Error::json(path, e))?;
        let mut bytes = Vec::with_capacity(16 + json.len() + 4 * (self.weights.len() + 1));
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&(json.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&json);
        bytes.extend_from_slice(&self.bias.to_le_bytes());
        for w in &self.weights {
            bytes.extend_from_slice(&w.to_le_bytes());
        }
        dsllm_core::atomic::write_file(path, &bytes)
    }

    pub fn load(path: &Path) -> Result<QualityModel> {
        let bytes = std::fs::read(path).at(path, "read quality model")?;
        let bad = |what: &str| Error::input(path, None, format!("not a ds-filter quality model: {what}"));
        if bytes.len() < 10 || &bytes[..6] != MAGIC {
            return Err(bad("missing DSQM1 header"));
        }
        let n = u32::from_le_bytes(bytes[6..10].try_into().expect("4 bytes")) as usize;
        let json = bytes.get(10..10 + n).ok_or_else(|| bad("truncated header"))?;
        let info: ModelInfo = serde_json::from_slice(json).map_err(|e| Error::json(path, e))?;
        let rest = &bytes[10 + n..];
        let expected = 4 * ((1usize << info.bits) + 1);
        if info.bits > 26 || rest.len() != expected {
            return Err(bad(&format!("{} bytes of weights, expected {expected}", rest.len())));
        }
        let mut floats = rest.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")));
        let bias = floats.next().expect("length checked");
        Ok(QualityModel { info, bias, weights: floats.collect() })
    }
}

impl ModelInfo {
    fn empty(params: &TrainParams, sources: Vec<String>) -> Self {
        ModelInfo {
            format: 1,
            bits: params.bits,
            params: params.clone(),
            train_positives: 0,
            train_negatives: 0,
            heldout_positives: 0,
            heldout_negatives: 0,
            heldout_accuracy: 0.0,
            sources,
        }
    }
}

/// Documents of a training file: Parquet (its `text` column), JSON lines (`text` field) or
/// plain text (blocks between blank lines, cut at line ends into pieces of about
/// `max_chars`), each optionally gzipped.
pub fn read_training_texts(path: &Path, max_chars: usize) -> Result<Vec<String>> {
    let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    if name.ends_with(".parquet") {
        let mut texts = Vec::new();
        dsllm_core::parquet_io::visit_documents(path, |_, text, _, _| {
            texts.push(text.to_string());
            Ok(())
        })?;
        return Ok(texts);
    }
    let file = std::fs::File::open(path).at(path, "open")?;
    let reader: Box<dyn Read> =
        if name.ends_with(".gz") { Box::new(flate2::read::MultiGzDecoder::new(file)) } else { Box::new(file) };
    let reader = BufReader::new(reader);
    let base = name.trim_end_matches(".gz");
    let mut texts = Vec::new();
    if base.ends_with(".jsonl") || base.ends_with(".json") {
        for (i, line) in reader.lines().enumerate() {
            let line = line.at(path, "read")?;
            if line.trim().is_empty() {
                continue;
            }
            let value: serde_json::Value = serde_json::from_str(&line)
                .map_err(|e| Error::input(path, Some(dsllm_core::error::Location::Row(i as u64)), e.to_string()))?;
            if let Some(t) = value.get("text").and_then(|t| t.as_str()) {
                texts.push(t.to_string());
            }
        }
        return Ok(texts);
    }
    let mut block = String::new();
    for line in reader.lines() {
        let line = line.at(path, "read")?;
        if line.trim().is_empty() || block.len() + line.len() > max_chars {
            if !block.trim().is_empty() {
                texts.push(std::mem::take(&mut block));
            }
            block.clear();
        }
        if !line.trim().is_empty() {
            if !block.is_empty() {
                block.push('\n');
            }
            block.push_str(line.trim_end());
        }
    }
    if !block.trim().is_empty() {
        texts.push(block);
    }
    Ok(texts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus() -> Vec<(String, bool)> {
        let good = ["the river carried the old boat to the village", "she wrote a careful report about the harvest and the weather",
            "in the spring the students planted trees along the road", "the museum opened a new exhibition of maps and letters"];
        let bad = ["buy cheap pills online | best casino bonus >>", "click here free shipping $9.99 | deal | sale",
            "home | about | contact | login | register", "cheap loans >> best offer >> buy now $$$"];
        (0..200).map(|i| if i % 2 == 0 { (good[i / 2 % 4].to_string(), true) } else { (bad[i / 2 % 4].to_string(), false) }).collect()
    }

    #[test]
    fn separates_prose_from_spam_and_round_trips() {
        let params = TrainParams { bits: 12, ..TrainParams::default() };
        let model = QualityModel::train(&corpus(), &params, vec!["test".into()]).unwrap();
        assert!(model.info.heldout_accuracy > 0.95, "{:?}", model.info);
        let good = model.score("the old village held a careful exhibition about the river");
        let bad = model.score("best cheap casino | click here >> free bonus $5");
        assert!(good > 0.5 && bad < 0.5, "{good} {bad}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.bin");
        model.save(&path).unwrap();
        let loaded = QualityModel::load(&path).unwrap();
        assert_eq!(loaded.score("the river"), model.score("the river"));
        std::fs::write(&path, b"nonsense").unwrap();
        assert!(QualityModel::load(&path).err().expect("a missing model file is an error").to_string().contains("m.bin"));
    }

    #[test]
    fn one_class_is_refused() {
        let docs = vec![("a b c".to_string(), true); 20];
        assert!(QualityModel::train(&docs, &TrainParams::default(), vec![]).is_err());
    }

    #[test]
    fn text_files_split_into_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        std::fs::write(&path, "one\ntwo\n\nthree\n").unwrap();
        assert_eq!(read_training_texts(&path, 1000).unwrap(), vec!["one\ntwo", "three"]);
        let path = dir.path().join("b.jsonl");
        std::fs::write(&path, "{\"text\": \"x\"}\n{\"text\": \"y\"}\n").unwrap();
        assert_eq!(read_training_texts(&path, 1000).unwrap(), vec!["x", "y"]);
    }
}
