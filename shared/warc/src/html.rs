//! HTTP responses from WARC files turned into main text.

use std::borrow::Cow;

use dom_smoothie::{Config, Readability, TextMode};

/// An HTTP response split into what ingest needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse<'a> {
    pub status: u16,
    /// Media type, lowercased, without parameters (e.g. `text/html`).
    pub media_type: String,
    pub charset: Option<String>,
    /// `Transfer-Encoding` and `Content-Encoding`, lowercased, as written (Common Crawl stores
    /// payloads decoded and renames these to `X-Crawler-…`; other crawlers' WARCs keep them).
    pub transfer_encoding: Option<String>,
    pub content_encoding: Option<String>,
    pub body: &'a [u8],
}

/// Parses the status line and headers of a WARC `response` record's content.
pub fn parse_http_response(content: &[u8]) -> Option<HttpResponse<'_>> {
    let split = content.windows(4).position(|w| w == b"\r\n\r\n").map(|i| (i, i + 4)).or_else(|| {
        content.windows(2).position(|w| w == b"\n\n").map(|i| (i, i + 2))
    })?;
    let head = String::from_utf8_lossy(&content[..split.0]);
    let mut lines = head.lines();
    let status_line = lines.next()?;
    if !status_line.starts_with("HTTP/") {
        return None;
    }
    let status = status_line.split_whitespace().nth(1)?.parse().ok()?;
    let mut media_type = String::new();
    let mut charset = None;
    let (mut transfer_encoding, mut content_encoding) = (None, None);
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim();
            if name.eq_ignore_ascii_case("transfer-encoding") {
                transfer_encoding = Some(value.trim().to_ascii_lowercase());
            } else if name.eq_ignore_ascii_case("content-encoding") {
                content_encoding = Some(value.trim().to_ascii_lowercase());
            }
            if name.eq_ignore_ascii_case("content-type") {
                let mut parts = value.split(';');
                media_type = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
                for param in parts {
                    if let Some((k, v)) = param.split_once('=') {
                        if k.trim().eq_ignore_ascii_case("charset") {
                            charset = Some(v.trim().trim_matches('"').to_string());
                        }
                    }
                }
            }
        }
    }
    Some(HttpResponse { status, media_type, charset, transfer_encoding, content_encoding, body: &content[split.1..] })
}

/// Largest decoded payload accepted (a small compressed body can expand without bound).
pub const MAX_DECODED_BYTES: usize = 64 << 20;

impl HttpResponse<'_> {
    /// The payload with its transfer coding (chunked) and content codings (gzip, deflate, br,
    /// zstd; several in the order applied) undone, as a browser would read it. A body that
    /// does not decode as its headers say but looks like text is taken as already decoded
    /// (some WARC writers store the decoded payload and keep the header, as warcio also
    /// allows); otherwise the error says which coding failed.
    pub fn decoded_body(&self) -> Result<Cow<'_, [u8]>, String> {
        let mut body = Cow::Borrowed(self.body);
        if self.transfer_encoding.as_deref().is_some_and(|t| t.split(',').any(|c| c.trim() == "chunked")) {
            match dechunk(&body) {
                Ok(joined) => body = Cow::Owned(joined),
                // Already joined but still labelled: whatever does not start like a chunk passes.
                Err(_) if !starts_like_chunk(&body) => {}
                Err(e) => return Err(format!("Transfer-Encoding chunked: {e}")),
            }
        }
        let codings: Vec<&str> = self.content_encoding.as_deref().unwrap_or("").split(',').map(str::trim).filter(|c| !c.is_empty()).collect();
        // Codings are listed in the order they were applied: undo them last to first.
        for coding in codings.iter().rev() {
            match decode_coding(coding, &body) {
                Ok(Some(decoded)) => body = Cow::Owned(decoded),
                Ok(None) => {}
                Err(_) if looks_like_text(&body) => break,
                Err(e) => return Err(format!("Content-Encoding {coding}: {e}")),
            }
        }
        Ok(body)
    }
}

/// One content coding undone; `None` for identity.
fn decode_coding(coding: &str, body: &[u8]) -> Result<Option<Vec<u8>>, String> {
    use std::io::Read;
    // A stream cut short (a truncated record) keeps what it decoded, as a browser shows it.
    let read_all = |reader: &mut dyn Read| -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        match reader.take(MAX_DECODED_BYTES as u64 + 1).read_to_end(&mut out) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => {}
            Err(e) => return Err(e.to_string()),
        }
        if out.len() > MAX_DECODED_BYTES {
            return Err(format!("decodes to more than {MAX_DECODED_BYTES} bytes"));
        }
        Ok(out)
    };
    match coding {
        "identity" | "none" => Ok(None),
        // Several members are allowed; bytes after the last one (padding, a CRLF) are ignored.
        "gzip" | "x-gzip" => read_all(&mut flate2::read::MultiGzDecoder::new(body)).or_else(|_| read_all(&mut flate2::read::GzDecoder::new(body))).map(Some),
        // `deflate` is zlib-wrapped by the standard, raw deflate by some servers.
        "deflate" => read_all(&mut flate2::read::ZlibDecoder::new(body)).or_else(|_| read_all(&mut flate2::read::DeflateDecoder::new(body))).map(Some),
        "br" => read_all(&mut brotli_decompressor::Decompressor::new(body, 4096)).map(Some),
        "zstd" => {
            let mut decoder = zstd::stream::read::Decoder::new(body).map_err(|e| e.to_string())?;
            read_all(&mut decoder).map(Some)
        }
        other => Err(format!("unknown coding `{other}`")),
    }
}

/// Joins a chunked body's chunks (extensions after `;` and trailer fields ignored).
fn dechunk(body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(body.len());
    let mut at = 0;
    loop {
        let line_end = body[at..].iter().position(|&b| b == b'\n').map(|i| at + i).ok_or_else(|| format!("no chunk-size line at byte {at}"))?;
        let line = std::str::from_utf8(&body[at..line_end]).map_err(|_| format!("chunk-size line at byte {at} is not text"))?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| format!("bad chunk size `{}` at byte {at}", size_text.chars().take(20).collect::<String>()))?;
        at = line_end + 1;
        if size == 0 {
            return Ok(out);
        }
        if size > body.len() - at {
            return Err(format!("chunk of {size} bytes at byte {at} runs past the body's end ({} bytes)", body.len()));
        }
        if out.len() + size > MAX_DECODED_BYTES {
            return Err(format!("decodes to more than {MAX_DECODED_BYTES} bytes"));
        }
        out.extend_from_slice(&body[at..at + size]);
        at += size;
        // Each chunk ends with CRLF (a bare LF is tolerated); a missing one at the very end too.
        if body[at..].starts_with(b"\r\n") {
            at += 2;
        } else if body[at..].starts_with(b"\n") {
            at += 1;
        } else if at == body.len() {
            return Ok(out);
        } else {
            return Err(format!("chunk data at byte {} not followed by a line end", at - size));
        }
    }
}

/// Whether a body starts with what a chunk-size line looks like (hex digits, then `;`, CR or LF).
fn starts_like_chunk(body: &[u8]) -> bool {
    let digits = body.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    digits > 0 && matches!(body.get(digits), Some(b';' | b'\r' | b'\n' | b' '))
}

/// Text rather than compressed bytes: no NUL and few control bytes in the first KiB.
fn looks_like_text(body: &[u8]) -> bool {
    let head = &body[..body.len().min(1024)];
    !head.contains(&0) && head.iter().filter(|b| b.is_ascii_control() && !b.is_ascii_whitespace()).count() * 20 <= head.len()
}

pub fn is_html(media_type: &str) -> bool {
    matches!(media_type, "text/html" | "application/xhtml+xml") || media_type.is_empty()
}

/// Decodes an HTML body, choosing its encoding as a browser would, except that bytes which are
/// valid UTF-8 (with non-ASCII characters) are read as UTF-8 whatever the page declares (pages
/// in UTF-8 still labelled ISO-8859-1 are common; legacy text is practically never valid
/// multi-byte UTF-8). Otherwise: a byte-order mark, else the HTTP `charset`, else a `<meta>`
/// charset in the first 1024 bytes, else a guess from the bytes (chardetng, Firefox's detector;
/// `tld` is the host's last label, which it takes as a hint: `cn`, `jp`...). Mostly-UTF-8 bytes
/// with a few invalid sequences (a stray byte, a page cut mid-character) stay UTF-8 with errors
/// rather than being guessed as a single-byte encoding, which decodes anything into mojibake; a
/// declared charset the bytes are invalid in gives way to a guess that decodes them cleanly.
/// Returns the text and whether bytes were invalid (replaced by U+FFFD).
pub fn decode_body(body: &[u8], charset: Option<&str>, tld: Option<&str>) -> (String, bool) {
    if let Some((encoding, bom_len)) = encoding_rs::Encoding::for_bom(body) {
        let (text, had_errors) = encoding.decode_without_bom_handling(&body[bom_len..]);
        return (text.into_owned(), had_errors);
    }
    let (valid_multibyte, invalid) = utf8_census(body);
    if invalid == 0 {
        // ASCII or valid UTF-8.
        return (String::from_utf8(body.to_vec()).expect("checked valid"), false);
    }
    let label = |c: &str| encoding_rs::Encoding::for_label(c.trim().as_bytes()).map(html_standard_override);
    let declared = charset.and_then(label).or_else(|| meta_charset(body).and_then(|c| label(&c)));
    let mostly_utf8 = valid_multibyte >= 4 * invalid;
    let guess = || {
        let mut detector = chardetng::EncodingDetector::new();
        detector.feed(&detection_sample(body), true);
        detector.guess(tld.map(str::as_bytes), true)
    };
    let encoding = match declared {
        Some(encoding) => encoding,
        None if mostly_utf8 => encoding_rs::UTF_8,
        None => guess(),
    };
    let (text, _, had_errors) = encoding.decode(body);
    if had_errors && !mostly_utf8 {
        let guessed = guess();
        if guessed != encoding {
            let (retry, _, retry_errors) = guessed.decode(body);
            if !retry_errors {
                return (retry.into_owned(), false);
            }
        }
    }
    (text.into_owned(), had_errors)
}

/// The HTML standard's substitutions for labels found in a page: a page cannot be UTF-16 and
/// ASCII enough to say so (UTF-8), and `x-user-defined` means windows-1252.
fn html_standard_override(encoding: &'static encoding_rs::Encoding) -> &'static encoding_rs::Encoding {
    if encoding == encoding_rs::UTF_16LE || encoding == encoding_rs::UTF_16BE {
        encoding_rs::UTF_8
    } else if encoding == encoding_rs::X_USER_DEFINED {
        encoding_rs::WINDOWS_1252
    } else {
        encoding
    }
}

/// Valid non-ASCII UTF-8 characters and invalid sequences in `body`.
fn utf8_census(body: &[u8]) -> (usize, usize) {
    let (mut valid, mut invalid) = (0, 0);
    for chunk in body.utf8_chunks() {
        valid += chunk.valid().chars().filter(|c| !c.is_ascii()).count();
        invalid += usize::from(!chunk.invalid().is_empty());
    }
    (valid, invalid)
}

/// What the detector needs of a page: its runs of non-ASCII bytes with a little ASCII context on
/// each side (word boundaries for the Latin encodings), up to 32 KiB. Markup, scripts and styles
/// are ASCII and tell it nothing; fed whole pages it took ~19% of ingest's time on bench-ingest's
/// WARC pages for the ~4% that declare no encoding.
fn detection_sample(body: &[u8]) -> Vec<u8> {
    const CONTEXT: usize = 16;
    const LIMIT: usize = 32 << 10;
    let mut sample = Vec::new();
    let mut at = 0;
    while let Some(start) = body[at..].iter().position(|b| !b.is_ascii()).map(|i| at + i) {
        // The run ends where CONTEXT ASCII bytes in a row follow its last non-ASCII byte.
        let mut end = start;
        let mut ascii_run = 0;
        let from = start.saturating_sub(CONTEXT).max(at);
        while end < body.len() && ascii_run < CONTEXT && sample.len() + (end - from) < LIMIT {
            ascii_run = if body[end].is_ascii() { ascii_run + 1 } else { 0 };
            end += 1;
        }
        if !sample.is_empty() {
            sample.push(b' ');
        }
        sample.extend_from_slice(&body[from..end]);
        if sample.len() >= LIMIT {
            break;
        }
        at = end;
    }
    sample
}

/// The charset a `<meta charset=…>` or `<meta http-equiv="Content-Type" content="…; charset=…">`
/// in the first 1024 bytes names (where the HTML standard's prescan looks).
fn meta_charset(body: &[u8]) -> Option<String> {
    let head = body[..body.len().min(1024)].to_ascii_lowercase();
    let mut from = 0;
    while let Some(start) = find(&head[from..], b"<meta").map(|i| from + i) {
        let end = head[start..].iter().position(|&b| b == b'>').map_or(head.len(), |i| start + i);
        let tag = &head[start..end];
        if let Some(at) = find(tag, b"charset") {
            let rest = &tag[at + 7..];
            let rest = &rest[rest.iter().take_while(|b| b.is_ascii_whitespace()).count()..];
            if let Some(value) = rest.strip_prefix(b"=") {
                let value = &value[value.iter().take_while(|b| b.is_ascii_whitespace() || matches!(b, b'"' | b'\'')).count()..];
                let name: Vec<u8> = value.iter().copied().take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':')).collect();
                if !name.is_empty() {
                    return Some(String::from_utf8_lossy(&name).into_owned());
                }
            }
        }
        from = end;
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The main text of an HTML page (readability.js's algorithm, via dom_smoothie), with
/// paragraphs on their own lines. `None` when the page has no extractable content.
pub fn main_text(html: &str, url: Option<&str>) -> Option<String> {
    let config = Config { text_mode: TextMode::Formatted, ..Default::default() };
    let url = url.filter(|u| url::Url::parse(u).is_ok());
    let mut readability = Readability::new(html, url, Some(config)).ok()?;
    let article = readability.parse().ok()?;
    let text = article.text_content.trim().to_string();
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_response_is_split() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=\"ISO-8859-1\"\r\n\r\n<p>caf\xe9</p>";
        let r = parse_http_response(raw).unwrap();
        assert_eq!(r.status, 200);
        assert!(is_html(&r.media_type));
        let (text, bad) = decode_body(r.body, r.charset.as_deref(), None);
        assert_eq!(text, "<p>café</p>");
        assert!(!bad);
    }

    fn response(headers: &str, body: &[u8]) -> Vec<u8> {
        [format!("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n{headers}\r\n").as_bytes(), body].concat()
    }

    fn decoded(headers: &str, body: &[u8]) -> Result<Vec<u8>, String> {
        let raw = response(headers, body);
        parse_http_response(&raw).unwrap().decoded_body().map(|b| b.into_owned())
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn chunked(data: &[u8], size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, chunk) in data.chunks(size.max(1)).enumerate() {
            out.extend_from_slice(if i % 2 == 0 { format!("{:x}\r\n", chunk.len()) } else { format!("{:X};ext=1\r\n", chunk.len()) }.as_bytes());
            out.extend_from_slice(chunk);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\nX-Trailer: yes\r\n\r\n");
        out
    }

    const PAGE: &[u8] = b"<html><body><p>The payload as the browser reads it.</p></body></html>";

    #[test]
    fn content_and_transfer_codings_are_undone() {
        use std::io::Write;
        assert_eq!(decoded("", PAGE).unwrap(), PAGE);
        assert_eq!(decoded("Content-Encoding: gzip\r\n", &gzip(PAGE)).unwrap(), PAGE);
        assert_eq!(decoded("Content-Encoding: x-gzip\r\n", &gzip(PAGE)).unwrap(), PAGE);
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zlib.write_all(PAGE).unwrap();
        assert_eq!(decoded("Content-Encoding: deflate\r\n", &zlib.finish().unwrap()).unwrap(), PAGE);
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        raw.write_all(PAGE).unwrap();
        assert_eq!(decoded("Content-Encoding: deflate\r\n", &raw.finish().unwrap()).unwrap(), PAGE);
        let mut br = Vec::new();
        brotli::BrotliCompress(&mut &PAGE[..], &mut br, &brotli::enc::BrotliEncoderParams::default()).unwrap();
        assert_eq!(decoded("Content-Encoding: br\r\n", &br).unwrap(), PAGE);
        assert_eq!(decoded("Content-Encoding: zstd\r\n", &zstd::encode_all(PAGE, 3).unwrap()).unwrap(), PAGE);
        // Chunked (extensions, trailer), then gzip under it; two codings undone last first.
        assert_eq!(decoded("Transfer-Encoding: chunked\r\n", &chunked(PAGE, 7)).unwrap(), PAGE);
        assert_eq!(decoded("Transfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n", &chunked(&gzip(PAGE), 10)).unwrap(), PAGE);
        let br_of_gzip = {
            let mut out = Vec::new();
            brotli::BrotliCompress(&mut &gzip(PAGE)[..], &mut out, &brotli::enc::BrotliEncoderParams::default()).unwrap();
            out
        };
        assert_eq!(decoded("Content-Encoding: gzip, br\r\n", &br_of_gzip).unwrap(), PAGE);
    }

    #[test]
    fn mislabelled_text_is_kept_and_broken_codings_are_named() {
        // Stored decoded but still labelled: taken as it is.
        assert_eq!(decoded("Content-Encoding: gzip\r\n", PAGE).unwrap(), PAGE);
        assert_eq!(decoded("Transfer-Encoding: chunked\r\n", PAGE).unwrap(), PAGE);
        assert_eq!(decoded("Content-Encoding: compress\r\n", PAGE).unwrap(), PAGE);
        // Binary that is not what the header says.
        let mut garbage = gzip(PAGE);
        garbage[12] ^= 0xff;
        garbage[20] ^= 0xff;
        let err = decoded("Content-Encoding: gzip\r\n", &garbage).unwrap_err();
        assert!(err.contains("gzip"), "{err}");
        let err = decoded("Content-Encoding: compress\r\n", &gzip(PAGE)).unwrap_err();
        assert!(err.contains("unknown coding `compress`"), "{err}");
        // A chunk that claims more bytes than the body has.
        let err = decoded("Transfer-Encoding: chunked\r\n", b"ff\r\n<html>short</html>\r\n0\r\n\r\n").unwrap_err();
        assert!(err.contains("runs past"), "{err}");
        // A small body that expands beyond the limit.
        let bomb = gzip(&vec![b' '; MAX_DECODED_BYTES + 10]);
        assert!(bomb.len() < 1 << 20);
        let err = decoded("Content-Encoding: gzip\r\n", &bomb).unwrap_err();
        assert!(err.contains("more than"), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn dechunk_undoes_any_chunking(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2000), size in 1usize..300) {
            proptest::prop_assert_eq!(dechunk(&chunked(&data, size)).unwrap(), data);
        }

        #[test]
        fn decoding_never_panics(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600), te in 0usize..3, ce in 0usize..7) {
            let transfer = ["", "Transfer-Encoding: chunked\r\n", "Transfer-Encoding: gzip, chunked\r\n"][te];
            let content = ["", "Content-Encoding: gzip\r\n", "Content-Encoding: deflate\r\n", "Content-Encoding: br\r\n",
                           "Content-Encoding: zstd\r\n", "Content-Encoding: gzip, br\r\n", "Content-Encoding: what\r\n"][ce];
            let _ = decoded(&format!("{transfer}{content}"), &body);
        }
    }

    const ZH: &str = "话说贾琏自在梨香院伴宿七日夜，天天僧道不断做佛事。贾母唤了他去，吩咐明日不必送殡。";

    fn page_in(encoding: &'static encoding_rs::Encoding, head: &str, text: &str) -> Vec<u8> {
        encoding.encode(&format!("<html><head>{head}<title>t</title></head><body><p>{text}</p></body></html>")).0.into_owned()
    }

    #[test]
    fn encodings_are_found_as_a_browser_finds_them() {
        let contains = |(text, bad): (String, bool), want: &str| !bad && text.contains(want);
        // No declaration at all: GBK bytes are guessed (the host's .cn is a hint), UTF-8 kept.
        let gbk = page_in(encoding_rs::GBK, "", ZH);
        assert!(contains(decode_body(&gbk, None, Some("cn")), ZH));
        assert!(contains(decode_body(&gbk, None, None), ZH));
        assert!(contains(decode_body(ZH.as_bytes(), None, None), ZH));
        // <meta charset> and <meta http-equiv> in the first 1024 bytes.
        let meta = page_in(encoding_rs::GBK, "<meta charset=\"gb2312\">", ZH);
        assert!(contains(decode_body(&meta, None, None), ZH));
        let jp = "吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。";
        let sjis = page_in(encoding_rs::SHIFT_JIS, "<META HTTP-EQUIV='Content-Type' CONTENT='text/html; charset=Shift_JIS'>", jp);
        assert!(contains(decode_body(&sjis, None, None), jp));
        // The HTTP header wins over <meta>; a BOM over both.
        let latin = page_in(encoding_rs::WINDOWS_1252, "<meta charset=\"utf-8\">", "Caf\u{e9} cr\u{e8}me br\u{fb}l\u{e9}e, na\u{ef}ve fa\u{e7}ade");
        assert!(contains(decode_body(&latin, Some("iso-8859-1"), None), "Café crème brûlée"));
        let bom = [b"\xEF\xBB\xBF".as_slice(), ZH.as_bytes()].concat();
        assert!(contains(decode_body(&bom, Some("gbk"), None), ZH));
        // Declared wrongly (UTF-8, but the bytes are GBK): the guess decodes them cleanly.
        assert!(contains(decode_body(&gbk, Some("utf-8"), Some("cn")), ZH));
        // A <meta> saying UTF-16 on an ASCII-compatible page means UTF-8.
        let utf16 = page_in(encoding_rs::UTF_8, "<meta charset=\"utf-16\">", ZH);
        assert!(contains(decode_body(&utf16, None, None), ZH));
        // Latin-1 without any declaration: not UTF-8, guessed as windows-1252.
        let undeclared = page_in(encoding_rs::WINDOWS_1252, "", "Caf\u{e9} cr\u{e8}me br\u{fb}l\u{e9}e, na\u{ef}ve fa\u{e7}ade, d\u{e9}j\u{e0} vu");
        assert!(contains(decode_body(&undeclared, None, Some("fr")), "Café crème brûlée"));
    }

    #[test]
    fn the_detection_sample_keeps_non_ascii_runs_with_context() {
        let body = [b"<script>var x = 1;</script><div class=\"content-wrapper\"><p>".as_slice(), b"caf\xe9 au lait", b"</p><div>plain ascii only here</div><p>", b"cr\xe8me", b"</p>"].concat();
        let sample = detection_sample(&body);
        assert!(sample.windows(5).any(|w| w == b"caf\xe9 "), "{:?}", String::from_utf8_lossy(&sample));
        assert!(sample.windows(5).any(|w| w == b"cr\xe8me"));
        assert!(!sample.windows(6).any(|w| w == b"script"));
        assert!(detection_sample(b"only ascii").is_empty());
        assert!(detection_sample(&vec![0xe9; 100 << 10]).len() <= (32 << 10) + 1);
    }

    #[test]
    fn utf8_is_not_misread_for_a_label_or_a_stray_byte() {
        let fr = "Le café de la gare, crème brûlée et déjà vu à Noël, où l'été dure.";
        // Valid UTF-8 wins over a <meta> (or HTTP) single-byte label.
        for head in ["<meta charset=\"iso-8859-1\">", "<meta charset=\"windows-1251\">"] {
            let page = page_in(encoding_rs::UTF_8, head, fr);
            let (text, bad) = decode_body(&page, None, None);
            assert!(!bad && text.contains(fr), "{text}");
        }
        assert!(!decode_body(&page_in(encoding_rs::UTF_8, "", fr), Some("iso-8859-1"), None).1);
        // A stray byte or a page cut mid-character: UTF-8 with an error (quarantined), not mojibake.
        let stray = [page_in(encoding_rs::UTF_8, "", fr).as_slice(), b"\xe9"].concat();
        for charset in [None, Some("utf-8")] {
            let (text, bad) = decode_body(&stray, charset, Some("com"));
            assert!(bad && text.contains(fr), "{text}");
        }
        let zh = page_in(encoding_rs::UTF_8, "", ZH);
        let (text, bad) = decode_body(&zh[..zh.len() - 20], None, Some("com"));
        assert!(text.contains(&ZH[..30]) && (bad || !text.contains('Ã')), "{text}");
        // x-user-defined in a page means windows-1252.
        let latin = page_in(encoding_rs::WINDOWS_1252, "<meta charset=\"x-user-defined\">", "caf\u{e9}");
        assert!(decode_body(&latin, None, None).0.contains("café"));
    }

    #[test]
    fn gzip_with_trailing_bytes_or_cut_short_and_joined_chunks_still_decode() {
        let mut padded = gzip(PAGE);
        padded.extend_from_slice(b"\r\n\r\n");
        assert_eq!(decoded("Content-Encoding: gzip\r\n", &padded).unwrap(), PAGE);
        // A truncated record: what decoded is kept.
        let long = PAGE.repeat(400);
        let cut = gzip(&long);
        let got = decoded("Content-Encoding: gzip\r\n", &cut[..cut.len() * 2 / 3]).unwrap();
        assert!(!got.is_empty() && long.starts_with(&got), "{} bytes", got.len());
        // Chunked in the header, but the body already joined (and still gzip).
        assert_eq!(decoded("Transfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n", &gzip(PAGE)).unwrap(), PAGE);
    }

    proptest::proptest! {
        #[test]
        fn charset_resolution_never_panics(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1500), declared in 0usize..4) {
            let charset = [None, Some("utf-8"), Some("gbk"), Some("no-such-charset")][declared];
            let _ = decode_body(&body, charset, Some("cn"));
            let _ = meta_charset(&body);
        }
    }

    #[test]
    fn main_text_drops_navigation() {
        let paragraph = "The river runs through the old town, past the mill and the bridge, and every spring it floods the lower meadows where the farmers keep their sheep. ";
        let html = format!(
            "<html><head><title>T</title></head><body><nav><a href='/'>Home</a> <a href='/about'>About</a></nav>\
             <article><h1>The river</h1><p>{}</p><p>{}</p></article><footer>Copyright 2024 Example Inc.</footer></body></html>",
            paragraph.repeat(4),
            paragraph.repeat(3)
        );
        let text = main_text(&html, Some("https://example.org/river")).unwrap();
        assert!(text.contains("The river runs through the old town"), "{text}");
        assert!(!text.contains("About"), "{text}");
        assert!(!text.contains("Copyright"), "{text}");
    }
}
