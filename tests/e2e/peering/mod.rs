//! Peering arrangements between providers: long-term ones from policy, short-term ones
//! negotiated under a surge, offloading to the peer, SLA watch and accounting.

pub(crate) mod long_term;
mod short_term;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reef_testnet::NodeProcess;
use reef_testnet::crowd::{Ask, Crowd};
use reef_testnet::origin::expected_body;

use crate::support::REQUEST_TIMEOUT;

pub async fn arrangements(node: &NodeProcess) -> serde_json::Value {
    admin_json(node, "/api/arrangements").await
}

pub async fn admin_json(node: &NodeProcess, path: &str) -> serde_json::Value {
    let admin = node.runtime().admin;
    let url = format!("http://{admin}{path}");
    let got = reef_testnet::client::fetch(None, http::Method::GET, &url, REQUEST_TIMEOUT)
        .await
        .expect(path);
    assert_eq!(got.status, 200);
    serde_json::from_slice(&got.body).expect("json")
}

/// The first arrangement `node` lists that `wanted` accepts, once it lists one (or fails the
/// test after `within`).
pub async fn wait_arrangement(
    node: &NodeProcess,
    within: Duration,
    wanted: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let all = arrangements(node).await;
        if let Some(a) = all["arrangements"]
            .as_array()
            .and_then(|list| list.iter().find(|a| wanted(a)))
        {
            return a.clone();
        }
        assert!(
            started.elapsed() < within,
            "no arrangement as wanted after {within:?}: {all}\n{}",
            node.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn short_term(status: &'static str) -> impl Fn(&serde_json::Value) -> bool {
    move |a| a["basis"] == "short_term" && a["status"] == status
}

/// The path every surge asks for.
pub const SURGE_PATH: &str = "/bytes/2000";

/// A flash crowd of `rate` clients a second asking `node` for [`SURGE_PATH`] of the service,
/// following redirects; see [`reef_testnet::crowd`]. It stops when dropped.
pub fn surge(node: SocketAddr, rate: u32) -> Crowd {
    Crowd::start(
        Ask {
            node,
            host: "video.example".into(),
            path: SURGE_PATH.into(),
            expect: Some(expected_body(SURGE_PATH, 2000).into()),
        },
        rate,
    )
}

/// The settlement of arrangement `id` in `node`'s ledger, once it holds one both parties
/// agreed to.
pub async fn wait_settled(node: &NodeProcess, id: &serde_json::Value) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let ledger = admin_json(node, "/api/ledger").await;
        if let Some(s) = ledger["settlements"]
            .as_array()
            .and_then(|l| l.iter().find(|s| s["id"] == *id && s["agreed"] == true))
        {
            let mut s = s.clone();
            // Each side writes it at its own time.
            s["written_at"] = serde_json::Value::Null;
            return s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no agreed settlement for {id}: {ledger}\n{}",
            node.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
