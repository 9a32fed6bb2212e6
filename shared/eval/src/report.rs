//! The results of a run: `results.json` (every task's metrics and per-item log-likelihoods and
//! predictions) and `results.md`, a table like the paper's.

use serde::Serialize;

use crate::run::TaskResult;

/// Everything one evaluation run produced.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// The checkpoint folder.
    pub model: String,
    pub backend: String,
    pub parameters: u64,
    pub tasks: Vec<TaskResult>,
}

impl EvalReport {
    /// The summary table: one row per task with its headline metric, the other metrics, items
    /// and chance; skipped tasks say why.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "# Evaluation of {}\n\n{} parameters, {} backend.\n\n| Task | Metric | Score | Other metrics | Items | Chance (95% interval) |\n|---|---|---:|---|---:|---|\n",
            self.model, self.parameters, self.backend
        );
        for task in &self.tasks {
            if let Some(reason) = &task.skipped {
                out.push_str(&format!("| {} | {} | skipped | {reason} | 0 | |\n", task.name, task.headline));
                continue;
            }
            let score = task.metrics.get(&task.headline).map_or("-".to_string(), |v| format_metric(&task.headline, *v));
            let others: Vec<String> = task
                .metrics
                .iter()
                .filter(|(name, _)| **name != task.headline)
                .map(|(name, value)| format!("{name} {}", format_metric(name, *value)))
                .collect();
            let chance = task.chance.map_or(String::new(), |c| format!("{:.1} ({:.1}–{:.1})", 100.0 * c.accuracy, 100.0 * c.low, 100.0 * c.high));
            out.push_str(&format!("| {} | {} | {} | {} | {} | {} |\n", task.name, task.headline, score, others.join(", "), task.items, chance));
        }
        out.push_str("\nAccuracies in percent; acc_norm divides by the choice's length in characters; acc_uncond subtracts log P(choice | \"Answer:\").\n");
        out
    }
}

/// Accuracies as percentages (the paper's tables), other values as they are.
fn format_metric(name: &str, value: f64) -> String {
    let is_fraction = name.starts_with("acc") || name.starts_with("exact_match") || name.starts_with("pass@");
    if is_fraction {
        format!("{:.1}", 100.0 * value)
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value}")
    } else {
        format!("{value:.4}")
    }
}
