//! What the network does, second by second, seen from outside: each provider's mean
//! utilisation and demand (from the primary's load table), the origin's requests and bytes,
//! and the primary's arrangements as they start and end.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::Method;

use crate::{Testnet, client};

const ADMIN_TIMEOUT: Duration = Duration::from_secs(2);

/// One second of the network.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Seconds since the start.
    pub t: u64,
    /// Per provider name (`p0`, …): mean utilisation and demand of its nodes, permille.
    pub utilisation: BTreeMap<String, u64>,
    pub demand: BTreeMap<String, u64>,
    /// Origin requests and body bytes in this second.
    pub origin_requests: u64,
    pub origin_bytes: u64,
    /// What changed in the primary's arrangements, e.g. `arranged with p1`.
    pub events: Vec<String>,
}

/// Samples into `out` once a second until `until` since `started`.
pub async fn run(
    testnet: &Testnet,
    primary: usize,
    names: &BTreeMap<String, String>,
    started: Instant,
    until: Duration,
    out: Arc<Mutex<Vec<Sample>>>,
) {
    let admin = testnet.nodes[primary].runtime().admin;
    let mut known: BTreeMap<String, String> = BTreeMap::new();
    let (mut origin_hits, mut origin_bytes) = (testnet.origin.total_hits(), origin_down(testnet));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let t = started.elapsed();
        if t > until {
            return;
        }
        let mut sample = Sample {
            t: t.as_secs(),
            ..Sample::default()
        };
        let (hits, bytes) = (testnet.origin.total_hits(), origin_down(testnet));
        sample.origin_requests = hits.saturating_sub(origin_hits);
        sample.origin_bytes = bytes.saturating_sub(origin_bytes);
        (origin_hits, origin_bytes) = (hits, bytes);
        if let Some(load) = json(admin, "/api/load").await {
            for p in load["providers"].as_array().into_iter().flatten() {
                let id = p["id"].as_str().unwrap_or_default();
                let name = names.get(id).cloned().unwrap_or_else(|| id.to_string());
                let permille = |k: &str| p[k].as_u64().unwrap_or(0);
                sample
                    .utilisation
                    .insert(name.clone(), permille("utilisation_permille"));
                sample.demand.insert(name, permille("demand_permille"));
            }
        }
        if let Some(all) = json(admin, "/api/arrangements").await {
            for a in all["arrangements"].as_array().into_iter().flatten() {
                let (Some(id), Some(status)) = (a["id"].as_str(), a["status"].as_str()) else {
                    continue;
                };
                if known.get(id).map(String::as_str) == Some(status) {
                    continue;
                }
                let peer = a["peer"].as_str().unwrap_or_default();
                let peer = names.get(peer).cloned().unwrap_or_else(|| peer.to_string());
                sample.events.push(match status {
                    "active" => format!("arranged with {peer}"),
                    _ => format!(
                        "ended with {peer} ({})",
                        a["end_reason"].as_str().unwrap_or("?")
                    ),
                });
                known.insert(id.to_string(), status.to_string());
            }
        }
        out.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(sample);
    }
}

/// Body bytes the origin sent: through its link when it has one.
fn origin_down(testnet: &Testnet) -> u64 {
    testnet.origin_link().map_or(0, |l| l.crossed().down)
}

async fn json(admin: std::net::SocketAddr, path: &str) -> Option<serde_json::Value> {
    let url = format!("http://{admin}{path}");
    let got = client::fetch(None, Method::GET, &url, ADMIN_TIMEOUT)
        .await
        .ok()?;
    serde_json::from_slice(&got.body).ok()
}
