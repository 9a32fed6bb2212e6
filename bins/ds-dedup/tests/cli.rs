//! The binary's conventions: exit codes and the one-line JSON summary.

use dsllm_core::parquet_io::DocumentWriter;
use dsllm_core::schema::Document;
use std::process::Command;

fn ds_dedup() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ds-dedup"))
}

#[test]
fn usage_errors_exit_2() {
    let status = ds_dedup().arg("--bogus").output().unwrap().status;
    assert_eq!(status.code(), Some(2));
    let dir = tempfile::tempdir().unwrap();
    let out = ds_dedup().args(["--input", "/nonexistent/docs", "--output"]).arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn dedups_a_small_dump_and_prints_a_json_summary() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs/CC-MAIN-2024-22");
    let mut w = DocumentWriter::create(docs.join("part-00000.parquet")).unwrap();
    let body = (0..120).map(|i| format!("token{}", i * 37 % 101)).collect::<Vec<_>>().join(" ");
    for (i, text) in [body.clone(), body.to_uppercase(), format!("{body} extra words at the end"), "something else entirely, short".to_string()]
        .into_iter()
        .enumerate()
    {
        w.push(&Document { id: format!("id{i}"), dump: "CC-MAIN-2024-22".into(), text, ..Default::default() }).unwrap();
    }
    w.finish().unwrap();
    let out = dir.path().join("dedup");
    let run = ds_dedup().arg("--input").arg(&docs).arg("--output").arg(&out).args(["--threads", "2"]).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let stdout = String::from_utf8(run.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1);
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!((summary["read"].as_u64(), summary["kept"].as_u64(), summary["removed"].as_u64()), (Some(4), Some(2), Some(2)));
    assert!(out.join("kept/CC-MAIN-2024-22/part-00000.parquet").exists());
    assert!(out.join("removed/CC-MAIN-2024-22/part-00000.parquet").exists());
    assert!(out.join("index/index.json").exists());
}
