//! Peering arrangements between providers: long-term ones from policy, short-term ones
//! negotiated under a surge, offloading to the peer, SLA watch and accounting.

mod long_term;
mod short_term;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reef_testnet::NodeProcess;
use reef_testnet::origin::expected_body;

use crate::support::{REQUEST_TIMEOUT, try_request};

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
/// How long a surge client waits for one answer, redirect followed, before counting an error:
/// about what a browser's user waits before giving up.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);

/// What the clients of a [`Surge`] saw.
#[derive(Default)]
pub struct Seen {
    pub ok: u64,
    /// Answers that came from a peer provider's node (a redirect followed).
    pub via_peer: u64,
    /// When each failure happened, and what it was.
    pub errors: Vec<(Instant, String)>,
}

/// A flash crowd on one node: clients arrive at `rate` a second whatever happens to those
/// before them (open loop, as a crowd does), each asking for [`SURGE_PATH`] of the service and
/// following redirects as a browser would; at most [`MAX_WAITING`] wait at once (later ones
/// give up at once, counted as errors). Anything but a 200 with the right body in the end is
/// an error, kept with its time. Stops when dropped.
pub struct Surge {
    driver: tokio::task::JoinHandle<()>,
    seen: Arc<Mutex<Seen>>,
}

/// Clients waiting at once; the rest of the crowd gives up.
const MAX_WAITING: usize = 512;

impl Surge {
    pub fn start(node: SocketAddr, rate: u32) -> Surge {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let shared = seen.clone();
        let driver = tokio::spawn(async move {
            let mut clients = tokio::task::JoinSet::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
            loop {
                tick.tick().await;
                while clients.try_join_next().is_some() {}
                if clients.len() >= MAX_WAITING {
                    record(&shared, Err("crowd gave up: too many waiting".into()));
                    continue;
                }
                let seen = shared.clone();
                clients.spawn(async move { record(&seen, ask(node).await) });
            }
        });
        Surge { driver, seen }
    }

    pub fn seen<T>(&self, look: impl FnOnce(&Seen) -> T) -> T {
        look(&self.seen.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

fn record(seen: &Mutex<Seen>, outcome: Result<bool, String>) {
    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    match outcome {
        Ok(via_peer) => {
            seen.ok += 1;
            seen.via_peer += u64::from(via_peer);
        }
        Err(why) => seen.errors.push((Instant::now(), why)),
    }
}

impl Drop for Surge {
    fn drop(&mut self) {
        // Its clients go with it.
        self.driver.abort();
    }
}

/// One client request: the service at `node`, then wherever it redirects. Whether the answer
/// came from a peer provider's node.
async fn ask(node: SocketAddr) -> Result<bool, String> {
    let request = || http::Request::get(SURGE_PATH).header("host", "video.example");
    let first = try_request(node, request(), CLIENT_TIMEOUT).await?;
    let (got, via_peer) = if first.status == 302 {
        let location = first.header("location").to_string();
        let rest = location
            .strip_prefix("http://")
            .ok_or(format!("odd location {location}"))?;
        let (addr, target) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let addr: SocketAddr = addr
            .parse()
            .map_err(|_| format!("odd location {location}"))?;
        let followed = try_request(addr, http::Request::get(target), CLIENT_TIMEOUT)
            .await
            .map_err(|e| format!("{location}: {e}"))?;
        (followed, true)
    } else {
        let relayed = !first.header("x-reef-peering").is_empty();
        (first, relayed)
    };
    if got.status != 200 {
        return Err(format!("{}: {}", got.status, got.text()));
    }
    if got.body != expected_body(SURGE_PATH, 2000) {
        return Err("wrong body".into());
    }
    Ok(via_peer)
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
