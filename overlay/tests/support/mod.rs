//! Helpers shared by the overlay's integration tests (each test file is its own crate and
//! uses some of them).
#![allow(dead_code)]

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use reef_overlay::{Client, Config, Keypair, LocalInfo, Metrics, Multiaddr};
use reef_proto::records::Capacity;

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// The node's listen address on the given transport (`"quic-v1"` or `"tcp"`), with `/p2p/`.
pub async fn addr_of(client: &Client, transport: &str) -> Result<Multiaddr> {
    let status = client.status().await?;
    let addr = status
        .listen_addrs
        .iter()
        .find(|a| a.contains(&format!("/{transport}")))
        .with_context(|| format!("no {transport} address in {:?}", status.listen_addrs))?;
    Ok(addr.parse()?)
}

/// Polls `check` until it yields `Some`, or fails after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        // Poll interval, not synchronisation: the condition is re-checked until the deadline.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A node on 127.0.0.1 (QUIC and TCP, port 0), mDNS off, advertising a made-up edge.
pub fn config(
    keypair: Keypair,
    name: &str,
    bootstrap: Vec<Multiaddr>,
    peers_file: Option<PathBuf>,
) -> Config {
    Config {
        keypair,
        listen: vec![
            "/ip4/127.0.0.1/udp/0/quic-v1"
                .parse()
                .expect("valid multiaddr"),
            "/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr"),
        ],
        bootstrap,
        mdns: false,
        peers_file,
        local_record: LocalInfo {
            http: format!("{name}.test:8080"),
            region: format!("region-of-{name}"),
            capacity: Capacity {
                req_per_s: 100,
                mbit_per_s: 200,
            },
            cert: None,
        },
        metrics: Metrics::default(),
        peering_timeout: reef_overlay::PEERING_REQUEST_TIMEOUT,
        keep_connections: reef_overlay::DEFAULT_KEEP_CONNECTIONS,
    }
}
