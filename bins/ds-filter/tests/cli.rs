//! The binary's conventions: exit codes, the JSON summary, reruns, task sharding, the report.

use dsllm_core::parquet_io::DocumentWriter;
use dsllm_core::schema::Document;
use std::path::Path;
use std::process::Command;

fn ds_filter() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ds-filter"))
}

const PROSE: &str = "The old bridge over the river was built in 1843 by the people of the valley, who needed a way to bring their harvest to the market town. \
It stood for more than a century, and it survived three floods that destroyed most of the houses along the banks.\n\
In the spring of 1952 the council decided that the bridge had become too narrow for the trucks that now carried the grain. \
Engineers from the capital came to measure the stone arches, and they wrote a long report about the state of the foundations.";

fn write_dump(dir: &Path, dump: &str, files: usize) {
    for f in 0..files {
        let mut w = DocumentWriter::create(dir.join(dump).join(format!("part-{f:05}.parquet"))).unwrap();
        for i in 0..4 {
            let text = if i % 2 == 0 { format!("{PROSE}\nDocument {f}-{i} ends here with a sentence.") } else { "Buy now | cheap".to_string() };
            w.push(&Document { id: format!("{dump}-{f}-{i}"), dump: dump.into(), text, ..Default::default() }).unwrap();
        }
        w.finish().unwrap();
    }
}

fn run(args: &[&str]) -> serde_json::Value {
    let out = ds_filter().args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    serde_json::from_str(&stdout).unwrap()
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(ds_filter().arg("--bogus").output().unwrap().status.code(), Some(2));
    let dir = tempfile::tempdir().unwrap();
    let out = ds_filter().args(["--input", "/nonexistent/docs", "--output"]).arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let docs = dir.path().join("docs");
    write_dump(&docs, "CC-MAIN-2024-22", 1);
    let out = ds_filter().arg("--input").arg(&docs).arg("--output").arg(dir.path().join("o")).args(["--min-quality", "0.5"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "a threshold without a model: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn filters_mirrors_layout_reruns_and_shards() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    write_dump(&docs, "CC-MAIN-2024-22", 2);
    write_dump(&docs, "CC-MAIN-2024-26", 1);
    let out = dir.path().join("filtered");
    let (docs_s, out_s) = (docs.to_str().unwrap(), out.to_str().unwrap());
    let summary = run(&["--input", docs_s, "--output", out_s, "--threads", "2"]);
    assert_eq!((summary["read"].as_u64(), summary["kept"].as_u64(), summary["removed"].as_u64()), (Some(12), Some(6), Some(6)));
    assert_eq!(summary["removed_by_reason"]["gopher_short_doc"].as_u64(), Some(6));
    assert!(out.join("kept/CC-MAIN-2024-22/part-00001.parquet").exists());
    assert!(out.join("rejected/CC-MAIN-2024-26/part-00000.parquet").exists());
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["by_language"]["en"]["kept"].as_u64(), Some(6), "{report}");
    assert!(std::fs::read_to_string(out.join("report.md")).unwrap().contains("gopher_short_doc"));
    let rerun = run(&["--input", docs_s, "--output", out_s, "--threads", "2"]);
    assert_eq!(rerun["up_to_date"], true, "{rerun}");

    // Two tasks give the same counts; the second to finish merges the manifests.
    let sharded = dir.path().join("sharded");
    let sharded_s = sharded.to_str().unwrap();
    for task in ["0", "1"] {
        run(&["--input", docs_s, "--output", sharded_s, "--task-id", task, "--num-tasks", "2"]);
    }
    let merged: serde_json::Value = serde_json::from_slice(&std::fs::read(sharded.join("_manifest.json")).unwrap()).unwrap();
    assert_eq!(merged["counts"]["read"].as_u64(), Some(12));
    assert!(sharded.join("report.json").exists());
}

#[test]
fn default_config_parses_back() {
    let out = ds_filter().arg("default-config").output().unwrap();
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("filter.toml");
    std::fs::write(&path, &out.stdout).unwrap();
    let docs = dir.path().join("docs");
    write_dump(&docs, "CC-MAIN-2024-22", 1);
    let summary = run(&["--input", docs.to_str().unwrap(), "--output", dir.path().join("o").to_str().unwrap(), "--config", path.to_str().unwrap()]);
    assert_eq!(summary["read"].as_u64(), Some(4));
}
