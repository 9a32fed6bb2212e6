//! Hand-made WET/WARC files with the damage real crawls have: each damaged record becomes a
//! counted quarantine entry and every good record is kept.

use arrow::array::{Array, StringArray, UInt64Array};
use dsllm_core::parquet_io::read_batches;
use dsllm_core::schema::DocumentColumns;
use dsllm_warc::ingest::ingest_file;
use dsllm_warc::record::{read_records, Event};
use dsllm_warc::write::{conversion, record_bytes, warcinfo, write_gzip_member, RecordOut};

const DUMP: &str = "CC-MAIN-2099-01";

fn text(i: usize) -> String {
    format!("Page {i}\nThe quick brown fox number {i} jumps over the lazy dog.\nSecond line of page {i}.")
}

fn good(i: usize) -> Vec<u8> {
    conversion(&format!("https://site{i}.example.org/page/{i}"), "2099-01-02T03:04:05Z", &format!("id-{i}"), Some("eng"), &text(i))
}

fn gzip_members(records: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        write_gzip_member(&mut out, r).unwrap();
    }
    out
}

fn info() -> Vec<u8> {
    warcinfo(DUMP, "test.warc.wet.gz", "2099-01-02T00:00:00Z", "info")
}

struct Ingested {
    texts: Vec<String>,
    reasons: Vec<String>,
    quarantine_offsets: Vec<u64>,
    counts: dsllm_core::manifest::Counts,
}

fn ingest(bytes: &[u8], name: &str) -> Ingested {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join(name);
    std::fs::write(&input, bytes).unwrap();
    let out = dir.path().join("out");
    let outcome = ingest_file(&input, 0, &out, None).unwrap();
    assert!(outcome.counts.is_balanced(), "{:?}", outcome.counts);
    let mut texts = vec![];
    for batch in read_batches(out.join("part-00000.parquet"), None).unwrap() {
        let batch = batch.unwrap();
        let cols = DocumentColumns::from_batch(&batch).unwrap();
        for r in 0..cols.len() {
            let d = cols.document(r);
            assert_eq!(d.dump, DUMP);
            assert_eq!(d.lang.as_deref(), Some("en"));
            texts.push(d.text);
        }
    }
    let mut reasons = vec![];
    let mut quarantine_offsets = vec![];
    let q = out.join("quarantine/part-00000.parquet");
    if q.exists() {
        for batch in read_batches(&q, None).unwrap() {
            let batch = batch.unwrap();
            let r = batch.column_by_name("reason").unwrap().as_any().downcast_ref::<StringArray>().unwrap();
            let o = batch.column_by_name("offset").unwrap().as_any().downcast_ref::<UInt64Array>().unwrap();
            let f = batch.column_by_name("file").unwrap().as_any().downcast_ref::<StringArray>().unwrap();
            for i in 0..r.len() {
                assert!(f.value(i).ends_with(name), "quarantine names the file");
                reasons.push(r.value(i).to_string());
                quarantine_offsets.push(o.value(i));
            }
        }
    }
    assert_eq!(outcome.counts.kept as usize, texts.len());
    assert_eq!(outcome.counts.quarantined as usize, reasons.len());
    Ingested { texts, reasons, quarantine_offsets, counts: outcome.counts }
}

fn expected(indices: &[usize]) -> Vec<String> {
    indices.iter().map(|&i| text(i)).collect()
}

#[test]
fn crlf_multi_member_gzip_keeps_every_record() {
    let mut records = vec![info()];
    records.extend((0..5).map(good));
    let got = ingest(&gzip_members(&records), "a.warc.wet.gz");
    assert_eq!(got.texts, expected(&[0, 1, 2, 3, 4]));
    assert_eq!(got.counts.read, 6);
    assert_eq!(got.counts.removed_by_reason["warcinfo"], 1);
    assert!(got.reasons.is_empty());
}

#[test]
fn lf_line_endings_in_a_plain_file() {
    let mut bytes = Vec::new();
    for r in std::iter::once(info()).chain((0..4).map(good)) {
        // Headers and separators with bare LF; the content keeps its own bytes.
        let s = String::from_utf8(r).unwrap();
        let (head, rest) = s.split_once("\r\n\r\n").unwrap();
        let body = rest.strip_suffix("\r\n\r\n").unwrap();
        let head = head.replace("\r\n", "\n");
        let len_fixed = head; // Content-Length counts the content only: unchanged.
        bytes.extend_from_slice(format!("{len_fixed}\n\n{body}\n\n").as_bytes());
    }
    let got = ingest(&bytes, "plain.warc.wet");
    assert_eq!(got.texts, expected(&[0, 1, 2, 3]));
    assert!(got.reasons.is_empty());
}

#[test]
fn whole_file_single_gzip_member() {
    let mut plain = info();
    for i in 0..3 {
        plain.extend(good(i));
    }
    let got = ingest(&gzip_members(&[plain]), "single.warc.wet.gz");
    assert_eq!(got.texts, expected(&[0, 1, 2]));
}

#[test]
fn truncated_last_member_is_quarantined() {
    let mut bytes = gzip_members(&[info(), good(0), good(1)]);
    let last = gzip_members(&[good(2)]);
    bytes.extend_from_slice(&last[..last.len() / 2]);
    let got = ingest(&bytes, "cut.warc.wet.gz");
    assert_eq!(got.texts, expected(&[0, 1]));
    assert_eq!(got.reasons, ["truncated_gzip"]);
    let start_of_last = gzip_members(&[info(), good(0), good(1)]).len() as u64;
    assert_eq!(got.quarantine_offsets, [start_of_last], "offset names the damaged member");
}

fn with_content_length(record: Vec<u8>, delta: i64) -> Vec<u8> {
    let s = String::from_utf8(record).unwrap();
    let start = s.find("Content-Length: ").unwrap() + "Content-Length: ".len();
    let end = start + s[start..].find("\r\n").unwrap();
    let n: i64 = s[start..end].parse().unwrap();
    format!("{}{}{}", &s[..start], n + delta, &s[end..]).into_bytes()
}

#[test]
fn bad_content_length_is_quarantined_in_members_and_plain_files() {
    let records = vec![info(), good(0), with_content_length(good(1), 7), good(2), with_content_length(good(3), -9), good(4)];
    let got = ingest(&gzip_members(&records), "len.warc.wet.gz");
    assert_eq!(got.texts, expected(&[0, 2, 4]));
    assert_eq!(got.reasons, ["content_length_mismatch", "content_length_mismatch"]);

    let plain: Vec<u8> = records.concat();
    let got = ingest(&plain, "len.warc.wet");
    assert_eq!(got.texts, expected(&[0, 2, 4]));
    assert_eq!(got.reasons, ["content_length_mismatch", "content_length_mismatch"]);
}

#[test]
fn missing_target_uri_invalid_utf8_and_empty_records() {
    let no_uri = record_bytes(&RecordOut {
        warc_type: "conversion",
        headers: vec![("WARC-Date", "2099-01-02T03:04:05Z".into()), ("WARC-Record-ID", "<urn:uuid:x>".into())],
        content: b"text without a url",
    });
    let bad_utf8 = record_bytes(&RecordOut {
        warc_type: "conversion",
        headers: vec![
            ("WARC-Target-URI", "https://x.example/".into()),
            ("WARC-Date", "2099-01-02T03:04:05Z".into()),
            ("WARC-Record-ID", "<urn:uuid:y>".into()),
        ],
        content: b"caf\xe9 au lait \xff\xfe",
    });
    let empty = conversion("https://e.example/", "2099-01-02T03:04:05Z", "z", Some("eng"), "  \n ");
    let records = vec![info(), good(0), no_uri, good(1), bad_utf8, empty, good(2)];
    let got = ingest(&gzip_members(&records), "mixed.warc.wet.gz");
    assert_eq!(got.texts, expected(&[0, 1, 2]));
    assert_eq!(got.reasons, ["missing_target_uri", "invalid_utf8", "empty_record"]);
}

#[test]
fn corrupt_member_and_malformed_header_are_skipped_over() {
    let mut corrupt = gzip_members(&[good(1)]);
    let n = corrupt.len();
    for b in corrupt[12..n - 8].iter_mut() {
        *b ^= 0x5a;
    }
    let mut bytes = gzip_members(&[info(), good(0)]);
    bytes.extend(corrupt);
    bytes.extend(gzip_members(&[b"WARC/1.0\r\nWARC-Type conversion\r\nContent-Length: 3\r\n\r\nabc\r\n\r\n".to_vec(), good(2)]));
    let got = ingest(&bytes, "corrupt.warc.wet.gz");
    assert_eq!(got.texts, expected(&[0, 2]));
    assert_eq!(got.reasons, ["corrupt_gzip", "malformed_header"]);
}

/// A WARC response record with this HTTP message (status line, headers, body) as its content.
fn response_record(url: &str, id: &str, http: &[u8]) -> Vec<u8> {
    record_bytes(&RecordOut {
        warc_type: "response",
        headers: vec![
            ("WARC-Target-URI", url.to_string()),
            ("WARC-Date", "2099-01-02T03:04:05Z".into()),
            ("WARC-Record-ID", format!("<urn:uuid:{id}>")),
            ("WARC-Identified-Content-Language", "eng".into()),
            ("Content-Type", "application/http; msgtype=response".into()),
        ],
        content: http,
    })
}

#[test]
fn warc_responses_become_main_text_and_other_records_are_counted() {
    let paragraph = "Rivers carry water from the hills to the sea, shaping valleys over thousands of years and feeding the towns along their banks. ";
    let html = format!("<html><body><nav>Home | About</nav><article><p>{}</p><p>{}</p></article></body></html>", paragraph.repeat(4), paragraph.repeat(3));
    let response = |url: &str, ctype: &str, body: &str, id: &str| {
        response_record(url, id, format!("HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\n\r\n{body}").as_bytes())
    };
    let request = record_bytes(&RecordOut { warc_type: "request", headers: vec![], content: b"GET / HTTP/1.1\r\n\r\n" });
    let records = vec![
        info(),
        request,
        response("https://r.example/a", "text/html; charset=utf-8", &html, "a"),
        response("https://r.example/b.pdf", "application/pdf", "%PDF-1.4", "b"),
    ];
    let got = ingest(&gzip_members(&records), "x.warc.gz");
    assert_eq!(got.texts.len(), 1);
    assert!(got.texts[0].contains("Rivers carry water"));
    assert!(!got.texts[0].contains("About"));
    assert_eq!(got.counts.removed_by_reason["non_html"], 1);
    assert_eq!(got.counts.removed_by_reason["record_type_request"], 1);
}

/// Other crawlers' WARCs keep `Transfer-Encoding: chunked` and `Content-Encoding: gzip` payloads
/// (Common Crawl stores them decoded): ingest undoes both, and a body that does not decode as its
/// headers say is quarantined with the coding named.
#[test]
fn encoded_payloads_are_decoded_and_undecodable_ones_quarantined() {
    use std::io::Write;
    let paragraph = "Glaciers move slowly down the valley, grinding the rock beneath them into fine flour that colours the lakes below. ";
    let html = format!("<html><body><nav>Home | Maps</nav><article><p>{}</p><p>{}</p></article></body></html>", paragraph.repeat(4), paragraph.repeat(3));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(html.as_bytes()).unwrap();
    let gzipped = gz.finish().unwrap();
    let mut chunked = Vec::new();
    for chunk in gzipped.chunks(100) {
        chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked.extend_from_slice(chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    // Corrupt deflate data: quarantined. Cut short (a truncated record): what decoded is kept.
    let mut broken = gzipped.clone();
    broken[20..30].iter_mut().for_each(|b| *b ^= 0x55);
    let cut = &gzipped[..gzipped.len() * 3 / 4];
    let response = |url: &str, id: &str, codings: &str, body: &[u8]| {
        response_record(url, id, &[format!("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n{codings}\r\n").as_bytes(), body].concat())
    };
    let records = vec![
        info(),
        response("https://g.example/chunked-gzip", "a", "Transfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n", &chunked),
        response("https://g.example/gzip", "b", "Content-Encoding: gzip\r\n", &gzipped),
        response("https://g.example/broken", "c", "Content-Encoding: gzip\r\n", &broken),
        response("https://g.example/cut", "d", "Content-Encoding: gzip\r\n", cut),
    ];
    let got = ingest(&gzip_members(&records), "encoded.warc.gz");
    assert_eq!(got.texts.len(), 3, "{:?}", got.reasons);
    assert!(got.texts.iter().all(|t| t.contains("Glaciers move slowly") && !t.contains("Maps")), "{:?}", got.texts);
    assert_eq!(got.reasons, vec!["undecodable_body"]);
}

#[test]
fn reader_reports_every_record_of_a_clean_stream() {
    let bytes = gzip_members(&(0..50).map(good).collect::<Vec<_>>());
    let mut n = 0;
    read_records(bytes.as_slice(), |e| {
        assert!(matches!(e, Event::Record(_)));
        n += 1;
    })
    .unwrap();
    assert_eq!(n, 50);
}

#[test]
fn real_text_comes_back_byte_for_byte() {
    let Some(data) = std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())).join("../../../shared/data/text").canonicalize().ok() else {
        eprintln!("skipping: ../shared/data/text is absent");
        return;
    };
    let mut docs: Vec<String> = Vec::new();
    let shakespeare = std::fs::read_to_string(data.join("tinyshakespeare.txt")).unwrap();
    docs.extend(shakespeare.split("\n\n").filter(|d| !d.trim().is_empty()).take(2000).map(str::to_string));
    let gz = |name: &str| {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut flate2::read::MultiGzDecoder::new(std::fs::File::open(data.join(name)).unwrap()), &mut s).unwrap();
        s
    };
    let zh = gz("zh_hongloumeng.txt.gz");
    docs.extend(zh.split("\n\n").filter(|d| !d.trim().is_empty()).take(500).map(str::to_string));
    for line in gz("c4_sample.jsonl.gz").lines().take(500) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        docs.push(v["text"].as_str().unwrap().to_string());
    }
    let docs: Vec<String> = docs.into_iter().map(|d| dsllm_core::schema::normalize_newlines(&d)).filter(|d| !d.trim().is_empty()).collect();
    let mut records = vec![info()];
    for (i, d) in docs.iter().enumerate() {
        records.push(conversion(&format!("https://real.example/{i}"), "2099-01-02T03:04:05Z", &format!("r{i}"), Some("eng"), d));
    }
    let got = ingest(&gzip_members(&records), "real.warc.wet.gz");
    assert!(got.reasons.is_empty(), "{:?}", got.reasons);
    assert_eq!(got.texts.len(), docs.len());
    for (a, b) in got.texts.iter().zip(&docs) {
        assert_eq!(a.as_bytes(), b.as_bytes());
    }
    eprintln!("{} real documents round-tripped byte for byte", docs.len());
}
