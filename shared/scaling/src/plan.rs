//! Sweep plans: a batch-size × learning-rate grid around Eq. 1 at a budget (`plan-hparams`),
//! and IsoFLOP profiles (`plan-isoflop`): model shapes whose `M` spans each budget's curve with
//! `D = C/M` tokens. Each plan is a list of `ds-pretrain train` runs, written as `plan.json`
//! and as a runnable Makefile fragment `plan.mk` (one target per run, so `make -j` and reruns
//! after an interruption work), with the shapes' configs under `shapes/`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use dsllm_model::flops::{model_scale_m, ScalingLaws};
use dsllm_model::ModelConfig;
use serde::Serialize;

use crate::shape::{shape_name, ShapeRule};

/// One planned `ds-pretrain train` run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedRun {
    /// Folder name under the runs folder.
    pub name: String,
    /// The nominal budget `C` this run belongs to.
    pub budget: f64,
    /// Model config file (relative to the plan folder when written under `shapes/`).
    pub config: PathBuf,
    pub n_layer: usize,
    pub d_model: usize,
    pub m: f64,
    /// Training tokens `D ≈ C/M` (ds-pretrain rounds up to whole steps).
    pub tokens: f64,
    /// Batch size in tokens (whole micro-batches).
    pub batch_tokens: f64,
    pub micro_batch: usize,
    pub lr: f64,
}

/// Settings shared by both kinds of plan.
#[derive(Debug, Clone)]
pub struct PlanSettings {
    pub laws: ScalingLaws,
    pub seq_len: usize,
    pub micro_batch: usize,
}

impl PlanSettings {
    /// `B` tokens rounded to whole micro-batches (at least one).
    pub fn round_batch(&self, batch_tokens: f64) -> f64 {
        let unit = (self.seq_len * self.micro_batch) as f64;
        (batch_tokens / unit).round().max(1.0) * unit
    }
}

/// `n` values log-spaced over `[center/√span, center·√span]` (just `center` when `n == 1`).
pub fn log_spaced(center: f64, span: f64, n: usize) -> Vec<f64> {
    if n <= 1 {
        return vec![center];
    }
    let (lo, hi) = ((center / span.sqrt()).ln(), (center * span.sqrt()).ln());
    (0..n).map(|i| (lo + (hi - lo) * i as f64 / (n - 1) as f64).exp()).collect()
}

/// `1e12`, `2.5e11`: a budget as it appears in run names.
pub fn budget_label(c: f64) -> String {
    let exp = (c.log10() + 1e-9).floor();
    let mantissa = c / 10f64.powf(exp);
    let mantissa = format!("{mantissa:.2}");
    let mantissa = mantissa.trim_end_matches('0').trim_end_matches('.');
    format!("{mantissa}e{exp}")
}

/// The model a budget's batch × LR grid trains: `config` as it is, or (with `m_factor`) the
/// template's shape nearest `m_factor·M_opt(C)`, written under `shapes/`.
pub fn hparam_model(settings: &PlanSettings, config: &ModelConfig, config_path: &Path, budget: f64, m_factor: Option<f64>) -> (ModelConfig, PathBuf) {
    match m_factor {
        None => (config.clone(), config_path.to_path_buf()),
        Some(f) => {
            let shape = ShapeRule::from_template(config).for_model_scale(f * settings.laws.model_scale.at(budget), settings.seq_len);
            let path = PathBuf::from("shapes").join(format!("{}.toml", shape_name(&shape)));
            (shape, path)
        }
    }
}

/// A batch × LR grid at each budget, each on its model (`models[i]` for `budgets[i]`, see
/// [`hparam_model`]): `lr_points` learning rates spanning a factor `lr_span` around `η_opt(C)`
/// and `batch_points` batch sizes spanning `batch_span` around `B_opt(C)`, with `D = C/M` tokens.
pub fn hparam_grid(
    settings: &PlanSettings,
    models: &[(ModelConfig, PathBuf)],
    budgets: &[f64],
    (lr_points, lr_span): (usize, f64),
    (batch_points, batch_span): (usize, f64),
) -> Result<Vec<PlannedRun>> {
    let mut runs = Vec::new();
    for (&c, (config, config_path)) in budgets.iter().zip(models) {
        let m = model_scale_m(config, settings.seq_len);
        let mut batches: Vec<f64> = log_spaced(settings.laws.batch_tokens.at(c), batch_span, batch_points)
            .into_iter()
            .map(|b| settings.round_batch(b))
            .collect();
        batches.dedup();
        for &b in &batches {
            for lr in log_spaced(settings.laws.lr.at(c), lr_span, lr_points) {
                let tokens = c / m;
                if tokens < b {
                    bail!("budget {c:e} gives {} {tokens:.0} tokens, less than one batch of {b}", shape_name(config));
                }
                runs.push(PlannedRun {
                    name: format!("hp-C{}-{}-B{}-lr{:.3e}", budget_label(c), shape_name(config), b as u64, lr),
                    budget: c,
                    config: config_path.clone(),
                    n_layer: config.num_hidden_layers,
                    d_model: config.hidden_size,
                    m,
                    tokens,
                    batch_tokens: b,
                    micro_batch: settings.micro_batch,
                    lr,
                });
            }
        }
    }
    Ok(runs)
}

/// IsoFLOP profiles: at each budget `points` shapes whose `M` spans a factor `span` around
/// `m_factor·M_opt(C)`, each with `D = C/M` tokens and Eq. 1's batch and learning rate.
/// Returns the runs and the distinct shapes (name, config).
pub fn isoflop(
    settings: &PlanSettings,
    rule: &ShapeRule,
    budgets: &[f64],
    points: usize,
    span: f64,
    m_factor: f64,
) -> Result<(Vec<PlannedRun>, Vec<(String, ModelConfig)>)> {
    let mut runs = Vec::new();
    let mut shapes: Vec<(String, ModelConfig)> = Vec::new();
    for &c in budgets {
        let center = m_factor * settings.laws.model_scale.at(c);
        let batch = settings.round_batch(settings.laws.batch_tokens.at(c));
        let lr = settings.laws.lr.at(c);
        let mut seen = Vec::new();
        for target in log_spaced(center, span, points) {
            let config = rule.for_model_scale(target, settings.seq_len);
            let name = shape_name(&config);
            if seen.contains(&name) {
                continue; // two targets rounded to one shape
            }
            seen.push(name.clone());
            let m = model_scale_m(&config, settings.seq_len);
            let tokens = c / m;
            if tokens < batch {
                bail!("budget {c:e}: shape {name} (M {m:.3e}) gets {tokens:.0} tokens, less than one batch of {batch}: lower --span or --m-factor");
            }
            if !shapes.iter().any(|(n, _)| n == &name) {
                shapes.push((name.clone(), config.clone()));
            }
            runs.push(PlannedRun {
                name: format!("iso-C{}-{name}", budget_label(c)),
                budget: c,
                config: PathBuf::from("shapes").join(format!("{name}.toml")),
                n_layer: config.num_hidden_layers,
                d_model: config.hidden_size,
                m,
                tokens,
                batch_tokens: batch,
                micro_batch: settings.micro_batch,
                lr,
            });
        }
        if seen.len() < 3 {
            bail!("budget {c:e}: only {} distinct shapes; an IsoFLOP minimum needs 3 (raise --span or --points)", seen.len());
        }
    }
    Ok((runs, shapes))
}

/// A shape as a TOML config in `pipelines/configs/` format.
pub fn shape_toml(config: &ModelConfig, note: &str) -> Result<String> {
    let mut config = config.clone();
    config.bos_token_id = None;
    config.eos_token_id = None;
    Ok(format!("# {note}\n{}", toml::to_string(&config).context("cannot write a model config as TOML")?))
}

/// The Makefile fragment running `runs`. `plan_dir` is where `shapes/` lives; every variable
/// can be overridden on make's command line.
pub fn makefile_fragment(runs: &[PlannedRun], plan_dir: &Path, runs_dir: &Path, command_line: &str) -> String {
    let mut out = String::new();
    out += "# Generated by: ";
    out += command_line;
    out += "\n# Runs ds-pretrain once per planned run; each writes <run>/summary.json when done.\n";
    out += "#   make -f plan.mk scaling-runs SCALING_DATA=work/tokens SCALING_THREADS=2\n\n";
    out += "SCALING_BIN     ?= target/release\n";
    out += "SCALING_DATA    ?= work/tokens\n";
    out += &format!("SCALING_RUNS    ?= {}\n", runs_dir.display());
    out += &format!("SCALING_PLAN    ?= {}\n", plan_dir.display());
    out += "SCALING_THREADS ?=\n";
    out += "SCALING_TRAIN_FLAGS ?= --eval-every 0 --eval-batches 1000 --save-every 0 --save-minutes 0 --backend auto\n\n";
    out += "SCALING_RUN_NAMES := \\\n";
    // Longest runs first (largest budget, then most tokens), so that under `make -j` the
    // runs still going at the end are short ones and no core idles long.
    let mut by_length: Vec<&PlannedRun> = runs.iter().collect();
    by_length.sort_by(|a, b| b.budget.total_cmp(&a.budget).then(b.tokens.total_cmp(&a.tokens)));
    for run in by_length {
        out += &format!("  {} \\\n", run.name);
    }
    out += "\n.PHONY: scaling-runs\n";
    out += "scaling-runs: $(SCALING_RUN_NAMES:%=$(SCALING_RUNS)/%/summary.json)\n\n";
    for run in runs {
        let config = if run.config.is_relative() && run.config.starts_with("shapes") {
            format!("$(SCALING_PLAN)/{}", run.config.display())
        } else {
            run.config.display().to_string()
        };
        out += &format!("$(SCALING_RUNS)/{}/summary.json:\n", run.name);
        out += "\t@mkdir -p $(@D)\n";
        out += &format!(
            "\t$(SCALING_BIN)/ds-pretrain train --config {config} --keep-shape --data $(SCALING_DATA) --output $(@D) \\\n\
             \t  --budget {:e} --tokens {:.0} --batch-tokens {:.0} --micro-batch {} --lr {:.4e} \\\n\
             \t  --resume $(SCALING_TRAIN_FLAGS) $(if $(SCALING_THREADS),--threads $(SCALING_THREADS)) > $@.tmp && mv $@.tmp $@\n\n",
            run.budget, run.tokens, run.batch_tokens, run.micro_batch, run.lr
        );
    }
    out
}

/// Writes `plan.json`, `plan.mk` and `shapes/*.toml` into `plan_dir`.
pub fn write_plan(
    plan_dir: &Path,
    runs_dir: &Path,
    runs: &[PlannedRun],
    shapes: &[(String, ModelConfig)],
    settings: &PlanSettings,
    command_line: &str,
) -> Result<serde_json::Value> {
    std::fs::create_dir_all(plan_dir.join("shapes")).with_context(|| format!("cannot create {}", plan_dir.display()))?;
    for (name, config) in shapes {
        let path = plan_dir.join("shapes").join(format!("{name}.toml"));
        let text = shape_toml(config, &format!("{name}: generated by ds-scaling; M = {:.4e} at l_seq {}", model_scale_m(config, settings.seq_len), settings.seq_len))?;
        dsllm_core::atomic::write_file(&path, text.as_bytes())?;
    }
    let total_tokens: f64 = runs.iter().map(|r| r.tokens).sum();
    let total_flops: f64 = runs.iter().map(|r| r.tokens * r.m).sum();
    let plan = serde_json::json!({
        "command": command_line,
        "seq_len": settings.seq_len,
        "laws": settings.laws,
        "runs": runs,
        "total_tokens": total_tokens,
        "total_m_flops": total_flops,
    });
    let plan_json = plan_dir.join("plan.json");
    dsllm_core::atomic::write_file(&plan_json, serde_json::to_string_pretty(&plan)?.as_bytes())?;
    let makefile = plan_dir.join("plan.mk");
    dsllm_core::atomic::write_file(&makefile, makefile_fragment(runs, plan_dir, runs_dir, command_line).as_bytes())?;
    Ok(serde_json::json!({
        "plan": plan_json,
        "makefile": makefile,
        "runs": runs.len(),
        "shapes": shapes.len(),
        "total_tokens": total_tokens,
        "total_m_flops": total_flops,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> ModelConfig {
        let path = std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())).join("../../pipelines/configs/tiny.toml");
        ModelConfig::from_toml_file(&path).unwrap()
    }

    fn settings() -> PlanSettings {
        PlanSettings { laws: ScalingLaws::PAPER, seq_len: 256, micro_batch: 2 }
    }

    #[test]
    fn log_spacing_is_centered() {
        let v = log_spaced(100.0, 4.0, 3);
        assert!((v[0] - 50.0).abs() < 1e-9 && (v[1] - 100.0).abs() < 1e-9 && (v[2] - 200.0).abs() < 1e-9);
        assert_eq!(budget_label(2.5e11), "2.5e11");
        assert_eq!(budget_label(1e12), "1e12");
    }

    #[test]
    fn hparam_grid_spans_eq1() {
        let c = 1e12;
        let model = hparam_model(&settings(), &tiny(), Path::new("tiny.toml"), c, None);
        let runs = hparam_grid(&settings(), &[model], &[c], (5, 16.0), (3, 4.0)).unwrap();
        assert_eq!(runs.len(), 15);
        let lrs: Vec<f64> = runs.iter().map(|r| r.lr).collect();
        let eta = ScalingLaws::PAPER.lr.at(c);
        assert!(lrs.iter().any(|&l| (l / eta - 1.0).abs() < 1e-9), "the grid holds η_opt");
        assert!(runs.iter().all(|r| r.batch_tokens % 512.0 == 0.0));
        assert!(runs.iter().all(|r| (r.m * r.tokens / c - 1.0).abs() < 1e-9));
        let (shape, path) = hparam_model(&settings(), &tiny(), Path::new("tiny.toml"), c, Some(8.0));
        assert_eq!(path, PathBuf::from("shapes").join(format!("{}.toml", shape_name(&shape))));
        assert!((model_scale_m(&shape, 256) / (8.0 * ScalingLaws::PAPER.model_scale.at(c)) - 1.0).abs() < 0.2);
    }

    #[test]
    fn isoflop_spans_m_and_keeps_c() {
        let rule = ShapeRule::from_template(&tiny());
        let (runs, shapes) = isoflop(&settings(), &rule, &[5e11, 1e12], 5, 8.0, 6.0).unwrap();
        assert!(runs.len() >= 8 && !shapes.is_empty());
        for c in [5e11, 1e12] {
            let ms: Vec<f64> = runs.iter().filter(|r| r.budget == c).map(|r| r.m).collect();
            let (lo, hi) = (ms.iter().cloned().fold(f64::INFINITY, f64::min), ms.iter().cloned().fold(0.0, f64::max));
            assert!(hi / lo > 4.0, "M spans the curve: {ms:?}");
        }
        let text = makefile_fragment(&runs, Path::new("plan"), Path::new("runs"), "ds-scaling plan-isoflop");
        assert!(text.contains("scaling-runs:") && text.contains("--keep-shape") && text.contains("$(SCALING_PLAN)/shapes/"));
        assert_eq!(text.matches("ds-pretrain train").count(), runs.len());
        // The run list starts with the largest budget's most tokens (the longest run).
        let longest = runs.iter().filter(|r| r.budget == 1e12).max_by(|a, b| a.tokens.total_cmp(&b.tokens)).unwrap();
        let listed = text.split("SCALING_RUN_NAMES := \\\n").nth(1).unwrap();
        assert!(listed.trim_start().starts_with(&longest.name), "{listed}");
    }
}
