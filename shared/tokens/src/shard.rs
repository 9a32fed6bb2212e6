//! The token shard format and `index.json`.
//!
//! A shard is a 64-byte header followed by little-endian u32 tokens, a whole number of
//! fixed-length sequences:
//!
//! | offset | type   | field                                   |
//! |-------:|--------|-----------------------------------------|
//! | 0      | [u8;8] | magic `DSLLMTOK`                        |
//! | 8      | u32    | format version (1)                      |
//! | 12     | u32    | token dtype (1 = u32 little-endian)     |
//! | 16     | u32    | header size in bytes (64)               |
//! | 20     | u32    | vocabulary size (ids are below it)      |
//! | 24     | u32    | sequence length                         |
//! | 28     | u32    | reserved, 0                             |
//! | 32     | u64    | token count                             |
//! | 40     | u64    | tokenizer hash (xxh3-64 of tokenizer.json) |
//! | 48     | 16 B   | reserved, 0                             |
//!
//! `index.json` beside the `train/` and `val/` folders lists every shard with its token
//! count and the xxh3-64 of its token payload. It is written last: its presence means the
//! folder is complete.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3;

use crate::error::{io_error, Result, TokensError};

pub const MAGIC: [u8; 8] = *b"DSLLMTOK";
pub const FORMAT_VERSION: u32 = 1;
pub const DTYPE_U32_LE: u32 = 1;
pub const HEADER_BYTES: usize = 64;
pub const INDEX_FILE: &str = "index.json";

/// The fixed header at the start of every shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardHeader {
    pub format_version: u32,
    pub dtype: u32,
    pub vocab_size: u32,
    pub sequence_length: u32,
    pub token_count: u64,
    pub tokenizer_hash: u64,
}

impl ShardHeader {
    pub fn to_bytes(&self) -> [u8; HEADER_BYTES] {
        let mut bytes = [0u8; HEADER_BYTES];
        bytes[0..8].copy_from_slice(&MAGIC);
        bytes[8..12].copy_from_slice(&self.format_version.to_le_bytes());
        bytes[12..16].copy_from_slice(&self.dtype.to_le_bytes());
        bytes[16..20].copy_from_slice(&(HEADER_BYTES as u32).to_le_bytes());
        bytes[20..24].copy_from_slice(&self.vocab_size.to_le_bytes());
        bytes[24..28].copy_from_slice(&self.sequence_length.to_le_bytes());
        bytes[32..40].copy_from_slice(&self.token_count.to_le_bytes());
        bytes[40..48].copy_from_slice(&self.tokenizer_hash.to_le_bytes());
        bytes
    }

    /// Parses and checks a header; `path` only names the file in errors.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        let bad = |message: String| TokensError::BadShard {
            path: path.into(),
            message,
        };
        if bytes.len() < HEADER_BYTES {
            return Err(bad(format!(
                "{} bytes, shorter than the {HEADER_BYTES}-byte header",
                bytes.len()
            )));
        }
        if bytes[0..8] != MAGIC {
            return Err(bad(format!(
                "magic is {:?}, not {:?}: not a dsllm token shard",
                &bytes[0..8],
                MAGIC
            )));
        }
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        let header = ShardHeader {
            format_version: u32_at(8),
            dtype: u32_at(12),
            vocab_size: u32_at(20),
            sequence_length: u32_at(24),
            token_count: u64_at(32),
            tokenizer_hash: u64_at(40),
        };
        if header.format_version != FORMAT_VERSION {
            return Err(bad(format!(
                "format version {}, this reader knows {FORMAT_VERSION}",
                header.format_version
            )));
        }
        if header.dtype != DTYPE_U32_LE {
            return Err(bad(format!(
                "token dtype code {}, expected {DTYPE_U32_LE} (u32 little-endian)",
                header.dtype
            )));
        }
        if u32_at(16) as usize != HEADER_BYTES {
            return Err(bad(format!(
                "header size {}, expected {HEADER_BYTES}",
                u32_at(16)
            )));
        }
        if header.sequence_length == 0
            || !header
                .token_count
                .is_multiple_of(header.sequence_length as u64)
        {
            return Err(bad(format!(
                "token count {} is not a whole number of {}-token sequences",
                header.token_count, header.sequence_length
            )));
        }
        Ok(header)
    }

    /// Expected file size for this header.
    pub fn file_bytes(&self) -> u64 {
        HEADER_BYTES as u64 + 4 * self.token_count
    }
}

/// Reads and checks the header of the shard at `path`.
pub fn read_shard_header(path: &Path) -> Result<ShardHeader> {
    let mut bytes = [0u8; HEADER_BYTES];
    let mut file = File::open(path).map_err(io_error(path))?;
    let read = read_up_to(&mut file, &mut bytes).map_err(io_error(path))?;
    ShardHeader::parse(&bytes[..read], path)
}

fn read_up_to(reader: &mut impl Read, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// `index.json`: every shard of every split, with counts and checksums.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenIndex {
    pub format_version: u32,
    /// Always "u32".
    pub dtype: String,
    pub sequence_length: u32,
    /// Ids the tokenizer produces (learned + special).
    pub vocab_size: u32,
    /// Rows of the model's embedding (padded).
    pub model_vocab_size: u32,
    /// Hex xxh3-64 of tokenizer.json; every shard header holds the same value.
    pub tokenizer_hash: String,
    pub eos_id: u32,
    pub pad_id: u32,
    /// Seed of the document shuffle.
    pub seed: u64,
    pub validation_fraction: f64,
    /// "train" and "val".
    pub splits: BTreeMap<String, SplitIndex>,
}

/// One split's shards and counts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SplitIndex {
    /// Distinct documents that went into this split.
    pub documents: u64,
    /// Documents written, counting remix repeats.
    pub document_copies: u64,
    /// All tokens in the shards, EOS and final padding included.
    pub tokens: u64,
    /// Padding tokens that complete the split's last sequence.
    pub pad_tokens: u64,
    pub sequences: u64,
    pub shards: Vec<ShardEntry>,
}

/// One shard file as listed in the index.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShardEntry {
    /// Relative to the folder holding index.json, e.g. "train/shard-00000.bin".
    pub path: String,
    pub tokens: u64,
    pub sequences: u64,
    pub bytes: u64,
    /// Hex xxh3-64 of the token payload (the bytes after the header).
    pub payload_xxh3: String,
    /// A zstd-compressed copy for transport, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zstd: Option<CompressedCopy>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CompressedCopy {
    pub path: String,
    pub bytes: u64,
}

impl TokenIndex {
    /// Reads `dir/index.json` and checks that its counts add up.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(INDEX_FILE);
        let bytes = std::fs::read(&path).map_err(io_error(&path))?;
        let index: TokenIndex =
            serde_json::from_slice(&bytes).map_err(|source| TokensError::Json {
                path: path.clone(),
                source,
            })?;
        index.check_counts(&path)?;
        Ok(index)
    }

    fn check_counts(&self, path: &Path) -> Result<()> {
        let bad = |message: String| TokensError::BadIndex {
            path: path.into(),
            message,
        };
        if self.format_version != FORMAT_VERSION || self.dtype != "u32" {
            return Err(bad(format!(
                "format {} dtype {:?}; this reader knows {FORMAT_VERSION} u32",
                self.format_version, self.dtype
            )));
        }
        let sequence_length = self.sequence_length as u64;
        for (name, split) in &self.splits {
            let shard_tokens: u64 = split.shards.iter().map(|s| s.tokens).sum();
            let shard_sequences: u64 = split.shards.iter().map(|s| s.sequences).sum();
            if shard_tokens != split.tokens || shard_sequences != split.sequences {
                return Err(bad(format!(
                    "split {name}: shards hold {shard_tokens} tokens in {shard_sequences} sequences, the split says {} in {}",
                    split.tokens, split.sequences
                )));
            }
            if split.tokens != split.sequences * sequence_length {
                return Err(bad(format!(
                    "split {name}: {} tokens are not {} sequences of {sequence_length}",
                    split.tokens, split.sequences
                )));
            }
        }
        Ok(())
    }

    /// The tokenizer hash as a number.
    pub fn tokenizer_hash_value(&self) -> Option<u64> {
        u64::from_str_radix(&self.tokenizer_hash, 16).ok()
    }
}

/// Writes one split's shards: tokens go in, full shards of `sequences_per_shard` sequences
/// come out, each written under a temporary name and renamed when complete.
pub struct ShardWriter {
    root: PathBuf,
    split: String,
    header: ShardHeader,
    tokens_per_shard: u64,
    zstd_level: Option<i32>,
    open: Option<OpenShard>,
    closed: Vec<ShardEntry>,
    encoded: Vec<u8>,
}

struct OpenShard {
    file: BufWriter<tempfile::NamedTempFile>,
    tokens: u64,
    payload_hash: Xxh3,
}

impl ShardWriter {
    /// Shards go to `root/split/shard-NNNNN.bin`; `header` gives vocabulary, sequence length
    /// and tokenizer hash (its token count is filled in per shard).
    pub fn new(
        root: &Path,
        split: &str,
        header: ShardHeader,
        sequences_per_shard: u64,
        zstd_level: Option<i32>,
    ) -> Result<Self> {
        let split_dir = root.join(split);
        std::fs::create_dir_all(&split_dir).map_err(io_error(&split_dir))?;
        Ok(ShardWriter {
            root: root.into(),
            split: split.into(),
            header,
            tokens_per_shard: sequences_per_shard.max(1) * header.sequence_length as u64,
            zstd_level,
            open: None,
            closed: Vec::new(),
            encoded: Vec::new(),
        })
    }

    /// Tokens written so far, in all shards.
    pub fn tokens_written(&self) -> u64 {
        self.closed.iter().map(|s| s.tokens).sum::<u64>()
            + self.open.as_ref().map_or(0, |s| s.tokens)
    }

    /// Appends tokens, closing shards as they fill.
    pub fn write_tokens(&mut self, mut tokens: &[u32]) -> Result<()> {
        while !tokens.is_empty() {
            if self.open.is_none() {
                self.open = Some(self.start_shard()?);
            }
            let shard = self.open.as_mut().expect("opened above");
            let room = (self.tokens_per_shard - shard.tokens) as usize;
            let (now, later) = tokens.split_at(room.min(tokens.len()));
            self.encoded.clear();
            self.encoded
                .extend(now.iter().flat_map(|t| t.to_le_bytes()));
            shard.payload_hash.update(&self.encoded);
            let temp_path = shard.file.get_ref().path().to_path_buf();
            shard
                .file
                .write_all(&self.encoded)
                .map_err(io_error(temp_path))?;
            shard.tokens += now.len() as u64;
            if shard.tokens == self.tokens_per_shard {
                self.close_shard()?;
            }
            tokens = later;
        }
        Ok(())
    }

    /// Completes the last sequence with `pad_id`, closes the last shard, and returns the
    /// shard list and the number of padding tokens.
    pub fn finish(mut self, pad_id: u32) -> Result<(Vec<ShardEntry>, u64)> {
        let sequence_length = self.header.sequence_length as u64;
        let partial = self.tokens_written() % sequence_length;
        let pad_tokens = if partial == 0 {
            0
        } else {
            sequence_length - partial
        };
        self.write_tokens(&vec![pad_id; pad_tokens as usize])?;
        if self.open.is_some() {
            self.close_shard()?;
        }
        Ok((self.closed, pad_tokens))
    }

    fn start_shard(&self) -> Result<OpenShard> {
        let split_dir = self.root.join(&self.split);
        let temp = tempfile::Builder::new()
            .prefix(".shard-")
            .suffix(".tmp")
            .tempfile_in(&split_dir)
            .map_err(io_error(&split_dir))?;
        let mut file = BufWriter::with_capacity(1 << 20, temp);
        // Placeholder header: the token count is known when the shard closes.
        file.write_all(&[0u8; HEADER_BYTES])
            .map_err(io_error(&split_dir))?;
        Ok(OpenShard {
            file,
            tokens: 0,
            payload_hash: Xxh3::new(),
        })
    }

    fn close_shard(&mut self) -> Result<()> {
        let shard = self.open.take().expect("close_shard needs an open shard");
        let relative = format!("{}/shard-{:05}.bin", self.split, self.closed.len());
        let final_path = self.root.join(&relative);
        let mut temp = shard.file.into_inner().map_err(|e| TokensError::Io {
            path: final_path.clone(),
            source: e.into_error(),
        })?;
        let header = ShardHeader {
            token_count: shard.tokens,
            ..self.header
        };
        let file = temp.as_file_mut();
        file.seek(SeekFrom::Start(0))
            .map_err(io_error(&final_path))?;
        file.write_all(&header.to_bytes())
            .map_err(io_error(&final_path))?;
        file.sync_all().map_err(io_error(&final_path))?;
        temp.persist(&final_path).map_err(|e| TokensError::Io {
            path: final_path.clone(),
            source: e.error,
        })?;

        let zstd = match self.zstd_level {
            Some(level) => Some(self.write_zstd_copy(&final_path, &relative, level)?),
            None => None,
        };
        self.closed.push(ShardEntry {
            path: relative,
            tokens: shard.tokens,
            sequences: shard.tokens / self.header.sequence_length as u64,
            bytes: header.file_bytes(),
            payload_xxh3: format!("{:016x}", shard.payload_hash.digest()),
            zstd,
        });
        Ok(())
    }

    fn write_zstd_copy(
        &self,
        shard_path: &Path,
        relative: &str,
        level: i32,
    ) -> Result<CompressedCopy> {
        let relative = format!("{relative}.zst");
        let final_path = self.root.join(&relative);
        let split_dir = self.root.join(&self.split);
        let temp = tempfile::Builder::new()
            .prefix(".shard-")
            .suffix(".zst.tmp")
            .tempfile_in(&split_dir)
            .map_err(io_error(&split_dir))?;
        let mut source = File::open(shard_path).map_err(io_error(shard_path))?;
        let mut encoder = zstd::Encoder::new(temp, level).map_err(io_error(&final_path))?;
        // zstd's own frame checksum lets `zstd -t` and our restore verify the transport copy.
        encoder
            .include_checksum(true)
            .map_err(io_error(&final_path))?;
        std::io::copy(&mut source, &mut encoder).map_err(io_error(&final_path))?;
        let temp = encoder.finish().map_err(io_error(&final_path))?;
        temp.as_file().sync_all().map_err(io_error(&final_path))?;
        let bytes = temp
            .as_file()
            .metadata()
            .map_err(io_error(&final_path))?
            .len();
        temp.persist(&final_path).map_err(|e| TokensError::Io {
            path: final_path.clone(),
            source: e.error,
        })?;
        Ok(CompressedCopy {
            path: relative,
            bytes,
        })
    }
}

/// Recreates missing `.bin` shards from their `.zst` copies (after transport) and checks
/// each restored payload against the index. Returns how many shards were restored.
pub fn restore_from_zstd(dir: &Path) -> Result<usize> {
    let index = TokenIndex::load(dir)?;
    let mut restored = 0;
    for shard in index.splits.values().flat_map(|split| &split.shards) {
        let target = dir.join(&shard.path);
        let Some(copy) = &shard.zstd else { continue };
        if target.exists() {
            continue;
        }
        let source_path = dir.join(&copy.path);
        let source = File::open(&source_path).map_err(io_error(&source_path))?;
        let parent = target.parent().unwrap_or(dir);
        let mut temp = tempfile::NamedTempFile::new_in(parent).map_err(io_error(parent))?;
        let mut decoder = zstd::Decoder::new(source).map_err(io_error(&source_path))?;
        std::io::copy(&mut decoder, &mut temp).map_err(io_error(&source_path))?;
        verify_shard_file(temp.path(), shard, &target)?;
        temp.persist(&target).map_err(|e| TokensError::Io {
            path: target.clone(),
            source: e.error,
        })?;
        restored += 1;
    }
    Ok(restored)
}

/// Checks a shard file's header, size and payload checksum against its index entry;
/// errors name `report_as`.
pub fn verify_shard_file(path: &Path, entry: &ShardEntry, report_as: &Path) -> Result<()> {
    let bad = |message: String| TokensError::BadShard {
        path: report_as.into(),
        message,
    };
    let header = read_shard_header(path).map_err(|e| match e {
        TokensError::BadShard { message, .. } => bad(message),
        other => other,
    })?;
    let size = std::fs::metadata(path).map_err(io_error(report_as))?.len();
    if header.token_count != entry.tokens || size != header.file_bytes() {
        return Err(bad(format!(
            "holds {size} bytes with {} tokens in its header; index.json lists {} tokens ({} bytes)",
            header.token_count,
            entry.tokens,
            HEADER_BYTES as u64 + 4 * entry.tokens
        )));
    }
    let mut file = File::open(path).map_err(io_error(report_as))?;
    file.seek(SeekFrom::Start(HEADER_BYTES as u64))
        .map_err(io_error(report_as))?;
    let mut hasher = Xxh3::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer).map_err(io_error(report_as))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    let actual = format!("{:016x}", hasher.digest());
    if actual != entry.payload_xxh3 {
        return Err(bad(format!(
            "payload checksum {actual} differs from index.json's {}: the file is corrupt or from another run",
            entry.payload_xxh3
        )));
    }
    Ok(())
}
