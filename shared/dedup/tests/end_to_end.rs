//! The stage on small Parquet inputs written with core's DocumentWriter: cross-dump behaviour,
//! incremental = all at once, determinism over threads and tasks, restarts, manifests.

use arrow::array::{Array, Float32Array, StringArray};
use dsllm_core::inputs::TaskSlice;
use dsllm_core::manifest::Manifest;
use dsllm_core::parquet_io::{read_batches, DocumentWriter};
use dsllm_core::schema::Document;
use dsllm_dedup::pipeline::{DedupJob, Phase};
use dsllm_dedup::DedupConfig;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const DUMPS: [&str; 3] = ["CC-MAIN-2024-10", "CC-MAIN-2024-18", "CC-MAIN-2024-22"];

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

fn article(seed: u64, words: usize) -> String {
    let mut rng = Rng(seed * 7919 + 1);
    let mut s = String::new();
    for i in 0..words {
        s.push_str(&format!("word{} ", rng.next() % 5000));
        if i % 17 == 16 {
            s.push_str(".\n");
        }
    }
    s
}

/// Edits a text lightly: a few words replaced, a line of boilerplate appended.
fn near_copy(text: &str, seed: u64) -> String {
    let mut words: Vec<String> = text.split(' ').map(str::to_string).collect();
    let mut rng = Rng(seed);
    for _ in 0..words.len() / 100 {
        let i = (rng.next() as usize) % words.len();
        words[i] = format!("edit{}", rng.next() % 100);
    }
    words.join(" ") + "\nShare this page on social media"
}

/// Three dumps, two files each. Originals are unique articles; dump 2 and 3 repeat some of the
/// earlier ones exactly or lightly edited, and each dump has within-dump copies.
fn corpus(root: &Path) -> Vec<PathBuf> {
    let mut folders = vec![];
    let mut serial = 0u64;
    for (d, dump) in DUMPS.iter().enumerate() {
        let folder = root.join("docs").join(dump);
        for part in 0..2 {
            let mut w = DocumentWriter::create(folder.join(format!("part-{part:05}.parquet"))).unwrap();
            for k in 0..60u64 {
                serial += 1;
                let original = |d: usize, k: u64| article(10_000 * (d as u64 + 1) + 100 * part + k, 200 + 3 * k as usize);
                let text = match k % 10 {
                    0 if d > 0 => original(0, k + 5),                          // exact copy of a dump-1 original
                    1 if d > 0 => near_copy(&original(0, k + 5), serial),      // edited copy of a dump-1 original
                    2 => original(d, k + 3).to_uppercase(),                   // exact (normalized) copy within the dump
                    3 => near_copy(&original(d, k + 3), serial),               // near copy within the dump
                    4 if part == 0 && k == 4 => " ... — !!! ".to_string(),     // nothing left: quarantined
                    _ => original(d, k),
                };
                w.push(&Document {
                    id: format!("{:032x}", serial.wrapping_mul(0x9E3779B97F4A7C15)),
                    dump: dump.to_string(),
                    url: format!("https://site{}.example/{serial}", k % 7),
                    domain: format!("site{}.example", k % 7),
                    date: "2024-03-01T00:00:00Z".into(),
                    lang: Some("en".into()),
                    lang_score: None,
                    text,
                })
                .unwrap();
            }
            w.finish().unwrap();
        }
        folders.push(folder);
    }
    folders
}

fn inputs(folders: &[&PathBuf]) -> Vec<PathBuf> {
    let patterns: Vec<String> = folders.iter().map(|f| f.to_string_lossy().to_string()).collect();
    dsllm_core::inputs::expand(&patterns, |p| p.extension().is_some_and(|e| e == "parquet")).unwrap()
}

fn job(inputs: Vec<PathBuf>, output: &Path, index: &Path) -> DedupJob {
    DedupJob {
        inputs,
        output: output.to_path_buf(),
        index: index.to_path_buf(),
        config: DedupConfig::default(),
        task: TaskSlice::default(),
        memory_mb: 1,
        force: false,
    }
}

/// Every Parquet file under `dir` (relative path → bytes), and the index files.
fn files_under(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if p.is_dir() {
                if name != "_work" {
                    stack.push(p);
                }
            } else if name.ends_with(".parquet") || name.ends_with(".zst") {
                out.insert(p.strip_prefix(dir).unwrap().to_string_lossy().to_string(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// (id, dup_of, dup_of_dump, similarity) of every removed row, and the kept ids.
fn decisions(output: &Path) -> (Vec<String>, Vec<(String, String, String, f32)>) {
    let mut kept = vec![];
    let mut removed = vec![];
    for (name, _) in files_under(output) {
        if name.starts_with("index") {
            continue;
        }
        for batch in read_batches(output.join(&name), None).unwrap() {
            let batch = batch.unwrap();
            let col = |n: &str| batch.column_by_name(n).unwrap().as_any().downcast_ref::<StringArray>().unwrap().clone();
            let ids = col("id");
            if name.starts_with("kept") {
                kept.extend((0..ids.len()).map(|i| ids.value(i).to_string()));
            } else if name.starts_with("removed") {
                let (dup_of, dump) = (col("dup_of"), col("dup_of_dump"));
                let sim = batch.column_by_name("similarity").unwrap().as_any().downcast_ref::<Float32Array>().unwrap().clone();
                for i in 0..ids.len() {
                    removed.push((ids.value(i).to_string(), dup_of.value(i).to_string(), dump.value(i).to_string(), sim.value(i)));
                }
            }
        }
    }
    kept.sort();
    removed.sort_by(|a, b| a.0.cmp(&b.0));
    (kept, removed)
}

#[test]
fn finds_planted_duplicates_and_accounts_for_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let folders = corpus(dir.path());
    let out = dir.path().join("dedup");
    let summary = job(inputs(&folders.iter().collect::<Vec<_>>()), &out, &out.join("index")).run(Phase::All).unwrap();
    assert_eq!(summary["read"], 360);
    let manifest = Manifest::of_folder(&out).unwrap().unwrap();
    assert!(manifest.counts.is_balanced());
    assert_eq!(manifest.counts.quarantined, 3, "one empty text per dump");
    // Dump 1: per file 6 exact + 6 near copies within the dump. Dumps 2, 3: also 6 exact + 6 edited
    // copies of dump 1 per file.
    let reasons = &manifest.counts.removed_by_reason;
    assert_eq!(reasons["exact_duplicate"], 6 * 6 + 4 * 6, "{reasons:?}");
    assert_eq!(reasons["near_duplicate"], 6 * 6 + 4 * 6, "{reasons:?}");
    let (_, removed) = decisions(&out);
    assert!(removed.iter().filter(|r| r.2 == DUMPS[0]).count() >= 48, "cross-dump removals name dump 1");
    assert!(removed.iter().all(|r| r.3 >= 0.8 && !r.1.is_empty()));
    assert!(!out.join("_work").exists(), "work folder removed after success");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["cumulative"].as_array().unwrap().len(), 3);
    assert!(std::fs::read_to_string(out.join("report.md")).unwrap().contains("Table 1"));

    // A rerun with the same inputs is a no-op.
    let again = job(inputs(&folders.iter().collect::<Vec<_>>()), &out, &out.join("index")).run(Phase::All).unwrap();
    assert_eq!(again["up_to_date"], true);
}

#[test]
fn incremental_equals_all_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let folders = corpus(dir.path());
    let all = dir.path().join("all");
    job(inputs(&folders.iter().collect::<Vec<_>>()), &all, &all.join("index")).run(Phase::All).unwrap();

    let index = dir.path().join("index");
    let mut kept = vec![];
    let mut removed = vec![];
    for (k, folder) in folders.iter().enumerate() {
        let out = dir.path().join(format!("inc-{k}"));
        job(inputs(&[folder]), &out, &index).run(Phase::All).unwrap();
        let (mut kk, rr) = decisions(&out);
        kept.append(&mut kk);
        removed.extend(rr);
    }
    kept.sort();
    removed.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!((kept, removed), decisions(&all));
    let idx_all: BTreeMap<_, _> = files_under(&all.join("index"));
    assert_eq!(idx_all, files_under(&index), "same index, byte for byte");
    // The report of the last incremental run covers all dumps of the index.
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("inc-2/report.json")).unwrap()).unwrap();
    assert_eq!(report, serde_json::from_slice::<serde_json::Value>(&std::fs::read(all.join("report.json")).unwrap()).unwrap());
}

#[test]
fn same_bytes_for_threads_and_tasks_and_after_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let folders = corpus(dir.path());
    let files = inputs(&folders.iter().collect::<Vec<_>>());
    let run_with_threads = |threads: usize, name: &str| {
        let out = dir.path().join(name);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| job(files.clone(), &out, &out.join("index")).run(Phase::All).unwrap());
        files_under(&out)
    };
    let one = run_with_threads(1, "t1");
    assert_eq!(one, run_with_threads(2, "t2"), "1 vs 2 threads");

    // Four tasks, phase by phase, as a job array would run them.
    let out = dir.path().join("tasks");
    let tasked = |task_id| DedupJob { task: TaskSlice::new(task_id, 4).unwrap(), ..job(files.clone(), &out, &out.join("index")) };
    for t in 0..4 {
        tasked(t).run(Phase::Signatures).unwrap();
    }
    assert!(matches!(tasked(0).run(Phase::Write), Err(dsllm_core::Error::Usage(_))), "write before cluster is refused");
    tasked(0).run(Phase::Cluster).unwrap();
    for t in [2, 0, 3, 1] {
        tasked(t).run(Phase::Write).unwrap();
    }
    assert_eq!(one, files_under(&out), "1 vs 4 tasks");
    let merged = Manifest::of_folder(&out).unwrap().unwrap();
    assert_eq!(merged.counts, Manifest::of_folder(dir.path().join("t1")).unwrap().unwrap().counts);

    // A run killed after part of the signature phase, with a stale temporary left behind, then
    // rerun from scratch with `--phase all`.
    let out = dir.path().join("killed");
    DedupJob { task: TaskSlice::new(1, 3).unwrap(), ..job(files.clone(), &out, &out.join("index")) }.run(Phase::Signatures).unwrap();
    std::fs::create_dir_all(out.join("kept/CC-MAIN-2024-10")).unwrap();
    std::fs::write(out.join("kept/CC-MAIN-2024-10/.part-00000.parquet.tmp-1-0"), b"partial").unwrap();
    job(files.clone(), &out, &out.join("index")).run(Phase::All).unwrap();
    assert_eq!(one, files_under(&out), "killed and rerun");
}

#[test]
fn an_index_of_other_parameters_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let folders = corpus(dir.path());
    let index = dir.path().join("index");
    job(inputs(&[&folders[0]]), &dir.path().join("a"), &index).run(Phase::All).unwrap();
    let mut other = job(inputs(&[&folders[1]]), &dir.path().join("b"), &index);
    other.config.bands = 20;
    let err = other.run(Phase::All).unwrap_err();
    assert!(matches!(err, dsllm_core::Error::Usage(_)) && err.to_string().contains("index"), "{err}");
}
