//! End-to-end: ds-synth writes a small multi-dump crawl, ds-ingest turns it into documents
//! Parquet; every record is accounted for, reruns are no-ops, job-array tasks give the same
//! documents as one run, and usage errors exit with 2.

use arrow::array::{Array, StringArray};
use dsllm::binary;
use dsllm_core::manifest::Manifest;
use dsllm_core::parquet_io::read_batches;
use std::path::Path;
use std::process::Command;

fn run(bin: &str, args: &[&str]) -> (i32, serde_json::Value, String) {
    let out = Command::new(binary(bin)).args(args).output().expect("run binary");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let summary = stdout.lines().last().and_then(|l| serde_json::from_str(l).ok()).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), summary, stderr)
}

fn ids(dir: &Path) -> Vec<String> {
    let mut ids = Vec::new();
    let mut parts: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|x| x == "parquet")).collect();
    parts.sort();
    for p in parts {
        for batch in read_batches(&p, Some(&["id"])).unwrap() {
            let batch = batch.unwrap();
            let col = batch.column(0).as_any().downcast_ref::<StringArray>().unwrap();
            ids.extend((0..col.len()).map(|i| col.value(i).to_string()));
        }
    }
    ids.sort();
    ids
}

/// WARC records in a WET file: one gzip member each.
fn records_in(path: &Path) -> u64 {
    let mut n = 0;
    dsllm_warc::record::read_records(std::fs::File::open(path).unwrap(), |_| n += 1).unwrap();
    n
}

#[test]
fn synth_then_ingest_accounts_for_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let synth = dir.path().join("synth");
    let (code, summary, err) = run("ds-synth", &["--output", synth.to_str().unwrap(), "--docs-per-dump", "150", "--dumps", "2", "--files-per-dump", "3"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(summary["documents"], 300);

    let dump = "CC-MAIN-2024-14";
    let input = synth.join(dump);
    let out = dir.path().join("docs").join(dump);
    let (code, summary, err) = run("ds-ingest", &["--input", input.to_str().unwrap(), "--output", out.to_str().unwrap(), "--threads", "2"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(summary["kept"], 150);
    assert_eq!(summary["skipped_up_to_date"], false);

    let manifest = Manifest::of_folder(&out).unwrap().expect("manifest written");
    let records: u64 = manifest.inputs.iter().map(|i| records_in(&i.path)).sum();
    assert_eq!(manifest.counts.read, records, "manifest counts every record of the input");
    assert!(manifest.counts.is_balanced());
    assert_eq!(manifest.counts.removed_by_reason["warcinfo"], 3);
    assert_eq!(ids(&out).len(), 150);

    // A rerun with the same inputs is a no-op.
    let (code, summary, _) = run("ds-ingest", &["--input", input.to_str().unwrap(), "--output", out.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert_eq!(summary["skipped_up_to_date"], true);

    // Two tasks of a job array write the same documents as one run, and a merged manifest.
    let sharded = dir.path().join("sharded");
    for task in ["0", "1"] {
        let (code, _, err) = run("ds-ingest", &["--input", input.to_str().unwrap(), "--output", sharded.to_str().unwrap(), "--task-id", task, "--num-tasks", "2", "--threads", "1"]);
        assert_eq!(code, 0, "{err}");
    }
    assert_eq!(ids(&sharded), ids(&out));
    let merged = Manifest::of_folder(&sharded).unwrap().expect("merged manifest");
    assert_eq!(merged.counts, manifest.counts);

    // The same documents whatever the thread count: byte-identical part files.
    let one_thread = dir.path().join("one");
    let (code, _, _) = run("ds-ingest", &["--input", input.to_str().unwrap(), "--output", one_thread.to_str().unwrap(), "--threads", "1"]);
    assert_eq!(code, 0);
    for part in ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"] {
        assert_eq!(std::fs::read(out.join(part)).unwrap(), std::fs::read(one_thread.join(part)).unwrap(), "{part}");
    }
}

#[test]
fn usage_errors_exit_2_and_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run("ds-ingest", &["--input", dir.path().join("missing").to_str().unwrap(), "--output", dir.path().join("o").to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("missing"), "{err}");

    // A WET file that does not name its dump needs --dump.
    let wet = dir.path().join("plain.warc.wet");
    std::fs::write(&wet, dsllm_warc::write::conversion("https://a.example/", "2024-01-01T00:00:00Z", "x", None, "hello world")).unwrap();
    let (code, _, err) = run("ds-ingest", &["--input", wet.to_str().unwrap(), "--output", dir.path().join("o").to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--dump") && err.contains("plain.warc.wet"), "{err}");
    let (code, summary, err) = run("ds-ingest", &["--input", wet.to_str().unwrap(), "--dump", "CC-MAIN-2000-01", "--output", dir.path().join("o").to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(summary["kept"], 1);

    // An ARC file (Common Crawl before 2013) in a folder is refused by name, not quarantined record by record.
    let old = dir.path().join("old");
    std::fs::create_dir(&old).unwrap();
    std::fs::write(old.join("CC-MAIN-2009-x-00000.arc.gz"), b"not read").unwrap();
    let (code, _, err) = run("ds-ingest", &["--input", old.to_str().unwrap(), "--output", dir.path().join("o2").to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("CC-MAIN-2009-x-00000.arc.gz") && err.contains("ARC"), "{err}");
}
