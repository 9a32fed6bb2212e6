//! Synthetic run results from known laws, for checking that the fits recover them: losses of
//! the form `L*(C)·(1 + curvature·(ln x − ln x_opt(C))² …)·(1 + noise·ε)`, `ε ~ N(0, 1)`.

use dsllm_model::flops::{PowerLaw, ScalingLaws};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::plan::log_spaced;
use crate::record::RunRecord;

/// The truth the runs are drawn from.
#[derive(Debug, Clone, Copy)]
pub struct Truth {
    pub laws: ScalingLaws,
    /// Loss at the optimum, `L*(C)`.
    pub loss: PowerLaw,
    /// Relative loss increase per squared e-fold away from the optimum.
    pub curvature_m: f64,
    pub curvature_lr: f64,
    pub curvature_batch: f64,
    /// Relative standard deviation of the noise.
    pub noise: f64,
}

fn record(name: String, budget: f64, m: f64, lr: f64, batch: f64, loss: f64) -> RunRecord {
    RunRecord {
        run: name.clone(),
        path: name,
        m,
        tokens: budget / m,
        compute: budget,
        budget,
        batch_tokens: batch,
        peak_lr: lr,
        steps: (budget / m / batch).ceil() as i64,
        final_train_loss: loss,
        final_val_loss: loss,
        min_val_loss: loss,
        final_val_bpb: Some(loss),
        min_val_bpb: Some(loss),
        backend: "synthetic".into(),
        ..RunRecord::empty()
    }
}

/// IsoFLOP sweeps: at each budget `points` scales over a factor `span` around a center that is
/// `offset` times the true `M_opt` (so the grid is not centered on the truth), each at the
/// true optimal learning rate and batch.
pub fn isoflop_runs(truth: &Truth, budgets: &[f64], points: usize, span: f64, offset: f64, seed: u64) -> Vec<RunRecord> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut runs = Vec::new();
    for &c in budgets {
        let m_opt = truth.laws.model_scale.at(c);
        for m in log_spaced(m_opt * offset, span, points) {
            let eps: f64 = StandardNormal.sample(&mut rng);
            let shape = 1.0 + truth.curvature_m * (m / m_opt).ln().powi(2);
            let loss = truth.loss.at(c) * shape * (1.0 + truth.noise * eps);
            runs.push(record(format!("iso-{c:e}-{m:.3e}"), c, m, truth.laws.lr.at(c), truth.laws.batch_tokens.at(c), loss));
        }
    }
    runs
}

/// Hyperparameter grids: at each budget one model, `lr_points × batch_points` settings over
/// factors `lr_span` and `batch_span` around `offset` times the true optima.
pub fn hparam_runs(truth: &Truth, budgets: &[f64], (lr_points, lr_span): (usize, f64), (batch_points, batch_span): (usize, f64), offset: f64, seed: u64) -> Vec<RunRecord> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut runs = Vec::new();
    for &c in budgets {
        let (lr_opt, b_opt) = (truth.laws.lr.at(c), truth.laws.batch_tokens.at(c));
        let m = truth.laws.model_scale.at(c);
        for b in log_spaced(b_opt * offset, batch_span, batch_points) {
            for lr in log_spaced(lr_opt / offset, lr_span, lr_points) {
                let eps: f64 = StandardNormal.sample(&mut rng);
                let shape = 1.0 + truth.curvature_lr * (lr / lr_opt).ln().powi(2) + truth.curvature_batch * (b / b_opt).ln().powi(2);
                let loss = truth.loss.at(c) * shape * (1.0 + truth.noise * eps);
                runs.push(record(format!("hp-{c:e}-{b:.0}-{lr:.3e}"), c, m, lr, b, loss));
            }
        }
    }
    runs
}
