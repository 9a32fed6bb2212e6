//! Writes a fixture for tests/python_parity.py: a small tokenizer trained on the real text
//! and the ids Rust gives the parity strings and real lines.
//!
//!     cargo run -p dsllm-tokens --example write_parity_fixture -- OUT_DIR [TEXT_DIR]

use std::io::Read;
use std::path::PathBuf;

use dsllm_tokens::tokenizer::{write_parity_cases, PARITY_TEST_STRINGS};
use dsllm_tokens::{save_tokenizer, train_from_documents, DsTokenizer, TrainConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out: PathBuf = args
        .next()
        .ok_or("usage: write_parity_fixture OUT_DIR [TEXT_DIR]")?
        .into();
    let text_dir: PathBuf = args.next().map(PathBuf::from).unwrap_or_else(|| {
        std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())).join("../../../shared/data/text")
    });

    let mut texts: Vec<String> = PARITY_TEST_STRINGS.iter().map(|s| s.to_string()).collect();
    let mut corpus = Vec::new();
    for name in [
        "tinyshakespeare.txt",
        "zh_hongloumeng.txt.gz",
        "wiki_sample.txt.gz",
    ] {
        let path = text_dir.join(name);
        let Ok(file) = std::fs::File::open(&path) else {
            eprintln!(
                "write_parity_fixture: {} absent, using the parity strings only",
                path.display()
            );
            continue;
        };
        let mut text = String::new();
        if name.ends_with(".gz") {
            flate2::read::GzDecoder::new(file).read_to_string(&mut text)?;
        } else {
            std::io::BufReader::new(file).read_to_string(&mut text)?;
        }
        texts.extend(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .take(300)
                .map(str::to_string),
        );
        corpus.push(text);
    }
    if corpus.is_empty() {
        corpus = texts.clone();
    }

    let config = TrainConfig {
        learned_tokens: 3_000,
        model_vocab_size: None,
        sample_bytes: 4 << 20,
        ..TrainConfig::default()
    };
    let paragraphs: Vec<&str> = corpus.iter().flat_map(|t| t.split("\n\n")).collect();
    let ids: Vec<String> = (0..paragraphs.len()).map(|i| i.to_string()).collect();
    let documents = ids
        .iter()
        .map(String::as_str)
        .zip(paragraphs.iter().copied());
    let (tokenizer, tokenizer_config) = train_from_documents(documents, &config)?;
    save_tokenizer(&out, &tokenizer, &tokenizer_config)?;
    let tokenizer = DsTokenizer::load(&out)?;
    write_parity_cases(&out.join("parity_cases.json"), &tokenizer, &texts)?;
    eprintln!(
        "write_parity_fixture: {} strings, tokenizer in {}",
        texts.len(),
        out.display()
    );
    Ok(())
}
