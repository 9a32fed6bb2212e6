//! The paper's figures as PNG from runs and fits:
//! Figure 2 (loss over batch size × learning rate at each budget, near-optimal runs marked),
//! Figure 3 (`η_opt(C)`, `B_opt(C)`), Figure 4 (IsoFLOP curves, `M_opt(C)`, `D_opt(C)`) and
//! Figure 5 (loss against compute with the extrapolation).
//!
//! Text needs a TrueType font: [`font_available`] (from `dsllm-plot`, shared by every figure of
//! the project) finds one or uses the DejaVu Sans compiled into the binary.

use std::path::{Path, PathBuf};

use anyhow::Result;
use dsllm_model::flops::{PowerLaw, ScalingLaws};
use plotters::coord::ranged1d::ValueFormatter;
use plotters::prelude::*;

use crate::fit::{group_by_budget, Fits, LawFit};
use crate::plan::budget_label;
use crate::record::RunRecord;

pub use dsllm_plot::font_available;
use dsllm_plot::{draw_png, Plotted};

/// A log range around `values` with some margin.
fn log_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values.filter(|v| *v > 0.0 && v.is_finite()).fold((f64::INFINITY, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if !lo.is_finite() {
        return 1.0..10.0;
    }
    let pad = ((hi / lo).powf(0.06)).max(1.15);
    (lo / pad)..(hi * pad)
}

fn sci(v: &f64) -> String {
    format!("{v:.1e}")
}

fn caption<DB: DrawingBackend>(builder: &mut ChartBuilder<'_, '_, DB>, title: &str) {
    if font_available() {
        builder.caption(title, ("sans-serif", 20)).x_label_area_size(44).y_label_area_size(70);
    } else {
        builder.x_label_area_size(8).y_label_area_size(8);
    }
}

fn mesh<X, Y>(chart: &mut ChartContext<BitMapBackend, Cartesian2d<X, Y>>, x_desc: &str, y_desc: &str) -> Result<()>
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let mut mesh = chart.configure_mesh();
    if font_available() {
        mesh.x_desc(x_desc).y_desc(y_desc).x_label_formatter(&sci).y_label_formatter(&sci).label_style(("sans-serif", 13));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().plotted()
}

fn legend<'a, X: Ranged<ValueType = f64>, Y: Ranged<ValueType = f64>>(chart: &mut ChartContext<'a, BitMapBackend<'a>, Cartesian2d<X, Y>>) -> Result<()> {
    if font_available() {
        chart.configure_series_labels().background_style(WHITE.mix(0.85)).border_style(BLACK).label_font(("sans-serif", 13)).draw().plotted()?;
    }
    Ok(())
}

/// Colour of `t` in 0..=1 (blue → red).
fn heat(t: f64) -> RGBColor {
    let rgba = HSLColor(0.66 * (1.0 - t.clamp(0.0, 1.0)), 0.85, 0.45).to_rgba();
    RGBColor(rgba.0, rgba.1, rgba.2)
}

fn law_line(law: PowerLaw, range: &std::ops::Range<f64>) -> Vec<(f64, f64)> {
    let (lo, hi) = (range.start.ln(), range.end.ln());
    (0..=60).map(|i| (lo + (hi - lo) * i as f64 / 60.0).exp()).map(|c| (c, law.at(c))).collect()
}

/// A log-log panel of per-budget points with the fitted law (and the paper's, dashed).
#[allow(clippy::too_many_arguments)]
fn law_panel(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    title: &str,
    y_desc: &str,
    background: &[(f64, f64)],
    optima: &[(f64, f64)],
    fit: Option<LawFit>,
    paper: Option<PowerLaw>,
    x_extra: &[f64],
) -> Result<()> {
    let x_range = log_range(background.iter().chain(optima).map(|p| p.0).chain(x_extra.iter().copied()));
    let mut ys: Vec<f64> = background.iter().chain(optima).map(|p| p.1).collect();
    if let Some(f) = fit {
        ys.extend([f.law().at(x_range.start), f.law().at(x_range.end)]);
    }
    let y_range = log_range(ys.into_iter());
    let mut builder = ChartBuilder::on(area);
    builder.margin(14);
    caption(&mut builder, title);
    let mut chart = builder.build_cartesian_2d(x_range.clone().log_scale(), y_range.clone().log_scale()).plotted()?;
    mesh(&mut chart, "compute budget C (FLOPs)", y_desc)?;
    if !background.is_empty() {
        chart.draw_series(background.iter().map(|&p| Circle::new(p, 3, RGBColor(160, 160, 160).filled()))).plotted()?.label("near-optimal runs").legend(|(x, y)| Circle::new((x, y), 3, RGBColor(160, 160, 160).filled()));
    }
    chart.draw_series(optima.iter().map(|&p| TriangleMarker::new(p, 6, BLACK.filled()))).plotted()?.label("per-budget optimum").legend(|(x, y)| TriangleMarker::new((x, y), 5, BLACK.filled()));
    if let Some(f) = fit {
        let style = ShapeStyle::from(&BLUE).stroke_width(2);
        let label = format!("fit: {:.3e}·C^{:.4} [{:.4}, {:.4}]", f.coefficient, f.exponent, f.exponent_ci[0], f.exponent_ci[1]);
        chart.draw_series(LineSeries::new(law_line(f.law(), &x_range), style)).plotted()?.label(label).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    if let Some(p) = paper {
        let style = ShapeStyle::from(&RED.mix(0.7)).stroke_width(1);
        let label = format!("paper: {}·C^{}", p.coefficient, p.exponent);
        let line: Vec<(f64, f64)> = law_line(p, &x_range).into_iter().filter(|pt| y_range.contains(&pt.1)).collect();
        chart.draw_series(DashedLineSeries::new(line, 6, 4, style)).plotted()?.label(label).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    legend(&mut chart)
}

/// Every figure the runs support; returns the files written.
pub fn figures(runs: &[RunRecord], fits: &Fits, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let metric = fits.metric;
    let loss = |r: &RunRecord| metric.of(r);
    let runs: Vec<RunRecord> = runs.iter().filter(|r| loss(r).is_finite()).cloned().collect();
    let groups = group_by_budget(&runs);
    let paper = ScalingLaws::PAPER;

    // Figure 2: batch × LR at each budget with a grid.
    let grids: Vec<(f64, Vec<&RunRecord>)> = fits
        .budgets
        .iter()
        .filter_map(|b| {
            let h = b.hparam_optimum?;
            let members = groups.iter().find(|(c, _)| *c == b.budget)?;
            Some((b.budget, members.1.iter().map(|&i| &runs[i]).filter(|r| (r.m / h.m - 1.0).abs() < 0.01).collect()))
        })
        .collect();
    if !grids.is_empty() {
        let path = dir.join("fig2_batch_lr.png");
        written.push(draw_png(&path, (560 * grids.len() as u32, 520), |root| {
            for (area, (budget, grid)) in root.split_evenly((1, grids.len())).iter().zip(&grids) {
                let fit = fits.budgets.iter().find(|b| b.budget == *budget).expect("budget");
                let best = fit.best_loss;
                let worst = grid.iter().map(|r| loss(r)).fold(best, f64::max).min(best * 1.05);
                let mut builder = ChartBuilder::on(area);
                builder.margin(14);
                caption(&mut builder, &format!("C = {}: loss over batch × LR", budget_label(*budget)));
                let x_range = log_range(grid.iter().map(|r| r.batch_tokens));
                let y_range = log_range(grid.iter().map(|r| r.peak_lr));
                let mut chart = builder.build_cartesian_2d(x_range.log_scale(), y_range.log_scale()).plotted()?;
                mesh(&mut chart, "batch size (tokens)", "peak learning rate")?;
                chart
                    .draw_series(grid.iter().map(|r| {
                        let t = (loss(r) - best) / (worst - best).max(1e-12);
                        Circle::new((r.batch_tokens, r.peak_lr), 9, heat(t).filled())
                    }))
                    .plotted()?;
                let near: Vec<&&RunRecord> = grid.iter().filter(|r| fit.near_optimal.contains(&r.run)).collect();
                chart
                    .draw_series(near.iter().map(|r| Circle::new((r.batch_tokens, r.peak_lr), 12, ShapeStyle::from(&BLACK).stroke_width(2))))
                    .plotted()?
                    .label(format!("near-optimal (within {}%)", fits.near_optimal_tolerance * 100.0))
                    .legend(|(x, y)| Circle::new((x, y), 5, ShapeStyle::from(&BLACK).stroke_width(2)));
                if let Some(h) = fit.hparam_optimum {
                    let best_run = grid.iter().find(|r| r.run == fit.best_run).unwrap_or(&grid[0]);
                    let opt = (h.batch_tokens.unwrap_or(best_run.batch_tokens), h.lr.unwrap_or(best_run.peak_lr));
                    chart.draw_series([Cross::new(opt, 8, ShapeStyle::from(&BLACK).stroke_width(2))]).plotted()?.label("fitted optimum").legend(|(x, y)| Cross::new((x, y), 5, BLACK));
                }
                if font_available() {
                    chart.draw_series(grid.iter().map(|r| Text::new(format!("{:.3}", loss(r)), (r.batch_tokens, r.peak_lr * 1.08), ("sans-serif", 11)))).plotted()?;
                }
                legend(&mut chart)?;
            }
            Ok(())
        })?);
    }

    // Figure 3: η_opt(C) and B_opt(C).
    if fits.lr.is_some() || fits.batch_tokens.is_some() {
        let near: Vec<&RunRecord> = fits.budgets.iter().filter(|b| b.hparam_optimum.is_some()).flat_map(|b| b.near_optimal.iter()).filter_map(|name| runs.iter().find(|r| &r.run == name)).collect();
        let opt_lr: Vec<(f64, f64)> = fits.budgets.iter().filter_map(|b| b.hparam_optimum.and_then(|h| h.lr).map(|v| (b.budget, v))).collect();
        let opt_b: Vec<(f64, f64)> = fits.budgets.iter().filter_map(|b| b.hparam_optimum.and_then(|h| h.batch_tokens).map(|v| (b.budget, v))).collect();
        let path = dir.join("fig3_lr_batch_laws.png");
        written.push(draw_png(&path, (1200, 520), |root| {
            let panels = root.split_evenly((1, 2));
            let bg_b: Vec<(f64, f64)> = near.iter().map(|r| (r.budget, r.batch_tokens)).collect();
            let bg_lr: Vec<(f64, f64)> = near.iter().map(|r| (r.budget, r.peak_lr)).collect();
            law_panel(&panels[0], "B_opt(C) (Eq. 1)", "batch size (tokens)", &bg_b, &opt_b, fits.batch_tokens, Some(paper.batch_tokens), &[])?;
            law_panel(&panels[1], "η_opt(C) (Eq. 1)", "peak learning rate", &bg_lr, &opt_lr, fits.lr, Some(paper.lr), &[])
        })?);
    }

    // Figure 4: IsoFLOP curves, M_opt(C), D_opt(C).
    let curves: Vec<(f64, Vec<(f64, f64)>, crate::fit::IsoflopMinimum)> = fits
        .budgets
        .iter()
        .filter_map(|b| {
            let iso = b.isoflop?;
            let members = groups.iter().find(|(c, _)| *c == b.budget)?;
            Some((b.budget, members.1.iter().map(|&i| (runs[i].m, loss(&runs[i]))).collect(), iso))
        })
        .collect();
    if !curves.is_empty() {
        let path = dir.join("fig4_isoflop.png");
        written.push(draw_png(&path, (1680, 520), |root| {
            let panels = root.split_evenly((1, 3));
            let x_range = log_range(curves.iter().flat_map(|c| c.1.iter().map(|p| p.0)));
            let ys: Vec<f64> = curves.iter().flat_map(|c| c.1.iter().map(|p| p.1).chain([c.2.loss])).collect();
            let (lo, hi) = ys.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            let pad = (hi - lo).max(1e-3) * 0.08;
            let mut builder = ChartBuilder::on(&panels[0]);
            builder.margin(14);
            caption(&mut builder, "IsoFLOP curves");
            let mut chart = builder.build_cartesian_2d(x_range.clone().log_scale(), (lo - pad)..(hi + pad)).plotted()?;
            {
                let mut m = chart.configure_mesh();
                if font_available() {
                    m.x_desc("M (non-embedding FLOPs/token)").y_desc(metric.label()).x_label_formatter(&sci).label_style(("sans-serif", 13));
                } else {
                    m.x_labels(0).y_labels(0);
                }
                m.draw().plotted()?;
            }
            for (k, (budget, points, iso)) in curves.iter().enumerate() {
                let color = heat(k as f64 / (curves.len().max(2) - 1) as f64);
                let style = ShapeStyle::from(&color).stroke_width(2);
                chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled()))).plotted()?;
                let (mlo, mhi) = points.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), p| (lo.min(p.0), hi.max(p.0)));
                let curve: Vec<(f64, f64)> = (0..=50).map(|i| (mlo.ln() + (mhi.ln() - mlo.ln()) * i as f64 / 50.0).exp()).map(|m| (m, iso.parabola.at(m.ln()))).collect();
                chart.draw_series(LineSeries::new(curve, style)).plotted()?.label(format!("C = {}", budget_label(*budget))).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
                chart.draw_series([TriangleMarker::new((iso.m_opt, iso.loss), 7, BLACK.filled())]).plotted()?;
            }
            legend(&mut chart)?;
            let m_opt: Vec<(f64, f64)> = curves.iter().map(|c| (c.0, c.2.m_opt)).collect();
            let d_opt: Vec<(f64, f64)> = curves.iter().map(|c| (c.0, c.2.d_opt)).collect();
            law_panel(&panels[1], "M_opt(C) (Eq. 4)", "M_opt (FLOPs/token)", &[], &m_opt, fits.model_scale, Some(paper.model_scale), &[])?;
            law_panel(&panels[2], "D_opt(C) (Eq. 4)", "D_opt (tokens)", &[], &d_opt, fits.data_tokens, Some(paper.data_tokens), &[])
        })?);
    }

    // Figure 5: loss against compute, with predictions and held-out runs.
    if let Some(law) = fits.loss {
        let path = dir.join("fig5_loss_vs_compute.png");
        let points: Vec<(f64, f64)> = curves.iter().map(|c| (c.0, c.2.loss)).collect();
        written.push(draw_png(&path, (900, 600), |root| {
            let xs = points.iter().map(|p| p.0).chain(fits.predictions.iter().map(|p| p.budget));
            let x_range = log_range(xs);
            let ys = points
                .iter()
                .map(|p| p.1)
                .chain(fits.predictions.iter().flat_map(|p| p.loss_ci.map(|c| vec![c[0], c[1]]).unwrap_or_default()))
                .chain(fits.predictions.iter().filter_map(|p| p.achieved))
                .chain([law.law().at(x_range.start), law.law().at(x_range.end)]);
            // A linear loss axis: the losses span well under a decade, where a log axis has no labels.
            let (lo, hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| (lo.min(y), hi.max(y)));
            let pad = ((hi - lo) * 0.08).max(1e-3);
            let mut builder = ChartBuilder::on(root);
            builder.margin(16);
            caption(&mut builder, &format!("{} vs compute", metric.label()));
            let mut chart = builder.build_cartesian_2d(x_range.clone().log_scale(), (lo - pad)..(hi + pad)).plotted()?;
            mesh(&mut chart, "compute budget C (FLOPs)", metric.label())?;
            let style = ShapeStyle::from(&BLUE).stroke_width(2);
            let label = format!("fit: {:.3}·C^{:.4} [{:.4}, {:.4}]", law.coefficient, law.exponent, law.exponent_ci[0], law.exponent_ci[1]);
            chart.draw_series(LineSeries::new(law_line(law.law(), &x_range), style)).plotted()?.label(label).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 5, BLUE.filled()))).plotted()?.label("IsoFLOP minima (fitted)").legend(|(x, y)| Circle::new((x, y), 4, BLUE.filled()));
            let predicted: Vec<_> = fits.predictions.iter().filter_map(|p| p.loss.map(|l| (p.budget, l, p.loss_ci))).collect();
            for (c, _, ci) in &predicted {
                if let Some(ci) = ci {
                    chart.draw_series(LineSeries::new([(*c, ci[0]), (*c, ci[1])], ShapeStyle::from(&BLACK).stroke_width(1))).plotted()?;
                }
            }
            chart
                .draw_series(predicted.iter().map(|&(c, l, _)| Cross::new((c, l), 7, ShapeStyle::from(&BLACK).stroke_width(2))))
                .plotted()?
                .label("predicted (with interval)")
                .legend(|(x, y)| Cross::new((x, y), 5, BLACK));
            let achieved: Vec<(f64, f64)> = fits.predictions.iter().filter_map(|p| p.achieved.map(|a| (p.budget, a))).collect();
            if !achieved.is_empty() {
                chart.draw_series(achieved.iter().map(|&p| TriangleMarker::new(p, 8, RED.filled()))).plotted()?.label("achieved (held-out run)").legend(|(x, y)| TriangleMarker::new((x, y), 5, RED.filled()));
            }
            legend(&mut chart)
        })?);
    }
    Ok(written)
}

