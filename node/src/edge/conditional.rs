//! Conditional requests answered from what we hold (RFC 9110 §13): a client whose copy is
//! current gets 304 instead of the body.

use std::time::SystemTime;

use http::{HeaderMap, header};

/// Whether the response described by `resp` should be turned into 304 Not Modified.
/// `If-None-Match` wins over `If-Modified-Since` (§13.2.2).
pub fn not_modified(req: &HeaderMap, resp: &HeaderMap) -> bool {
    if let Some(inm) = req.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        let Some(etag) = resp.get(header::ETAG).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        return inm.trim() == "*" || inm.split(',').any(|tag| weak_eq(tag.trim(), etag.trim()));
    }
    let since = req.get(header::IF_MODIFIED_SINCE).and_then(http_date);
    let modified = resp.get(header::LAST_MODIFIED).and_then(http_date);
    matches!((since, modified), (Some(since), Some(modified)) if modified <= since)
}

/// Weak comparison (§8.8.3.2): equal opaque tags, whatever their `W/` prefixes.
fn weak_eq(a: &str, b: &str) -> bool {
    a.trim_start_matches("W/") == b.trim_start_matches("W/")
}

pub fn http_date(value: &http::HeaderValue) -> Option<SystemTime> {
    httpdate::parse_http_date(value.to_str().ok()?).ok()
}

/// Fields a 304 keeps (§15.4.5): those a cache would update, not the body's framing.
pub fn strip_for_304(headers: &mut HeaderMap) {
    for name in [
        header::CONTENT_LENGTH,
        header::CONTENT_RANGE,
        header::TRANSFER_ENCODING,
    ] {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (header::HeaderName::from_static(k), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn etags_compare_weakly_and_star_matches() {
        let resp = map(&[
            ("etag", "\"v1\""),
            ("last-modified", "Sun, 01 Nov 2026 00:00:00 GMT"),
        ]);
        assert!(not_modified(&map(&[("if-none-match", "\"v1\"")]), &resp));
        assert!(not_modified(&map(&[("if-none-match", "W/\"v1\"")]), &resp));
        assert!(not_modified(
            &map(&[("if-none-match", "\"v0\", \"v1\"")]),
            &resp
        ));
        assert!(not_modified(&map(&[("if-none-match", "*")]), &resp));
        assert!(!not_modified(&map(&[("if-none-match", "\"v2\"")]), &resp));
        // If-None-Match decides alone, even when the date would match.
        let both = map(&[
            ("if-none-match", "\"v2\""),
            ("if-modified-since", "Sun, 01 Nov 2026 00:00:00 GMT"),
        ]);
        assert!(!not_modified(&both, &resp));
    }

    #[test]
    fn dates_compare_by_time() {
        let resp = map(&[("last-modified", "Sun, 01 Nov 2026 00:00:00 GMT")]);
        assert!(not_modified(
            &map(&[("if-modified-since", "Sun, 01 Nov 2026 00:00:00 GMT")]),
            &resp
        ));
        assert!(not_modified(
            &map(&[("if-modified-since", "Mon, 02 Nov 2026 00:00:00 GMT")]),
            &resp
        ));
        assert!(!not_modified(
            &map(&[("if-modified-since", "Sat, 31 Oct 2026 00:00:00 GMT")]),
            &resp
        ));
        assert!(!not_modified(
            &map(&[("if-modified-since", "yesterday")]),
            &resp
        ));
        assert!(!not_modified(&map(&[]), &resp));
    }
}
