//! Each rule fires on a hand-written positive case and not on a negative one; clean English
//! and Chinese prose pass every rule, and real Chinese prose from ../shared/data does too.

use dsllm_filter::rules::{self, Rule};
use dsllm_filter::{Analyzer, FilterConfig, Signals};

const CLEAN_EN: &str = "The River Road\n\
The old bridge over the river was built in 1843 by the people of the valley, who needed a way to bring their harvest to the market town. \
It stood for more than a century, and it survived three floods that destroyed most of the houses along the banks.\n\
In the spring of 1952 the council decided that the bridge had become too narrow for the trucks that now carried the grain. \
Engineers from the capital came to measure the stone arches, and they wrote a long report about the state of the foundations.\n\
Their report was careful and honest. They explained that the arches were still strong, but that the road on top of them could not be widened without risk. \
The council read it twice and then argued about it for a whole winter.\n\
In the end a second bridge was built a mile downstream, and the old one was kept for people walking to the market with their children. \
Today it is a quiet place where fishermen sit in the evening and watch the water move slowly under the arches.";

const CLEAN_ZH: &str = "河边的老桥\n\
那座老桥建于一八四三年，是山谷里的人们为了把收成运到集镇上而修建的。它在河上站了一百多年，经历了三次洪水，而河岸边的大部分房屋都在洪水中被冲毁了。\n\
一九五二年春天，议会认为这座桥对于运送粮食的卡车来说已经太窄了。首都来的工程师测量了石拱，并写了一份关于地基状况的长篇报告。\n\
他们的报告认真而诚实。报告说，石拱仍然很坚固，但是桥面不能在没有风险的情况下加宽。议会把报告读了两遍，然后争论了整整一个冬天。\n\
最后，人们在下游一英里的地方修了第二座桥，老桥留给带着孩子步行去集市的人们。如今，这里是一个安静的地方，傍晚时分渔夫们坐在桥上，看着河水在石拱下慢慢流过。";

fn signals(text: &str, config: &FilterConfig) -> Signals {
    Analyzer::new(config).analyze(text)
}

fn assert_fires(rule: Rule, positive: &str, negative: &str, config: &FilterConfig) {
    let pos = signals(positive, config);
    assert!(rule.fails(&pos, config), "{} should fire on {positive:?}: {pos:#?}", rule.name());
    let neg = signals(negative, config);
    assert!(!rule.fails(&neg, config), "{} should not fire on {negative:?}: {neg:#?}", rule.name());
}

fn lines(items: impl IntoIterator<Item = String>) -> String {
    items.into_iter().collect::<Vec<_>>().join("\n")
}

#[test]
fn clean_english_and_chinese_pass_every_rule() {
    let config = FilterConfig::default();
    for text in [CLEAN_EN, CLEAN_ZH] {
        let s = signals(text, &config);
        assert_eq!(rules::first_failure(&s, &config), None, "{text}\n{s:#?}");
    }
    assert_eq!(signals(CLEAN_ZH, &config).language.code, Some("zh"));
    assert_eq!(signals(CLEAN_EN, &config).language.code, Some("en"));
}

#[test]
fn language_rule() {
    let config = FilterConfig { language: dsllm_filter::config::LanguageConfig { keep: vec!["zh".into()], ..Default::default() }, ..Default::default() };
    assert_fires(Rule::Language, CLEAN_EN, CLEAN_ZH, &config);
}

#[test]
fn gopher_quality_rules() {
    let config = FilterConfig::default();
    assert_fires(Rule::GopherShortDoc, "A short note about the weather and the sea.", CLEAN_EN, &config);
    let mut long = FilterConfig::default();
    long.gopher_quality.max_words = 100;
    assert_fires(Rule::GopherLongDoc, CLEAN_EN, "A short note about the weather and the sea.", &long);
    let tiny_words = lines((0..12).map(|i| format!("I am to be as it is. We go on {i} if we do so. He or she is by me.")));
    assert_fires(Rule::GopherMeanWordLength, &tiny_words, CLEAN_EN, &config);
    // Chinese is not measured in word lengths: one character per word is normal there.
    assert!(!Rule::GopherMeanWordLength.fails(&signals(CLEAN_ZH, &config), &config));
    let hashtags = format!("{CLEAN_EN}\n{}", (0..30).map(|i| format!("#tag{i}")).collect::<Vec<_>>().join(" "));
    assert_fires(Rule::GopherSymbolRatio, &hashtags, CLEAN_EN, &config);
    let bullets = lines((0..20).map(|i| format!("- item number {i} of the list with the things to bring")));
    assert_fires(Rule::GopherBulletLines, &bullets, CLEAN_EN, &config);
    let ellipses = lines((0..20).map(|i| format!("Read the rest of story {i} about the river and the town...")));
    assert_fires(Rule::GopherEllipsisLines, &ellipses, CLEAN_EN, &config);
    let numbers = format!("{}\nThe table of the values.", (0..200).map(|i| (i * 7919 % 10007).to_string()).collect::<Vec<_>>().join(" "));
    assert_fires(Rule::GopherAlphaWords, &numbers, CLEAN_EN, &config);
    let no_stop = lines((0..10).map(|i| format!("Quick brown foxes jump over lazy dogs near river {i}. Bright colors fill gardens everywhere.")));
    assert_fires(Rule::GopherStopWords, &no_stop, CLEAN_EN, &config);
    assert!(!Rule::GopherStopWords.fails(&signals(CLEAN_ZH, &config), &config), "Chinese stop words count");
}

#[test]
fn gopher_repetition_rules() {
    let config = FilterConfig::default();
    let para = "The council met on Monday to discuss the bridge and the road.\nIt decided nothing at all.";
    let dup_paras = [para, "A different paragraph about the harvest and the market of the town.", para, para].join("\n\n");
    assert_fires(Rule::GopherDupParaFrac, &dup_paras, CLEAN_EN, &config);
    assert_fires(Rule::GopherDupParaCharFrac, &dup_paras, CLEAN_EN, &config);
    let line = "Subscribe to the newsletter of the river society for weekly updates on the bridge.";
    let dup_lines = [CLEAN_EN, line, line, line, line, line, line, line, line, line, line].join("\n");
    assert_fires(Rule::GopherDupLineFrac, &dup_lines, CLEAN_EN, &config);
    assert_fires(Rule::GopherDupLineCharFrac, &dup_lines, CLEAN_EN, &config);
    let top2 = (0..60).map(|i| format!("buy now {}", ["cheap", "fast", "today", "online"][i % 4])).collect::<Vec<_>>().join(" ");
    assert_fires(Rule::GopherTopNgram(2), &top2, CLEAN_EN, &config);
    let top3 = (0..60).map(|i| format!("click here now {}", ["red", "blue", "green", "gold", "pink"][i % 5])).collect::<Vec<_>>().join(" ");
    assert_fires(Rule::GopherTopNgram(3), &top3, CLEAN_EN, &config);
    let top4 = (0..60).map(|i| format!("best deals of today {}", ["shoes", "hats", "coats", "bags", "rings", "socks"][i % 6])).collect::<Vec<_>>().join(" ");
    assert_fires(Rule::GopherTopNgram(4), &top4, CLEAN_EN, &config);
    let repeated = format!("{CLEAN_EN} {}", CLEAN_EN.replace('\n', " "));
    for n in 5..=10 {
        assert_fires(Rule::GopherDupNgram(n), &repeated, CLEAN_EN, &config);
    }
}

#[test]
fn c4_rules() {
    let config = FilterConfig::default();
    let lorem = format!("{CLEAN_EN}\nLorem ipsum dolor sit amet, consectetur adipiscing elit.");
    assert_fires(Rule::C4LoremIpsum, &lorem, CLEAN_EN, &config);
    let code = format!("{CLEAN_EN}\nThe function is written as f(x) {{ return x * 2; }} in the example.");
    assert_fires(Rule::C4CurlyBracket, &code, CLEAN_EN, &config);
    let fragments = lines((0..30).map(|i| format!("Menu item {i} for the shop and the store")));
    assert_fires(Rule::C4TooFewSentences, &fragments, CLEAN_EN, &config);
    // Lines C4 drops (javascript, policy, no terminal punctuation) are counted and removed.
    let mut analyzer = Analyzer::new(&config);
    let text = format!("{CLEAN_EN}\nPlease enable JavaScript to view the comments.\nRead our Privacy Policy and terms of use.\nHome");
    let s = analyzer.analyze(&text);
    assert_eq!(s.c4_dropped_lines, 4, "title line, javascript, policy, Home");
    let kept = analyzer.c4_text(&text);
    assert!(!kept.contains("JavaScript") && !kept.contains("Privacy") && !kept.ends_with("Home") && kept.contains("fishermen"));
}

#[test]
fn fineweb_rules() {
    let config = FilterConfig::default();
    let no_punct = lines((0..20).map(|i| format!("Section {i} of the report on the river bridge and the council meeting in the town")));
    assert_fires(Rule::FineWebLinePunct, &no_punct, CLEAN_EN, &config);
    let short = format!("{}\n{}", CLEAN_EN, lines((0..40).map(|i| format!("Link {i}."))));
    assert_fires(Rule::FineWebShortLines, &short, CLEAN_EN, &config);
    let dup = format!("{CLEAN_EN}\nShare this story with the others.\nShare this story with the others.");
    assert_fires(Rule::FineWebCharDup, &dup, CLEAN_EN, &config);
    let list = lines((0..40).map(|i| format!("Item {i}.")));
    assert_fires(Rule::FineWebListRatio, &list, CLEAN_EN, &config);
}

#[test]
fn quality_model_threshold() {
    let mut config = FilterConfig::default();
    let low = Signals { quality_score: Some(0.2), ..Signals::default() };
    let high = Signals { quality_score: Some(0.9), ..Signals::default() };
    assert!(!Rule::QualityModel.fails(&low, &config), "no threshold: only a column");
    config.quality_model.min_score = Some(0.5);
    assert!(Rule::QualityModel.fails(&low, &config) && !Rule::QualityModel.fails(&high, &config));
}

#[test]
fn chinese_spam_fails() {
    let config = FilterConfig::default();
    let spam = lines((0..20).map(|i| match i % 3 {
        0 => "免费下载 点击这里 立即领取".to_string(),
        1 => format!("新的苹果 只要{}元 电话1380000{:04}", 9 + i, i),
        _ => "首页 | 关于我们 | 联系方式 | 隐私政策".to_string(),
    }));
    let s = signals(&spam, &config);
    assert!(rules::first_failure(&s, &config).is_some(), "{s:#?}");
}

/// Real Chinese prose (the novel in ../shared/data/text), chapter by chapter, passes.
#[test]
fn real_chinese_prose_passes() {
    let path = std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())).join("../../../shared/data/text/zh_hongloumeng.txt.gz");
    if !path.exists() {
        eprintln!("SKIPPED: {} not found (real text lives in ../shared/data)", path.display());
        return;
    }
    use std::io::Read;
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap()).read_to_string(&mut text).unwrap();
    let text = text.replace("\r\n", "\n");
    let config = FilterConfig::default();
    let mut analyzer = Analyzer::new(&config);
    let chapters: Vec<&str> = text.split("\n第").skip(1).take(40).collect();
    assert!(chapters.len() >= 20);
    let mut failures = Vec::new();
    for chapter in &chapters {
        let s = analyzer.analyze(chapter);
        if let Some(rule) = rules::first_failure(&s, &config) {
            failures.push((rule.name(), chapter.chars().take(20).collect::<String>()));
        }
        assert_eq!(s.language.code, Some("zh"));
    }
    println!("{} chapters, {} rejected: {failures:?}", chapters.len(), failures.len());
    assert!(failures.len() * 20 <= chapters.len(), "at most 5% of real Chinese prose rejected: {failures:?}");
}
