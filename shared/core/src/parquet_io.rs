//! Streaming Parquet IO with bounded memory: the one writer and the one reader of the project.
//!
//! Files are zstd-compressed, with row groups of about [`ROW_GROUP_BYTES`], written atomically
//! (see [`crate::atomic`]), and open unchanged in polars, pyarrow and duckdb.

use crate::atomic::AtomicFile;
use crate::error::{Error, IoContext, Location, Result};
use crate::schema::{document_schema, Document, DocumentBatchBuilder};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Target size of a row group (ARCHITECTURE.md: roughly 64-128 MB).
pub const ROW_GROUP_BYTES: usize = 96 << 20;
/// Rows per batch when reading.
pub const READ_BATCH_ROWS: usize = 4096;
/// Bytes of documents buffered before they are handed to the Parquet encoder.
const BUFFER_BYTES: usize = 8 << 20;

/// What a finished output file holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WrittenFile {
    pub path: PathBuf,
    pub rows: u64,
    pub bytes: u64,
}

/// Writes record batches of one schema to a Parquet file that appears only when finished.
pub struct ParquetSink {
    writer: ArrowWriter<File>,
    atomic: AtomicFile,
    rows: u64,
}

impl ParquetSink {
    pub fn create(path: impl AsRef<Path>, schema: SchemaRef) -> Result<Self> {
        Self::with_row_group_bytes(path, schema, ROW_GROUP_BYTES)
    }

    pub fn with_row_group_bytes(path: impl AsRef<Path>, schema: SchemaRef, row_group_bytes: usize) -> Result<Self> {
        let (atomic, file) = AtomicFile::create(path.as_ref())?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).expect("valid level")))
            .set_max_row_group_row_count(None)
            .set_max_row_group_bytes(Some(row_group_bytes.max(1)))
            .set_created_by(format!("dsllm {}", crate::VERSION))
            .build();
        let writer = ArrowWriter::try_new(file, schema, Some(props)).map_err(|e| Error::parquet(path.as_ref(), e))?;
        Ok(ParquetSink { writer, atomic, rows: 0 })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let path = self.atomic.final_path().to_path_buf();
        self.writer.write(batch).map_err(|e| Error::parquet(&path, e))?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Closes the file and renames it into place.
    pub fn finish(self) -> Result<WrittenFile> {
        let path = self.atomic.final_path().to_path_buf();
        self.writer.close().map_err(|e| Error::parquet(&path, e))?;
        let path = self.atomic.commit()?;
        let bytes = std::fs::metadata(&path).at(&path, "stat")?.len();
        Ok(WrittenFile { path, rows: self.rows, bytes })
    }
}

/// Writes [`Document`]s, buffering a few MB before encoding.
pub struct DocumentWriter {
    sink: ParquetSink,
    buffer: DocumentBatchBuilder,
}

impl DocumentWriter {
    pub fn create(path: impl AsRef<Path>) -> Result<Self> {
        Ok(DocumentWriter { sink: ParquetSink::create(path, document_schema())?, buffer: DocumentBatchBuilder::new() })
    }

    pub fn push(&mut self, doc: &Document) -> Result<()> {
        self.buffer.push(doc);
        if self.buffer.approx_bytes() >= BUFFER_BYTES {
            let batch = self.buffer.finish();
            self.sink.write(&batch)?;
        }
        Ok(())
    }

    pub fn rows(&self) -> u64 {
        self.sink.rows() + self.buffer.len() as u64
    }

    pub fn finish(mut self) -> Result<WrittenFile> {
        let batch = self.buffer.finish();
        self.sink.write(&batch)?;
        self.sink.finish()
    }
}

/// Streams the record batches of one Parquet file, optionally only some columns.
pub fn read_batches(
    path: impl AsRef<Path>,
    columns: Option<&[&str]>,
) -> Result<impl Iterator<Item = Result<RecordBatch>>> {
    let path = path.as_ref().to_path_buf();
    let file = File::open(&path).at(&path, "open")?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| Error::parquet(&path, e))?;
    let builder = match columns {
        Some(names) => {
            let schema = builder.parquet_schema();
            let mut indices = Vec::with_capacity(names.len());
            for name in names {
                let idx = (0..schema.num_columns())
                    .find(|&i| schema.column(i).path().parts().first().map(String::as_str) == Some(*name))
                    .ok_or_else(|| Error::input(&path, None, format!("no column `{name}`")))?;
                indices.push(idx);
            }
            let mask = ProjectionMask::leaves(schema, indices);
            builder.with_projection(mask)
        }
        None => builder,
    };
    let reader = builder.with_batch_size(READ_BATCH_ROWS).build().map_err(|e| Error::parquet(&path, e))?;
    let mut row = 0u64;
    Ok(reader.map(move |batch| {
        let batch = batch.map_err(|e| Error::input(&path, Some(Location::Row(row)), e.to_string()))?;
        row += batch.num_rows() as u64;
        Ok(batch)
    }))
}

/// Calls `visit(id, text, repeat)` for every row of a documents file, streaming. `repeat` is
/// the remix column when the file has one, else 1; `lang` is passed when present.
pub fn visit_documents(
    path: impl AsRef<Path>,
    mut visit: impl FnMut(&str, &str, u32, Option<&str>) -> Result<()>,
) -> Result<()> {
    use arrow::array::{Array, StringArray, UInt32Array};
    let path = path.as_ref();
    let schema = schema_of(path)?;
    let has = |name: &str| schema.field_with_name(name).is_ok();
    let mut columns = vec!["id", "text"];
    if has("repeat") {
        columns.push("repeat");
    }
    if has("lang") {
        columns.push("lang");
    }
    for batch in read_batches(path, Some(&columns))? {
        let batch = batch?;
        let string = |name: &str| {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                .ok_or_else(|| Error::input(path, None, format!("column `{name}` must be a string column")))
        };
        let (ids, texts) = (string("id")?, string("text")?);
        let langs = if has("lang") { Some(string("lang")?) } else { None };
        let repeats = match batch.column_by_name("repeat") {
            Some(c) => Some(
                c.as_any()
                    .downcast_ref::<UInt32Array>()
                    .ok_or_else(|| Error::input(path, None, "column `repeat` must be uint32"))?,
            ),
            None => None,
        };
        for row in 0..batch.num_rows() {
            let repeat = repeats.map_or(1, |r| if r.is_null(row) { 1 } else { r.value(row) });
            let lang = langs.and_then(|l| (!l.is_null(row)).then(|| l.value(row)));
            visit(ids.value(row), texts.value(row), repeat, lang)?;
        }
    }
    Ok(())
}

/// Row count from the file footer, without reading data.
pub fn row_count(path: impl AsRef<Path>) -> Result<u64> {
    let path = path.as_ref();
    let file = File::open(path).at(path, "open")?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| Error::parquet(path, e))?;
    Ok(builder.metadata().file_metadata().num_rows() as u64)
}

/// The Arrow schema stored in a Parquet file.
pub fn schema_of(path: impl AsRef<Path>) -> Result<SchemaRef> {
    let path = path.as_ref();
    let file = File::open(path).at(path, "open")?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| Error::parquet(path, e))?;
    Ok(builder.schema().clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::DocumentColumns;

    fn doc(i: usize) -> Document {
        Document {
            id: format!("{i:032x}"),
            dump: "CC-MAIN-TEST".into(),
            url: format!("https://example.org/{i}"),
            domain: "example.org".into(),
            date: "2024-05-01T00:00:00Z".into(),
            lang: (i % 2 == 0).then(|| "en".to_string()),
            lang_score: None,
            text: format!("document {i}\n").repeat(i % 7 + 1),
        }
    }

    #[test]
    fn documents_round_trip_through_parquet() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part-00000.parquet");
        let mut w = DocumentWriter::create(&path).unwrap();
        for i in 0..10_000 {
            w.push(&doc(i)).unwrap();
        }
        assert!(!path.exists(), "not visible before finish");
        let written = w.finish().unwrap();
        assert_eq!(written.rows, 10_000);
        assert_eq!(row_count(&path).unwrap(), 10_000);
        let mut i = 0;
        for batch in read_batches(&path, None).unwrap() {
            let batch = batch.unwrap();
            let cols = DocumentColumns::from_batch(&batch).unwrap();
            for r in 0..cols.len() {
                assert_eq!(cols.document(r), doc(i));
                i += 1;
            }
        }
        assert_eq!(i, 10_000);
    }

    #[test]
    fn projection_reads_only_named_columns_and_names_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.parquet");
        let mut w = DocumentWriter::create(&path).unwrap();
        w.push(&doc(1)).unwrap();
        w.finish().unwrap();
        let batch = read_batches(&path, Some(&["id", "text"])).unwrap().next().unwrap().unwrap();
        assert_eq!(batch.num_columns(), 2);
        let err = read_batches(&path, Some(&["nope"])).err().unwrap().to_string();
        assert!(err.contains("p.parquet") && err.contains("nope"), "{err}");
    }

    #[test]
    fn small_row_groups_are_cut_by_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rg.parquet");
        let mut sink = ParquetSink::with_row_group_bytes(&path, document_schema(), 1 << 10).unwrap();
        for chunk in 0..5 {
            let mut b = DocumentBatchBuilder::new();
            for i in 0..100 {
                b.push(&doc(chunk * 100 + i));
            }
            sink.write(&b.finish()).unwrap();
        }
        sink.finish().unwrap();
        let file = File::open(&path).unwrap();
        let meta = ParquetRecordBatchReaderBuilder::try_new(file).unwrap().metadata().clone();
        assert!(meta.num_row_groups() >= 5, "{}", meta.num_row_groups());
    }
}
