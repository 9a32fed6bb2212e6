//! Timing half of `make bench-pack` (bench/bench_pack.py runs it and the Python half):
//! BPE training time, then encode + pack throughput on a fixed number of threads.
//!
//!     cargo run --release -p dsllm-tokens --example bench_pack -- DOCS.jsonl OUT_DIR LEARNED_TOKENS THREADS [ROUNDS]
//!
//! DOCS.jsonl holds one {"id": ..., "text": ...} per line. Packing runs ROUNDS times (default
//! 3) and the fastest counts, as on a shared machine the slow rounds measure the neighbours.
//! Prints one JSON line.

use std::io::BufRead;
use std::path::PathBuf;
use std::time::Instant;

use dsllm_tokens::tokenizer::ByteBudgetSample;
use dsllm_tokens::{
    pack_documents, save_tokenizer, train_tokenizer, DsTokenizer, PackConfig, TrainConfig,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (docs_path, out, learned_tokens, threads, rounds) = match args.as_slice() {
        [docs, out, learned, threads] => (docs, out, learned, threads, 3),
        [docs, out, learned, threads, rounds] => (docs, out, learned, threads, rounds.parse()?),
        _ => {
            return Err(
                "usage: bench_pack DOCS.jsonl OUT_DIR LEARNED_TOKENS THREADS [ROUNDS]".into(),
            )
        }
    };
    let out = PathBuf::from(out);
    let threads: usize = threads.parse()?;
    let mut documents: Vec<(String, String)> = Vec::new();
    for line in std::io::BufReader::new(std::fs::File::open(docs_path)?).lines() {
        let value: serde_json::Value = serde_json::from_str(&line?)?;
        documents.push((
            value["id"].as_str().unwrap_or_default().into(),
            value["text"].as_str().unwrap_or_default().into(),
        ));
    }
    let text_bytes: usize = documents.iter().map(|(_, text)| text.len()).sum();

    // Training: everything fits the sample budget, so the trainer sees all documents.
    let config = TrainConfig {
        learned_tokens: learned_tokens.parse()?,
        model_vocab_size: None,
        sample_bytes: u64::MAX,
        ..TrainConfig::default()
    };
    let started = Instant::now();
    let mut sample = ByteBudgetSample::new(config.sample_bytes, config.seed);
    documents
        .iter()
        .for_each(|(id, text)| sample.offer(id, text));
    let counts = sample.counts();
    let (tokenizer, tokenizer_config) = train_tokenizer(&sample.into_texts(), &config, counts)?;
    let train_seconds = started.elapsed().as_secs_f64();
    let tokenizer_dir = out.join("tokenizer");
    save_tokenizer(&tokenizer_dir, &tokenizer, &tokenizer_config)?;
    let tokenizer = DsTokenizer::load(&tokenizer_dir)?;

    let mut pack_seconds = f64::INFINITY;
    let mut summary = None;
    for round in 0..rounds.max(1) {
        let pack_config = PackConfig {
            threads,
            ..PackConfig::default()
        };
        let documents = documents
            .iter()
            .map(|(id, text)| (id.as_str(), text.as_str(), 1));
        let started = Instant::now();
        summary = Some(pack_documents(
            &tokenizer,
            &out.join(format!("tokens-{round}")),
            pack_config,
            documents,
        )?);
        pack_seconds = pack_seconds.min(started.elapsed().as_secs_f64());
    }
    let summary = summary.expect("at least one round");
    let tokens: u64 = summary
        .index
        .splits
        .values()
        .map(|s| s.tokens - s.pad_tokens)
        .sum();

    println!(
        "{}",
        serde_json::json!({
            "documents": documents.len(),
            "text_bytes": text_bytes,
            "learned_tokens": tokenizer_config.learned_tokens,
            "train_seconds": train_seconds,
            "pack_seconds": pack_seconds,
            "pack_mb_per_s": text_bytes as f64 / 1e6 / pack_seconds,
            "tokens": tokens,
            "bytes_per_token": text_bytes as f64 / tokens as f64,
            "threads": threads,
            "tokenizer_dir": tokenizer_dir,
        })
    );
    Ok(())
}
