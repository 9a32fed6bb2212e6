//! Training data from ds-pack token shards: [`ShardSource`] adapts the shard reader of
//! `dsllm-tokens` to the trainer's [`SequenceSource`], so the reader's cursor (seed, epoch,
//! position) is what `trainer_state.json` stores and `--resume` restores; and the UTF-8 byte
//! counts that turn a validation loss into bits per byte.

use anyhow::{bail, Context, Result};
use dsllm_tokens::{DataCursor, DsTokenizer, SequenceReader, TokenShards};
use serde::{Deserialize, Serialize};

use crate::train::SequenceSource;

/// A split of packed shards read as training or validation sequences.
///
/// Training reads every sequence once per epoch in the reader's seeded order and goes on into
/// the next epoch (and its own order) forever; validation ([`ShardSource::single_pass`]) reads
/// the split once, in a fixed order, and ends, so every evaluation sees the same sequences.
pub struct ShardSource<'a> {
    shards: &'a TokenShards,
    reader: SequenceReader<'a>,
    single_pass: bool,
    buffer: Vec<u32>,
}

/// What [`ShardSource::cursor`] saves: the reader's cursor, and what identifies the data it
/// is a position in, so a resume on other shards fails instead of silently reading elsewhere.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardCursor {
    pub split: String,
    /// Sequences in the split.
    pub sequences: u64,
    /// index.json's tokenizer hash.
    pub tokenizer_hash: String,
    #[serde(flatten)]
    pub cursor: DataCursor,
}

impl<'a> ShardSource<'a> {
    /// Endless epochs of `shards` in the order `seed` gives, starting at the first sequence.
    pub fn training(shards: &'a TokenShards, seed: u64) -> Result<Self> {
        Self::at(shards, DataCursor::new(seed), false)
    }

    /// One pass over `shards` in a fixed order (seed 0), then the end.
    pub fn single_pass(shards: &'a TokenShards) -> Result<Self> {
        Self::at(shards, DataCursor::new(0), true)
    }

    fn at(shards: &'a TokenShards, cursor: DataCursor, single_pass: bool) -> Result<Self> {
        let reader = SequenceReader::new(shards, cursor).with_context(|| format!("cannot read the {} split", shards.split()))?;
        Ok(Self { shards, reader, single_pass, buffer: Vec::with_capacity(shards.sequence_length()) })
    }

    /// Where the reader stands, with the data's identity.
    pub fn shard_cursor(&self) -> ShardCursor {
        ShardCursor {
            split: self.shards.split().to_string(),
            sequences: self.shards.sequence_count(),
            tokenizer_hash: self.shards.index().tokenizer_hash.clone(),
            cursor: self.reader.cursor(),
        }
    }
}

impl SequenceSource for ShardSource<'_> {
    fn next_sequence(&mut self) -> Result<Option<Vec<u32>>> {
        let cursor = self.reader.cursor();
        if self.single_pass && (cursor.epoch > 0 || cursor.position == self.shards.sequence_count()) {
            return Ok(None);
        }
        self.reader.next_sequence(&mut self.buffer);
        Ok(Some(self.buffer.clone()))
    }

    fn cursor(&self) -> serde_json::Value {
        serde_json::to_value(self.shard_cursor()).expect("a cursor serialises")
    }

    fn restore(&mut self, cursor: &serde_json::Value) -> Result<()> {
        let saved: ShardCursor = serde_json::from_value(cursor.clone()).context("the data cursor is not a shard cursor")?;
        let here = self.shard_cursor();
        if saved.split != here.split || saved.sequences != here.sequences || saved.tokenizer_hash != here.tokenizer_hash {
            bail!(
                "the checkpoint was trained on a {} split of {} sequences (tokenizer {}), but these shards hold a {} split of {} sequences (tokenizer {}): resume with the same --data",
                saved.split,
                saved.sequences,
                saved.tokenizer_hash,
                here.split,
                here.sequences,
                here.tokenizer_hash
            );
        }
        self.reader = SequenceReader::new(self.shards, saved.cursor).context("cannot restore the data cursor")?;
        Ok(())
    }
}

/// UTF-8 bytes of text each token id stands for: what the tokenizer decodes it to. Special
/// tokens (EOS, padding, chat roles...) stand for no text and count 0, so bits per byte measure
/// the text alone (the cost of predicting a document's end is charged to its bytes).
pub fn token_text_bytes(tokenizer: &DsTokenizer) -> Vec<u32> {
    let special: Vec<u32> = tokenizer.config().special_tokens.iter().map(|t| t.id).collect();
    (0..tokenizer.vocab_size())
        .map(|id| if special.contains(&id) { 0 } else { tokenizer.token_bytes(id).map_or(0, |b| b.len() as u32) })
        .collect()
}

/// Bytes of the text whose tokens [`crate::Trainer::evaluate`] scores when it reads up to
/// `max_batches` micro-batches of `micro_batch_size` sequences from `source`: the target
/// tokens (every token but each sequence's first), a last partial micro-batch skipped as
/// `evaluate` skips it. `bytes_per_token` comes from [`token_text_bytes`].
pub fn evaluated_text_bytes(source: &mut dyn SequenceSource, micro_batch_size: usize, max_batches: Option<usize>, bytes_per_token: &[u32]) -> Result<u64> {
    let mut total = 0u64;
    let mut batches = 0;
    'batches: while max_batches.is_none_or(|max| batches < max) {
        let mut batch = 0u64;
        for _ in 0..micro_batch_size {
            let Some(sequence) = source.next_sequence()? else { break 'batches };
            batch += sequence.iter().skip(1).map(|&t| bytes_per_token.get(t as usize).copied().unwrap_or(0) as u64).sum::<u64>();
        }
        total += batch;
        batches += 1;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dsllm_tokens::{train_from_documents, PackConfig, Packer, TrainConfig};

    fn tiny_tokenizer() -> DsTokenizer {
        let texts: Vec<String> = (0..200).map(|i| format!("the cat {i} sat on the mat and the dog ran off\n")).collect();
        let config = TrainConfig { learned_tokens: 300, model_vocab_size: None, sample_bytes: 1 << 20, ..TrainConfig::default() };
        let (tokenizer, config) = train_from_documents(texts.iter().enumerate().map(|(i, t)| (if i % 2 == 0 { "a" } else { "b" }, t.as_str())), &config).unwrap();
        DsTokenizer::from_trained(tokenizer, config).unwrap()
    }

    fn pack(dir: &std::path::Path, tokenizer: &DsTokenizer) {
        let config = PackConfig { sequence_length: 16, validation_fraction: 0.2, sequences_per_shard: 7, ..PackConfig::default() };
        let mut packer = Packer::new(tokenizer, dir, config).unwrap();
        for i in 0..120 {
            packer.add(&format!("doc-{i}"), &format!("document {i}: the cat sat on the mat {} times", i * 3), 1).unwrap();
        }
        packer.finish().unwrap();
    }

    #[test]
    fn training_source_resumes_where_its_cursor_says() {
        let dir = tempfile::tempdir().unwrap();
        let tokenizer = tiny_tokenizer();
        pack(dir.path(), &tokenizer);
        let shards = TokenShards::open(dir.path(), "train").unwrap();
        let count = shards.sequence_count() as usize;
        let mut source = ShardSource::training(&shards, 7).unwrap();
        // Past the end of the first epoch, to cross an epoch boundary.
        let first: Vec<Vec<u32>> = (0..count + 3).map(|_| source.next_sequence().unwrap().unwrap()).collect();
        let cursor = source.cursor();
        assert_eq!(cursor["epoch"], 1);
        let rest: Vec<Vec<u32>> = (0..5).map(|_| source.next_sequence().unwrap().unwrap()).collect();
        let mut resumed = ShardSource::training(&shards, 999).unwrap();
        resumed.restore(&cursor).unwrap();
        let again: Vec<Vec<u32>> = (0..5).map(|_| resumed.next_sequence().unwrap().unwrap()).collect();
        assert_eq!(rest, again);
        assert!(first.iter().all(|s| s.len() == 16));

        let val = TokenShards::open(dir.path(), "val").unwrap();
        let mut wrong = ShardSource::training(&val, 7).unwrap();
        let error = wrong.restore(&cursor).unwrap_err().to_string();
        assert!(error.contains("same --data"), "{error}");
    }

    #[test]
    fn validation_reads_once_and_counts_the_target_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let tokenizer = tiny_tokenizer();
        pack(dir.path(), &tokenizer);
        let val = TokenShards::open(dir.path(), "val").unwrap();
        let n = val.sequence_count() as usize;
        let mut source = ShardSource::single_pass(&val).unwrap();
        let sequences: Vec<Vec<u32>> = std::iter::from_fn(|| source.next_sequence().unwrap()).collect();
        assert_eq!(sequences.len(), n);

        let bytes_per_token = token_text_bytes(&tokenizer);
        assert_eq!(bytes_per_token[tokenizer.eos_id() as usize], 0);
        // One micro-batch of 2 sequences: their text minus each first token.
        let expected: u64 = sequences[..2]
            .iter()
            .map(|s| {
                let text: Vec<u32> = s[1..].iter().copied().filter(|&t| bytes_per_token[t as usize] > 0).collect();
                tokenizer.decode(&text).unwrap().len() as u64
            })
            .sum();
        let mut source = ShardSource::single_pass(&val).unwrap();
        assert_eq!(evaluated_text_bytes(&mut source, 2, Some(1), &bytes_per_token).unwrap(), expected);
    }
}
