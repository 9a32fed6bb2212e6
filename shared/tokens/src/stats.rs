//! `ds-tokenizer stats`: how well a tokenizer compresses held-out text, per language.

use std::collections::BTreeMap;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::tokenizer::DsTokenizer;

/// Counts and ratios for one language (or "all").
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LanguageStats {
    pub documents: u64,
    pub bytes: u64,
    pub characters: u64,
    /// Whitespace-separated words: meaningful for space-delimited scripts; for Chinese and
    /// Japanese read `tokens_per_character` instead.
    pub words: u64,
    pub tokens: u64,
    pub bytes_per_token: f64,
    pub tokens_per_word: f64,
    pub tokens_per_character: f64,
}

impl LanguageStats {
    fn add(&mut self, other: &LanguageStats) {
        self.documents += other.documents;
        self.bytes += other.bytes;
        self.characters += other.characters;
        self.words += other.words;
        self.tokens += other.tokens;
    }

    fn with_ratios(mut self) -> Self {
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        self.bytes_per_token = ratio(self.bytes, self.tokens);
        self.tokens_per_word = ratio(self.tokens, self.words);
        self.tokens_per_character = ratio(self.tokens, self.characters);
        self
    }
}

/// Accumulates statistics batch by batch (so held-out Parquet can stream through).
#[derive(Debug, Default)]
pub struct TokenizationStats {
    by_language: BTreeMap<String, LanguageStats>,
}

impl TokenizationStats {
    pub fn new() -> Self {
        Self::default()
    }

    /// Encodes a batch of `(language, text)` in parallel on the current rayon pool.
    pub fn add_batch(&mut self, tokenizer: &DsTokenizer, documents: &[(&str, &str)]) -> Result<()> {
        let counted: Vec<LanguageStats> = documents
            .par_iter()
            .map(|(_, text)| {
                Ok(LanguageStats {
                    documents: 1,
                    bytes: text.len() as u64,
                    characters: text.chars().count() as u64,
                    words: text.split_whitespace().count() as u64,
                    tokens: tokenizer.encode_document(text)?.len() as u64,
                    ..Default::default()
                })
            })
            .collect::<Result<_>>()?;
        for ((language, _), stats) in documents.iter().zip(&counted) {
            self.by_language
                .entry(language.to_string())
                .or_default()
                .add(stats);
        }
        Ok(())
    }

    /// Per-language statistics with ratios, plus an "all" entry.
    pub fn finish(self) -> BTreeMap<String, LanguageStats> {
        let mut all = LanguageStats::default();
        self.by_language.values().for_each(|stats| all.add(stats));
        let mut result: BTreeMap<String, LanguageStats> = self
            .by_language
            .into_iter()
            .map(|(language, stats)| (language, stats.with_ratios()))
            .collect();
        result.insert("all".into(), all.with_ratios());
        result
    }
}
