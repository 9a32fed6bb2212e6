//! Packing: documents → token ids (batch-encoded in parallel) → EOS after each document →
//! seeded shuffle → fixed-length sequences in shards, split into train and validation by a
//! hash of the document id.
//!
//! Output is byte-identical for the same documents (in the same order), tokenizer and
//! config, whatever the thread count: encoding is per document and collected in order,
//! everything after it is sequential.
//!
//! The shuffle is global within a buffer of `shuffle_buffer_tokens` tokens per split (the
//! memory bound): copies are ordered by a seeded hash of (id, copy number), so a remix
//! repeat's copies land far apart. Corpora larger than the buffer are shuffled buffer by
//! buffer; the reader's epoch order shuffles the sequences again.

use std::ops::Range;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::error::{Result, TokensError};
use crate::shard::{
    ShardHeader, ShardWriter, SplitIndex, TokenIndex, DTYPE_U32_LE, FORMAT_VERSION, INDEX_FILE,
};
use crate::tokenizer::DsTokenizer;

pub const TRAIN_SPLIT: &str = "train";
pub const VALIDATION_SPLIT: &str = "val";

/// Parameters of packing; `Default` is the paper's context length.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PackConfig {
    /// Tokens per training sequence (paper: 4096).
    pub sequence_length: u32,
    /// Share of documents, by id hash, that go to validation.
    pub validation_fraction: f64,
    /// Seed of the document shuffle.
    pub seed: u64,
    /// Sequences per shard file (16384 × 4096 tokens = 256 MiB).
    pub sequences_per_shard: u64,
    /// Tokens held in memory per split for the shuffle (4 bytes each).
    pub shuffle_buffer_tokens: u64,
    /// Text gathered before a parallel encode.
    pub encode_batch_bytes: usize,
    /// Encoding threads; 0 means all cores.
    pub threads: usize,
    /// Also write `shard-*.bin.zst` copies for transport at this zstd level.
    pub zstd_level: Option<i32>,
}

impl Default for PackConfig {
    fn default() -> Self {
        PackConfig {
            sequence_length: 4096,
            validation_fraction: 0.005,
            seed: 0,
            sequences_per_shard: 16_384,
            shuffle_buffer_tokens: 256 << 20,
            encode_batch_bytes: 16 << 20,
            threads: 0,
            zstd_level: None,
        }
    }
}

/// Whether a document belongs to validation: its id's xxh3-64 falls in the first
/// `validation_fraction` of the hash range. Independent of the shuffle seed, so a document
/// stays on its side across reruns.
pub fn is_validation(id: &str, validation_fraction: f64) -> bool {
    (xxh3_64(id.as_bytes()) as f64) < validation_fraction * 18_446_744_073_709_551_616.0
}

/// What `Packer::finish` returns: the index it wrote and what it read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PackSummary {
    pub index: TokenIndex,
    pub documents_read: u64,
    pub text_bytes: u64,
    /// Documents whose text is empty.
    pub skipped_empty: u64,
    /// Documents the remix dropped (repeat = 0).
    pub skipped_repeat_zero: u64,
}

/// Streams documents into shards under `output` (`train/`, `val/`, then `index.json`).
///
/// Call [`Packer::add`] for each document (or `add_documents` per Parquet batch), then
/// [`Packer::finish`]. Nothing is visible as complete until index.json is renamed into place.
pub struct Packer<'t> {
    tokenizer: &'t DsTokenizer,
    config: PackConfig,
    output: PathBuf,
    pool: rayon::ThreadPool,
    pending: Vec<PendingDocument>,
    pending_bytes: usize,
    train: SplitPacker,
    validation: SplitPacker,
    arrivals: u64,
    documents_read: u64,
    text_bytes: u64,
    skipped_empty: u64,
    skipped_repeat_zero: u64,
}

struct PendingDocument {
    id: String,
    text: String,
    copies: u32,
    validation: bool,
}

/// One split's shuffle buffer and shard writer.
struct SplitPacker {
    writer: ShardWriter,
    /// Token ids of buffered documents, each stored once however many copies it has.
    arena: Vec<u32>,
    copies: Vec<BufferedCopy>,
    buffered_tokens: u64,
    documents: u64,
    document_copies: u64,
}

struct BufferedCopy {
    shuffle_key: u64,
    arrival: u64,
    tokens: Range<usize>,
}

impl<'t> Packer<'t> {
    pub fn new(tokenizer: &'t DsTokenizer, output: &Path, config: PackConfig) -> Result<Self> {
        if config.sequence_length == 0 || !(0.0..=1.0).contains(&config.validation_fraction) {
            return Err(TokensError::Config(format!(
                "sequence_length must be > 0 and validation_fraction in [0, 1]; got {} and {}",
                config.sequence_length, config.validation_fraction
            )));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.threads)
            .build()
            .map_err(|e| TokensError::Config(format!("thread pool: {e}")))?;
        let header = ShardHeader {
            format_version: FORMAT_VERSION,
            dtype: DTYPE_U32_LE,
            vocab_size: tokenizer.vocab_size(),
            sequence_length: config.sequence_length,
            token_count: 0,
            tokenizer_hash: tokenizer.hash(),
        };
        let split = |name: &str| -> Result<SplitPacker> {
            Ok(SplitPacker {
                writer: ShardWriter::new(
                    output,
                    name,
                    header,
                    config.sequences_per_shard,
                    config.zstd_level,
                )?,
                arena: Vec::new(),
                copies: Vec::new(),
                buffered_tokens: 0,
                documents: 0,
                document_copies: 0,
            })
        };
        Ok(Packer {
            tokenizer,
            train: split(TRAIN_SPLIT)?,
            validation: split(VALIDATION_SPLIT)?,
            output: output.into(),
            pool,
            pending: Vec::new(),
            pending_bytes: 0,
            arrivals: 0,
            documents_read: 0,
            text_bytes: 0,
            skipped_empty: 0,
            skipped_repeat_zero: 0,
            config,
        })
    }

    /// Adds one document; `repeat` is the remix's up-sampling factor (0 drops it).
    /// Validation keeps a single copy: up-sampling would only skew its loss.
    pub fn add(&mut self, id: &str, text: &str, repeat: u32) -> Result<()> {
        self.documents_read += 1;
        self.text_bytes += text.len() as u64;
        if repeat == 0 {
            self.skipped_repeat_zero += 1;
            return Ok(());
        }
        if text.is_empty() {
            self.skipped_empty += 1;
            return Ok(());
        }
        let validation = is_validation(id, self.config.validation_fraction);
        let copies = if validation { 1 } else { repeat };
        self.pending.push(PendingDocument {
            id: id.into(),
            text: text.into(),
            copies,
            validation,
        });
        self.pending_bytes += text.len();
        if self.pending_bytes >= self.config.encode_batch_bytes {
            self.encode_pending()?;
        }
        Ok(())
    }

    /// Adds a batch of `(id, text, repeat)` documents.
    pub fn add_documents<'d>(
        &mut self,
        documents: impl IntoIterator<Item = (&'d str, &'d str, u32)>,
    ) -> Result<()> {
        for (id, text, repeat) in documents {
            self.add(id, text, repeat)?;
        }
        Ok(())
    }

    fn encode_pending(&mut self) -> Result<()> {
        let pending = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let tokenizer = self.tokenizer;
        let encoded: Vec<Vec<u32>> = self.pool.install(|| {
            pending
                .par_iter()
                .map(|document| tokenizer.encode_document(&document.text))
                .collect::<Result<_>>()
        })?;
        for (document, tokens) in pending.iter().zip(encoded) {
            let split = if document.validation {
                &mut self.validation
            } else {
                &mut self.train
            };
            let start = split.arena.len();
            split.arena.extend_from_slice(&tokens);
            split.documents += 1;
            for copy in 0..document.copies {
                let mut key_input = document.id.as_bytes().to_vec();
                key_input.extend_from_slice(&copy.to_le_bytes());
                split.copies.push(BufferedCopy {
                    shuffle_key: xxh3_64_with_seed(&key_input, self.config.seed),
                    arrival: self.arrivals,
                    tokens: start..start + tokens.len(),
                });
                self.arrivals += 1;
                split.buffered_tokens += tokens.len() as u64 + 1;
            }
            if split.buffered_tokens >= self.config.shuffle_buffer_tokens {
                split.flush(self.tokenizer.eos_id())?;
            }
        }
        Ok(())
    }

    /// Encodes what is left, flushes both splits, pads each split's last sequence, and
    /// writes index.json (last, atomically).
    pub fn finish(mut self) -> Result<PackSummary> {
        self.encode_pending()?;
        let eos_id = self.tokenizer.eos_id();
        let pad_id = self.tokenizer.pad_id();
        let mut splits = std::collections::BTreeMap::new();
        for (name, mut split) in [
            (TRAIN_SPLIT, self.train),
            (VALIDATION_SPLIT, self.validation),
        ] {
            split.flush(eos_id)?;
            let (shards, pad_tokens) = split.writer.finish(pad_id)?;
            let tokens: u64 = shards.iter().map(|s| s.tokens).sum();
            let sequences: u64 = shards.iter().map(|s| s.sequences).sum();
            let index = SplitIndex {
                documents: split.documents,
                document_copies: split.document_copies,
                tokens,
                pad_tokens,
                sequences,
                shards,
            };
            splits.insert(name.to_string(), index);
        }
        let config = self.tokenizer.config();
        let index = TokenIndex {
            format_version: FORMAT_VERSION,
            dtype: "u32".into(),
            sequence_length: self.config.sequence_length,
            vocab_size: config.vocab_size,
            model_vocab_size: config.model_vocab_size,
            tokenizer_hash: format!("{:016x}", self.tokenizer.hash()),
            eos_id,
            pad_id,
            seed: self.config.seed,
            validation_fraction: self.config.validation_fraction,
            splits,
        };
        let index_path = self.output.join(INDEX_FILE);
        let mut json = serde_json::to_vec_pretty(&index).map_err(|source| TokensError::Json {
            path: index_path.clone(),
            source,
        })?;
        json.push(b'\n');
        crate::write_atomically(&index_path, &json)?;
        Ok(PackSummary {
            index,
            documents_read: self.documents_read,
            text_bytes: self.text_bytes,
            skipped_empty: self.skipped_empty,
            skipped_repeat_zero: self.skipped_repeat_zero,
        })
    }
}

impl SplitPacker {
    /// Writes the buffered copies in shuffled order, each followed by EOS.
    fn flush(&mut self, eos_id: u32) -> Result<()> {
        self.copies
            .sort_unstable_by_key(|copy| (copy.shuffle_key, copy.arrival));
        let mut staged: Vec<u32> = Vec::with_capacity(1 << 20);
        for copy in &self.copies {
            staged.extend_from_slice(&self.arena[copy.tokens.clone()]);
            staged.push(eos_id);
            if staged.len() >= 1 << 20 {
                self.writer.write_tokens(&staged)?;
                staged.clear();
            }
        }
        self.writer.write_tokens(&staged)?;
        self.document_copies += self.copies.len() as u64;
        self.copies.clear();
        self.arena.clear();
        self.buffered_tokens = 0;
        Ok(())
    }
}

/// Packs `(id, text, repeat)` documents into `output` in one call.
pub fn pack_documents<'d>(
    tokenizer: &DsTokenizer,
    output: &Path,
    config: PackConfig,
    documents: impl IntoIterator<Item = (&'d str, &'d str, u32)>,
) -> Result<PackSummary> {
    let mut packer = Packer::new(tokenizer, output, config)?;
    packer.add_documents(documents)?;
    packer.finish()
}

#[cfg(test)]
mod tests;
