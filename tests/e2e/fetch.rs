//! The fetch path across nodes: origin once, then peers, then local copies.

use reef_testnet::origin::expected_body;

use crate::support::{
    JOIN_TIMEOUT, REQUEST_TIMEOUT, get_via, launch, stream_matches, wait_announced,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_fetch_goes_to_origin_then_every_other_node_fetches_from_a_peer() {
    let net = launch(5, &[]).await;
    let path = "/bytes/100000";
    let url = net.testnet.origin.url(path);

    let first = get_via(net.http(0), &url).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.source(), "origin");
    assert_eq!(first.header("x-cache"), "MISS");
    assert!(
        first.header("via").contains("reef-"),
        "Via: {}",
        first.header("via")
    );
    assert!(!first.header("age").is_empty());
    assert_eq!(first.body, expected_body(path, 100_000));
    wait_announced(&net, 0, 1).await;

    // The admin API of another node finds the holder through the DHT.
    let admin = net.testnet.nodes[3].runtime().admin;
    let query = format!("http://{admin}/api/holders?url={url}");
    let holders = reef_testnet::client::fetch(None, http::Method::GET, &query, REQUEST_TIMEOUT)
        .await
        .expect("holders query");
    assert_eq!(holders.status, 200);
    let holders: serde_json::Value = serde_json::from_slice(&holders.body).expect("json");
    let holder_ids: Vec<_> = holders["holders"]
        .as_array()
        .expect("list")
        .iter()
        .map(|h| h["peer_id"].clone())
        .collect();
    assert_eq!(
        holder_ids,
        [net.testnet.nodes[0].runtime().peer_id.as_str()],
        "{holders}"
    );

    for node in 1..5 {
        let got = get_via(net.http(node), &url).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.source(), "peer", "node {node}");
        assert_eq!(got.body, expected_body(path, 100_000), "node {node}");
    }
    assert_eq!(
        net.testnet.origin.hits(path),
        1,
        "the origin was asked once"
    );

    let again = get_via(net.http(0), &url).await;
    assert_eq!(again.source(), "local");
    assert_eq!(again.header("x-cache"), "HIT");
    assert_eq!(again.body, expected_body(path, 100_000));
    assert_eq!(net.testnet.origin.hits(path), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cold_requests_reach_the_origin_once() {
    let net = launch(2, &[]).await;
    // A slow origin keeps the window wide open for the followers to pile up.
    let path = "/slow/300/250000";
    let url = net.testnet.origin.url(path);
    let node = net.http(1);
    let requests: Vec<_> = (0..20)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get_via(node, &url).await })
        })
        .collect();
    for r in requests {
        let got = r.await.expect("task");
        assert_eq!(got.status, 200, "{}", got.text());
        assert_eq!(got.body, expected_body(path, 250_000));
    }
    assert_eq!(net.testnet.origin.hits(path), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hanging_up_mid_fetch_does_not_fail_the_fill() {
    let net = launch(1, &[]).await;
    let path = "/slow/1500/40000";
    let url = net.testnet.origin.url(path);
    let node = net.http(0);
    let leader = {
        let url = url.clone();
        tokio::spawn(async move { get_via(node, &url).await })
    };
    // The leader's fetch has reached the origin, which holds the headers back: hang up.
    let started = std::time::Instant::now();
    while net.testnet.origin.hits(path) == 0 {
        assert!(
            started.elapsed() < REQUEST_TIMEOUT,
            "the fetch never reached the origin"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    leader.abort();
    // Whoever asks next is served from the same fill, not from a second origin fetch.
    let got = get_via(node, &url).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.body, expected_body(path, 40_000));
    assert_eq!(net.testnet.origin.hits(path), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_holder_is_skipped() {
    let mut net = launch(3, &[]).await;
    let path = "/bytes/5000";
    let url = net.testnet.origin.url(path);
    assert_eq!(get_via(net.http(0), &url).await.source(), "origin");
    wait_announced(&net, 0, 1).await;
    net.testnet.nodes[0].kill();

    let got = get_via(net.http(2), &url).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.body, expected_body(path, 5000));
    assert_eq!(got.source(), "origin", "the only holder is dead");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_keeps_its_identity_and_cache_and_rejoins_without_flags() {
    let mut net = launch(3, &[]).await;
    let path = "/bytes/20000";
    let url = net.testnet.origin.url(path);
    assert_eq!(get_via(net.http(2), &url).await.source(), "origin");
    let peer_id = net.testnet.nodes[2].runtime().peer_id.clone();

    let node = &mut net.testnet.nodes[2];
    node.stop().await.expect("graceful stop");
    // No bootstrap addresses: it must rejoin through the peers it remembered.
    node.restart(Vec::new()).await.expect("restart");
    assert_eq!(node.runtime().peer_id, peer_id);
    node.wait_joined(JOIN_TIMEOUT)
        .await
        .expect("rejoins through remembered peers");

    let got = get_via(net.http(2), &url).await;
    assert_eq!(got.source(), "local");
    assert_eq!(got.header("x-cache"), "HIT");
    assert_eq!(got.body, expected_body(path, 20000));
    assert_eq!(net.testnet.origin.hits(path), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncacheable_responses_are_not_stored_or_shared() {
    let net = launch(2, &[]).await;
    for path in ["/nostore/1000", "/private/1000"] {
        let url = net.testnet.origin.url(path);
        for node in [0, 0, 1] {
            let got = get_via(net.http(node), &url).await;
            assert_eq!(got.status, 200);
            assert_eq!(got.source(), "origin", "{path}");
            assert_eq!(got.body, expected_body(path, 1000));
        }
        assert_eq!(
            net.testnet.origin.hits(path),
            3,
            "{path} is fetched every time"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gigabyte_streams_through_without_being_held_in_memory() {
    let net = launch(1, &["--cache-size", "2GiB"]).await;
    const SIZE: u64 = 1 << 30;
    let path = format!("/bytes/{SIZE}");
    let url = net.testnet.origin.url(&path);
    let node = &net.testnet.nodes[0];

    assert!(
        stream_matches(net.http(0), &url, SIZE).await,
        "body matches the origin's bytes"
    );
    let peak_kib = peak_rss_kib(node.runtime().pid);
    assert!(
        peak_kib < 100 * 1024,
        "peak RSS {peak_kib} KiB while serving 1 GiB"
    );
}

/// VmHWM: the process's peak resident set size.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_methods_pass_through_to_the_origin_uncached() {
    let net = launch(1, &[]).await;
    let url = net.testnet.origin.url("/bytes/10");
    for _ in 0..2 {
        let got = crate::support::request_via(net.http(0), http::Request::post(&url)).await;
        // The demo origin answers 405 to POST; the point is that the node relayed it.
        assert_eq!(got.status, 405, "{}", got.text());
        assert_eq!(got.source(), "origin");
        assert_eq!(got.header("x-cache"), "MISS");
    }
    let status = net.testnet.nodes[0].status().await.expect("status");
    assert_eq!(status["cache"]["objects"], 0, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_stops_answering_is_skipped_after_its_timeout() {
    let net = launch(3, &[]).await;
    let path = "/bytes/6000";
    let url = net.testnet.origin.url(path);
    assert_eq!(get_via(net.http(0), &url).await.source(), "origin");
    wait_announced(&net, 0, 1).await;

    // Frozen, the holder's kernel still accepts connections but nothing answers.
    let holder = net.testnet.nodes[0].runtime().pid as i32;
    let _thaw = Thaw(holder);
    // SAFETY: plain signal to a child process this test started.
    assert_eq!(unsafe { libc::kill(holder, libc::SIGSTOP) }, 0);

    let got = get_via(net.http(2), &url).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.body, expected_body(path, 6000));
    assert_eq!(got.source(), "origin", "the frozen holder was given up on");
}

/// Resumes a stopped process even when the test fails, so that cleanup can kill it.
struct Thaw(i32);

impl Drop for Thaw {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successful_unsafe_method_invalidates_the_stored_copy() {
    let net = launch(1, &[]).await;
    let node = net.http(0);
    let path = "/writable/800";
    let url = net.testnet.origin.url(path);
    assert_eq!(get_via(node, &url).await.source(), "origin");
    crate::support::wait_stored(&net, 0, 1).await;
    assert_eq!(get_via(node, &url).await.header("x-cache"), "HIT");

    // A failed write (405 from the origin) leaves the copy alone…
    let other = net.testnet.origin.url("/bytes/800");
    assert_eq!(get_via(node, &other).await.source(), "origin");
    crate::support::wait_stored(&net, 0, 2).await;
    let refused = crate::support::request_via(node, http::Request::post(&other)).await;
    assert_eq!(refused.status, 405);
    assert_eq!(get_via(node, &other).await.header("x-cache"), "HIT");

    // …a successful one drops it, and the next GET goes to the origin again.
    let written = crate::support::request_via(node, http::Request::put(&url)).await;
    assert_eq!(written.status, 204);
    let after = get_via(node, &url).await;
    assert_eq!(after.source(), "origin");
    assert_eq!(after.body, expected_body(path, 800));
    assert_eq!(net.testnet.origin.hits(path), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_vouches_for_a_body_it_fetched_from_another_providers_node() {
    use reef_proto::records::{ContentRecord, open, peer_id_bytes};
    use reef_proto::{CanonicalUrl, ContentKey};

    // Node 0 is p0, node 1 is p1 (and its own home node).
    let net = crate::support::launch_configured(2, 2, &[]).await;
    let path = "/bytes/30000";
    let url = net.testnet.origin.url(path);
    assert_eq!(get_via(net.http(0), &url).await.source(), "origin");
    wait_announced(&net, 0, 1).await;
    let got = get_via(net.http(1), &url).await;
    assert_eq!(got.source(), "peer", "{}", got.text());
    assert_eq!(got.body, expected_body(path, 30_000));

    // The record node 1 hands to the nodes of its provider that stream the body from its fill
    // is its own: they accept only a record one of their provider's nodes signed.
    let key = ContentKey::for_url(&CanonicalUrl::parse(&url).expect("url"));
    let record = crate::support::request_via(
        net.http(1),
        http::Request::get(format!("/_reef/record/{key}")),
    )
    .await;
    assert_eq!(record.status, 200, "{}", record.text());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let opened = open::<ContentRecord>(&record.body, now).expect("a valid record");
    let node_1: reef_overlay::PeerId =
        net.testnet.nodes[1].status().await.expect("status")["peer_id"]
            .as_str()
            .expect("peer id")
            .parse()
            .expect("peer id");
    assert_eq!(peer_id_bytes(opened.signer()), node_1.to_bytes());
    assert_eq!(opened.record().body_len, 30_000);
}
