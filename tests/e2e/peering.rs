//! Peering arrangements between providers: long-term ones from policy, redirection of the
//! agreed share and accounting of what the peer serves.

use std::time::{Duration, Instant};

use reef_testnet::origin::expected_body;

use crate::services::{VIDEO, get_service, wait_published};
use crate::support::{launch_configured, request_via};

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

const SURGE_PATH: &str = "/bytes/2000";

/// A flash crowd on node 0: requests for the service every 20 ms until dropped. Redirects
/// are not followed here (clients follow them on their own time); any other answer than 200
/// or 302 is counted.
struct Surge {
    task: tokio::task::JoinHandle<()>,
    errors: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Surge {
    fn start(node: std::net::SocketAddr) -> Surge {
        let errors = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = errors.clone();
        let task = tokio::spawn(async move {
            loop {
                let got = get_service(node, "video.example", SURGE_PATH).await;
                if got.status != 200 && got.status != 302 {
                    counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Surge { task, errors }
    }

    fn errors(&self) -> u64 {
        self.errors.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for Surge {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits until node 0 lists an active short-term arrangement that `wanted` accepts, then
/// follows one of node 0's redirects to the peer node it names and checks the body. Returns
/// the arrangement and the time from `since`.
async fn until_arranged(
    net: &crate::support::Net,
    since: Instant,
    wanted: impl Fn(&serde_json::Value) -> bool,
) -> (serde_json::Value, Duration) {
    let arranged = loop {
        let all = arrangements(&net.testnet.nodes[0]).await;
        if let Some(a) = all["arrangements"].as_array().and_then(|l| {
            l.iter()
                .find(|a| a["basis"] == "short_term" && a["status"] == "active" && wanted(a))
        }) {
            break a.clone();
        }
        assert!(
            since.elapsed() < Duration::from_secs(40),
            "node 0 never arranged as wanted: {all}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = since.elapsed();
    loop {
        let got = get_service(net.http(0), "video.example", SURGE_PATH).await;
        if got.status == 302 {
            let location = got.header("location").to_string();
            let followed = reef_testnet::client::fetch(
                None,
                http::Method::GET,
                &location,
                crate::support::REQUEST_TIMEOUT,
            )
            .await
            .expect("the peer node answers");
            assert_eq!(
                followed.status,
                200,
                "{}",
                String::from_utf8_lossy(&followed.body)
            );
            assert_eq!(followed.body, expected_body(SURGE_PATH, 2000));
            return (arranged, took);
        }
        assert!(
            since.elapsed() < Duration::from_secs(60),
            "node 0 never redirected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn surge_until_arranged(net: &crate::support::Net) -> (serde_json::Value, Duration, Surge) {
    let surge = Surge::start(net.http(0));
    let (a, took) = until_arranged(net, Instant::now(), |_| true).await;
    (a, took, surge)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_surge_arranges_with_the_cheapest_peer_and_the_calm_disbands_it() {
    let configs = negotiating("");
    let net = launch_configured(3, 3, &[&configs[0], &configs[1], &configs[2]]).await;
    wait_published(&net).await;
    let (arranged, took, surge) = surge_until_arranged(&net).await;
    println!("surge → arrangement active: {took:?}");
    if let Ok(log) = std::fs::read_to_string(net.testnet.nodes[0].log_path())
        && let Some(line) = log.lines().find(|l| l.contains("negotiation_ms"))
    {
        println!("{line}");
    }
    let p1_id = net.testnet.nodes[1].status().await.expect("status")["provider"]["id"].clone();
    assert_eq!(
        arranged["peer"], p1_id,
        "the cheaper offer wins: {arranged}"
    );
    assert_eq!(arranged["role"], "primary");
    let at_peer = wait_short_term(&net.testnet.nodes[1], "active").await;
    assert_eq!(at_peer["id"], arranged["id"]);
    assert_eq!(at_peer["role"], "peer");
    // Propose and commit: two requests from the primary's agent, two answered by the peer's.
    let sent = net.testnet.nodes[0].status().await.expect("status")["peering"]["requests_sent"]
        .as_u64()
        .unwrap_or(0);
    assert!(sent >= 2, "requests_sent {sent}");
    assert!(
        at_peer["served"]["requests"].as_u64().unwrap_or(0) >= 1,
        "{at_peer}"
    );
    // p2 is no party.
    let p2 = arrangements(&net.testnet.nodes[2]).await;
    assert_eq!(p2["arrangements"], serde_json::json!([]), "{p2}");

    assert_eq!(surge.errors(), 0);

    // The surge is over: after the cool-down the primary disbands, and the peer learns it.
    drop(surge);
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
    wait_published(&net).await;
    let (arranged, _, _surge) = surge_until_arranged(&net).await;
    let p2_id = net.testnet.nodes[2].status().await.expect("status")["provider"]["id"].clone();
    assert_eq!(arranged["peer"], p2_id, "p1 refuses p0, so p2: {arranged}");

    // The operator lists it and ends it with the CLI; the peer's node learns it.
    let admin = net.testnet.nodes[0].runtime().admin.to_string();
    let id = arranged["id"].as_str().expect("id").to_string();
    let reef = |args: &[&str]| {
        std::process::Command::new(crate::support::reef_bin())
            .args(args)
            .output()
            .expect("reef runs")
    };
    let listed = reef(&["peering", "list", "--admin", &admin]);
    assert!(listed.status.success());
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(
        listed.contains(&id) && listed.contains("short_term"),
        "{listed}"
    );
    let bad = reef(&["peering", "end", "not-an-id", "--admin", &admin]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not-an-id"));
    let ended = reef(&["peering", "end", &id, "--admin", &admin]);
    assert!(
        ended.status.success(),
        "{}",
        String::from_utf8_lossy(&ended.stderr)
    );
    let again = reef(&["peering", "end", &id, "--admin", &admin]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already ended"));
    let at_peer = wait_short_term(&net.testnet.nodes[2], "ended").await;
    assert_eq!(at_peer["id"], arranged["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_mediator_resumes_and_a_dead_peer_is_replaced() {
    let configs = negotiating("");
    let mut net = launch_configured(3, 3, &[&configs[0], &configs[1], &configs[2]]).await;
    wait_published(&net).await;
    let (first, _, surge) = surge_until_arranged(&net).await;

    // The mediator node restarts: the arrangement is still there, still active.
    drop(surge);
    let bootstrap = net.testnet.bootstrap_addrs(0);
    net.testnet.nodes[0]
        .restart(bootstrap)
        .await
        .expect("restart");
    let after = arrangements(&net.testnet.nodes[0]).await;
    let kept = after["arrangements"]
        .as_array()
        .and_then(|l| l.iter().find(|a| a["id"] == first["id"]).cloned())
        .unwrap_or_default();
    assert_eq!(kept["status"], "active", "{after}");
    assert_eq!(kept["peer"], first["peer"], "{after}");

    // The peer dies mid-arrangement: the mediator notices and arranges with p2.
    net.testnet.nodes[1].kill();
    let p2_id = net.testnet.nodes[2].status().await.expect("status")["provider"]["id"].clone();
    let killed = Instant::now();
    let surge = Surge::start(net.http(0));
    let (second, took) = until_arranged(&net, killed, |a| a["peer"] == p2_id).await;
    println!("re-arranged with p2 {took:?} after the kill");
    assert_eq!(surge.errors(), 0, "node 0 itself never failed a request");
    assert_ne!(second["id"], first["id"]);
    let all = arrangements(&net.testnet.nodes[0]).await;
    let old = all["arrangements"]
        .as_array()
        .and_then(|l| l.iter().find(|a| a["id"] == first["id"]).cloned())
        .unwrap_or_default();
    assert_eq!(old["status"], "ended", "{all}");
}
