//! The rules, in the order they are tried: a document's `reject_reason` is the first that
//! fails. The URL blocklist first (it needs no text), language next (cheapest, and the other rules assume a known script), then Gopher
//! quality (a too-short page says nothing about repetition), Gopher repetition, C4, FineWeb,
//! and the quality model last (it judges what the heuristics let through).

use crate::config::FilterConfig;
use crate::signals::Signals;

/// One rule; its name is the `reject_reason` and the manifest's count key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    UrlBlocklist,
    Language,
    GopherShortDoc,
    GopherLongDoc,
    GopherMeanWordLength,
    GopherSymbolRatio,
    GopherBulletLines,
    GopherEllipsisLines,
    GopherAlphaWords,
    GopherStopWords,
    GopherDupParaFrac,
    GopherDupParaCharFrac,
    GopherDupLineFrac,
    GopherDupLineCharFrac,
    GopherTopNgram(u8),
    GopherDupNgram(u8),
    C4LoremIpsum,
    C4CurlyBracket,
    C4TooFewSentences,
    FineWebLinePunct,
    FineWebShortLines,
    FineWebCharDup,
    FineWebListRatio,
    QualityModel,
}

/// Every rule in evaluation order.
pub const ALL_RULES: [Rule; 31] = [
    Rule::UrlBlocklist,
    Rule::Language,
    Rule::GopherShortDoc,
    Rule::GopherLongDoc,
    Rule::GopherMeanWordLength,
    Rule::GopherSymbolRatio,
    Rule::GopherBulletLines,
    Rule::GopherEllipsisLines,
    Rule::GopherAlphaWords,
    Rule::GopherStopWords,
    Rule::GopherDupParaFrac,
    Rule::GopherDupParaCharFrac,
    Rule::GopherDupLineFrac,
    Rule::GopherDupLineCharFrac,
    Rule::GopherTopNgram(2),
    Rule::GopherTopNgram(3),
    Rule::GopherTopNgram(4),
    Rule::GopherDupNgram(5),
    Rule::GopherDupNgram(6),
    Rule::GopherDupNgram(7),
    Rule::GopherDupNgram(8),
    Rule::GopherDupNgram(9),
    Rule::GopherDupNgram(10),
    Rule::C4LoremIpsum,
    Rule::C4CurlyBracket,
    Rule::C4TooFewSentences,
    Rule::FineWebLinePunct,
    Rule::FineWebShortLines,
    Rule::FineWebCharDup,
    Rule::FineWebListRatio,
    Rule::QualityModel,
];

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Rule::UrlBlocklist => "url_blocklist",
            Rule::Language => "language",
            Rule::GopherShortDoc => "gopher_short_doc",
            Rule::GopherLongDoc => "gopher_long_doc",
            Rule::GopherMeanWordLength => "gopher_mean_word_length",
            Rule::GopherSymbolRatio => "gopher_symbol_ratio",
            Rule::GopherBulletLines => "gopher_bullet_lines",
            Rule::GopherEllipsisLines => "gopher_ellipsis_lines",
            Rule::GopherAlphaWords => "gopher_alpha_words",
            Rule::GopherStopWords => "gopher_stop_words",
            Rule::GopherDupParaFrac => "gopher_dup_para_frac",
            Rule::GopherDupParaCharFrac => "gopher_dup_para_char_frac",
            Rule::GopherDupLineFrac => "gopher_dup_line_frac",
            Rule::GopherDupLineCharFrac => "gopher_dup_line_char_frac",
            Rule::GopherTopNgram(2) => "gopher_top_2gram",
            Rule::GopherTopNgram(3) => "gopher_top_3gram",
            Rule::GopherTopNgram(_) => "gopher_top_4gram",
            Rule::GopherDupNgram(5) => "gopher_dup_5gram",
            Rule::GopherDupNgram(6) => "gopher_dup_6gram",
            Rule::GopherDupNgram(7) => "gopher_dup_7gram",
            Rule::GopherDupNgram(8) => "gopher_dup_8gram",
            Rule::GopherDupNgram(9) => "gopher_dup_9gram",
            Rule::GopherDupNgram(_) => "gopher_dup_10gram",
            Rule::C4LoremIpsum => "c4_lorem_ipsum",
            Rule::C4CurlyBracket => "c4_curly_bracket",
            Rule::C4TooFewSentences => "c4_too_few_sentences",
            Rule::FineWebLinePunct => "fineweb_line_punct",
            Rule::FineWebShortLines => "fineweb_short_lines",
            Rule::FineWebCharDup => "fineweb_char_dup",
            Rule::FineWebListRatio => "fineweb_list_ratio",
            Rule::QualityModel => "quality_model",
        }
    }

    /// Whether `s` fails this rule under `config` (a disabled family never fails).
    pub fn fails(self, s: &Signals, config: &FilterConfig) -> bool {
        let q = &config.gopher_quality;
        let r = &config.gopher_repetition;
        let c4 = &config.c4;
        let fw = &config.fineweb;
        match self {
            Rule::UrlBlocklist => s.url_blocked,
            Rule::Language => {
                let l = &config.language;
                !l.keep.is_empty()
                    && (s.language.score < l.min_score || !s.language.code.is_some_and(|c| l.keep.iter().any(|k| k == c)))
            }
            Rule::GopherShortDoc => q.enabled && s.words < q.min_words,
            Rule::GopherLongDoc => q.enabled && s.words > q.max_words,
            Rule::GopherMeanWordLength => {
                q.enabled
                    && s.cjk_share < q.cjk_share
                    && (s.mean_word_length < q.min_mean_word_length || s.mean_word_length > q.max_mean_word_length)
            }
            Rule::GopherSymbolRatio => {
                q.enabled && (s.hash_ratio > q.max_symbol_word_ratio || s.ellipsis_ratio > q.max_symbol_word_ratio)
            }
            Rule::GopherBulletLines => q.enabled && s.bullet_lines_ratio > q.max_bullet_lines_ratio,
            Rule::GopherEllipsisLines => q.enabled && s.ellipsis_lines_ratio > q.max_ellipsis_lines_ratio,
            Rule::GopherAlphaWords => q.enabled && s.alpha_words_ratio < q.min_alpha_words_ratio,
            Rule::GopherStopWords => q.enabled && s.stop_words < q.min_stop_words,
            Rule::GopherDupParaFrac => r.enabled && s.dup_para_frac > r.dup_para_frac,
            Rule::GopherDupParaCharFrac => r.enabled && s.dup_para_char_frac > r.dup_para_char_frac,
            Rule::GopherDupLineFrac => r.enabled && s.dup_line_frac > r.dup_line_frac,
            Rule::GopherDupLineCharFrac => r.enabled && s.dup_line_char_frac > r.dup_line_char_frac,
            Rule::GopherTopNgram(n) => {
                let k = (n as usize).clamp(2, 4) - 2;
                r.enabled && s.top_ngram_char_frac[k] > r.top_ngram_char_frac[k]
            }
            Rule::GopherDupNgram(n) => {
                let k = (n as usize).clamp(5, 10) - 5;
                r.enabled && s.dup_ngram_char_frac[k] > r.dup_ngram_char_frac[k]
            }
            Rule::C4LoremIpsum => c4.enabled && s.c4_lorem_ipsum,
            Rule::C4CurlyBracket => c4.enabled && s.c4_curly_bracket,
            Rule::C4TooFewSentences => {
                c4.enabled && !s.c4_lorem_ipsum && !s.c4_curly_bracket && s.c4_sentences < c4.min_sentences
            }
            Rule::FineWebLinePunct => fw.enabled && s.line_punct_ratio < fw.line_punct_thr,
            Rule::FineWebShortLines => fw.enabled && s.short_line_ratio > fw.short_line_thr,
            Rule::FineWebCharDup => fw.enabled && s.char_dup_ratio > fw.char_dup_ratio,
            Rule::FineWebListRatio => fw.enabled && s.list_ratio > fw.new_line_ratio,
            Rule::QualityModel => match (config.quality_model.min_score, s.quality_score) {
                (Some(t), Some(score)) => score < t,
                _ => false,
            },
        }
    }
}

/// The rules in evaluation order.
pub fn rules() -> &'static [Rule] {
    &ALL_RULES
}

/// The first failing rule (the reject reason), if any.
pub fn first_failure(s: &Signals, config: &FilterConfig) -> Option<Rule> {
    rules().iter().copied().find(|r| r.fails(s, config))
}

/// Every failing rule, as a bitmask over [`rules`] (for the report's "fires" counts).
pub fn failures(s: &Signals, config: &FilterConfig) -> u32 {
    rules().iter().enumerate().filter(|(_, r)| r.fails(s, config)).fold(0u32, |m, (i, _)| m | (1 << i))
}
