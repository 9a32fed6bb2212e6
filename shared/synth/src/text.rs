//! Text generators for each family of the synthetic crawl: clean English and Chinese prose
//! from small grammars, and the kinds of web noise quality filters must remove.

use crate::lexicon::*;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

pub type Rng = ChaCha8Rng;

fn pick<'a>(rng: &mut Rng, items: &'a [&'a str]) -> &'a str {
    items[rng.random_range(0..items.len())]
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// A date line such as `Posted on 2024-05-12`, which the "date" mutation rewrites.
pub fn date_line(rng: &mut Rng, zh: bool) -> String {
    let (y, m, d) = (rng.random_range(2015..2025), rng.random_range(1..13), rng.random_range(1..29));
    if zh {
        format!("发布时间：{y}年{m}月{d}日")
    } else {
        format!("Posted on {y}-{m:02}-{d:02}")
    }
}

fn en_sentence(rng: &mut Rng) -> String {
    let s = match rng.random_range(0..7) {
        0 => format!(
            "the {} {} {} the {} {} the {} {}",
            pick(rng, EN_ADJECTIVES), pick(rng, EN_NOUNS), pick(rng, EN_VERBS_PAST), pick(rng, EN_NOUNS),
            pick(rng, EN_PREPOSITIONS), pick(rng, EN_ADJECTIVES), pick(rng, EN_NOUNS)
        ),
        1 => format!(
            "{} {} the {} and {} a {} {} {}",
            pick(rng, EN_NAMES), pick(rng, EN_VERBS_PAST), pick(rng, EN_NOUNS), pick(rng, EN_VERBS_PAST),
            pick(rng, EN_ADJECTIVES), pick(rng, EN_NOUNS), pick(rng, EN_ADVERBS)
        ),
        2 => format!(
            "{} the {} {} the {} {} that {} {} {} the {}",
            pick(rng, EN_CONNECTIVES), pick(rng, EN_NOUNS), pick(rng, EN_VERBS_PRESENT), pick(rng, EN_ADJECTIVES),
            pick(rng, EN_NOUNS), pick(rng, EN_NAMES), pick(rng, EN_VERBS_PAST), pick(rng, EN_PREPOSITIONS), pick(rng, EN_NOUNS)
        ),
        3 => format!(
            "in {} about {} people {} the {} {} the {} {}",
            rng.random_range(1850..2024), rng.random_range(2..900), pick(rng, EN_VERBS_PAST), pick(rng, EN_NOUNS),
            pick(rng, EN_PREPOSITIONS), pick(rng, EN_ADJECTIVES), pick(rng, EN_NOUNS)
        ),
        4 => format!(
            "it is {} said that a {} {} {} the {} of the {}",
            pick(rng, EN_ADVERBS), pick(rng, EN_ADJECTIVES), pick(rng, EN_NOUNS), pick(rng, EN_VERBS_PRESENT),
            pick(rng, EN_NOUNS), pick(rng, EN_NOUNS)
        ),
        5 => format!(
            "{} and {} {} {} the {} {} with a {} {}",
            pick(rng, EN_NAMES), pick(rng, EN_NAMES), pick(rng, EN_ADVERBS), pick(rng, EN_VERBS_PAST), pick(rng, EN_ADJECTIVES),
            pick(rng, EN_NOUNS), pick(rng, EN_ADJECTIVES), pick(rng, EN_NOUNS)
        ),
        _ => format!(
            "nobody knew why the {} {} was so {}, but the {} {} it {}",
            pick(rng, EN_ADJECTIVES), pick(rng, EN_NOUNS), pick(rng, EN_ADJECTIVES), pick(rng, EN_NOUNS),
            pick(rng, EN_VERBS_PAST), pick(rng, EN_ADVERBS)
        ),
    };
    let end = if rng.random_range(0..12) == 0 { "?" } else { "." };
    capitalize(&s) + end
}

fn en_paragraph(rng: &mut Rng) -> String {
    let n = rng.random_range(3..7);
    (0..n).map(|_| en_sentence(rng)).collect::<Vec<_>>().join(" ")
}

/// Clean English prose: a title, a date line and several paragraphs (about 300-700 words).
pub fn clean_en(rng: &mut Rng) -> String {
    let title = capitalize(&format!("the {} {} of the {} {}", pick(rng, EN_ADJECTIVES), pick(rng, EN_NOUNS), pick(rng, EN_ADJECTIVES), pick(rng, EN_NOUNS)));
    let mut parts = vec![title, date_line(rng, false)];
    let n = rng.random_range(4..9);
    parts.extend((0..n).map(|_| en_paragraph(rng)));
    parts.join("\n")
}

fn zh_sentence(rng: &mut Rng) -> String {
    match rng.random_range(0..6) {
        0 => format!("{}，{}在{}{}里{}了{}。", pick(rng, ZH_TIME), pick(rng, ZH_PEOPLE), pick(rng, ZH_ADJECTIVES), pick(rng, ZH_NOUNS), pick(rng, ZH_VERBS), pick(rng, ZH_NOUNS)),
        1 => format!("{}说，这个{}是{}{}，也是我们的{}。", pick(rng, ZH_PEOPLE), pick(rng, ZH_NOUNS), pick(rng, ZH_ADJECTIVES), pick(rng, ZH_NOUNS), pick(rng, ZH_NOUNS)),
        2 => format!("{}{}的{}和{}都有了很大的变化。", pick(rng, ZH_CONNECTIVES), pick(rng, ZH_NOUNS), pick(rng, ZH_NOUNS), pick(rng, ZH_NOUNS)),
        3 => format!("{}一起{}{}{}，因为{}对{}来说非常重要。", pick(rng, ZH_PEOPLE), pick(rng, ZH_VERBS), pick(rng, ZH_ADJECTIVES), pick(rng, ZH_NOUNS), pick(rng, ZH_NOUNS), pick(rng, ZH_PEOPLE)),
        4 => format!("在{}年，{}的{}已经{}了{}次。", rng.random_range(1900..2024), pick(rng, ZH_NOUNS), pick(rng, ZH_NOUNS), pick(rng, ZH_VERBS), rng.random_range(2..99)),
        _ => format!("{}不知道{}为什么这么{}，但是{}还是{}了它。", pick(rng, ZH_PEOPLE), pick(rng, ZH_NOUNS), pick(rng, ZH_ADJECTIVES).trim_end_matches('的'), pick(rng, ZH_PEOPLE), pick(rng, ZH_VERBS)),
    }
}

/// Clean Chinese prose: a title, a date line and several paragraphs.
pub fn clean_zh(rng: &mut Rng) -> String {
    let title = format!("{}{}与{}", pick(rng, ZH_ADJECTIVES), pick(rng, ZH_NOUNS), pick(rng, ZH_NOUNS));
    let mut parts = vec![title, date_line(rng, true)];
    let n = rng.random_range(3..7);
    parts.extend((0..n).map(|_| (0..rng.random_range(4..9)).map(|_| zh_sentence(rng)).collect::<String>()));
    parts.join("\n")
}

/// Navigation and boilerplate with a few product lines: most lines short, little prose.
pub fn boilerplate_spam(rng: &mut Rng) -> String {
    let mut lines = Vec::new();
    for _ in 0..rng.random_range(15..35) {
        if rng.random_range(0..3) == 0 {
            lines.push(format!("{} {} {} - ${}.{:02}", capitalize(pick(rng, SPAM_KEYWORDS_EN)), pick(rng, EN_ADJECTIVES), pick(rng, EN_NOUNS), rng.random_range(1..500), rng.random_range(0..100)));
        } else {
            lines.push(pick(rng, BOILERPLATE_EN).to_string());
        }
    }
    lines.push(en_sentence(rng));
    lines.join("\n")
}

/// One paragraph repeated line after line (the Gopher repetition filters' target).
pub fn repeated_lines(rng: &mut Rng) -> String {
    let line = format!("{} {}", en_sentence(rng), en_sentence(rng));
    let n = rng.random_range(8..16);
    let mut lines = vec![line.clone(); n];
    lines.insert(rng.random_range(0..n), en_sentence(rng));
    lines.join("\n")
}

/// Lists of links and click-bait anchors.
pub fn link_list(rng: &mut Rng) -> String {
    (0..rng.random_range(20..45))
        .map(|i| match rng.random_range(0..3) {
            0 => format!("https://{}-{}.example.com/{}/{}", pick(rng, EN_ADJECTIVES), pick(rng, EN_NOUNS).replace(' ', "-"), pick(rng, SPAM_KEYWORDS_EN), rng.random_range(1000..99999)),
            1 => format!("Click here: {} {} {}", pick(rng, SPAM_KEYWORDS_EN), pick(rng, SPAM_KEYWORDS_EN), pick(rng, EN_NOUNS)),
            _ => format!("{}. {} {} {} >>", i + 1, capitalize(pick(rng, SPAM_KEYWORDS_EN)), pick(rng, EN_NOUNS), pick(rng, SPAM_KEYWORDS_EN)),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Placeholder filler text (lorem ipsum words in random order).
pub fn lorem_filler(rng: &mut Rng) -> String {
    let words: Vec<&str> = LOREM.split(' ').collect();
    let mut paragraphs = Vec::new();
    for _ in 0..rng.random_range(3..7) {
        let n = rng.random_range(40..90);
        let mut p: Vec<String> = (0..n).map(|_| words[rng.random_range(0..words.len())].to_string()).collect();
        p[0] = capitalize(&p[0]);
        paragraphs.push(p.join(" ") + ".");
    }
    paragraphs.join("\n")
}

/// Source code (braces, symbols, short identifiers).
pub fn code(rng: &mut Rng) -> String {
    let mut lines = Vec::new();
    for _ in 0..rng.random_range(3..7) {
        let name = format!("{}_{}", pick(rng, CODE_IDENTIFIERS), pick(rng, CODE_IDENTIFIERS));
        lines.push(format!("function {name}({}, {}) {{", pick(rng, CODE_IDENTIFIERS), pick(rng, CODE_IDENTIFIERS)));
        for _ in 0..rng.random_range(3..9) {
            let (a, b) = (pick(rng, CODE_IDENTIFIERS), pick(rng, CODE_IDENTIFIERS));
            lines.push(match rng.random_range(0..4) {
                0 => format!("    var {a} = {b}[{}] * {};", rng.random_range(0..16), rng.random_range(2..64)),
                1 => format!("    if ({a} > {b}) {{ return {a}; }}"),
                2 => format!("    for (var i = 0; i < {a}.length; i++) {{ {b} += {a}[i]; }}"),
                _ => format!("    {a}.push({b} + {});", rng.random_range(0..1000)),
            });
        }
        lines.push("}".to_string());
    }
    lines.join("\n")
}

/// Chinese advertising spam: short repeated promotional lines with prices and numbers.
pub fn zh_spam(rng: &mut Rng) -> String {
    (0..rng.random_range(12..30))
        .map(|_| match rng.random_range(0..3) {
            0 => format!("{} {}", pick(rng, SPAM_ZH), pick(rng, ZH_NOUNS)),
            1 => format!("{}{} 只要{}元 电话{}", pick(rng, ZH_ADJECTIVES), pick(rng, ZH_NOUNS), rng.random_range(9..999), rng.random_range(13000000000u64..13999999999)),
            _ => pick(rng, BOILERPLATE_ZH).to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A fragment too short to be a document.
pub fn too_short(rng: &mut Rng) -> String {
    capitalize(&format!("{} {} {}", pick(rng, EN_ADJECTIVES), pick(rng, EN_NOUNS), pick(rng, EN_ADVERBS)))
}

/// Near-duplicate mutations, as crawls produce them.
pub mod mutate {
    use super::*;

    /// Replaces about 1.5% of the words (or, in text without spaces, characters).
    pub fn edit(rng: &mut Rng, text: &str, zh: bool) -> String {
        if zh {
            let mut chars: Vec<char> = text.chars().collect();
            let n = (chars.len() / 70).max(1);
            for _ in 0..n {
                let i = rng.random_range(0..chars.len());
                if !chars[i].is_whitespace() {
                    chars[i] = pick(rng, ZH_NOUNS).chars().next().unwrap_or('的');
                }
            }
            return chars.into_iter().collect();
        }
        let mut lines: Vec<Vec<String>> = text.lines().map(|l| l.split(' ').map(str::to_string).collect()).collect();
        let total: usize = lines.iter().map(Vec::len).sum();
        for _ in 0..(total * 3 / 200).max(1) {
            let li = rng.random_range(0..lines.len());
            if lines[li].is_empty() {
                continue;
            }
            let wi = rng.random_range(0..lines[li].len());
            lines[li][wi] = pick(rng, EN_NOUNS).to_string();
        }
        lines.iter().map(|l| l.join(" ")).collect::<Vec<_>>().join("\n")
    }

    /// Adds site furniture above and below the text.
    pub fn boilerplate(rng: &mut Rng, text: &str, zh: bool) -> String {
        let pool = if zh { BOILERPLATE_ZH } else { BOILERPLATE_EN };
        let head: Vec<&str> = (0..rng.random_range(1..3)).map(|_| pick(rng, pool)).collect();
        let tail: Vec<&str> = (0..rng.random_range(1..4)).map(|_| pick(rng, pool)).collect();
        format!("{}\n{}\n{}", head.join("\n"), text, tail.join("\n"))
    }

    /// Rewrites the date line and adds an update notice.
    pub fn date(rng: &mut Rng, text: &str, zh: bool) -> String {
        let new_date = date_line(rng, zh);
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        match lines.iter().position(|l| l.starts_with("Posted on") || l.starts_with("发布时间")) {
            Some(i) => lines[i] = new_date.clone(),
            None => lines.insert(0, new_date.clone()),
        }
        lines.push(if zh { format!("更新于{}", &new_date[15..]) } else { format!("Updated: {}", &new_date[10..]) });
        lines.join("\n")
    }
}
