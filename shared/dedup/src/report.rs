//! The dedup report: rate per dump, cumulative rate against the number of dumps (the paper's
//! Table 1), and the sizes of the duplicate clusters; as JSON and markdown.

use crate::index::DumpEntry;
use dsllm_core::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Table 1 of the paper: (number of dumps, deduplication rate %).
pub const PAPER_TABLE_1: [(u32, f64); 8] =
    [(1, 22.2), (2, 46.7), (6, 55.7), (12, 69.9), (16, 75.7), (22, 76.3), (41, 81.6), (91, 89.8)];

/// What happened to one dump.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DumpStats {
    /// Documents read (including quarantined).
    pub documents: u64,
    pub kept: u64,
    pub removed_exact: u64,
    pub removed_near: u64,
    /// Removed as duplicates of documents of the same dump.
    pub removed_within_dump: u64,
    /// Removed as duplicates of documents earlier dumps kept.
    pub removed_against_earlier_dumps: u64,
    /// Documents with no text left after normalization.
    pub quarantined: u64,
    /// Clusters formed when the dump was added, by size (documents, earlier dumps' included).
    pub cluster_sizes: BTreeMap<u64, u64>,
}

impl DumpStats {
    pub fn removed(&self) -> u64 {
        self.removed_exact + self.removed_near
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DumpRow {
    pub dump: String,
    pub documents: u64,
    pub removed: u64,
    pub rate: f64,
    pub within_dump_rate: f64,
    pub stats: DumpStats,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CumulativeRow {
    pub dumps: u32,
    pub documents: u64,
    pub removed: u64,
    /// Removed / documents over the first `dumps` dumps: Table 1's quantity.
    pub rate: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub per_dump: Vec<DumpRow>,
    pub cumulative: Vec<CumulativeRow>,
    /// Size bucket ("2", "3", "4", "5-8", "9-16", ...) → clusters.
    pub cluster_size_histogram: BTreeMap<String, u64>,
    pub paper_table_1: Vec<(u32, f64)>,
}

fn rate(removed: u64, documents: u64) -> f64 {
    if documents == 0 {
        0.0
    } else {
        removed as f64 / documents as f64
    }
}

fn size_bucket(size: u64) -> (u64, String) {
    if size <= 4 {
        return (size, size.to_string());
    }
    let upper = size.next_power_of_two();
    (upper, format!("{}-{}", upper / 2 + 1, upper))
}

impl Report {
    /// The report of every dump in the index, in the order they were added.
    pub fn from_index(dumps: &[DumpEntry]) -> Report {
        let mut per_dump = Vec::new();
        let mut cumulative = Vec::new();
        let (mut docs, mut removed) = (0u64, 0u64);
        let mut sizes: BTreeMap<u64, (String, u64)> = BTreeMap::new();
        for (i, entry) in dumps.iter().enumerate() {
            let s = &entry.stats;
            per_dump.push(DumpRow {
                dump: entry.dump.clone(),
                documents: s.documents,
                removed: s.removed(),
                rate: rate(s.removed(), s.documents),
                within_dump_rate: rate(s.removed_within_dump, s.documents),
                stats: s.clone(),
            });
            docs += s.documents;
            removed += s.removed();
            cumulative.push(CumulativeRow { dumps: i as u32 + 1, documents: docs, removed, rate: rate(removed, docs) });
            for (&size, &count) in &s.cluster_sizes {
                let (order, name) = size_bucket(size);
                sizes.entry(order).or_insert((name, 0)).1 += count;
            }
        }
        Report {
            per_dump,
            cumulative,
            cluster_size_histogram: sizes.into_values().collect(),
            paper_table_1: PAPER_TABLE_1.to_vec(),
        }
    }

    pub fn markdown(&self) -> String {
        let mut md = String::from("# Dedup report\n\n## Per dump\n\n");
        md.push_str("| dump | documents | removed | rate | within dump | against earlier dumps | exact | near | quarantined |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for r in &self.per_dump {
            let s = &r.stats;
            md.push_str(&format!(
                "| {} | {} | {} | {:.1}% | {} | {} | {} | {} | {} |\n",
                r.dump, r.documents, r.removed, 100.0 * r.rate, s.removed_within_dump, s.removed_against_earlier_dumps, s.removed_exact, s.removed_near, s.quarantined
            ));
        }
        md.push_str("\n## Dedup rate vs number of dumps (cf. the paper's Table 1)\n\n| dumps | documents | removed | rate | paper |\n|---:|---:|---:|---:|---:|\n");
        for c in &self.cumulative {
            let paper = PAPER_TABLE_1.iter().find(|(d, _)| *d == c.dumps).map(|(_, p)| format!("{p:.1}%")).unwrap_or_default();
            md.push_str(&format!("| {} | {} | {} | {:.1}% | {} |\n", c.dumps, c.documents, c.removed, 100.0 * c.rate, paper));
        }
        md.push_str("\n## Cluster sizes\n\n| documents in cluster | clusters |\n|---|---:|\n");
        for (bucket, count) in &self.cluster_size_histogram {
            md.push_str(&format!("| {bucket} | {count} |\n"));
        }
        md
    }

    /// Writes `report.json` and `report.md` into `dir`, atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let json_path = dir.join("report.json");
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::json(&json_path, e))?;
        dsllm_core::atomic::write_file(&json_path, &json)?;
        dsllm_core::atomic::write_file(dir.join("report.md"), self.markdown().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cumulative_rates_add_dumps_up() {
        let entry = |name: &str, docs, removed, sizes: &[(u64, u64)]| DumpEntry {
            dump: name.into(),
            segment: name.into(),
            kept: docs - removed,
            stats: DumpStats {
                documents: docs,
                kept: docs - removed,
                removed_near: removed,
                cluster_sizes: sizes.iter().copied().collect(),
                ..Default::default()
            },
        };
        let report = Report::from_index(&[entry("a", 100, 20, &[(2, 5), (7, 1)]), entry("b", 100, 60, &[(2, 1), (6, 2)])]);
        assert_eq!(report.cumulative[1].rate, 0.4);
        assert_eq!(report.cluster_size_histogram["2"], 6);
        assert_eq!(report.cluster_size_histogram["5-8"], 3);
        assert!(report.markdown().contains("| 2 | 200 | 80 | 40.0% | 46.7% |"));
    }
}
