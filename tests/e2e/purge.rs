//! Purge through the admin API: the purged node and every node of its provider drop the
//! object within 2 s, other providers keep theirs, and the DHT stops naming the purged nodes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use reef_testnet::origin::expected_body;
use reef_testnet::{NodeProcess, NodeSpec, node_ip};
use serde_json::Value;
use tokio::net::TcpStream;

use crate::support::{
    JOIN_TIMEOUT, Net, REQUEST_TIMEOUT, get_via, launch, reef_bin, wait_announced, wait_stored,
};

/// What the issue promises: every node of the provider has dropped the object by then.
const PURGE_DEADLINE: Duration = Duration::from_secs(2);
/// How long the tests keep polling before giving up; longer than the promise, so that a slow
/// run reports the time it took instead of only "too slow".
const POLL_LIMIT: Duration = Duration::from_secs(15);
/// Status poll interval while timing a purge: fine enough to measure against 2 s.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// POSTs `body` to `path` on an admin address; returns the status and the body text.
async fn post(admin: SocketAddr, path: &str, body: &str) -> (StatusCode, String) {
    let req = Request::post(format!("http://{admin}{path}"))
        .header("host", admin.to_string())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    tokio::time::timeout(REQUEST_TIMEOUT, async {
        let stream = TcpStream::connect(admin).await.expect("connect to admin");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let resp = sender.send_request(req).await.expect("response");
        let status = resp.status();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    })
    .await
    .expect("admin answered in time")
}

async fn purge(admin: SocketAddr, field: &str, url: &str) -> Value {
    let (status, body) = post(admin, "/api/purge", &format!(r#"{{"{field}": "{url}"}}"#)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    serde_json::from_str(&body).expect("purge answer is JSON")
}

/// GET an admin URL and parse the JSON answer.
async fn admin_json(admin: SocketAddr, path_and_query: &str) -> Value {
    let url = format!("http://{admin}{path_and_query}");
    let got = reef_testnet::client::fetch(None, http::Method::GET, &url, REQUEST_TIMEOUT)
        .await
        .expect("admin request");
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    serde_json::from_slice(&got.body).expect("json")
}

/// Peer ids `/api/holders` on `admin` lists for `url`.
async fn holders(admin: SocketAddr, url: &str) -> Vec<String> {
    let answer = admin_json(admin, &format!("/api/holders?url={url}")).await;
    answer["holders"]
        .as_array()
        .expect("holders list")
        .iter()
        .filter_map(|h| h["peer_id"].as_str().map(str::to_string))
        .collect()
}

/// Polls `/api/holders` on `admin` until `done` holds for the peer ids it lists; returns how
/// long that took.
async fn wait_holders(admin: SocketAddr, url: &str, done: impl Fn(&[String]) -> bool) -> Duration {
    let started = Instant::now();
    loop {
        let listed = holders(admin, url).await;
        if done(&listed) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < POLL_LIMIT,
            "holders after {POLL_LIMIT:?}: {listed:?}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Polls every node's status until `done` holds for all of them; returns how long it took.
async fn time_until(nodes: &[&NodeProcess], done: impl Fn(usize, &Value) -> bool) -> Duration {
    let started = Instant::now();
    loop {
        let statuses: Vec<Value> = futures::future::join_all(nodes.iter().map(|n| n.status()))
            .await
            .into_iter()
            .map(|s| s.unwrap_or(Value::Null))
            .collect();
        if statuses.iter().enumerate().all(|(i, s)| done(i, s)) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < POLL_LIMIT,
            "not done after {POLL_LIMIT:?}: {statuses:?}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn counter(status: &Value, path: [&str; 2]) -> u64 {
    status[path[0]][path[1]].as_u64().unwrap_or(0)
}

/// Three nodes of provider `p0` (the testnet's 0, 1, 2, certified with the testnet's `p0`
/// key) and one node started next to them without a key, labelled `p1`: its own provider.
struct Mixed {
    net: Net,
    other: NodeProcess,
}

impl Mixed {
    async fn launch() -> Mixed {
        let net = launch(3, &[]).await;
        let spec = NodeSpec {
            bin: reef_bin(),
            dir: net.dir.path().join("node-p1"),
            ip: node_ip(3).expect("loopback address"),
            provider: "p1".into(),
            provider_key: None,
            region: "r1".into(),
            bootstrap: net.testnet.bootstrap_addrs(usize::MAX),
            extra_args: Vec::new(),
            env: Vec::new(),
        };
        let other = NodeProcess::spawn(spec).await.expect("p1 node starts");
        other
            .wait_joined(JOIN_TIMEOUT)
            .await
            .expect("p1 node joins");
        Mixed { net, other }
    }

    /// Nodes 0..=2 are the testnet's (p0), 3 is the p1 node.
    fn node(&self, i: usize) -> &NodeProcess {
        match i {
            3 => &self.other,
            i => &self.net.testnet.nodes[i],
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_reaches_every_node_of_the_provider_within_two_seconds() {
    let m = Mixed::launch().await;
    let path = "/bytes/30000";
    let url = m.net.testnet.origin.url(path);
    let body = expected_body(path, 30_000);

    // All four hold it: node 0 from the origin, the others from peers.
    assert_eq!(
        get_via(m.node(0).runtime().http, &url).await.source(),
        "origin"
    );
    wait_announced(&m.net, 0, 1).await;
    for i in 1..4 {
        let got = get_via(m.node(i).runtime().http, &url).await;
        assert_eq!(
            (got.status.as_u16(), got.source()),
            (200, "peer"),
            "node {i}"
        );
    }
    for i in 0..4 {
        let node = m.node(i);
        node.wait_status("stored and announced", JOIN_TIMEOUT, |s| {
            counter(s, ["cache", "objects"]) == 1 && counter(s, ["announcements", "done"]) >= 1
        })
        .await
        .expect("stored and announced");
    }
    let p0_ids: Vec<String> = (0..3)
        .map(|i| m.node(i).runtime().peer_id.clone())
        .collect();
    let other_admin = m.node(3).runtime().admin;
    let mut before = holders(other_admin, &url).await;
    before.sort();
    let mut expected = p0_ids.clone();
    expected.sort();
    assert_eq!(
        before, expected,
        "the DHT names every p0 holder before the purge"
    );

    // Purge at node 2 (not a bootstrap node), spelling the URL differently.
    let spelled = url.replace("http://", "HTTP://");
    let started = Instant::now();
    let answer = purge(m.node(2).runtime().admin, "url", &spelled).await;
    assert_eq!(answer["removed"], 1, "{answer}");
    assert_eq!(answer["published"], true, "{answer}");
    assert_eq!(answer["keys"].as_array().map(Vec::len), Some(1), "{answer}");

    let p0 = [m.node(0), m.node(1), m.node(2)];
    let took = time_until(&p0, |i, s| {
        let applied = i == 2 || counter(s, ["purges", "applied"]) >= 1;
        applied && counter(s, ["cache", "objects"]) == 0
    })
    .await;
    let since_post = started.elapsed();
    eprintln!(
        "purge propagation: all p0 nodes dropped the object {took:?} after the POST returned ({since_post:?} including the POST)"
    );
    assert!(
        since_post <= PURGE_DEADLINE,
        "purge took {since_post:?}, more than {PURGE_DEADLINE:?}"
    );

    // The p1 node checked the notice, passed it on and kept its copy.
    m.node(3)
        .wait_status("the notice seen as another provider's", JOIN_TIMEOUT, |s| {
            counter(s, ["purges", "other_provider"]) >= 1
        })
        .await
        .expect("p1 node saw the notice");
    let status = m.node(3).status().await.expect("status");
    assert_eq!(counter(&status, ["purges", "applied"]), 0, "{status}");
    assert_eq!(counter(&status, ["purges", "rejected"]), 0, "{status}");
    assert_eq!(counter(&status, ["cache", "objects"]), 1, "{status}");
    for i in 0..2 {
        let status = m.node(i).status().await.expect("status");
        assert_eq!(counter(&status, ["purges", "received"]), 1, "{status}");
        assert_eq!(
            counter(&status, ["purges", "objects_removed"]),
            1,
            "{status}"
        );
    }

    // The DHT stops naming the purged nodes: their own records are gone at once, and the
    // withdrawal they gossip makes the nodes storing their records drop them too.
    let other_id = m.node(3).runtime().peer_id.clone();
    wait_holders(other_admin, &url, |listed| listed.is_empty()).await;
    let since_post = started.elapsed();
    eprintln!("purge: DHT lookups stopped naming p0 nodes {since_post:?} after the POST");
    wait_holders(m.node(1).runtime().admin, &url, |listed| {
        listed == [other_id.clone()]
    })
    .await;

    // The p1 node still serves its copy; p0 nodes fetch it again (from p1, the only holder).
    let kept = get_via(m.node(3).runtime().http, &url).await;
    assert_eq!((kept.header("x-cache"), kept.source()), ("HIT", "local"));
    for i in 0..3 {
        let got = get_via(m.node(i).runtime().http, &url).await;
        assert_eq!(got.header("x-cache"), "MISS", "node {i}");
        assert!(
            matches!(got.source(), "peer" | "origin"),
            "node {i}: {}",
            got.source()
        );
        assert_eq!(got.body, body, "node {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_purge_drops_everything_under_it_and_nothing_else() {
    let net = launch(2, &[]).await;
    let purged = ["/bytes/1000", "/bytes/2000"];
    let kept = "/maxage/3600/500";
    for path in purged.iter().chain([&kept]) {
        let url = net.testnet.origin.url(path);
        assert_eq!(get_via(net.http(0), &url).await.source(), "origin");
    }
    wait_announced(&net, 0, 3).await;
    for path in purged.iter().chain([&kept]) {
        let url = net.testnet.origin.url(path);
        assert_eq!(get_via(net.http(1), &url).await.source(), "peer", "{path}");
    }
    wait_stored(&net, 1, 3).await;

    let prefix = net.testnet.origin.url("/bytes/");
    let started = Instant::now();
    let answer = purge(net.testnet.nodes[1].runtime().admin, "prefix", &prefix).await;
    assert_eq!(answer["removed"], 2, "{answer}");
    let nodes = [&net.testnet.nodes[0], &net.testnet.nodes[1]];
    time_until(&nodes, |_, s| counter(s, ["cache", "objects"]) == 1).await;
    let took = started.elapsed();
    eprintln!("prefix purge: both nodes done {took:?} after the POST");
    assert!(took <= PURGE_DEADLINE, "prefix purge took {took:?}");

    for node in 0..2 {
        let got = get_via(net.http(node), &net.testnet.origin.url(kept)).await;
        assert_eq!(got.header("x-cache"), "HIT", "node {node}: {kept}");
    }
    // Nobody holds the purged objects any more: the next fetch goes to the origin.
    for path in purged {
        let got = get_via(net.http(0), &net.testnet.origin.url(path)).await;
        assert_eq!(
            (got.header("x-cache"), got.source()),
            ("MISS", "origin"),
            "{path}"
        );
        assert_eq!(net.testnet.origin.hits(path), 2, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_purge_requests_get_400_with_a_reason() {
    let net = launch(1, &[]).await;
    let admin = net.testnet.nodes[0].runtime().admin;
    for body in [
        "",
        "not json",
        "{}",
        r#"{"url": "http://a/x", "prefix": "http://a/"}"#,
        r#"{"url": "ftp://a/x"}"#,
        r#"{"prefix": "/just/a/path"}"#,
        r#"{"url": "http://a b/"}"#,
        r#"{"urls": ["http://a/x"]}"#,
    ] {
        let (status, text) = post(admin, "/api/purge", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {text}");
        assert!(
            text.ends_with('\n') && text.trim_end().lines().count() == 1 && text.len() > 10,
            "{body}: {text:?}"
        );
    }
    let status = net.testnet.nodes[0].status().await.expect("status");
    assert_eq!(counter(&status, ["purges", "requested"]), 0, "{status}");

    // A valid purge of something not stored, on a node alone: nothing removed, nobody told.
    let answer = purge(admin, "url", &net.testnet.origin.url("/bytes/1")).await;
    assert_eq!(answer["removed"], 0, "{answer}");
    assert_eq!(answer["published"], false, "{answer}");
    let status = net.testnet.nodes[0].status().await.expect("status");
    assert_eq!(counter(&status, ["purges", "requested"]), 1, "{status}");
}
