//! End-to-end tests of `ds-scaling`: FLOPs of the paper's configs, a fit of synthetic runs
//! drawn from known laws, and a real (very small) sweep: plan → Makefile fragment of
//! ds-pretrain runs → collect → fit → plots, plus `ds-pretrain --budget` with the fitted laws.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::corpus;
use serde_json::Value;

fn run_ok(command: &mut Command) -> Value {
    let output = command.output().expect("the binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{command:?} failed ({}):\n{stderr}", output.status);
    let stdout = String::from_utf8(output.stdout).expect("utf-8 stdout");
    serde_json::from_str(stdout.lines().last().expect("a summary line")).unwrap_or_else(|e| panic!("summary is not JSON ({e}): {stdout}"))
}

fn scaling() -> Command {
    Command::new(dsllm::binary("ds-scaling"))
}

fn config(name: &str) -> PathBuf {
    std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())).join("pipelines/configs").join(format!("{name}.toml"))
}

#[test]
fn flops_of_the_papers_configs() {
    let summary = run_ok(scaling().arg("flops").arg("--config").arg(config("7b")).arg(config("67b")).arg("--table3"));
    let m = |i: usize| summary["models"][i]["report"]["m"].as_f64().unwrap();
    // 72·30·4096² + 12·30·4096·4096 and 95·8192·(72·8192 + 12·4096)
    assert_eq!(m(0), 42_278_584_320.0);
    assert_eq!(m(1), 497_276_682_240.0);
    assert_eq!(summary["table3"].as_array().unwrap().len(), 7);
    let status = scaling().args(["flops", "--config", "/nonexistent.toml"]).output().unwrap().status;
    assert_eq!(status.code(), Some(2), "an unreadable config is a usage error");
}

#[test]
fn fits_synthetic_runs_and_draws_the_figures() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs.parquet");
    let truth = run_ok(scaling().arg("synth").arg("--output").arg(&runs).args(["--noise", "0.001"]));
    let out = dir.path().join("fits");
    let summary = run_ok(scaling().arg("fit").arg("--runs").arg(&runs).arg("--output").arg(&out).args(["--bootstrap", "300"]));
    for (law, key) in [("model_scale", "model_scale"), ("lr", "lr"), ("batch_tokens", "batch_tokens"), ("data_tokens", "data_tokens")] {
        let want = truth["truth"]["laws"][law]["exponent"].as_f64().unwrap();
        let got = summary[key]["exponent"].as_f64().unwrap();
        let ci = summary[key]["ci"].as_array().unwrap();
        assert!((got / want - 1.0).abs() < 0.02, "{law}: {got} vs {want}");
        assert!(ci[0].as_f64().unwrap() <= want && want <= ci[1].as_f64().unwrap(), "{law}: {ci:?} misses {want}");
    }
    for figure in ["fig2_batch_lr.png", "fig3_lr_batch_laws.png", "fig4_isoflop.png", "fig5_loss_vs_compute.png"] {
        let bytes = std::fs::read(out.join(figure)).unwrap_or_else(|e| panic!("{figure}: {e}"));
        assert_eq!(&bytes[1..4], b"PNG");
    }
    let fits: Value = serde_json::from_slice(&std::fs::read(out.join("fits.json")).unwrap()).unwrap();
    assert_eq!(fits["laws_source"]["model_scale"], "fitted");
    assert!(out.join("_manifest.json").exists() && out.join("fits.md").exists());
    let again = run_ok(scaling().arg("fit").arg("--runs").arg(&runs).arg("--output").arg(&out).args(["--bootstrap", "300"]));
    assert_eq!(again["up_to_date"], true, "a rerun with the same inputs is skipped");
}

fn read_summary(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(text.lines().last().unwrap()).unwrap()
}

#[test]
fn real_sweep_from_plan_to_fit_and_a_budget_run() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan");
    let runs = dir.path().join("runs");
    // Three shapes on one IsoFLOP curve of a few hundred thousand FLOPs... of tokens: tiny and quick.
    let planned = run_ok(
        scaling()
            .args(["plan-isoflop", "--budgets", "4e9", "--points", "5", "--span", "16", "--m-factor", "4", "--seq-len", "64", "--micro-batch", "2"])
            .arg("--config")
            .arg(config("tiny"))
            .arg("--output")
            .arg(&plan)
            .arg("--runs")
            .arg(&runs),
    );
    assert_eq!(planned["runs"], 3);
    let bin_dir = dsllm::binary("ds-pretrain").parent().unwrap().to_path_buf();
    let status = Command::new("make")
        .arg("-s")
        .arg("-f")
        .arg(plan.join("plan.mk"))
        .arg("scaling-runs")
        .arg(format!("SCALING_BIN={}", bin_dir.display()))
        .arg(format!("SCALING_DATA={}", corpus().join("tokens").display()))
        .arg("SCALING_THREADS=2")
        .arg("SCALING_TRAIN_FLAGS=--eval-every 0 --eval-batches 4 --save-every 0 --save-minutes 0 --backend cpu")
        .status()
        .expect("make runs");
    assert!(status.success(), "the plan's Makefile fragment failed");
    let table = dir.path().join("runs.parquet");
    let collected = run_ok(scaling().arg("collect").arg("--runs").arg(&runs).arg("--output").arg(&table));
    assert_eq!(collected["collected"], 3);
    let fits_dir = dir.path().join("fits");
    let fitted = run_ok(scaling().arg("fit").arg("--runs").arg(&table).arg("--output").arg(&fits_dir).args(["--bootstrap", "50", "--predict", "1e10"]));
    assert_eq!(fitted["runs"], 3);
    let fits: Value = serde_json::from_slice(&std::fs::read(fits_dir.join("fits.json")).unwrap()).unwrap();
    let budget = &fits["budgets"][0];
    assert_eq!(budget["runs"], 3);
    // Each run trained its planned budget: C = M·D within one step's rounding.
    let rows: Vec<Value> = std::fs::read_dir(&runs).unwrap().map(|e| read_summary(&e.unwrap().path().join("summary.json"))).collect();
    for row in &rows {
        let c = row["flops_per_token"]["m"].as_f64().unwrap() * row["tokens_seen"].as_f64().unwrap();
        assert!((c / 4e9 - 1.0).abs() < 0.1, "{c}");
    }

    // ds-pretrain --budget with the fitted laws picks a shape and says so.
    let out = dir.path().join("budget-run");
    let output = Command::new(dsllm::binary("ds-pretrain"))
        .args(["train", "--budget", "1e10", "--micro-batch", "2", "--eval-batches", "4", "--save-every", "0", "--save-minutes", "0", "--backend", "cpu", "--threads", "2"])
        .arg("--config")
        .arg(config("tiny"))
        .arg("--laws")
        .arg(fits_dir.join("fits.json"))
        .arg("--data")
        .arg(corpus().join("tokens"))
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("budget C 1.000e10") && stderr.contains("shape L"), "{stderr}");
    let laws = &fits["laws"];
    let m_opt = laws["model_scale"]["coefficient"].as_f64().unwrap() * 1e10f64.powf(laws["model_scale"]["exponent"].as_f64().unwrap());
    let summary: Value = serde_json::from_str(String::from_utf8_lossy(&output.stdout).lines().last().unwrap()).unwrap();
    let m = summary["flops_per_token"]["m"].as_f64().unwrap();
    // The smallest shape the chooser makes, L1-d32 at l_seq 64: M = 72·32² + 12·32·64. A sweep this
    // small can fit M_opt below it; then that shape is the right answer.
    let smallest = 72.0 * 32.0 * 32.0 + 12.0 * 32.0 * 64.0;
    assert!((m / m_opt).ln().abs() < 0.5 || (m_opt < smallest && m == smallest), "the chosen shape's M {m} is near M_opt {m_opt}");
    assert!((m * summary["tokens_seen"].as_f64().unwrap() / 1e10 - 1.0).abs() < 0.1);
}
