//! Thresholds of every rule, read from TOML. Each default is the published pipeline's value:
//! Gopher (Rae et al. 2021, Table A1 and §A.1.1), C4 (Raffel et al. 2020, §2.2 and its
//! reference code) and FineWeb (Penedo et al. 2024, as in datatrove). Only the CJK settings are
//! this project's: they adapt word-based rules to text written without spaces.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// All rule families. A family with `enabled = false` computes no rule of its own (its signals
/// are still computed and written, so a rerun can choose thresholds from the columns).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct FilterConfig {
    pub url: UrlConfig,
    pub language: LanguageConfig,
    pub gopher_quality: GopherQualityConfig,
    pub gopher_repetition: GopherRepetitionConfig,
    pub c4: C4Config,
    pub fineweb: FineWebConfig,
    pub quality_model: QualityModelConfig,
}

impl FilterConfig {
    /// Reads a TOML file; missing keys take their defaults, unknown keys are errors.
    pub fn from_toml_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn from_toml(text: &str) -> Result<Self, String> {
        let config: FilterConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("the config serializes")
    }

    pub fn validate(&self) -> Result<(), String> {
        let r = &self.gopher_repetition;
        if r.top_ngram_char_frac.len() != 3 {
            return Err("gopher_repetition.top_ngram_char_frac needs 3 values (n = 2, 3, 4)".into());
        }
        if r.dup_ngram_char_frac.len() != 6 {
            return Err("gopher_repetition.dup_ngram_char_frac needs 6 values (n = 5 to 10)".into());
        }
        if self.gopher_quality.stop_words_en.len() + self.gopher_quality.stop_words_zh.len() > 64 {
            return Err("at most 64 stop words in all (stop_words_en + stop_words_zh)".into());
        }
        if let Some(t) = self.quality_model.min_score {
            if !(0.0..=1.0).contains(&t) {
                return Err("quality_model.min_score must be between 0 and 1".into());
            }
        }
        Ok(())
    }
}

/// Language and script identification (always computed); optionally keep only some languages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LanguageConfig {
    /// ISO 639-1 codes to keep (the paper's corpus: `["en", "zh"]`); empty keeps every language.
    pub keep: Vec<String>,
    /// Documents whose language confidence is below this are rejected (when `keep` is set).
    pub min_score: f32,
    /// Characters of the text given to the identifier (it converges long before).
    pub sample_chars: usize,
}

impl Default for LanguageConfig {
    fn default() -> Self {
        LanguageConfig { keep: vec![], min_score: 0.0, sample_chars: 400 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GopherQualityConfig {
    pub enabled: bool,
    /// Words (in text without spaces: CJK characters count one word each).
    pub min_words: u32,
    pub max_words: u32,
    pub min_mean_word_length: f32,
    pub max_mean_word_length: f32,
    /// `#` and ellipses per word.
    pub max_symbol_word_ratio: f32,
    pub max_bullet_lines_ratio: f32,
    pub max_ellipsis_lines_ratio: f32,
    /// Share of words holding at least one letter.
    pub min_alpha_words_ratio: f32,
    /// Distinct stop words (English and Chinese lists together).
    pub min_stop_words: u32,
    pub stop_words_en: Vec<String>,
    /// Single characters; Chinese text has no spaces to split words on.
    pub stop_words_zh: Vec<String>,
    /// A document whose letters are at least this share CJK is "without spaces": the mean
    /// word length rule, meaningless on characters, is skipped.
    pub cjk_share: f32,
}

impl Default for GopherQualityConfig {
    fn default() -> Self {
        GopherQualityConfig {
            enabled: true,
            min_words: 50,
            max_words: 100_000,
            min_mean_word_length: 3.0,
            max_mean_word_length: 10.0,
            max_symbol_word_ratio: 0.1,
            max_bullet_lines_ratio: 0.9,
            max_ellipsis_lines_ratio: 0.3,
            min_alpha_words_ratio: 0.8,
            min_stop_words: 2,
            stop_words_en: ["the", "be", "to", "of", "and", "that", "have", "with"].map(String::from).to_vec(),
            stop_words_zh: ["的", "了", "是", "在", "和", "有", "我", "不", "这", "也", "就", "都", "他", "她", "们", "一", "个", "上", "人", "说"]
                .map(String::from)
                .to_vec(),
            cjk_share: 0.5,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GopherRepetitionConfig {
    pub enabled: bool,
    pub dup_line_frac: f32,
    pub dup_para_frac: f32,
    pub dup_line_char_frac: f32,
    pub dup_para_char_frac: f32,
    /// Most frequent 2-, 3-, 4-gram: characters it covers / characters of the text.
    pub top_ngram_char_frac: Vec<f32>,
    /// Characters in duplicated 5- to 10-grams / characters of the text.
    pub dup_ngram_char_frac: Vec<f32>,
    /// In text without spaces an n-gram is n x this many CJK characters (Chinese words
    /// average about two characters).
    pub cjk_chars_per_word: u32,
}

impl Default for GopherRepetitionConfig {
    fn default() -> Self {
        GopherRepetitionConfig {
            enabled: true,
            dup_line_frac: 0.3,
            dup_para_frac: 0.3,
            dup_line_char_frac: 0.2,
            dup_para_char_frac: 0.2,
            top_ngram_char_frac: vec![0.20, 0.18, 0.16],
            dup_ngram_char_frac: vec![0.15, 0.14, 0.13, 0.12, 0.11, 0.10],
            cjk_chars_per_word: 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct C4Config {
    pub enabled: bool,
    /// Drop lines not ending in terminal punctuation (`. ! ? " '`, and `。！？”」` for Chinese).
    pub terminal_punctuation: bool,
    /// Drop lines mentioning javascript.
    pub javascript: bool,
    /// Drop lines with cookie / terms-of-use / privacy-policy phrases.
    pub policy: bool,
    /// Reject documents containing "lorem ipsum".
    pub lorem_ipsum: bool,
    /// Reject documents with a curly bracket in a kept line.
    pub curly_bracket: bool,
    /// Reject documents with fewer sentences in their kept lines.
    pub min_sentences: u32,
    /// Drop lines with fewer words.
    pub min_words_per_line: u32,
    /// Drop lines with a longer word.
    pub max_word_length: u32,
    /// Write the kept documents with C4's dropped lines removed (as C4 and datatrove do).
    pub remove_lines: bool,
}

impl Default for C4Config {
    fn default() -> Self {
        C4Config {
            enabled: true,
            terminal_punctuation: true,
            javascript: true,
            policy: true,
            lorem_ipsum: true,
            curly_bracket: true,
            min_sentences: 5,
            min_words_per_line: 3,
            max_word_length: 1000,
            remove_lines: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FineWebConfig {
    pub enabled: bool,
    /// Reject when fewer lines than this share end in terminal punctuation.
    pub line_punct_thr: f32,
    /// Reject when more lines than this share are short.
    pub short_line_thr: f32,
    /// A line of at most this many characters is short.
    pub short_line_length: u32,
    /// The same for documents without spaces (a CJK character carries about as much as a
    /// short English word, so the English length would call most Chinese lines short).
    pub short_line_length_cjk: u32,
    /// Reject when characters in duplicated lines exceed this share.
    pub char_dup_ratio: f32,
    /// Reject when newlines per word exceed this (lists).
    pub new_line_ratio: f32,
}

impl Default for FineWebConfig {
    fn default() -> Self {
        FineWebConfig {
            enabled: true,
            line_punct_thr: 0.12,
            short_line_thr: 0.67,
            short_line_length: 30,
            short_line_length_cjk: 10,
            char_dup_ratio: 0.01,
            new_line_ratio: 0.3,
        }
    }
}

/// Rejection by URL (`url_blocklist`), tried first: the lists are the user's, none are shipped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct UrlConfig {
    /// Hosts to reject, with their subdomains (`example.com` blocks `a.example.com`).
    pub blocked_domains: Vec<String>,
    /// A file of more: one domain a line, `#` comments, gzip when named `.gz` (e.g. the UT1
    /// blacklists' `adult/domains`, as FineWeb used). Its content is part of the stage's
    /// parameters, so editing it reruns the stage.
    pub blocked_domains_file: Option<std::path::PathBuf>,
    /// Words that reject a URL having one as a whole token (host and path split at every
    /// character that is not a letter or digit).
    pub blocked_words: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct QualityModelConfig {
    /// Reject documents whose model score is below this (needs `--quality-model`); none: the
    /// score is only a column.
    pub min_score: Option<f32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_and_partial_files_fill_in_defaults() {
        let config = FilterConfig::default();
        assert_eq!(FilterConfig::from_toml(&config.to_toml()).unwrap(), config);
        let partial = FilterConfig::from_toml("[gopher_quality]\nmin_words = 20\n[c4]\nenabled = false\n").unwrap();
        assert_eq!(partial.gopher_quality.min_words, 20);
        assert_eq!(partial.gopher_quality.max_words, 100_000);
        assert!(!partial.c4.enabled && partial.fineweb.enabled);
    }

    #[test]
    fn unknown_keys_and_bad_lists_are_refused() {
        assert!(FilterConfig::from_toml("[gopher_quality]\nmin_wrods = 20\n").is_err());
        assert!(FilterConfig::from_toml("[gopher_repetition]\ntop_ngram_char_frac = [0.2]\n").is_err());
        assert!(FilterConfig::from_toml("[quality_model]\nmin_score = 2.0\n").is_err());
    }
}
