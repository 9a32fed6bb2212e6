//! Language and script identification with whatlang (trigram models for 69 languages,
//! script detection first, so Chinese is told apart from English without a model).

use whatlang::{Lang, Script};

/// What the identifier found.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Language {
    /// ISO 639-1 code where one exists (`en`, `zh`), else ISO 639-3; none for text with no letters.
    pub code: Option<&'static str>,
    /// whatlang's confidence, 0 to 1.
    pub score: f32,
    /// Dominant script (`Latin`, `Han`, `Cyrillic`, ...).
    pub script: Option<&'static str>,
}

/// Identifies the language of the first `sample_chars` characters of `text`.
pub fn identify(text: &str, sample_chars: usize) -> Language {
    let sample = match text.char_indices().nth(sample_chars) {
        Some((i, _)) => &text[..i],
        None => text,
    };
    match whatlang::detect(sample) {
        Some(info) => Language { code: Some(code(info.lang())), score: info.confidence() as f32, script: Some(script_name(info.script())) },
        None => Language { code: None, score: 0.0, script: whatlang::detect_script(sample).map(script_name) },
    }
}

/// ISO 639-1 where it exists; whatlang's Mandarin is Chinese (`zh`), as Common Crawl labels it.
pub fn code(lang: Lang) -> &'static str {
    if lang == Lang::Cmn {
        return "zh";
    }
    isolang::Language::from_639_3(lang.code()).and_then(|l| l.to_639_1()).unwrap_or(lang.code())
}

fn script_name(script: Script) -> &'static str {
    match script {
        Script::Mandarin => "Han",
        Script::Latin => "Latin",
        Script::Cyrillic => "Cyrillic",
        Script::Arabic => "Arabic",
        Script::Devanagari => "Devanagari",
        Script::Hiragana => "Hiragana",
        Script::Katakana => "Katakana",
        Script::Hangul => "Hangul",
        Script::Greek => "Greek",
        Script::Hebrew => "Hebrew",
        Script::Thai => "Thai",
        _ => "Other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn english_and_chinese() {
        let en = identify("The committee published its annual report on the state of the river and the fish living in it.", 2000);
        assert_eq!((en.code, en.script), (Some("en"), Some("Latin")));
        assert!(en.score > 0.5, "{en:?}");
        let zh = identify("那一年，村民们在安静的果园里发现了一座古老的桥。这个故事对孩子们来说非常重要。", 2000);
        assert_eq!((zh.code, zh.script), (Some("zh"), Some("Han")));
        assert_eq!(identify("1234 5678", 2000).code, None);
    }
}
