//! Character classes shared by the rules: CJK characters (each one a word), punctuation (what
//! a word is stripped of), and the terminal punctuation of English and Chinese sentences.

/// Han ideographs, kana: scripts written without spaces, where one character is one word.
/// (Hangul is written with spaces and is not included.)
#[inline]
pub fn is_cjk(c: char) -> bool {
    matches!(c,
        '\u{4E00}'..='\u{9FFF}' | '\u{3400}'..='\u{4DBF}' | '\u{F900}'..='\u{FAFF}'
        | '\u{3040}'..='\u{30FF}' | '\u{31F0}'..='\u{31FF}' | '\u{20000}'..='\u{2FA1F}')
}

/// Punctuation and symbols a word is stripped of (ASCII, Latin-1, general punctuation, arrows
/// and box drawing, CJK and full-width punctuation), close to datatrove's PUNCTUATION set.
#[inline]
pub fn is_punctuation(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_punctuation();
    }
    matches!(c,
        '\u{00A1}'..='\u{00BF}' | '\u{00D7}' | '\u{00F7}' | '\u{2010}'..='\u{2027}' | '\u{2030}'..='\u{205E}'
        | '\u{2190}'..='\u{21FF}' | '\u{2500}'..='\u{25FF}' | '\u{3000}'..='\u{303F}' | '\u{FF01}'..='\u{FF0F}'
        | '\u{FF1A}'..='\u{FF20}' | '\u{FF3B}'..='\u{FF40}' | '\u{FF5B}'..='\u{FF65}' | '\u{FE30}'..='\u{FE4F}')
}

/// Ends a sentence (FineWeb's terminal punctuation, the common subset, plus CJK forms).
#[inline]
pub fn is_terminal(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '。' | '！' | '？' | '．' | '｡' | '‼' | '⁇' | '⁈' | '⁉' | '؟' | '।' | '॥' | '።' | '﹒' | '﹗' | '﹖')
}

/// A closing quote or bracket that may follow terminal punctuation (`他说：“好。”`).
#[inline]
pub fn is_closing(c: char) -> bool {
    matches!(c, '"' | '\'' | '”' | '’' | '」' | '』' | '）' | ')' | '》' | '】')
}

/// Whether a line ends a sentence: its last character is terminal punctuation, or a closing
/// quote right after one.
pub fn ends_with_terminal(line: &str) -> bool {
    let mut rev = line.chars().rev();
    match rev.next() {
        Some(c) if is_terminal(c) => true,
        Some(c) if is_closing(c) => rev.next().is_some_and(is_terminal),
        _ => false,
    }
}

/// C4's line-end rule: `. ? ! " '` (and the Chinese `。！？”’」』`), but not an ellipsis.
pub fn c4_ends_with_terminal(line: &str) -> bool {
    if line.ends_with("...") || line.ends_with('…') {
        return false;
    }
    line.chars().next_back().is_some_and(|c| matches!(c, '.' | '?' | '!' | '"' | '\'' | '。' | '！' | '？' | '”' | '’' | '」' | '』' | '．'))
}

/// Removes trailing Wikipedia citation marks (`[12]`, `[edit]`, `[citation needed]`), as C4
/// does before looking at the line end. Hand-written: a regex on every line costs more than
/// this scan of its last bytes.
pub fn strip_trailing_citations(mut line: &str) -> &str {
    loop {
        let Some(body) = line.strip_suffix(']') else { return line };
        let Some(open) = body.rfind('[') else { return line };
        let inner = &body[open + 1..];
        if inner.bytes().all(|b| b.is_ascii_digit()) || inner == "edit" || inner == "citation needed" {
            line = &line[..open];
        } else {
            return line;
        }
    }
}

/// Sentences in a line: runs of terminal punctuation followed by a space, a closing quote or
/// the end (at least one for a non-empty line, as a sentence splitter gives).
pub fn count_sentences(line: &str) -> u32 {
    if line.is_ascii() {
        return count_sentences_ascii(line.as_bytes());
    }
    let mut n = 0u32;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if is_terminal(c) {
            while chars.peek().is_some_and(|&d| is_terminal(d) || is_closing(d)) {
                chars.next();
            }
            match chars.peek() {
                None => n += 1,
                Some(&d) if d.is_whitespace() || is_cjk(c) || !c.is_ascii() => n += 1,
                _ => {}
            }
        }
    }
    n.max(u32::from(!line.trim().is_empty()))
}

/// [`count_sentences`] of ASCII text, on bytes.
fn count_sentences_ascii(line: &[u8]) -> u32 {
    let terminal = |b: u8| matches!(b, b'.' | b'!' | b'?');
    let closing = |b: u8| matches!(b, b'"' | b'\'' | b')');
    let mut n = 0u32;
    let mut i = 0;
    while i < line.len() {
        let b = line[i];
        i += 1;
        if terminal(b) {
            while i < line.len() && (terminal(line[i]) || closing(line[i])) {
                i += 1;
            }
            if i == line.len() || matches!(line[i], b' ' | b'\t'..=b'\r') {
                n += 1;
            }
        }
    }
    n.max(u32::from(line.iter().any(|b| !matches!(b, b' ' | b'\t'..=b'\r'))))
}

/// Characters (Unicode scalar values, Python's `len`) of UTF-8 text.
#[inline]
pub fn char_count(s: &str) -> usize {
    if s.is_ascii() {
        return s.len();
    }
    s.bytes().filter(|&b| (b & 0xC0) != 0x80).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert!(is_cjk('中') && is_cjk('の') && !is_cjk('a') && !is_cjk('。') && !is_cjk('한'));
        assert!(is_punctuation('。') && is_punctuation(',') && is_punctuation('—') && !is_punctuation('a'));
        assert!(ends_with_terminal("他说：“好。”") && ends_with_terminal("Done.") && !ends_with_terminal("Home"));
        assert!(c4_ends_with_terminal("It is.") && !c4_ends_with_terminal("And so...") && c4_ends_with_terminal("好。"));
    }

    #[test]
    fn citations_and_sentences() {
        assert_eq!(strip_trailing_citations("It was big.[12][citation needed]"), "It was big.");
        assert_eq!(strip_trailing_citations("a [b]"), "a [b]");
        assert_eq!(count_sentences("One. Two! Three? 3.5 is a number"), 3);
        assert_eq!(count_sentences("no end"), 1);
        assert_eq!(count_sentences("第一句。第二句！第三句？"), 3);
        assert_eq!(count_sentences(""), 0);
        assert_eq!(char_count("héllo"), 5);
    }

    /// The byte path for ASCII lines counts what the character path counts.
    #[test]
    fn ascii_sentences_match_the_character_path() {
        let general = |line: &str| {
            // The character path on the same text: a trailing non-ASCII space keeps it off the
            // byte path and ends no sentence of its own.
            count_sentences(&format!("{line}\u{3000}"))
        };
        for line in ["One. Two! Three? 3.5 is a number", "no end", "", "  ", "He said \"yes.\" Then (left.) Done",
                     "What?! Really...", "a.b.c", "end.\t", "\"Quoted.\"", "x?)y", "..."] {
            assert_eq!(count_sentences_ascii(line.as_bytes()), general(line), "{line:?}");
        }
    }
}
