//! Common Crawl ingest: WARC/WET records into the documents table.
//!
//! - [`record`]: the record reader that survives damaged input.
//! - [`html`]: HTTP responses to main text.
//! - [`ingest`]: the `ds-ingest` stage: files in parallel, documents and quarantine out.
//! - [`write`]: writing WET/WARC records (ds-synth and tests produce real files with it).

pub mod html;
pub mod ingest;
pub mod record;
pub mod write;
