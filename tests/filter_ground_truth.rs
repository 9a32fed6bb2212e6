//! ds-filter against ds-synth's quality families, with the real binaries (ds-synth -> ds-ingest
//! -> ds-filter): each planted low-quality family is rejected with its expected reason, and the
//! clean families are kept (precision and recall >= 0.9 per family, printed). Then the quality
//! model: `train-quality` on the labelled corpus, and a filter run that scores with it.

use arrow::array::{Array, Float32Array, StringArray};
use dsllm::{binary, parquet_under};
use dsllm_core::parquet_io::read_batches;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;

/// The reasons each family should be rejected with ("kept" for the clean families), from how
/// shared/synth generates it. The rules run in a fixed order and the first failure is the
/// reason, so a family whose pages hold several kinds of noise has one reason per kind:
/// - too_short: three words -> Gopher's minimum of 50 words.
/// - lorem_filler: shuffled lorem-ipsum words; C4's "lorem ipsum" phrase appears only when the
///   shuffle puts the two words together, but the text never holds an English stop word.
/// - repeated_lines: one line 8-15 times -> Gopher's duplicate-line fraction.
/// - code: `var x = a[3] * 12;`, braces and operators -> fewer than 80% of tokens hold a letter.
///   Rejected on purpose: the paper's web corpus is prose (code comes from code sources), and
///   C4 (curly bracket) would reject it too, after Gopher.
/// - link_list: URLs and "Click here: cheap best buy" lines: no stop words; lists numbered
///   `3. ... >>` have too many tokens without letters; URL-heavy ones too long a mean word.
/// - boilerplate_spam: navigation lines `Home | About us | ...` drawn from a pool of ten: they
///   repeat (duplicate lines), their `|` and `$9.99` tokens hold no letters, and almost none
///   ends a sentence (C4).
/// - zh_spam: advertising lines drawn from small pools: no line ends a sentence (C4), and the
///   pool lines repeat (Gopher's duplicate lines and duplicated n-grams).
const EXPECTED: [(&str, &[&str]); 9] = [
    ("clean_en", &["kept"]),
    ("clean_zh", &["kept"]),
    ("too_short", &["gopher_short_doc"]),
    ("lorem_filler", &["gopher_stop_words"]),
    ("repeated_lines", &["gopher_dup_line_frac"]),
    ("code", &["gopher_alpha_words"]),
    ("link_list", &["gopher_stop_words", "gopher_alpha_words", "gopher_mean_word_length"]),
    ("boilerplate_spam", &["gopher_dup_line_frac", "gopher_dup_line_char_frac", "gopher_alpha_words", "c4_too_few_sentences"]),
    (
        "zh_spam",
        &["c4_too_few_sentences", "gopher_dup_line_frac", "gopher_dup_line_char_frac", "gopher_dup_5gram", "gopher_dup_6gram",
          "gopher_dup_7gram", "gopher_dup_8gram", "gopher_dup_9gram", "gopher_dup_10gram"],
    ),
];

fn run(bin: &str, args: &[&str]) -> String {
    let out = Command::new(binary(bin)).args(args).output().expect("run binary");
    assert!(out.status.success(), "{bin} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn strings<'a>(batch: &'a arrow::array::RecordBatch, name: &str) -> &'a StringArray {
    batch.column_by_name(name).unwrap().as_any().downcast_ref::<StringArray>().unwrap()
}

/// id -> reject reason ("kept" for kept documents) of a filter output folder.
fn decisions(out: &Path) -> HashMap<String, String> {
    let mut found = HashMap::new();
    for path in parquet_under(&out.join("kept")) {
        for batch in read_batches(&path, Some(&["id"])).unwrap() {
            let batch = batch.unwrap();
            for id in strings(&batch, "id").iter().flatten() {
                found.insert(id.to_string(), "kept".to_string());
            }
        }
    }
    for path in parquet_under(&out.join("rejected")) {
        for batch in read_batches(&path, Some(&["id", "reject_reason"])).unwrap() {
            let batch = batch.unwrap();
            let (ids, reasons) = (strings(&batch, "id"), strings(&batch, "reject_reason"));
            for i in 0..ids.len() {
                assert!(found.insert(ids.value(i).to_string(), reasons.value(i).to_string()).is_none(), "a document in both outputs");
            }
        }
    }
    found
}

#[test]
fn planted_quality_families_get_their_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let synth = d.join("synth");
    run("ds-synth", &["--output", synth.to_str().unwrap(), "--docs-per-dump", "1500", "--dumps", "2"]);
    for dump in ["CC-MAIN-2024-10", "CC-MAIN-2024-14"] {
        run("ds-ingest", &["--input", synth.join(dump).to_str().unwrap(), "--output", d.join("docs").join(dump).to_str().unwrap()]);
    }
    let out = d.join("filtered");
    let summary = run("ds-filter", &["--input", d.join("docs").to_str().unwrap(), "--output", out.to_str().unwrap()]);
    let summary: serde_json::Value = serde_json::from_str(summary.trim()).unwrap();
    assert_eq!(summary["read"].as_u64(), Some(3000));
    assert!(out.join("kept/CC-MAIN-2024-10").is_dir() && out.join("report.md").exists());

    let mut family = HashMap::new();
    for batch in read_batches(synth.join("ground_truth.parquet"), Some(&["id", "family"])).unwrap() {
        let batch = batch.unwrap();
        let (ids, families) = (strings(&batch, "id"), strings(&batch, "family"));
        for i in 0..ids.len() {
            family.insert(ids.value(i).to_string(), families.value(i).to_string());
        }
    }
    let got = decisions(&out);
    assert_eq!(got.len(), 3000);

    // Per family: its documents' reasons; per expected reason: which families got it.
    let mut reasons: BTreeMap<&str, BTreeMap<String, usize>> = BTreeMap::new();
    for (id, reason) in &got {
        let f = family[id].as_str();
        *reasons.entry(f).or_default().entry(reason.clone()).or_default() += 1;
    }
    // Recall: the family's documents that got one of its reasons. Precision: the documents
    // rejected with one of those reasons (or kept, for the clean families) that belong to a
    // family expecting that reason; two families may share a rule.
    let expects = |f: &str, reason: &str| EXPECTED.iter().any(|(g, e)| *g == f && e.contains(&reason));
    println!("{:<17} {:>5} {:>9} {:>7}  reasons", "family", "docs", "precision", "recall");
    let mut failures = Vec::new();
    for (f, expected) in EXPECTED {
        let counts = reasons.get(f).cloned().unwrap_or_default();
        let n: usize = counts.values().sum();
        let hit: usize = expected.iter().map(|e| counts.get(*e).copied().unwrap_or(0)).sum();
        let mut flagged = 0usize;
        let mut right = 0usize;
        for (id, reason) in &got {
            if expected.contains(&reason.as_str()) {
                flagged += 1;
                right += usize::from(expects(&family[id], reason));
            }
        }
        let precision = right as f64 / flagged.max(1) as f64;
        let recall = hit as f64 / n.max(1) as f64;
        println!("{f:<17} {n:>5} {precision:>9.3} {recall:>7.3}  {counts:?}");
        if n == 0 || precision < 0.9 || recall < 0.9 {
            failures.push(f);
        }
    }
    assert!(failures.is_empty(), "families below 0.9 precision or recall: {failures:?}");

    // The quality model: trained on the labelled documents, then a column and a threshold.
    let model = d.join("quality.dsqm");
    let trained = run(
        "ds-filter",
        &["train-quality", "--input", d.join("docs").to_str().unwrap(), "--labels", synth.join("ground_truth.parquet").to_str().unwrap(),
          "--output", model.to_str().unwrap(), "--bits", "16"],
    );
    let trained: serde_json::Value = serde_json::from_str(trained.trim()).unwrap();
    println!("quality model: {trained}");
    assert!(trained["heldout_accuracy"].as_f64().unwrap() > 0.95, "{trained}");
    let scored = d.join("scored");
    run(
        "ds-filter",
        &["--input", d.join("docs/CC-MAIN-2024-10").to_str().unwrap(), "--output", scored.to_str().unwrap(),
          "--quality-model", model.to_str().unwrap(), "--min-quality", "0.5"],
    );
    let mut scores = 0;
    for path in parquet_under(&scored.join("kept")) {
        for batch in read_batches(&path, Some(&["quality_score"])).unwrap() {
            let batch = batch.unwrap();
            let q = batch.column(0).as_any().downcast_ref::<Float32Array>().unwrap();
            assert!(q.iter().all(|s| s.is_some_and(|s| s >= 0.5)));
            scores += q.len();
        }
    }
    assert!(scores > 500, "clean documents kept with scores: {scores}");
}

/// The `[url]` blocklists: every document whose host is a blocked domain (or under one) or
/// whose URL has a blocked word as a token is rejected as `url_blocklist`, and no other is;
/// editing the domains file reruns the stage (its content is a parameter).
#[test]
fn url_blocklists_reject_by_domain_and_word() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run("ds-synth", &["--output", d.join("synth").to_str().unwrap(), "--docs-per-dump", "300", "--dumps", "1"]);
    let docs = d.join("docs");
    run("ds-ingest", &["--input", d.join("synth/CC-MAIN-2024-10").to_str().unwrap(), "--output", docs.to_str().unwrap()]);
    let mut pages: Vec<(String, String, String)> = Vec::new();
    for path in parquet_under(&docs) {
        for batch in read_batches(&path, Some(&["id", "url", "domain"])).unwrap() {
            let batch = batch.unwrap();
            let (ids, urls, domains) = (strings(&batch, "id"), strings(&batch, "url"), strings(&batch, "domain"));
            for i in 0..ids.len() {
                pages.push((ids.value(i).to_string(), urls.value(i).to_lowercase(), domains.value(i).to_lowercase()));
            }
        }
    }
    // The most common domain, and a path token of one URL on another domain.
    let mut by_domain: HashMap<&str, usize> = HashMap::new();
    for (_, _, domain) in &pages {
        *by_domain.entry(domain.as_str()).or_default() += 1;
    }
    let blocked_domain = by_domain.iter().max_by_key(|(d, n)| (**n, *d)).map(|(d, _)| d.to_string()).unwrap();
    let tokens = |url: &str| url.split(|c: char| !c.is_alphanumeric()).filter(|t| t.len() > 5).map(str::to_string).collect::<Vec<_>>();
    let word = pages.iter().filter(|(_, _, dom)| *dom != blocked_domain).flat_map(|(_, url, _)| tokens(url)).last().expect("a URL token");
    let expected: std::collections::HashSet<&str> = pages
        .iter()
        .filter(|(_, url, dom)| *dom == blocked_domain || dom.ends_with(&format!(".{blocked_domain}")) || tokens(url).contains(&word))
        .map(|(id, _, _)| id.as_str())
        .collect();
    assert!(!expected.is_empty() && expected.len() < pages.len());

    let list = d.join("domains.txt.gz");
    let mut gz = flate2::write::GzEncoder::new(std::fs::File::create(&list).unwrap(), flate2::Compression::default());
    writeln!(gz, "# blocked\n*.{blocked_domain}  # and its subdomains").unwrap();
    gz.finish().unwrap();
    let config = d.join("filter.toml");
    std::fs::write(&config, format!("[url]\nblocked_domains_file = {:?}\nblocked_words = [{:?}]\n", list.to_str().unwrap(), word)).unwrap();
    let out = d.join("filtered");
    let args = ["--input", docs.to_str().unwrap(), "--output", out.to_str().unwrap(), "--config", config.to_str().unwrap()];
    let summary: serde_json::Value = serde_json::from_str(run("ds-filter", &args).trim()).unwrap();
    let got = decisions(&out);
    let blocked: std::collections::HashSet<&str> = got.iter().filter(|(_, r)| *r == "url_blocklist").map(|(id, _)| id.as_str()).collect();
    assert_eq!(blocked, expected, "blocked {} documents, expected {}", blocked.len(), expected.len());
    assert_eq!(summary["removed_by_reason"]["url_blocklist"].as_u64(), Some(expected.len() as u64), "{summary}");

    // Same list: the stage is up to date. An edited list: it reruns, and nothing is blocked by domain.
    let again: serde_json::Value = serde_json::from_str(run("ds-filter", &args).trim()).unwrap();
    assert_eq!(again["up_to_date"], true, "{again}");
    let mut gz = flate2::write::GzEncoder::new(std::fs::File::create(&list).unwrap(), flate2::Compression::default());
    writeln!(gz, "nothing.invalid").unwrap();
    gz.finish().unwrap();
    let rerun: serde_json::Value = serde_json::from_str(run("ds-filter", &args).trim()).unwrap();
    assert_eq!(rerun["up_to_date"], false, "{rerun}");
    let by_word = pages.iter().filter(|(_, url, _)| tokens(url).contains(&word)).count() as u64;
    assert_eq!(rerun["removed_by_reason"]["url_blocklist"].as_u64().unwrap_or(0), by_word, "{rerun}");
}
