//! Freshness (RFC 9111, RFC 5861, RFC 8246) as this node applies it: `http-cache-semantics`
//! decides, and the functions here correct it where a shared cache must differ, each saying
//! why.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue, Method, header, request, response};
use http_cache_semantics::{BeforeRequest, CacheOptions, CachePolicy};
use reef_cache::Meta;
use reef_proto::CanonicalUrl;

use super::headers;
use super::serve::stored_head;

/// The request a peer asked with, as the stored policy must see it to judge freshness.
pub(super) fn asked_request(meta: &Meta, asked: &HeaderMap) -> request::Parts {
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = Method::GET;
    if let Ok(url) = CanonicalUrl::parse(&meta.url) {
        parts.uri = url.to_uri();
        if let Ok(host) = HeaderValue::from_str(url.authority()) {
            parts.headers.insert(header::HOST, host);
        }
    }
    for (name, value) in asked {
        if name != header::HOST {
            parts.headers.append(name, value.clone());
        }
    }
    parts
}

/// Whether a stored response may be served for `policy_req` without asking upstream.
///
/// Differs from `http-cache-semantics` in one way: RFC 8246 `immutable` means a fresh copy is
/// not revalidated just because the client reloads (browsers send `max-age=0` on reload), so a
/// request's `max-age` is ignored while an immutable copy is fresh. `no-cache` (a forced
/// reload) still revalidates.
pub(super) fn fresh_enough(meta: &Meta, policy_req: &request::Parts, now: SystemTime) -> bool {
    // RFC 9111 §5.2.2.4: a `no-cache` response is never used without validation, not even for
    // a client's `max-stale` (which the crate lets through, as it reads no-cache as max-age=0).
    if stored_has_directive(meta, "no-cache") {
        return false;
    }
    // The common case, answered without `before_request` (which also builds a whole cached
    // response to hand back, costing more than the rest of a hit): a GET that says nothing
    // about freshness (no `Cache-Control`, no `Pragma`) for a response that does not vary.
    // Then the crate has nothing to weigh but the copy's age: the URL and `Host` match by
    // construction (the key is the URL's, and `Host` is always the URL's authority) and both
    // requests are GETs. `a_plain_request_gets_the_crates_answer` checks the two agree.
    if says_nothing_of_freshness(policy_req) && !stored_varies(meta) {
        return !meta.policy.is_stale(now);
    }
    fresh_enough_by_crate(meta, policy_req, now)
}

/// `fresh_enough` past its `no-cache` check, asking the crate in every case.
fn fresh_enough_by_crate(meta: &Meta, policy_req: &request::Parts, now: SystemTime) -> bool {
    let fresh = |req: &request::Parts| {
        matches!(
            meta.policy.before_request(req, now),
            BeforeRequest::Fresh(_)
        )
    };
    if fresh(policy_req) {
        return true;
    }
    let stored = stored_head(meta, now, None);
    if !has_directive(&stored.headers, "immutable")
        || meta.policy.is_stale(now)
        || directive_secs(&policy_req.headers, "max-age").is_none()
    {
        return false;
    }
    let reload = without_directive(policy_req, "max-age");
    fresh(&reload)
}

/// A GET without `Cache-Control` or `Pragma`.
fn says_nothing_of_freshness(req: &request::Parts) -> bool {
    req.method == Method::GET
        && !req.headers.contains_key(header::CACHE_CONTROL)
        && !req.headers.contains_key(header::PRAGMA)
}

/// Whether the stored response has a `Vary` field (its variants are matched on request
/// headers, which only the crate's full check compares).
fn stored_varies(meta: &Meta) -> bool {
    meta.headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("vary"))
}

/// `request` without the `Cache-Control` directive `name`.
pub(super) fn without_directive(request: &request::Parts, name: &str) -> request::Parts {
    let mut out = request.clone();
    let kept: Vec<String> = directives(&request.headers)
        .filter(|(directive, _)| directive != name)
        .map(|(directive, value)| match value {
            Some(v) => format!("{directive}={v}"),
            None => directive,
        })
        .collect();
    out.headers.remove(header::CACHE_CONTROL);
    if let Ok(v) = HeaderValue::from_str(&kept.join(", "))
        && !kept.is_empty()
    {
        out.headers.insert(header::CACHE_CONTROL, v);
    }
    out
}

/// `request` plus the conditional fields that ask whether our stored copy is still current.
pub(super) fn with_validators(request: &HeaderMap, meta: &Meta) -> HeaderMap {
    let mut conditional = request.clone();
    for (stored, asks) in [
        ("etag", header::IF_NONE_MATCH),
        ("last-modified", header::IF_MODIFIED_SINCE),
    ] {
        let value = meta.headers.iter().find(|(n, _)| n == stored);
        if let Some(Ok(v)) = value.map(|(_, v)| HeaderValue::from_bytes(v)) {
            conditional.insert(asks, v);
        }
    }
    conditional
}

pub(super) fn has_validators(meta: &Meta) -> bool {
    meta.headers
        .iter()
        .any(|(name, _)| name == "etag" || name == "last-modified")
}

/// RFC 9111 §3.2: fields of a 304 replace the stored ones of the same name, except those
/// that describe the body's framing.
pub(super) fn refresh_headers(stored: &mut Vec<(String, Vec<u8>)>, fresh: &HeaderMap) {
    const KEEP: [header::HeaderName; 4] = [
        header::CONTENT_LENGTH,
        header::CONTENT_ENCODING,
        header::TRANSFER_ENCODING,
        header::CONTENT_RANGE,
    ];
    for name in fresh.keys() {
        if KEEP.contains(name) {
            continue;
        }
        stored.retain(|(n, _)| n != name.as_str());
        for value in fresh.get_all(name) {
            stored.push((name.as_str().to_string(), value.as_bytes().to_vec()));
        }
    }
}

/// The freshness policy of a response we just received.
pub(super) fn new_policy(
    policy_req: &request::Parts,
    head: &response::Parts,
    now: SystemTime,
) -> CachePolicy {
    CachePolicy::new_options(policy_req, &policy_view(head, now), now, cache_options())
}

/// The response as the freshness rules should see it. Two corrections to `http-cache-semantics`
/// (the stored headers stay as the origin sent them):
/// - RFC 9111 §4.2.3: a response's age is at least the time since its `Date` (the apparent
///   age); the crate counts only the `Age` field, so an old `Date` is made explicit in `Age`.
/// - RFC 9111 §5.2.2.8: for a shared cache `proxy-revalidate` means `must-revalidate`; the
///   crate instead treats the response as always stale, and lets `max-stale` serve it stale.
pub(super) fn policy_view(head: &response::Parts, now: SystemTime) -> response::Parts {
    let (mut view, ()) = http::Response::new(()).into_parts();
    view.status = head.status;
    view.version = head.version;
    view.headers = head.headers.clone();
    let apparent_age = head
        .headers
        .get(header::DATE)
        .and_then(|d| d.to_str().ok())
        .and_then(|d| httpdate::parse_http_date(d).ok())
        .and_then(|date| now.duration_since(date).ok())
        .map_or(0, |age| age.as_secs());
    let age_field = head
        .headers
        .get(header::AGE)
        .and_then(|a| a.to_str().ok())
        .and_then(|a| a.trim().parse::<u64>().ok())
        .unwrap_or(0);
    if apparent_age > age_field {
        view.headers
            .insert(header::AGE, HeaderValue::from(apparent_age));
    }
    if has_directive(&head.headers, "proxy-revalidate") {
        let rewritten: Vec<String> = directives(&head.headers)
            .map(|(name, value)| {
                let name = if name == "proxy-revalidate" {
                    "must-revalidate".to_string()
                } else {
                    name
                };
                match value {
                    Some(v) => format!("{name}={v}"),
                    None => name,
                }
            })
            .collect();
        if let Ok(v) = HeaderValue::from_str(&rewritten.join(", ")) {
            view.headers.insert(header::CACHE_CONTROL, v);
        }
    }
    view
}

/// Shared-cache rules: `private` responses are not stored, `s-maxage` counts.
pub(super) fn cache_options() -> CacheOptions {
    CacheOptions {
        shared: true,
        ..CacheOptions::default()
    }
}

/// The request as the freshness rules see it: the canonical URL with the client's headers.
pub(super) fn policy_request(url: &CanonicalUrl, req: &request::Parts) -> request::Parts {
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = Method::GET;
    parts.uri = url.to_uri();
    parts.headers = req.headers.clone();
    // What we store answers the full, unconditional request we send upstream; ranges and
    // conditionals are answered from it in the respond phase.
    headers::strip_for_full_fetch(&mut parts.headers);
    // Stored responses are matched on Host too; clients spell it variously, the URL does not.
    if let Ok(host) = HeaderValue::from_str(url.authority()) {
        parts.headers.insert(header::HOST, host);
    }
    parts
}

/// RFC 5861 §4: a stale copy may stand in for an error for `stale-if-error` seconds past its
/// freshness (given by the response or the request).
pub(super) fn stale_if_error_allows(meta: &Meta, policy_req: &request::Parts) -> bool {
    stale_within(meta, "stale-if-error", Some(&policy_req.headers))
}

/// RFC 5861 §3: a copy stale for less than the response's `stale-while-revalidate` seconds may
/// be served while it is refreshed in the background, unless the client asked for something
/// fresher (`no-cache`, `max-age`, `min-fresh`, `Pragma: no-cache`).
pub(super) fn stale_while_revalidate_allows(meta: &Meta, policy_req: &request::Parts) -> bool {
    let strict = ["no-cache", "max-age", "min-fresh"]
        .iter()
        .any(|d| has_directive(&policy_req.headers, d))
        || policy_req.headers.contains_key(header::PRAGMA);
    !strict && stale_within(meta, "stale-while-revalidate", None)
}

/// Whether the copy went stale at most `directive` seconds ago, and may be served stale at all
/// (RFC 9111 §4.2.4: not under `must-revalidate`, `proxy-revalidate` or `no-cache`).
pub(super) fn stale_within(meta: &Meta, directive: &str, request: Option<&HeaderMap>) -> bool {
    let stored = stored_head(meta, SystemTime::now(), None);
    if ["must-revalidate", "proxy-revalidate", "no-cache"]
        .iter()
        .any(|d| has_directive(&stored.headers, d))
    {
        return false;
    }
    let window = std::iter::once(&stored.headers)
        .chain(request)
        .filter_map(|h| directive_secs(h, directive))
        .max();
    let Some(window) = window else { return false };
    let staleness = meta
        .policy
        .age(SystemTime::now())
        .saturating_sub(freshness_lifetime(meta));
    staleness <= Duration::from_secs(window)
}

/// How long the stored response was fresh for in all (RFC 9111 §4.2.1). The crate only tells
/// the time left, which is zero for a copy that arrived already stale, so ask it about the
/// response as it was at its `Date`, when its age was zero.
pub(super) fn freshness_lifetime(meta: &Meta) -> Duration {
    let date = meta
        .headers
        .iter()
        .find(|(n, _)| n == "date")
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .unwrap_or(meta.stored_at);
    let mut head = stored_head(meta, date, None);
    head.headers.remove(header::AGE);
    let request = asked_request(meta, &HeaderMap::new());
    new_policy(&request, &head, date).time_to_live(date)
}

/// Cache-Control directives of `headers`, lower-cased, with their values.
pub(super) fn directives(
    headers: &HeaderMap,
) -> impl Iterator<Item = (String, Option<String>)> + '_ {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|d| match d.split_once('=') {
            Some((k, v)) => (
                k.trim().to_ascii_lowercase(),
                Some(v.trim().trim_matches('"').to_string()),
            ),
            None => (d.trim().to_ascii_lowercase(), None),
        })
}

/// Whether the stored response's `Cache-Control` has directive `name`.
pub(super) fn stored_has_directive(meta: &Meta, name: &str) -> bool {
    meta.headers
        .iter()
        .filter(|(n, _)| n == "cache-control")
        .filter_map(|(_, v)| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .any(|d| {
            let directive = d.split_once('=').map_or(d, |(k, _)| k);
            directive.trim().eq_ignore_ascii_case(name)
        })
}

pub(super) fn has_directive(headers: &HeaderMap, name: &str) -> bool {
    directives(headers).any(|(k, _)| k == name)
}

pub(super) fn directive_secs(headers: &HeaderMap, name: &str) -> Option<u64> {
    directives(headers)
        .find(|(k, _)| k == name)?
        .1?
        .parse()
        .ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn stored(headers: &[(&str, String)], status: u16, now: SystemTime) -> (Meta, request::Parts) {
        let url = CanonicalUrl::parse("http://origin.example/a?b=1").unwrap();
        let (mut client, ()) = http::Request::get("/a?b=1")
            .header(header::HOST, "Origin.Example")
            .header(header::ACCEPT, "*/*")
            .header(header::IF_NONE_MATCH, "\"x\"")
            .body(())
            .unwrap()
            .into_parts();
        client.method = Method::GET;
        let req = policy_request(&url, &client);
        let mut res = http::Response::builder().status(status);
        for (n, v) in headers {
            res = res.header(*n, v.as_str());
        }
        let (head, ()) = res.body(()).unwrap().into_parts();
        let policy = new_policy(&req, &head, now);
        let kept = head
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
            .collect();
        (Meta::new(url.to_string(), policy, status, kept), req)
    }

    #[test]
    fn a_plain_request_gets_the_crates_answer() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let date = |offset: i64| {
            let at = if offset >= 0 {
                t + Duration::from_secs(offset as u64)
            } else {
                t - Duration::from_secs(offset.unsigned_abs())
            };
            httpdate::fmt_http_date(at)
        };
        let cc = |v: &str| ("cache-control", v.to_string());
        let cases: Vec<(u16, Vec<(&str, String)>)> = vec![
            (200, vec![cc("public, max-age=3600")]),
            (200, vec![cc("max-age=0")]),
            (200, vec![cc("s-maxage=10, max-age=1000")]),
            (200, vec![("expires", date(60)), ("date", date(0))]),
            (200, vec![("expires", date(60)), ("date", date(-120))]),
            (
                200,
                vec![("last-modified", date(-864_000)), ("date", date(0))],
            ),
            (200, vec![("age", "100".into()), cc("max-age=150")]),
            (200, vec![cc("must-revalidate, max-age=5")]),
            (200, vec![cc("immutable, max-age=100")]),
            (200, vec![cc("proxy-revalidate, max-age=100")]),
            (200, vec![cc("max-age=100"), ("set-cookie", "a=b".into())]),
            (
                200,
                vec![cc("public, max-age=100"), ("set-cookie", "a=b".into())],
            ),
            (200, vec![cc("private, max-age=100")]),
            (200, vec![cc("no-store")]),
            (200, vec![]),
            (404, vec![cc("max-age=100")]),
            (404, vec![]),
            (302, vec![("last-modified", date(-864_000))]),
            (200, vec![("date", date(-50)), cc("max-age=60")]),
        ];
        let offsets: [i64; 12] = [-10, 0, 1, 4, 5, 59, 61, 99, 101, 3599, 3601, 1_000_000];
        for (status, headers) in &cases {
            let (meta, req) = stored(headers, *status, t);
            for offset in offsets {
                let now = if offset >= 0 {
                    t + Duration::from_secs(offset as u64)
                } else {
                    t - Duration::from_secs(offset.unsigned_abs())
                };
                let by_crate = !stored_has_directive(&meta, "no-cache")
                    && fresh_enough_by_crate(&meta, &req, now);
                assert_eq!(
                    fresh_enough(&meta, &req, now),
                    by_crate,
                    "{status} {headers:?} at +{offset}s"
                );
            }
        }
    }
}
