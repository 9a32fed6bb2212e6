//! The filter report: documents kept and rejected, by first failing rule (the manifest's
//! counts), how often each rule fires regardless of order, and per language; JSON and markdown.

use crate::rules;
use dsllm_core::error::{Error, Result};
use dsllm_core::manifest::Manifest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LanguageRow {
    pub read: u64,
    pub kept: u64,
    pub rejected: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleRow {
    pub rule: String,
    /// Documents this rule rejected (it was the first to fail).
    pub rejected: u64,
    /// Documents failing this rule, whatever else they failed.
    pub fires: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub read: u64,
    pub kept: u64,
    pub rejected: u64,
    pub bytes_read: u64,
    pub bytes_kept: u64,
    /// Every rule in evaluation order.
    pub rules: Vec<RuleRow>,
    pub by_language: BTreeMap<String, LanguageRow>,
}

impl Report {
    pub fn from_manifest(m: &Manifest) -> Report {
        let number = |key: &str| m.extra.get(key).and_then(|v| v.as_f64()).unwrap_or(0.0) as u64;
        let rules = rules::rules()
            .iter()
            .map(|r| RuleRow {
                rule: r.name().to_string(),
                rejected: m.counts.removed_by_reason.get(r.name()).copied().unwrap_or(0),
                fires: number(&format!("fires:{}", r.name())),
            })
            .collect();
        let mut by_language: BTreeMap<String, LanguageRow> = BTreeMap::new();
        for key in m.extra.keys() {
            let mut parts = key.split(':');
            if let (Some("lang"), Some(lang), Some(what)) = (parts.next(), parts.next(), parts.next()) {
                let row = by_language.entry(lang.to_string()).or_default();
                match what {
                    "kept" => row.kept = number(key),
                    _ => row.rejected = number(key),
                }
                row.read = row.kept + row.rejected;
            }
        }
        Report {
            read: m.counts.read,
            kept: m.counts.kept,
            rejected: m.counts.removed,
            bytes_read: number("bytes_read"),
            bytes_kept: number("bytes_kept"),
            rules,
            by_language,
        }
    }

    pub fn markdown(&self) -> String {
        let pct = |a: u64, b: u64| if b == 0 { 0.0 } else { 100.0 * a as f64 / b as f64 };
        let mut md = String::from("# ds-filter report\n\n");
        md += &format!(
            "{} documents read, {} kept ({:.1}%), {} rejected; {:.1} MB of text read, {:.1} MB kept.\n\n",
            self.read,
            self.kept,
            pct(self.kept, self.read),
            self.rejected,
            self.bytes_read as f64 / 1e6,
            self.bytes_kept as f64 / 1e6
        );
        md += "## Rules (in evaluation order)\n\n| rule | rejected (first to fail) | fires (any order) | fires % |\n|---|---:|---:|---:|\n";
        for r in &self.rules {
            md += &format!("| {} | {} | {} | {:.1}% |\n", r.rule, r.rejected, r.fires, pct(r.fires, self.read));
        }
        md += "\n## Languages\n\n| language | read | kept | rejected | kept % |\n|---|---:|---:|---:|---:|\n";
        for (lang, row) in &self.by_language {
            md += &format!("| {lang} | {} | {} | {} | {:.1}% |\n", row.read, row.kept, row.rejected, pct(row.kept, row.read));
        }
        md
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join("report.json");
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::json(&path, e))?;
        dsllm_core::atomic::write_file(&path, &json)?;
        dsllm_core::atomic::write_file(dir.join("report.md"), self.markdown().as_bytes())
    }
}
