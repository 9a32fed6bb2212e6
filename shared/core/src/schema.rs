//! The documents table: one row a document, the contract between the text stages
//! (ARCHITECTURE.md, "Data contracts"). Later stages append columns and never drop rows silently.

use arrow::array::{Array, ArrayRef, Float32Array, Float32Builder, RecordBatch, StringArray, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use std::sync::{Arc, OnceLock};

/// One document as ingest produces it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Document {
    /// Stable id: see [`document_id`].
    pub id: String,
    /// Common Crawl dump, e.g. `CC-MAIN-2024-22`.
    pub dump: String,
    /// WARC-Target-URI.
    pub url: String,
    /// Host of the url, lowercased.
    pub domain: String,
    /// WARC-Date (ISO 8601).
    pub date: String,
    /// Language code (ISO 639-1 where one exists), when known.
    pub lang: Option<String>,
    /// Confidence of `lang` when a classifier set it; null when it came from a header.
    pub lang_score: Option<f32>,
    /// UTF-8 text, newlines normalized to `\n`.
    pub text: String,
}

/// Column names of the documents table, in order.
pub const DOCUMENT_COLUMNS: [&str; 8] = ["id", "dump", "url", "domain", "date", "lang", "lang_score", "text"];

/// The Arrow schema of the documents table.
pub fn document_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new("id", DataType::Utf8, false),
                Field::new("dump", DataType::Utf8, false),
                Field::new("url", DataType::Utf8, false),
                Field::new("domain", DataType::Utf8, false),
                Field::new("date", DataType::Utf8, false),
                Field::new("lang", DataType::Utf8, true),
                Field::new("lang_score", DataType::Float32, true),
                Field::new("text", DataType::Utf8, false),
            ]))
        })
        .clone()
}

/// The stable document id: xxh3-128 of dump and record id, as 32 hex digits.
/// The same record in the same dump always gets the same id, on any machine.
pub fn document_id(dump: &str, record_id: &str) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(dump.as_bytes());
    h.update(&[0]);
    h.update(record_id.as_bytes());
    format!("{:032x}", h.digest128())
}

/// Normalizes newlines to `\n` (CRLF and lone CR).
pub fn normalize_newlines(text: &str) -> String {
    if !text.contains('\r') {
        return text.to_string();
    }
    text.replace("\r\n", "\n").replace('\r', "\n")
}

/// Builds record batches of documents.
#[derive(Default)]
pub struct DocumentBatchBuilder {
    id: StringBuilder,
    dump: StringBuilder,
    url: StringBuilder,
    domain: StringBuilder,
    date: StringBuilder,
    lang: StringBuilder,
    lang_score: Float32Builder,
    text: StringBuilder,
    rows: usize,
    text_bytes: usize,
}

impl DocumentBatchBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, doc: &Document) {
        self.id.append_value(&doc.id);
        self.dump.append_value(&doc.dump);
        self.url.append_value(&doc.url);
        self.domain.append_value(&doc.domain);
        self.date.append_value(&doc.date);
        self.lang.append_option(doc.lang.as_deref());
        self.lang_score.append_option(doc.lang_score);
        self.text.append_value(&doc.text);
        self.rows += 1;
        self.text_bytes += doc.text.len() + doc.url.len() + 64;
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Approximate bytes held, to bound memory.
    pub fn approx_bytes(&self) -> usize {
        self.text_bytes
    }

    /// Takes the rows pushed so far as one batch and starts again empty.
    pub fn finish(&mut self) -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.id.finish()),
            Arc::new(self.dump.finish()),
            Arc::new(self.url.finish()),
            Arc::new(self.domain.finish()),
            Arc::new(self.date.finish()),
            Arc::new(self.lang.finish()),
            Arc::new(self.lang_score.finish()),
            Arc::new(self.text.finish()),
        ];
        self.rows = 0;
        self.text_bytes = 0;
        RecordBatch::try_new(document_schema(), columns).expect("columns match the documents schema")
    }
}

/// Typed access to the document columns of a batch (extra columns are ignored).
pub struct DocumentColumns<'a> {
    pub id: &'a StringArray,
    pub dump: &'a StringArray,
    pub url: &'a StringArray,
    pub domain: &'a StringArray,
    pub date: &'a StringArray,
    pub lang: &'a StringArray,
    pub lang_score: &'a Float32Array,
    pub text: &'a StringArray,
}

impl<'a> DocumentColumns<'a> {
    /// Fails with the name of the first missing or mistyped column.
    pub fn from_batch(batch: &'a RecordBatch) -> Result<Self, String> {
        fn col<'b, T: 'static>(batch: &'b RecordBatch, name: &str) -> Result<&'b T, String> {
            batch
                .column_by_name(name)
                .ok_or_else(|| format!("missing column `{name}` of the documents schema"))?
                .as_any()
                .downcast_ref::<T>()
                .ok_or_else(|| format!("column `{name}` has the wrong type"))
        }
        Ok(DocumentColumns {
            id: col(batch, "id")?,
            dump: col(batch, "dump")?,
            url: col(batch, "url")?,
            domain: col(batch, "domain")?,
            date: col(batch, "date")?,
            lang: col(batch, "lang")?,
            lang_score: col(batch, "lang_score")?,
            text: col(batch, "text")?,
        })
    }

    pub fn len(&self) -> usize {
        self.id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.id.is_empty()
    }

    pub fn document(&self, row: usize) -> Document {
        let opt = |a: &StringArray| (!a.is_null(row)).then(|| a.value(row).to_string());
        Document {
            id: self.id.value(row).to_string(),
            dump: self.dump.value(row).to_string(),
            url: self.url.value(row).to_string(),
            domain: self.domain.value(row).to_string(),
            date: self.date.value(row).to_string(),
            lang: opt(self.lang),
            lang_score: (!self.lang_score.is_null(row)).then(|| self.lang_score.value(row)),
            text: self.text.value(row).to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinguish_dumps() {
        let a = document_id("CC-MAIN-2024-22", "<urn:uuid:1>");
        assert_eq!(a, document_id("CC-MAIN-2024-22", "<urn:uuid:1>"));
        assert_ne!(a, document_id("CC-MAIN-2024-26", "<urn:uuid:1>"));
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn builder_round_trips_documents() {
        let doc = Document {
            id: "x".into(),
            dump: "d".into(),
            url: "http://a.b/".into(),
            domain: "a.b".into(),
            date: "2024-01-01T00:00:00Z".into(),
            lang: None,
            lang_score: Some(0.5),
            text: "héllo\nworld".into(),
        };
        let mut b = DocumentBatchBuilder::new();
        b.push(&doc);
        let batch = b.finish();
        let cols = DocumentColumns::from_batch(&batch).unwrap();
        assert_eq!(cols.document(0), doc);
        assert!(b.is_empty());
    }

    #[test]
    fn newlines_are_normalized() {
        assert_eq!(normalize_newlines("a\r\nb\rc\n"), "a\nb\nc\n");
    }
}
