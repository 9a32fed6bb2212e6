//! ds-dedup against ds-synth's planted duplicates: precision and recall of duplicate pairs
//! (issue 3's acceptance: both >= 0.95), printed.

use arrow::array::{Array, Int64Array, StringArray};
use dsllm::{binary, parquet_under};
use dsllm_core::parquet_io::read_batches;
use std::collections::HashMap;
use std::process::Command;

fn run(bin: &str, args: &[&str]) {
    let out = Command::new(binary(bin)).args(args).output().expect("run binary");
    assert!(out.status.success(), "{bin} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn strings<'a>(batch: &'a arrow::array::RecordBatch, name: &str) -> &'a StringArray {
    batch.column_by_name(name).unwrap().as_any().downcast_ref::<StringArray>().unwrap()
}

/// Groups ids by a cluster key and counts the unordered pairs inside each group.
fn pairs(clusters: &HashMap<String, String>) -> std::collections::HashSet<(String, String)> {
    let mut groups: HashMap<&String, Vec<&String>> = HashMap::new();
    for (id, cluster) in clusters {
        groups.entry(cluster).or_default().push(id);
    }
    let mut out = std::collections::HashSet::new();
    for members in groups.values_mut() {
        members.sort();
        for i in 0..members.len() {
            for j in i + 1..members.len() {
                out.insert((members[i].clone(), members[j].clone()));
            }
        }
    }
    out
}

fn find(parent: &mut HashMap<String, String>, x: &str) -> String {
    let p = parent.get(x).cloned().unwrap_or_else(|| x.to_string());
    if p == x {
        return p;
    }
    let root = find(parent, &p);
    parent.insert(x.to_string(), root.clone());
    root
}

#[test]
fn planted_duplicates_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let synth = d.join("synth");
    run("ds-synth", &["--output", synth.to_str().unwrap(), "--docs-per-dump", "1000"]);
    for dump in ["CC-MAIN-2024-10", "CC-MAIN-2024-14", "CC-MAIN-2024-18"] {
        run("ds-ingest", &["--input", synth.join(dump).to_str().unwrap(), "--output", d.join("docs").join(dump).to_str().unwrap()]);
    }
    run("ds-dedup", &["--input", d.join("docs").to_str().unwrap(), "--output", d.join("dedup").to_str().unwrap()]);

    // Planted: documents sharing a dup_cluster.
    let mut planted = HashMap::new();
    for batch in read_batches(synth.join("ground_truth.parquet"), Some(&["id", "dup_cluster"])).unwrap() {
        let batch = batch.unwrap();
        let ids = strings(&batch, "id");
        let clusters = batch.column_by_name("dup_cluster").unwrap().as_any().downcast_ref::<Int64Array>().unwrap();
        for i in 0..ids.len() {
            if !clusters.is_null(i) {
                planted.insert(ids.value(i).to_string(), clusters.value(i).to_string());
            }
        }
    }
    // Found: removed documents joined to what they duplicate, as connected components.
    let mut parent: HashMap<String, String> = HashMap::new();
    let mut edges = Vec::new();
    for file in parquet_under(&d.join("dedup/removed")) {
        for batch in read_batches(&file, Some(&["id", "dup_of"])).unwrap() {
            let batch = batch.unwrap();
            let (ids, dup_of) = (strings(&batch, "id"), strings(&batch, "dup_of"));
            for i in 0..ids.len() {
                edges.push((ids.value(i).to_string(), dup_of.value(i).to_string()));
            }
        }
    }
    for (a, b) in &edges {
        let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
        if ra != rb {
            parent.insert(ra, rb);
        }
    }
    let members: Vec<String> = edges.iter().flat_map(|(a, b)| [a.clone(), b.clone()]).collect();
    let found: HashMap<String, String> = members.iter().map(|m| (m.clone(), find(&mut parent, m))).collect();

    let (truth, predicted) = (pairs(&planted), pairs(&found));
    let hits = truth.intersection(&predicted).count() as f64;
    let precision = hits / predicted.len().max(1) as f64;
    let recall = hits / truth.len().max(1) as f64;
    eprintln!(
        "dedup vs planted duplicates: {} planted pairs, {} found pairs, precision {precision:.4}, recall {recall:.4}",
        truth.len(),
        predicted.len()
    );
    assert!(precision >= 0.95 && recall >= 0.95, "precision {precision:.4}, recall {recall:.4}");
}
