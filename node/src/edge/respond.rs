//! Phase: respond. Turns what the fetch pipeline found into the client's answer: 304 for a
//! current conditional request, 206/416 for a byte range of a stored object, no body for HEAD,
//! and the labels saying where the response came from.

use http::{HeaderValue, Method, Response, StatusCode, header, request};
use tokio::io::AsyncSeekExt;

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
    let body = match payload {
        Payload::File { file, len } if head.status == StatusCode::OK => {
            head.headers
                .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            let wanted = if req.method == Method::GET {
                range::evaluate(&req.headers, &head.headers, len)
            } else {
                Range::Full
            };
            match wanted {
                Range::Full => body::from_file(file, len),
                Range::Partial { start, end } => {
                    head.status = StatusCode::PARTIAL_CONTENT;
                    let part = end - start + 1;
                    head.headers
                        .insert(header::CONTENT_LENGTH, HeaderValue::from(part));
                    head.headers.insert(
                        header::CONTENT_RANGE,
                        content_range(&format!("{start}-{end}/{len}")),
                    );
                    let mut file = file;
                    match file.seek(std::io::SeekFrom::Start(start)).await {
                        Ok(_) => body::from_file(file, part),
                        Err(e) => {
                            return super::route::text_response(
                                StatusCode::INTERNAL_SERVER_ERROR,
                                &format!("reading the stored object failed: {e}"),
                            );
                        }
                    }
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
        Payload::File { file, len } => body::from_file(file, len),
        Payload::Stream(body) => body,
    };
    if req.method == Method::HEAD {
        return Response::from_parts(head, body::empty());
    }
    Response::from_parts(head, body)
}

fn content_range(spec: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("bytes {spec}")).unwrap_or(HeaderValue::from_static("bytes */0"))
}
