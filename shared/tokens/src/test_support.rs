//! Shared by the unit tests: the real text in ../shared/data/text and one small tokenizer
//! trained once per test run.

use std::io::Read;
use std::path::PathBuf;
use std::sync::OnceLock;

use crate::tokenizer::{train_from_documents, DsTokenizer, TrainConfig};

/// English, Chinese and multilingual-wiki text, each cut to a test-sized prefix.
pub struct RealText {
    pub english: String,
    pub chinese: String,
    pub wiki: String,
}

/// `../shared/data/text` beside the repository, seen from this crate (`DSLLM_TEXT_DIR` overrides).
fn text_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("DSLLM_TEXT_DIR") {
        return dir.into();
    }
    // Canonicalize first: the crate may be built through a symlink.
    let dir = std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()));
    let manifest = std::fs::canonicalize(&dir).unwrap_or(dir);
    manifest.join("../../../shared/data/text")
}

/// Prints past libtest's output capture (which only catches the print macros), so a skip is
/// visible in a plain `cargo test`.
pub fn skip_message(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{message}");
}

/// The real text, or `None` (with a message) when the folder is absent.
pub fn real_text() -> Option<&'static RealText> {
    static TEXT: OnceLock<Option<RealText>> = OnceLock::new();
    TEXT.get_or_init(|| {
        let dir = text_dir();
        if !dir.is_dir() {
            skip_message(&format!(
                "skipping real-text checks: {} is absent",
                dir.display()
            ));
            return None;
        }
        let read_gz = |name: &str| {
            let mut text = String::new();
            let file = std::fs::File::open(dir.join(name)).expect(name);
            flate2::read::GzDecoder::new(file)
                .read_to_string(&mut text)
                .expect(name);
            text
        };
        let limit = 400_000;
        Some(RealText {
            english: prefix(
                &std::fs::read_to_string(dir.join("tinyshakespeare.txt"))
                    .expect("tinyshakespeare.txt"),
                limit,
            ),
            chinese: prefix(&read_gz("zh_hongloumeng.txt.gz"), limit),
            wiki: prefix(&read_gz("wiki_sample.txt.gz"), limit),
        })
    })
    .as_ref()
}

fn prefix(text: &str, max_bytes: usize) -> String {
    let mut end = max_bytes.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// Text to train on when the real text is absent: mixed scripts, digits, punctuation.
pub fn synthetic_corpus() -> Vec<String> {
    let lines = [
        "The quick brown fox jumps over the lazy dog in 2024, twice.",
        "红楼梦是中国古典小说的巅峰之作，作者曹雪芹。",
        "日本語のテキストとカタカナ、ひらがなも少し。",
        "한국어 문장도 조금 있습니다.",
        "fn main() {\n    println!(\"{}\", 42 + 17);\n}",
        "Prices rose 3.5% to $1,299.99 on 2023-11-05; see https://example.com/a?b=c.",
    ];
    (0..400)
        .map(|i| {
            format!(
                "{} {} {}\n",
                lines[i % lines.len()],
                i,
                lines[(i * 7 + 3) % lines.len()]
            )
        })
        .collect()
}

/// Documents for packing tests: paragraphs of the real text, or the synthetic corpus.
pub fn test_documents() -> Vec<String> {
    match real_text() {
        Some(text) => [&text.english, &text.chinese, &text.wiki]
            .iter()
            .flat_map(|t| {
                prefix(t, 60_000)
                    .split("\n\n")
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .filter(|d| !d.trim().is_empty())
            .collect(),
        None => synthetic_corpus(),
    }
}

/// A 2,000-token tokenizer trained once on the real text (or the synthetic corpus).
pub fn small_tokenizer() -> &'static DsTokenizer {
    static TOKENIZER: OnceLock<DsTokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let mut texts = synthetic_corpus();
        if let Some(real) = real_text() {
            texts.extend(
                [&real.english, &real.chinese, &real.wiki]
                    .iter()
                    .flat_map(|t| t.lines().map(str::to_string)),
            );
        }
        let config = TrainConfig {
            learned_tokens: 2_000,
            model_vocab_size: None,
            sample_bytes: 2 << 20,
            ..TrainConfig::default()
        };
        let ids: Vec<String> = (0..texts.len()).map(|i| i.to_string()).collect();
        let documents = ids
            .iter()
            .zip(&texts)
            .map(|(id, text)| (id.as_str(), text.as_str()));
        let (tokenizer, config) = train_from_documents(documents, &config).expect("training");
        DsTokenizer::from_trained(tokenizer, config).expect("wrapping")
    })
}
