//! Quotas and client limits through a real node: a service over its bandwidth quota gets
//! 429s while another is served, a client over its request rate gets 429s while others do
//! not, a client sweeping URLs that all miss is detected and served only from the cache, and
//! a trickled request body is cut. Clients talk from their own 127.x addresses.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::{Fetched, JOIN_TIMEOUT, REQUEST_TIMEOUT, launch_configured, wait_stored};

/// A TCP connection to `node` from the loopback address `127.0.0.<last>`.
pub async fn connect_from(last: u8, node: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)),
        0,
    ))?;
    socket.connect(node).await
}

/// One request to `node` from `127.0.0.<last>`.
pub async fn request_from(last: u8, node: SocketAddr, builder: http::request::Builder) -> Fetched {
    let req = builder.body(Empty::<Bytes>::new()).expect("request");
    tokio::time::timeout(REQUEST_TIMEOUT, async {
        let stream = connect_from(last, node).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let resp = sender.send_request(req).await.expect("response");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Fetched {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    })
    .await
    .expect("answered in time")
}

/// The value of the sample `series` (name and labels as written) in the node's `/metrics`.
pub async fn metric(net: &crate::support::Net, node: usize, series: &str) -> f64 {
    let admin = net.testnet.nodes[node].runtime().admin;
    let url = format!("http://{admin}/metrics");
    let got = reef_testnet::client::fetch(None, http::Method::GET, &url, REQUEST_TIMEOUT)
        .await
        .expect("scrape");
    let text = String::from_utf8_lossy(&got.body).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{series} not in /metrics:\n{text}"))
}

/// Waits until `series` reaches `at_least`: counts made as a connection ends may land just
/// after the client saw it end.
pub async fn wait_metric(net: &crate::support::Net, node: usize, series: &str, at_least: f64) {
    let deadline = tokio::time::Instant::now() + JOIN_TIMEOUT;
    loop {
        let v = metric(net, node, series).await;
        if v >= at_least {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} stayed at {v}, below {at_least}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn retry_after(got: &Fetched) -> u64 {
    got.header("retry-after")
        .parse()
        .unwrap_or_else(|_| panic!("a 429 carries Retry-After: {:?}", got.headers))
}

const QUOTAS: &str = r#"
[services."a.example"]
origin = "{origin}"
bandwidth = "1KB/s"
bandwidth_burst = "1KB"
[services."b.example"]
origin = "{origin}"
bandwidth = "100MB/s"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_over_its_bandwidth_quota_gets_429_while_another_is_served() {
    let net = launch_configured(1, 1, &[QUOTAS]).await;
    let node = net.http(0);
    let get = |host: &'static str, path: &'static str| {
        request_from(30, node, Request::get(path).header("host", host))
    };
    // 100 kB at 1 kB/s: about 99 s of debt, far longer than this test takes.
    let first = get("a.example", "/bytes/100000").await;
    assert_eq!((first.status.as_u16(), first.body.len()), (200, 100_000));
    let refused = get("a.example", "/bytes/10").await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    let wait = retry_after(&refused);
    assert!((1..=100).contains(&wait), "Retry-After {wait}");
    assert!(refused.text().contains("bandwidth"), "{}", refused.text());
    assert_eq!(refused.text().lines().count(), 1);
    assert_eq!(net.testnet.origin.hits("/bytes/10"), 0);

    // Another service of the same node is not affected, whoever asks.
    for path in ["/bytes/100000", "/bytes/100001"] {
        let other = get("b.example", path).await;
        assert_eq!(other.status, 200, "{}", other.text());
    }
    let other = request_from(
        31,
        node,
        Request::get("/bytes/10").header("host", "b.example"),
    )
    .await;
    assert_eq!(other.status, 200);
    // A's cached object is refused as well: the quota is on what is sent, hit or miss.
    wait_stored(&net, 0, 1).await;
    let again = get("a.example", "/bytes/100000").await;
    assert_eq!(again.status, 429);

    assert!(
        metric(
            &net,
            0,
            "reef_throttled_requests_total{reason=\"bandwidth\"}"
        )
        .await
            >= 2.0
    );
    let status = net.testnet.nodes[0].status().await.expect("status");
    let debt = status["limits"]["bandwidth_debt_s"]["a.example"]
        .as_f64()
        .unwrap_or(0.0);
    assert!(debt > 1.0, "{status}");
    assert_eq!(
        status["limits"]["bandwidth_debt_s"]["b.example"], 0.0,
        "{status}"
    );
}

const RATE: &str = r#"
[limits]
client_rps = 0.01
client_burst = 3
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_request_rate_gets_429_and_others_do_not() {
    let net = launch_configured(1, 1, &[RATE]).await;
    let node = net.http(0);
    let url = net.testnet.origin.url("/bytes/100");
    // Three at once are the burst; the fourth has to wait for a token (100 s at 0.01/s).
    for _ in 0..3 {
        let got = request_from(40, node, Request::get(&url)).await;
        assert_eq!(got.status, 200, "{}", got.text());
    }
    let refused = request_from(40, node, Request::get(&url)).await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert!((1..=100).contains(&retry_after(&refused)));
    assert!(
        refused.text().contains("too many requests"),
        "{}",
        refused.text()
    );

    // Another address has its own bucket.
    let other = request_from(41, node, Request::get(&url)).await;
    assert_eq!(other.status, 200);
    // A peer's object fetch is node-to-node traffic, not a client request: not throttled.
    let key = "0".repeat(64);
    let object = request_from(40, node, Request::get(format!("/_reef/object/{key}"))).await;
    assert_eq!(object.status, 404, "{}", object.text());
    assert_eq!(
        metric(
            &net,
            0,
            "reef_throttled_requests_total{reason=\"client_rate\"}"
        )
        .await,
        1.0
    );
}

const SWEEP: &str = r#"
[limits]
sweep_misses = 10
sweep_window = 600
sweep_cooldown = 600
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sweeping_misses_is_detected_and_served_only_from_the_cache() {
    let net = launch_configured(1, 1, &[SWEEP]).await;
    let node = net.http(0);
    let origin = &net.testnet.origin;
    const SWEEPER: u8 = 50;
    const OTHER: u8 = 51;
    // Someone else makes one object popular first.
    let popular = origin.url("/bytes/5000");
    assert_eq!(
        request_from(OTHER, node, Request::get(&popular))
            .await
            .status,
        200
    );
    wait_stored(&net, 0, 1).await;

    // Ten objects nobody asked for, one after another: every one from the origin.
    for i in 0..10 {
        let got = request_from(
            SWEEPER,
            node,
            Request::get(origin.url(&format!("/bytes/{}", 7000 + i))),
        )
        .await;
        assert_eq!((got.status.as_u16(), got.source()), (200, "origin"));
    }
    assert_eq!(
        metric(&net, 0, "reef_abuse_detected_total{kind=\"miss_sweep\"}").await,
        1.0
    );
    // Its next miss is refused without asking the origin; what is cached is still served.
    let refused = request_from(SWEEPER, node, Request::get(origin.url("/bytes/7100"))).await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert!(retry_after(&refused) > 60);
    assert_eq!(origin.hits("/bytes/7100"), 0);
    let hit = request_from(SWEEPER, node, Request::get(&popular)).await;
    assert_eq!((hit.status.as_u16(), hit.source()), (200, "local"));
    // Other clients are not affected.
    let other = request_from(OTHER, node, Request::get(origin.url("/bytes/7101"))).await;
    assert_eq!((other.status.as_u16(), other.source()), (200, "origin"));

    assert_eq!(
        metric(
            &net,
            0,
            "reef_throttled_requests_total{reason=\"miss_sweep\"}"
        )
        .await,
        1.0
    );
    let status = net.testnet.nodes[0].status().await.expect("status");
    assert_eq!(status["limits"]["miss_sweeps"], 1, "{status}");
    let log = std::fs::read_to_string(net.testnet.nodes[0].log_path()).unwrap_or_default();
    let warned: Vec<&str> = log.lines().filter(|l| l.contains("miss sweep")).collect();
    assert_eq!(warned.len(), 1, "one warning per episode:\n{log}");
    assert!(warned[0].contains("127.0.0.50"), "{}", warned[0]);
}

const BODY: &str = r#"
[limits]
body_read_timeout = 1
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_request_body_is_cut() {
    let net = launch_configured(1, 1, &[BODY]).await;
    let node = net.http(0);
    // An origin that reads whatever it is sent and never answers: only the body deadline can
    // end the upload.
    let sink = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let origin = sink.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = sink.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    let mut stream = connect_from(60, node).await.expect("connect");
    let head = format!(
        "POST http://{origin}/upload HTTP/1.1\r\nHost: {origin}\r\nContent-Length: 100000\r\n\r\nab"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    // A byte now and then, forever.
    let answer = tokio::time::timeout(JOIN_TIMEOUT * 2, async {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            tokio::select! {
                read = stream.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return got,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                },
                () = tokio::time::sleep(std::time::Duration::from_millis(200)) => {
                    let _ = stream.write_all(b"x").await;
                }
            }
        }
    })
    .await
    .expect("the node ends a trickling upload");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("did not arrive in time"), "{text}");
    assert_eq!(
        metric(
            &net,
            0,
            "reef_rejected_requests_total{reason=\"body_timeout\"}"
        )
        .await,
        1.0
    );
    // The node serves on.
    let got = request_from(61, node, Request::get(net.testnet.origin.url("/bytes/10"))).await;
    assert_eq!(got.status, 200);
}

/// A ceiling of one request a second (and a burst of one).
const CEILING: &str = r#"
capacity_rps = 2
[limits]
shed_above_capacity = 0.5
[services."video.example"]
origin = "{origin}"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_over_its_ceiling_without_a_peer_refuses_at_once_with_503() {
    let net = launch_configured(1, 1, &[CEILING]).await;
    let node = net.http(0);
    let get = || {
        request_from(
            50,
            node,
            Request::get("/bytes/100").header("host", "video.example"),
        )
    };
    let first = get().await;
    assert_eq!(first.status, 200, "{}", first.text());
    // The next within the second is past the ceiling, and no arrangement can take it.
    let refused = get().await;
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert_eq!(retry_after(&refused), 1);
    assert_eq!(refused.header("cache-control"), "no-store");
    assert!(
        refused.text().contains("serving all it can"),
        "{}",
        refused.text()
    );
    // A forward-proxy request is a client request too.
    let url = net.testnet.origin.url("/bytes/101");
    let proxied = request_from(50, node, Request::get(&url)).await;
    assert_eq!(proxied.status, 503, "{}", proxied.text());
    assert_eq!(net.testnet.origin.hits("/bytes/101"), 0);
    // Node-to-node traffic is not held to it.
    let key = "0".repeat(64);
    let object = request_from(50, node, Request::get(format!("/_reef/object/{key}"))).await;
    assert_eq!(object.status, 404, "{}", object.text());

    assert_eq!(metric(&net, 0, "reef_shed_requests_total").await, 2.0);
    let status = net.testnet.nodes[0].status().await.expect("status");
    assert_eq!(status["limits"]["shed"], 2, "{status}");
    assert_eq!(status["limits"]["ceiling_rps"], 1.0, "{status}");
    // The bucket refills: a second later the node serves again.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let later = get().await;
    assert_eq!(later.status, 200, "{}", later.text());
}
