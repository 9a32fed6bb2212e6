//! Text normalization and shingling, the inputs of both exact and near dedup.
//!
//! Normalization makes copies that differ only in presentation compare equal: Unicode NFKC
//! (full-width forms, ligatures), lowercase, and every run of punctuation, symbols and
//! whitespace folded to one space. Shingles are the hashed n-grams of the normalized tokens:
//! words where the text has spaces, single characters for Chinese and Japanese (which have none),
//! so the same n gives word 5-grams for English and character 5-grams for Chinese.

use unicode_normalization::{is_nfkc_quick, IsNormalized, UnicodeNormalization};
use xxhash_rust::xxh3::xxh3_64;

/// Longest shingle (in tokens) that [`shingle_hashes`] supports.
pub const MAX_SHINGLE_TOKENS: usize = 16;

/// Normalizes `text` into `out` (cleared first): NFKC, lowercase, separators folded to one space,
/// no leading or trailing space.
pub fn normalize_into(text: &str, out: &mut String) {
    normalize_with_tokens(text, out, |_| {});
}

/// [`normalize_into`], calling `on_token` with each token of the result as it is completed: the
/// tokens [`token_hashes`] finds in the normalized text, found in the same pass.
pub fn normalize_with_tokens(text: &str, out: &mut String, mut on_token: impl FnMut(&[u8])) {
    out.clear();
    out.reserve(text.len());
    if text.is_ascii() {
        // ASCII is already NFKC and has no spaceless script: fold bytes, the common case.
        let mut word_start = None;
        for b in text.bytes() {
            if b.is_ascii_alphanumeric() {
                if word_start.is_none() {
                    if !out.is_empty() {
                        out.push(' ');
                    }
                    word_start = Some(out.len());
                }
                out.push(b.to_ascii_lowercase() as char);
            } else if let Some(start) = word_start.take() {
                on_token(&out.as_bytes()[start..]);
            }
        }
        if let Some(start) = word_start {
            on_token(&out.as_bytes()[start..]);
        }
    } else if is_nfkc_quick(text.chars()) == IsNormalized::Yes {
        // Most non-ASCII text is NFKC already; the quick check is exact when it says so.
        fold_chars(text.chars(), out, on_token);
    } else {
        fold_chars(text.nfkc(), out, on_token);
    }
}

fn fold_chars(chars: impl Iterator<Item = char>, out: &mut String, mut on_token: impl FnMut(&[u8])) {
    let mut pending_space = false;
    // Start of the token being built: a run of characters of scripts with spaces.
    let mut run_start = None;
    for c in chars {
        let separator = if c.is_ascii() { !c.is_ascii_alphanumeric() } else { is_separator(c) };
        if separator {
            pending_space = true;
            continue;
        }
        if pending_space && !out.is_empty() {
            if let Some(start) = run_start.take() {
                on_token(&out.as_bytes()[start..]);
            }
            out.push(' ');
        }
        pending_space = false;
        let mut push = |c: char| {
            if is_spaceless_script(c) {
                if let Some(start) = run_start.take() {
                    on_token(&out.as_bytes()[start..]);
                }
                let start = out.len();
                out.push(c);
                on_token(&out.as_bytes()[start..]);
            } else {
                run_start.get_or_insert(out.len());
                out.push(c);
            }
        };
        if c.is_ascii() {
            push(c.to_ascii_lowercase());
        } else {
            c.to_lowercase().for_each(push);
        }
    }
    if let Some(start) = run_start {
        on_token(&out.as_bytes()[start..]);
    }
}

/// Convenience wrapper of [`normalize_into`].
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    normalize_into(text, &mut out);
    out
}

/// Punctuation, symbols and whitespace. Combining marks of other scripts are not separators:
/// they belong to the word they sit in.
fn is_separator(c: char) -> bool {
    if is_spaceless_script(c) || c.is_alphanumeric() {
        return false;
    }
    c.is_whitespace()
        || c < '\u{0300}'
        || ('\u{2000}'..='\u{2BFF}').contains(&c) // general punctuation, arrows, math, box drawing
        || ('\u{3000}'..='\u{303F}').contains(&c) // CJK punctuation
        || ('\u{FE10}'..='\u{FE6F}').contains(&c) // vertical and small forms
        || ('\u{FF00}'..='\u{FF65}').contains(&c) // full-width punctuation NFKC leaves alone
        || ('\u{1F000}'..='\u{1FAFF}').contains(&c) // emoji and pictographs
}

/// Scripts written without spaces between words: each character is one token.
pub fn is_spaceless_script(c: char) -> bool {
    matches!(c,
        '\u{3040}'..='\u{30FF}'       // Hiragana, Katakana
        | '\u{3400}'..='\u{4DBF}'     // CJK extension A
        | '\u{4E00}'..='\u{9FFF}'     // CJK unified ideographs
        | '\u{F900}'..='\u{FAFF}'     // CJK compatibility ideographs
        | '\u{20000}'..='\u{2FFFF}'   // CJK extensions B-F
    )
}

/// The hash of one token.
pub fn token_hash(token: &[u8]) -> u64 {
    xxh3_64(token)
}

/// Hashes of the tokens of normalized text, appended to `out`: space-separated words, except
/// that each character of a spaceless script is a token of its own.
pub fn token_hashes(normalized: &str, out: &mut Vec<u64>) {
    for word in normalized.split(' ').filter(|w| !w.is_empty()) {
        if word.is_ascii() || !word.chars().any(is_spaceless_script) {
            out.push(token_hash(word.as_bytes()));
            continue;
        }
        let mut run_start = None;
        for (i, c) in word.char_indices() {
            if is_spaceless_script(c) {
                if let Some(s) = run_start.take() {
                    out.push(token_hash(word[s..i].as_bytes()));
                }
                out.push(token_hash(&word.as_bytes()[i..i + c.len_utf8()]));
            } else if run_start.is_none() {
                run_start = Some(i);
            }
        }
        if let Some(s) = run_start {
            out.push(token_hash(word[s..].as_bytes()));
        }
    }
}

/// Hashes of the n-token shingles of a token-hash sequence, appended to `out`. A text shorter
/// than n tokens gives one shingle of all its tokens; an empty one gives none.
pub fn shingle_hashes(tokens: &[u64], n: usize, out: &mut Vec<u64>) {
    assert!((1..=MAX_SHINGLE_TOKENS).contains(&n), "shingle size {n} outside 1..={MAX_SHINGLE_TOKENS}");
    if tokens.is_empty() {
        return;
    }
    let width = n.min(tokens.len());
    let mut bytes = [0u8; 8 * MAX_SHINGLE_TOKENS];
    for window in tokens.windows(width) {
        for (i, t) in window.iter().enumerate() {
            bytes[i * 8..i * 8 + 8].copy_from_slice(&t.to_le_bytes());
        }
        out.push(xxh3_64(&bytes[..width * 8]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn one_pass_tokens_equal_the_tokens_of_the_normalized_text(
            text in "([a-zA-Z0-9 ,.!'_-]|[àéÜßİǅﬁＡ-Ｚ０-９，。]|[你好世界中文的一]|[ぁ-ゖァ-ヺ]|[\u{0301}\u{1F600}\t\n])*"
        ) {
            let mut normalized = String::new();
            let mut fused = Vec::new();
            normalize_with_tokens(&text, &mut normalized, |t| fused.push(token_hash(t)));
            prop_assert_eq!(&normalized, &normalize(&text));
            let mut reference = Vec::new();
            token_hashes(&normalized, &mut reference);
            prop_assert_eq!(fused, reference);
        }
    }

    #[test]
    fn presentation_differences_normalize_away() {
        assert_eq!(normalize("  Hello,   WORLD!!\n\tIt's  "), "hello world it s");
        // Full-width letters and punctuation (NFKC), ligature, curly quotes.
        assert_eq!(normalize("ＨＥＬＬＯ，ｗｏｒｌｄ ﬁne “quoted”"), "hello world fine quoted");
        assert_eq!(normalize("Ünïcödé — dash…"), "ünïcödé dash");
        assert_eq!(normalize("!!!"), "");
    }

    #[test]
    fn chinese_keeps_characters_and_drops_punctuation() {
        assert_eq!(normalize("你好，世界。"), "你好 世界");
        let mut tokens = vec![];
        token_hashes(&normalize("你好，世界 abc中文x"), &mut tokens);
        // 你 好 世 界 abc 中 文 x
        assert_eq!(tokens.len(), 8);
        assert_eq!(tokens[4], xxh3_64(b"abc"));
        assert_eq!(tokens[7], xxh3_64(b"x"));
    }

    #[test]
    fn shingles_are_order_sensitive_windows() {
        let mut t = vec![];
        token_hashes("a b c d e f", &mut t);
        let mut s = vec![];
        shingle_hashes(&t, 5, &mut s);
        assert_eq!(s.len(), 2);
        let mut short = vec![];
        shingle_hashes(&t[..3], 5, &mut short);
        assert_eq!(short.len(), 1, "short texts still get one shingle");
        let mut rev_t = t.clone();
        rev_t.reverse();
        let mut rev = vec![];
        shingle_hashes(&rev_t, 5, &mut rev);
        assert!(rev.iter().all(|h| !s.contains(h)));
        let mut none = vec![];
        shingle_hashes(&[], 5, &mut none);
        assert!(none.is_empty());
    }
}
