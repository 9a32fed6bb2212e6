//! What `ds-inspect` shows for a token folder: index counts, each shard's header, and a few
//! decoded sequences.

use std::fmt;
use std::path::Path;

use serde::Serialize;

use crate::error::{Result, TokensError};
use crate::reader::TokenShards;
use crate::shard::{read_shard_header, ShardHeader, TokenIndex};
use crate::tokenizer::DsTokenizer;

/// Summary of a token folder.
#[derive(Debug, Clone, Serialize)]
pub struct TokensReport {
    pub index: TokenIndex,
    pub shards: Vec<ShardReport>,
    pub samples: Vec<SequenceSample>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShardReport {
    pub path: String,
    pub header: ShardHeader,
    pub bytes: u64,
}

/// The start of one sequence, as ids and as text.
#[derive(Debug, Clone, Serialize)]
pub struct SequenceSample {
    pub split: String,
    pub sequence: u64,
    /// End-of-sentence tokens in the whole sequence: documents that end inside it.
    pub documents_ending: usize,
    pub token_ids: Vec<u32>,
    /// Decoded `token_ids`; absent without a tokenizer.
    pub text: Option<String>,
}

/// Reads `dir/index.json`, every shard header, and the first `sample_tokens` tokens of the
/// first `samples_per_split` sequences of each split (decoded when a tokenizer is given;
/// its hash must match the shards').
pub fn inspect_tokens(
    dir: &Path,
    tokenizer: Option<&DsTokenizer>,
    samples_per_split: u64,
    sample_tokens: usize,
) -> Result<TokensReport> {
    let index = TokenIndex::load(dir)?;
    if let Some(tokenizer) = tokenizer {
        if index.tokenizer_hash_value() != Some(tokenizer.hash()) {
            return Err(TokensError::BadIndex {
                path: dir.join(crate::shard::INDEX_FILE),
                message: format!(
                    "shards were packed with tokenizer {}, the given tokenizer is {:016x}: decoding would be garbage",
                    index.tokenizer_hash,
                    tokenizer.hash()
                ),
            });
        }
    }
    let mut shards = Vec::new();
    for entry in index.splits.values().flat_map(|split| &split.shards) {
        let path = dir.join(&entry.path);
        let header = read_shard_header(&path)?;
        let bytes = std::fs::metadata(&path)
            .map_err(crate::error::io_error(&path))?
            .len();
        shards.push(ShardReport {
            path: entry.path.clone(),
            header,
            bytes,
        });
    }
    let mut samples = Vec::new();
    for split in index.splits.keys() {
        let split_shards = TokenShards::open(dir, split)?;
        for sequence in 0..samples_per_split.min(split_shards.sequence_count()) {
            let tokens = split_shards.sequence(sequence);
            let documents_ending = tokens.iter().filter(|&&t| t == index.eos_id).count();
            let token_ids: Vec<u32> = tokens.into_iter().take(sample_tokens).collect();
            let text = tokenizer.map(|t| t.decode(&token_ids)).transpose()?;
            samples.push(SequenceSample {
                split: split.clone(),
                sequence,
                documents_ending,
                token_ids,
                text,
            });
        }
    }
    Ok(TokensReport {
        index,
        shards,
        samples,
    })
}

impl fmt::Display for TokensReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let index = &self.index;
        writeln!(
            f,
            "token shards: format {}, {} tokens per sequence, vocabulary {} (model {}), tokenizer {}, EOS {}, pad {}",
            index.format_version, index.sequence_length, index.vocab_size, index.model_vocab_size, index.tokenizer_hash, index.eos_id, index.pad_id
        )?;
        for (name, split) in &index.splits {
            writeln!(
                f,
                "  {name}: {} documents ({} with repeats), {} tokens ({} padding), {} sequences in {} shards",
                split.documents, split.document_copies, split.tokens, split.pad_tokens, split.sequences, split.shards.len()
            )?;
        }
        for shard in &self.shards {
            let h = &shard.header;
            writeln!(
                f,
                "  {}: v{} dtype {} vocab {} seq {} tokens {} hash {:016x} ({} bytes)",
                shard.path,
                h.format_version,
                h.dtype,
                h.vocab_size,
                h.sequence_length,
                h.token_count,
                h.tokenizer_hash,
                shard.bytes
            )?;
        }
        for sample in &self.samples {
            writeln!(
                f,
                "  {} sequence {} ({} documents end in it):",
                sample.split, sample.sequence, sample.documents_ending
            )?;
            match &sample.text {
                Some(text) => writeln!(f, "    {text:?}")?,
                None => writeln!(f, "    {:?}", sample.token_ids)?,
            }
        }
        Ok(())
    }
}

/// The header of a single shard file, for `ds-inspect path/to/shard-00000.bin`.
pub fn inspect_shard(path: &Path) -> Result<ShardHeader> {
    read_shard_header(path)
}
