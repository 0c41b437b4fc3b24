//! Peering arrangements between providers: long-term ones from policy, redirection of the
//! agreed share and accounting of what the peer serves.

use std::time::{Duration, Instant};

use reef_testnet::origin::expected_body;

use crate::services::{VIDEO, get_service};
use crate::support::{JOIN_TIMEOUT, launch_configured, request_via};

const LONG_TERM: &str = r#"
[[peering.long_term]]
primary = "{provider:0}"
peer = "{provider:1}"
services = ["video.example"]
share = 0.3
price_per_gb = 0.01
"#;

async fn arrangements(node: &reef_testnet::NodeProcess) -> serde_json::Value {
    admin_json(node, "/api/arrangements").await
}

async fn admin_json(node: &reef_testnet::NodeProcess, path: &str) -> serde_json::Value {
    let admin = node.runtime().admin;
    let url = format!("http://{admin}{path}");
    let got = reef_testnet::client::fetch(
        None,
        http::Method::GET,
        &url,
        crate::support::REQUEST_TIMEOUT,
    )
    .await
    .expect(path);
    assert_eq!(got.status, 200);
    serde_json::from_slice(&got.body).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_term_arrangement_from_policy_is_active_at_start() {
    let primary = format!("{VIDEO}{LONG_TERM}");
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

    net.testnet.nodes[0]
        .wait_status("services.published", JOIN_TIMEOUT, |s| {
            s["services"]["published"].as_u64().unwrap_or(0) >= 1
        })
        .await
        .expect("service record published");
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
    net.testnet.nodes[0]
        .wait_status("services.published", JOIN_TIMEOUT, |s| {
            s["services"]["published"].as_u64().unwrap_or(0) >= 1
        })
        .await
        .expect("service record published");
    let path = "/bytes/3000";
    // Requests count toward utilisation once a second; keep asking until node 0 is over its
    // watermark and sends us on.
    let started = Instant::now();
    let location = loop {
        let got = get_service(net.http(0), "video.example", path).await;
        if got.status == 302 {
            assert_eq!(got.header("cache-control"), "no-store");
            break got.header("location").to_string();
        }
        assert_eq!(got.status, 200, "{}", got.text());
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "node 0 never redirected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let peer_http = net.http(1).to_string();
    assert!(
        location.starts_with(&format!("http://{peer_http}/_reef/s/video.example/")),
        "{location}"
    );
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

/// p0 is the overloaded primary (capacity 1 req/s) and buys; p1 and p2 offer capacity in p0's
/// region, p1 cheaper.
fn negotiating(p1_extra: &str) -> [String; 3] {
    let offer = |price: &str| {
        format!(
            "[offer]\nreq_per_s = 1000\nmbit_per_s = 1000\nregions = [\"r0\", \"r1\"]\nprice_per_gb = {price}\nmin_duration_s = 60\nmax_duration_s = 3600\n"
        )
    };
    let primary = format!(
        "capacity_rps = 1\n{VIDEO}\n[peering]\nhigh_watermark = 0.5\nlow_watermark = 0.2\ntrigger_window_s = 1\ncooldown_s = 2\nmax_price_per_gb = 0.05\nshare = 1.0\nduration_s = 600\n"
    );
    [
        primary,
        format!("{}{p1_extra}", offer("0.02")),
        offer("0.03"),
    ]
}

/// The short-term arrangement `node` lists, once it does.
async fn wait_short_term(node: &reef_testnet::NodeProcess, status: &str) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let all = arrangements(node).await;
        if let Some(a) = all["arrangements"].as_array().and_then(|list| {
            list.iter()
                .find(|a| a["basis"] == "short_term" && a["status"] == status)
        }) {
            return a.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no {status} short-term arrangement: {all}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends requests for the service to node 0 until it has a short-term arrangement; every
/// redirect is followed to the peer node it names. Returns the arrangement and the time from
/// the first request.
async fn surge_until_arranged(net: &crate::support::Net) -> (serde_json::Value, Duration) {
    let started = Instant::now();
    let path = "/bytes/2000";
    loop {
        let got = get_service(net.http(0), "video.example", path).await;
        if got.status == 302 {
            let location = got.header("location").to_string();
            let rest = location.strip_prefix("http://").unwrap_or_default();
            let (host, target) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let peer: std::net::SocketAddr = host.parse().expect("peer address");
            let followed = request_via(peer, http::Request::get(target)).await;
            assert_eq!(followed.status, 200, "{}", followed.text());
            assert_eq!(followed.body, expected_body(path, 2000));
            let all = arrangements(&net.testnet.nodes[0]).await;
            if let Some(a) = all["arrangements"].as_array().and_then(|l| {
                l.iter()
                    .find(|a| a["basis"] == "short_term" && a["status"] == "active")
            }) {
                return (a.clone(), started.elapsed());
            }
        } else {
            assert_eq!(got.status, 200, "{}", got.text());
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "node 0 was never redirected to a peer"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_surge_arranges_with_the_cheapest_peer_and_the_calm_disbands_it() {
    let configs = negotiating("");
    let net = launch_configured(3, 3, &[&configs[0], &configs[1], &configs[2]]).await;
    net.testnet.nodes[0]
        .wait_status("services.published", JOIN_TIMEOUT, |s| {
            s["services"]["published"].as_u64().unwrap_or(0) >= 1
        })
        .await
        .expect("service record published");
    let (arranged, took) = surge_until_arranged(&net).await;
    println!("surge → first request served by a peer: {took:?}");
    let p1_id = net.testnet.nodes[1].status().await.expect("status")["provider"]["id"].clone();
    assert_eq!(
        arranged["peer"], p1_id,
        "the cheaper offer wins: {arranged}"
    );
    assert_eq!(arranged["role"], "primary");
    let at_peer = wait_short_term(&net.testnet.nodes[1], "active").await;
    assert_eq!(at_peer["id"], arranged["id"]);
    assert_eq!(at_peer["role"], "peer");
    assert!(
        at_peer["served"]["requests"].as_u64().unwrap_or(0) >= 1,
        "{at_peer}"
    );
    // p2 is no party.
    let p2 = arrangements(&net.testnet.nodes[2]).await;
    assert_eq!(p2["arrangements"], serde_json::json!([]), "{p2}");

    // The surge is over: after the cool-down the primary disbands, and the peer learns it.
    let ended = wait_short_term(&net.testnet.nodes[0], "ended").await;
    assert_eq!(ended["id"], arranged["id"]);
    let ended = wait_short_term(&net.testnet.nodes[1], "ended").await;
    assert_eq!(ended["id"], arranged["id"]);

    // Both ledgers settle on the same numbers: what the peer's node served.
    let at_primary = wait_settled(&net, 0, &arranged["id"]).await;
    let at_peer = wait_settled(&net, 1, &arranged["id"]).await;
    assert_eq!(at_primary, at_peer);
    let served = wait_short_term(&net.testnet.nodes[1], "ended").await["served"].clone();
    assert_eq!(at_peer["bytes"], served["bytes"], "{at_peer} vs {served}");
    assert_eq!(
        at_peer["requests"], served["requests"],
        "{at_peer} vs {served}"
    );
    assert_eq!(at_peer["primary"], arranged["primary"]);
    assert_eq!(at_peer["peer"], p1_id);
}

/// The settlement of arrangement `id` in `node`'s ledger, once it holds one.
async fn wait_settled(
    net: &crate::support::Net,
    i: usize,
    id: &serde_json::Value,
) -> serde_json::Value {
    let node = &net.testnet.nodes[i];
    let started = Instant::now();
    loop {
        let ledger = admin_json(node, "/api/ledger").await;
        if let Some(s) = ledger["settlements"]
            .as_array()
            .and_then(|l| l.iter().find(|s| s["id"] == *id))
        {
            let mut s = s.clone();
            // Each side writes it at its own time.
            s["written_at"] = serde_json::Value::Null;
            return s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "no settlement for {id} at node {i}: {ledger}\nnode 0: {}\nnode {i}: {}",
            net.testnet.nodes[0].log_tail(),
            node.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_whose_policy_refuses_the_primary_is_passed_over() {
    let configs = negotiating("[peering]\nrefuse = [\"{provider:0}\"]\n");
    let net = launch_configured(3, 3, &[&configs[0], &configs[1], &configs[2]]).await;
    net.testnet.nodes[0]
        .wait_status("services.published", JOIN_TIMEOUT, |s| {
            s["services"]["published"].as_u64().unwrap_or(0) >= 1
        })
        .await
        .expect("service record published");
    let (arranged, _) = surge_until_arranged(&net).await;
    let p2_id = net.testnet.nodes[2].status().await.expect("status")["provider"]["id"].clone();
    assert_eq!(arranged["peer"], p2_id, "p1 refuses p0, so p2: {arranged}");
}
