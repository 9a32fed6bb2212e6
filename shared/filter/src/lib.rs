//! Quality filtering, the DeepSeek LLM paper's filtering stage (§2.1): heuristic rules from
//! published pipelines and a small trained quality model, bilingual English/Chinese.
//!
//! - [`config`]: every threshold, TOML, defaults from Gopher, C4 and FineWeb.
//! - [`signals`]: one document's signals in one pass (words, lines, paragraphs, n-grams).
//! - [`rules`]: the rules in order; a document's `reject_reason` is the first that fails.
//! - [`url`]: rejection by the URL's domain or words (the user's blocklists).
//! - [`lang`]: language and script identification (whatlang).
//! - [`text`]: character classes (CJK, punctuation, terminal punctuation).
//! - [`quality`]: the hashed n-gram logistic-regression quality model, trained and scored here.
//! - [`pipeline`]: the stage: streaming Parquet in, kept/rejected Parquet out, manifest.
//! - [`report`]: per-rule and per-language counts.
//!
//! Text without spaces (Chinese, Japanese) is handled by counting each CJK character as a word,
//! using Chinese stop words and terminal punctuation, and skipping the mean-word-length rule.

pub mod config;
pub mod lang;
pub mod pipeline;
pub mod quality;
pub mod report;
pub mod rules;
pub mod signals;
pub mod text;
pub mod url;

pub use config::FilterConfig;
pub use pipeline::FilterJob;
pub use signals::{Analyzer, Signals};
