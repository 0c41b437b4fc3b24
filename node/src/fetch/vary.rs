//! Responses that vary (RFC 9110 §12.5.5, RFC 9111 §4.1): which request headers select a
//! variant, and the content key each variant is stored and announced under.
//!
//! The URL's own key holds a bodiless index that lists the selecting headers; each variant is
//! stored under a key derived from the URL's key and the request's values of those headers, so
//! a node that knows the index finds the right variant locally or in the DHT in one lookup.

use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};
use reef_proto::ContentKey;

/// More selecting headers than this is unusual enough that such responses are not stored.
const MAX_SELECTING: usize = 8;

/// What a response's `Vary` says about storing it.
#[derive(Debug, PartialEq, Eq)]
pub enum Vary {
    /// No `Vary`: one response serves every request.
    None,
    /// Lower-case header names, without repeats, in the order the response gives them.
    On(Vec<String>),
    /// `Vary: *` (no request can be matched) or too many names: not stored.
    Unstorable,
}

pub fn of(response: &HeaderMap) -> Vary {
    let mut names: Vec<String> = Vec::new();
    for value in response.get_all(header::VARY) {
        let Ok(value) = value.to_str() else {
            return Vary::Unstorable;
        };
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" || HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Vary::Unstorable;
            }
            let name = name.to_ascii_lowercase();
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    match names.len() {
        0 => Vary::None,
        n if n > MAX_SELECTING => Vary::Unstorable,
        _ => Vary::On(names),
    }
}

/// Rewrites each selecting header of a request into one canonical line (list members
/// trimmed, joined with ", "), so that requests differing only in whitespace or in how a list
/// is split over lines select the same variant (RFC 9111 §4.1 allows such normalisation).
pub fn normalise(request: &mut HeaderMap, names: &[String]) {
    for name in names {
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        if !request.contains_key(&name) {
            continue;
        }
        let joined = request
            .get_all(&name)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(|member| member.trim_ascii())
            .filter(|member| !member.is_empty())
            .collect::<Vec<_>>()
            .join(&b", "[..]);
        match HeaderValue::from_bytes(&joined) {
            Ok(value) => {
                request.insert(name, value);
            }
            // Cannot happen for bytes taken from valid values; keep the request as it came.
            Err(_) => continue,
        }
    }
}

/// The key of the variant that `request` (already normalised) selects.
pub fn variant_key(primary: &ContentKey, names: &[String], request: &HeaderMap) -> ContentKey {
    ContentKey::for_variant(
        primary,
        names.iter().map(|n| {
            (
                n.as_str(),
                request.get(n.as_str()).map(HeaderValue::as_bytes),
            )
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn reads_vary() {
        assert_eq!(of(&headers(&[])), Vary::None);
        assert_eq!(
            of(&headers(&[
                ("vary", "Accept-Encoding, accept-language"),
                ("vary", "accept-encoding")
            ])),
            Vary::On(vec!["accept-encoding".into(), "accept-language".into()])
        );
        assert_eq!(of(&headers(&[("vary", "accept, *")])), Vary::Unstorable);
        let many = (0..9)
            .map(|i| format!("x-h{i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(of(&headers(&[("vary", &many)])), Vary::Unstorable);
        assert_eq!(of(&headers(&[("vary", "bad name")])), Vary::Unstorable);
    }

    #[test]
    fn equivalent_requests_select_the_same_variant() {
        let names = vec!["accept-encoding".to_string(), "accept-language".to_string()];
        let p = ContentKey::from_bytes([7; 32]);
        let mut a = headers(&[("accept-encoding", "gzip,  br"), ("x-other", "1")]);
        let mut b = headers(&[("accept-encoding", "gzip"), ("accept-encoding", " br ")]);
        normalise(&mut a, &names);
        normalise(&mut b, &names);
        assert_eq!(a.get("accept-encoding").unwrap(), "gzip, br");
        assert_eq!(variant_key(&p, &names, &a), variant_key(&p, &names, &b));

        let mut c = headers(&[("accept-encoding", "br")]);
        normalise(&mut c, &names);
        assert_ne!(variant_key(&p, &names, &a), variant_key(&p, &names, &c));
        // Absent differs from present.
        let none = HeaderMap::new();
        assert_ne!(variant_key(&p, &names, &none), variant_key(&p, &names, &c));
    }
}
