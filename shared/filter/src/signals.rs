//! The quality signals of one document, computed in one pass over its lines (words, line and
//! paragraph duplicates, C4 line decisions) followed by the n-gram scans over the word hashes.
//! An [`Analyzer`] owns its buffers and hash sets, so a thread analyzes document after
//! document without allocating.

use crate::config::FilterConfig;
use crate::lang::{self, Language};
use crate::text::{self, char_count, is_cjk, is_punctuation};
use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use rustc_hash::{FxHashMap, FxHashSet};
use xxhash_rust::xxh3::xxh3_64;

/// Everything the rules look at; written as columns next to each document.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Signals {
    pub language: Language,
    /// Share of letters that are CJK characters.
    pub cjk_share: f32,
    /// Words that are not only punctuation (each CJK character is one).
    pub words: u32,
    pub mean_word_length: f32,
    /// `#` per token.
    pub hash_ratio: f32,
    /// `...` and `…` per token.
    pub ellipsis_ratio: f32,
    pub bullet_lines_ratio: f32,
    pub ellipsis_lines_ratio: f32,
    /// Share of tokens holding a letter.
    pub alpha_words_ratio: f32,
    /// Distinct stop words.
    pub stop_words: u32,
    pub dup_para_frac: f32,
    pub dup_para_char_frac: f32,
    pub dup_line_frac: f32,
    pub dup_line_char_frac: f32,
    /// Most frequent 2-, 3-, 4-gram's share of the characters.
    pub top_ngram_char_frac: [f32; 3],
    /// Share of characters in repeated 5- to 10-grams.
    pub dup_ngram_char_frac: [f32; 6],
    /// Lines C4's line rules drop.
    pub c4_dropped_lines: u32,
    /// Sentences in the lines C4 keeps.
    pub c4_sentences: u32,
    pub c4_lorem_ipsum: bool,
    pub c4_curly_bracket: bool,
    /// Share of non-blank lines ending in terminal punctuation.
    pub line_punct_ratio: f32,
    pub short_line_ratio: f32,
    /// Characters in duplicated lines / characters that are not newlines.
    pub char_dup_ratio: f32,
    /// Newlines per token.
    pub list_ratio: f32,
    /// The quality model's probability that the text is reference-quality.
    pub quality_score: Option<f32>,
    /// The URL is on the `[url]` blocklists (set by the stage, which has the URL).
    pub url_blocked: bool,
}

/// Word counts of a line (and, added up, of a document).
#[derive(Debug, Default, Clone, PartialEq)]
struct LineWords {
    /// Whitespace-delimited tokens, each CJK character one.
    tokens: u32,
    /// Tokens holding a letter.
    alpha_tokens: u32,
    /// Letters of non-CJK words.
    letters: u32,
    cjk: u32,
    stop_mask: u64,
    /// The longest token, in characters (C4's maximum word length).
    max_token_chars: usize,
}

impl LineWords {
    fn add(&mut self, w: &LineWords) {
        self.tokens += w.tokens;
        self.alpha_tokens += w.alpha_tokens;
        self.letters += w.letters;
        self.cjk += w.cjk;
        self.stop_mask |= w.stop_mask;
        self.max_token_chars = self.max_token_chars.max(w.max_token_chars);
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Word {
    hash: u64,
    chars: u32,
}

const LOREM: usize = 0;
const JAVASCRIPT: usize = 1;
const POLICY: [&str; 6] = ["terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies"];

/// A word of at most 15 bytes, ASCII-lowercased, as one number (its bytes, then its length
/// in the last byte): stop words are compared without a call to `memcmp`.
#[inline]
fn packed_lower(word: &[u8]) -> Option<u128> {
    if word.len() > 15 {
        return None;
    }
    let mut b = [0u8; 16];
    b[..word.len()].copy_from_slice(word);
    b.make_ascii_lowercase();
    b[15] = word.len() as u8;
    Some(u128::from_le_bytes(b))
}

/// `tok` without leading and trailing ASCII punctuation (an ASCII token's core).
#[inline]
fn trim_ascii_punctuation(tok: &str) -> &str {
    let b = tok.as_bytes();
    let start = b.iter().position(|c| !c.is_ascii_punctuation()).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !c.is_ascii_punctuation()).map_or(start, |e| e + 1);
    &tok[start..end]
}

/// Appends a word's hash to an n-gram's hash (order-sensitive).
#[inline]
fn combine(h: u64, word: u64) -> u64 {
    h.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(23) ^ word
}

/// A set (with counts) of n-gram hashes for one scan: open addressing over the hashes
/// themselves, linear probing, at most half full. Faster than a general hash map here: one
/// multiply to place a key, no growth during a scan (sized at its start), and emptied by
/// zeroing only the slots the last scan used.
#[derive(Default)]
struct GramTable {
    /// 0 is the empty slot (a key of 0 is stored as 1: one more hash collision, 2^-64 likely).
    keys: Vec<u64>,
    counts: Vec<u32>,
    /// Slots filled since the last reset.
    used: Vec<u32>,
    mask: usize,
    /// 64 minus log2 of the slots in use: a key's first slot is the top bits of its mix.
    shift: u32,
}

impl GramTable {
    /// Empties the table and sizes it for `n` keys at most.
    fn reset(&mut self, n: usize) {
        for &i in &self.used {
            self.keys[i as usize] = 0;
        }
        self.used.clear();
        let size = (2 * n).next_power_of_two().max(16);
        if self.keys.len() < size {
            self.keys.resize(size, 0);
            self.counts.resize(size, 0);
        }
        self.mask = size - 1;
        self.shift = 64 - size.trailing_zeros();
    }

    /// Adds one occurrence of `h`; returns its count so far (1 for a first occurrence) and
    /// its slot (for [`GramTable::count_at`] once the scan is done).
    #[inline]
    fn add(&mut self, h: u64) -> (u32, u32) {
        let key = h.max(1);
        let mut i = (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize;
        loop {
            let k = self.keys[i];
            if k == key {
                self.counts[i] += 1;
                return (self.counts[i], i as u32);
            }
            if k == 0 {
                self.keys[i] = key;
                self.counts[i] = 1;
                self.used.push(i as u32);
                return (1, i as u32);
            }
            i = (i + 1) & self.mask;
        }
    }

    #[inline]
    fn count_at(&self, slot: u32) -> u32 {
        self.counts[slot as usize]
    }
}

/// Computes [`Signals`]; one per thread.
pub struct Analyzer {
    config: FilterConfig,
    phrases: AhoCorasick,
    /// English stop words of up to 15 bytes as [`packed_lower`] numbers, with their bit.
    stop_en: Vec<(u128, u32)>,
    /// Longer ones (only from a config), lowercased.
    stop_en_long: Vec<(Vec<u8>, u32)>,
    stop_en_max_len: usize,
    stop_zh: FxHashMap<char, u32>,
    words: Vec<Word>,
    /// prefix[i] = characters of words[..i].
    prefix: Vec<u32>,
    set: FxHashSet<u64>,
    para_set: FxHashSet<u64>,
    table: GramTable,
    /// grams[i] = hash of the `gram_len`-word n-gram starting at word i, for i in `candidates`.
    grams: Vec<u64>,
    gram_len: usize,
    /// Positions (ascending) whose n-gram may occur more than once. Once the n-gram at a
    /// position is unique, every longer one there is too (it has the shorter as its prefix),
    /// so the position drops out: in prose almost every position goes after the 2- and
    /// 3-grams, and the 5- to 10-gram scans touch only the few repeated spans.
    candidates: Vec<u32>,
    /// The table slot of each candidate in the last counting scan.
    slots: Vec<u32>,
    kept_lines: Vec<(usize, usize)>,
}

impl Analyzer {
    pub fn new(config: &FilterConfig) -> Self {
        let mut patterns = vec!["lorem ipsum", "javascript"];
        patterns.extend(POLICY);
        let phrases = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            // Eight short patterns: a full DFA is small and the fastest to search.
            .kind(Some(AhoCorasickKind::DFA))
            .build(&patterns)
            .expect("fixed patterns compile");
        let q = &config.gopher_quality;
        let stop_words: Vec<(Vec<u8>, u32)> =
            q.stop_words_en.iter().enumerate().map(|(i, w)| (w.to_ascii_lowercase().into_bytes(), i as u32)).collect();
        let offset = stop_words.len() as u32;
        let stop_zh = q
            .stop_words_zh
            .iter()
            .enumerate()
            .filter_map(|(i, w)| w.chars().next().map(|c| (c, offset + i as u32)))
            .collect();
        Analyzer {
            config: config.clone(),
            phrases,
            stop_en_max_len: stop_words.iter().map(|(w, _)| w.len()).max().unwrap_or(0),
            stop_en: stop_words.iter().filter_map(|(w, bit)| Some((packed_lower(w)?, *bit))).collect(),
            stop_en_long: stop_words.into_iter().filter(|(w, _)| packed_lower(w).is_none()).collect(),
            stop_zh,
            words: Vec::new(),
            prefix: Vec::new(),
            set: FxHashSet::default(),
            para_set: FxHashSet::default(),
            table: GramTable::default(),
            grams: Vec::new(),
            gram_len: 0,
            candidates: Vec::new(),
            slots: Vec::new(),
            kept_lines: Vec::new(),
        }
    }

    pub fn config(&self) -> &FilterConfig {
        &self.config
    }

    /// The signals of `text`.
    pub fn analyze(&mut self, text: &str) -> Signals {
        let mut s = Signals { language: lang::identify(text, self.config.language.sample_chars), ..Signals::default() };
        self.words.clear();
        self.kept_lines.clear();
        self.set.clear();
        let total_chars = char_count(text);
        let bytes = text.as_bytes();

        // Phrase matches of the C4 rules, in text order; consumed line by line.
        let phrases = self.phrases.clone();
        let mut matches = phrases.find_iter(text).map(|m| (m.start(), m.pattern().as_usize())).peekable();

        let mut doc = LineWords::default();
        let mut lines_all = 0u32;
        let mut bullets = 0u32;
        let mut ellipsis_lines = 0u32;
        let mut nonblank = 0u32;
        let mut dup_lines = 0u32;
        let mut dup_line_chars = 0usize;
        let mut punct_lines = 0u32;
        let mut short_lines = 0u32;
        let mut paragraphs = 0u32;
        let mut dup_paragraphs = 0u32;
        let mut dup_para_chars = 0usize;
        let mut para_hash: Option<(u64, usize)> = None;
        let mut para_set = std::mem::take(&mut self.para_set);
        para_set.clear();
        let mut c4_active = self.config.c4.enabled;
        let mut c4_dropped = 0u32;
        let mut c4_sentences = 0u32;
        let c4 = self.config.c4.clone();

        let mut close_paragraph = |para: &mut Option<(u64, usize)>, set: &mut FxHashSet<u64>| {
            if let Some((h, chars)) = para.take() {
                paragraphs += 1;
                if !set.insert(h) {
                    dup_paragraphs += 1;
                    dup_para_chars += chars;
                }
            }
        };

        let mut start = 0usize;
        let len = bytes.len();
        while start < len {
            let end = memchr::memchr(b'\n', &bytes[start..]).map_or(len, |i| start + i);
            let line = &text[start..end];
            lines_all += 1;
            let line_chars = char_count(line);
            let trimmed = line.trim();
            if trimmed.is_empty() {
                if line.is_empty() {
                    close_paragraph(&mut para_hash, &mut para_set);
                }
            } else {
                let h = xxh3_64(line.as_bytes());
                para_hash = Some(match para_hash {
                    None => (h, line_chars),
                    Some((ph, pc)) => (ph.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) ^ h, pc + 1 + line_chars),
                });
                nonblank += 1;
                if !self.set.insert(h) {
                    dup_lines += 1;
                    dup_line_chars += line_chars;
                }
                if text::ends_with_terminal(line) {
                    punct_lines += 1;
                }
                let first = trimmed.chars().next().unwrap_or(' ');
                if first == '•' || first == '-' {
                    bullets += 1;
                }
                if trimmed.ends_with("...") || trimmed.ends_with('…') {
                    ellipsis_lines += 1;
                }
            }

            // Words of the line.
            let w = self.scan_words(line);
            doc.add(&w);
            let (line_tokens, line_cjk, max_token_chars) = (w.tokens, w.cjk, w.max_token_chars);
            // Short lines: measured in characters, CJK lines with their own length.
            if !trimmed.is_empty() {
                let cjk_line = line_cjk * 2 >= line_tokens.max(1);
                let limit = if cjk_line { self.config.fineweb.short_line_length_cjk } else { self.config.fineweb.short_line_length };
                if line_chars as u32 <= limit {
                    short_lines += 1;
                }
            }

            // C4's line rules (on the stripped line, in C4's order).
            let mut phrase_bits = 0u32;
            while let Some(&(pos, pattern)) = matches.peek() {
                if pos >= end {
                    break;
                }
                phrase_bits |= 1 << pattern;
                matches.next();
            }
            if c4_active && !trimmed.is_empty() {
                let keep = 'rules: {
                    if max_token_chars > c4.max_word_length as usize {
                        break 'rules false;
                    }
                    let cited = text::strip_trailing_citations(trimmed);
                    if c4.terminal_punctuation && !text::c4_ends_with_terminal(cited) {
                        break 'rules false;
                    }
                    if line_tokens < c4.min_words_per_line {
                        break 'rules false;
                    }
                    if c4.lorem_ipsum && phrase_bits & (1 << LOREM) != 0 {
                        s.c4_lorem_ipsum = true;
                        c4_active = false;
                        break 'rules false;
                    }
                    if c4.javascript && phrase_bits & (1 << JAVASCRIPT) != 0 {
                        break 'rules false;
                    }
                    if c4.curly_bracket && memchr::memchr(b'{', trimmed.as_bytes()).is_some() {
                        s.c4_curly_bracket = true;
                        c4_active = false;
                        break 'rules false;
                    }
                    if c4.policy && phrase_bits & !0b11 != 0 {
                        break 'rules false;
                    }
                    true
                };
                if keep {
                    c4_sentences += text::count_sentences(trimmed);
                    let offset = trimmed.as_ptr() as usize - text.as_ptr() as usize;
                    self.kept_lines.push((offset, offset + trimmed.len()));
                } else {
                    c4_dropped += 1;
                }
            }
            start = end + 1;
        }
        close_paragraph(&mut para_hash, &mut para_set);
        self.para_set = para_set;

        let newlines = memchr::memchr_iter(b'\n', bytes).count();
        let hashes = memchr::memchr_iter(b'#', bytes).count();
        let ellipses = memchr::memmem::find_iter(bytes, b"...").count() + memchr::memmem::find_iter(bytes, "…".as_bytes()).count();
        let per = |a: f64, b: f64| if b > 0.0 { (a / b) as f32 } else { 0.0 };

        let LineWords { tokens, alpha_tokens, letters, cjk: cjk_letters, stop_mask, .. } = doc;
        s.cjk_share = per(cjk_letters as f64, letters as f64 + cjk_letters as f64);
        s.words = self.words.len() as u32;
        let word_chars: u64 = self.words.iter().map(|w| w.chars as u64).sum();
        s.mean_word_length = per(word_chars as f64, self.words.len() as f64);
        s.hash_ratio = per(hashes as f64, tokens as f64);
        s.ellipsis_ratio = per(ellipses as f64, tokens as f64);
        s.bullet_lines_ratio = per(bullets as f64, lines_all as f64);
        s.ellipsis_lines_ratio = per(ellipsis_lines as f64, lines_all as f64);
        s.alpha_words_ratio = per(alpha_tokens as f64, tokens as f64);
        s.stop_words = stop_mask.count_ones();
        s.dup_para_frac = per(dup_paragraphs as f64, paragraphs as f64);
        s.dup_para_char_frac = per(dup_para_chars as f64, total_chars as f64);
        s.dup_line_frac = per(dup_lines as f64, nonblank as f64);
        s.dup_line_char_frac = per(dup_line_chars as f64, total_chars as f64);
        s.c4_dropped_lines = c4_dropped;
        s.c4_sentences = c4_sentences;
        s.line_punct_ratio = per(punct_lines as f64, nonblank as f64);
        s.short_line_ratio = per(short_lines as f64, nonblank as f64);
        s.char_dup_ratio = per(dup_line_chars as f64, (total_chars - newlines) as f64);
        s.list_ratio = per(newlines as f64, tokens as f64);

        // N-gram repetition over the word hashes.
        self.prefix.clear();
        self.prefix.push(0);
        let mut acc = 0u32;
        for w in &self.words {
            acc += w.chars;
            self.prefix.push(acc);
        }
        // In text without spaces an n-gram of words spans about n x (characters per word)
        // characters: Gopher's thresholds were set on word n-grams.
        let spaced = s.cjk_share < self.config.gopher_quality.cjk_share;
        let scale = if spaced { 1 } else { self.config.gopher_repetition.cjk_chars_per_word.max(1) as usize };
        // The n-gram lengths only grow, so each position's hash is extended word by word
        // (10 x scale steps a position in all, not 2 + 3 + ... + 10 = 54).
        self.start_grams();
        for (k, n) in (2..=4).enumerate() {
            self.extend_grams(n * scale);
            s.top_ngram_char_frac[k] = per(self.top_ngram_chars(spaced) as f64, total_chars as f64);
        }
        for (k, n) in (5..=10).enumerate() {
            self.extend_grams(n * scale);
            s.dup_ngram_char_frac[k] = per(self.duplicated_ngram_chars() as f64, total_chars as f64);
        }
        s
    }

    /// The words of one line, pushed to `self.words`, and its counts. Words end at
    /// whitespace; each CJK character is a word of its own. Read as bytes: only non-ASCII
    /// characters are decoded, and a token without any is handled as ASCII.
    fn scan_words(&mut self, line: &str) -> LineWords {
        let mut w = LineWords::default();
        let bytes = line.as_bytes();
        // The current token's start and whether it is ASCII so far.
        let mut token: Option<(usize, bool)> = None;
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b < 0x80 {
                if matches!(b, b' ' | b'\t'..=b'\r') {
                    if let Some((ts, ascii)) = token.take() {
                        self.token(&line[ts..i], ascii, &mut w);
                    }
                } else if token.is_none() {
                    token = Some((i, true));
                }
                i += 1;
                continue;
            }
            let c = line[i..].chars().next().expect("a character starts here");
            let cjk = is_cjk(c);
            if cjk || c.is_whitespace() {
                if let Some((ts, ascii)) = token.take() {
                    self.token(&line[ts..i], ascii, &mut w);
                }
                if cjk {
                    w.tokens += 1;
                    w.alpha_tokens += 1;
                    w.cjk += 1;
                    if let Some(&bit) = self.stop_zh.get(&c) {
                        w.stop_mask |= 1 << bit;
                    }
                    self.words.push(Word { hash: (c as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15), chars: 1 });
                }
            } else {
                match &mut token {
                    Some((_, ascii)) => *ascii = false,
                    None => token = Some((i, false)),
                }
            }
            i += c.len_utf8();
        }
        if let Some((ts, ascii)) = token {
            self.token(&line[ts..], ascii, &mut w);
        }
        w
    }

    /// One whitespace-delimited token of non-CJK text (`ascii`: known to be ASCII).
    #[inline]
    fn token(&mut self, tok: &str, ascii: bool, w: &mut LineWords) {
        w.tokens += 1;
        w.max_token_chars = w.max_token_chars.max(if ascii { tok.len() } else { char_count(tok) });
        let core = if ascii { trim_ascii_punctuation(tok) } else { tok.trim_matches(is_punctuation) };
        if core.is_empty() {
            return;
        }
        let (chars, word_letters) = if ascii {
            (core.len() as u32, core.bytes().filter(u8::is_ascii_alphabetic).count() as u32)
        } else {
            core.chars().fold((0, 0), |(n, l), c| (n + 1, l + u32::from(c.is_alphabetic())))
        };
        if word_letters > 0 {
            w.alpha_tokens += 1;
            w.letters += word_letters;
        }
        if core.len() <= self.stop_en_max_len {
            let bit = match packed_lower(core.as_bytes()) {
                Some(key) => self.stop_en.iter().find(|(k, _)| *k == key).map(|&(_, bit)| bit),
                None => self.stop_en_long.iter().find(|(k, _)| k.eq_ignore_ascii_case(core.as_bytes())).map(|&(_, bit)| bit),
            };
            if let Some(bit) = bit {
                w.stop_mask |= 1 << bit;
            }
        }
        self.words.push(Word { hash: xxh3_64(core.as_bytes()), chars });
    }

    /// Resets the n-gram hashes to the words' own (unigrams), every position a candidate.
    fn start_grams(&mut self) {
        self.grams.clear();
        self.grams.extend(self.words.iter().map(|w| w.hash));
        self.gram_len = 1;
        self.candidates.clear();
        self.candidates.extend(0..self.words.len() as u32);
    }

    /// Lengthens the candidates' n-gram hashes to `n` words; positions too close to the end
    /// drop out.
    fn extend_grams(&mut self, n: usize) {
        debug_assert!(n >= self.gram_len);
        let (from, words, grams) = (self.gram_len, &self.words, &mut self.grams);
        self.candidates.retain(|&p| {
            let p = p as usize;
            if p + n > words.len() {
                return false;
            }
            grams[p] = words[p + from..p + n].iter().fold(grams[p], |h, w| combine(h, w.hash));
            true
        });
        self.gram_len = n;
    }

    /// Characters covered by the most frequent n-gram (its length, joined with spaces for
    /// spaced text, times its count), as Gopher's "top n-gram character fraction". Then
    /// drops the candidates whose n-gram occurred once.
    fn top_ngram_chars(&mut self, spaced: bool) -> u64 {
        let n = self.gram_len;
        if self.words.len() < n {
            return 0;
        }
        // Position 0 holds the top count until another n-gram occurs more often; a unique
        // n-gram (not a candidate) never does.
        let (mut best_count, mut best_at) = (1u32, 0usize);
        self.table.reset(self.candidates.len());
        self.slots.clear();
        for &p in &self.candidates {
            let (c, slot) = self.table.add(self.grams[p as usize]);
            self.slots.push(slot);
            if c > best_count {
                best_count = c;
                best_at = p as usize;
            }
        }
        let (table, mut slots) = (&self.table, self.slots.iter());
        self.candidates.retain(|_| slots.next().is_some_and(|&slot| table.count_at(slot) > 1));
        let chars = (self.prefix[best_at + n] - self.prefix[best_at]) as u64 + if spaced { n as u64 - 1 } else { 0 };
        chars * best_count as u64
    }

    /// Characters of n-grams that repeat an earlier n-gram, counting each repeated span once
    /// (Gopher's "duplicate n-gram character fraction", datatrove's greedy scan: a repeat
    /// skips the scan past its span, a new n-gram moves it one word on). Only candidates can
    /// repeat or be repeated, so the scan visits them alone.
    fn duplicated_ngram_chars(&mut self) -> u64 {
        let n = self.gram_len;
        self.table.reset(self.candidates.len());
        let mut repeated = 0u64;
        // The scan's next position: candidates before it were skipped by a repeat.
        let mut next = 0usize;
        for &p in &self.candidates {
            let p = p as usize;
            if p < next {
                continue;
            }
            if self.table.add(self.grams[p]).0 == 1 {
                next = p + 1;
            } else {
                repeated += (self.prefix[p + n] - self.prefix[p]) as u64;
                next = p + n;
            }
        }
        repeated
    }

    /// The text C4 keeps: its kept lines, stripped, joined by newlines (valid after
    /// [`Analyzer::analyze`] of the same text).
    pub fn c4_text(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for (i, &(a, b)) in self.kept_lines.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            out.push_str(&text[a..b]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn duplicates_and_ngrams_are_measured_like_gopher() {
        let config = FilterConfig::default();
        let mut a = Analyzer::new(&config);
        let s = a.analyze("a b c\na b c\nd e f");
        assert!((s.dup_line_frac - 1.0 / 3.0).abs() < 1e-6, "{s:?}");
        assert!((s.dup_line_char_frac - 5.0 / 17.0).abs() < 1e-6);
        let s = a.analyze("one two one two one two");
        // "one two" 3 times, 7 characters each, over 23 characters.
        assert!((s.top_ngram_char_frac[0] - 21.0 / 23.0).abs() < 1e-6, "{s:?}");
        let s = a.analyze("first para\n\nsecond\n\nfirst para");
        assert!((s.dup_para_frac - 1.0 / 3.0).abs() < 1e-6, "{s:?}");
        assert_eq!(s.words, 5);
        let s = a.analyze("中文的句子。这是我们的书。");
        assert_eq!(s.words, 11);
        assert!(s.cjk_share > 0.99 && s.stop_words >= 3, "{s:?}");
    }

    proptest! {
        #[test]
        fn any_text_gives_bounded_signals(text in "\\PC{0,400}|[a-z .\\n#{}-]{0,400}|[中文的是。，\\n ]{0,200}") {
            let config = FilterConfig::default();
            let mut a = Analyzer::new(&config);
            let s = a.analyze(&text);
            for v in [s.cjk_share, s.bullet_lines_ratio, s.ellipsis_lines_ratio, s.alpha_words_ratio, s.dup_para_frac,
                      s.dup_line_frac, s.dup_line_char_frac, s.dup_para_char_frac, s.line_punct_ratio, s.short_line_ratio] {
                prop_assert!((0.0..=1.0).contains(&v), "{v} in {s:?}");
            }
            for v in s.dup_ngram_char_frac {
                prop_assert!((0.0..=1.0).contains(&v));
            }
            let kept = a.c4_text(&text);
            prop_assert!(kept.len() <= text.len());
        }

        /// The byte scan finds the words, counts and hashes that a plain character scan does.
        #[test]
        fn word_scan_matches_a_character_scan(line in "[ -~\t\x0b\x0c\r]{0,120}|[a-z .,\u{a0}\u{3000}中文的。é’—“]{0,120}") {
            let mut a = Analyzer::new(&FilterConfig::default());
            let got = a.scan_words(&line);
            // Reference: split at whitespace and CJK characters, every token through the
            // general (non-ASCII) path.
            let mut reference = Analyzer::new(&FilterConfig::default());
            let mut want = LineWords::default();
            let mut start: Option<usize> = None;
            for (i, c) in line.char_indices().chain(std::iter::once((line.len(), ' '))) {
                if c.is_whitespace() || is_cjk(c) {
                    if let Some(ts) = start.take() {
                        reference.token(&line[ts..i], false, &mut want);
                    }
                    if is_cjk(c) {
                        want.tokens += 1;
                        want.alpha_tokens += 1;
                        want.cjk += 1;
                        if let Some(&bit) = reference.stop_zh.get(&c) {
                            want.stop_mask |= 1 << bit;
                        }
                        reference.words.push(Word { hash: (c as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15), chars: 1 });
                    }
                } else if start.is_none() {
                    start = Some(i);
                }
            }
            prop_assert_eq!(got, want);
            prop_assert_eq!(a.words.clone(), reference.words.clone());
        }

        /// The incremental n-gram hashes give what comparing the words themselves gives.
        #[test]
        fn ngram_scans_match_word_comparison(ids in proptest::collection::vec(0u8..4, 0..60), lens in proptest::collection::vec(1u32..6, 4)) {
            let mut a = Analyzer::new(&FilterConfig::default());
            a.words = ids.iter().map(|&w| Word { hash: xxh3_64(&[w]), chars: lens[w as usize] }).collect();
            a.prefix = std::iter::once(0).chain(a.words.iter().scan(0, |acc, w| { *acc += w.chars; Some(*acc) })).collect();
            let chars = |i: usize, n: usize| ids[i..i + n].iter().map(|&w| lens[w as usize] as u64).sum::<u64>();
            a.start_grams();
            for n in [2usize, 3, 4, 5, 7, 10] {
                a.extend_grams(n);
                // Most frequent n-gram (first to reach the top count) times its count.
                let mut counts = std::collections::HashMap::new();
                let (mut best, mut at) = (0u64, 0usize);
                for i in 0..(ids.len() + 1).saturating_sub(n) {
                    let c = counts.entry(&ids[i..i + n]).or_insert(0u64);
                    *c += 1;
                    if *c > best { best = *c; at = i; }
                }
                let top = if best == 0 { 0 } else { (chars(at, n) + n as u64 - 1) * best };
                prop_assert_eq!(a.top_ngram_chars(true), top, "top n={}", n);
                // Greedy duplicate scan.
                let mut seen = std::collections::HashSet::new();
                let (mut dup, mut i) = (0u64, 0usize);
                while i + n <= ids.len() {
                    if seen.insert(&ids[i..i + n]) { i += 1 } else { dup += chars(i, n); i += n }
                }
                prop_assert_eq!(a.duplicated_ngram_chars(), dup, "dup n={}", n);
            }
        }
    }
}
