//! A flash crowd: clients that arrive at a steady rate whatever happened to those before them
//! (an open loop, as a real crowd is), each asking one node for a path of a service and
//! following a redirect as a browser would. What they see is kept for the test or benchmark
//! that started it: answers, which came from another provider's node, and every failure with
//! its time.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};

use crate::client::{self, ResponseHeaders};

/// Clients waiting at once; beyond it newcomers give up at once (counted as failures), so a
/// hung node cannot make the crowd grow without bound.
pub const MAX_WAITING: usize = 512;
/// How long one client waits for its answer, redirect followed: about what a person waits
/// before giving up.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);
/// Failures kept with their time; later ones are only counted.
const MAX_KEPT_FAILURES: usize = 10_000;

/// What the crowd asks for.
#[derive(Debug, Clone)]
pub struct Ask {
    /// The node the crowd's clients were sent to (by DNS, say).
    pub node: SocketAddr,
    /// The service's hostname, sent as `Host`.
    pub host: String,
    pub path: String,
    /// The body a client must get; `None` accepts any 200.
    pub expect: Option<Bytes>,
}

/// What the crowd's clients saw so far.
#[derive(Debug, Default)]
pub struct Seen {
    /// Answers as expected.
    pub ok: u64,
    /// Of those, answers from another provider's node: a redirect followed, or a relayed
    /// answer (`X-Reef-Peering`).
    pub via_peer: u64,
    /// When the first of those came.
    pub first_via_peer: Option<Instant>,
    /// Failures with their time and what they were (the first [`MAX_KEPT_FAILURES`]).
    pub failures: Vec<(Instant, String)>,
    /// All failures, kept or not.
    pub failed: u64,
}

/// A running crowd; it stops, its waiting clients with it, when dropped.
pub struct Crowd {
    driver: tokio::task::JoinHandle<()>,
    seen: Arc<Mutex<Seen>>,
    pub started: Instant,
}

impl Crowd {
    /// `rate` clients a second ask `ask`.
    pub fn start(ask: Ask, rate: u32) -> Crowd {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let shared = seen.clone();
        let ask = Arc::new(ask);
        let driver = tokio::spawn(async move {
            let mut clients = tokio::task::JoinSet::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
            loop {
                tick.tick().await;
                while clients.try_join_next().is_some() {}
                if clients.len() >= MAX_WAITING {
                    record(&shared, Err("gave up: too many clients waiting".into()));
                    continue;
                }
                let (seen, ask) = (shared.clone(), ask.clone());
                clients.spawn(async move { record(&seen, one_client(&ask).await) });
            }
        });
        Crowd {
            driver,
            seen,
            started: Instant::now(),
        }
    }

    /// Looks at what the clients saw so far.
    pub fn seen<T>(&self, look: impl FnOnce(&Seen) -> T) -> T {
        look(&lock(&self.seen))
    }
}

impl Drop for Crowd {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

fn lock(seen: &Mutex<Seen>) -> MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(PoisonError::into_inner)
}

fn record(seen: &Mutex<Seen>, outcome: Result<bool, String>) {
    let mut seen = lock(seen);
    match outcome {
        Ok(via_peer) => {
            seen.ok += 1;
            if via_peer {
                seen.via_peer += 1;
                seen.first_via_peer.get_or_insert_with(Instant::now);
            }
        }
        Err(why) => {
            seen.failed += 1;
            if seen.failures.len() < MAX_KEPT_FAILURES {
                seen.failures.push((Instant::now(), why));
            }
        }
    }
}

async fn one_client(ask: &Ask) -> Result<bool, String> {
    client_request(ask.node, &ask.host, &ask.path, ask.expect.as_ref()).await
}

/// One client: `path` of service `host` at `node`, then wherever a redirect sends it, each
/// within [`CLIENT_TIMEOUT`]; anything but a 200 (with `expect`'s body, if given) is an
/// error saying what it was. Whether the answer came from another provider's node.
pub async fn client_request(
    node: SocketAddr,
    host: &str,
    path: &str,
    expect: Option<&Bytes>,
) -> Result<bool, String> {
    let first = client::fetch_service(node, host, path, CLIENT_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    let (got, via_peer) = if first.status == StatusCode::FOUND {
        let location = first.header("location").unwrap_or_default().to_string();
        let followed = client::fetch(None, Method::GET, &location, CLIENT_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        (followed, true)
    } else {
        let relayed = first.header("x-reef-peering").is_some();
        (first, relayed)
    };
    if got.status != StatusCode::OK {
        return Err(format!(
            "{}: {}",
            got.status,
            String::from_utf8_lossy(&got.body).trim()
        ));
    }
    if expect.is_some_and(|want| *want != got.body) {
        return Err("wrong body".into());
    }
    Ok(via_peer)
}
