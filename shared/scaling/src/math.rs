//! Least squares for the handful of unknowns the fits need (a power law's two, a parabola's
//! three, a 2-D quadratic's six), a seeded bootstrap and percentiles. Written by hand: the
//! normal equations of at most six unknowns are a few lines of Gaussian elimination, and a
//! linear-algebra crate would add far more than it saves.

use dsllm_model::flops::PowerLaw;

/// Least-squares coefficients `β` minimising `‖Xβ − y‖²` (normal equations, Gaussian
/// elimination with partial pivoting). `None` when the design is rank-deficient.
pub fn least_squares(rows: &[Vec<f64>], y: &[f64]) -> Option<Vec<f64>> {
    let p = rows.first()?.len();
    if rows.len() < p || rows.len() != y.len() {
        return None;
    }
    // [XᵀX | Xᵀy]
    let mut a = vec![vec![0.0; p + 1]; p];
    for (row, &target) in rows.iter().zip(y) {
        for i in 0..p {
            for j in 0..p {
                a[i][j] += row[i] * row[j];
            }
            a[i][p] += row[i] * target;
        }
    }
    let scale = (0..p).map(|i| a[i][i].abs()).fold(0.0, f64::max).max(f64::MIN_POSITIVE);
    for col in 0..p {
        let pivot = (col..p).max_by(|&r, &s| a[r][col].abs().total_cmp(&a[s][col].abs()))?;
        if a[pivot][col].abs() <= 1e-12 * scale {
            return None;
        }
        a.swap(col, pivot);
        for r in 0..p {
            if r != col {
                let factor = a[r][col] / a[col][col];
                if factor != 0.0 {
                    for c in col..=p {
                        a[r][c] -= factor * a[col][c];
                    }
                }
            }
        }
    }
    let beta: Vec<f64> = (0..p).map(|i| a[i][p] / a[i][i]).collect();
    beta.iter().all(|b| b.is_finite()).then_some(beta)
}

/// `y = k·x^e` fitted by least squares on `ln y = ln k + e·ln x`. Needs two distinct `x`.
pub fn fit_power_law(x: &[f64], y: &[f64]) -> Option<PowerLaw> {
    if x.iter().chain(y).any(|v| !(*v > 0.0) || !v.is_finite()) {
        return None;
    }
    let rows: Vec<Vec<f64>> = x.iter().map(|v| vec![1.0, v.ln()]).collect();
    let logs: Vec<f64> = y.iter().map(|v| v.ln()).collect();
    let beta = least_squares(&rows, &logs)?;
    Some(PowerLaw::new(beta[0].exp(), beta[1]))
}

/// Coefficient of determination of a power law in log space.
pub fn log_r_squared(law: &PowerLaw, x: &[f64], y: &[f64]) -> f64 {
    let logs: Vec<f64> = y.iter().map(|v| v.ln()).collect();
    let mean = logs.iter().sum::<f64>() / logs.len() as f64;
    let total: f64 = logs.iter().map(|l| (l - mean).powi(2)).sum();
    let residual: f64 = x.iter().zip(&logs).map(|(x, l)| (l - law.at(*x).ln()).powi(2)).sum();
    if total > 0.0 {
        1.0 - residual / total
    } else {
        1.0
    }
}

/// `y = c0 + c1·(x − center) + c2·(x − center)²`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Parabola {
    pub center: f64,
    pub c0: f64,
    pub c1: f64,
    pub c2: f64,
}

impl Parabola {
    /// Least-squares parabola through `(x, y)`; needs three distinct `x`.
    pub fn fit(x: &[f64], y: &[f64]) -> Option<Self> {
        let center = x.iter().sum::<f64>() / x.len().max(1) as f64;
        let rows: Vec<Vec<f64>> = x.iter().map(|v| vec![1.0, v - center, (v - center).powi(2)]).collect();
        let beta = least_squares(&rows, y)?;
        Some(Self { center, c0: beta[0], c1: beta[1], c2: beta[2] })
    }

    pub fn at(&self, x: f64) -> f64 {
        let u = x - self.center;
        self.c0 + self.c1 * u + self.c2 * u * u
    }

    /// The vertex when the parabola opens upward.
    pub fn minimum(&self) -> Option<(f64, f64)> {
        (self.c2 > 0.0).then(|| {
            let x = self.center - self.c1 / (2.0 * self.c2);
            (x, self.at(x))
        })
    }
}

/// `z = c0 + c1·u + c2·v + c3·u² + c4·v² + c5·u·v` in centered `u = x − x̄`, `v = y − ȳ`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quadratic2d {
    pub center: (f64, f64),
    pub c: [f64; 6],
}

impl Quadratic2d {
    /// Least squares; needs six points in general position. When `y` takes a single value the
    /// surface degenerates to a parabola in `x` (its `v` terms are zero).
    pub fn fit(points: &[(f64, f64)], z: &[f64]) -> Option<Self> {
        let n = points.len().max(1) as f64;
        let center = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
        let spread = |f: fn(&(f64, f64)) -> f64| points.iter().map(|p| f(p)).fold(f64::NEG_INFINITY, f64::max) - points.iter().map(|p| f(p)).fold(f64::INFINITY, f64::min);
        if spread(|p| p.1) < 1e-9 {
            let x: Vec<f64> = points.iter().map(|p| p.0).collect();
            let p = Parabola::fit(&x, z)?;
            return Some(Self { center: (p.center, center.1), c: [p.c0, p.c1, 0.0, p.c2, 0.0, 0.0] });
        }
        let rows: Vec<Vec<f64>> = points
            .iter()
            .map(|&(x, y)| {
                let (u, v) = (x - center.0, y - center.1);
                vec![1.0, u, v, u * u, v * v, u * v]
            })
            .collect();
        let beta = least_squares(&rows, z)?;
        Some(Self { center, c: [beta[0], beta[1], beta[2], beta[3], beta[4], beta[5]] })
    }

    pub fn at(&self, x: f64, y: f64) -> f64 {
        let (u, v) = (x - self.center.0, y - self.center.1);
        let c = &self.c;
        c[0] + c[1] * u + c[2] * v + c[3] * u * u + c[4] * v * v + c[5] * u * v
    }

    /// The stationary point when the surface is convex (positive-definite Hessian); for the
    /// degenerate one-variable case the `y` of the data.
    pub fn minimum(&self) -> Option<(f64, f64)> {
        let c = &self.c;
        if c[2] == 0.0 && c[4] == 0.0 && c[5] == 0.0 {
            return (c[3] > 0.0).then(|| (self.center.0 - c[1] / (2.0 * c[3]), self.center.1));
        }
        // ∇ = 0: [2c3 c5; c5 2c4]·[u v]ᵀ = −[c1 c2]ᵀ
        let (a, b, d) = (2.0 * c[3], c[5], 2.0 * c[4]);
        let det = a * d - b * b;
        if !(a > 0.0 && det > 0.0) {
            return None;
        }
        let u = (-c[1] * d + b * c[2]) / det;
        let v = (-a * c[2] + b * c[1]) / det;
        Some((self.center.0 + u, self.center.1 + v))
    }
}

/// The `q`-quantile (0..=1) of `values` by linear interpolation between order statistics.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_law_is_recovered_exactly() {
        let x = [1e17, 1e18, 1e19, 1e20];
        let y: Vec<f64> = x.iter().map(|c: &f64| 0.3118 * c.powf(-0.125)).collect();
        let law = fit_power_law(&x, &y).unwrap();
        assert!((law.exponent + 0.125).abs() < 1e-9 && (law.coefficient / 0.3118 - 1.0).abs() < 1e-6, "{law:?}");
        assert!((log_r_squared(&law, &x, &y) - 1.0).abs() < 1e-12);
        assert!(fit_power_law(&[1.0, 1.0], &[2.0, 3.0]).is_none(), "one distinct x cannot fix a slope");
    }

    #[test]
    fn parabola_vertex() {
        let x = [0.0, 1.0, 2.0, 3.0, 4.0];
        let y: Vec<f64> = x.iter().map(|v| 2.0 + 0.5 * (v - 2.7f64).powi(2)).collect();
        let (xm, ym) = Parabola::fit(&x, &y).unwrap().minimum().unwrap();
        assert!((xm - 2.7).abs() < 1e-9 && (ym - 2.0).abs() < 1e-9);
        let down: Vec<f64> = x.iter().map(|v| -v * v).collect();
        assert!(Parabola::fit(&x, &down).unwrap().minimum().is_none());
    }

    #[test]
    fn quadratic_2d_minimum_with_cross_term() {
        let mut pts = Vec::new();
        let mut z = Vec::new();
        for i in 0..5 {
            for j in 0..4 {
                let (x, y) = (i as f64 * 0.5, j as f64 * 0.7);
                pts.push((x, y));
                let (u, v) = (x - 1.3, y - 0.9);
                z.push(1.0 + u * u + 2.0 * v * v + 0.5 * u * v);
            }
        }
        let (x, y) = Quadratic2d::fit(&pts, &z).unwrap().minimum().unwrap();
        assert!((x - 1.3).abs() < 1e-9 && (y - 0.9).abs() < 1e-9, "{x} {y}");
    }

    #[test]
    fn quantiles_interpolate() {
        let v = [3.0, 1.0, 2.0, 4.0];
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&v, 1.0), 4.0);
        assert_eq!(quantile(&v, 0.5), 2.5);
    }
}
