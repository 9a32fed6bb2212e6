use super::*;
use crate::reader::TokenShards;
use crate::shard::restore_from_zstd;
use crate::test_support::{small_tokenizer, test_documents};

/// (id, text, repeat) documents: real paragraphs with some repeats, plus edge cases.
fn documents() -> Vec<(String, String, u32)> {
    let mut documents: Vec<(String, String, u32)> = test_documents()
        .into_iter()
        .enumerate()
        .map(|(i, text)| (format!("doc-{i}"), text, 1 + (i % 5 == 0) as u32 * 2))
        .collect();
    documents.push(("dropped".into(), "the remix dropped this one".into(), 0));
    documents.push(("empty".into(), String::new(), 1));
    documents.push((
        "injection".into(),
        "text <｜end▁of▁sentence｜> with a fake EOS".into(),
        1,
    ));
    documents.push(("digits".into(), "3.14159 2,718\n\n\n".into(), 2));
    documents
}

fn small_config(threads: usize) -> PackConfig {
    PackConfig {
        sequence_length: 64,
        validation_fraction: 0.1,
        seed: 42,
        sequences_per_shard: 50,
        shuffle_buffer_tokens: 20_000,
        encode_batch_bytes: 30_000,
        threads,
        zstd_level: None,
    }
}

fn pack(output: &Path, config: PackConfig) -> PackSummary {
    let documents = documents();
    pack_documents(
        small_tokenizer(),
        output,
        config,
        documents
            .iter()
            .map(|(id, text, repeat)| (id.as_str(), text.as_str(), *repeat)),
    )
    .unwrap()
}

/// Every token of a split, in file order.
fn split_tokens(dir: &Path, split: &str) -> Vec<u32> {
    let shards = TokenShards::open(dir, split).unwrap();
    shards.verify_checksums().unwrap();
    (0..shards.sequence_count())
        .flat_map(|i| shards.sequence(i))
        .collect()
}

#[test]
fn documents_round_trip_through_shards() {
    let dir = tempfile::tempdir().unwrap();
    let summary = pack(dir.path(), small_config(2));
    let tokenizer = small_tokenizer();
    let (eos, pad) = (tokenizer.eos_id(), tokenizer.pad_id());

    let mut expected: Vec<String> = Vec::new();
    let mut expected_val: Vec<String> = Vec::new();
    for (id, text, repeat) in documents() {
        if repeat == 0 || text.is_empty() {
            continue;
        }
        if is_validation(&id, 0.1) {
            expected_val.push(text);
        } else {
            expected.extend(std::iter::repeat_n(text, repeat as usize));
        }
    }
    for (split, mut expected) in [(TRAIN_SPLIT, expected), (VALIDATION_SPLIT, expected_val)] {
        let index = &summary.index.splits[split];
        let mut tokens = split_tokens(dir.path(), split);
        // Index counts add up: shards → split, and tokens = documents + EOS + padding.
        assert_eq!(tokens.len() as u64, index.tokens);
        assert_eq!(
            index.shards.iter().map(|s| s.tokens).sum::<u64>(),
            index.tokens
        );
        assert_eq!(index.document_copies, expected.len() as u64);
        assert!(index.pad_tokens < 64);
        tokens.truncate(tokens.len() - index.pad_tokens as usize);
        assert!(
            tokens.iter().all(|&t| t != pad),
            "padding only at the very end"
        );
        assert_eq!(tokens.last(), Some(&eos));
        let mut decoded: Vec<String> = tokens[..tokens.len() - 1]
            .split(|&t| t == eos)
            .map(|document| tokenizer.decode(document).unwrap())
            .collect();
        assert_eq!(
            decoded.len(),
            expected.len(),
            "{split}: one EOS per document copy"
        );
        decoded.sort();
        expected.sort();
        assert_eq!(decoded, expected, "{split}: every document comes back");
    }
    assert_eq!(summary.skipped_repeat_zero, 1);
    assert_eq!(summary.skipped_empty, 1);
    assert!(
        summary.index.splits[TRAIN_SPLIT].shards.len() > 1,
        "the test spans several shards"
    );
}

#[test]
fn output_is_identical_whatever_the_thread_count() {
    let one = tempfile::tempdir().unwrap();
    let two = tempfile::tempdir().unwrap();
    pack(one.path(), small_config(1));
    pack(two.path(), small_config(2));
    let files = |dir: &Path| {
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        for split in ["", TRAIN_SPLIT, VALIDATION_SPLIT] {
            for entry in std::fs::read_dir(dir.join(split)).unwrap() {
                let path = entry.unwrap().path();
                if path.is_file() {
                    files.push((
                        path.strip_prefix(dir).unwrap().display().to_string(),
                        std::fs::read(&path).unwrap(),
                    ));
                }
            }
        }
        files.sort();
        files
    };
    let first = files(one.path());
    assert!(first.len() > 3);
    assert!(
        first == files(two.path()),
        "1 and 2 threads wrote different files"
    );
}

#[test]
fn seed_changes_the_order_not_the_content() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    pack(a.path(), small_config(2));
    pack(
        b.path(),
        PackConfig {
            seed: 7,
            ..small_config(2)
        },
    );
    let (mut first, mut second) = (
        split_tokens(a.path(), TRAIN_SPLIT),
        split_tokens(b.path(), TRAIN_SPLIT),
    );
    assert_ne!(first, second);
    first.sort();
    second.sort();
    assert_eq!(first, second);
}

#[test]
fn zstd_copies_restore_missing_shards() {
    let dir = tempfile::tempdir().unwrap();
    let summary = pack(
        dir.path(),
        PackConfig {
            zstd_level: Some(3),
            ..small_config(2)
        },
    );
    let first = &summary.index.splits[TRAIN_SPLIT].shards[0];
    let copy = first.zstd.as_ref().expect("zstd copy listed");
    assert!(copy.bytes < first.bytes);
    let original = std::fs::read(dir.path().join(&first.path)).unwrap();
    std::fs::remove_file(dir.path().join(&first.path)).unwrap();
    assert_eq!(restore_from_zstd(dir.path()).unwrap(), 1);
    assert_eq!(
        std::fs::read(dir.path().join(&first.path)).unwrap(),
        original
    );
}

#[test]
fn validation_split_takes_about_its_fraction() {
    let in_validation = (0..100_000)
        .filter(|i| is_validation(&format!("id-{i}"), 0.01))
        .count();
    assert!((800..1200).contains(&in_validation), "{in_validation}");
    assert!(!is_validation("any", 0.0));
    assert!(is_validation("any", 1.0));
}
