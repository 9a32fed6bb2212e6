//! The loss curve: train and validation loss against tokens seen, drawn from metrics.jsonl.
//!
//! Text needs a TrueType font (`dsllm_scaling::plots::font_available`: `DSLLM_FONT` or the
//! usual system paths). Without one the curve is drawn without text.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use dsllm_scaling::plots::font_available;
use plotters::prelude::*;

/// (tokens, loss) of the train steps and of the validations in a metrics file.
fn read_curves(metrics: &Path) -> Result<(Vec<(f64, f64)>, Vec<(f64, f64)>)> {
    let text = std::fs::read_to_string(metrics).with_context(|| format!("cannot read {}", metrics.display()))?;
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let Ok(record) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let Some(tokens) = record["tokens_seen"].as_f64() else { continue };
        if let Some(loss) = record["loss"].as_f64() {
            train.push((tokens, loss));
        }
        if let Some(loss) = record["val_loss"].as_f64() {
            val.push((tokens, loss));
        }
    }
    Ok((train, val))
}

/// Draws `metrics`' losses into `png` (written under a temporary name, then renamed).
pub fn loss_curve(metrics: &Path, png: &Path) -> Result<()> {
    let (train, val) = read_curves(metrics)?;
    if train.is_empty() {
        return Ok(());
    }
    let text = font_available();
    let all = train.iter().chain(&val);
    let x_max = all.clone().map(|p| p.0).fold(1.0, f64::max);
    let y_min = all.clone().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let y_max = all.map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    let pad = ((y_max - y_min) * 0.05).max(1e-3);

    let temp = png.with_file_name(format!(".{}.tmp.png", png.file_name().and_then(|n| n.to_str()).unwrap_or("loss")));
    {
        let root = BitMapBackend::new(&temp, (960, 600)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        let mut builder = ChartBuilder::on(&root);
        builder.margin(16);
        if text {
            builder.caption("loss vs tokens", ("sans-serif", 24)).x_label_area_size(48).y_label_area_size(64);
        }
        let mut chart = builder.build_cartesian_2d(0.0..x_max, (y_min - pad)..(y_max + pad)).map_err(|e| anyhow!("{e}"))?;
        let token_labels = |x: &f64| format_tokens(*x);
        let mut mesh = chart.configure_mesh();
        if text {
            mesh.x_desc("tokens").y_desc("loss (nats)").x_label_formatter(&token_labels);
        } else {
            mesh.x_labels(0).y_labels(0);
        }
        mesh.draw().map_err(|e| anyhow!("{e}"))?;
        let train_style = ShapeStyle::from(&BLUE.mix(0.8)).stroke_width(1);
        let series = chart.draw_series(LineSeries::new(train, train_style)).map_err(|e| anyhow!("{e}"))?;
        if text {
            series.label("train").legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], train_style));
        }
        if !val.is_empty() {
            let val_style = ShapeStyle::from(&RED).stroke_width(2);
            let series = chart.draw_series(LineSeries::new(val.clone(), val_style)).map_err(|e| anyhow!("{e}"))?;
            if text {
                series.label("validation").legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], val_style));
            }
            chart.draw_series(val.iter().map(|&p| Circle::new(p, 3, val_style.filled()))).map_err(|e| anyhow!("{e}"))?;
        }
        if text {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(|e| anyhow!("{e}"))?;
        }
        root.present().map_err(|e| anyhow!("cannot write {}: {e}", temp.display()))?;
    }
    std::fs::rename(&temp, png).with_context(|| format!("cannot rename {} to {}", temp.display(), png.display()))
}

fn format_tokens(tokens: f64) -> String {
    match tokens {
        t if t >= 1e9 => format!("{:.1}B", t / 1e9),
        t if t >= 1e6 => format!("{:.1}M", t / 1e6),
        t if t >= 1e3 => format!("{:.0}k", t / 1e3),
        t => format!("{t:.0}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_png_from_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = dir.path().join("metrics.jsonl");
        let mut lines = String::from("{\"step\":0,\"run\":{}}\n");
        for step in 1..=50u64 {
            lines += &format!("{{\"step\":{step},\"loss\":{},\"tokens_seen\":{}}}\n", 8.0 / (1.0 + step as f64 * 0.1), step * 2048);
            if step % 10 == 0 {
                lines += &format!("{{\"step\":{step},\"val_loss\":{},\"tokens_seen\":{}}}\n", 8.5 / (1.0 + step as f64 * 0.1), step * 2048);
            }
        }
        std::fs::write(&metrics, lines).unwrap();
        let png = dir.path().join("loss.png");
        loss_curve(&metrics, &png).unwrap();
        let bytes = std::fs::read(&png).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
    }
}
