//! Reading packed tokens: every sequence of a split through memory maps, a seeded order
//! per epoch, and a cursor small enough to store in a checkpoint's trainer_state.json.

use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::error::{io_error, Result, TokensError};
use crate::shard::{ShardEntry, ShardHeader, TokenIndex, HEADER_BYTES};

/// All shards of one split, memory-mapped, addressed as one array of sequences.
pub struct TokenShards {
    index: TokenIndex,
    split: String,
    shards: Vec<MappedShard>,
    /// `first_sequence[i]` is the global number of shard i's first sequence.
    first_sequence: Vec<u64>,
    sequence_count: u64,
}

struct MappedShard {
    path: PathBuf,
    entry: ShardEntry,
    map: Mmap,
}

impl TokenShards {
    /// Opens `dir/index.json` and maps every shard of `split` ("train" or "val"), checking
    /// each header against the index. Checksums are checked by [`TokenShards::verify_checksums`]
    /// (it reads every byte).
    pub fn open(dir: &Path, split: &str) -> Result<Self> {
        let index = TokenIndex::load(dir)?;
        let index_path = dir.join(crate::shard::INDEX_FILE);
        let Some(split_index) = index.splits.get(split) else {
            let known: Vec<&String> = index.splits.keys().collect();
            return Err(TokensError::BadIndex {
                path: index_path,
                message: format!("no split {split:?}; it has {known:?}"),
            });
        };
        let tokenizer_hash = index
            .tokenizer_hash_value()
            .ok_or_else(|| TokensError::BadIndex {
                path: index_path.clone(),
                message: format!("tokenizer_hash {:?} is not hex", index.tokenizer_hash),
            })?;
        let mut shards = Vec::with_capacity(split_index.shards.len());
        let mut first_sequence = Vec::with_capacity(split_index.shards.len());
        let mut sequence_count = 0;
        for entry in &split_index.shards {
            let path = dir.join(&entry.path);
            let file = std::fs::File::open(&path).map_err(io_error(&path))?;
            // Safety: shards are written under a temporary name and renamed into place, and
            // never modified afterwards; the map is read-only.
            let map = unsafe { Mmap::map(&file) }.map_err(io_error(&path))?;
            let header = ShardHeader::parse(&map, &path)?;
            let expected = ShardHeader {
                token_count: entry.tokens,
                vocab_size: index.vocab_size,
                sequence_length: index.sequence_length,
                tokenizer_hash,
                ..header
            };
            if header != expected || map.len() as u64 != header.file_bytes() {
                return Err(TokensError::BadShard {
                    path,
                    message: format!(
                        "header {header:?} ({} bytes on disk) does not match index.json, which expects {expected:?} ({} bytes)",
                        map.len(),
                        expected.file_bytes()
                    ),
                });
            }
            first_sequence.push(sequence_count);
            sequence_count += entry.sequences;
            shards.push(MappedShard {
                path,
                entry: entry.clone(),
                map,
            });
        }
        Ok(TokenShards {
            index,
            split: split.into(),
            shards,
            first_sequence,
            sequence_count,
        })
    }

    /// Hashes every shard's payload and compares it with index.json.
    pub fn verify_checksums(&self) -> Result<()> {
        for shard in &self.shards {
            let actual = format!("{:016x}", xxh3_64(&shard.map[HEADER_BYTES..]));
            if actual != shard.entry.payload_xxh3 {
                return Err(TokensError::BadShard {
                    path: shard.path.clone(),
                    message: format!(
                        "payload checksum {actual} differs from index.json's {}",
                        shard.entry.payload_xxh3
                    ),
                });
            }
        }
        Ok(())
    }

    pub fn index(&self) -> &TokenIndex {
        &self.index
    }
    pub fn split(&self) -> &str {
        &self.split
    }
    pub fn sequence_count(&self) -> u64 {
        self.sequence_count
    }
    pub fn sequence_length(&self) -> usize {
        self.index.sequence_length as usize
    }

    /// The little-endian bytes of sequence `sequence` (0-based across all shards), without
    /// copying. Panics when out of range.
    pub fn sequence_bytes(&self, sequence: u64) -> &[u8] {
        assert!(
            sequence < self.sequence_count,
            "sequence {sequence} out of range 0..{}",
            self.sequence_count
        );
        let shard_number = self
            .first_sequence
            .partition_point(|&first| first <= sequence)
            - 1;
        let shard = &self.shards[shard_number];
        let bytes_per_sequence = 4 * self.sequence_length();
        let start = HEADER_BYTES
            + (sequence - self.first_sequence[shard_number]) as usize * bytes_per_sequence;
        &shard.map[start..start + bytes_per_sequence]
    }

    /// Copies sequence `sequence`'s tokens into `out` (cleared first).
    pub fn read_sequence(&self, sequence: u64, out: &mut Vec<u32>) {
        out.clear();
        out.extend(
            self.sequence_bytes(sequence)
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes(b.try_into().unwrap())),
        );
    }

    /// Sequence `sequence`'s tokens.
    pub fn sequence(&self, sequence: u64) -> Vec<u32> {
        let mut tokens = Vec::with_capacity(self.sequence_length());
        self.read_sequence(sequence, &mut tokens);
        tokens
    }
}

/// The order sequences are read in during `epoch`: a permutation of 0..sequence_count that
/// depends only on (seed, epoch, sequence_count). Sorting by a keyed hash rather than
/// shuffling with an RNG keeps it stable across library versions.
pub fn epoch_order(sequence_count: u64, seed: u64, epoch: u64) -> Vec<u64> {
    let epoch_seed = xxh3_64_with_seed(&epoch.to_le_bytes(), seed);
    let mut keyed: Vec<(u64, u64)> = (0..sequence_count)
        .map(|i| (xxh3_64_with_seed(&i.to_le_bytes(), epoch_seed), i))
        .collect();
    keyed.sort_unstable();
    keyed.into_iter().map(|(_, i)| i).collect()
}

/// Where a reader stands: enough to resume exactly. Pretraining stores it in
/// trainer_state.json.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataCursor {
    pub seed: u64,
    pub epoch: u64,
    /// Sequences already read in this epoch.
    pub position: u64,
}

impl DataCursor {
    pub fn new(seed: u64) -> Self {
        DataCursor {
            seed,
            epoch: 0,
            position: 0,
        }
    }
}

/// Reads a split's sequences in epoch order from a cursor, moving to the next epoch (and
/// its own order) when one ends.
pub struct SequenceReader<'a> {
    shards: &'a TokenShards,
    cursor: DataCursor,
    order: Vec<u64>,
}

impl<'a> SequenceReader<'a> {
    /// Starts (or resumes) at `cursor`.
    pub fn new(shards: &'a TokenShards, cursor: DataCursor) -> Result<Self> {
        if shards.sequence_count() == 0 {
            return Err(TokensError::Config(format!(
                "split {:?} has no sequences to read",
                shards.split()
            )));
        }
        if cursor.position > shards.sequence_count() {
            return Err(TokensError::Config(format!(
                "cursor position {} is past the split's {} sequences: was it saved for other shards?",
                cursor.position,
                shards.sequence_count()
            )));
        }
        let order = epoch_order(shards.sequence_count(), cursor.seed, cursor.epoch);
        Ok(SequenceReader {
            shards,
            cursor,
            order,
        })
    }

    /// The cursor to save: resuming from it continues with the next sequence.
    pub fn cursor(&self) -> DataCursor {
        self.cursor
    }

    /// Copies the next sequence into `out` and returns its global sequence number.
    pub fn next_sequence(&mut self, out: &mut Vec<u32>) -> u64 {
        if self.cursor.position == self.order.len() as u64 {
            self.cursor.epoch += 1;
            self.cursor.position = 0;
            self.order = epoch_order(
                self.shards.sequence_count(),
                self.cursor.seed,
                self.cursor.epoch,
            );
        }
        let sequence = self.order[self.cursor.position as usize];
        self.cursor.position += 1;
        self.shards.read_sequence(sequence, out);
        sequence
    }

    /// The next `sequences` sequences, concatenated (`sequences × sequence_length` tokens).
    pub fn next_batch(&mut self, sequences: usize) -> Vec<u32> {
        let mut batch = Vec::with_capacity(sequences * self.shards.sequence_length());
        let mut one = Vec::with_capacity(self.shards.sequence_length());
        for _ in 0..sequences {
            self.next_sequence(&mut one);
            batch.extend_from_slice(&one);
        }
        batch
    }
}

#[cfg(test)]
mod tests;
