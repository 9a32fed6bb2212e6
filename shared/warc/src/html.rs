//! HTTP responses from WARC files turned into main text.

use dom_smoothie::{Config, Readability, TextMode};

/// An HTTP response split into what ingest needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse<'a> {
    pub status: u16,
    /// Media type, lowercased, without parameters (e.g. `text/html`).
    pub media_type: String,
    pub charset: Option<String>,
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
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-type") {
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
    Some(HttpResponse { status, media_type, charset, body: &content[split.1..] })
}

pub fn is_html(media_type: &str) -> bool {
    matches!(media_type, "text/html" | "application/xhtml+xml") || media_type.is_empty()
}

/// Decodes an HTML body with its declared charset (UTF-8 when none). Returns the text and
/// whether the bytes were invalid in that encoding (replaced by U+FFFD).
pub fn decode_body(body: &[u8], charset: Option<&str>) -> (String, bool) {
    let encoding = charset
        .and_then(|c| encoding_rs::Encoding::for_label(c.as_bytes()))
        .unwrap_or(encoding_rs::UTF_8);
    let (text, _, had_errors) = encoding.decode(body);
    (text.into_owned(), had_errors)
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
        let (text, bad) = decode_body(r.body, r.charset.as_deref());
        assert_eq!(text, "<p>café</p>");
        assert!(!bad);
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
