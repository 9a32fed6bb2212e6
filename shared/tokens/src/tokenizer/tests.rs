use super::*;
use crate::test_support::{real_text, small_tokenizer, synthetic_corpus};
use proptest::prelude::*;
use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};

/// The pieces the pre-tokenizer cuts `text` into, as slices of `text`.
fn pre_tokenize(text: &str) -> Vec<String> {
    let mut pre_tokenized = PreTokenizedString::from(text);
    deepseek_pre_tokenizer()
        .pre_tokenize(&mut pre_tokenized)
        .unwrap();
    pre_tokenized
        .get_splits(OffsetReferential::Original, OffsetType::Byte)
        .into_iter()
        .map(|(_, (start, end), _)| text[start..end].to_string())
        .collect()
}

#[test]
fn pre_tokenizer_isolates_newlines_digits_cjk_and_punctuation() {
    assert_eq!(
        pre_tokenize("Hello, world!\n\n2024年中国abc def  x"),
        [
            "Hello",
            ",",
            " world",
            "!",
            "\n\n",
            "2",
            "0",
            "2",
            "4",
            "年中国",
            "abc",
            " def",
            "  ",
            "x"
        ]
    );
    assert_eq!(pre_tokenize("カーabc"), ["カー", "abc"]);
}

/// Chars the test is sure belong to CJK scripts (core blocks only).
fn is_cjk(c: char) -> bool {
    matches!(c as u32, 0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x3041..=0x3096 | 0x30A1..=0x30FA | 0xAC00..=0xD7A3)
}

fn is_latin_letter(c: char) -> bool {
    c.is_ascii_alphabetic() || (matches!(c as u32, 0xC0..=0x24F) && c.is_alphabetic())
}

/// Checks the paper's pre-tokenization promises on the tokens of `text`:
/// decode(encode(x)) == x, no token spans a newline, every digit is its own token, and
/// no token mixes CJK with Latin.
fn check_token_invariants(tokenizer: &DsTokenizer, text: &str) -> Result<(), String> {
    let ids = tokenizer.encode_document(text).map_err(|e| e.to_string())?;
    let decoded = tokenizer.decode(&ids).map_err(|e| e.to_string())?;
    if decoded != text {
        return Err(format!("decode(encode(x)) = {decoded:?} != {text:?}"));
    }
    let token_bytes: Vec<Vec<u8>> = ids
        .iter()
        .map(|&id| tokenizer.token_bytes(id).expect("known id"))
        .collect();
    if token_bytes.concat() != text.as_bytes() {
        return Err("token bytes do not concatenate to the text".into());
    }
    // For each token, the chars it overlaps (a token may hold part of a UTF-8 char).
    let chars: Vec<(usize, usize, char)> = text
        .char_indices()
        .map(|(i, c)| (i, i + c.len_utf8(), c))
        .collect();
    let (mut start, mut first_char) = (0, 0);
    for bytes in &token_bytes {
        let end = start + bytes.len();
        while chars[first_char].1 <= start {
            first_char += 1;
        }
        let overlapped: Vec<&(usize, usize, char)> = chars[first_char..]
            .iter()
            .take_while(|(s, _, _)| *s < end)
            .collect();
        let token_text = String::from_utf8_lossy(bytes);
        let has = |predicate: fn(char) -> bool| overlapped.iter().any(|(_, _, c)| predicate(*c));
        if has(|c| c == '\n' || c == '\r')
            && !overlapped.iter().all(|(_, _, c)| *c == '\n' || *c == '\r')
        {
            return Err(format!("token {token_text:?} spans a newline in {text:?}"));
        }
        for (char_start, char_end, c) in &overlapped {
            if c.is_numeric() && (start < *char_start || end > *char_end) {
                return Err(format!(
                    "digit {c:?} shares token {token_text:?} in {text:?}"
                ));
            }
        }
        if has(is_cjk) && has(is_latin_letter) {
            return Err(format!(
                "token {token_text:?} mixes CJK and Latin in {text:?}"
            ));
        }
        start = end;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn invariants_hold_on_random_unicode(text in any::<String>()) {
        check_token_invariants(small_tokenizer(), &text).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn invariants_hold_on_mixed_scripts(text in "[a-zA-Zé0-9 \n\r\t,.!?'\"()中国人的一是了年日本語ーカタかな한국어٣१]{0,80}") {
        check_token_invariants(small_tokenizer(), &text).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn invariants_hold_on_real_text_windows(start in 0usize..1_000_000, length in 1usize..2_000, which in 0usize..3) {
        if let Some(real) = real_text() {
            let text = [&real.english, &real.chinese, &real.wiki][which];
            let mut from = start % text.len();
            while !text.is_char_boundary(from) { from -= 1; }
            let mut to = (from + length).min(text.len());
            while !text.is_char_boundary(to) { to -= 1; }
            check_token_invariants(small_tokenizer(), &text[from..to]).map_err(TestCaseError::fail)?;
        }
    }
}

#[test]
fn invariants_hold_on_whole_real_texts() {
    let Some(real) = real_text() else { return };
    for text in [&real.english, &real.chinese, &real.wiki] {
        // Paragraph by paragraph keeps failure messages readable.
        for paragraph in text.split("\n\n") {
            check_token_invariants(small_tokenizer(), paragraph).unwrap();
        }
    }
}

#[test]
fn special_tokens_follow_learned_tokens_and_vocab_pads() {
    let config = small_tokenizer().config();
    assert_eq!(config.special_tokens.len(), 15);
    for (offset, token) in config.special_tokens.iter().enumerate() {
        assert_eq!(token.id, config.learned_tokens + offset as u32);
    }
    assert_eq!(config.vocab_size, config.learned_tokens + 15);
    assert_eq!(config.model_vocab_size % 128, 0);
    assert!(config.model_vocab_size >= config.vocab_size);
    if real_text().is_some() {
        assert_eq!(
            config.learned_tokens, 2_000,
            "the real text holds 2,000 tokens' worth of merges"
        );
    }
    let ids = small_tokenizer()
        .encode("<｜begin▁of▁sentence｜>hi")
        .unwrap();
    assert_eq!(ids[0], config.bos_id);
    // Corpus text cannot inject control tokens.
    let document_ids = small_tokenizer()
        .encode_document("<｜end▁of▁sentence｜>")
        .unwrap();
    assert!(!document_ids.contains(&config.eos_id));
}

#[test]
fn paper_default_vocabulary_sizes() {
    let config = TrainConfig::default();
    assert_eq!(
        (config.learned_tokens, config.model_vocab_size),
        (100_000, Some(102_400))
    );
    let too_small = TrainConfig {
        learned_tokens: 300,
        model_vocab_size: Some(200),
        ..TrainConfig::default()
    };
    let texts = vec!["tiny corpus".to_string()];
    assert!(matches!(
        train_tokenizer(&texts, &too_small, SampleCounts::default()),
        Err(TokensError::Config(_))
    ));
}

#[test]
fn training_is_deterministic() {
    let texts: Vec<String> = synthetic_corpus();
    let config = TrainConfig {
        learned_tokens: 400,
        model_vocab_size: None,
        ..TrainConfig::default()
    };
    let (first, _) = train_tokenizer(&texts, &config, SampleCounts::default()).unwrap();
    let one_thread = TrainConfig {
        threads: 1,
        ..config
    };
    let (second, _) = train_tokenizer(&texts, &one_thread, SampleCounts::default()).unwrap();
    assert_eq!(
        first.to_string(false).unwrap(),
        second.to_string(false).unwrap()
    );
}

#[test]
fn byte_budget_sample_is_order_independent_and_within_budget() {
    let documents: Vec<(String, String)> = (0..500)
        .map(|i| (format!("doc-{i}"), "x".repeat(1 + (i * 37) % 200)))
        .collect();
    let sample_in = |order: &mut dyn Iterator<Item = &(String, String)>| {
        let mut sample = ByteBudgetSample::new(10_000, 7);
        order.for_each(|(id, text)| sample.offer(id, text));
        let counts = sample.counts();
        (counts, sample.into_texts())
    };
    let (counts, forward) = sample_in(&mut documents.iter());
    let (_, backward) = sample_in(&mut documents.iter().rev());
    assert_eq!(forward, backward);
    assert!(
        counts.sampled_bytes <= 10_000 && counts.sampled_bytes > 9_000,
        "{counts:?}"
    );
    assert_eq!(counts.seen_documents, 500);
    // Everything fits: everything is kept.
    let mut all = ByteBudgetSample::new(u64::MAX, 0);
    documents.iter().for_each(|(id, text)| all.offer(id, text));
    assert_eq!(all.counts().sampled_documents, 500);
}

#[test]
fn saved_tokenizer_loads_with_matching_hash() {
    let dir = tempfile::tempdir().unwrap();
    let trained = small_tokenizer();
    save_tokenizer(dir.path(), trained.inner(), trained.config()).unwrap();
    let loaded = DsTokenizer::load(dir.path()).unwrap();
    assert_eq!(loaded.hash(), trained.hash());
    assert_eq!(
        loaded.encode("Hello 世界 123").unwrap(),
        trained.encode("Hello 世界 123").unwrap()
    );
    for name in [
        TOKENIZER_FILE,
        HF_TOKENIZER_CONFIG_FILE,
        DSLLM_TOKENIZER_CONFIG_FILE,
    ] {
        assert!(dir.path().join(name).is_file(), "{name}");
    }
    // A tokenizer.json edited behind the config's back is refused, naming the file.
    let path = dir.path().join(TOKENIZER_FILE);
    let edited = std::fs::read_to_string(&path)
        .unwrap()
        .replacen("\"Hello\"", "\"Hallo\"", 1)
        + " ";
    std::fs::write(&path, edited).unwrap();
    let error = DsTokenizer::load(dir.path())
        .err()
        .expect("hash mismatch")
        .to_string();
    assert!(
        error.contains(DSLLM_TOKENIZER_CONFIG_FILE) && error.contains("hash"),
        "{error}"
    );
}

#[test]
fn byte_level_char_map_inverts_gpt2_alphabet() {
    let alphabet = ByteLevel::alphabet();
    let mut bytes: Vec<u8> = alphabet
        .iter()
        .map(|&c| byte_of_byte_level_char(c).unwrap())
        .collect();
    bytes.sort();
    assert_eq!(bytes, (0..=255).collect::<Vec<u8>>());
    assert_eq!(byte_of_byte_level_char('Ġ'), Some(b' '));
    assert_eq!(byte_of_byte_level_char('Ċ'), Some(b'\n'));
}

#[test]
fn stats_report_compression_per_language() {
    let tokenizer = small_tokenizer();
    let mut stats = crate::stats::TokenizationStats::new();
    stats
        .add_batch(
            tokenizer,
            &[
                ("en", "The king is dead, long live the king."),
                ("zh", "红楼梦是中国古典小说。"),
            ],
        )
        .unwrap();
    let report = stats.finish();
    assert!(report["en"].bytes_per_token > 1.0 && report["en"].tokens_per_word >= 1.0);
    assert!(report["zh"].tokens_per_character > 0.0);
    assert_eq!(report["all"].documents, 2);
}

/// Runs tests/python_parity.py on a fixture from this tokenizer when Python `tokenizers`
/// is installed (CI installs it); skips with a message otherwise.
#[test]
fn python_tokenizers_gives_the_same_ids() {
    let python_has_tokenizers = std::process::Command::new("python3")
        .args(["-c", "import tokenizers"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !python_has_tokenizers {
        crate::test_support::skip_message(
            "skipping Python parity: python3 with the `tokenizers` package is not available",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = small_tokenizer();
    save_tokenizer(dir.path(), tokenizer.inner(), tokenizer.config()).unwrap();
    let mut texts: Vec<String> = PARITY_TEST_STRINGS.iter().map(|s| s.to_string()).collect();
    if let Some(real) = real_text() {
        for text in [&real.english, &real.chinese, &real.wiki] {
            texts.extend(
                text.lines()
                    .filter(|l| !l.trim().is_empty())
                    .take(200)
                    .map(str::to_string),
            );
        }
    }
    write_parity_cases(
        &dir.path().join("parity_cases.json"),
        &DsTokenizer::load(dir.path()).unwrap(),
        &texts,
    )
    .unwrap();
    let script = std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())).join("tests/python_parity.py");
    let output = std::process::Command::new("python3")
        .arg(script)
        .arg("--fixture")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "Python parity failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
