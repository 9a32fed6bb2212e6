//! The binary record files of the work folder and the index: little-endian fields in one zstd
//! stream, written atomically (core's [`AtomicFile`]). Small, fast, and read strictly in order,
//! which is all a merge of sorted runs needs.

use dsllm_core::atomic::AtomicFile;
use dsllm_core::error::{Error, IoContext, Result};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

// Level 1: most of these bytes (signatures, hashes) are random and barely compress; level 3
// costs twice the time for a few percent.
const ZSTD_LEVEL: i32 = 1;

/// Writes fields into a compressed file that appears at its path only on [`RecordWriter::finish`].
pub struct RecordWriter {
    // Buffered in front of the encoder too: each write to the encoder is a zstd stream call,
    // too costly for the 4-byte fields written here.
    encoder: BufWriter<zstd::stream::write::Encoder<'static, BufWriter<File>>>,
    atomic: AtomicFile,
}

impl RecordWriter {
    pub fn create(path: impl AsRef<Path>) -> Result<Self> {
        let (atomic, file) = AtomicFile::create(path.as_ref())?;
        let encoder = zstd::stream::write::Encoder::new(BufWriter::with_capacity(1 << 16, file), ZSTD_LEVEL)
            .at(path.as_ref(), "start zstd stream")?;
        Ok(RecordWriter { encoder: BufWriter::with_capacity(1 << 16, encoder), atomic })
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.encoder.write_all(bytes).at(self.atomic.final_path(), "write")
    }

    pub fn u8(&mut self, v: u8) -> Result<()> {
        self.put(&[v])
    }
    pub fn u32(&mut self, v: u32) -> Result<()> {
        self.put(&v.to_le_bytes())
    }
    pub fn u64(&mut self, v: u64) -> Result<()> {
        self.put(&v.to_le_bytes())
    }
    pub fn u128(&mut self, v: u128) -> Result<()> {
        self.put(&v.to_le_bytes())
    }
    pub fn f32(&mut self, v: f32) -> Result<()> {
        self.put(&v.to_le_bytes())
    }
    pub fn str(&mut self, s: &str) -> Result<()> {
        self.u32(s.len() as u32)?;
        self.put(s.as_bytes())
    }
    pub fn u32s(&mut self, values: &[u32]) -> Result<()> {
        let mut bytes = Vec::with_capacity(values.len() * 4);
        for v in values {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        self.put(&bytes)
    }

    pub fn finish(self) -> Result<PathBuf> {
        let path = self.atomic.final_path().to_path_buf();
        let encoder = self.encoder.into_inner().map_err(|e| e.into_error()).at(&path, "write")?;
        let mut inner = encoder.finish().at(&path, "finish zstd stream")?;
        inner.flush().at(&path, "flush")?;
        drop(inner);
        self.atomic.commit()
    }
}

/// Reads the fields of a [`RecordWriter`] file in order.
pub struct RecordReader {
    // Buffered after the decoder: fields are read a few bytes at a time.
    decoder: BufReader<zstd::stream::read::Decoder<'static, BufReader<File>>>,
    path: PathBuf,
}

impl RecordReader {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).at(&path, "open")?;
        let decoder = zstd::stream::read::Decoder::new(file).at(&path, "start zstd stream")?;
        Ok(RecordReader { decoder: BufReader::with_capacity(1 << 16, decoder), path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut buf = [0u8; N];
        self.decoder.read_exact(&mut buf).at(&self.path, "read record (file truncated or corrupt?)")?;
        Ok(buf)
    }

    /// The next u64, or None at a clean end of the file: how sorted runs are streamed.
    pub fn next_u64(&mut self) -> Result<Option<u64>> {
        let mut buf = [0u8; 8];
        let mut filled = 0;
        while filled < 8 {
            let n = self.decoder.read(&mut buf[filled..]).at(&self.path, "read")?;
            if n == 0 {
                if filled == 0 {
                    return Ok(None);
                }
                return Err(Error::input(&self.path, None, "truncated record"));
            }
            filled += n;
        }
        Ok(Some(u64::from_le_bytes(buf)))
    }

    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take::<1>()?[0])
    }
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take()?))
    }
    pub fn u128(&mut self) -> Result<u128> {
        Ok(u128::from_le_bytes(self.take()?))
    }
    pub fn f32(&mut self) -> Result<f32> {
        Ok(f32::from_le_bytes(self.take()?))
    }
    pub fn str(&mut self) -> Result<String> {
        let len = self.u32()? as usize;
        let mut bytes = vec![0u8; len];
        self.decoder.read_exact(&mut bytes).at(&self.path, "read string")?;
        String::from_utf8(bytes).map_err(|_| Error::input(&self.path, None, "invalid UTF-8 in record"))
    }
    pub fn u32s(&mut self, out: &mut [u32]) -> Result<()> {
        let mut bytes = vec![0u8; out.len() * 4];
        self.decoder.read_exact(&mut bytes).at(&self.path, "read values")?;
        for (slot, chunk) in out.iter_mut().zip(bytes.chunks_exact(4)) {
            *slot = u32::from_le_bytes(chunk.try_into().expect("4 bytes"));
        }
        Ok(())
    }
}

/// A sorted run of (band hash, document number) pairs.
pub fn write_band_run(path: &Path, entries: &[(u64, u32)]) -> Result<()> {
    let mut w = RecordWriter::create(path)?;
    w.u64(entries.len() as u64)?;
    for &(hash, doc) in entries {
        w.u64(hash)?;
        w.u32(doc)?;
    }
    w.finish()?;
    Ok(())
}

/// Streams a run written by [`write_band_run`].
pub struct BandRunReader {
    reader: RecordReader,
    remaining: u64,
}

impl BandRunReader {
    pub fn open(path: &Path) -> Result<Self> {
        let mut reader = RecordReader::open(path)?;
        let remaining = reader.u64()?;
        Ok(BandRunReader { reader, remaining })
    }

    pub fn len(&self) -> u64 {
        self.remaining
    }

    pub fn is_empty(&self) -> bool {
        self.remaining == 0
    }

    pub fn next_entry(&mut self) -> Result<Option<(u64, u32)>> {
        if self.remaining == 0 {
            return Ok(None);
        }
        self.remaining -= 1;
        Ok(Some((self.reader.u64()?, self.reader.u32()?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_truncation_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.zst");
        let mut w = RecordWriter::create(&path).unwrap();
        w.str("héllo").unwrap();
        w.u128(u128::MAX - 5).unwrap();
        w.u32s(&[1, 2, 3]).unwrap();
        w.f32(0.5).unwrap();
        w.finish().unwrap();
        let mut r = RecordReader::open(&path).unwrap();
        assert_eq!(r.str().unwrap(), "héllo");
        assert_eq!(r.u128().unwrap(), u128::MAX - 5);
        let mut v = [0u32; 3];
        r.u32s(&mut v).unwrap();
        assert_eq!(v, [1, 2, 3]);
        assert_eq!(r.f32().unwrap(), 0.5);
        assert!(r.u32().is_err());

        let run = dir.path().join("band.zst");
        write_band_run(&run, &[(1, 7), (5, 2)]).unwrap();
        let mut rr = BandRunReader::open(&run).unwrap();
        assert_eq!(rr.next_entry().unwrap(), Some((1, 7)));
        assert_eq!(rr.next_entry().unwrap(), Some((5, 2)));
        assert_eq!(rr.next_entry().unwrap(), None);
    }
}
