//! Reef's peer-to-peer overlay.
//!
//! This crate owns the libp2p Swarm (Kademlia on `/reef/kad/1.0.0`, gossipsub, identify, ping,
//! request-response on `/reef/peering/1` and `/reef/goodbye/1`, and mDNS when asked for), the
//! single event-loop task that drives it (and keeps its connections near a budget), and the
//! cloneable [`Client`] through which the rest of the node uses it: join, announce, withdraw and find
//! content holders, resolve and verify signed NodeRecords (and with them, which provider a
//! node belongs to), put and get any signed record in the DHT, publish and subscribe to gossip
//! topics, send opaque request/response messages to a peer over `/reef/peering/1` and take
//! peers' requests from an inbox, remember peers across restarts.
//!
//! Nothing unverified enters the DHT through us: Kademlia runs with
//! `StoreInserts::FilterBoth`, and the event loop opens every value a peer asks us to store
//! (and every value a lookup returns) as the record kind its key names, refusing and counting
//! (`reef_records_rejected_total{kind,reason}`) whatever fails.
//!
//! It must not know about HTTP (it only carries the HTTP address inside records), must not be
//! reached around (nobody else touches the Swarm), and must not block its event loop: queries
//! are started on command and answered from their events, file writes go to blocking threads.
//! Every queue and table is bounded.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod addrs;
mod behaviour;
mod broken;
mod client;
mod config;
mod error;
mod event_loop;
mod fresh_port;
mod goodbye;
mod gossip;
mod metrics;
mod node_records;
mod offenders;
mod peering;
mod peers_file;
mod scoring;
mod traffic;
mod validate;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
pub use libp2p::{Multiaddr, PeerId, identity::Keypair};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

pub use client::{Client, Holder, LookupStats, Status};
pub use config::{Config, DEFAULT_KEEP_CONNECTIONS, LocalInfo};
pub use error::Error;
pub use gossip::{Acceptance, GossipMessage, MessageHandle, Published};
pub use metrics::{Metrics, RejectLabels};
pub use node_records::{NodeInfo, signing_key};
pub use peering::{
    InboundPeering, MAX_PEERING_MESSAGE, PEERING_REQUEST_TIMEOUT, PeeringStats, Responder,
};
pub use scoring::{GOSSIP_THRESHOLD, GRAYLIST_THRESHOLD, PUBLISH_THRESHOLD};
pub use traffic::{TopicTraffic, Traffic};

/// Binding a socket is local and quick; if it takes this long something is badly wrong.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(5);

/// Builds the swarm, starts listening, waits until every listen address is bound (so that
/// [`Client::status`] reports real ports right away), spawns the event loop, and dials the
/// bootstrap and remembered peers.
///
/// Fails before touching the network if the node could not publish a valid NodeRecord: a key
/// that is not ed25519 ([`Error::Identity`]), a provider certificate that is not a current one
/// for this node ([`Error::Cert`]), or an HTTP address or region peers would refuse
/// ([`Error::Rejected`]).
///
/// Must be called within a tokio runtime.
pub async fn spawn(config: Config) -> Result<Client, Error> {
    let started = Instant::now();
    let signer = node_records::signing_key(&config.keypair)?;
    let now_ms = validate::unix_ms();
    if let Some(cert) = &config.local_record.cert {
        node_records::check_own_cert(&signer, cert, now_ms).map_err(Error::Cert)?;
    }
    node_records::seal_own(&signer, &config.local_record, Vec::new(), now_ms).map_err(|error| {
        Error::Rejected {
            kind: reef_proto::records::Kind::NodeRecord.label(),
            error,
        }
    })?;
    let bootstrap = config
        .bootstrap
        .iter()
        .map(|a| addrs::split_peer(a).ok_or_else(|| Error::BootstrapAddr(a.clone())))
        .collect::<Result<Vec<_>, _>>()?;
    let remembered = match &config.peers_file {
        Some(path) => peers_file::load(path).await.unwrap_or_else(|error| {
            warn!(%error, "ignoring the peers file");
            Vec::new()
        }),
        None => Vec::new(),
    };

    let mut registry = libp2p::metrics::Registry::default();
    let mut swarm = behaviour::build_swarm(
        config.keypair.clone(),
        config.mdns,
        config.peering_timeout,
        &mut registry,
    )?;
    let local = *swarm.local_peer_id();
    let mut waiting = HashSet::new();
    for addr in &config.listen {
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|e| Error::Listen(format!("{addr}: {e}")))?;
        waiting.insert(id);
    }
    let bound = async {
        while !waiting.is_empty() {
            match swarm.select_next_some().await {
                SwarmEvent::NewListenAddr {
                    listener_id,
                    address,
                } => {
                    debug!(%address, "listening");
                    waiting.remove(&listener_id);
                }
                SwarmEvent::ListenerClosed {
                    listener_id,
                    reason,
                    ..
                } if waiting.contains(&listener_id) => {
                    let why = reason
                        .err()
                        .map_or_else(|| "closed".to_string(), |e| e.to_string());
                    return Err(Error::Listen(why));
                }
                SwarmEvent::ListenerError { listener_id, error }
                    if waiting.contains(&listener_id) =>
                {
                    return Err(Error::Listen(error.to_string()));
                }
                other => debug!(event = ?other, "swarm event before start"),
            }
        }
        Ok(())
    };
    tokio::time::timeout(LISTEN_TIMEOUT, bound)
        .await
        .map_err(|_| Error::Listen("timed out waiting for listen addresses".into()))??;

    let (commands_tx, commands_rx) = mpsc::channel(client::COMMAND_QUEUE);
    let (joined_tx, joined_rx) = watch::channel(false);
    let broken = broken::Broken::default();
    let mut event_loop = event_loop::EventLoop::new(
        swarm,
        event_loop::Parts {
            signer,
            local_info: config.local_record,
            metrics: config.metrics,
            commands: commands_rx,
            joined_tx,
            started,
            peers_file: config.peers_file,
            peering_timeout: config.peering_timeout,
            broken: broken.clone(),
            keep_connections: config.keep_connections,
        },
    );
    for (peer, base) in bootstrap {
        event_loop.add_bootstrap(peer, base);
    }
    let remembered_count = remembered.len();
    for (peer, addrs) in remembered {
        event_loop.add_remembered(peer, addrs);
    }
    info!(
        peer = %local,
        bootstrap = config.bootstrap.len(),
        remembered = remembered_count,
        mdns = config.mdns,
        "overlay started"
    );
    tokio::spawn(event_loop.run());
    Ok(Client::new(
        commands_tx,
        local,
        joined_rx,
        Arc::new(registry),
        config.peering_timeout,
        broken,
    ))
}
