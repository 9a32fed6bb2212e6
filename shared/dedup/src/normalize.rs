//! Text normalization and shingling, the inputs of both exact and near dedup.
//!
//! Normalization makes copies that differ only in presentation compare equal: Unicode NFKC
//! (full-width forms, ligatures), lowercase, and every run of punctuation, symbols and
//! whitespace folded to one space. Shingles are the hashed n-grams of the normalized tokens:
//! words where the text has spaces, single characters for Chinese and Japanese (which have none),
//! so the same n gives word 5-grams for English and character 5-grams for Chinese.

use unicode_normalization::UnicodeNormalization;
use xxhash_rust::xxh3::xxh3_64;

/// Longest shingle (in tokens) that [`shingle_hashes`] supports.
pub const MAX_SHINGLE_TOKENS: usize = 16;

/// Normalizes `text` into `out` (cleared first): NFKC, lowercase, separators folded to one space,
/// no leading or trailing space.
pub fn normalize_into(text: &str, out: &mut String) {
    out.clear();
    let mut pending_space = false;
    let push = |c: char, out: &mut String, pending_space: &mut bool| {
        if *pending_space && !out.is_empty() {
            out.push(' ');
        }
        *pending_space = false;
        out.push(c);
    };
    if text.is_ascii() {
        // ASCII is already NFKC: skip the normalizer on the common case.
        for b in text.bytes() {
            if b.is_ascii_alphanumeric() {
                push(b.to_ascii_lowercase() as char, out, &mut pending_space);
            } else {
                pending_space = true;
            }
        }
        return;
    }
    for c in text.nfkc() {
        if is_separator(c) {
            pending_space = true;
        } else {
            for lower in c.to_lowercase() {
                push(lower, out, &mut pending_space);
            }
        }
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
    if c.is_alphanumeric() {
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

/// Hashes of the tokens of normalized text, appended to `out`: space-separated words, except
/// that each character of a spaceless script is a token of its own.
pub fn token_hashes(normalized: &str, out: &mut Vec<u64>) {
    for word in normalized.split(' ').filter(|w| !w.is_empty()) {
        if word.is_ascii() || !word.chars().any(is_spaceless_script) {
            out.push(xxh3_64(word.as_bytes()));
            continue;
        }
        let mut run_start = None;
        for (i, c) in word.char_indices() {
            if is_spaceless_script(c) {
                if let Some(s) = run_start.take() {
                    out.push(xxh3_64(word[s..i].as_bytes()));
                }
                out.push(xxh3_64(&word.as_bytes()[i..i + c.len_utf8()]));
            } else if run_start.is_none() {
                run_start = Some(i);
            }
        }
        if let Some(s) = run_start {
            out.push(xxh3_64(word[s..].as_bytes()));
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
