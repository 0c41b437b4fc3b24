//! The fetch client: origin-form when direct, absolute-form through a proxy.

#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use reef_testnet::Error;
use reef_testnet::client::{ResponseHeaders, fetch, fetch_digest};
use tokio::net::TcpListener;

const T: Duration = Duration::from_secs(10);

/// A server that answers every request with its request target and Host, and Reef's
/// provenance headers, as a node acting as forward proxy would.
async fn echo_server() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let host = req.headers()["host"].to_str().unwrap().to_owned();
                    let body = format!("{} {} {host}", req.method(), req.uri());
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("x-cache", "HIT")
                            .header("x-reef-source", "peer")
                            .body(Full::new(Bytes::from(body)))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn direct_requests_use_origin_form() {
    let (addr, task) = echo_server().await;
    let r = fetch(None, Method::GET, &format!("http://{addr}/a/b?c=d"), T)
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        format!("GET /a/b?c=d {addr}")
    );
    assert_eq!(r.x_cache(), Some("HIT"));
    assert_eq!(r.source(), Some("peer"));
    task.abort();
}

#[tokio::test]
async fn proxied_requests_use_absolute_form() {
    let (proxy, task) = echo_server().await;
    for url in [
        "http://origin.test:8080/bytes/10?x=1",
        "https://secure.test/bytes/10",
    ] {
        let r = fetch(Some(proxy), Method::HEAD, url, T).await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.body.is_empty());
        let r = fetch(Some(proxy), Method::GET, url, T).await.unwrap();
        let authority = url.split('/').nth(2).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&r.body),
            format!("GET {url} {authority}")
        );
    }
    let d = fetch_digest(Some(proxy), "http://o.test/z", T)
        .await
        .unwrap();
    let want = "GET http://o.test/z o.test";
    assert_eq!(d.len, want.len() as u64);
    assert_eq!(d.digest, blake3::hash(want.as_bytes()));
    assert_eq!(d.source(), Some("peer"));
    task.abort();
}

#[tokio::test]
async fn errors_are_clear() {
    let r = fetch(None, Method::GET, "https://127.0.0.1:1/x", T).await;
    assert!(matches!(r, Err(Error::Http { .. })), "{r:?}");
    let r = fetch(None, Method::GET, "not a url", T).await;
    assert!(matches!(r, Err(Error::Http { .. })), "{r:?}");
    // Nothing listens on a just-closed port.
    let port = {
        let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        l.local_addr().unwrap().port()
    };
    let r = fetch(None, Method::GET, &format!("http://127.0.0.1:{port}/"), T).await;
    let err = r.unwrap_err().to_string();
    assert!(err.contains("connecting to 127.0.0.1"), "{err}");
}
