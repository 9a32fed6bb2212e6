//! ds-synth: the embedded default corpus.
//!
//! Several Common-Crawl-like dumps written as real WET files (one gzip member per record, a
//! warcinfo record naming the dump), with English and Chinese documents of varied quality,
//! skewed domain sizes, and near-duplicates planted within and across dumps. The ground truth
//! (`ground_truth.parquet`: each document's family and, for planted duplicates, its cluster and
//! original) lets the dedup and filter stages measure precision and recall. Everything is
//! deterministic from the seed.

pub mod align;
pub mod lexicon;
pub mod text;

use arrow::array::{ArrayRef, Int64Builder, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use dsllm_core::atomic::AtomicFile;
use dsllm_core::error::{IoContext, Result};
use dsllm_core::parquet_io::{ParquetSink, WrittenFile};
use dsllm_core::schema::document_id;
use dsllm_warc::write::{conversion, warcinfo, write_gzip_member};
use rand::{RngExt, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use text::Rng;

pub const TOOL: &str = "ds-synth";

/// Sizes and rates of the synthetic crawl. The defaults keep `make demo` to a few minutes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SynthConfig {
    pub seed: u64,
    pub dumps: usize,
    pub docs_per_dump: usize,
    pub files_per_dump: usize,
    /// Share of Chinese documents.
    pub zh_share: f64,
    /// Share of low-quality documents (spread over the noise families).
    pub low_quality_share: f64,
    /// Share of a dump that copies a document of the same dump.
    pub within_dump_duplicates: f64,
    /// Share of a dump (after the first) that re-crawls a document of an earlier dump.
    pub cross_dump_duplicates: f64,
    pub domains: usize,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            seed: 20240522,
            dumps: 3,
            docs_per_dump: 2000,
            files_per_dump: 2,
            zh_share: 0.3,
            low_quality_share: 0.3,
            within_dump_duplicates: 0.08,
            cross_dump_duplicates: 0.25,
            domains: 150,
        }
    }
}

/// Quality families; `clean_*` are the documents a good filter keeps.
pub const FAMILIES: [&str; 9] = [
    "clean_en", "clean_zh", "boilerplate_spam", "repeated_lines", "link_list", "lorem_filler", "code", "zh_spam", "too_short",
];

/// The dump names, in crawl order.
pub fn dump_names(n: usize) -> Vec<String> {
    (0..n).map(|k| format!("CC-MAIN-2024-{:02}", 10 + 4 * k)).collect()
}

#[derive(Debug, Clone)]
struct Original {
    family: &'static str,
    seed: u64,
    url: String,
}

#[derive(Debug, Clone)]
struct Planned {
    original: usize,
    /// `None` for the original itself.
    mutation: Option<&'static str>,
    url: String,
    mutation_seed: u64,
}

fn family_for(rng: &mut Rng, config: &SynthConfig) -> &'static str {
    let zh = rng.random_bool(config.zh_share);
    if !rng.random_bool(config.low_quality_share) {
        return if zh { "clean_zh" } else { "clean_en" };
    }
    if zh {
        return "zh_spam";
    }
    ["boilerplate_spam", "repeated_lines", "link_list", "lorem_filler", "code", "too_short"][rng.random_range(0..6)]
}

fn is_zh(family: &str) -> bool {
    family.ends_with("_zh") || family == "zh_spam"
}

fn generate(family: &str, seed: u64) -> String {
    let mut rng = Rng::seed_from_u64(seed);
    match family {
        "clean_en" => text::clean_en(&mut rng),
        "clean_zh" => text::clean_zh(&mut rng),
        "boilerplate_spam" => text::boilerplate_spam(&mut rng),
        "repeated_lines" => text::repeated_lines(&mut rng),
        "link_list" => text::link_list(&mut rng),
        "lorem_filler" => text::lorem_filler(&mut rng),
        "code" => text::code(&mut rng),
        "zh_spam" => text::zh_spam(&mut rng),
        _ => text::too_short(&mut rng),
    }
}

fn apply_mutation(text: &str, mutation: &str, zh: bool, seed: u64) -> String {
    let mut rng = Rng::seed_from_u64(seed);
    match mutation {
        "edit" => text::mutate::edit(&mut rng, text, zh),
        "boilerplate" => text::mutate::boilerplate(&mut rng, text, zh),
        "date" => text::mutate::date(&mut rng, text, zh),
        _ => text.to_string(),
    }
}

/// Domain names with a Zipf-like size distribution: a few large sites, many small ones.
fn domain_names(rng: &mut Rng, n: usize) -> (Vec<String>, Vec<f64>) {
    let syllables = ["ka", "lo", "mi", "ren", "sa", "tor", "vel", "zun", "pa", "qi", "ne", "dor", "lin", "ha", "wu", "ber"];
    let tlds = ["com", "org", "net", "cn", "io", "info"];
    let names = (0..n)
        .map(|i| {
            let word: String = (0..rng.random_range(2..4)).map(|_| syllables[rng.random_range(0..syllables.len())]).collect();
            format!("www.{word}{i}.{}", tlds[rng.random_range(0..tlds.len())])
        })
        .collect();
    let weights = (0..n).map(|i| 1.0 / (i as f64 + 1.0)).collect();
    (names, weights)
}

fn weighted(rng: &mut Rng, cumulative: &[f64]) -> usize {
    let x = rng.random_range(0.0..*cumulative.last().unwrap_or(&1.0));
    cumulative.partition_point(|&c| c < x).min(cumulative.len() - 1)
}

/// Figures of a finished synthesis.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SynthSummary {
    pub files: Vec<WrittenFile>,
    pub documents: u64,
    pub planted_duplicates: u64,
    pub by_family: BTreeMap<String, u64>,
    pub by_dump: BTreeMap<String, u64>,
}

/// Writes the corpus under `output`: `<dump>/<dump>-NNNNN.warc.wet.gz` and `ground_truth.parquet`.
pub fn synthesize(config: &SynthConfig, output: &Path) -> Result<SynthSummary> {
    let mut rng = Rng::seed_from_u64(config.seed);
    let (domains, weights) = domain_names(&mut rng, config.domains.max(1));
    let cumulative: Vec<f64> = weights.iter().scan(0.0, |acc, w| {
        *acc += w;
        Some(*acc)
    }).collect();
    let dumps = dump_names(config.dumps);
    let mut originals: Vec<Original> = Vec::new();
    let mut plan: Vec<Vec<Planned>> = Vec::new();
    let mut url_counter = 0u64;
    let mut new_url = |rng: &mut Rng| {
        url_counter += 1;
        let domain = &domains[weighted(rng, &cumulative)];
        format!("https://{domain}/{}/{}-{url_counter}.html", ["news", "blog", "article", "page", "forum"][rng.random_range(0..5)], rng.random_range(100..999))
    };
    for _ in 0..config.dumps {
        let n = config.docs_per_dump;
        let cross = if plan.is_empty() { 0 } else { (n as f64 * config.cross_dump_duplicates) as usize };
        let within = (n as f64 * config.within_dump_duplicates) as usize;
        let fresh = n - cross - within;
        let first_new = originals.len();
        let mut docs = Vec::with_capacity(n);
        for _ in 0..fresh {
            let family = family_for(&mut rng, config);
            let url = new_url(&mut rng);
            originals.push(Original { family, seed: rng.random(), url: url.clone() });
            docs.push(Planned { original: originals.len() - 1, mutation: None, url, mutation_seed: 0 });
        }
        let mut copy = |rng: &mut Rng, from: std::ops::Range<usize>, same_url: bool| {
            let original = rng.random_range(from);
            let family = originals[original].family;
            // Near-duplicate mutations need enough text to stay near; short noise is copied exactly.
            let mutation = if family.starts_with("clean") {
                ["exact", "edit", "boilerplate", "date"][rng.random_range(0..4)]
            } else {
                "exact"
            };
            let url = if same_url { originals[original].url.clone() } else { new_url(rng) };
            Planned { original, mutation: Some(mutation), url, mutation_seed: rng.random() }
        };
        for _ in 0..within {
            let d = copy(&mut rng, first_new..originals.len(), false);
            docs.push(d);
        }
        for _ in 0..cross {
            let same_url = rng.random_bool(0.6);
            let d = copy(&mut rng, 0..first_new, same_url);
            docs.push(d);
        }
        // Interleave: a crawl does not list copies after originals.
        for i in (1..docs.len()).rev() {
            docs.swap(i, rng.random_range(0..=i));
        }
        plan.push(docs);
    }

    // Which originals have copies: those form the planted clusters.
    let mut copies = vec![0u32; originals.len()];
    for d in plan.iter().flatten() {
        if d.mutation.is_some() {
            copies[d.original] += 1;
        }
    }

    std::fs::create_dir_all(output).at(output, "create output folder")?;
    let mut files = Vec::new();
    let mut truth = GroundTruth::default();
    let mut original_ids: Vec<Option<String>> = vec![None; originals.len()];
    let mut summary = SynthSummary { files: vec![], documents: 0, planted_duplicates: 0, by_family: BTreeMap::new(), by_dump: BTreeMap::new() };
    for (k, (dump, docs)) in dumps.iter().zip(&plan).enumerate() {
        // Record ids first (sequential, so ids of originals are known before their copies).
        let records: Vec<(String, String, &Planned)> = docs
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let record_id = format!("{:08x}-{:04x}-4000-8000-{:012x}", config.seed as u32, k, i);
                let id = document_id(dump, &format!("<urn:uuid:{record_id}>"));
                (record_id, id, d)
            })
            .collect();
        for (_, id, d) in &records {
            if d.mutation.is_none() {
                original_ids[d.original] = Some(id.clone());
            }
        }
        for (_, id, d) in &records {
            let o = &originals[d.original];
            let cluster = (copies[d.original] > 0).then_some(d.original as i64);
            truth.push(id, dump, &d.url, o.family, if is_zh(o.family) { "zh" } else { "en" }, cluster, d.mutation.map(|_| original_ids[d.original].clone().expect("original written first")), d.mutation);
            *summary.by_family.entry(o.family.to_string()).or_default() += 1;
            summary.planted_duplicates += u64::from(d.mutation.is_some());
        }
        summary.by_dump.insert(dump.clone(), records.len() as u64);
        summary.documents += records.len() as u64;
        let per_file = records.len().div_ceil(config.files_per_dump.max(1)).max(1);
        let written: Vec<WrittenFile> = records
            .par_chunks(per_file)
            .enumerate()
            .map(|(f, chunk)| write_wet_file(output, dump, k, f, chunk, &originals))
            .collect::<Result<_>>()?;
        files.extend(written);
    }
    files.push(truth.write(&output.join("ground_truth.parquet"))?);
    summary.files = files;
    Ok(summary)
}

fn write_wet_file(output: &Path, dump: &str, k: usize, f: usize, records: &[(String, String, &Planned)], originals: &[Original]) -> Result<WrittenFile> {
    let name = format!("{dump}-{f:05}.warc.wet.gz");
    let path = output.join(dump).join(&name);
    let (atomic, file) = AtomicFile::create(&path)?;
    let mut out = BufWriter::new(file);
    let day = |i: usize| format!("2024-{:02}-{:02}T{:02}:{:02}:{:02}Z", 2 + k * 2, 1 + i % 27, i % 24, i % 60, (i * 7) % 60);
    let mut bytes = warcinfo(dump, &name, &day(0), &format!("{:08x}-info-{k}-{f}", 0));
    let mut n = 0u64;
    write_gzip_member(&mut out, &bytes).at(&path, "write")?;
    for (i, (record_id, _, d)) in records.iter().enumerate() {
        let o = &originals[d.original];
        let zh = is_zh(o.family);
        let base = generate(o.family, o.seed);
        let text = match d.mutation {
            Some(m) => apply_mutation(&base, m, zh, d.mutation_seed),
            None => base,
        };
        bytes = conversion(&d.url, &day(i + 1), record_id, Some(if zh { "zho" } else { "eng" }), &text);
        write_gzip_member(&mut out, &bytes).at(&path, "write")?;
        n += 1;
    }
    out.flush().at(&path, "write")?;
    drop(out);
    let path = atomic.commit()?;
    let size = std::fs::metadata(&path).at(&path, "stat")?.len();
    Ok(WrittenFile { path, rows: n, bytes: size })
}

/// Schema of `ground_truth.parquet`.
pub fn ground_truth_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("dump", DataType::Utf8, false),
        Field::new("url", DataType::Utf8, false),
        Field::new("family", DataType::Utf8, false),
        Field::new("lang", DataType::Utf8, false),
        Field::new("dup_cluster", DataType::Int64, true),
        Field::new("dup_of", DataType::Utf8, true),
        Field::new("mutation", DataType::Utf8, true),
    ]))
}

#[derive(Default)]
struct GroundTruth {
    id: StringBuilder,
    dump: StringBuilder,
    url: StringBuilder,
    family: StringBuilder,
    lang: StringBuilder,
    dup_cluster: Int64Builder,
    dup_of: StringBuilder,
    mutation: StringBuilder,
}

impl GroundTruth {
    #[allow(clippy::too_many_arguments)]
    fn push(&mut self, id: &str, dump: &str, url: &str, family: &str, lang: &str, cluster: Option<i64>, dup_of: Option<String>, mutation: Option<&str>) {
        self.id.append_value(id);
        self.dump.append_value(dump);
        self.url.append_value(url);
        self.family.append_value(family);
        self.lang.append_value(lang);
        self.dup_cluster.append_option(cluster);
        self.dup_of.append_option(dup_of);
        self.mutation.append_option(mutation);
    }

    fn write(mut self, path: &Path) -> Result<WrittenFile> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.id.finish()),
            Arc::new(self.dump.finish()),
            Arc::new(self.url.finish()),
            Arc::new(self.family.finish()),
            Arc::new(self.lang.finish()),
            Arc::new(self.dup_cluster.finish()),
            Arc::new(self.dup_of.finish()),
            Arc::new(self.mutation.finish()),
        ];
        let batch = RecordBatch::try_new(ground_truth_schema(), columns).map_err(|e| dsllm_core::Error::arrow(path, e))?;
        let mut sink = ParquetSink::create(path, ground_truth_schema())?;
        sink.write(&batch)?;
        sink.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_gives_identical_files() {
        let config = SynthConfig { docs_per_dump: 60, dumps: 2, ..Default::default() };
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let sa = synthesize(&config, a.path()).unwrap();
        let sb = synthesize(&config, b.path()).unwrap();
        assert_eq!(sa.documents, 120);
        for (fa, fb) in sa.files.iter().zip(&sb.files) {
            assert_eq!(std::fs::read(&fa.path).unwrap(), std::fs::read(&fb.path).unwrap());
        }
        assert!(sa.planted_duplicates > 0);
    }

    #[test]
    fn mutations_keep_texts_near() {
        let base = generate("clean_en", 7);
        for m in ["edit", "boilerplate", "date"] {
            let changed = apply_mutation(&base, m, false, 3);
            assert_ne!(changed, base, "{m}");
            let jaccard = shingle_jaccard(&base, &changed);
            assert!(jaccard > 0.75, "{m}: {jaccard}");
        }
        let other = generate("clean_en", 8);
        assert!(shingle_jaccard(&base, &other) < 0.05);
    }

    fn shingle_jaccard(a: &str, b: &str) -> f64 {
        let sh = |t: &str| {
            let w: Vec<&str> = t.split_whitespace().collect();
            w.windows(5).map(|x| x.join(" ")).collect::<std::collections::HashSet<_>>()
        };
        let (x, y) = (sh(a), sh(b));
        x.intersection(&y).count() as f64 / x.union(&y).count() as f64
    }
}
