//! HTTP caching semantics through a real node: conditional requests, ranges, HEAD,
//! only-if-cached and stale-if-error.

use http::Request;
use reef_testnet::origin::{Origin, expected_body};

use crate::support::{get_via, launch, request_via, wait_stored};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_requests_get_304_from_the_cache() {
    let net = launch(1, &[]).await;
    let node = net.http(0);
    let path = "/bytes/500";
    let url = net.testnet.origin.url(path);

    // Even a miss is answered 304 when the client's copy is current.
    let etag = reef_testnet::origin::expected_etag(path);
    let got = request_via(node, Request::get(&url).header("if-none-match", &etag)).await;
    assert_eq!(got.status, 304);
    assert!(got.body.is_empty());
    wait_stored(&net, 0, 1).await;

    let full = get_via(node, &url).await;
    assert_eq!(full.header("x-cache"), "HIT");
    assert_eq!(full.header("etag"), etag);
    let last_modified = full.header("last-modified").to_string();

    let got = request_via(
        node,
        Request::get(&url).header("if-none-match", format!("W/{etag}")),
    )
    .await;
    assert_eq!((got.status.as_u16(), got.header("x-cache")), (304, "HIT"));
    assert!(got.body.is_empty());
    let got = request_via(
        node,
        Request::get(&url).header("if-modified-since", &last_modified),
    )
    .await;
    assert_eq!(got.status, 304);
    let got = request_via(
        node,
        Request::get(&url).header("if-none-match", "\"other\""),
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, expected_body(path, 500));
    assert_eq!(net.testnet.origin.hits(path), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_are_served_from_the_stored_object() {
    let net = launch(1, &[]).await;
    let node = net.http(0);
    let path = "/bytes/1000";
    let url = net.testnet.origin.url(path);
    let body = expected_body(path, 1000);

    // A range on a miss fetches the whole object once (and may answer in full).
    let first = request_via(node, Request::get(&url).header("range", "bytes=10-19")).await;
    assert!(
        first.status == 200 || first.status == 206,
        "{}",
        first.status
    );
    assert_eq!(net.testnet.origin.hits(path), 1);
    wait_stored(&net, 0, 1).await;

    let got = request_via(node, Request::get(&url).header("range", "bytes=10-19")).await;
    assert_eq!(got.status, 206);
    assert_eq!(got.header("content-range"), "bytes 10-19/1000");
    assert_eq!(got.body, body[10..20]);
    let got = request_via(node, Request::get(&url).header("range", "bytes=-5")).await;
    assert_eq!(got.status, 206);
    assert_eq!(got.body, body[995..]);
    let got = request_via(node, Request::get(&url).header("range", "bytes=990-")).await;
    assert_eq!(got.header("content-range"), "bytes 990-999/1000");
    assert_eq!(got.body, body[990..]);

    let got = request_via(node, Request::get(&url).header("range", "bytes=1000-")).await;
    assert_eq!(got.status, 416, "{}", got.text());
    assert_eq!(got.header("content-range"), "bytes */1000");

    // If-Range with another validator: the whole, current object.
    let got = request_via(
        node,
        Request::get(&url)
            .header("range", "bytes=0-0")
            .header("if-range", "\"stale\""),
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, body);
    assert_eq!(net.testnet.origin.hits(path), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_and_only_if_cached() {
    let net = launch(1, &[]).await;
    let node = net.http(0);
    let path = "/bytes/700";
    let url = net.testnet.origin.url(path);

    let got = request_via(
        node,
        Request::get(&url).header("cache-control", "only-if-cached"),
    )
    .await;
    assert_eq!(got.status, 504, "{}", got.text());
    assert_eq!(net.testnet.origin.hits(path), 0);

    let head = request_via(node, Request::head(&url)).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    wait_stored(&net, 0, 1).await;
    let head = request_via(node, Request::head(&url)).await;
    assert_eq!(head.header("x-cache"), "HIT");
    assert_eq!(head.header("content-length"), "700");
    assert!(head.body.is_empty());

    let got = request_via(
        node,
        Request::get(&url).header("cache-control", "only-if-cached"),
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, expected_body(path, 700));
    assert_eq!(net.testnet.origin.hits(path), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_copy_is_revalidated_and_stands_in_for_a_dead_origin_only_when_allowed() {
    let net = launch(1, &[]).await;
    let node = net.http(0);
    let origin = Origin::start("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("origin");
    // max-age=0: stored, but stale at once, so every request revalidates.
    let path = "/maxage/0/300";
    let url = origin.url(path);
    let first = get_via(node, &url).await;
    assert_eq!(first.source(), "origin");
    wait_stored(&net, 0, 1).await;

    // The origin answers the conditional request with 304: the stored body is served, and
    // the refreshed headers keep the object's validator.
    let again = get_via(node, &url).await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.header("x-cache"), "REVALIDATED");
    assert_eq!(again.source(), "local");
    assert_eq!(again.header("etag"), first.header("etag"));
    assert_eq!(again.body, expected_body(path, 300));
    assert_eq!(origin.hits(path), 2, "one full fetch, one revalidation");
    let status = net.testnet.nodes[0].status().await.expect("status");
    assert_eq!(status["cache"]["objects"], 1, "{status}");
    origin.shutdown().await;

    let got = request_via(
        node,
        Request::get(&url).header("cache-control", "stale-if-error=60"),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.header("x-cache"), "STALE");
    assert_eq!(got.source(), "local");
    assert_eq!(got.body, expected_body(path, 300));

    let got = get_via(node, &url).await;
    assert_eq!(got.status, 502, "without stale-if-error the failure shows");
}
