//! The DeepSeek LLM tokenizer: byte-level BPE over a pre-tokenizer that keeps newlines,
//! punctuation, digits and CJK text out of other tokens (paper §2.1), trained with the
//! Hugging Face `tokenizers` crate and saved as a `tokenizer.json` that Python `tokenizers`
//! and transformers' `PreTrainedTokenizerFast` load unchanged.

use std::collections::BinaryHeap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::error::{io_error, tokenizer_error, Result, TokensError};
use crate::write_atomically;

/// File names inside a tokenizer folder.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// transformers' own config, so `AutoTokenizer.from_pretrained(dir)` knows BOS/EOS/padding.
pub const HF_TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
/// Our record of vocabulary sizes, special ids, hash and training sample.
pub const DSLLM_TOKENIZER_CONFIG_FILE: &str = "dsllm_tokenizer.json";

/// The paper's vocabulary: 100,000 learned tokens, 15 special, model vocabulary 102,400.
pub const DEFAULT_LEARNED_TOKENS: usize = 100_000;
pub const DEFAULT_MODEL_VOCAB_SIZE: usize = 102_400;

/// The 15 special tokens, in id order after the learned tokens: (role, content).
/// DeepSeek's spelling: full-width bars and U+2581 for spaces, so web text never contains
/// them by accident.
pub const SPECIAL_TOKENS: [(&str, &str); 15] = [
    ("bos", "<｜begin▁of▁sentence｜>"),
    ("eos", "<｜end▁of▁sentence｜>"),
    ("pad", "<｜pad｜>"),
    ("user", "<｜User｜>"),
    ("assistant", "<｜Assistant｜>"),
    ("system", "<｜System｜>"),
    ("fim_begin", "<｜fim▁begin｜>"),
    ("fim_hole", "<｜fim▁hole｜>"),
    ("fim_end", "<｜fim▁end｜>"),
    ("reserved_0", "<｜reserved▁0｜>"),
    ("reserved_1", "<｜reserved▁1｜>"),
    ("reserved_2", "<｜reserved▁2｜>"),
    ("reserved_3", "<｜reserved▁3｜>"),
    ("reserved_4", "<｜reserved▁4｜>"),
    ("reserved_5", "<｜reserved▁5｜>"),
];

/// Runs of line breaks are pieces of their own: no token spans a newline.
pub const NEWLINE_PATTERN: &str = r"[\r\n]+";
/// CJK runs are pieces of their own: Chinese, Japanese kana and Korean never merge with
/// other scripts (they still merge with each other inside a run, e.g. 中国). The prolonged
/// sound marks ー/ｰ are script "Common" letters, listed so they stay with their kana.
pub const CJK_PATTERN: &str = r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}\p{Bopomofo}ーｰ]+";
/// What remains: words with at most one leading space, punctuation/symbol runs with at most
/// one leading space, whitespace runs. No look-around, so Rust's `regex` and Python's
/// Oniguruma split the same way (and no backtracking limit can be hit).
pub const WORD_PATTERN: &str = r" ?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+|\s+";

/// The pre-tokenizer of paper §2.1, as a `tokenizers` Sequence that serializes into
/// tokenizer.json: newlines, then CJK, then single digits, then words/punctuation, then the
/// byte-level mapping (without its own GPT-2 regex).
pub fn deepseek_pre_tokenizer() -> PreTokenizerWrapper {
    let split = |pattern: &str| {
        let split = Split::new(
            SplitPattern::Regex(pattern.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .expect("the built-in pre-tokenizer patterns compile");
        PreTokenizerWrapper::Split(split)
    };
    PreTokenizerWrapper::Sequence(Sequence::new(vec![
        split(NEWLINE_PATTERN),
        split(CJK_PATTERN),
        PreTokenizerWrapper::Digits(Digits::new(true)),
        split(WORD_PATTERN),
        PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, false)),
    ]))
}

/// Parameters of `train_tokenizer`; `Default` is the paper's setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Regular tokens, the 256 byte tokens included (paper: 100,000).
    pub learned_tokens: usize,
    /// Rows of the model's embedding (paper: 102,400); `None` rounds the tokenizer's size up
    /// to a multiple of 128.
    pub model_vocab_size: Option<usize>,
    /// Pairs seen fewer times than this are never merged.
    pub min_frequency: u64,
    /// Text the trainer sees at most; documents are sampled by a seeded hash of their id.
    pub sample_bytes: u64,
    /// Seed of the sample.
    pub seed: u64,
    /// Threads counting words; 0 means all cores. Does not change the result.
    #[serde(skip)]
    pub threads: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            learned_tokens: DEFAULT_LEARNED_TOKENS,
            model_vocab_size: Some(DEFAULT_MODEL_VOCAB_SIZE),
            min_frequency: 2,
            sample_bytes: 1 << 30,
            seed: 0,
            threads: 0,
        }
    }
}

/// A uniform sample of documents under a byte budget, in one streaming pass.
///
/// Keeps the longest prefix, in order of a seeded hash of the id, whose texts fit the
/// budget: the same set whatever order the documents arrive in, and memory bounded by the
/// budget. (Reservoir sampling counts documents, not bytes; this is the byte version.)
#[derive(Debug)]
pub struct ByteBudgetSample {
    budget_bytes: u64,
    seed: u64,
    kept: BinaryHeap<SampledDocument>,
    kept_bytes: u64,
    /// Documents with a key at or above this are out (the smallest key ever evicted).
    cutoff: (u64, u64),
    seen_documents: u64,
    seen_bytes: u64,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct SampledDocument {
    key: (u64, u64),
    text: String,
}

/// Counts of a finished sample.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SampleCounts {
    pub budget_bytes: u64,
    pub seed: u64,
    pub seen_documents: u64,
    pub seen_bytes: u64,
    pub sampled_documents: u64,
    pub sampled_bytes: u64,
}

impl ByteBudgetSample {
    pub fn new(budget_bytes: u64, seed: u64) -> Self {
        ByteBudgetSample {
            budget_bytes,
            seed,
            kept: BinaryHeap::new(),
            kept_bytes: 0,
            cutoff: (u64::MAX, u64::MAX),
            seen_documents: 0,
            seen_bytes: 0,
        }
    }

    /// Offers one document; it is kept if its key is among the smallest that fit.
    pub fn offer(&mut self, id: &str, text: &str) {
        self.seen_documents += 1;
        self.seen_bytes += text.len() as u64;
        // The text hash breaks ties between documents that share an id.
        let key = (
            xxh3_64_with_seed(id.as_bytes(), self.seed),
            xxh3_64_with_seed(text.as_bytes(), self.seed),
        );
        if key >= self.cutoff || text.is_empty() {
            return;
        }
        self.kept.push(SampledDocument {
            key,
            text: text.to_string(),
        });
        self.kept_bytes += text.len() as u64;
        while self.kept_bytes > self.budget_bytes {
            let evicted = self.kept.pop().expect("over budget implies non-empty");
            self.kept_bytes -= evicted.text.len() as u64;
            self.cutoff = evicted.key;
        }
    }

    pub fn counts(&self) -> SampleCounts {
        SampleCounts {
            budget_bytes: self.budget_bytes,
            seed: self.seed,
            seen_documents: self.seen_documents,
            seen_bytes: self.seen_bytes,
            sampled_documents: self.kept.len() as u64,
            sampled_bytes: self.kept_bytes,
        }
    }

    /// The sampled texts, in key order (so training input is order-independent too).
    pub fn into_texts(self) -> Vec<String> {
        self.kept
            .into_sorted_vec()
            .into_iter()
            .map(|document| document.text)
            .collect()
    }
}

/// One special token as recorded in `dsllm_tokenizer.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SpecialToken {
    pub role: String,
    pub content: String,
    pub id: u32,
}

/// `dsllm_tokenizer.json`: what the rest of the pipeline needs to know about a tokenizer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenizerConfig {
    /// Regular (BPE) tokens actually learned, byte tokens included.
    pub learned_tokens: u32,
    /// All ids the tokenizer can produce: learned + special.
    pub vocab_size: u32,
    /// Rows of the model's embedding, padded (>= vocab_size).
    pub model_vocab_size: u32,
    pub special_tokens: Vec<SpecialToken>,
    pub bos_id: u32,
    pub eos_id: u32,
    pub pad_id: u32,
    /// xxh3-64 of tokenizer.json's bytes, in hex; token shards record it.
    pub tokenizer_hash: String,
    pub train_config: TrainConfig,
    pub sample: SampleCounts,
}

/// Trains the DeepSeek tokenizer on `texts` (already sampled, see `ByteBudgetSample`) and
/// returns it with its config. Deterministic: the BPE trainer breaks count ties by pair ids.
pub fn train_tokenizer(
    texts: &[String],
    config: &TrainConfig,
    sample: SampleCounts,
) -> Result<(Tokenizer, TokenizerConfig)> {
    let special_count = SPECIAL_TOKENS.len();
    if config.learned_tokens < 256 {
        return Err(TokensError::Config(format!(
            "learned_tokens = {} must be at least 256 (the byte alphabet)",
            config.learned_tokens
        )));
    }
    let mut tokenizer = Tokenizer::new(BPE::default());
    tokenizer.with_pre_tokenizer(Some(deepseek_pre_tokenizer()));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));

    let mut trainer = TrainerWrapper::BpeTrainer(
        BpeTrainerBuilder::new()
            .vocab_size(config.learned_tokens)
            .min_frequency(config.min_frequency)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .show_progress(false)
            .build(),
    );
    let in_memory = PathBuf::from("<training>");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(config.threads)
        .build()
        .map_err(|e| TokensError::Config(format!("thread pool: {e}")))?;
    // `tokenizers` counts words on the current rayon pool.
    pool.install(|| tokenizer.train(&mut trainer, texts.iter()).map(|_| ()))
        .map_err(tokenizer_error(&in_memory))?;

    // Specials go after the learned tokens, as in DeepSeek's vocabulary.
    let learned_tokens = tokenizer.get_vocab_size(false) as u32;
    let added: Vec<AddedToken> = SPECIAL_TOKENS
        .iter()
        .map(|(_, content)| AddedToken::from(*content, true).normalized(false))
        .collect();
    tokenizer.add_special_tokens(&added);
    let special_tokens: Vec<SpecialToken> = SPECIAL_TOKENS
        .iter()
        .map(|(role, content)| SpecialToken {
            role: role.to_string(),
            content: content.to_string(),
            id: tokenizer
                .token_to_id(content)
                .expect("special token was just added"),
        })
        .collect();
    let id_of = |role: &str| {
        special_tokens
            .iter()
            .find(|t| t.role == role)
            .expect("built-in role")
            .id
    };
    let (bos_id, eos_id, pad_id) = (id_of("bos"), id_of("eos"), id_of("pad"));

    // Like DeepSeek's tokenizer.json: `encode(text, add_special_tokens=True)` prepends BOS.
    let bos = SPECIAL_TOKENS[0].1;
    let post_processor = TemplateProcessing::builder()
        .try_single(format!("{bos} $A"))
        .and_then(|b| b.try_pair(format!("{bos} $A {bos} $B:1")))
        .map_err(|e| TokensError::Config(e.to_string()))?
        .special_tokens(vec![(bos, bos_id)])
        .build()
        .map_err(|e| TokensError::Config(e.to_string()))?;
    tokenizer.with_post_processor(Some(post_processor));

    let vocab_size = learned_tokens + special_count as u32;
    let model_vocab_size = match config.model_vocab_size {
        Some(size) if size < vocab_size as usize => {
            return Err(TokensError::Config(format!(
                "model_vocab_size = {size} is smaller than the tokenizer's {vocab_size} ids"
            )))
        }
        Some(size) => size as u32,
        None => vocab_size.div_ceil(128) * 128,
    };
    let tokenizer_json = tokenizer
        .to_string(false)
        .map_err(tokenizer_error(&in_memory))?;
    let tokenizer_config = TokenizerConfig {
        learned_tokens,
        vocab_size,
        model_vocab_size,
        special_tokens,
        bos_id,
        eos_id,
        pad_id,
        tokenizer_hash: format!("{:016x}", tokenizer_hash(tokenizer_json.as_bytes())),
        train_config: config.clone(),
        sample,
    };
    Ok((tokenizer, tokenizer_config))
}

/// Samples `(id, text)` documents under `config.sample_bytes` and trains on the sample:
/// what `ds-tokenizer train` does with the documents it streams from Parquet.
pub fn train_from_documents<'d>(
    documents: impl IntoIterator<Item = (&'d str, &'d str)>,
    config: &TrainConfig,
) -> Result<(Tokenizer, TokenizerConfig)> {
    let mut sample = ByteBudgetSample::new(config.sample_bytes, config.seed);
    for (id, text) in documents {
        sample.offer(id, text);
    }
    let counts = sample.counts();
    train_tokenizer(&sample.into_texts(), config, counts)
}

/// The hash that identifies a tokenizer: xxh3-64 of its tokenizer.json bytes.
pub fn tokenizer_hash(tokenizer_json: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(tokenizer_json)
}

/// Writes tokenizer.json, transformers' tokenizer_config.json and dsllm_tokenizer.json into
/// `dir`, each atomically. The hash in the config is of the exact bytes written.
pub fn save_tokenizer(dir: &Path, tokenizer: &Tokenizer, config: &TokenizerConfig) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let tokenizer_path = dir.join(TOKENIZER_FILE);
    let tokenizer_json = tokenizer
        .to_string(false)
        .map_err(tokenizer_error(&tokenizer_path))?;
    let mut config = config.clone();
    config.tokenizer_hash = format!("{:016x}", tokenizer_hash(tokenizer_json.as_bytes()));
    write_atomically(&tokenizer_path, tokenizer_json.as_bytes())?;

    let special = |id: u32| {
        &config
            .special_tokens
            .iter()
            .find(|t| t.id == id)
            .expect("special id")
            .content
    };
    let hf_config = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": special(config.bos_id),
        "eos_token": special(config.eos_id),
        "pad_token": special(config.pad_id),
        "additional_special_tokens": config.special_tokens.iter().skip(3).map(|t| &t.content).collect::<Vec<_>>(),
        "add_bos_token": true,
        "add_eos_token": false,
        "clean_up_tokenization_spaces": false,
        "model_max_length": 4096,
    });
    write_json_atomically(&dir.join(HF_TOKENIZER_CONFIG_FILE), &hf_config)?;
    write_json_atomically(&dir.join(DSLLM_TOKENIZER_CONFIG_FILE), &config)
}

fn write_json_atomically(path: &Path, value: &impl Serialize) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| TokensError::Json {
        path: path.into(),
        source,
    })?;
    bytes.push(b'\n');
    write_atomically(path, &bytes)
}

/// Strings that exercise every pre-tokenizer rule, for the Python parity check.
pub const PARITY_TEST_STRINGS: &[&str] = &[
    "Hello, world!",
    "  leading spaces and trailing   ",
    "line one\nline two\r\n\n\nafter blank lines\n",
    "Numbers: 1234567890, 3.14159, -42, 1e10, ٣٤٥, १२३, ①②",
    "红楼梦是中国古典小说的巅峰之作，作者曹雪芹。",
    "mixed中文English混合text123数字",
    "日本語のテキスト、カタカナとひらがな。ラーメン",
    "한국어 문장도 있습니다.",
    "Ünïcödé café naïve — “quotes” and ‘apostrophes’ don't",
    "emoji 👩‍👩‍👧 🎉 and symbols ©®™ ≠ ∑ → ★",
    "fn main() {\n    let x = vec![1, 2, 3];\n    println!(\"{x:?}\");\n}\n",
    "https://example.com/path?query=a&b=c#frag user@example.org",
    "tabs\tand\u{b}vertical\u{c}feeds and nbsp\u{a0}here and ideographic\u{3000}space",
    "Русский текст и ελληνικά και العربية وעברית",
    "हिन्दी में पाठ और தமிழ் உரை",
    "special <｜begin▁of▁sentence｜> and <｜end▁of▁sentence｜> in text",
    "",
    " ",
    "\n",
    "a",
];

/// Writes `texts` with the ids this crate gives them to a JSON file, for the Python parity
/// check (tests/python_parity.py): per text, `ids` without special tokens and `ids_with_bos`
/// as `encode(text)` gives them with the post-processor.
pub fn write_parity_cases(path: &Path, tokenizer: &DsTokenizer, texts: &[String]) -> Result<()> {
    let cases = texts
        .iter()
        .map(|text| {
            let with_bos = tokenizer
                .inner()
                .encode(text.as_str(), true)
                .map_err(tokenizer_error(path))?;
            Ok(serde_json::json!({
                "text": text,
                "ids": tokenizer.encode(text)?,
                "ids_with_bos": with_bos.get_ids(),
            }))
        })
        .collect::<Result<Vec<_>>>()?;
    write_json_atomically(
        path,
        &serde_json::json!({ "tokenizer_hash": format!("{:016x}", tokenizer.hash()), "cases": cases }),
    )
}

/// A trained tokenizer loaded from its folder, with the calls the pipeline makes.
#[derive(Clone)]
pub struct DsTokenizer {
    /// As saved: special-token strings in the input become special ids.
    tokenizer: Tokenizer,
    /// For corpus text: a literal "<｜end▁of▁sentence｜>" in a web page stays text, so
    /// documents cannot inject control tokens.
    document_tokenizer: Tokenizer,
    config: TokenizerConfig,
    hash: u64,
}

impl DsTokenizer {
    /// Loads tokenizer.json and dsllm_tokenizer.json from `dir`; the hash is recomputed
    /// from the bytes read and must match the config's.
    pub fn load(dir: &Path) -> Result<Self> {
        let tokenizer_path = dir.join(TOKENIZER_FILE);
        let json = std::fs::read(&tokenizer_path).map_err(io_error(&tokenizer_path))?;
        let text = String::from_utf8(json.clone()).map_err(|e| TokensError::Tokenizer {
            path: tokenizer_path.clone(),
            message: e.to_string(),
        })?;
        let tokenizer = Tokenizer::from_str(&text).map_err(tokenizer_error(&tokenizer_path))?;
        let config_path = dir.join(DSLLM_TOKENIZER_CONFIG_FILE);
        let config_bytes = std::fs::read(&config_path).map_err(io_error(&config_path))?;
        let config: TokenizerConfig =
            serde_json::from_slice(&config_bytes).map_err(|source| TokensError::Json {
                path: config_path.clone(),
                source,
            })?;
        let hash = tokenizer_hash(&json);
        if config.tokenizer_hash != format!("{hash:016x}") {
            return Err(TokensError::Tokenizer {
                path: config_path,
                message: format!(
                    "records tokenizer hash {} but {} hashes to {hash:016x}; retrain or restore the pair",
                    config.tokenizer_hash,
                    tokenizer_path.display()
                ),
            });
        }
        Ok(Self::from_parts(tokenizer, config, hash))
    }

    /// Wraps a tokenizer fresh from `train_tokenizer` (not yet saved).
    pub fn from_trained(tokenizer: Tokenizer, config: TokenizerConfig) -> Result<Self> {
        let json = tokenizer
            .to_string(false)
            .map_err(tokenizer_error("<trained>"))?;
        let hash = tokenizer_hash(json.as_bytes());
        let config = TokenizerConfig {
            tokenizer_hash: format!("{hash:016x}"),
            ..config
        };
        Ok(Self::from_parts(tokenizer, config, hash))
    }

    fn from_parts(tokenizer: Tokenizer, config: TokenizerConfig, hash: u64) -> Self {
        let mut document_tokenizer = tokenizer.clone();
        document_tokenizer.set_encode_special_tokens(true);
        DsTokenizer {
            tokenizer,
            document_tokenizer,
            config,
            hash,
        }
    }

    /// Token ids of corpus text: no BOS, special-token strings treated as plain text.
    pub fn encode_document(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .document_tokenizer
            .encode_fast(text, false)
            .map_err(tokenizer_error("<document>"))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Token ids as Python `tokenizer.encode(text, add_special_tokens=False).ids` gives them
    /// (special-token strings become special ids).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .encode_fast(text, false)
            .map_err(tokenizer_error("<text>"))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Text of `ids`, special tokens included.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer
            .decode(ids, false)
            .map_err(tokenizer_error("<ids>"))
    }

    /// The raw bytes a token stands for (special tokens: their UTF-8 content). Tokens may
    /// hold part of a UTF-8 character, so this is bytes, not text.
    pub fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        let token = self.tokenizer.id_to_token(id)?;
        if self.config.special_tokens.iter().any(|t| t.id == id) {
            return Some(token.into_bytes());
        }
        token.chars().map(byte_of_byte_level_char).collect()
    }

    pub fn config(&self) -> &TokenizerConfig {
        &self.config
    }
    pub fn hash(&self) -> u64 {
        self.hash
    }
    pub fn eos_id(&self) -> u32 {
        self.config.eos_id
    }
    pub fn pad_id(&self) -> u32 {
        self.config.pad_id
    }
    /// Ids the tokenizer produces: learned + special.
    pub fn vocab_size(&self) -> u32 {
        self.config.vocab_size
    }
    /// The underlying Hugging Face tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.tokenizer
    }
}

/// Inverse of GPT-2's byte-to-printable-char map that byte-level BPE tokens are spelled in.
/// `tokenizers` keeps its copy private, hence this one.
fn byte_of_byte_level_char(c: char) -> Option<u8> {
    let code = c as u32;
    let printable = |b: u32| {
        (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b)
    };
    if code < 256 && printable(code) {
        return Some(code as u8);
    }
    // The other 68 bytes are mapped, in order, to U+0100, U+0101, ...
    let offset = code.checked_sub(256)?;
    (0u32..256)
        .filter(|b| !printable(*b))
        .nth(offset as usize)
        .map(|b| b as u8)
}

#[cfg(test)]
mod tests;
