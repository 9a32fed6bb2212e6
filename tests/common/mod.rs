//! The corpus the end-to-end training tests share: a tokenizer trained here on generated text
//! and ds-pack shards of it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use dsllm_tokens::{save_tokenizer, train_from_documents, DsTokenizer, PackConfig, Packer, TrainConfig};

/// Tokens per packed sequence: short, so a step is quick on CPU.
pub const SEQ_LEN: u32 = 64;

/// Text with structure a small model learns quickly (who does what to which thing), and a
/// unigram distribution spread over a few dozen words.
fn generated_documents(count: usize) -> Vec<String> {
    let names = ["Anna", "Boris", "Chen", "Dara", "Emil", "Farah", "Goran", "Hana", "Ivo", "Jia"];
    let verbs = ["paints", "carries", "finds", "sells", "washes", "draws", "hides", "opens"];
    let adjectives = ["red", "small", "old", "heavy", "bright", "wooden", "quiet", "green"];
    let nouns = ["box", "boat", "lamp", "door", "chair", "kettle", "drum", "basket"];
    let places = ["market", "harbor", "garden", "station"];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    };
    (0..count)
        .map(|_| {
            let sentences = 3 + next(5);
            (0..sentences)
                .map(|_| {
                    format!(
                        "{} {} the {} {} at the {}.",
                        names[next(names.len())],
                        verbs[next(verbs.len())],
                        adjectives[next(adjectives.len())],
                        nouns[next(nouns.len())],
                        places[next(places.len())]
                    )
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// `root/tokenizer` and `root/tokens` (ds-pack's layout), made once per test process under
/// cargo's temporary folder for tests (a static is never dropped, so no TempDir here).
pub fn corpus() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let binary = std::env::current_exe().ok().and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned())).unwrap_or_default();
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("corpus-{binary}"));
        if root.exists() {
            std::fs::remove_dir_all(&root).expect("removing the last run's corpus");
        }
        let documents = generated_documents(1500);
        let ids: Vec<String> = (0..documents.len()).map(|i| format!("doc-{i}")).collect();
        let config = TrainConfig { learned_tokens: 400, model_vocab_size: None, sample_bytes: 1 << 20, ..TrainConfig::default() };
        let (tokenizer, tokenizer_config) =
            train_from_documents(ids.iter().map(String::as_str).zip(documents.iter().map(String::as_str)), &config).expect("tokenizer training");
        let tokenizer_dir = root.join("tokenizer");
        save_tokenizer(&tokenizer_dir, &tokenizer, &tokenizer_config).expect("saving the tokenizer");
        let tokenizer = DsTokenizer::load(&tokenizer_dir).expect("loading the tokenizer");
        let pack = PackConfig { sequence_length: SEQ_LEN, validation_fraction: 0.05, sequences_per_shard: 500, ..PackConfig::default() };
        let mut packer = Packer::new(&tokenizer, &root.join("tokens"), pack).expect("packer");
        for (id, text) in ids.iter().zip(&documents) {
            packer.add(id, text, 1).expect("packing");
        }
        packer.finish().expect("finishing the shards");
        root
    })
}

