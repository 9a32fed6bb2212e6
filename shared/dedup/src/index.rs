//! The persistent index of kept documents, the memory of earlier dumps.
//!
//! ```text
//! index/
//!   index.json                 parameters, and the dumps in the order they were added, with stats
//!   segments/<dump>/ids.zst    ids of the documents the dump kept (segment order)
//!   segments/<dump>/exact.zst  their exact hashes, sorted
//!   segments/<dump>/band-NN.zst their band-NN hashes, sorted (a run, see codec::write_band_run)
//!   segments/<dump>/samples.zst  their bottom-k shingle samples (to verify candidates)
//! ```
//! A dump is deduplicated against the segments added before it, so rerunning a dump that is
//! already in the index replaces its segment with the same content: reruns are idempotent and
//! adding dump k+1 later equals adding 1..k+1 at once. Everything is sorted and zstd-compressed
//! and is read as streams: the index never has to fit in memory.

use crate::codec::{write_band_run, BandRunReader, RecordReader, RecordWriter};
use crate::minhash::Samples;
use crate::report::DumpStats;
use crate::DedupConfig;
use dsllm_core::error::{Error, IoContext, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const INDEX_FILE: &str = "index.json";
// 2: bottom-k samples replace MinHash signatures for verification.
const FORMAT_VERSION: u32 = 2;

/// One dump in the index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DumpEntry {
    pub dump: String,
    /// Folder under `segments/`.
    pub segment: String,
    /// Documents in the segment (the dump's kept documents).
    pub kept: u64,
    pub stats: DumpStats,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexManifest {
    pub format: u32,
    pub parameters: serde_json::Value,
    pub dumps: Vec<DumpEntry>,
}

/// A reference to a kept document of an earlier dump: segment position and row in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IndexedDoc {
    pub segment: u32,
    pub row: u32,
}

/// What a dump adds to the index: its kept documents, in a deterministic order.
#[derive(Debug, Default)]
pub struct SegmentDocs {
    pub ids: Vec<String>,
    pub exact_hashes: Vec<u128>,
    /// `ids.len() × bands` LSH band hashes.
    pub band_hashes: Vec<u64>,
    pub samples: Samples,
}

pub struct Index {
    dir: PathBuf,
    pub manifest: IndexManifest,
}

impl Index {
    /// Opens the index at `dir`, or starts an empty one. Refuses an index built with other
    /// parameters: its band hashes would never match.
    pub fn open_or_create(dir: impl AsRef<Path>, config: &DedupConfig) -> Result<Index> {
        let dir = dir.as_ref().to_path_buf();
        let path = dir.join(INDEX_FILE);
        let parameters = config.index_parameters();
        if !path.exists() {
            let manifest = IndexManifest { format: FORMAT_VERSION, parameters, dumps: vec![] };
            return Ok(Index { dir, manifest });
        }
        let text = std::fs::read_to_string(&path).at(&path, "read index")?;
        let manifest: IndexManifest = serde_json::from_str(&text).map_err(|e| Error::json(&path, e))?;
        if manifest.format != FORMAT_VERSION {
            return Err(Error::input(&path, None, format!("index format {} (this tool reads {FORMAT_VERSION})", manifest.format)));
        }
        if manifest.parameters != parameters {
            return Err(Error::Usage(format!(
                "{}: the index was built with {} but this run uses {}; use the same --bands/--rows-per-band/--shingle-tokens/--seed or a new --index",
                path.display(),
                manifest.parameters,
                parameters
            )));
        }
        Ok(Index { dir, manifest })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn position(&self, dump: &str) -> Option<usize> {
        self.manifest.dumps.iter().position(|d| d.dump == dump)
    }

    /// The segments `dump` is deduplicated against: those added before it.
    pub fn segments_before(&self, dump: &str) -> usize {
        self.position(dump).unwrap_or(self.manifest.dumps.len())
    }

    fn segment_dir(&self, segment: usize) -> PathBuf {
        self.dir.join("segments").join(&self.manifest.dumps[segment].segment)
    }

    /// Sorted (exact hash, row) of a segment.
    pub fn read_exact(&self, segment: usize) -> Result<Vec<(u128, u32)>> {
        let mut r = RecordReader::open(self.segment_dir(segment).join("exact.zst"))?;
        let n = r.u64()?;
        (0..n).map(|_| Ok((r.u128()?, r.u32()?))).collect()
    }

    /// Streams the sorted (band hash, row) pairs of one band of a segment.
    pub fn band_reader(&self, segment: usize, band: usize) -> Result<BandRunReader> {
        BandRunReader::open(&self.segment_dir(segment).join(format!("band-{band:02}.zst")))
    }

    /// Appends the samples of the given rows (sorted, unique) of a segment to `out`, in that order.
    pub fn read_samples(&self, segment: usize, rows: &[u32], out: &mut Samples) -> Result<()> {
        let mut r = RecordReader::open(self.segment_dir(segment).join("samples.zst"))?;
        let n = r.u64()?;
        let mut buf = Vec::new();
        let mut wanted = rows.iter().peekable();
        for row in 0..n as u32 {
            let Some(&&next) = wanted.peek() else { break };
            buf.resize(r.u32()? as usize, 0);
            r.u32s(&mut buf)?;
            if row == next {
                out.push(&buf);
                wanted.next();
            }
        }
        if wanted.peek().is_some() {
            return Err(Error::input(r.path(), None, "index segment has fewer rows than its bands refer to"));
        }
        Ok(())
    }

    /// Ids of the given rows (sorted, unique) of a segment, in that order.
    pub fn read_ids(&self, segment: usize, rows: &[u32]) -> Result<Vec<String>> {
        let mut r = RecordReader::open(self.segment_dir(segment).join("ids.zst"))?;
        let n = r.u64()?;
        let mut out = Vec::with_capacity(rows.len());
        let mut wanted = rows.iter().peekable();
        for row in 0..n as u32 {
            let Some(&&next) = wanted.peek() else { break };
            let id = r.str()?;
            if row == next {
                out.push(id);
                wanted.next();
            }
        }
        if wanted.peek().is_some() {
            return Err(Error::input(r.path(), None, "index segment has fewer ids than referred to"));
        }
        Ok(out)
    }

    /// Writes the segment of `dump` (replacing an earlier one) and records the dump in
    /// `index.json`, last, so a killed run leaves the index as it was or with the whole dump.
    pub fn add_dump(&mut self, dump: &str, docs: &SegmentDocs, stats: DumpStats, config: &DedupConfig) -> Result<()> {
        let segment = segment_name(dump);
        let segments = self.dir.join("segments");
        let final_dir = segments.join(&segment);
        let temp_dir = segments.join(format!(".{segment}.tmp-{}", std::process::id()));
        if temp_dir.exists() {
            std::fs::remove_dir_all(&temp_dir).at(&temp_dir, "remove stale temporary segment")?;
        }
        std::fs::create_dir_all(&temp_dir).at(&temp_dir, "create segment folder")?;
        write_segment(&temp_dir, docs, config)?;
        if final_dir.exists() {
            std::fs::remove_dir_all(&final_dir).at(&final_dir, "replace segment")?;
        }
        std::fs::rename(&temp_dir, &final_dir).at(&final_dir, "move segment into place")?;
        let entry = DumpEntry { dump: dump.to_string(), segment, kept: docs.ids.len() as u64, stats };
        match self.position(dump) {
            Some(p) => self.manifest.dumps[p] = entry,
            None => self.manifest.dumps.push(entry),
        }
        let path = self.dir.join(INDEX_FILE);
        let json = serde_json::to_vec_pretty(&self.manifest).map_err(|e| Error::json(&path, e))?;
        dsllm_core::atomic::write_file(&path, &json)
    }
}

/// A folder name for a dump: its name with anything unusual replaced.
fn segment_name(dump: &str) -> String {
    let safe: String = dump.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
    if safe.is_empty() || safe.starts_with('.') {
        format!("dump{safe}")
    } else {
        safe
    }
}

fn write_segment(dir: &Path, docs: &SegmentDocs, config: &DedupConfig) -> Result<()> {
    let n = docs.ids.len();
    let mut ids = RecordWriter::create(dir.join("ids.zst"))?;
    ids.u64(n as u64)?;
    for id in &docs.ids {
        ids.str(id)?;
    }
    ids.finish()?;

    let mut exact: Vec<(u128, u32)> = docs.exact_hashes.iter().enumerate().map(|(i, &e)| (e, i as u32)).collect();
    exact.sort_unstable();
    let mut w = RecordWriter::create(dir.join("exact.zst"))?;
    w.u64(n as u64)?;
    for (hash, row) in exact {
        w.u128(hash)?;
        w.u32(row)?;
    }
    w.finish()?;

    let mut w = RecordWriter::create(dir.join("samples.zst"))?;
    w.u64(n as u64)?;
    for row in 0..n {
        let sample = docs.samples.get(row);
        w.u32(sample.len() as u32)?;
        w.u32s(sample)?;
    }
    w.finish()?;

    let mut bands = vec![vec![(0u64, 0u32); n]; config.bands];
    for (row, hashes) in docs.band_hashes.chunks_exact(config.bands).enumerate() {
        for (band, &hash) in hashes.iter().enumerate() {
            bands[band][row] = (hash, row as u32);
        }
    }
    for (band, mut entries) in bands.into_iter().enumerate() {
        entries.sort_unstable();
        write_band_run(&dir.join(format!("band-{band:02}.zst")), &entries)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_must_match_and_dumps_keep_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let config = DedupConfig::default();
        let mut index = Index::open_or_create(dir.path(), &config).unwrap();
        let mut samples = Samples::default();
        samples.push(&[1, 5, 9]);
        samples.push(&[2]);
        let docs = SegmentDocs { ids: vec!["a".into(), "b".into()], exact_hashes: vec![9, 3], band_hashes: vec![7; 28], samples };
        index.add_dump("CC-2", &docs, DumpStats::default(), &config).unwrap();
        index.add_dump("CC-1", &docs, DumpStats::default(), &config).unwrap();
        let reopened = Index::open_or_create(dir.path(), &config).unwrap();
        assert_eq!(reopened.segments_before("CC-1"), 1);
        assert_eq!(reopened.segments_before("CC-3"), 2);
        assert_eq!(reopened.read_exact(0).unwrap(), vec![(3, 1), (9, 0)]);
        assert_eq!(reopened.read_ids(1, &[1]).unwrap(), vec!["b"]);
        let mut read = Samples::default();
        reopened.read_samples(1, &[1], &mut read).unwrap();
        assert_eq!(read.get(0), &[2]);
        let other = DedupConfig { bands: 20, ..DedupConfig::default() };
        assert!(matches!(Index::open_or_create(dir.path(), &other), Err(Error::Usage(_))));
    }
}
