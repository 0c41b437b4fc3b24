//! The edge under abusive clients: slow-header connections (slowloris) and idle ones do not
//! stop normal clients and are dropped in bounded time; one address cannot hold more than its
//! share of connections; request smuggling shapes and oversize requests get 400, 431 or 414
//! (never a hang, a panic or a 200), and the node serves on.

use std::time::Duration;

use http::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::limits::{connect_from, request_from, wait_metric};
use crate::support::{JOIN_TIMEOUT, launch_configured};

const SLOW: &str = r#"
[limits]
header_read_timeout = 8
client_connections = 80
"#;

/// Slow connections per address, and their addresses (127.0.0.<n>): more than the cap of 80.
const SLOW_PER_ADDRESS: usize = 100;
const SLOW_ADDRESSES: [u8; 3] = [20, 21, 22];
/// Whatever the machine's load, a slow connection is gone well within this.
const SLOW_BOUND: Duration = Duration::from_secs(90);

/// How a trickling connection ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// Refused at once with a 429 (over the per-address cap), or reset before a byte.
    Refused,
    /// Closed by the node after its header timeout.
    Closed,
}

/// Opens a connection and sends a header line every 250 ms, forever; returns how the node
/// ended it.
async fn trickle(stream: std::io::Result<tokio::net::TcpStream>) -> Ended {
    let Ok(mut stream) = stream else {
        return Ended::Refused;
    };
    let _ = stream
        .write_all(b"GET /slow HTTP/1.1\r\nHost: a.example\r\n")
        .await;
    let mut buf = [0u8; 512];
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => return match read {
                Ok(n) if n > 0 && buf[..n].starts_with(b"HTTP/1.1 429") => Ended::Refused,
                Ok(0) => Ended::Closed,
                Ok(_) => Ended::Closed,
                Err(_) => Ended::Refused,
            },
            () = tokio::time::sleep(Duration::from_millis(250)) => {
                let _ = stream.write_all(b"X-Slow: 1\r\n").await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_do_not_stop_normal_ones_and_are_dropped_in_time() {
    let net = launch_configured(1, 1, &[SLOW]).await;
    let node = net.http(0);
    let url = net.testnet.origin.url("/bytes/1000");

    // A connection that never sends a byte is dropped after the header timeout.
    let mut silent = connect_from(23, node).await.expect("connect");
    // So is one that stops halfway through an HTTP/2 preface (hyper-util waits for the rest
    // to choose the protocol).
    let mut preface = connect_from(23, node).await.expect("connect");
    preface
        .write_all(b"PRI * HTTP/2.0\r\n")
        .await
        .expect("write");
    // An idle keep-alive connection is dropped too, after its one response.
    let mut idle = connect_from(23, node).await.expect("connect");
    idle.write_all(format!("GET {url} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .expect("write");

    // Every slow connection is opened first, so they all hold their slots at once.
    let mut slow = Vec::new();
    for &last in &SLOW_ADDRESSES {
        for _ in 0..SLOW_PER_ADDRESS {
            slow.push(tokio::spawn(trickle(connect_from(last, node).await)));
        }
    }
    // Meanwhile a normal client on another address is served.
    for _ in 0..5 {
        let got = request_from(24, node, Request::get(&url)).await;
        assert_eq!(got.status, 200, "{}", got.text());
    }

    let mut ended = Vec::new();
    for task in slow {
        let how = tokio::time::timeout(SLOW_BOUND, task)
            .await
            .expect("a slow connection outlives the header timeout")
            .expect("trickle task");
        ended.push(how);
    }
    let refused = ended.iter().filter(|e| **e == Ended::Refused).count();
    let closed = ended.len() - refused;
    // 20 per address over the cap of 80, unless early ones had timed out already.
    assert!(
        refused >= 1 && closed >= 80,
        "refused {refused}, closed {closed}"
    );
    wait_metric(
        &net,
        0,
        "reef_connections_refused_total{reason=\"per_client\"}",
        1.0,
    )
    .await;
    wait_metric(
        &net,
        0,
        "reef_rejected_requests_total{reason=\"header_timeout\"}",
        80.0,
    )
    .await;

    let mut out = Vec::new();
    let read = tokio::time::timeout(SLOW_BOUND, silent.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "a silent connection is closed");
    assert!(out.is_empty());
    let mut out = Vec::new();
    let read = tokio::time::timeout(SLOW_BOUND, preface.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "a half preface is closed");
    let mut out = Vec::new();
    let read = tokio::time::timeout(SLOW_BOUND, idle.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "an idle keep-alive connection is closed");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");

    // Now that they are gone, the limited addresses are served again.
    let got = request_from(SLOW_ADDRESSES[0], node, Request::get(&url)).await;
    assert_eq!(got.status, 200);
}

fn status_of(raw: &str) -> u16 {
    raw.lines()
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_shapes_and_oversize_requests_are_refused_with_a_status() {
    let net = launch_configured(1, 1, &[]).await;
    let node = net.http(0);
    let origin = net.testnet.origin.addr();
    let target = format!("http://{origin}/writable/1");
    let get = format!("GET http://{origin}/bytes/10 HTTP/1.1\r\nHost: {origin}\r\n");
    let post = format!("POST {target} HTTP/1.1\r\nHost: {origin}\r\n");
    let many_headers: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases: Vec<(&str, String, u16)> = vec![
        (
            "GET with both Content-Length and Transfer-Encoding",
            format!("{get}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            400,
        ),
        (
            "GET with Transfer-Encoding before Content-Length",
            format!("{get}Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"),
            400,
        ),
        (
            "GET with a body",
            format!("{get}Content-Length: 5\r\n\r\nhello"),
            400,
        ),
        (
            "differing Content-Lengths",
            format!("{post}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
            400,
        ),
        (
            "a Content-Length that is no number",
            format!("{post}Content-Length: 5x\r\n\r\nhello"),
            400,
        ),
        (
            "Transfer-Encoding with chunked not last",
            format!("{post}Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"),
            400,
        ),
        (
            "Transfer-Encoding without chunked",
            format!("{post}Transfer-Encoding: gzip\r\n\r\n"),
            400,
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            format!(
                "POST {target} HTTP/1.0\r\nHost: {origin}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
            400,
        ),
        (
            "an invalid chunk size",
            format!("{get}Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
            400,
        ),
        ("obs-fold", format!("{get}X-Folded: a\r\n b\r\n\r\n"), 400),
        (
            "NUL in a header value",
            format!("{get}X-A: a\0b\r\n\r\n"),
            400,
        ),
        (
            "CR in a header value",
            format!("{get}X-A: a\rb\r\n\r\n"),
            400,
        ),
        (
            "space before the colon",
            format!("{get}X-A : b\r\n\r\n"),
            400,
        ),
        (
            "too many header lines",
            format!("{get}{many_headers}\r\n"),
            431,
        ),
        (
            "a header over our 16 KiB budget",
            format!("{get}X-Big: {}\r\n\r\n", "a".repeat(20 * 1024)),
            431,
        ),
        (
            "headers over hyper's 64 KiB buffer",
            format!("{get}X-Big: {}\r\n\r\n", "a".repeat(70 * 1024)),
            431,
        ),
        (
            "a URL over 8 KiB",
            format!(
                "GET http://{origin}/{} HTTP/1.1\r\nHost: {origin}\r\n\r\n",
                "a".repeat(9 * 1024)
            ),
            414,
        ),
    ];
    for (what, request, want) in &cases {
        // Connection: close is not added: each case must end the exchange on its own, or
        // `raw_exchange`'s bound fails the test.
        let raw = tokio::time::timeout(
            JOIN_TIMEOUT * 2,
            raw_exchange_closing(node, request.as_bytes()),
        )
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer and no close"));
        assert_eq!(status_of(&raw), *want, "{what}:\n{raw}");
    }
    // The node serves on, and counted what it refused.
    let got = request_from(25, node, Request::get(net.testnet.origin.url("/bytes/10"))).await;
    assert_eq!(got.status, 200);
    wait_metric(
        &net,
        0,
        "reef_rejected_requests_total{reason=\"malformed\"}",
        10.0,
    )
    .await;
    wait_metric(
        &net,
        0,
        "reef_rejected_requests_total{reason=\"headers_too_large\"}",
        3.0,
    )
    .await;
    wait_metric(
        &net,
        0,
        "reef_rejected_requests_total{reason=\"uri_too_long\"}",
        1.0,
    )
    .await;
    assert!(net.testnet.nodes[0].healthy().await);
}

/// Sends `request` and reads until the node closes the connection, or until the first
/// response is complete when the node keeps the connection open (our own 4xx answers do).
async fn raw_exchange_closing(node: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(node).await.expect("connect");
    let _ = stream.write_all(request).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
        let text = String::from_utf8_lossy(&out);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if body.len() >= len {
                break;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
