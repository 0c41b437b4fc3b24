//! Single byte ranges served from a stored object (RFC 9110 §14). Several ranges in one
//! request are answered with the whole object, which the RFC allows.

use http::{HeaderMap, header};

use super::conditional::http_date;

#[derive(Debug, PartialEq, Eq)]
pub enum Range {
    /// No usable range: send the whole object.
    Full,
    /// Inclusive byte positions.
    Partial {
        start: u64,
        end: u64,
    },
    Unsatisfiable,
}

/// Evaluates `Range` (and `If-Range`) against an object of `len` bytes described by `resp`.
pub fn evaluate(req: &HeaderMap, resp: &HeaderMap, len: u64) -> Range {
    let Some(spec) = req.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Range::Full;
    };
    if let Some(if_range) = req.get(header::IF_RANGE)
        && !if_range_holds(if_range, resp)
    {
        return Range::Full;
    }
    let Some(set) = spec.trim().strip_prefix("bytes=") else {
        return Range::Full;
    };
    if set.contains(',') {
        return Range::Full;
    }
    let Some((first, last)) = set.trim().split_once('-') else {
        return Range::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    let parsed = match (first.is_empty(), last.is_empty()) {
        // "-N": the last N bytes.
        (true, false) => match last.parse::<u64>() {
            Ok(0) => return Range::Unsatisfiable,
            Ok(n) => Some((len.saturating_sub(n), len.saturating_sub(1))),
            Err(_) => None,
        },
        // "N-": from N to the end.
        (false, true) => first
            .parse::<u64>()
            .ok()
            .map(|s| (s, len.saturating_sub(1))),
        (false, false) => match (first.parse::<u64>(), last.parse::<u64>()) {
            (Ok(s), Ok(e)) if s <= e => Some((s, e.min(len.saturating_sub(1)))),
            _ => None,
        },
        (true, true) => None,
    };
    match parsed {
        // Invalid syntax is ignored (§14.2).
        None => Range::Full,
        Some((start, _)) if len == 0 || start >= len => Range::Unsatisfiable,
        Some((start, end)) => Range::Partial { start, end },
    }
}

/// `If-Range` holds when it names the current strong ETag or exactly the `Last-Modified` date.
fn if_range_holds(if_range: &http::HeaderValue, resp: &HeaderMap) -> bool {
    let Ok(text) = if_range.to_str() else {
        return false;
    };
    let text = text.trim();
    if text.starts_with('"') || text.starts_with("W/") {
        let etag = resp
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::trim);
        return !text.starts_with("W/") && etag == Some(text);
    }
    match (
        http_date(if_range),
        resp.get(header::LAST_MODIFIED).and_then(http_date),
    ) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(range: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, range.parse().unwrap());
        h
    }

    #[test]
    fn single_ranges() {
        let none = HeaderMap::new();
        assert_eq!(
            evaluate(&req("bytes=0-9"), &none, 100),
            Range::Partial { start: 0, end: 9 }
        );
        assert_eq!(
            evaluate(&req("bytes=90-"), &none, 100),
            Range::Partial { start: 90, end: 99 }
        );
        assert_eq!(
            evaluate(&req("bytes=-10"), &none, 100),
            Range::Partial { start: 90, end: 99 }
        );
        assert_eq!(
            evaluate(&req("bytes=-500"), &none, 100),
            Range::Partial { start: 0, end: 99 }
        );
        assert_eq!(
            evaluate(&req("bytes=50-500"), &none, 100),
            Range::Partial { start: 50, end: 99 }
        );
        assert_eq!(
            evaluate(&req("bytes=100-"), &none, 100),
            Range::Unsatisfiable
        );
        assert_eq!(evaluate(&req("bytes=-0"), &none, 100), Range::Unsatisfiable);
        assert_eq!(evaluate(&req("bytes=0-0"), &none, 0), Range::Unsatisfiable);
    }

    #[test]
    fn what_is_ignored() {
        let none = HeaderMap::new();
        assert_eq!(evaluate(&none, &none, 100), Range::Full);
        assert_eq!(evaluate(&req("bytes=0-1,5-6"), &none, 100), Range::Full);
        assert_eq!(evaluate(&req("items=0-1"), &none, 100), Range::Full);
        assert_eq!(evaluate(&req("bytes=9-1"), &none, 100), Range::Full);
        assert_eq!(evaluate(&req("bytes=x-y"), &none, 100), Range::Full);
    }

    #[test]
    fn if_range_needs_a_strong_match() {
        let mut resp = HeaderMap::new();
        resp.insert(header::ETAG, "\"v1\"".parse().unwrap());
        let mut r = req("bytes=0-9");
        r.insert(header::IF_RANGE, "\"v1\"".parse().unwrap());
        assert_eq!(
            evaluate(&r, &resp, 100),
            Range::Partial { start: 0, end: 9 }
        );
        r.insert(header::IF_RANGE, "\"v0\"".parse().unwrap());
        assert_eq!(evaluate(&r, &resp, 100), Range::Full);
        r.insert(header::IF_RANGE, "W/\"v1\"".parse().unwrap());
        assert_eq!(evaluate(&r, &resp, 100), Range::Full);
    }
}
