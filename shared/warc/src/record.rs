//! A WARC/WET record reader that survives damaged input.
//!
//! Common Crawl writes one gzip member per record; we decode member by member so that a corrupt
//! or truncated member costs only its own record, then resynchronize on the next gzip header.
//! Inside a decompressed stream (one member, a whole-file gzip, or a plain `.warc`), records are
//! framed by `Content-Length`; when the framing is wrong (a bad length, a malformed header) the
//! reader reports the damage and resynchronizes on the next `WARC/1.x` line, so the records that
//! follow are still read. Hand-written because no maintained Rust WARC crate recovers from
//! damage: the `warc` crate stops at the first bad record.

use flate2::bufread::GzDecoder;
use std::io::{self, BufRead, Read};

/// Largest header block accepted; longer ones are reported as malformed.
const MAX_HEADER_BYTES: usize = 64 << 10;
/// Largest record content accepted; larger records are reported and skipped.
pub const MAX_CONTENT_BYTES: usize = 512 << 20;
const GZIP_MAGIC: [u8; 3] = [0x1f, 0x8b, 0x08];
/// Decoded bytes of one gzip member held back until its CRC is checked.
const MEMBER_BUFFER_BYTES: usize = 64 << 20;

/// A well-formed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Byte offset in the file: of the gzip member for compressed files, of the record otherwise.
    pub offset: u64,
    /// `WARC/1.0` or `WARC/1.1`.
    pub version: String,
    /// Header fields in file order (names as written).
    pub headers: Vec<(String, String)>,
    pub content: Vec<u8>,
}

impl Record {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// Why a stretch of input could not be read as a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DamageKind {
    /// The gzip stream ends inside a member.
    TruncatedGzip,
    /// A gzip member does not decompress.
    CorruptGzip,
    /// Bytes that are neither a gzip member nor padding between members.
    GarbageBetweenMembers,
    /// No `WARC/x.y` version line, a header line without a colon, or an oversized header block.
    MalformedHeader,
    /// No parsable `Content-Length`.
    MissingContentLength,
    /// `Content-Length` disagrees with where the record really ends.
    ContentLengthMismatch,
    /// The (uncompressed) input ends inside a record.
    TruncatedRecord,
    /// Content above [`MAX_CONTENT_BYTES`].
    RecordTooLarge,
}

impl DamageKind {
    /// The reason string used in manifests and quarantine files.
    pub fn reason(self) -> &'static str {
        match self {
            DamageKind::TruncatedGzip => "truncated_gzip",
            DamageKind::CorruptGzip => "corrupt_gzip",
            DamageKind::GarbageBetweenMembers => "garbage_between_members",
            DamageKind::MalformedHeader => "malformed_header",
            DamageKind::MissingContentLength => "missing_content_length",
            DamageKind::ContentLengthMismatch => "content_length_mismatch",
            DamageKind::TruncatedRecord => "truncated_record",
            DamageKind::RecordTooLarge => "record_too_large",
        }
    }
}

/// A damaged stretch of input, with whatever could be salvaged from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub offset: u64,
    pub kind: DamageKind,
    pub detail: String,
    pub headers: Vec<(String, String)>,
    pub content: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Record(Record),
    Damage(Damage),
}

/// Reads every record of a WARC/WET stream (gzip, multi-member gzip or plain), calling
/// `on_event` for each record and each damaged stretch. Only an IO error of the underlying
/// reader (not bad content) ends it early with `Err`.
pub fn read_records(input: impl Read, mut on_event: impl FnMut(Event)) -> io::Result<()> {
    let mut source = RawSource::new(input);
    let head = source.peek(2)?;
    if !(head.len() >= 2 && head[..2] == GZIP_MAGIC[..2]) {
        let mut stream = PeekStream::new(&mut source, 0, false);
        parse_stream(&mut stream, &mut on_event);
        return stream.into_io_error().map_or(Ok(()), Err);
    }
    loop {
        let member_offset = source.position();
        let available = source.peek(3)?;
        if available.is_empty() {
            return Ok(());
        }
        if available.len() < 3 || available[..3] != GZIP_MAGIC {
            // Padding (zeros, newlines) between members is harmless; anything else is reported.
            let skipped = source.skip_to_gzip_magic()?;
            if skipped.iter().any(|b| !matches!(b, 0 | b'\r' | b'\n' | b' ')) {
                on_event(Event::Damage(Damage {
                    offset: member_offset,
                    kind: DamageKind::GarbageBetweenMembers,
                    detail: format!("{} bytes that are not a gzip member", skipped.len()),
                    headers: vec![],
                    content: skipped,
                }));
            }
            continue;
        }
        // Events wait until the member's CRC is checked, so a corrupt member never yields
        // records (up to a budget: a whole-file member is streamed past it).
        source.set_mark();
        let mut stream = PeekStream::new(GzDecoder::new(&mut source), member_offset, true);
        let mut pending: Vec<Event> = Vec::new();
        let mut pending_bytes = 0usize;
        let mut reported = false;
        parse_stream(&mut stream, &mut |event| {
            reported |= matches!(event, Event::Damage(_));
            pending_bytes += match &event {
                Event::Record(r) => r.content.len(),
                Event::Damage(d) => d.content.len(),
            };
            pending.push(event);
            if pending_bytes > MEMBER_BUFFER_BYTES {
                pending.drain(..).for_each(&mut on_event);
                pending_bytes = 0;
            }
        });
        let error = stream.into_io_error();
        let corrupt = error.as_ref().is_some_and(|e| e.kind() != io::ErrorKind::UnexpectedEof);
        let mut damage_reported = reported;
        for event in pending {
            match event {
                Event::Record(r) if corrupt => {
                    damage_reported = true;
                    on_event(Event::Damage(Damage {
                        offset: r.offset,
                        kind: DamageKind::CorruptGzip,
                        detail: "record decoded from a gzip member that fails its integrity check".to_string(),
                        headers: r.headers,
                        content: r.content,
                    }))
                }
                event => on_event(event),
            }
        }
        if let Some(err) = error {
            let kind = if corrupt { DamageKind::CorruptGzip } else { DamageKind::TruncatedGzip };
            // Report the break itself unless a damaged record already carries it.
            if !damage_reported {
                on_event(Event::Damage(Damage {
                    offset: member_offset,
                    kind,
                    detail: format!("gzip member: {err}"),
                    headers: vec![],
                    content: vec![],
                }));
            }
            // Resynchronize on the next member header after this member's own start: bad
            // deflate data may have run on into the next member (and even to the end of the
            // file, which looks like truncation).
            if !source.rewind_to_mark() && source.position() > member_offset {
                source.skip_to_gzip_magic()?;
                continue;
            }
            source.consume(1);
            source.skip_to_gzip_magic()?;
        }
    }
}

/// Parses records from one decompressed stream until its end.
fn parse_stream<R: Read>(s: &mut PeekStream<R>, on_event: &mut impl FnMut(Event)) {
    loop {
        s.skip_blank_lines();
        let offset = s.offset();
        if s.at_end() {
            return;
        }
        // The header block ends at the first empty line.
        let Some((header_len, body_start)) = s.find_header_end() else {
            let kind = if s.at_end_after_available() {
                if s.error.is_some() { truncated_kind(s) } else { DamageKind::TruncatedRecord }
            } else {
                DamageKind::MalformedHeader
            };
            let salvaged = s.take_until_next_record(1);
            let (headers, _) = parse_headers(&salvaged).unwrap_or_default();
            on_event(Event::Damage(Damage {
                offset,
                kind,
                detail: if kind == DamageKind::MalformedHeader {
                    format!("no end of header block within {MAX_HEADER_BYTES} bytes")
                } else {
                    "input ends inside a record header".to_string()
                },
                headers,
                content: salvaged,
            }));
            continue;
        };
        let header_bytes = s.available()[..header_len].to_vec();
        let (headers, version) = match parse_headers(&header_bytes) {
            Ok(parsed) => parsed,
            Err(detail) => {
                let salvaged = s.take_until_next_record(1);
                on_event(Event::Damage(Damage { offset, kind: DamageKind::MalformedHeader, detail, headers: vec![], content: salvaged }));
                continue;
            }
        };
        let declared = header(&headers, "Content-Length").and_then(|v| v.trim().parse::<usize>().ok());
        let Some(declared) = declared else {
            s.consume(body_start);
            let content = s.take_until_next_record(0);
            on_event(Event::Damage(Damage {
                offset,
                kind: DamageKind::MissingContentLength,
                detail: "no parsable Content-Length header".to_string(),
                headers,
                content,
            }));
            continue;
        };
        if declared > MAX_CONTENT_BYTES {
            s.consume(body_start);
            let skipped = s.take_until_next_record(0);
            on_event(Event::Damage(Damage {
                offset,
                kind: DamageKind::RecordTooLarge,
                detail: format!("Content-Length {declared} above the {MAX_CONTENT_BYTES}-byte limit"),
                headers,
                content: skipped[..skipped.len().min(1 << 16)].to_vec(),
            }));
            continue;
        }
        s.consume(body_start);
        // Need the content plus a look at what follows to check the framing.
        s.fill(declared + 16);
        let available = s.available().len();
        if available >= declared && follows_record_boundary(&s.available()[declared..], s.at_end_after_available()) {
            let content = s.available()[..declared].to_vec();
            s.consume(declared);
            on_event(Event::Record(Record { offset, version, headers, content }));
            continue;
        }
        // The framing is wrong or the input ends early: the record really ends at the next record start.
        let input_cut = available < declared && s.at_end_after_available();
        let stream_error = s.error.is_some();
        let content = s.take_until_next_record(0);
        let content = trim_trailing_newlines(content);
        let (kind, detail) = if input_cut && stream_error {
            (truncated_kind(s), format!("Content-Length {declared} but the stream broke after {} bytes", content.len()))
        } else if input_cut && !s.is_member() {
            (DamageKind::TruncatedRecord, format!("Content-Length {declared} but the input ends after {} bytes", content.len()))
        } else {
            (DamageKind::ContentLengthMismatch, format!("Content-Length {declared} but the record has {} bytes", content.len()))
        };
        on_event(Event::Damage(Damage { offset, kind, detail, headers, content }));
    }
}

fn truncated_kind<R: Read>(s: &PeekStream<R>) -> DamageKind {
    match &s.error {
        Some(e) if e.kind() != io::ErrorKind::UnexpectedEof => DamageKind::CorruptGzip,
        Some(_) if s.is_member() => DamageKind::TruncatedGzip,
        _ => DamageKind::TruncatedRecord,
    }
}

/// After a record's content: blank lines, then the end of the stream or the next record.
fn follows_record_boundary(rest: &[u8], stream_ends_after: bool) -> bool {
    let blank = rest.iter().take_while(|b| matches!(b, b'\r' | b'\n')).count();
    let after = &rest[blank..];
    if after.is_empty() {
        return stream_ends_after;
    }
    // The separator is two newlines; the next record starts with its version line.
    blank >= 2 && (after.starts_with(b"WARC/") || (after.len() < 5 && b"WARC/".starts_with(after)))
}

fn trim_trailing_newlines(mut content: Vec<u8>) -> Vec<u8> {
    while matches!(content.last(), Some(b'\r' | b'\n')) {
        content.pop();
    }
    content
}

/// Parses a header block: the version line then `Name: value` lines (continuations folded).
fn parse_headers(block: &[u8]) -> Result<(Vec<(String, String)>, String), String> {
    let text = String::from_utf8_lossy(block);
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let version = lines.next().unwrap_or_default().trim().to_string();
    if !version.starts_with("WARC/") {
        let shown: String = version.chars().take(40).collect();
        return Err(format!("expected a WARC/1.x version line, found `{shown}`"));
    }
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            match headers.last_mut() {
                Some((_, value)) => {
                    value.push(' ');
                    value.push_str(line.trim());
                }
                None => return Err("header continuation line before any header".to_string()),
            }
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            let shown: String = line.chars().take(40).collect();
            return Err(format!("header line without a colon: `{shown}`"));
        };
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    Ok((headers, version))
}

/// A decompressed stream with look-ahead and push-back, so framing errors can be repaired.
struct PeekStream<R: Read> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
    eof: bool,
    error: Option<io::Error>,
    /// Offset reported for records: the member's offset (gzip) or the running position (plain).
    base_offset: u64,
    consumed: u64,
    member: bool,
}

impl<R: Read> PeekStream<R> {
    fn new(inner: R, base_offset: u64, member: bool) -> Self {
        PeekStream { inner, buf: Vec::new(), start: 0, eof: false, error: None, base_offset, consumed: 0, member }
    }

    fn is_member(&self) -> bool {
        self.member
    }

    fn offset(&self) -> u64 {
        if self.member { self.base_offset } else { self.consumed }
    }

    fn available(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Reads until `n` bytes are available or the stream ends.
    fn fill(&mut self, n: usize) {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        while self.available().len() < n && !self.eof {
            let want = (n - self.available().len()).max(64 << 10);
            let old = self.buf.len();
            self.buf.resize(old + want, 0);
            match self.inner.read(&mut self.buf[old..]) {
                Ok(0) => {
                    self.buf.truncate(old);
                    self.eof = true;
                }
                Ok(k) => self.buf.truncate(old + k),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => self.buf.truncate(old),
                Err(e) => {
                    self.buf.truncate(old);
                    self.eof = true;
                    self.error = Some(e);
                }
            }
        }
    }

    fn consume(&mut self, n: usize) {
        let n = n.min(self.available().len());
        self.start += n;
        self.consumed += n as u64;
    }

    fn at_end(&mut self) -> bool {
        self.fill(1);
        self.available().is_empty()
    }

    fn at_end_after_available(&self) -> bool {
        self.eof
    }

    fn skip_blank_lines(&mut self) {
        loop {
            self.fill(1);
            match self.available().first() {
                Some(b'\r' | b'\n') => self.consume(1),
                _ => return,
            }
        }
    }

    /// Finds the empty line ending the header block: (header length, body start).
    fn find_header_end(&mut self) -> Option<(usize, usize)> {
        loop {
            let hay = self.available();
            if let Some(found) = find_blank_line(&hay[..hay.len().min(MAX_HEADER_BYTES)]) {
                return Some(found);
            }
            let searched = hay.len();
            if searched >= MAX_HEADER_BYTES || self.eof {
                return None;
            }
            self.fill(searched + (16 << 10));
        }
    }

    /// Takes bytes up to the next line that starts a record (`WARC/1.`), searching from `from`.
    fn take_until_next_record(&mut self, from: usize) -> Vec<u8> {
        let mut searched = from;
        loop {
            let hay = self.available();
            if let Some(i) = find_record_start(hay, searched) {
                let taken = hay[..i].to_vec();
                self.consume(i);
                return taken;
            }
            if self.eof || hay.len() > MAX_CONTENT_BYTES {
                let taken = hay.to_vec();
                let n = taken.len();
                self.consume(n);
                return taken;
            }
            searched = hay.len().saturating_sub(8).max(from);
            let want = hay.len() + (1 << 20);
            self.fill(want);
        }
    }

    fn into_io_error(self) -> Option<io::Error> {
        self.error
    }
}

/// Position of the first empty line: (end of the header block, start of the body).
fn find_blank_line(hay: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while let Some(pos) = hay[i..].iter().position(|&b| b == b'\n') {
        let nl = i + pos;
        let rest = &hay[nl + 1..];
        if rest.starts_with(b"\n") {
            return Some((nl, nl + 2));
        }
        if rest.starts_with(b"\r\n") {
            return Some((nl, nl + 3));
        }
        i = nl + 1;
    }
    None
}

/// Start of the next line beginning with `WARC/1.` at or after `from`, never at 0 (the
/// current record's own start).
fn find_record_start(hay: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < hay.len() {
        let at_line_start = i > 0 && hay[i - 1] == b'\n';
        if at_line_start && hay[i..].starts_with(b"WARC/1.") {
            return Some(i);
        }
        match hay[i..].iter().position(|&b| b == b'\n') {
            Some(p) => i += p + 1,
            None => return None,
        }
    }
    None
}

/// The compressed side: a buffered reader that can look further ahead than one refill, knows
/// its position in the file, and can go back to a marked member start (to resynchronize after
/// a corrupt member whose bad deflate data ran on into the next member).
struct RawSource<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
    /// File position of `buf[0]`.
    origin: u64,
    /// Position kept in the buffer for [`RawSource::rewind`], if any.
    mark: Option<u64>,
}

/// Bytes kept for rewinding; a longer member is not rewound.
const REWIND_LIMIT: usize = 64 << 20;

impl<R: Read> RawSource<R> {
    fn new(inner: R) -> Self {
        RawSource { inner, buf: Vec::new(), start: 0, origin: 0, mark: None }
    }

    fn position(&self) -> u64 {
        self.origin + self.start as u64
    }

    fn set_mark(&mut self) {
        self.mark = Some(self.position());
    }

    /// Goes back to the mark if its bytes are still held.
    fn rewind_to_mark(&mut self) -> bool {
        match self.mark.take() {
            Some(m) if m >= self.origin => {
                self.start = (m - self.origin) as usize;
                true
            }
            _ => false,
        }
    }

    /// Up to `n` bytes ahead without consuming them (fewer only at the end of input).
    fn peek(&mut self, n: usize) -> io::Result<&[u8]> {
        let keep_from = match self.mark {
            Some(m) if m >= self.origin && self.start - ((m - self.origin) as usize) < REWIND_LIMIT => (m - self.origin) as usize,
            _ => {
                self.mark = None;
                self.start
            }
        };
        if keep_from > 0 && self.buf.len() - self.start < n {
            self.buf.drain(..keep_from);
            self.start -= keep_from;
            self.origin += keep_from as u64;
        }
        while self.buf.len() - self.start < n {
            let old = self.buf.len();
            self.buf.resize(old + (n - (old - self.start)).max(1 << 16), 0);
            match self.inner.read(&mut self.buf[old..]) {
                Ok(0) => {
                    self.buf.truncate(old);
                    break;
                }
                Ok(k) => self.buf.truncate(old + k),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => self.buf.truncate(old),
                Err(e) => {
                    self.buf.truncate(old);
                    return Err(e);
                }
            }
        }
        let end = (self.start + n).min(self.buf.len());
        Ok(&self.buf[self.start..end])
    }

    /// Skips to the next gzip member header (or the end), returning the skipped bytes.
    fn skip_to_gzip_magic(&mut self) -> io::Result<Vec<u8>> {
        let mut skipped = Vec::new();
        loop {
            let window = self.peek(1 << 16)?.to_vec();
            if window.len() < GZIP_MAGIC.len() {
                let n = window.len();
                skipped.extend_from_slice(&window);
                self.consume(n);
                return Ok(skipped);
            }
            if let Some(i) = window.windows(3).position(|w| w == GZIP_MAGIC) {
                skipped.extend_from_slice(&window[..i]);
                self.consume(i);
                return Ok(skipped);
            }
            // Keep the last two bytes: the magic may straddle the window.
            let n = window.len() - 2;
            if skipped.len() < (1 << 20) {
                skipped.extend_from_slice(&window[..n]);
            }
            self.consume(n);
        }
    }
}

impl<R: Read> Read for RawSource<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: Read> BufRead for RawSource<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.start >= self.buf.len() {
            self.peek(1 << 16)?;
        }
        Ok(&self.buf[self.start..])
    }

    fn consume(&mut self, n: usize) {
        self.start += n.min(self.buf.len() - self.start);
    }
}
