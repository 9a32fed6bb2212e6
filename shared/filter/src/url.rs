//! Rejection by URL, as FineWeb and RefinedWeb do before looking at the text: a host that is a
//! blocked domain or under one, or a URL with a blocked word among its tokens. The lists are the
//! user's (`[url]` in the config: inline, and a file such as the UT1 blacklists' `adult/domains`,
//! which FineWeb used); none are shipped, so by default no URL is blocked.

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;

use dsllm_core::error::{Error, Result};

use crate::config::UrlConfig;

/// The blocked domains and words, lowercased.
#[derive(Debug, Default, Clone)]
pub struct UrlBlocklist {
    domains: HashSet<String>,
    words: HashSet<String>,
}

impl UrlBlocklist {
    /// The config's lists and the domains in its file (one a line; `#` starts a comment; a
    /// `.gz` name is decompressed).
    pub fn load(config: &UrlConfig) -> Result<Self> {
        let mut list = UrlBlocklist {
            domains: config.blocked_domains.iter().filter_map(|d| normalize_domain(d)).collect(),
            words: config.blocked_words.iter().map(|w| w.trim().to_lowercase()).filter(|w| !w.is_empty()).collect(),
        };
        // URLs are split into tokens at every other character, so such a word could never match.
        if let Some(word) = list.words.iter().find(|w| !w.chars().all(char::is_alphanumeric)) {
            return Err(Error::Usage(format!(
                "url.blocked_words: `{word}` has characters other than letters and digits; URLs are matched token by token"
            )));
        }
        if let Some(path) = &config.blocked_domains_file {
            list.domains.extend(read_domains(path)?);
        }
        Ok(list)
    }

    pub fn is_empty(&self) -> bool {
        self.domains.is_empty() && self.words.is_empty()
    }

    /// Whether the document at `url` (its host from `domain` when given, else from the URL) is
    /// blocked.
    pub fn blocks(&self, url: &str, domain: Option<&str>) -> bool {
        if self.is_empty() {
            return false;
        }
        let url = lowercase(url);
        let host = match domain.filter(|d| !d.is_empty()) {
            Some(domain) => lowercase(domain),
            None => Cow::Borrowed(host_of(&url)),
        };
        // The host and each parent domain: a.b.example.com, b.example.com, example.com, com.
        let host = host.trim_end_matches('.');
        let mut rest = host;
        loop {
            if self.domains.contains(rest) {
                return true;
            }
            match rest.split_once('.') {
                Some((_, parent)) => rest = parent,
                None => break,
            }
        }
        !self.words.is_empty() && url.split(|c: char| !c.is_alphanumeric()).any(|token| self.words.contains(token))
    }
}

/// Lowercased, without a copy when it already is.
fn lowercase(text: &str) -> Cow<'_, str> {
    if text.chars().any(char::is_uppercase) {
        Cow::Owned(text.to_lowercase())
    } else {
        Cow::Borrowed(text)
    }
}

/// `https://user@Host:8080/path` -> `host` (`[::1]` for IPv6; a backslash ends the authority,
/// as browsers read it).
fn host_of(url: &str) -> &str {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = after_scheme.split(['/', '\\', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.split(':').next().unwrap_or("")
}

/// A list entry as a bare lowercase host (`*.` or a leading dot and a port removed; a whole URL
/// is taken for its host). `www.` is kept: `www.example.com` blocks that host, not `example.com`.
fn normalize_domain(entry: &str) -> Option<String> {
    let entry = entry.trim().to_lowercase();
    let entry = host_of(&entry).to_string();
    let entry = entry.trim_start_matches("*.").trim_start_matches('.').trim_end_matches('.');
    (!entry.is_empty()).then(|| entry.to_string())
}

fn read_domains(path: &Path) -> Result<Vec<String>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, "open the blocked-domains file", e))?;
    let reader: Box<dyn BufRead> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    let mut domains = Vec::new();
    for line in reader.lines() {
        let line = line.map_err(|e| Error::io(path, "read the blocked-domains file", e))?;
        let entry = line.split('#').next().unwrap_or("");
        domains.extend(normalize_domain(entry));
    }
    Ok(domains)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(domains: &[&str], words: &[&str]) -> UrlBlocklist {
        let config = UrlConfig {
            blocked_domains: domains.iter().map(|s| s.to_string()).collect(),
            blocked_words: words.iter().map(|s| s.to_string()).collect(),
            blocked_domains_file: None,
        };
        UrlBlocklist::load(&config).unwrap()
    }

    #[test]
    fn domains_block_their_subdomains_only() {
        let l = list(&["Spam.example", "*.casino.test", "https://www.tracker.test/x", "ported.test:8080", "[::1]"], &[]);
        assert!(l.blocks("https://spam.example/a", None));
        assert!(l.blocks("http://www.spam.example:8080/a?b", None));
        assert!(l.blocks("https://a.b.casino.test/", None));
        assert!(l.blocks("https://www.tracker.test/", None) && l.blocks("https://a.www.tracker.test/", None));
        assert!(!l.blocks("https://tracker.test/", None) && !l.blocks("https://mail.tracker.test/", None));
        assert!(l.blocks("http://ported.test/", None));
        assert!(l.blocks("http://[::1]:8000/x", None));
        assert!(l.blocks("http://spam.example\\@good.test/", None));
        assert!(l.blocks("https://spam.example/", Some("")));
        assert!(!l.blocks("https://notspam.example/", None));
        assert!(!l.blocks("https://spam.example.org/", None));
        // The document's `domain` column, when there, is the host.
        assert!(l.blocks("https://elsewhere.test/", Some("spam.example")));
        assert!(!list(&[], &[]).blocks("https://spam.example/", None));
    }

    #[test]
    fn words_that_could_never_match_are_refused() {
        let config = UrlConfig { blocked_words: vec!["xxx-porn".into()], ..Default::default() };
        let err = UrlBlocklist::load(&config).unwrap_err().to_string();
        assert!(err.contains("xxx-porn"), "{err}");
    }

    #[test]
    fn words_match_whole_url_tokens() {
        let l = list(&[], &["casino", "Viagra"]);
        assert!(l.blocks("https://shop.example/cheap-viagra-online", None));
        assert!(l.blocks("https://casino.example.net/", None));
        assert!(!l.blocks("https://example.net/casinos-history", None));
        assert!(!l.blocks("https://example.net/occasional", None));
    }

    #[test]
    fn the_file_takes_comments_blank_lines_and_gzip() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let text = "# UT1 adult/domains, say\nbad.test\n\n  worse.test  # trailing comment\n";
        let plain = dir.path().join("domains");
        std::fs::write(&plain, text).unwrap();
        let gz = dir.path().join("domains.gz");
        let mut e = flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), flate2::Compression::default());
        e.write_all(text.as_bytes()).unwrap();
        e.finish().unwrap();
        for path in [plain, gz] {
            let l = UrlBlocklist::load(&UrlConfig { blocked_domains_file: Some(path), ..Default::default() }).unwrap();
            assert!(l.blocks("http://x.bad.test/", None) && l.blocks("http://worse.test/", None));
            assert!(!l.blocks("http://good.test/", None));
        }
        let missing = UrlBlocklist::load(&UrlConfig { blocked_domains_file: Some(dir.path().join("nope")), ..Default::default() }).unwrap_err();
        assert!(missing.to_string().contains("nope"), "{missing}");
    }
}
