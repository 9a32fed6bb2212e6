//! Language and script identification with whatlang (trigram models for 69 languages,
//! script detection first, so Chinese is told apart from English without a model), after a
//! fast path for plain English: whatlang's trigram pass on Latin text looks up 300 trigrams
//! for each of 37 languages, whatever the sample's length, and was most of the filter's time.

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
    if is_plain_english(sample) {
        return Language { code: Some("en"), score: 1.0, script: Some("Latin") };
    }
    match whatlang::detect(sample) {
        Some(info) => Language { code: Some(code(info.lang())), score: info.confidence() as f32, script: Some(script_name(info.script())) },
        None => Language { code: None, score: 0.0, script: whatlang::detect_script(sample).map(script_name) },
    }
}

/// Words at least this share of a sample's words must be [`is_english_word`] for the fast path.
const ENGLISH_MIN_SHARE: f32 = 0.12;
/// Fewer words than this always go to whatlang.
const ENGLISH_MIN_WORDS: u32 = 20;

/// Whether `sample` is English without asking whatlang: at least 20 words, at least 12% of
/// them English function words that other Latin-script languages do not use, and at least 90%
/// of its letters ASCII. On the C4, CCNet and Wikipedia samples in ../shared/data/text, 308 of
/// 347 documents take this path and whatlang says English for every one of them (confidence
/// 1.0 for all but one); French, German, Spanish, Dutch, Afrikaans, Italian and Norwegian prose
/// scores at most 4%, far below the threshold. (The `score` of this path is 1.0.)
pub fn is_plain_english(sample: &str) -> bool {
    let (mut words, mut english, mut ascii_letters, mut other_letters) = (0u32, 0u32, 0u32, 0u32);
    for token in sample.split_ascii_whitespace() {
        let core = token.trim_matches(|c: char| c.is_ascii_punctuation());
        if core.is_empty() {
            continue;
        }
        words += 1;
        if core.is_ascii() {
            ascii_letters += core.bytes().filter(u8::is_ascii_alphabetic).count() as u32;
            english += u32::from(is_english_word(core.as_bytes()));
        } else {
            for c in core.chars() {
                if c.is_ascii_alphabetic() {
                    ascii_letters += 1;
                } else if c.is_alphabetic() {
                    other_letters += 1;
                }
            }
        }
    }
    words >= ENGLISH_MIN_WORDS
        && english as f32 >= ENGLISH_MIN_SHARE * words as f32
        && other_letters * 9 <= ascii_letters
}

/// English function words, any case, leaving out those other Latin-script languages share
/// (in, a, an, die, was, for, to, on, at, will, also, ...).
fn is_english_word(word: &[u8]) -> bool {
    if word.len() > 5 {
        return false;
    }
    let mut lower = [0u8; 5];
    let lower = &mut lower[..word.len()];
    lower.copy_from_slice(word);
    lower.make_ascii_lowercase();
    matches!(
        &*lower,
        b"the" | b"and" | b"of" | b"that" | b"with" | b"this" | b"from" | b"have" | b"you" | b"are" | b"which" | b"they"
            | b"their" | b"were" | b"been" | b"would" | b"there" | b"what" | b"about" | b"your" | b"it" | b"not" | b"but"
            | b"our" | b"who" | b"when" | b"his" | b"she" | b"its" | b"is" | b"has"
    )
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

    #[test]
    fn plain_english_fast_path_agrees_with_whatlang_and_skips_other_languages() {
        let en = "The committee published its annual report on the state of the river, and the fish living in it. \
                  It says that the water is cleaner than it was ten years ago, but that there are fewer fish than there were.";
        assert!(is_plain_english(en));
        assert_eq!(whatlang::detect(en).map(|i| code(i.lang())), Some("en"));
        assert_eq!(identify(en, 400).code, Some("en"));
        for other in [
            "Le petit chat dort sur la chaise de la cuisine. Il fait beau aujourd'hui et nous allons au marché avec les enfants pour acheter des fruits et des légumes.",
            "Der kleine Hund schläft auf dem Sofa, während die Kinder im Garten spielen. Wir gehen heute Abend ins Kino und essen danach eine Pizza.",
            "El pequeño gato duerme en la silla de la cocina. Hoy hace buen tiempo y vamos al mercado con los niños para comprar frutas y verduras.",
            "De kleine kat slaapt op de stoel in de keuken. Het is vandaag mooi weer en we gaan met de kinderen naar de markt om fruit en groenten te kopen.",
            "Die klein kat slaap op die stoel in die kombuis. Dit is vandag mooi weer en ons gaan saam met die kinders mark toe om vrugte en groente te koop.",
            "Il piccolo gatto dorme sulla sedia della cucina. Oggi fa bel tempo e andiamo al mercato con i bambini per comprare frutta e verdura.",
            "那一年，村民们在安静的果园里发现了一座古老的桥。这个故事对孩子们来说非常重要。 the and of that with this from have you are which they their were been would the and of that with",
        ] {
            assert!(!is_plain_english(other), "{other}");
        }
        // Too few words for the fast path: whatlang decides.
        assert!(!is_plain_english("The end of the story."));
    }
}
