//! Load gossip across real processes: on a 3-provider testnet every node's `/api/load` lists
//! every node within 3 s of the testnet being up, a killed node leaves every table within 5 s,
//! measured rates travel, and no honest node is rejected or penalised.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reef_testnet::NodeProcess;
use serde_json::Value;

use crate::support::{REQUEST_TIMEOUT, get_via, launch_providers};

/// The figure: tables list every node within this long of start.
const CONVERGENCE_DEADLINE: Duration = Duration::from_secs(3);
/// The figure: a node that stops reporting leaves the tables within this long.
const EXPIRY_DEADLINE: Duration = Duration::from_secs(5);
/// Observing the expiry takes one poll and one admin round trip per node on top of it; the
/// table itself drops the entry 5 s after the last report arrived, which was before the kill.
const OBSERVATION_SLACK: Duration = Duration::from_millis(250);
/// Polling gives up after this, so a slow run reports its time instead of only failing.
const POLL_LIMIT: Duration = Duration::from_secs(20);
/// Fine enough to time against seconds.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

async fn admin_json(admin: SocketAddr, path: &str) -> Value {
    let url = format!("http://{admin}{path}");
    let got = reef_testnet::client::fetch(None, http::Method::GET, &url, REQUEST_TIMEOUT)
        .await
        .expect("admin request");
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    serde_json::from_slice(&got.body).expect("json")
}

async fn load_of(node: &NodeProcess) -> Value {
    admin_json(node.runtime().admin, "/api/load").await
}

fn listed(load: &Value) -> Vec<String> {
    load["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["peer_id"].as_str().map(str::to_string))
        .collect()
}

/// Polls the tables of `nodes` until `done` holds for every one; returns how long that took
/// since `since`.
async fn until(nodes: &[&NodeProcess], since: Instant, done: impl Fn(&Value) -> bool) -> Duration {
    loop {
        let loads = futures::future::join_all(nodes.iter().map(|n| load_of(n))).await;
        if loads.iter().all(&done) {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < POLL_LIMIT,
            "not done after {POLL_LIMIT:?}: {loads:#?}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_tables_converge_and_forget_a_killed_node() {
    let mut net = launch_providers(3, 3, &[]).await;
    let up = Instant::now();
    let ids: Vec<String> = net
        .testnet
        .nodes
        .iter()
        .map(|n| n.runtime().peer_id.clone())
        .collect();

    // Every node lists every node.
    let nodes: Vec<&NodeProcess> = net.testnet.nodes.iter().collect();
    let converged = until(&nodes, up, |load| {
        let listed = listed(load);
        ids.iter().all(|id| listed.contains(id))
    })
    .await;
    println!("load tables converged {converged:?} after the testnet was up");
    assert!(converged <= CONVERGENCE_DEADLINE, "{converged:?}");

    // Each node is certified by its testnet provider (p0, p1, p2): one provider entry each.
    let mut provider_of = std::collections::BTreeMap::new();
    for node in &nodes {
        let status = node.status().await.expect("status");
        provider_of.insert(
            status["peer_id"].as_str().expect("peer id").to_string(),
            (
                status["provider"]["id"].as_str().expect("id").to_string(),
                status["provider"]["name"]
                    .as_str()
                    .expect("name")
                    .to_string(),
            ),
        );
    }
    let mut want: Vec<(String, String)> = provider_of.values().cloned().collect();
    want.sort();
    for node in &nodes {
        let load = load_of(node).await;
        let providers = load["providers"].as_array().expect("providers");
        let mut got: Vec<(String, String)> = providers
            .iter()
            .map(|p| {
                assert_eq!(
                    (p["nodes"].as_u64(), p["certified"].as_bool()),
                    (Some(1), Some(true)),
                    "{p}"
                );
                (
                    p["id"].as_str().unwrap_or_default().to_string(),
                    p["name"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        got.sort();
        assert_eq!(got, want, "{load:#}");
        for n in load["nodes"].as_array().expect("nodes") {
            let id = n["peer_id"].as_str().expect("peer id");
            assert_eq!(n["provider"]["id"], provider_of[id].0.as_str());
        }
    }

    // Load measured at node 0 reaches node 1's table.
    let url = net.testnet.origin.url("/bytes/2000");
    let node0 = ids[0].clone();
    let started = Instant::now();
    loop {
        let got = get_via(net.http(0), &url).await;
        assert_eq!(got.status, 200);
        let load = load_of(&net.testnet.nodes[1]).await;
        let seen = load["nodes"]
            .as_array()
            .and_then(|nodes| nodes.iter().find(|n| n["peer_id"] == node0.as_str()))
            .cloned()
            .unwrap_or(Value::Null);
        let positive = |field: &str| seen[field].as_u64().unwrap_or(0) > 0;
        if positive("req_per_s") && positive("egress_bytes_per_s") && positive("hit_ratio_permille")
        {
            assert!(seen["utilisation_permille"].as_u64().is_some(), "{seen}");
            break;
        }
        assert!(
            started.elapsed() < POLL_LIMIT,
            "node 1 sees node 0 as {seen}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Honest nodes: nothing rejected, nobody penalised.
    for node in &nodes {
        let status = node.status().await.expect("status");
        let rejected = &status["load"]["rejected"];
        assert_eq!(rejected, &serde_json::json!({}), "{status:#}");
        let scores = status["gossip"]["scores"].as_object().expect("scores");
        assert!(
            scores.values().all(|s| s.as_f64().unwrap_or(-1.0) >= 0.0),
            "{scores:?}"
        );
        assert!(status["gossip"]["bytes_in"].as_u64().unwrap_or(0) > 0);
    }

    // A killed node leaves the others' tables.
    let killed = ids[2].clone();
    let killed_at = Instant::now();
    net.testnet.nodes[2].kill();
    let survivors: Vec<&NodeProcess> = net.testnet.nodes[..2].iter().collect();
    let gone = until(&survivors, killed_at, |load| {
        !listed(load).contains(&killed)
    })
    .await;
    println!("a killed node left every table {gone:?} after the kill");
    assert!(gone <= EXPIRY_DEADLINE + OBSERVATION_SLACK, "{gone:?}");
    for node in &survivors {
        assert_eq!(listed(&load_of(node).await).len(), 2);
    }
}
