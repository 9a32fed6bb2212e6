//! Cross-dump deduplication, the first data stage of the DeepSeek LLM paper (§2.1, Table 1).
//!
//! Documents are deduplicated exactly (xxh3-128 of normalized text) and approximately (MinHash
//! over word 5-gram / CJK character 5-gram shingles, LSH with 14 bands × 8 rows, candidates
//! verified by the similarity of bottom-k shingle samples, connected components with union-find). Dumps are processed
//! in order against a persistent on-disk [`index`] of the documents earlier dumps kept, so adding
//! dump k+1 reads only that dump and the index, and gives the same result as deduplicating
//! dumps 1..k+1 in one run. A dump never changes what an earlier dump kept.
//!
//! The work is split in three phases ([`pipeline`]) so a cluster job array can run it:
//! 1. `signatures` (sharded over input files): sketches and band hashes, written as sorted runs;
//! 2. `cluster` (one task): merges the runs band by band with the index, clusters, decides,
//!    appends the kept documents to the index, writes the [`report`];
//! 3. `write` (sharded): splits every input file into kept, removed (with `dup_of`,
//!    `dup_of_dump`, `similarity`) and quarantined Parquet, and closes the folder's manifest.
//!
//! - [`normalize`]: NFKC, lowercase, punctuation folding; tokens and shingles.
//! - [`minhash`]: signatures, band hashes, bottom-k samples and their similarity.
//! - [`union_find`]: connected components.
//! - [`codec`]: the zstd-compressed binary record files of the work folder and the index.

pub mod cluster;
pub mod codec;
pub mod index;
pub mod minhash;
pub mod normalize;
pub mod pipeline;
pub mod report;
pub mod union_find;

use serde::{Deserialize, Serialize};

/// Which document of a cluster is kept. Documents of earlier dumps are always kept first:
/// they were written before the later dump was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum KeepRule {
    /// Earliest dump, then the smallest id (the default).
    #[default]
    EarliestDumpThenSmallestId,
    /// Earliest dump, then the longest text, then the smallest id.
    EarliestDumpThenLongest,
}

impl std::str::FromStr for KeepRule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "earliest" | "earliest_dump_then_smallest_id" => Ok(KeepRule::EarliestDumpThenSmallestId),
            "longest" | "earliest_dump_then_longest" => Ok(KeepRule::EarliestDumpThenLongest),
            _ => Err(format!("unknown keep rule `{s}` (earliest, longest)")),
        }
    }
}

/// Parameters of a dedup run. An index remembers the parameters that built it, and refuses
/// others: band hashes of different parameters cannot be compared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DedupConfig {
    /// LSH bands (the paper's setup as reproduced here: 14).
    pub bands: usize,
    /// Signature entries per band (8); bands × rows = 112 hashes.
    pub rows_per_band: usize,
    /// Tokens per shingle: words, or characters of Chinese/Japanese (5).
    pub shingle_tokens: usize,
    /// Seed of the hash permutations.
    pub seed: u64,
    /// Shingle hashes per document kept to verify candidates (bottom-k sample, 256).
    pub sample_size: usize,
    /// Candidates whose estimated similarity reaches this are duplicates.
    pub similarity_threshold: f32,
    /// At most this many earlier members of one bucket are compared with each document, which
    /// bounds the work on huge buckets (boilerplate pages) without losing their connectivity.
    pub max_bucket_comparisons: usize,
    pub keep_rule: KeepRule,
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig {
            bands: 14,
            rows_per_band: 8,
            shingle_tokens: 5,
            seed: 1,
            sample_size: 256,
            similarity_threshold: 0.8,
            max_bucket_comparisons: 16,
            keep_rule: KeepRule::default(),
        }
    }
}

impl DedupConfig {
    pub fn num_hashes(&self) -> usize {
        self.bands * self.rows_per_band
    }

    /// The parameters an index must share to be usable.
    pub fn index_parameters(&self) -> serde_json::Value {
        serde_json::json!({
            "bands": self.bands,
            "rows_per_band": self.rows_per_band,
            "shingle_tokens": self.shingle_tokens,
            "seed": self.seed,
            "sample_size": self.sample_size,
        })
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.bands == 0 || self.rows_per_band == 0 || self.sample_size == 0 {
            return Err("--bands, --rows-per-band and --sample-size must be at least 1".into());
        }
        if !(1..=normalize::MAX_SHINGLE_TOKENS).contains(&self.shingle_tokens) {
            return Err(format!("--shingle-tokens must be in 1..={}", normalize::MAX_SHINGLE_TOKENS));
        }
        if !(0.0..=1.0).contains(&self.similarity_threshold) {
            return Err("--threshold must be between 0 and 1".into());
        }
        Ok(())
    }
}
