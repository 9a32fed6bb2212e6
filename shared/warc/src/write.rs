//! Writing WARC/WET records as Common Crawl does: one gzip member per record.

use flate2::write::GzEncoder;
use flate2::Compression;
use std::io::{self, Write};

/// One record to write: its type, headers (besides WARC-Type and Content-Length) and content.
pub struct RecordOut<'a> {
    pub warc_type: &'a str,
    pub headers: Vec<(&'a str, String)>,
    pub content: &'a [u8],
}

/// Serializes a record (WARC/1.0, CRLF line endings, CRLF CRLF after the content).
pub fn record_bytes(record: &RecordOut) -> Vec<u8> {
    let mut out = Vec::with_capacity(record.content.len() + 512);
    out.extend_from_slice(b"WARC/1.0\r\n");
    out.extend_from_slice(format!("WARC-Type: {}\r\n", record.warc_type).as_bytes());
    for (name, value) in &record.headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", record.content.len()).as_bytes());
    out.extend_from_slice(record.content);
    out.extend_from_slice(b"\r\n\r\n");
    out
}

/// Appends `bytes` as one gzip member.
pub fn write_gzip_member(out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    let mut encoder = GzEncoder::new(out, Compression::new(6));
    encoder.write_all(bytes)?;
    encoder.finish()?;
    Ok(())
}

/// The `warcinfo` record that opens a Common Crawl WET file and names its dump.
pub fn warcinfo(dump: &str, filename: &str, date: &str, record_id: &str) -> Vec<u8> {
    let fields = format!(
        "Software-Info: dsllm ds-synth\r\nExtracted-Date: {date}\r\nrobots: checked via crawler-commons\r\nisPartOf: {dump}\r\noperator: dsllm\r\ndescription: synthetic crawl\r\n"
    );
    record_bytes(&RecordOut {
        warc_type: "warcinfo",
        headers: vec![
            ("WARC-Date", date.to_string()),
            ("WARC-Filename", filename.to_string()),
            ("WARC-Record-ID", format!("<urn:uuid:{record_id}>")),
            ("Content-Type", "application/warc-fields".to_string()),
        ],
        content: fields.as_bytes(),
    })
}

/// A WET `conversion` record (the extracted text of one page).
pub fn conversion(url: &str, date: &str, record_id: &str, lang: Option<&str>, text: &str) -> Vec<u8> {
    let mut headers = vec![
        ("WARC-Target-URI", url.to_string()),
        ("WARC-Date", date.to_string()),
        ("WARC-Record-ID", format!("<urn:uuid:{record_id}>")),
        ("WARC-Refers-To", format!("<urn:uuid:{record_id}-response>")),
        ("WARC-Block-Digest", format!("xxh3:{:032x}", xxhash_rust::xxh3::xxh3_128(text.as_bytes()))),
    ];
    if let Some(lang) = lang {
        headers.push(("WARC-Identified-Content-Language", lang.to_string()));
    }
    headers.push(("Content-Type", "text/plain".to_string()));
    record_bytes(&RecordOut { warc_type: "conversion", headers, content: text.as_bytes() })
}
