//! The demo origin, over real loopback sockets.

#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use reef_testnet::client::{self, fetch, fetch_digest};
use reef_testnet::origin::{Pattern, expected_body, expected_digest, expected_etag};
use reef_testnet::{Error, Origin};

const T: Duration = Duration::from_secs(30);

fn any_port() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

async fn get(origin: &Origin, path: &str) -> client::Fetched {
    fetch(None, Method::GET, &origin.url(path), T)
        .await
        .unwrap()
}

fn header<'a>(r: &'a client::Fetched, name: &str) -> &'a str {
    r.headers
        .get(name)
        .unwrap_or_else(|| panic!("missing {name}"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn bytes_route_is_deterministic_and_cacheable() {
    let origin = Origin::start(any_port()).await.unwrap();
    assert!(origin.url("/x").starts_with("http://127.0.0.1:"));
    assert_eq!(origin.url("x"), origin.url("/x"));

    let r = get(&origin, "/bytes/1000").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.body.as_ref(),
        expected_body("/bytes/1000", 1000).as_slice()
    );
    assert_eq!(header(&r, "content-length"), "1000");
    assert_eq!(header(&r, "content-type"), "application/octet-stream");
    assert_eq!(header(&r, "cache-control"), "public, max-age=3600");
    assert_eq!(header(&r, "etag"), expected_etag("/bytes/1000"));
    assert!(httpdate::parse_http_date(header(&r, "last-modified")).is_ok());
    assert!(httpdate::parse_http_date(header(&r, "date")).is_ok());

    // The query changes neither the bytes nor the counter's key.
    let q = get(&origin, "/bytes/1000?v=2").await;
    assert_eq!(q.body, r.body);
    assert_eq!(origin.hits("/bytes/1000"), 2);
    assert_eq!(origin.hits("/bytes/1000?other"), 2);
    assert_eq!(origin.hits(&origin.url("/bytes/1000")), 2);
    assert_eq!(origin.hits("/bytes/999"), 0);

    // Different paths, different bytes; zero-length works.
    let other = get(&origin, "/bytes/999").await;
    assert_ne!(&other.body[..], &r.body[..999]);
    let empty = get(&origin, "/bytes/0").await;
    assert_eq!((empty.status, empty.body.len()), (StatusCode::OK, 0));
    assert_eq!(origin.total_hits(), 4);
    origin.shutdown().await;
}

#[tokio::test]
async fn cache_control_variants() {
    let origin = Origin::start(any_port()).await.unwrap();
    for (path, cc) in [
        ("/nostore/10", "no-store"),
        ("/private/10", "private"),
        ("/maxage/7/10", "public, max-age=7"),
        ("/slow/1/10", "public, max-age=3600"),
    ] {
        let r = get(&origin, path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(header(&r, "cache-control"), cc, "{path}");
        assert_eq!(
            r.body.as_ref(),
            expected_body(path, 10).as_slice(),
            "{path}"
        );
        assert_eq!(origin.hits(path), 1, "{path}");
    }
    origin.shutdown().await;
}

#[tokio::test]
async fn head_has_headers_and_no_body() {
    let origin = Origin::start(any_port()).await.unwrap();
    let r = fetch(None, Method::HEAD, &origin.url("/bytes/5000"), T)
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(header(&r, "content-length"), "5000");
    assert_eq!(header(&r, "etag"), expected_etag("/bytes/5000"));
    assert!(r.body.is_empty());
    assert_eq!(origin.hits("/bytes/5000"), 1);

    let post = fetch(None, Method::POST, &origin.url("/bytes/5"), T)
        .await
        .unwrap();
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(origin.hits("/bytes/5"), 0, "only GET and HEAD count");
    origin.shutdown().await;
}

#[tokio::test]
async fn status_and_not_found() {
    let origin = Origin::start(any_port()).await.unwrap();
    let r = get(&origin, "/status/503").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(String::from_utf8_lossy(&r.body).contains("503"));
    let r = get(&origin, "/status/204").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(r.body.is_empty());
    let r = get(&origin, "/status/404").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    for path in [
        "/",
        "/nope",
        "/bytes/abc",
        "/bytes/1/2",
        "/status/99",
        "/maxage/x/1",
    ] {
        let r = get(&origin, path).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
    }
    assert_eq!(origin.hits("/nope"), 1, "404s are counted too");
    origin.shutdown().await;
}

#[tokio::test]
async fn conditional_requests_get_304() {
    let origin = Origin::start(any_port()).await.unwrap();
    let url = origin.url("/maxage/1/100");
    let send = |name: &'static str, value: String| {
        let url = url.clone();
        async move {
            let stream = tokio::net::TcpStream::connect(
                url.trim_start_matches("http://").split('/').next().unwrap(),
            )
            .await
            .unwrap();
            let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            let req = Request::get("/maxage/1/100")
                .header("host", "origin")
                .header(name, value)
                .body(Empty::<Bytes>::new())
                .unwrap();
            let resp = tx.send_request(req).await.unwrap();
            let status = resp.status();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, body)
        }
    };
    let etag = expected_etag("/maxage/1/100");
    let (status, body) = send("if-none-match", etag.clone()).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());
    let (status, _) = send("if-none-match", "\"other\"".into()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send("if-none-match", format!("\"x\", {etag}")).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    let (status, _) = send(
        "if-modified-since",
        httpdate::fmt_http_date(std::time::SystemTime::now()),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    let (status, body) = send(
        "if-modified-since",
        httpdate::fmt_http_date(std::time::SystemTime::UNIX_EPOCH),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.len(), 100);
    assert_eq!(origin.hits("/maxage/1/100"), 5);
    origin.shutdown().await;
}

#[tokio::test]
async fn slow_delays_the_headers() {
    let origin = Origin::start(any_port()).await.unwrap();
    let start = Instant::now();
    let r = get(&origin, "/slow/300/10").await;
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        r.body.as_ref(),
        expected_body("/slow/300/10", 10).as_slice()
    );
    origin.shutdown().await;
}

#[tokio::test]
async fn hang_never_answers_and_shutdown_still_finishes() {
    let origin = Origin::start(any_port()).await.unwrap();
    let url = origin.url("/hang");
    let pending =
        tokio::spawn(async move { fetch(None, Method::GET, &url, Duration::from_secs(300)).await });
    let r = fetch(
        None,
        Method::GET,
        &origin.url("/hang"),
        Duration::from_millis(200),
    )
    .await;
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    assert_eq!(origin.hits("/hang"), 2);
    // Shutdown must not wait for the hanging requests; their connections are closed.
    tokio::time::timeout(Duration::from_secs(10), origin.shutdown())
        .await
        .expect("shutdown hung");
    let r = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .expect("hanging client not released")
        .unwrap();
    assert!(matches!(r, Err(Error::Http { .. })), "{r:?}");
}

#[tokio::test]
async fn shutdown_releases_the_port() {
    let origin = Origin::start(any_port()).await.unwrap();
    let addr = origin.addr();
    origin.shutdown().await;
    let r = fetch(None, Method::GET, &format!("http://{addr}/bytes/1"), T).await;
    assert!(matches!(r, Err(Error::Http { .. })), "{r:?}");
    // Dropping without shutdown stops it too.
    let origin = Origin::start(any_port()).await.unwrap();
    let addr = origin.addr();
    drop(origin);
    // The aborted task lets go of the listener when the runtime next runs it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "dropped origin still accepts");
        tokio::task::yield_now().await;
    }
}

/// A 1 TiB body: the headers arrive at once and the bytes stream, so the origin cannot
/// be buffering it.
#[tokio::test]
async fn huge_body_streams() {
    let origin = Origin::start(any_port()).await.unwrap();
    let path = "/bytes/1099511627776";
    let resp = tokio::time::timeout(T, client::send(None, Method::GET, &origin.url(path)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-length"], "1099511627776");
    let mut body = resp.into_body();
    let mut pattern = Pattern::new(path);
    let mut read = 0usize;
    while read < 8 * 1024 * 1024 {
        let frame = body.frame().await.unwrap().unwrap();
        let data = frame.into_data().unwrap();
        assert!(pattern.matches(&data), "mismatch at {read}");
        read += data.len();
    }
    drop(body);
    origin.shutdown().await;
}

#[tokio::test]
async fn digest_of_a_large_body_matches() {
    let origin = Origin::start(any_port()).await.unwrap();
    let n = 32 * 1024 * 1024 + 7;
    let path = format!("/bytes/{n}");
    let r = fetch_digest(None, &origin.url(&path), T).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.len, n);
    assert_eq!(r.digest, expected_digest(&path, n));
    assert!(r.first_byte <= r.elapsed);
    origin.shutdown().await;
}

#[tokio::test]
async fn concurrent_requests_are_counted() {
    let origin = Arc::new(Origin::start(any_port()).await.unwrap());
    let fetches = (0..20).map(|_| {
        let url = origin.url("/bytes/4096?c");
        async move { fetch(None, Method::GET, &url, T).await.unwrap() }
    });
    for r in futures::future::join_all(fetches).await {
        assert_eq!(r.body.len(), 4096);
    }
    assert_eq!(origin.hits("/bytes/4096"), 20);
    assert_eq!(origin.total_hits(), 20);
}

#[tokio::test]
async fn tls_origin_serves_https() {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let cert_pem = certified.cert.pem();
    let key_pem = certified.signing_key.serialize_pem();
    let origin = Origin::start_tls(any_port(), &cert_pem, &key_pem)
        .await
        .unwrap();
    assert!(origin.url("/bytes/1").starts_with("https://127.0.0.1:"));

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(origin.addr()).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/bytes/5000")
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.as_ref(), expected_body("/bytes/5000", 5000).as_slice());
    assert_eq!(origin.hits("/bytes/5000"), 1);
    origin.shutdown().await;
}

#[tokio::test]
async fn tls_rejects_bad_pem() {
    let r = Origin::start_tls(any_port(), "not a cert", "not a key").await;
    assert!(matches!(r, Err(Error::Tls(_))), "{r:?}");
}

#[tokio::test]
async fn headers_route_sends_the_fields_the_query_asks_for() {
    let origin = Origin::start(any_port()).await.unwrap();
    let path = "/headers/300/t";
    let r = get(
        &origin,
        &format!("{path}?Cache-Control=max-age%3D60&Cache-Control=must-revalidate&Age=100&Expires=now%2B10&Last-Modified=none"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body.as_ref(), expected_body(path, 300).as_slice());
    let cc: Vec<_> = r.headers.get_all("cache-control").iter().collect();
    assert_eq!(cc, ["max-age=60", "must-revalidate"]);
    assert_eq!(header(&r, "age"), "100");
    assert_eq!(header(&r, "etag"), expected_etag(path));
    assert_eq!(header(&r, "content-length"), "300");
    assert!(!r.headers.contains_key("last-modified"));
    let expires = httpdate::parse_http_date(header(&r, "expires")).unwrap();
    let date = httpdate::parse_http_date(header(&r, "date")).unwrap();
    let ahead = expires.duration_since(date).unwrap();
    assert!(
        ahead <= Duration::from_secs(10) && ahead >= Duration::from_secs(9),
        "{ahead:?}"
    );

    // A given Date replaces the server's.
    let r = get(&origin, &format!("{path}?Date=now-3600")).await;
    let date = httpdate::parse_http_date(header(&r, "date")).unwrap();
    let behind = std::time::SystemTime::now().duration_since(date).unwrap();
    assert!(behind >= Duration::from_secs(3599), "{behind:?}");
    assert_eq!(r.headers.get_all("date").iter().count(), 1);

    let r = get(&origin, &format!("{path}?Content-Length=1")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&r.body).contains("content-length"));
    assert_eq!(origin.hits(path), 3, "counted per path, query aside");
    assert_eq!(origin.not_modified(path), 0);
    origin.shutdown().await;
}

#[tokio::test]
async fn headers_route_answers_conditionals_with_its_fields() {
    let origin = Origin::start(any_port()).await.unwrap();
    let path = "/headers/50";
    let target = format!("{path}?Cache-Control=no-cache&Age=7");
    let req = Request::get(origin.url(&target))
        .header("if-none-match", expected_etag(path))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let stream = tokio::net::TcpStream::connect(origin.addr()).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(resp.headers()["cache-control"], "no-cache");
    assert_eq!(resp.headers()["age"], "7");
    assert!(!resp.headers().contains_key("content-type"));
    assert_eq!(origin.hits(path), 1);
    assert_eq!(origin.not_modified(path), 1);
    origin.shutdown().await;
}
