//! The before/after report: per-group counts with polars, then report.json, report.md and a
//! bar chart (share before, after and target per group) in report.png.

use crate::config::{RemixConfig, Unit};
use crate::solver::GroupPlan;
use anyhow::Context;
use dsllm_core::atomic::write_file;
use dsllm_core::parquet_io::WrittenFile;
use dsllm_core::{Error, Result};
use dsllm_plot::{draw_png, font_available, Plotted};
use polars::prelude::*;
use serde::Serialize;
use std::path::Path;

/// One group's counts (from polars' group-by over every document).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupStats {
    /// Index of the group name.
    pub group: u32,
    pub docs_before: u64,
    pub bytes_before: u64,
    /// Distinct documents kept (repeat >= 1).
    pub docs_kept: u64,
    /// Copies written (sum of repeat).
    pub docs_after: u64,
    /// Bytes written, counting copies.
    pub bytes_after: u64,
    /// Documents written more than once.
    pub docs_repeated: u64,
    pub max_repeat: u64,
}

/// Per-group counts of documents given as columns (group index, text bytes, copies), sorted by
/// group.
pub fn group_stats(group: &[u32], bytes: &[u64], repeat: &[u32]) -> std::result::Result<Vec<GroupStats>, String> {
    let height = group.len();
    let frame = DataFrame::new(
        height,
        vec![
            Column::new("group".into(), group.to_vec()),
            Column::new("bytes".into(), bytes.to_vec()),
            Column::new("repeat".into(), repeat.iter().map(|&r| r as u64).collect::<Vec<u64>>()),
        ],
    )
    .map_err(|e| format!("polars: {e}"))?;
    let totals = frame
        .lazy()
        .with_column((col("bytes") * col("repeat")).alias("bytes_after"))
        .group_by([col("group")])
        .agg([
            len().cast(DataType::UInt64).alias("docs_before"),
            col("bytes").sum().alias("bytes_before"),
            col("repeat").gt(lit(0u64)).cast(DataType::UInt64).sum().alias("docs_kept"),
            col("repeat").sum().alias("docs_after"),
            col("bytes_after").sum().alias("bytes_after"),
            col("repeat").gt(lit(1u64)).cast(DataType::UInt64).sum().alias("docs_repeated"),
            col("repeat").max().alias("max_repeat"),
        ])
        .sort(["group"], SortMultipleOptions::default())
        .collect()
        .map_err(|e| format!("polars: {e}"))?;
    let column = |name: &str| -> std::result::Result<Vec<u64>, String> {
        let c = totals.column(name).and_then(|c| c.cast(&DataType::UInt64)).map_err(|e| format!("polars: {e}"))?;
        let values = c.u64().map_err(|e| format!("polars: {e}"))?;
        Ok((0..values.len()).map(|i| values.get(i).unwrap_or(0)).collect())
    };
    let (g, db, bb, dk, da, ba, dr, mr) = (
        column("group")?,
        column("docs_before")?,
        column("bytes_before")?,
        column("docs_kept")?,
        column("docs_after")?,
        column("bytes_after")?,
        column("docs_repeated")?,
        column("max_repeat")?,
    );
    Ok((0..g.len())
        .map(|i| GroupStats {
            group: g[i] as u32,
            docs_before: db[i],
            bytes_before: bb[i],
            docs_kept: dk[i],
            docs_after: da[i],
            bytes_after: ba[i],
            docs_repeated: dr[i],
            max_repeat: mr[i],
        })
        .collect())
}

/// One row of the report.
#[derive(Debug, Clone, Serialize)]
pub struct GroupReport {
    pub group: String,
    pub docs_before: u64,
    /// Distinct documents kept.
    pub docs_kept: u64,
    pub docs_dropped: u64,
    /// Documents written, counting copies.
    pub docs_after: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Shares in the configured unit.
    pub share_before: f64,
    pub share_after: f64,
    /// The plan's share (None for a group no plan covers: nothing but empty texts).
    pub target_share: Option<f64>,
    pub docs_share_before: f64,
    pub docs_share_after: f64,
    pub bytes_share_before: f64,
    pub bytes_share_after: f64,
    /// "weight" (target from the config) or "as is" (kept, sharing what the weights leave).
    pub rule: &'static str,
    /// Output / input units the plan asked for.
    pub scale: f64,
    /// Copies per kept document, on average.
    pub mean_repeat: f64,
    pub max_repeat: u64,
    pub docs_repeated: u64,
}

impl GroupReport {
    /// The row without its shares (they need the totals: [`Report::new`]).
    pub fn new(group: &str, s: &GroupStats, plan: Option<&GroupPlan>) -> Self {
        GroupReport {
            group: group.to_string(),
            docs_before: s.docs_before,
            docs_kept: s.docs_kept,
            docs_dropped: s.docs_before - s.docs_kept,
            docs_after: s.docs_after,
            bytes_before: s.bytes_before,
            bytes_after: s.bytes_after,
            share_before: 0.0,
            share_after: 0.0,
            target_share: plan.map(|p| p.target_share),
            docs_share_before: 0.0,
            docs_share_after: 0.0,
            bytes_share_before: 0.0,
            bytes_share_after: 0.0,
            rule: if plan.is_some_and(|p| p.weighted) { "weight" } else { "as is" },
            scale: plan.map_or(1.0, |p| p.scale),
            mean_repeat: if s.docs_kept > 0 { s.docs_after as f64 / s.docs_kept as f64 } else { 0.0 },
            max_repeat: s.max_repeat,
            docs_repeated: s.docs_repeated,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    pub docs: u64,
    pub bytes: u64,
}

/// The whole report (report.json).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub group_by: String,
    pub unit: Unit,
    pub seed: u64,
    pub max_repeat: f64,
    pub before: Totals,
    /// Documents counting copies, and their bytes.
    pub after: Totals,
    /// Largest |share after - target share| over the groups (in shares: 0.01 is one point).
    pub max_share_error: f64,
    pub wall_seconds: f64,
    pub groups: Vec<GroupReport>,
}

fn share(part: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        part as f64 / total as f64
    }
}

impl Report {
    pub fn new(config: &RemixConfig, mut groups: Vec<GroupReport>, wall_seconds: f64) -> Self {
        let before = Totals { docs: groups.iter().map(|g| g.docs_before).sum(), bytes: groups.iter().map(|g| g.bytes_before).sum() };
        let after = Totals { docs: groups.iter().map(|g| g.docs_after).sum(), bytes: groups.iter().map(|g| g.bytes_after).sum() };
        let mut max_share_error = 0.0f64;
        for g in &mut groups {
            g.docs_share_before = share(g.docs_before, before.docs);
            g.docs_share_after = share(g.docs_after, after.docs);
            g.bytes_share_before = share(g.bytes_before, before.bytes);
            g.bytes_share_after = share(g.bytes_after, after.bytes);
            (g.share_before, g.share_after) = match config.unit {
                Unit::Bytes => (g.bytes_share_before, g.bytes_share_after),
                Unit::Documents => (g.docs_share_before, g.docs_share_after),
            };
            if let Some(t) = g.target_share {
                max_share_error = max_share_error.max((g.share_after - t).abs());
            }
        }
        Report {
            tool: crate::TOOL,
            group_by: config.group_by.clone(),
            unit: config.unit,
            seed: config.seed,
            max_repeat: config.max_repeat,
            before,
            after,
            max_share_error,
            wall_seconds,
            groups,
        }
    }

    /// Writes report.json, report.md and report.png into `dir` (atomically each).
    pub fn write(&self, dir: &Path) -> Result<Vec<WrittenFile>> {
        let json_path = dir.join("report.json");
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::json(&json_path, e))?;
        write_file(&json_path, &json)?;
        write_file(dir.join("report.md"), self.markdown().as_bytes())?;
        let png = dir.join("report.png");
        self.chart(&png).map_err(|e| Error::input(&png, None, format!("cannot draw the chart: {e:#}")))?;
        ["report.json", "report.md", "report.png"]
            .iter()
            .map(|name| {
                let path = dir.join(name);
                let bytes = std::fs::metadata(&path).map_err(|e| Error::io(&path, "stat", e))?.len();
                Ok(WrittenFile { path, rows: 0, bytes })
            })
            .collect()
    }

    pub fn markdown(&self) -> String {
        let unit = self.unit.name();
        let mut md = format!(
            "# Remix by `{}`: shares of {unit}\n\n{} documents ({}) in, {} written counting copies ({}); \
             largest distance to a target share: {:.3} points (seed {}, max_repeat {}).\n\n",
            self.group_by,
            self.before.docs,
            human_bytes(self.before.bytes),
            self.after.docs,
            human_bytes(self.after.bytes),
            100.0 * self.max_share_error,
            self.seed,
            self.max_repeat
        );
        md.push_str("| group | rule | target | share before | share after | docs before | docs after | kept | dropped | bytes before | bytes after | mean repeat | max repeat | repeated docs |\n");
        md.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for g in &self.groups {
            md.push_str(&format!(
                "| {} | {} | {} | {:.2}% | {:.2}% | {} | {} | {} | {} | {} | {} | {:.2} | {} | {} |\n",
                g.group.replace('|', "\\|"),
                g.rule,
                g.target_share.map_or("-".to_string(), |t| format!("{:.2}%", 100.0 * t)),
                100.0 * g.share_before,
                100.0 * g.share_after,
                g.docs_before,
                g.docs_after,
                g.docs_kept,
                g.docs_dropped,
                human_bytes(g.bytes_before),
                human_bytes(g.bytes_after),
                g.mean_repeat,
                g.max_repeat,
                g.docs_repeated
            ));
        }
        md.push_str(&format!(
            "\nShares count {unit}; docs after and bytes after count every copy. Dropped documents are in `_dropped/`.\n"
        ));
        md
    }

    /// The groups drawn: all of them, or the largest (by share before, after or target) and
    /// "other groups" summing the rest.
    fn chart_rows(&self) -> Vec<(String, f64, f64, Option<f64>)> {
        const MOST: usize = 16;
        let mut rows: Vec<(String, f64, f64, Option<f64>)> =
            self.groups.iter().map(|g| (g.group.clone(), g.share_before, g.share_after, g.target_share)).collect();
        if rows.len() > MOST {
            let size = |r: &(String, f64, f64, Option<f64>)| r.1.max(r.2).max(r.3.unwrap_or(0.0));
            rows.sort_by(|a, b| size(b).total_cmp(&size(a)).then_with(|| a.0.cmp(&b.0)));
            let rest = rows.split_off(MOST - 1);
            let sum = |f: fn(&(String, f64, f64, Option<f64>)) -> f64| rest.iter().map(f).sum::<f64>();
            rows.push((
                format!("{} other groups", rest.len()),
                sum(|r| r.1),
                sum(|r| r.2),
                Some(sum(|r| r.3.unwrap_or(0.0))),
            ));
        }
        rows
    }

    /// Grouped bars: share before (grey), after (blue) and target (orange outline) per group.
    pub fn chart(&self, png: &Path) -> anyhow::Result<()> {
        use plotters::prelude::*;
        use plotters::style::text_anchor::{HPos, Pos, VPos};
        let rows = self.chart_rows();
        let n = rows.len().max(1);
        let top = rows.iter().map(|r| r.1.max(r.2).max(r.3.unwrap_or(0.0))).fold(0.0f64, f64::max);
        let y_max = ((top * 100.0 / 10.0).ceil() * 10.0).clamp(10.0, 100.0);
        let width = (260 + 110 * n as u32).max(640);
        let before_colour = RGBColor(160, 160, 160);
        let after_colour = RGBColor(31, 119, 180);
        let target_colour = RGBColor(230, 110, 20);
        let labels: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
        draw_png(png, (width, 520), |root| {
            let mut builder = ChartBuilder::on(root);
            builder.margin(16);
            if font_available() {
                builder
                    .caption(
                        format!("Remix by {}: share of {} before, after and target", self.group_by, self.unit.name()),
                        ("sans-serif", 22),
                    )
                    .x_label_area_size(46)
                    .y_label_area_size(64);
            }
            let mut chart = builder.build_cartesian_2d(0f64..n as f64, 0f64..y_max).plotted()?;
            let mut mesh = chart.configure_mesh();
            mesh.disable_x_mesh().x_labels(0);
            if font_available() {
                mesh.y_desc(format!("share of {} (%)", self.unit.name()))
                    .y_label_formatter(&|v| format!("{v:.0}%"))
                    .label_style(("sans-serif", 15));
            } else {
                mesh.y_labels(0);
            }
            mesh.draw().plotted()?;
            let bar = |i: usize, slot: f64, value: f64| {
                let x0 = i as f64 + 0.12 + slot * 0.26;
                [(x0, 0.0), (x0 + 0.24, value * 100.0)]
            };
            chart
                .draw_series(rows.iter().enumerate().map(|(i, r)| Rectangle::new(bar(i, 0.0, r.1), before_colour.filled())))
                .plotted()?
                .label("before")
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], before_colour.filled()));
            chart
                .draw_series(rows.iter().enumerate().map(|(i, r)| Rectangle::new(bar(i, 1.0, r.2), after_colour.filled())))
                .plotted()?
                .label("after")
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], after_colour.filled()));
            chart
                .draw_series(rows.iter().enumerate().filter_map(|(i, r)| {
                    r.3.map(|t| Rectangle::new(bar(i, 2.0, t), ShapeStyle::from(&target_colour.mix(0.35)).filled()))
                }))
                .plotted()?
                .label("target")
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], ShapeStyle::from(&target_colour.mix(0.35)).filled()));
            chart
                .draw_series(rows.iter().enumerate().filter_map(|(i, r)| {
                    r.3.map(|t| Rectangle::new(bar(i, 2.0, t), target_colour.stroke_width(2)))
                }))
                .plotted()?;
            if font_available() {
                // Values above the bars, group names under them.
                let value_style = ("sans-serif", 14).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Bottom));
                for (i, r) in rows.iter().enumerate() {
                    for (slot, v) in [(0.0, Some(r.1)), (1.0, Some(r.2)), (2.0, r.3)] {
                        if let Some(v) = v {
                            let [(x0, _), (x1, y1)] = bar(i, slot, v);
                            chart
                                .draw_series(std::iter::once(Text::new(format!("{:.1}", v * 100.0), ((x0 + x1) / 2.0, y1 + y_max * 0.005), value_style.clone())))
                                .plotted()?;
                        }
                    }
                }
                let name_style = ("sans-serif", 16).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Top));
                let area = chart.plotting_area();
                for (i, label) in labels.iter().enumerate() {
                    let (px, py) = area.map_coordinate(&(i as f64 + 0.5, 0.0));
                    root.draw(&Text::new(label.clone(), (px, py + 8), name_style.clone())).plotted()?;
                }
                chart
                    .configure_series_labels()
                    .position(SeriesLabelPosition::UpperRight)
                    .background_style(WHITE.mix(0.9))
                    .border_style(BLACK)
                    .label_font(("sans-serif", 15))
                    .draw()
                    .plotted()?;
            }
            Ok(())
        })
        .with_context(|| format!("drawing {}", png.display()))?;
        Ok(())
    }
}

/// 1234567 -> "1.23 MB".
pub fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.2} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{bytes} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polars_group_stats_count_documents_bytes_and_copies() {
        let stats = group_stats(&[1, 0, 1, 1], &[10, 20, 30, 40], &[0, 2, 1, 3]).unwrap();
        assert_eq!(stats.len(), 2);
        assert_eq!(
            stats[0],
            GroupStats { group: 0, docs_before: 1, bytes_before: 20, docs_kept: 1, docs_after: 2, bytes_after: 40, docs_repeated: 1, max_repeat: 2 }
        );
        assert_eq!(
            stats[1],
            GroupStats { group: 1, docs_before: 3, bytes_before: 80, docs_kept: 2, docs_after: 4, bytes_after: 150, docs_repeated: 1, max_repeat: 3 }
        );
    }
}
