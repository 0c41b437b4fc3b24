//! Long-term arrangements: written in both providers' policies, active from start, used when
//! the primary is overloaded, by redirect or by relay.

use std::time::{Duration, Instant};

use reef_testnet::origin::expected_body;

use super::{arrangements, surge, wait_arrangement, wait_settled};
use crate::services::{VIDEO, get_service, wait_published};
use crate::support::{launch_configured, request_via};

/// p1 serves 30 % of p0's `video.example` from start, at 0.01 a GB (both sides' config).
pub(crate) const LONG_TERM: &str = r#"
[[peering.long_term]]
primary = "{provider:0}"
peer = "{provider:1}"
services = ["video.example"]
share = 0.3
price_per_gb = 0.01
"#;

/// The same agreement for another service or share.
pub(crate) fn long_term(service: &str, share: &str) -> String {
    LONG_TERM
        .replace("\"video.example\"", &format!("\"{service}\""))
        .replace("share = 0.3", &format!("share = {share}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_term_arrangement_from_policy_is_active_at_start() {
    // The primary states the account every second (once the peer's receipts, every 5 s, have
    // reached it).
    let primary = format!("{VIDEO}[peering]\nstatement_every_s = 1\n{LONG_TERM}");
    // p0 owns the service; p1 serves it under the long-term arrangement; p2 is no party.
    let mut net = launch_configured(3, 3, &[&primary, LONG_TERM]).await;
    let p0 = arrangements(&net.testnet.nodes[0]).await;
    let p1 = arrangements(&net.testnet.nodes[1]).await;
    let p2 = arrangements(&net.testnet.nodes[2]).await;
    assert_eq!(p0["arrangements"][0]["role"], "primary", "{p0}");
    assert_eq!(p1["arrangements"][0]["role"], "peer", "{p1}");
    assert_eq!(p0["arrangements"][0]["id"], p1["arrangements"][0]["id"]);
    assert_eq!(p1["arrangements"][0]["status"], "active");
    assert_eq!(p1["arrangements"][0]["basis"], "long_term");
    assert_eq!(p2["arrangements"], serde_json::json!([]));

    wait_published(&net).await;
    let path = "/bytes/4000";
    let served = get_service(net.http(1), "video.example", path).await;
    assert_eq!(served.status, 200, "{}", served.text());
    assert_eq!(served.body, expected_body(path, 4000));
    let refused = get_service(net.http(2), "video.example", path).await;
    assert_eq!(refused.status, 403, "{}", refused.text());

    // The peer's node accounted for what it served.
    let p1 = arrangements(&net.testnet.nodes[1]).await;
    let served = &p1["arrangements"][0]["served"];
    assert_eq!(served["requests"], 1, "{p1}");
    assert_eq!(served["bytes"], 4000, "{p1}");

    // The policy in force is in the node's policy history.
    let history = super::admin_json(&net.testnet.nodes[0], "/api/policy").await;
    let in_force = &history["history"][0]["policy"];
    assert_eq!(in_force["statement_every"], 1.0, "{history}");
    assert_eq!(in_force["long_term"][0]["share_permille"], 300, "{history}");

    // It goes on, and both ledgers hold the same statement of it so far.
    let id = p1["arrangements"][0]["id"].clone();
    let at_primary = wait_settled(&net.testnet.nodes[0], &id).await;
    let at_peer = wait_settled(&net.testnet.nodes[1], &id).await;
    assert_eq!(at_primary, at_peer);
    assert_eq!(
        (
            &at_peer["kind"],
            &at_peer["bytes"],
            &at_peer["amount_micros"]
        ),
        (&"statement".into(), &4000.into(), &0.into())
    );

    // A restart resumes the arrangement and its accounting.
    let bootstrap = net.testnet.bootstrap_addrs(1);
    net.testnet.nodes[1]
        .restart(bootstrap)
        .await
        .expect("restart");
    let p1 = arrangements(&net.testnet.nodes[1]).await;
    assert_eq!(p1["arrangements"][0]["status"], "active", "{p1}");
    assert_eq!(p1["arrangements"][0]["served"]["bytes"], 4000, "{p1}");
}

/// The long-term arrangement with the whole share, for the redirect test.
fn whole_share() -> String {
    LONG_TERM.replace("share = 0.3", "share = 1.0")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_primary_redirects_its_share_to_the_peer() {
    // p0 runs at capacity 1 req/s, so a few requests put it over its high watermark.
    let overloaded = format!(
        "capacity_rps = 1\n{VIDEO}\n[peering]\nhigh_watermark = 0.5\n{}",
        whole_share()
    );
    let net = launch_configured(2, 2, &[&overloaded, &whole_share()]).await;
    wait_published(&net).await;
    let path = "/bytes/3000";
    // Requests count toward utilisation once a second; keep asking until node 0 is over its
    // watermark and sends us on.
    let location = until_sent_to_node_1(&net, path, &[200], Duration::from_millis(100)).await;
    let peer_http = net.http(1).to_string();
    // A client follows it: origin form, to the peer node.
    let target = &location[format!("http://{peer_http}").len()..];
    let followed = request_via(net.http(1), http::Request::get(target)).await;
    assert_eq!(followed.status, 200, "{}", followed.text());
    assert_eq!(followed.body, expected_body(path, 3000));

    let p0 = arrangements(&net.testnet.nodes[0]).await;
    assert!(
        p0["arrangements"][0]["redirected"].as_u64().unwrap_or(0) >= 1,
        "{p0}"
    );
    let p1 = arrangements(&net.testnet.nodes[1]).await;
    assert_eq!(p1["arrangements"][0]["served"]["requests"], 1, "{p1}");
    assert_eq!(p1["arrangements"][0]["served"]["bytes"], 3000, "{p1}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_over_its_ceiling_redirects_at_once_whatever_its_demand() {
    // p0 may serve 1 request a second (a tenth of its capacity). Two a second are a fifth of
    // its capacity: far under its watermarks, so only the ceiling sends requests on.
    let capped = format!(
        "capacity_rps = 10\n[limits]\nshed_above_capacity = 0.1\n{VIDEO}\n[peering]\n{}",
        whole_share()
    );
    let net = launch_configured(2, 2, &[&capped, &whole_share()]).await;
    wait_published(&net).await;
    let path = "/bytes/3000";
    // 503s while p1's node is not yet in p0's load table (its first report), then 302s.
    until_sent_to_node_1(&net, path, &[200, 503], Duration::from_millis(500)).await;
    // From now on, at two a second: one served here, one sent on; none refused.
    let (mut served, mut sent) = (0, 0);
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let got = get_service(net.http(0), "video.example", path).await;
        match got.status.as_u16() {
            200 => served += 1,
            302 => sent += 1,
            other => panic!("{other}: {}", got.text()),
        }
    }
    assert!(served >= 2 && sent >= 2, "served {served}, sent {sent}");
    let p0 = arrangements(&net.testnet.nodes[0]).await;
    let demand = super::admin_json(&net.testnet.nodes[0], "/api/load").await;
    assert!(
        p0["arrangements"][0]["redirected"].as_u64().unwrap_or(0) >= 3,
        "{p0}\n{demand}"
    );
}

/// Asks node 0 for `path` of `video.example` every `pace` until it redirects to node 1 (other
/// answers must have a status in `meanwhile`); the redirect's location.
async fn until_sent_to_node_1(
    net: &crate::support::Net,
    path: &str,
    meanwhile: &[u16],
    pace: Duration,
) -> String {
    let started = Instant::now();
    let location = loop {
        let got = get_service(net.http(0), "video.example", path).await;
        if got.status == 302 {
            assert_eq!(got.header("cache-control"), "no-store");
            break got.header("location").to_string();
        }
        assert!(
            meanwhile.contains(&got.status.as_u16()),
            "{}: {}",
            got.status,
            got.text()
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "node 0 never redirected"
        );
        tokio::time::sleep(pace).await;
    };
    let peer_http = net.http(1).to_string();
    assert!(
        location.starts_with(&format!("http://{peer_http}/_reef/s/video.example/")),
        "{location}"
    );
    location
}

/// p0 relays the peer's answers instead of redirecting, and serves them itself when the peer
/// is gone: its clients never see the peer, nor its death.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_in_proxy_mode_relays_the_peer_and_serves_itself_when_the_peer_dies() {
    let overloaded = format!(
        "capacity_rps = 1\n{VIDEO}\n[peering]\nhigh_watermark = 0.5\noffload = \"proxy\"\n{}",
        whole_share()
    );
    let mut net = launch_configured(2, 2, &[&overloaded, &whole_share()]).await;
    wait_published(&net).await;
    let crowd = surge(net.http(0), 50);
    let started = Instant::now();
    while crowd.seen(|s| s.via_peer) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "node 0 never relayed a peer's answer"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let served = wait_arrangement(&net.testnet.nodes[1], Duration::from_secs(10), |a| {
        a["served"]["requests"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    assert_eq!(served["role"], "peer");

    // The peer dies: node 0 serves its clients itself, without a single failure.
    net.testnet.nodes[1].kill();
    let killed = Instant::now();
    let ok_at_kill = crowd.seen(|s| s.ok);
    while crowd.seen(|s| s.ok) < ok_at_kill + 50 {
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "clients stalled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    crowd.seen(|s| assert!(s.failures.is_empty(), "{:?}", s.failures));
}
