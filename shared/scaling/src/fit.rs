//! Fits from run results, the paper's Section 3:
//!
//! - per budget, the near-optimal set: runs within 0.25% of the budget's best loss;
//! - per budget with a learning-rate/batch grid on one model, the optimum of a quadratic in
//!   `(ln η, ln B)` fitted to the runs near the best, and across budgets `η_opt(C)` and
//!   `B_opt(C)` (Eq. 1);
//! - per budget with three or more model scales, the IsoFLOP minimum of a parabola in `ln M`
//!   (each `M` at its best hyperparameters), and across budgets `M_opt = k·C^a` and
//!   `D_opt = k'·C^b` with `D = C/M` (Eq. 4);
//! - the loss at each IsoFLOP minimum against `C` (Figure 5) and its extrapolation;
//! - for every exponent and coefficient a bootstrap interval: runs are resampled with
//!   replacement within each budget (seeded) and everything is refitted.

use std::collections::BTreeMap;

use dsllm_model::flops::{PowerLaw, ScalingLaws};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::math::{fit_power_law, log_r_squared, quantile, Parabola, Quadratic2d};
use crate::record::{Metric, RunRecord};

/// The paper's near-optimal tolerance: within 0.25% of the best loss.
pub const NEAR_OPTIMAL: f64 = 0.0025;

#[derive(Debug, Clone, Serialize)]
pub struct FitSettings {
    /// Relative loss margin of the near-optimal set.
    pub near_optimal: f64,
    /// The hyperparameter quadratic is fitted to runs within this relative margin of the best
    /// (and at least the 6 best): far from the optimum losses are not quadratic (too high a
    /// learning rate diverges).
    pub hparam_window: f64,
    pub bootstrap: usize,
    pub confidence: f64,
    pub seed: u64,
    /// Budgets to predict for (the loss law's extrapolation and the laws' M, D, η, B).
    pub predict: Vec<f64>,
    /// What is minimised; default: bits per byte when every run has it.
    pub metric: Option<Metric>,
}

impl Default for FitSettings {
    fn default() -> Self {
        Self { near_optimal: NEAR_OPTIMAL, hparam_window: 0.03, bootstrap: 1000, confidence: 0.95, seed: 0, predict: Vec::new(), metric: None }
    }
}

/// Runs whose nominal budgets agree within 2% form one budget.
pub fn group_by_budget(runs: &[RunRecord]) -> Vec<(f64, Vec<usize>)> {
    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_by(|&a, &b| runs[a].budget.total_cmp(&runs[b].budget));
    let mut groups: Vec<(f64, Vec<usize>)> = Vec::new();
    for i in order {
        match groups.last_mut() {
            Some((first, members)) if runs[i].budget / *first < 1.02 => members.push(i),
            _ => groups.push((runs[i].budget, vec![i])),
        }
    }
    for (budget, members) in &mut groups {
        *budget = (members.iter().map(|&i| runs[i].budget.ln()).sum::<f64>() / members.len() as f64).exp();
    }
    groups
}

fn distinct(values: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut out: Vec<f64> = Vec::new();
    for v in values {
        if !out.iter().any(|o| (v / o - 1.0).abs() < 0.01) {
            out.push(v);
        }
    }
    out
}

/// The learning rate and batch size minimising the loss at one budget.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HparamOptimum {
    /// `None` when the runs hold fewer than three learning rates.
    pub lr: Option<f64>,
    /// `None` when the runs hold fewer than three batch sizes.
    pub batch_tokens: Option<f64>,
    pub m: f64,
    pub runs_used: usize,
}

/// The minimum of one budget's IsoFLOP curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct IsoflopMinimum {
    pub m_opt: f64,
    pub d_opt: f64,
    pub loss: f64,
    /// The parabola in `ln M`.
    pub parabola: Parabola,
    pub scales: usize,
}

/// The hyperparameter grid of one budget: the runs of its most-run model scale, if they vary
/// the learning rate or the batch size over three or more values.
fn hparam_optimum(runs: &[&RunRecord], metric: Metric, window: f64) -> Option<HparamOptimum> {
    let scales = distinct(runs.iter().map(|r| r.m));
    let m = scales.iter().copied().max_by_key(|&m| runs.iter().filter(|r| (r.m / m - 1.0).abs() < 0.01).count())?;
    let mut grid: Vec<&RunRecord> = runs.iter().copied().filter(|r| (r.m / m - 1.0).abs() < 0.01 && metric.of(r).is_finite()).collect();
    let n_lr = distinct(grid.iter().map(|r| r.peak_lr)).len();
    let n_b = distinct(grid.iter().map(|r| r.batch_tokens)).len();
    if n_lr < 3 && n_b < 3 {
        return None;
    }
    grid.sort_by(|a, b| metric.of(a).total_cmp(&metric.of(b)));
    let best = metric.of(grid[0]);
    let both = n_lr >= 3 && n_b >= 3;
    let at_least = if both { 6 } else { 3 };
    let in_window = grid.iter().take_while(|r| metric.of(r) <= best * (1.0 + window)).count();
    let used: Vec<&RunRecord> = grid.iter().copied().take(in_window.max(at_least)).collect();
    let z: Vec<f64> = used.iter().map(|r| metric.of(r)).collect();
    // Where a fitted surface has no minimum inside the grid (noisy small grids often give a
    // saddle), the optimum is the geometric centre of the runs within the window of the best,
    // as the paper reads its near-optimal region.
    let near: Vec<&RunRecord> = grid.iter().copied().take(in_window.max(1)).collect();
    let centre = |value: fn(&RunRecord) -> f64| (near.iter().map(|r| value(r).ln()).sum::<f64>() / near.len() as f64).exp();
    let inside = |v: f64, value: fn(&RunRecord) -> f64| {
        let (lo, hi) = grid.iter().map(|r| value(r)).fold((f64::INFINITY, 0.0f64), |(lo, hi), x| (lo.min(x), hi.max(x)));
        v >= lo && v <= hi
    };
    if both {
        let points: Vec<(f64, f64)> = used.iter().map(|r| (r.peak_lr.ln(), r.batch_tokens.ln())).collect();
        let fitted = Quadratic2d::fit(&points, &z).and_then(|q| q.minimum()).map(|(x, y)| (x.exp(), y.exp()));
        let (lr, batch) = match fitted {
            Some((lr, batch)) if inside(lr, |r| r.peak_lr) && inside(batch, |r| r.batch_tokens) => (lr, batch),
            _ => (centre(|r| r.peak_lr), centre(|r| r.batch_tokens)),
        };
        return Some(HparamOptimum { lr: Some(lr), batch_tokens: Some(batch), m, runs_used: used.len() });
    }
    // One varied hyperparameter: a parabola over it, the other held at the best run's value.
    let lr_varies = n_lr >= 3;
    let value = |r: &RunRecord| if lr_varies { r.peak_lr } else { r.batch_tokens };
    let fixed = |r: &RunRecord| if lr_varies { r.batch_tokens } else { r.peak_lr };
    let line: Vec<&RunRecord> = grid.iter().copied().filter(|r| (fixed(r) / fixed(grid[0]) - 1.0).abs() < 0.01).collect();
    let in_window = line.iter().take_while(|r| metric.of(r) <= best * (1.0 + window)).count();
    let used: Vec<&RunRecord> = line.into_iter().take(in_window.max(3)).collect();
    if distinct(used.iter().map(|r| value(r))).len() < 3 {
        return None;
    }
    let x: Vec<f64> = used.iter().map(|r| value(r).ln()).collect();
    let z: Vec<f64> = used.iter().map(|r| metric.of(r)).collect();
    let value_of: fn(&RunRecord) -> f64 = if lr_varies { |r| r.peak_lr } else { |r| r.batch_tokens };
    let optimum = match Parabola::fit(&x, &z).and_then(|p| p.minimum()).map(|(xm, _)| xm.exp()) {
        Some(v) if inside(v, value_of) => v,
        _ => centre(value_of),
    };
    Some(if lr_varies {
        HparamOptimum { lr: Some(optimum), batch_tokens: None, m, runs_used: used.len() }
    } else {
        HparamOptimum { lr: None, batch_tokens: Some(optimum), m, runs_used: used.len() }
    })
}

/// The IsoFLOP minimum of one budget: a parabola in `ln M` through each scale's best loss.
fn isoflop_minimum(runs: &[&RunRecord], metric: Metric, budget: f64) -> Option<IsoflopMinimum> {
    let scales = distinct(runs.iter().map(|r| r.m));
    if scales.len() < 3 {
        return None;
    }
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for m in &scales {
        let best = runs.iter().filter(|r| (r.m / m - 1.0).abs() < 0.01).map(|r| metric.of(r)).filter(|v| v.is_finite()).fold(f64::INFINITY, f64::min);
        if best.is_finite() {
            x.push(m.ln());
            y.push(best);
        }
    }
    if x.len() < 3 {
        return None;
    }
    let parabola = Parabola::fit(&x, &y)?;
    let (xm, loss) = parabola.minimum()?;
    let m_opt = xm.exp();
    Some(IsoflopMinimum { m_opt, d_opt: budget / m_opt, loss, parabola, scales: x.len() })
}

/// Per-budget estimates and the power laws through them.
#[derive(Debug, Clone, Default)]
struct Estimates {
    hparam: Vec<(f64, HparamOptimum)>,
    isoflop: Vec<(f64, IsoflopMinimum)>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Laws {
    lr: Option<PowerLaw>,
    batch: Option<PowerLaw>,
    m: Option<PowerLaw>,
    d: Option<PowerLaw>,
    loss: Option<PowerLaw>,
}

fn estimate(runs: &[&RunRecord], groups: &[(f64, Vec<usize>)], metric: Metric, settings: &FitSettings) -> Estimates {
    let mut est = Estimates::default();
    for (budget, members) in groups {
        let group: Vec<&RunRecord> = members.iter().map(|&i| runs[i]).collect();
        if let Some(h) = hparam_optimum(&group, metric, settings.hparam_window) {
            est.hparam.push((*budget, h));
        }
        if let Some(iso) = isoflop_minimum(&group, metric, *budget) {
            est.isoflop.push((*budget, iso));
        }
    }
    est
}

fn law_through(points: impl Iterator<Item = (f64, f64)>) -> Option<PowerLaw> {
    let (x, y): (Vec<f64>, Vec<f64>) = points.unzip();
    if distinct(x.iter().copied()).len() < 2 {
        return None;
    }
    fit_power_law(&x, &y)
}

fn laws_of(est: &Estimates) -> Laws {
    Laws {
        lr: law_through(est.hparam.iter().filter_map(|(c, h)| h.lr.map(|v| (*c, v)))),
        batch: law_through(est.hparam.iter().filter_map(|(c, h)| h.batch_tokens.map(|v| (*c, v)))),
        m: law_through(est.isoflop.iter().map(|(c, i)| (*c, i.m_opt))),
        d: law_through(est.isoflop.iter().map(|(c, i)| (*c, i.d_opt))),
        loss: law_through(est.isoflop.iter().map(|(c, i)| (*c, i.loss))),
    }
}

/// A fitted power law with its bootstrap intervals.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LawFit {
    pub coefficient: f64,
    pub exponent: f64,
    pub exponent_ci: [f64; 2],
    pub coefficient_ci: [f64; 2],
    /// In log space.
    pub r_squared: f64,
    /// Budgets the law is fitted through.
    pub points: usize,
    /// Bootstrap resamples in which the law could be refitted.
    pub bootstrap_samples: usize,
}

impl LawFit {
    pub fn law(&self) -> PowerLaw {
        PowerLaw::new(self.coefficient, self.exponent)
    }
}

/// One budget's findings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetFit {
    pub budget: f64,
    pub runs: usize,
    pub best_run: String,
    pub best_loss: f64,
    /// Runs within the near-optimal margin of the best.
    pub near_optimal: Vec<String>,
    pub hparam_optimum: Option<HparamOptimum>,
    pub isoflop: Option<IsoflopMinimum>,
}

/// The laws' values at a budget, with the loss the loss law predicts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub budget: f64,
    pub loss: Option<f64>,
    pub loss_ci: Option<[f64; 2]>,
    pub m_opt: f64,
    pub d_opt: f64,
    pub lr: f64,
    pub batch_tokens: f64,
    /// The best loss of runs at this budget that neither an IsoFLOP curve nor a batch × LR grid
    /// used (a held-out check).
    pub achieved: Option<f64>,
    pub achieved_run: Option<String>,
}

/// Everything `ds-scaling fit` finds; `laws` is what `ds-pretrain --laws` reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fits {
    pub metric: Metric,
    pub runs: usize,
    pub near_optimal_tolerance: f64,
    pub confidence: f64,
    pub budgets: Vec<BudgetFit>,
    pub lr: Option<LawFit>,
    pub batch_tokens: Option<LawFit>,
    pub model_scale: Option<LawFit>,
    pub data_tokens: Option<LawFit>,
    pub loss: Option<LawFit>,
    /// The fitted laws, the paper's where a law could not be fitted.
    pub laws: ScalingLaws,
    /// "fitted" or "paper" for lr, batch_tokens, model_scale, data_tokens.
    pub laws_source: BTreeMap<String, String>,
    pub predictions: Vec<Prediction>,
}

impl Fits {
    /// Reads the laws of a `fits.json`.
    pub fn read_laws(path: &std::path::Path) -> anyhow::Result<ScalingLaws> {
        use anyhow::Context;
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
        serde_json::from_value(value["laws"].clone()).with_context(|| format!("{} has no valid \"laws\" (write it with ds-scaling fit)", path.display()))
    }
}

/// Fits everything the runs support.
pub fn fit(runs: &[RunRecord], settings: &FitSettings) -> Fits {
    let metric = settings.metric.unwrap_or_else(|| Metric::choose(runs));
    let usable: Vec<&RunRecord> = runs.iter().filter(|r| metric.of(r).is_finite()).collect();
    let owned: Vec<RunRecord> = usable.iter().map(|r| (*r).clone()).collect();
    let groups = group_by_budget(&owned);
    let est = estimate(&usable, &groups, metric, settings);
    let point = laws_of(&est);

    // Bootstrap: resample within each budget, refit everything.
    let mut rng = ChaCha8Rng::seed_from_u64(settings.seed);
    let mut samples: [Vec<PowerLaw>; 5] = Default::default();
    let mut predicted: Vec<Vec<f64>> = vec![Vec::new(); settings.predict.len()];
    for _ in 0..settings.bootstrap {
        let mut index = Vec::with_capacity(usable.len());
        let mut resampled_groups = Vec::with_capacity(groups.len());
        for (budget, members) in &groups {
            let start = index.len();
            for _ in 0..members.len() {
                index.push(members[rng.random_range(0..members.len())]);
            }
            resampled_groups.push((*budget, (start..index.len()).collect::<Vec<usize>>()));
        }
        let resampled: Vec<&RunRecord> = index.iter().map(|&i| usable[i]).collect();
        let laws = laws_of(&estimate(&resampled, &resampled_groups, metric, settings));
        for (slot, law) in samples.iter_mut().zip([laws.lr, laws.batch, laws.m, laws.d, laws.loss]) {
            if let Some(law) = law {
                slot.push(law);
            }
        }
        if let Some(loss) = laws.loss {
            for (p, c) in predicted.iter_mut().zip(&settings.predict) {
                p.push(loss.at(*c));
            }
        }
    }
    let alpha = (1.0 - settings.confidence) / 2.0;
    let interval = |values: &[f64]| [quantile(values, alpha), quantile(values, 1.0 - alpha)];
    let with_ci = |law: Option<PowerLaw>, boot: &[PowerLaw], x: Vec<f64>, y: Vec<f64>| {
        law.map(|law| {
            let exps: Vec<f64> = boot.iter().map(|l| l.exponent).collect();
            let coefs: Vec<f64> = boot.iter().map(|l| l.coefficient).collect();
            LawFit {
                coefficient: law.coefficient,
                exponent: law.exponent,
                exponent_ci: interval(&exps),
                coefficient_ci: interval(&coefs),
                r_squared: log_r_squared(&law, &x, &y),
                points: x.len(),
                bootstrap_samples: boot.len(),
            }
        })
    };
    let xy = |points: Vec<(f64, f64)>| -> (Vec<f64>, Vec<f64>) { points.into_iter().unzip() };
    let (lr_x, lr_y) = xy(est.hparam.iter().filter_map(|(c, h)| h.lr.map(|v| (*c, v))).collect());
    let (b_x, b_y) = xy(est.hparam.iter().filter_map(|(c, h)| h.batch_tokens.map(|v| (*c, v))).collect());
    let (m_x, m_y) = xy(est.isoflop.iter().map(|(c, i)| (*c, i.m_opt)).collect());
    let (d_x, d_y) = xy(est.isoflop.iter().map(|(c, i)| (*c, i.d_opt)).collect());
    let (l_x, l_y) = xy(est.isoflop.iter().map(|(c, i)| (*c, i.loss)).collect());
    let lr = with_ci(point.lr, &samples[0], lr_x, lr_y);
    let batch_tokens = with_ci(point.batch, &samples[1], b_x, b_y);
    let model_scale = with_ci(point.m, &samples[2], m_x, m_y);
    let data_tokens = with_ci(point.d, &samples[3], d_x, d_y);
    let loss = with_ci(point.loss, &samples[4], l_x, l_y);

    let paper = ScalingLaws::PAPER;
    let mut laws_source = BTreeMap::new();
    let mut pick = |name: &str, fitted: Option<LawFit>, default: PowerLaw| {
        laws_source.insert(name.to_string(), if fitted.is_some() { "fitted" } else { "paper" }.to_string());
        fitted.map(|f| f.law()).unwrap_or(default)
    };
    let laws = ScalingLaws {
        lr: pick("lr", lr, paper.lr),
        batch_tokens: pick("batch_tokens", batch_tokens, paper.batch_tokens),
        model_scale: pick("model_scale", model_scale, paper.model_scale),
        data_tokens: pick("data_tokens", data_tokens, paper.data_tokens),
    };

    let budgets: Vec<BudgetFit> = groups
        .iter()
        .map(|(budget, members)| {
            let mut sorted: Vec<&RunRecord> = members.iter().map(|&i| usable[i]).collect();
            sorted.sort_by(|a, b| metric.of(a).total_cmp(&metric.of(b)));
            let best = metric.of(sorted[0]);
            BudgetFit {
                budget: *budget,
                runs: sorted.len(),
                best_run: sorted[0].run.clone(),
                best_loss: best,
                near_optimal: sorted.iter().filter(|r| metric.of(r) <= best * (1.0 + settings.near_optimal)).map(|r| r.run.clone()).collect(),
                hparam_optimum: est.hparam.iter().find(|(c, _)| c == budget).map(|(_, h)| *h),
                isoflop: est.isoflop.iter().find(|(c, _)| c == budget).map(|(_, i)| *i),
            }
        })
        .collect();

    // Predictions: the requested budgets, and every budget no IsoFLOP curve covers (checks).
    let mut targets: Vec<(f64, Option<Vec<f64>>)> = settings.predict.iter().copied().zip(predicted.into_iter().map(Some)).collect();
    let is_check = |b: &BudgetFit| b.isoflop.is_none() && b.hparam_optimum.is_none();
    for b in budgets.iter().filter(|b| is_check(b)) {
        if !targets.iter().any(|(c, _)| (c / b.budget - 1.0).abs() < 0.02) {
            targets.push((b.budget, None));
        }
    }
    let predictions = targets
        .into_iter()
        .map(|(c, boot)| {
            let check = budgets.iter().find(|b| is_check(b) && (c / b.budget - 1.0).abs() < 0.02);
            // A budget not in `predict` gets its interval from a bootstrap of the loss law.
            let boot = boot.unwrap_or_else(|| samples[4].iter().map(|l| l.at(c)).collect());
            Prediction {
                budget: c,
                loss: loss.map(|l| l.law().at(c)),
                loss_ci: loss.map(|_| interval(&boot)),
                m_opt: laws.model_scale.at(c),
                d_opt: laws.data_tokens.at(c),
                lr: laws.lr.at(c),
                batch_tokens: laws.batch_tokens.at(c),
                achieved: check.map(|b| b.best_loss),
                achieved_run: check.map(|b| b.best_run.clone()),
            }
        })
        .collect();

    Fits {
        metric,
        runs: usable.len(),
        near_optimal_tolerance: settings.near_optimal,
        confidence: settings.confidence,
        budgets,
        lr,
        batch_tokens,
        model_scale,
        data_tokens,
        loss,
        laws,
        laws_source,
        predictions,
    }
}

impl Fits {
    /// The report as markdown.
    pub fn markdown(&self) -> String {
        use crate::flops::si;
        let mut out = format!("# Scaling-law fits\n\n{} runs; minimised: {}; near-optimal: within {}% of a budget's best; intervals: {:.0}% bootstrap.\n\n", self.runs, self.metric.label(), self.near_optimal_tolerance * 100.0, self.confidence * 100.0);
        out += "## Laws\n\n| law | coefficient | exponent | exponent interval | coefficient interval | budgets | R² (log) | paper |\n|---|---|---|---|---|---|---|---|\n";
        let paper = ScalingLaws::PAPER;
        let rows: [(&str, Option<LawFit>, Option<PowerLaw>); 5] = [
            ("η_opt(C) (Eq. 1)", self.lr, Some(paper.lr)),
            ("B_opt(C) tokens (Eq. 1)", self.batch_tokens, Some(paper.batch_tokens)),
            ("M_opt(C) (Eq. 4)", self.model_scale, Some(paper.model_scale)),
            ("D_opt(C) (Eq. 4)", self.data_tokens, Some(paper.data_tokens)),
            ("loss at the IsoFLOP minimum (Fig. 5)", self.loss, None),
        ];
        for (name, fit, paper) in rows {
            let paper = paper.map(|p| format!("{}·C^{}", p.coefficient, p.exponent)).unwrap_or_default();
            match fit {
                Some(f) => {
                    out += &format!(
                        "| {name} | {:.4e} | {:.4} | [{:.4}, {:.4}] | [{:.3e}, {:.3e}] | {} | {:.3} | {paper} |\n",
                        f.coefficient, f.exponent, f.exponent_ci[0], f.exponent_ci[1], f.coefficient_ci[0], f.coefficient_ci[1], f.points, f.r_squared
                    )
                }
                None => out += &format!("| {name} | – | – | – | – | – | – | {paper} |\n"),
            }
        }
        out += "\n## Budgets\n\n| C | runs | best run | best | near-optimal runs | η* | B* | M_opt | D_opt | IsoFLOP min |\n|---|---|---|---|---|---|---|---|---|---|\n";
        for b in &self.budgets {
            let h = b.hparam_optimum;
            let i = b.isoflop;
            out += &format!(
                "| {:.3e} | {} | {} | {:.4} | {} | {} | {} | {} | {} | {} |\n",
                b.budget,
                b.runs,
                b.best_run,
                b.best_loss,
                b.near_optimal.len(),
                h.and_then(|h| h.lr).map(|v| format!("{v:.3e}")).unwrap_or_default(),
                h.and_then(|h| h.batch_tokens).map(|v| format!("{v:.0}")).unwrap_or_default(),
                i.map(|i| si(i.m_opt)).unwrap_or_default(),
                i.map(|i| si(i.d_opt)).unwrap_or_default(),
                i.map(|i| format!("{:.4}", i.loss)).unwrap_or_default(),
            );
        }
        if !self.predictions.is_empty() {
            out += "\n## Predictions\n\n| C | predicted | interval | achieved | run | M_opt | D_opt | η | B |\n|---|---|---|---|---|---|---|---|---|\n";
            for p in &self.predictions {
                out += &format!(
                    "| {:.3e} | {} | {} | {} | {} | {} | {} | {:.3e} | {:.0} |\n",
                    p.budget,
                    p.loss.map(|v| format!("{v:.4}")).unwrap_or_default(),
                    p.loss_ci.map(|c| format!("[{:.4}, {:.4}]", c[0], c[1])).unwrap_or_default(),
                    p.achieved.map(|v| format!("{v:.4}")).unwrap_or_default(),
                    p.achieved_run.clone().unwrap_or_default(),
                    si(p.m_opt),
                    si(p.d_opt),
                    p.lr,
                    p.batch_tokens
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{hparam_runs, isoflop_runs, Truth};

    /// A truth unlike the paper's (so returning the paper's laws would fail).
    fn truth(noise: f64) -> Truth {
        Truth {
            laws: ScalingLaws {
                lr: PowerLaw::new(0.5, -0.14),
                batch_tokens: PowerLaw::new(0.2, 0.34),
                model_scale: PowerLaw::new(0.09, 0.55),
                data_tokens: PowerLaw::new(1.0 / 0.09, 0.45),
            },
            loss: PowerLaw::new(12.0, -0.045),
            curvature_m: 0.02,
            curvature_lr: 0.01,
            curvature_batch: 0.006,
            noise,
        }
    }

    const BUDGETS: [f64; 6] = [1e17, 3e17, 1e18, 3e18, 1e19, 3e19];

    fn check(name: &str, fit: Option<LawFit>, truth: PowerLaw) {
        let fit = fit.unwrap_or_else(|| panic!("{name}: no fit"));
        let relative = (fit.exponent / truth.exponent - 1.0).abs();
        assert!(relative < 0.02, "{name}: exponent {} vs truth {} ({:.2}% off)", fit.exponent, truth.exponent, relative * 100.0);
        assert!(
            fit.exponent_ci[0] <= truth.exponent && truth.exponent <= fit.exponent_ci[1],
            "{name}: interval {:?} misses the truth {}",
            fit.exponent_ci,
            truth.exponent
        );
        assert!(fit.coefficient_ci[0] <= truth.coefficient && truth.coefficient <= fit.coefficient_ci[1], "{name}: coefficient interval {:?} misses {}", fit.coefficient_ci, truth.coefficient);
        assert!(fit.bootstrap_samples > 900, "{name}: {} bootstrap samples", fit.bootstrap_samples);
    }

    #[test]
    fn recovers_known_laws_from_noisy_synthetic_runs() {
        let truth = truth(0.001);
        // Grids centred 1.3× off the truth, so a fit that returned the grid centre would fail.
        let mut runs = isoflop_runs(&truth, &BUDGETS, 9, 30.0, 1.3, 7);
        runs.extend(hparam_runs(&truth, &BUDGETS, (9, 30.0), (9, 30.0), 1.3, 8));
        let settings = FitSettings { predict: vec![1e21], ..FitSettings::default() };
        let fits = fit(&runs, &settings);
        check("M_opt", fits.model_scale, truth.laws.model_scale);
        check("D_opt", fits.data_tokens, truth.laws.data_tokens);
        check("eta_opt", fits.lr, truth.laws.lr);
        check("B_opt", fits.batch_tokens, truth.laws.batch_tokens);
        check("loss", fits.loss, truth.loss);
        assert_eq!(fits.laws_source["lr"], "fitted");
        // The extrapolation to 1e21 (33× the largest budget) contains the true loss.
        let p = &fits.predictions[0];
        let [lo, hi] = p.loss_ci.unwrap();
        assert!(lo <= truth.loss.at(1e21) && truth.loss.at(1e21) <= hi, "{p:?}");
        assert!((p.m_opt / truth.laws.model_scale.at(1e21) - 1.0).abs() < 0.1, "{p:?}");
    }

    #[test]
    fn near_optimal_sets_hold_the_runs_within_a_quarter_percent() {
        let runs = hparam_runs(&truth(0.0005), &[1e18], (7, 30.0), (7, 30.0), 1.0, 3);
        let fits = fit(&runs, &FitSettings { bootstrap: 10, ..FitSettings::default() });
        let budget = &fits.budgets[0];
        let best = runs.iter().map(|r| r.final_val_loss).fold(f64::INFINITY, f64::min);
        let expected: Vec<&str> = runs.iter().filter(|r| r.final_val_loss <= best * 1.0025).map(|r| r.run.as_str()).collect();
        assert!(expected.len() > 1 && expected.len() < runs.len());
        let mut got: Vec<&str> = budget.near_optimal.iter().map(String::as_str).collect();
        got.sort();
        let mut want = expected.clone();
        want.sort();
        assert_eq!(got, want);
        assert_eq!(budget.best_loss, best);
    }

    #[test]
    fn held_out_budget_is_a_check_of_the_prediction() {
        let truth = truth(0.0);
        let mut runs = isoflop_runs(&truth, &BUDGETS[..4], 7, 16.0, 1.0, 1);
        // One run at the compute-optimal allocation of a larger budget.
        let big = 1e20;
        runs.extend(isoflop_runs(&truth, &[big], 1, 1.0, 1.0, 2));
        let fits = fit(&runs, &FitSettings { bootstrap: 50, ..FitSettings::default() });
        let check = fits.predictions.iter().find(|p| (p.budget / big - 1.0).abs() < 1e-9).expect("a prediction for the held-out budget");
        let (predicted, achieved) = (check.loss.unwrap(), check.achieved.unwrap());
        assert!((predicted / achieved - 1.0).abs() < 1e-6, "{predicted} vs {achieved}");
        assert_eq!(fits.laws_source["lr"], "paper", "no grid: Eq. 1 stays the paper's");
    }

    #[test]
    fn too_few_scales_fit_nothing() {
        let runs = isoflop_runs(&truth(0.0), &BUDGETS[..2], 2, 4.0, 1.0, 1);
        let fits = fit(&runs, &FitSettings { bootstrap: 5, ..FitSettings::default() });
        assert!(fits.model_scale.is_none() && fits.loss.is_none());
        assert_eq!(fits.laws, ScalingLaws::PAPER);
    }
}
