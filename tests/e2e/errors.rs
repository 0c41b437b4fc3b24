//! Bad input and failing origins get a status and a one-line reason, never a hang or a crash.

use http::Request;

use crate::support::{get_via, launch, raw_exchange, request_via};

fn status_line(raw: &str) -> &str {
    raw.lines().next().unwrap_or("")
}

fn body_of(raw: &str) -> &str {
    raw.split("\r\n\r\n").nth(1).unwrap_or("").trim()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_and_failing_origins_get_clear_errors() {
    let net = launch(1, &["--origin-timeout", "1"]).await;
    let node = net.http(0);

    // A scheme we do not fetch.
    let raw = raw_exchange(
        node,
        b"GET ftp://example.com/x HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(status_line(&raw).contains(" 400 "), "{raw}");
    assert!(body_of(&raw).contains("scheme"), "{raw}");

    // Not a proxy request, and not for a service anybody publishes.
    let raw = raw_exchange(
        node,
        b"GET /just/a/path HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(status_line(&raw).contains(" 404 "), "{raw}");
    assert!(body_of(&raw).contains("not a service"), "{raw}");
    assert!(body_of(&raw).contains("absolute"), "{raw}");
    // Not a proxy request, and addressed to the node itself.
    let raw = raw_exchange(
        node,
        b"GET /just/a/path HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(status_line(&raw).contains(" 400 "), "{raw}");
    assert!(body_of(&raw).contains("absolute"), "{raw}");

    // An origin that refuses connections.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let got = get_via(node, &format!("http://{closed}/x")).await;
    assert_eq!(got.status, 502, "{}", got.text());
    assert!(got.text().contains("cannot reach origin"), "{}", got.text());
    assert_eq!(got.text().trim().lines().count(), 1);

    // An origin that accepts but never answers.
    let got = get_via(node, &net.testnet.origin.url("/hang")).await;
    assert_eq!(got.status, 504, "{}", got.text());
    assert!(got.text().contains("did not answer"), "{}", got.text());

    // Oversized request headers.
    let big = "x".repeat(20 * 1024);
    let got = request_via(
        node,
        Request::get(net.testnet.origin.url("/bytes/10")).header("x-big", big),
    )
    .await;
    assert_eq!(got.status, 431, "{}", got.text());
    assert!(got.text().contains("limit"), "{}", got.text());

    // A failed fetch leaves nothing behind: the cache is still empty.
    let status = net.testnet.nodes[0].status().await.expect("status");
    assert_eq!(status["cache"]["objects"], 0, "{status}");

    // The node is still healthy after all of that.
    let ok = get_via(node, &net.testnet.origin.url("/bytes/10")).await;
    assert_eq!(ok.status, 200);
}
