//! What the node tells the overlay at start.

use std::path::PathBuf;
use std::time::Duration;

use libp2p::{Multiaddr, identity::Keypair};
use reef_proto::records::Capacity;

use crate::Metrics;

/// Everything [`crate::spawn`] needs.
#[derive(Clone)]
pub struct Config {
    /// The node's identity; its PeerId names the node in the DHT and signs its NodeRecord.
    pub keypair: Keypair,
    /// Addresses to listen on, e.g. `/ip4/127.0.0.2/udp/0/quic-v1` and `/ip4/127.0.0.2/tcp/0`.
    /// Port 0 picks a free port; [`crate::Client::status`] reports the real one.
    pub listen: Vec<Multiaddr>,
    /// Peers to join through; each address must end in `/p2p/<peer id>`.
    pub bootstrap: Vec<Multiaddr>,
    /// Discover LAN neighbours by mDNS. It multicasts off the machine: never in tests.
    pub mdns: bool,
    /// Where to remember recently connected peers, so a restart rejoins without bootstrap flags.
    pub peers_file: Option<PathBuf>,
    /// What goes into the node's signed NodeRecord.
    pub local_record: LocalInfo,
    /// Where the overlay counts what it does (rejected records, ...): made with
    /// [`Metrics::register`] into the node's registry, or `Metrics::default()` for none.
    pub metrics: Metrics,
    /// How long one `/reef/peering/1` exchange may take once connected, both ways: our
    /// requests fail with [`crate::Error::Timeout`] after it, and peers' requests we have not
    /// answered by then fail at their end. Normally [`crate::PEERING_REQUEST_TIMEOUT`] (5 s);
    /// tests shorten it.
    pub peering_timeout: Duration,
    /// Connections the node keeps open once joined; older ones beyond it are closed, outside
    /// the gossip mesh and farthest first. Normally [`DEFAULT_KEEP_CONNECTIONS`].
    pub keep_connections: usize,
}

/// Enough for gossip's meshes (3 to 8 peers on each of a handful of topics, mostly shared)
/// and a choice of nearby holders, at about 130 KiB a connection.
pub const DEFAULT_KEEP_CONNECTIONS: usize = 12;

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The keypair is left out on purpose: it is secret.
        f.debug_struct("Config")
            .field("peer_id", &self.keypair.public().to_peer_id())
            .field("listen", &self.listen)
            .field("bootstrap", &self.bootstrap)
            .field("mdns", &self.mdns)
            .field("peers_file", &self.peers_file)
            .field("local_record", &self.local_record)
            .field("peering_timeout", &self.peering_timeout)
            .field("keep_connections", &self.keep_connections)
            .finish_non_exhaustive()
    }
}

/// The node's own facts published in its NodeRecord (signed with the node's key; checked at
/// [`crate::spawn`], so a node never publishes what its peers would reject).
#[derive(Debug, Clone)]
pub struct LocalInfo {
    /// `host:port` of the node's HTTP edge.
    pub http: String,
    /// The node's region, used to rank holders.
    pub region: String,
    /// What the operator says the node can serve.
    pub capacity: Capacity,
    /// A sealed [`ProviderCert`](reef_proto::records::ProviderCert) for this node, signed by
    /// the provider's key: the only thing that makes the node a member of a provider. `None`:
    /// the node is its own provider. Replace it with [`crate::Client::set_provider_cert`].
    pub cert: Option<Vec<u8>>,
}
