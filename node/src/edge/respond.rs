//! Phase: respond. Turns what the fetch pipeline found into the client's answer: 304 for a
//! current conditional request, 206/416 for a byte range of a stored object, no body for HEAD,
//! and the labels saying where the response came from.

use http::{HeaderValue, Method, Response, StatusCode, header, request};

use super::conditional::{not_modified, strip_for_304};
use super::range::{self, Range};
use crate::body::{self, Body};
use crate::fetch::{Payload, Served};

pub async fn respond(served: Served, req: &request::Parts) -> Response<Body> {
    let labels = [
        ("x-cache", served.cache.as_str()),
        ("x-reef-source", served.source.as_str()),
    ];
    let mut resp = answer(served, req).await;
    for (name, value) in labels {
        resp.headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    resp
}

async fn answer(served: Served, req: &request::Parts) -> Response<Body> {
    let Served {
        mut head, payload, ..
    } = served;
    let readable = req.method == Method::GET || req.method == Method::HEAD;
    if readable && head.status == StatusCode::OK && not_modified(&req.headers, &head.headers) {
        head.status = StatusCode::NOT_MODIFIED;
        strip_for_304(&mut head.headers);
        return Response::from_parts(head, body::empty());
    }
    let len = match &payload {
        Payload::Memory(bytes) => Some(bytes.len() as u64),
        Payload::File { len, .. } => Some(*len),
        Payload::Stream(_) => None,
    };
    let body = match (payload, len) {
        (payload, Some(len)) if head.status == StatusCode::OK => {
            head.headers
                .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            let wanted = if req.method == Method::GET {
                range::evaluate(&req.headers, &head.headers, len)
            } else {
                Range::Full
            };
            match wanted {
                Range::Full => stored(payload, 0, len),
                Range::Partial { start, end } => {
                    head.status = StatusCode::PARTIAL_CONTENT;
                    let part = end - start + 1;
                    head.headers
                        .insert(header::CONTENT_LENGTH, HeaderValue::from(part));
                    head.headers.insert(
                        header::CONTENT_RANGE,
                        content_range(&format!("{start}-{end}/{len}")),
                    );
                    stored(payload, start, part)
                }
                Range::Unsatisfiable => {
                    let mut resp = super::route::text_response(
                        StatusCode::RANGE_NOT_SATISFIABLE,
                        &format!("the object is {len} bytes; the requested range is outside it"),
                    );
                    resp.headers_mut()
                        .insert(header::CONTENT_RANGE, content_range(&format!("*/{len}")));
                    return resp;
                }
            }
        }
        (payload, len) => stored(payload, 0, len.unwrap_or(0)),
    };
    if req.method == Method::HEAD {
        return Response::from_parts(head, body::empty());
    }
    Response::from_parts(head, body)
}

/// `len` bytes of a payload from `start` (a stream is passed on whole).
fn stored(payload: Payload, start: u64, len: u64) -> Body {
    match payload {
        Payload::Memory(bytes) => {
            let start = usize::try_from(start)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            let end = usize::try_from(len)
                .map_or(bytes.len(), |len| start.saturating_add(len))
                .min(bytes.len());
            body::full(bytes.slice(start..end))
        }
        Payload::File { file, .. } => body::from_stored_file(file, start, len),
        Payload::Stream(body) => body,
    }
}

fn content_range(spec: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("bytes {spec}")).unwrap_or(HeaderValue::from_static("bytes */0"))
}
