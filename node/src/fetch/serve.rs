//! What the fetch path hands to the respond phase: a stored copy, a fill being followed, or
//! an upstream response streamed through, each with its labels.

use std::time::SystemTime;

use http::{HeaderMap, HeaderValue, StatusCode, header, response};
use reef_cache::{HitBody, Meta};

use super::Source;
use crate::body::{self, Body};

/// A response ready for the respond phase (conditionals, ranges, HEAD, labels).
pub struct Served {
    pub head: response::Parts,
    pub payload: Payload,
    pub source: Source,
    pub cache: CacheStatus,
}

/// The body of a served response: a stored body (in memory or in its file) can be sliced for
/// ranges, a stream cannot.
pub enum Payload {
    Memory(bytes::Bytes),
    File { file: std::fs::File, len: u64 },
    Stream(Body),
}

/// What `X-Cache` says about how the stored copy was used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
    Stale,
    /// A stale stored copy the origin confirmed with 304; its headers were refreshed.
    Revalidated,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "HIT",
            Self::Miss => "MISS",
            Self::Stale => "STALE",
            Self::Revalidated => "REVALIDATED",
        }
    }
}

/// Status and headers of a stored response, with `Age` brought up to `now`.
/// `Date` stays the origin's, so hopping between nodes never makes a copy look younger.
/// `committed_len` is the stored body's length; None while it is still arriving, when the
/// origin's own `Content-Length` (if any) stands.
pub(super) fn stored_head(
    meta: &Meta,
    now: SystemTime,
    committed_len: Option<u64>,
) -> response::Parts {
    stored_head_with(meta.header_map(), meta, now, committed_len)
}

/// `stored_head` with the stored header fields already made (`Meta::header_map`).
fn stored_head_with(
    headers: HeaderMap,
    meta: &Meta,
    now: SystemTime,
    committed_len: Option<u64>,
) -> response::Parts {
    let (mut head, ()) = http::Response::new(()).into_parts();
    head.status = StatusCode::from_u16(meta.status).unwrap_or(StatusCode::OK);
    head.headers = headers;
    head.headers.insert(
        header::AGE,
        HeaderValue::from(meta.policy.age(now).as_secs()),
    );
    if let Some(len) = committed_len {
        head.headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    head
}

/// A committed local copy, served from its file (so the respond phase can slice ranges).
pub(super) fn serve_hit(hit: reef_cache::Hit, now: SystemTime, cache: CacheStatus) -> Served {
    let len = hit.meta.body_len;
    Served {
        head: stored_head_with((*hit.headers).clone(), &hit.meta, now, Some(len)),
        payload: match hit.body {
            HitBody::Memory(bytes) => Payload::Memory(bytes),
            HitBody::File(file) => Payload::File { file, len },
        },
        source: Source::Local,
        cache,
    }
}

/// A stored body as a response body, whole.
pub(super) fn stored_body(body: HitBody, len: u64) -> Body {
    match body {
        HitBody::Memory(bytes) => body::full(bytes),
        HitBody::File(file) => body::from_stored_file(file, 0, len),
    }
}

pub(super) fn serve_tail(tail: reef_cache::Tail, source: Source) -> Served {
    let head = stored_head(tail.meta(), SystemTime::now(), None);
    Served {
        head,
        payload: Payload::Stream(body::from_tail(tail)),
        source,
        cache: CacheStatus::Miss,
    }
}

pub(super) fn pass_through(head: response::Parts, body: Body, source: Source) -> Served {
    Served {
        head,
        payload: Payload::Stream(body),
        source,
        cache: CacheStatus::Miss,
    }
}
