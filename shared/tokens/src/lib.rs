//! Tokens for dsllm: the DeepSeek LLM tokenizer and the packed token shards pretraining reads.
//!
//! - [`tokenizer`]: the paper's pre-tokenization and byte-level BPE training (Hugging Face
//!   `tokenizers`), saved as a tokenizer.json that Python loads unchanged.
//! - [`stats`]: bytes per token, tokens per word and per character, by language.
//! - [`pack`]: documents → EOS-separated, shuffled, fixed-length sequences in shards.
//! - [`shard`]: the shard file format and `index.json`.
//! - [`reader`]: memory-mapped sequences, seeded epoch order, a resumable cursor.
//! - [`inspect`]: the summary `ds-inspect` prints for a token folder.
//!
//! Documents come in as `(id, text, repeat)`; reading them from Parquet is the binaries' job.

pub mod error;
pub mod inspect;
pub mod pack;
pub mod reader;
pub mod shard;
pub mod stats;
pub mod tokenizer;

#[cfg(test)]
pub(crate) mod test_support;

pub use error::{Result, TokensError};
pub use inspect::{inspect_tokens, TokensReport};
pub use pack::{pack_documents, PackConfig, PackSummary, Packer};
pub use reader::{epoch_order, DataCursor, SequenceReader, TokenShards};
pub use shard::{ShardHeader, TokenIndex};
pub use stats::{LanguageStats, TokenizationStats};
pub use tokenizer::{
    save_tokenizer, train_from_documents, train_tokenizer, ByteBudgetSample, DsTokenizer,
    TokenizerConfig, TrainConfig,
};

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path`, so a
/// reader sees the old file or the new one, never half of one.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(error::io_error(dir))?;
    file.write_all(bytes)
        .map_err(error::io_error(file.path()))?;
    file.as_file()
        .sync_all()
        .map_err(error::io_error(file.path()))?;
    file.persist(path).map_err(|e| TokensError::Io {
        path: path.into(),
        source: e.error,
    })?;
    Ok(())
}
