//! The ingest stage: WARC/WET files into documents Parquet, one output part per input file,
//! files processed in parallel. Every record is accounted for: kept (a document), removed (not
//! a document: warcinfo, requests, non-HTML...) or quarantined (damaged, with its reason and
//! what could be salvaged) in `quarantine/part-NNNNN.parquet`.

use crate::html;
use crate::record::{self, Damage, Event, Record};
use arrow::array::{ArrayRef, RecordBatch, StringBuilder, UInt64Builder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use dsllm_core::error::{Error, IoContext, Result};
use dsllm_core::inputs::TaskSlice;
use dsllm_core::manifest::{Counts, Manifest, Stage, StageStart};
use dsllm_core::parquet_io::{DocumentWriter, ParquetSink, WrittenFile};
use dsllm_core::schema::{document_id, normalize_newlines, Document};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const TOOL: &str = "ds-ingest";

/// Input file names ingest reads.
pub fn is_warc_file(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    [".warc.gz", ".wet.gz", ".warc", ".wet", ".warc.wet.gz"].iter().any(|ext| name.ends_with(ext))
}

/// ARC files (Common Crawl's crawls before 2013): recognised so that they are refused by name
/// rather than read as WARC, where every record would be quarantined as malformed.
pub fn is_arc_file(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    name.ends_with(".arc.gz") || name.ends_with(".arc")
}

/// Input files ingest reads or refuses: [`is_warc_file`] or [`is_arc_file`] (for
/// `dsllm_core::inputs::expand`, so that an ARC file among the inputs reaches [`run`]'s error).
pub fn is_input_file(path: &Path) -> bool {
    is_warc_file(path) || is_arc_file(path)
}

#[derive(Debug, Clone, Default)]
pub struct IngestOptions {
    /// The dump for files that do not name it (no warcinfo `isPartOf`, no `CC-MAIN-…` in the path).
    pub dump: Option<String>,
    pub task: TaskSlice,
    /// Rerun even when the output's manifest matches.
    pub force: bool,
}

/// What happened to one input file.
#[derive(Debug, Default)]
pub struct FileOutcome {
    pub counts: Counts,
    pub outputs: Vec<WrittenFile>,
    pub text_bytes: u64,
}

/// The stage's result: either freshly run or found up to date.
pub struct IngestResult {
    pub manifest: Manifest,
    pub skipped: bool,
}

/// Ingests `files` (already expanded and sorted) into `output_dir`.
pub fn run(files: &[PathBuf], output_dir: &Path, options: &IngestOptions, progress: &dsllm_core::progress::ProgressBar) -> Result<IngestResult> {
    if let Some(arc) = files.iter().find(|p| is_arc_file(p)) {
        return Err(Error::Usage(format!(
            "{}: ARC files (Common Crawl's crawls before 2013) are not read; convert them to WARC first, \
             e.g. `warcio recompress {} OUT.warc.gz`",
            arc.display(),
            arc.display()
        )));
    }
    let mine = options.task.select(files);
    let my_files: Vec<PathBuf> = mine.iter().map(|(_, p)| p.clone()).collect();
    let params = serde_json::json!({ "dump": options.dump, "num_files": files.len() });
    let stage = match Stage::begin(TOOL, output_dir, params, &my_files, options.task, options.force)? {
        StageStart::UpToDate(manifest) => return Ok(IngestResult { manifest, skipped: true }),
        StageStart::Run(stage) => stage,
    };
    progress.set_length(mine.len() as u64);
    let outcomes: Vec<FileOutcome> = mine
        .par_iter()
        .map(|(index, path)| {
            let outcome = ingest_file(path, *index, output_dir, options.dump.as_deref());
            progress.inc(1);
            outcome
        })
        .collect::<Result<_>>()?;
    let mut counts = Counts::default();
    let mut outputs = Vec::new();
    let mut text_bytes = 0;
    for outcome in outcomes {
        counts.add(&outcome.counts);
        outputs.extend(outcome.outputs);
        text_bytes += outcome.text_bytes;
    }
    let mut extra = BTreeMap::new();
    extra.insert("text_bytes".to_string(), serde_json::json!(text_bytes));
    let manifest = stage.finish(counts, outputs, extra)?;
    Ok(IngestResult { manifest, skipped: false })
}

/// Ingests one file into `part-<index>.parquet` (and `quarantine/part-<index>.parquet`).
pub fn ingest_file(path: &Path, index: usize, output_dir: &Path, dump: Option<&str>) -> Result<FileOutcome> {
    let part = format!("part-{index:05}.parquet");
    let mut writer = DocumentWriter::create(output_dir.join(&part))?;
    let mut quarantine = QuarantineWriter::new(output_dir.join(dsllm_core::inputs::QUARANTINE_DIR).join(&part), path);
    let mut outcome = FileOutcome::default();
    let mut current_dump = dump_from_path(path).or_else(|| dump.map(str::to_string));
    let mut failure: Option<Error> = None;
    let file = std::fs::File::open(path).at(path, "open")?;
    let read = record::read_records(file, |event| {
        if failure.is_some() {
            return;
        }
        let result = match event {
            Event::Record(rec) => on_record(rec, path, &mut current_dump, &mut writer, &mut quarantine, &mut outcome),
            Event::Damage(damage) => {
                outcome.counts.quarantine(damage.kind.reason());
                quarantine.push_damage(&damage);
                Ok(())
            }
        };
        if let Err(e) = result {
            failure = Some(e);
        }
    });
    read.at(path, "read")?;
    if let Some(e) = failure {
        return Err(e);
    }
    outcome.outputs.push(writer.finish()?);
    if let Some(q) = quarantine.finish()? {
        outcome.outputs.push(q);
    }
    Ok(outcome)
}

fn on_record(
    rec: Record,
    path: &Path,
    dump: &mut Option<String>,
    writer: &mut DocumentWriter,
    quarantine: &mut QuarantineWriter,
    outcome: &mut FileOutcome,
) -> Result<()> {
    let counts = &mut outcome.counts;
    let Some(warc_type) = rec.header("WARC-Type").map(str::to_ascii_lowercase) else {
        counts.quarantine("missing_warc_type");
        quarantine.push(&rec, "missing_warc_type", "no WARC-Type header", &rec.content);
        return Ok(());
    };
    let text = match warc_type.as_str() {
        "warcinfo" => {
            if let Some(name) = dump_from_warcinfo(&rec.content) {
                *dump = Some(name);
            }
            counts.remove("warcinfo");
            return Ok(());
        }
        "conversion" => match String::from_utf8(rec.content.clone()) {
            Ok(text) => text,
            Err(_) => {
                counts.quarantine("invalid_utf8");
                let lossy = String::from_utf8_lossy(&rec.content).into_owned();
                quarantine.push(&rec, "invalid_utf8", "content is not valid UTF-8 (decoded lossily)", lossy.as_bytes());
                return Ok(());
            }
        },
        "response" => {
            let Some(response) = html::parse_http_response(&rec.content) else {
                counts.quarantine("malformed_http");
                quarantine.push(&rec, "malformed_http", "no HTTP status line and headers", &rec.content);
                return Ok(());
            };
            if response.status != 200 {
                counts.remove("http_not_ok");
                return Ok(());
            }
            if !html::is_html(&response.media_type) {
                counts.remove("non_html");
                return Ok(());
            }
            let body = match response.decoded_body() {
                Ok(body) => body,
                Err(detail) => {
                    counts.quarantine("undecodable_body");
                    quarantine.push(&rec, "undecodable_body", &detail, response.body);
                    return Ok(());
                }
            };
            let tld = rec.header("WARC-Target-URI").and_then(|u| url::Url::parse(u).ok()).and_then(|u| u.host_str().and_then(|h| h.rsplit('.').next().map(str::to_ascii_lowercase)));
            let (page, had_errors) = html::decode_body(&body, response.charset.as_deref(), tld.as_deref());
            if had_errors {
                counts.quarantine("invalid_utf8");
                quarantine.push(&rec, "invalid_utf8", "body is not valid in its declared charset (decoded lossily)", page.as_bytes());
                return Ok(());
            }
            match html::main_text(&page, rec.header("WARC-Target-URI")) {
                Some(text) => text,
                None => {
                    counts.remove("no_main_text");
                    return Ok(());
                }
            }
        }
        other => {
            counts.remove(&format!("record_type_{other}"));
            return Ok(());
        }
    };
    let missing = ["WARC-Record-ID", "WARC-Target-URI", "WARC-Date"].into_iter().find(|h| rec.header(h).is_none_or(str::is_empty));
    if let Some(header) = missing {
        let reason = format!("missing_{}", header.trim_start_matches("WARC-").to_ascii_lowercase().replace('-', "_"));
        counts.quarantine(&reason);
        quarantine.push(&rec, &reason, &format!("no {header} header"), text.as_bytes());
        return Ok(());
    }
    let url = rec.header("WARC-Target-URI").unwrap_or_default().to_string();
    let Some(domain) = url::Url::parse(&url).ok().and_then(|u| u.host_str().map(str::to_ascii_lowercase)) else {
        counts.quarantine("bad_target_uri");
        quarantine.push(&rec, "bad_target_uri", "WARC-Target-URI is not a URL with a host", text.as_bytes());
        return Ok(());
    };
    if text.trim().is_empty() {
        counts.quarantine("empty_record");
        quarantine.push(&rec, "empty_record", "no text", b"");
        return Ok(());
    }
    let Some(dump) = dump.clone() else {
        return Err(Error::Usage(format!(
            "{}: the file does not name its dump (no warcinfo isPartOf, no CC-MAIN-… in its path): pass --dump",
            path.display()
        )));
    };
    let record_id = rec.header("WARC-Record-ID").unwrap_or_default();
    let doc = Document {
        id: document_id(&dump, record_id),
        dump,
        url,
        domain,
        date: rec.header("WARC-Date").unwrap_or_default().to_string(),
        lang: rec.header("WARC-Identified-Content-Language").and_then(language_code),
        lang_score: None,
        text: normalize_newlines(&text),
    };
    outcome.text_bytes += doc.text.len() as u64;
    counts.keep();
    writer.push(&doc)
}

/// `isPartOf: CC-MAIN-2024-22` in a warcinfo record's fields.
pub fn dump_from_warcinfo(content: &[u8]) -> Option<String> {
    String::from_utf8_lossy(content).lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim().eq_ignore_ascii_case("isPartOf") && !v.trim().is_empty()).then(|| v.trim().to_string())
    })
}

/// `CC-MAIN-YYYY-WW` anywhere in the path (Common Crawl's layout names the dump).
pub fn dump_from_path(path: &Path) -> Option<String> {
    let s = path.to_string_lossy();
    let bytes = s.as_bytes();
    let shape = |w: &[u8]| {
        w.len() == 16
            && w.starts_with(b"CC-MAIN-")
            && w[8..12].iter().all(u8::is_ascii_digit)
            && w[12] == b'-'
            && w[13..15].iter().all(u8::is_ascii_digit)
    };
    (0..bytes.len().saturating_sub(14)).find_map(|i| {
        let w = &bytes[i..(i + 15).min(bytes.len())];
        let w16 = [w, b"#"].concat();
        shape(&w16).then(|| String::from_utf8_lossy(w).into_owned())
    })
}

/// The first language of Common Crawl's `WARC-Identified-Content-Language` (ISO 639-3, e.g.
/// `eng,zho`) as ISO 639-1 where one exists (`en`).
pub fn language_code(header: &str) -> Option<String> {
    let first = header.split(',').next()?.trim().to_ascii_lowercase();
    if first.is_empty() {
        return None;
    }
    let two = isolang::Language::from_639_3(&first).and_then(|l| l.to_639_1());
    Some(two.map(str::to_string).unwrap_or(first))
}

/// Schema of quarantine files: where the record was, why, and what could be salvaged.
pub fn quarantine_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("file", DataType::Utf8, false),
        Field::new("offset", DataType::UInt64, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("detail", DataType::Utf8, false),
        Field::new("record_id", DataType::Utf8, true),
        Field::new("url", DataType::Utf8, true),
        Field::new("content", DataType::Utf8, false),
    ]))
}

/// Collects quarantined records of one input; writes a file only when there are some.
struct QuarantineWriter {
    path: PathBuf,
    source: String,
    file: StringBuilder,
    offset: UInt64Builder,
    reason: StringBuilder,
    detail: StringBuilder,
    record_id: StringBuilder,
    url: StringBuilder,
    content: StringBuilder,
    rows: usize,
    bytes: usize,
    sink: Option<ParquetSink>,
}

impl QuarantineWriter {
    fn new(path: PathBuf, source: &Path) -> Self {
        QuarantineWriter {
            path,
            source: source.to_string_lossy().into_owned(),
            file: StringBuilder::new(),
            offset: UInt64Builder::new(),
            reason: StringBuilder::new(),
            detail: StringBuilder::new(),
            record_id: StringBuilder::new(),
            url: StringBuilder::new(),
            content: StringBuilder::new(),
            rows: 0,
            bytes: 0,
            sink: None,
        }
    }

    fn push(&mut self, rec: &Record, reason: &str, detail: &str, content: &[u8]) {
        self.push_row(rec.offset, reason, detail, &rec.headers, content);
    }

    fn push_damage(&mut self, damage: &Damage) {
        self.push_row(damage.offset, damage.kind.reason(), &damage.detail, &damage.headers, &damage.content);
    }

    fn push_row(&mut self, offset: u64, reason: &str, detail: &str, headers: &[(String, String)], content: &[u8]) {
        self.file.append_value(&self.source);
        self.offset.append_value(offset);
        self.reason.append_value(reason);
        self.detail.append_value(detail);
        self.record_id.append_option(record::header(headers, "WARC-Record-ID"));
        self.url.append_option(record::header(headers, "WARC-Target-URI"));
        self.content.append_value(String::from_utf8_lossy(content));
        self.rows += 1;
        self.bytes += content.len();
        if self.bytes > (8 << 20) {
            // Errors surface again at finish(); a failed flush here keeps the rows buffered.
            let _ = self.flush();
        }
    }

    fn flush(&mut self) -> Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.file.finish()),
            Arc::new(self.offset.finish()),
            Arc::new(self.reason.finish()),
            Arc::new(self.detail.finish()),
            Arc::new(self.record_id.finish()),
            Arc::new(self.url.finish()),
            Arc::new(self.content.finish()),
        ];
        let batch = RecordBatch::try_new(quarantine_schema(), columns).map_err(|e| Error::arrow(&self.path, e))?;
        if self.sink.is_none() {
            self.sink = Some(ParquetSink::create(&self.path, quarantine_schema())?);
        }
        self.sink.as_mut().expect("created above").write(&batch)?;
        self.rows = 0;
        self.bytes = 0;
        Ok(())
    }

    fn finish(mut self) -> Result<Option<WrittenFile>> {
        self.flush()?;
        self.sink.take().map(ParquetSink::finish).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_names_come_from_paths_and_warcinfo() {
        let p = Path::new("crawl-data/CC-MAIN-2024-22/segments/1/wet/CC-MAIN-20240518-00000.warc.wet.gz");
        assert_eq!(dump_from_path(p).as_deref(), Some("CC-MAIN-2024-22"));
        assert_eq!(dump_from_path(Path::new("x/CC-MAIN-2024.wet.gz")), None);
        assert_eq!(dump_from_warcinfo(b"operator: x\r\nisPartOf: CC-MAIN-2023-50\r\n").as_deref(), Some("CC-MAIN-2023-50"));
    }

    #[test]
    fn arc_files_are_refused_by_name() {
        assert!(is_arc_file(Path::new("CC-MAIN-2009-x/1224.arc.gz")) && !is_warc_file(Path::new("1224.arc.gz")));
        assert!(is_input_file(Path::new("a.ARC.GZ")) && is_input_file(Path::new("a.warc.wet.gz")));
        assert!(!is_arc_file(Path::new("a.warc.gz")) && !is_arc_file(Path::new("a.warc")));
        let out = tempfile::tempdir().unwrap();
        let files = [PathBuf::from("x/a.warc.gz"), PathBuf::from("x/old.arc.gz")];
        let err = run(&files, out.path(), &IngestOptions::default(), &dsllm_core::progress::ProgressBar::hidden()).err().expect("an ARC input is an error");
        let text = err.to_string();
        assert!(text.contains("old.arc.gz") && text.contains("warcio recompress"), "{text}");
        assert!(!out.path().join("_manifest.json").exists());
    }

    #[test]
    fn languages_map_to_two_letters() {
        assert_eq!(language_code("eng,zho").as_deref(), Some("en"));
        assert_eq!(language_code("zho").as_deref(), Some("zh"));
        assert_eq!(language_code("").as_deref(), None);
    }
}
