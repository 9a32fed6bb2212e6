//! ds-remix with the real binaries on a hand-made corpus (English far larger than Chinese, a
//! little French, two input folders): the shares reach the target within 1%, every document is
//! accounted for (read = kept + dropped), the output is identical with 1 and 2 threads, a rerun
//! skips itself, errors name the file and the problem, and the next stages honour `repeat`
//! (ds-pack writes copies, ds-tokenizer skips dropped documents).

use arrow::array::{Array, StringArray, UInt32Array};
use dsllm::{binary, parquet_under};
use dsllm_core::parquet_io::{read_batches, DocumentWriter};
use dsllm_core::schema::Document;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(binary(bin)).args(args).output().expect("run binary")
}

fn run_ok(bin: &str, args: &[&str]) -> serde_json::Value {
    let out = run(bin, args);
    assert!(out.status.success(), "{bin} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(stdout.lines().last().unwrap_or("{}")).unwrap_or_else(|e| panic!("{bin}: summary {stdout}: {e}"))
}

/// Text of document `i` in a language: lengths vary so byte and document shares differ.
fn text(lang: &str, i: usize) -> String {
    let sentence = match lang {
        "zh" => "今天的天气很好，我们一起去公园散步。",
        "fr" => "Le petit chat dort sur la chaise de la cuisine. ",
        _ => "The quick brown fox jumps over the lazy dog near the river bank. ",
    };
    sentence.repeat(2 + (i * 7) % 13)
}

/// `dir/a/part-00000.parquet` and `dir/b/part-00000.parquet`: en 400, zh 60, fr 30 documents.
fn corpus(dir: &Path) -> PathBuf {
    let input = dir.join("kept");
    let mut writers = [DocumentWriter::create(input.join("a/part-00000.parquet")).unwrap(), DocumentWriter::create(input.join("b/part-00000.parquet")).unwrap()];
    let mut n = 0;
    for (lang, count) in [("en", 400), ("zh", 60), ("fr", 30)] {
        for i in 0..count {
            let doc = Document {
                id: format!("{lang}-{i:05}"),
                dump: "CC-MAIN-TEST".into(),
                url: format!("https://site{}.example/{lang}/{i}", i % 3),
                domain: format!("site{}.example", i % 3),
                date: "2024-01-01T00:00:00Z".into(),
                lang: Some(lang.into()),
                lang_score: Some(0.9),
                text: text(lang, i),
            };
            writers[n % 2].push(&doc).unwrap();
            n += 1;
        }
    }
    for w in writers {
        w.finish().unwrap();
    }
    input
}

/// (lang -> (bytes counting copies, documents counting copies), rows) of Parquet under `dir`.
fn tally(dir: &Path) -> (BTreeMap<String, (u64, u64)>, u64) {
    let mut by_lang = BTreeMap::new();
    let mut rows = 0;
    for path in parquet_under(dir) {
        for batch in read_batches(&path, Some(&["lang", "text", "group", "repeat"])).unwrap() {
            let batch = batch.unwrap();
            let col = |n: &str| batch.column_by_name(n).unwrap().as_any().downcast_ref::<StringArray>().unwrap().clone();
            let (lang, text, group) = (col("lang"), col("text"), col("group"));
            let repeat = batch.column_by_name("repeat").unwrap().as_any().downcast_ref::<UInt32Array>().unwrap().clone();
            for r in 0..batch.num_rows() {
                assert_eq!(lang.value(r), group.value(r), "group is the lang column");
                let e = by_lang.entry(lang.value(r).to_string()).or_insert((0u64, 0u64));
                e.0 += text.value(r).len() as u64 * repeat.value(r) as u64;
                e.1 += repeat.value(r) as u64;
                rows += 1;
            }
        }
    }
    (by_lang, rows)
}

const CONFIG: &str = "group_by = \"lang\"\nunit = \"bytes\"\nseed = 7\nmax_repeat = 3.0\n[groups.en]\nweight = 0.5\n[groups.zh]\nweight = 0.5\n[default]\nweight = 0.0\n";

#[test]
fn remix_reaches_the_target_shares_and_accounts_for_every_document() {
    let dir = tempfile::tempdir().unwrap();
    let input = corpus(dir.path());
    let config = dir.path().join("mix.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let (input_s, config_s) = (input.to_str().unwrap(), config.to_str().unwrap());
    let out1 = dir.path().join("mix1");
    let out2 = dir.path().join("mix2");
    let summary = run_ok("ds-remix", &["--input", input_s, "--output", out1.to_str().unwrap(), "--config", config_s, "--threads", "1"]);
    run_ok("ds-remix", &["--input", input_s, "--output", out2.to_str().unwrap(), "--config", config_s, "--threads", "2"]);
    println!("{summary}");

    // Shares of bytes, counting copies, straight from the Parquet: 50/50 within 1%.
    let (after, kept_rows) = tally(&out1);
    let total: u64 = after.values().map(|v| v.0).sum();
    for lang in ["en", "zh"] {
        let share = after[lang].0 as f64 / total as f64;
        println!("{lang}: {:.4} of the bytes", share);
        assert!((share - 0.5).abs() < 0.01, "{lang}: share {share}");
    }
    assert!(!after.contains_key("fr"), "weight 0 drops French: {after:?}");
    // zh is small: its documents are repeated, never more than max_repeat (3) times.
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(out1.join("report.json")).unwrap()).unwrap();
    let zh = report["groups"].as_array().unwrap().iter().find(|g| g["group"] == "zh").unwrap();
    assert!(zh["max_repeat"].as_u64().unwrap() <= 3 && zh["mean_repeat"].as_f64().unwrap() > 1.5, "{zh}");
    assert!(report["max_share_error"].as_f64().unwrap() < 0.01);

    // Every document is accounted for: read = kept + dropped, and the files agree.
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(out1.join("_manifest.json")).unwrap()).unwrap();
    let counts = &manifest["counts"];
    let (read, kept, removed) = (counts["read"].as_u64().unwrap(), counts["kept"].as_u64().unwrap(), counts["removed"].as_u64().unwrap());
    assert_eq!(read, 490);
    assert_eq!(read, kept + removed);
    assert_eq!(kept_rows, kept, "rows under mix/ (not counting _dropped/)");
    let dropped_rows: u64 = parquet_under(&out1.join("_dropped")).iter().map(|p| dsllm_core::parquet_io::row_count(p).unwrap()).sum();
    assert_eq!(dropped_rows, removed);
    assert_eq!(counts["removed_by_reason"]["remix_group_weight_zero"].as_u64(), Some(30), "{counts}");
    assert!(out1.join("a/part-00000.parquet").exists() && out1.join("report.png").exists() && out1.join("report.md").exists());

    // Same output whatever the thread count.
    let files1: Vec<PathBuf> = parquet_under(&out1).into_iter().chain(parquet_under(&out1.join("_dropped"))).collect();
    let files2: Vec<PathBuf> = parquet_under(&out2).into_iter().chain(parquet_under(&out2.join("_dropped"))).collect();
    assert!(files1.len() > 2, "kept and dropped files: {files1:?}");
    assert_eq!(files1.len(), files2.len());
    for (a, b) in files1.iter().zip(&files2) {
        assert_eq!(a.strip_prefix(&out1).unwrap(), b.strip_prefix(&out2).unwrap());
        assert!(std::fs::read(a).unwrap() == std::fs::read(b).unwrap(), "{} differs between 1 and 2 threads", a.display());
    }

    // A rerun with the same inputs and parameters skips itself; another seed reruns.
    let again = run_ok("ds-remix", &["--input", input_s, "--output", out1.to_str().unwrap(), "--config", config_s]);
    assert_eq!(again["skipped_up_to_date"], true, "{again}");
    let reseeded = run_ok("ds-remix", &["--input", input_s, "--output", out2.to_str().unwrap(), "--config", config_s, "--seed", "8"]);
    assert!(reseeded.get("skipped_up_to_date").is_none(), "{reseeded}");

    // ds-pack writes each kept document `repeat` times; ds-tokenizer learns from each once and
    // skips documents the remix dropped.
    let tokenizer = dir.path().join("tokenizer");
    let with_dropped = out1.join("_dropped");
    let trained = run_ok(
        "ds-tokenizer",
        &["train", "--input", out1.to_str().unwrap(), with_dropped.to_str().unwrap(), "--output", tokenizer.to_str().unwrap(), "--learned-tokens", "300", "--model-vocab", "0"],
    );
    println!("{trained}");
    let tok_manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(tokenizer.join("_manifest.json")).unwrap()).unwrap();
    assert_eq!(tok_manifest["counts"]["removed_by_reason"]["remix_repeat_zero"].as_u64(), Some(removed), "{}", tok_manifest["counts"]);
    assert_eq!(tok_manifest["counts"]["read"].as_u64(), Some(read));
    let tokens = dir.path().join("tokens");
    let packed = run_ok(
        "ds-pack",
        &["--input", out1.to_str().unwrap(), "--tokenizer", tokenizer.to_str().unwrap(), "--output", tokens.to_str().unwrap(), "--seq-len", "64", "--val-fraction", "0"],
    );
    let copies: u64 = after.values().map(|v| v.1).sum();
    let splits = packed["index"]["splits"].as_object().unwrap();
    let (documents, written): (u64, u64) = splits.values().fold((0, 0), |(d, c), s| (d + s["documents"].as_u64().unwrap(), c + s["document_copies"].as_u64().unwrap()));
    assert_eq!(documents, kept, "{packed}");
    assert_eq!(written, copies, "ds-pack writes every copy: {packed}");
}

#[test]
fn errors_name_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let input = corpus(dir.path());
    let out = dir.path().join("mix");
    let missing = run("ds-remix", &["--input", input.to_str().unwrap(), "--output", out.to_str().unwrap(), "--group-by", "topic"]);
    let err = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(1), "{err}");
    assert!(err.contains("part-00000.parquet") && err.contains("no column `topic`"), "{err}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[groups.en]\nweight = 2\n").unwrap();
    let out_bad = run("ds-remix", &["--input", input.to_str().unwrap(), "--output", out.to_str().unwrap(), "--config", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out_bad.stderr);
    assert_eq!(out_bad.status.code(), Some(2), "{err}");
    assert!(err.contains("bad.toml") && err.contains("weight 2"), "{err}");

    // Grouping by domain (a column here) without a config keeps everything as it is.
    let summary = run_ok("ds-remix", &["--input", input.to_str().unwrap(), "--output", out.to_str().unwrap(), "--group-by", "domain"]);
    assert_eq!(summary["kept"].as_u64(), Some(490), "{summary}");
}
