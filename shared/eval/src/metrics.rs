//! Scoring rules: multiple-choice accuracies as lm-evaluation-harness and the paper compute
//! them, answer extraction for generated solutions, and the binomial interval of chance.

use fancy_regex::Regex;
use std::sync::LazyLock;

use crate::task::AnswerExtraction;

/// The chosen index under each normalization of one multiple-choice item.
#[derive(Debug, Clone, PartialEq)]
pub struct ChoicePredictions {
    /// argmax of the summed log-probability.
    pub acc: usize,
    /// argmax of the log-probability divided by the choice's length in characters.
    pub acc_norm: usize,
    /// argmax of log P(choice | context) − log P(choice | unconditional context).
    pub acc_uncond: Option<usize>,
}

/// Index of the largest value; the first on ties (numpy's argmax, as lm-eval).
pub fn argmax_f64(values: &[f64]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

/// Predictions from each choice's conditional log-likelihood, its text (for the length in
/// characters, without the target delimiter, as lm-eval) and, if scored, its unconditional one.
pub fn choice_predictions(logprobs: &[f64], choice_texts: &[String], unconditional: Option<&[f64]>) -> ChoicePredictions {
    let normalized: Vec<f64> = logprobs.iter().zip(choice_texts).map(|(lp, text)| lp / text.chars().count().max(1) as f64).collect();
    let acc_uncond = unconditional.map(|u| {
        let differences: Vec<f64> = logprobs.iter().zip(u).map(|(c, u)| c - u).collect();
        argmax_f64(&differences)
    });
    ChoicePredictions { acc: argmax_f64(logprobs), acc_norm: argmax_f64(&normalized), acc_uncond }
}

static GSM8K_STRICT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"#### (\-?[0-9\.\,]+)").unwrap());
// lm-eval's "flexible-extract": the last number-like run.
static LAST_NUMBER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(-?[$0-9.,]{2,})|(-?[0-9]+)").unwrap());

/// The answer in `text` by `rule`, normalized for exact match; `None` when there is none.
/// GSM8K: the number after `#### ` (commas, `$` and a trailing `.` removed); `flexible` also
/// accepts the last number in the text.
pub fn extract_answer(text: &str, rule: AnswerExtraction, flexible: bool) -> Option<String> {
    match rule {
        AnswerExtraction::Text => Some(text.trim().to_string()),
        AnswerExtraction::Gsm8k => {
            let strict = GSM8K_STRICT.captures(text).ok().flatten().and_then(|c| c.get(1)).map(|m| m.as_str().to_string());
            let found = match (strict, flexible) {
                (Some(s), _) => Some(s),
                (None, true) => LAST_NUMBER.find_iter(text).filter_map(|m| m.ok()).last().map(|m| m.as_str().to_string()),
                (None, false) => None,
            }?;
            let number = found.replace([',', '$'], "");
            let number = number.trim_end_matches('.');
            (!number.is_empty() && number != "-").then(|| number.to_string())
        }
        AnswerExtraction::Boxed => last_boxed(text).map(|s| s.trim().to_string()),
    }
}

/// The content of the last `\boxed{...}` (or `\fbox{...}`), with nested braces.
pub fn last_boxed(text: &str) -> Option<String> {
    let start = text.rfind("\\boxed").or_else(|| text.rfind("\\fbox"))?;
    let rest = &text[start..];
    let open = rest.find('{')?;
    let mut depth = 0usize;
    for (i, c) in rest[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(rest[open + 1..open + i].to_string());
                }
            }
            _ => {}
        }
    }
    None
}

/// Numbers compare as numbers ("18" == "18.0"); anything else as text.
pub fn answers_match(predicted: &str, gold: &str) -> bool {
    match (predicted.parse::<f64>(), gold.parse::<f64>()) {
        (Ok(p), Ok(g)) => (p - g).abs() <= 1e-9 * g.abs().max(1.0),
        _ => predicted == gold,
    }
}

/// Where the accuracy of a guesser with chance `p` falls 95% of the time over `n` items: the
/// binomial's normal approximation with a continuity correction.
pub fn chance_interval(p: f64, n: usize) -> (f64, f64) {
    let n = n as f64;
    let half_width = 1.96 * (p * (1.0 - p) / n).sqrt() + 0.5 / n;
    ((p - half_width).max(0.0), (p + half_width).min(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn normalizations_can_disagree() {
        let texts = vec!["a".to_string(), "a much longer answer".to_string()];
        let p = choice_predictions(&[-2.0, -10.0], &texts, Some(&[-1.0, -20.0]));
        assert_eq!((p.acc, p.acc_norm, p.acc_uncond), (0, 1, Some(1)));
    }

    #[test]
    fn gsm8k_answers() {
        let gold = "She makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 18";
        assert_eq!(extract_answer(gold, AnswerExtraction::Gsm8k, false).as_deref(), Some("18"));
        assert_eq!(extract_answer("so #### 1,234.", AnswerExtraction::Gsm8k, false).as_deref(), Some("1234"));
        assert_eq!(extract_answer("the answer is 42", AnswerExtraction::Gsm8k, false), None);
        assert_eq!(extract_answer("3 apples and then $1,000.", AnswerExtraction::Gsm8k, true).as_deref(), Some("1000"));
        assert!(answers_match("18.0", "18"));
        assert!(!answers_match("17", "18"));
    }

    #[test]
    fn boxed_answers_with_nested_braces() {
        assert_eq!(last_boxed("x \\boxed{1} then \\boxed{\\frac{1}{2}} end").as_deref(), Some("\\frac{1}{2}"));
        assert_eq!(last_boxed("\\boxed{unclosed"), None);
        assert_eq!(extract_answer("$\\boxed{ 7 }$", AnswerExtraction::Boxed, false).as_deref(), Some("7"));
    }

    #[test]
    fn chance_interval_covers_chance() {
        let (lo, hi) = chance_interval(0.25, 100);
        assert!(lo < 0.25 && hi > 0.25 && lo > 0.15 && hi < 0.35, "{lo} {hi}");
    }

    proptest! {
        #[test]
        fn extraction_never_panics(text in ".*") {
            for rule in [AnswerExtraction::Gsm8k, AnswerExtraction::Boxed, AnswerExtraction::Text] {
                let _ = extract_answer(&text, rule, true);
            }
        }

        #[test]
        fn strict_extraction_finds_planted_integers(n in -100000i64..100000, prefix in "[a-z ]{0,20}") {
            let text = format!("{prefix}\n#### {n}");
            prop_assert_eq!(extract_answer(&text, AnswerExtraction::Gsm8k, false), Some(n.to_string()));
        }
    }
}
