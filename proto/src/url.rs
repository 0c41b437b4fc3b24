//! RFC 3986 §6 normalisation of `http`/`https` URLs, so that equivalent spellings of one URL
//! share one content key.

use std::fmt;

use http::Uri;

/// Longest URL we accept; longer ones are almost always abuse and bloat every record.
pub const MAX_URL_LEN: usize = 8 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("malformed URL: {0}")]
    Malformed(String),
    #[error("unsupported scheme {0:?}: only http and https URLs can be fetched")]
    UnsupportedScheme(String),
    #[error("URL has no host")]
    MissingHost,
    #[error("URL carries user info, which HTTP URLs must not")]
    UserInfo,
    #[error("URL is longer than {MAX_URL_LEN} bytes")]
    TooLong,
}

/// A normalised absolute `http`/`https` URL.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CanonicalUrl {
    text: String,
    https: bool,
    authority_end: usize,
}

impl CanonicalUrl {
    /// Parses and normalises `input`: lower-case scheme and host, no default port, no fragment,
    /// dot segments removed, percent-escapes upper-cased and unreserved ones decoded.
    pub fn parse(input: &str) -> Result<Self, UrlError> {
        if input.len() > MAX_URL_LEN {
            return Err(UrlError::TooLong);
        }
        let without_fragment = input.split('#').next().unwrap_or_default();
        let uri: Uri = without_fragment
            .parse()
            .map_err(|e: http::uri::InvalidUri| UrlError::Malformed(e.to_string()))?;
        Self::from_uri(&uri)
    }

    /// Normalises an already parsed absolute URI (e.g. a forward-proxy request target).
    pub fn from_uri(uri: &Uri) -> Result<Self, UrlError> {
        let scheme = uri
            .scheme_str()
            .ok_or_else(|| UrlError::Malformed("not an absolute URL".into()))?
            .to_ascii_lowercase();
        let https = match scheme.as_str() {
            "http" => false,
            "https" => true,
            _ => return Err(UrlError::UnsupportedScheme(scheme)),
        };
        let authority = uri.authority().ok_or(UrlError::MissingHost)?;
        if authority.as_str().contains('@') {
            return Err(UrlError::UserInfo);
        }
        let host = authority.host().to_ascii_lowercase();
        if host.is_empty() {
            return Err(UrlError::MissingHost);
        }
        let default_port = if https { 443 } else { 80 };
        let mut text = String::with_capacity(uri.to_string().len());
        text.push_str(&scheme);
        text.push_str("://");
        text.push_str(&host);
        if let Some(port) = authority.port_u16()
            && port != default_port
        {
            text.push(':');
            text.push_str(&port.to_string());
        }
        let authority_end = text.len();
        let path = normalize_escapes(uri.path());
        let path = remove_dot_segments(if path.is_empty() { "/" } else { &path });
        text.push_str(&path);
        if let Some(query) = uri.query() {
            text.push('?');
            text.push_str(&normalize_escapes(query));
        }
        if text.len() > MAX_URL_LEN {
            return Err(UrlError::TooLong);
        }
        Ok(Self {
            text,
            https,
            authority_end,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn is_https(&self) -> bool {
        self.https
    }

    /// `host[:port]` as it appears in the URL.
    pub fn authority(&self) -> &str {
        let start = if self.https {
            "https://".len()
        } else {
            "http://".len()
        };
        &self.text[start..self.authority_end]
    }

    /// The host alone: lower-case, without the port; an IPv6 literal keeps its brackets.
    pub fn host(&self) -> &str {
        let authority = self.authority();
        // A port follows the last ':' unless that ':' is inside an IPv6 literal.
        match authority.rfind([':', ']']) {
            Some(i) if authority[i..].starts_with(':') => &authority[..i],
            _ => authority,
        }
    }

    /// Path and query, as sent in an origin-form request line.
    pub fn path_and_query(&self) -> &str {
        &self.text[self.authority_end..]
    }

    pub fn to_uri(&self) -> Uri {
        // The text was produced from a valid Uri by changes that keep it valid.
        self.text.parse().unwrap_or_else(|_| Uri::from_static("/"))
    }
}

impl fmt::Display for CanonicalUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for CanonicalUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

pub(crate) fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes escapes of unreserved characters and upper-cases the hex of the others.
fn normalize_escapes(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(hi), Some(lo)) = (hex_val(b[i + 1]), hex_val(b[i + 2]))
        {
            let byte = (hi << 4) | lo;
            if is_unreserved(byte) {
                out.push(byte as char);
            } else {
                out.push('%');
                out.push(b[i + 1].to_ascii_uppercase() as char);
                out.push(b[i + 2].to_ascii_uppercase() as char);
            }
            i += 3;
            continue;
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}

/// RFC 3986 §5.2.4, on an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => trailing_slash = i == last,
            ".." => {
                out.pop();
                trailing_slash = i == last;
            }
            s => {
                out.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut result = String::with_capacity(path.len());
    for seg in &out {
        result.push('/');
        result.push_str(seg);
    }
    if trailing_slash || result.is_empty() {
        result.push('/');
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        CanonicalUrl::parse(s).unwrap().to_string()
    }

    #[test]
    fn normalises_case_port_and_path() {
        assert_eq!(
            canon("HTTP://WWW.Example.com:80"),
            "http://www.example.com/"
        );
        assert_eq!(canon("https://a.example:443/x"), "https://a.example/x");
        assert_eq!(
            canon("https://a.example:8443/x"),
            "https://a.example:8443/x"
        );
        assert_eq!(canon("http://a/b/c/./../../g"), "http://a/g");
        assert_eq!(canon("http://a/b/c/.."), "http://a/b/");
        assert_eq!(
            canon("http://a/%7Efoo%2fbar%2F?q=%7e%3a"),
            "http://a/~foo%2Fbar%2F?q=~%3A"
        );
        assert_eq!(canon("http://a/x#frag"), "http://a/x");
        assert_eq!(canon("http://[::1]:8080/x"), "http://[::1]:8080/x");
    }

    #[test]
    fn host_drops_the_port_but_not_ipv6_brackets() {
        let host = |s: &str| CanonicalUrl::parse(s).unwrap().host().to_string();
        assert_eq!(host("http://IMG.Example.com/x"), "img.example.com");
        assert_eq!(host("http://127.0.0.1:8080/x"), "127.0.0.1");
        assert_eq!(host("https://a.example:443/"), "a.example");
        assert_eq!(host("http://[::1]:8080/x"), "[::1]");
        assert_eq!(host("http://[::1]/x"), "[::1]");
    }

    #[test]
    fn keeps_the_parts_apart() {
        let u = CanonicalUrl::parse("http://Host.example:81/p/q?x=1").unwrap();
        assert_eq!(u.authority(), "host.example:81");
        assert_eq!(u.host(), "host.example");
        assert_eq!(u.path_and_query(), "/p/q?x=1");
        assert!(!u.is_https());
        assert_eq!(u.to_uri().to_string(), "http://host.example:81/p/q?x=1");
    }

    #[test]
    fn rejects_what_cannot_be_fetched() {
        assert!(matches!(
            CanonicalUrl::parse("ftp://a/x"),
            Err(UrlError::UnsupportedScheme(_))
        ));
        assert!(matches!(
            CanonicalUrl::parse("/just/a/path"),
            Err(UrlError::Malformed(_))
        ));
        assert!(matches!(
            CanonicalUrl::parse("http://u:p@a/x"),
            Err(UrlError::UserInfo)
        ));
        assert!(matches!(
            CanonicalUrl::parse("http://a b/"),
            Err(UrlError::Malformed(_))
        ));
        let long = format!("http://a/{}", "x".repeat(MAX_URL_LEN));
        assert_eq!(CanonicalUrl::parse(&long), Err(UrlError::TooLong));
    }

    #[test]
    fn canonical_form_is_a_fixed_point() {
        for s in [
            "http://a/b/../c?d=%2f",
            "https://X.y:443/%41%42",
            "http://a:8080",
        ] {
            let once = canon(s);
            assert_eq!(canon(&once), once);
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_is_idempotent(s in "\\PC{0,200}") {
            if let Ok(u) = CanonicalUrl::parse(&s) {
                let again = CanonicalUrl::parse(u.as_str()).unwrap();
                proptest::prop_assert_eq!(again.as_str(), u.as_str());
            }
        }
    }
}
