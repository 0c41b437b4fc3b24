//! The composed libp2p behaviour and the swarm built around it.

use std::time::Duration;

use libp2p::core::{Transport as _, upgrade};
use libp2p::{
    StreamProtocol, Swarm, allow_block_list, gossipsub, identify,
    identity::Keypair,
    kad, mdns,
    metrics::Registry,
    noise, ping, request_response,
    swarm::{NetworkBehaviour, behaviour::toggle::Toggle},
    tcp, yamux,
};
use reef_proto::WITHDRAWAL_TOPIC;

use crate::Error;
use crate::fresh_port::FreshPort;
use crate::goodbye::{GOODBYE_PROTOCOL, GOODBYE_TIMEOUT, GoodbyeCodec, MAX_GOODBYE_STREAMS};
use crate::peering::{MAX_PEERING_STREAMS, PEERING_PROTOCOL, PeeringCodec};
use crate::scoring;

/// Our own Kademlia protocol, so Reef's DHT never merges with the public IPFS DHT.
pub(crate) const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/reef/kad/1.0.0");
/// Identify protocol version; peers speaking another one are not Reef nodes.
pub(crate) const IDENTIFY_PROTOCOL: &str = "/reef/id/1.0.0";

/// Connections with no active stream close after this; gossipsub and kad keep useful ones busy.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);
/// A QUIC handshake takes one or two round trips; 3 s covers slow intercontinental paths
/// while a dial to a departed peer (UDP gives no "refused") does not stall lookups for long.
const QUIC_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// One DHT query (all its requests) may take this long; lookups on the fetch path give up sooner.
pub(crate) const KAD_QUERY_TIMEOUT: Duration = Duration::from_secs(20);
/// Kad's own expiry for stored values (an hour, the longest a NodeRecord lives). Every value
/// we store also gets its envelope's expiry, which is never later; kad drops it at the sooner.
pub(crate) const RECORD_TTL: Duration = Duration::from_secs(60 * 60);
/// How often kad refreshes the routing table by walking every bucket (libp2p's default: 5 min).
/// In an overlay of a few hundred nodes the walk reaches nearly all of them, and since the
/// connection budget closes what it opens, each one is a burst of dials and goodbyes. New
/// nodes enter our table when they contact us, and departed ones leave it when a request to
/// them fails, so the refresh is only a backstop.
const KAD_BOOTSTRAP_INTERVAL: Duration = Duration::from_secs(30 * 60);
/// How often peers re-replicate records they hold to the current closest peers (below the TTL).
const RECORD_REPLICATION_INTERVAL: Duration = Duration::from_secs(20 * 60);
/// Provider records expire after this unless re-announced; bounds how long an evicted object is
/// still advertised.
const PROVIDER_RECORD_TTL: Duration = Duration::from_secs(4 * 60 * 60);
/// kad re-announces the keys we provide this often (well below the TTL).
const PROVIDER_PUBLICATION_INTERVAL: Duration = Duration::from_secs(60 * 60);
/// Distinct keys (ours and others') held in the provider store; a cache node holds many objects.
const MAX_PROVIDER_KEYS: usize = 16 * 1024;
/// Value records held for others (node, content and offer records in our part of the keyspace).
const MAX_STORED_RECORDS: usize = 4 * 1024;
/// Largest value we store: the largest record kind's limit (`NodeRecord::MAX_LEN`, 8 KiB).
/// Validation refuses anything over its own kind's limit before the store sees it.
const MAX_RECORD_VALUE_BYTES: usize = 8 * 1024;
/// Largest kad message; a GetProviders answer with 20 peers and their addresses fits easily.
const KAD_MAX_PACKET_SIZE: usize = 64 * 1024;
/// Largest gossip message; load reports are a few hundred bytes, purge notices and withdrawals
/// at most 32 KiB plus their envelope.
const GOSSIP_MAX_TRANSMIT_SIZE: usize = 64 * 1024;
/// First gossipsub heartbeat after start (default 5 s). Relaying through the mesh needs the
/// mesh, which heartbeats build; a freshly started node should forward within a second, not
/// five. Publishing itself does not wait for it: flood publishing sends to every connected
/// peer subscribed to the topic.
const GOSSIP_HEARTBEAT_INITIAL_DELAY: Duration = Duration::from_millis(200);
/// Gossipsub heartbeat (the default, said explicitly): the mesh is repaired and gossip
/// (IHAVE) sent this often. A node that just joined has a mesh after its first heartbeat, so
/// it hears every node's load report within about two report periods (1 s each).
const GOSSIP_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Messages larger than this make their receivers tell their mesh peers "don't send me this
/// one" (IDONTWANT, gossipsub 1.2) as soon as the first copy arrives, before validating it
/// (the default is 1000 bytes). Load reports (~280 bytes as gossip messages) arrive first from
/// their publisher (flood publishing), and a relay forwards only after its subscriber's
/// verdict, so its mesh peers' IDONTWANTs often arrive before it would send them a copy they
/// already have; often, not always, as the two race (measured: 4.4 instead of 5.9 copies per
/// report on a 20-node testnet). An IDONTWANT costs about 30 bytes per mesh peer; a duplicate
/// costs its bytes plus a signature check at the receiver.
const GOSSIP_IDONTWANT_THRESHOLD: usize = 128;
/// Gossipsub mesh degree D (default 6), with its bounds below. Every publish already reaches
/// all connected subscribers directly (flood publishing), so beyond the first hop the mesh
/// mostly delivers duplicates, and on loopback testnets duplicates are what load gossip costs:
/// each copy is decrypted and its signature checked. D = 4 measured 3.5 copies per load report
/// instead of 4.4 and 20 instead of 26 ms of CPU per node and second on a 20-node testnet,
/// while a mesh of 3..8 peers still reaches every node in a few hops when nodes are not all
/// connected to each other.
const GOSSIP_MESH_N: usize = 4;
/// Below this the heartbeat grafts more peers into the mesh.
const GOSSIP_MESH_N_LOW: usize = 3;
/// Above this the heartbeat prunes the mesh back to D.
const GOSSIP_MESH_N_HIGH: usize = 8;
/// Mesh peers that must be ones we dialled (an eclipse defence); at most D/2.
const GOSSIP_MESH_OUTBOUND_MIN: usize = 2;
/// Ping interval; each ping refreshes the RTT we rank holders by, and a peer that stops
/// answering (hung, or its path is) is found out within
/// `PING_FAILURES_TO_DROP` × (interval + timeout). Not shorter: every node pings each peer it
/// is connected to, and at 100 nodes on 2 cores 2 s made pings a large share of the idle
/// overlay's CPU, and lookups several times slower (docs/benchmarks.md).
const PING_INTERVAL: Duration = Duration::from_secs(5);
/// A peer that takes longer than this to answer a ping is taken for hung: on loopback or a
/// continent's width an answer takes milliseconds.
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// Pings in a row a peer must fail before it is dropped from the routing table and
/// disconnected.
pub(crate) const PING_FAILURES_TO_DROP: u8 = 3;

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    /// Peers banned for sending invalid records (`offenders.rs`): their connections are
    /// closed and new ones refused, both ways.
    pub(crate) blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    pub(crate) kad: kad::Behaviour<kad::store::MemoryStore>,
    pub(crate) gossipsub: gossipsub::Behaviour,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) mdns: Toggle<mdns::tokio::Behaviour>,
    pub(crate) peering: request_response::Behaviour<PeeringCodec>,
    pub(crate) goodbye: request_response::Behaviour<GoodbyeCodec>,
}

/// Builds the transport stack (TCP + noise + yamux, QUIC, DNS) and the behaviour. Gossipsub's
/// and the transport's byte counters go into `registry` (read back by [`crate::traffic`]).
/// `peering_timeout` bounds every `/reef/peering/1` exchange.
pub(crate) fn build_swarm(
    keypair: Keypair,
    mdns_on: bool,
    peering_timeout: Duration,
    registry: &mut Registry,
) -> Result<Swarm<Behaviour>, Error> {
    let behaviour = build_behaviour(&keypair, mdns_on, peering_timeout, registry)?;
    let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_quic_config(|mut c| {
            c.handshake_timeout = QUIC_HANDSHAKE_TIMEOUT;
            c
        })
        .with_other_transport(|key| {
            let tcp = FreshPort(tcp::tokio::Transport::new(
                tcp::Config::default().nodelay(true),
            ));
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                tcp.upgrade(upgrade::Version::V1Lazy)
                    .authenticate(noise::Config::new(key)?)
                    .multiplex(yamux::Config::default()),
            )
        })
        .map_err(|e| Error::Transport(e.to_string()))?
        .with_dns()
        .map_err(|e| Error::Transport(e.to_string()))?
        .with_bandwidth_metrics(registry)
        .with_behaviour(|_| behaviour)
        .map_err(|e| Error::Behaviour(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
        .build();
    Ok(swarm)
}

fn build_behaviour(
    keypair: &Keypair,
    mdns_on: bool,
    peering_timeout: Duration,
    registry: &mut Registry,
) -> Result<Behaviour, Error> {
    let local = keypair.public().to_peer_id();

    let mut kad_config = kad::Config::new(KAD_PROTOCOL);
    kad_config
        .set_query_timeout(KAD_QUERY_TIMEOUT)
        .set_periodic_bootstrap_interval(Some(KAD_BOOTSTRAP_INTERVAL))
        .set_record_ttl(Some(RECORD_TTL))
        .set_replication_interval(Some(RECORD_REPLICATION_INTERVAL))
        // We re-put our own NodeRecord with a fresh issued_at ourselves (event loop), and other
        // records' signers renew theirs: a re-signed record is the only way to extend one.
        .set_publication_interval(None)
        .set_provider_record_ttl(Some(PROVIDER_RECORD_TTL))
        .set_provider_publication_interval(Some(PROVIDER_PUBLICATION_INTERVAL))
        .set_max_packet_size(KAD_MAX_PACKET_SIZE)
        // Everything others PUT into our store is validated by the event loop first
        // (event_loop/records.rs), and provider records are checked there too (events.rs).
        .set_record_filtering(kad::StoreInserts::FilterBoth);
    let store_config = kad::store::MemoryStoreConfig {
        max_records: MAX_STORED_RECORDS,
        max_value_bytes: MAX_RECORD_VALUE_BYTES,
        max_provided_keys: MAX_PROVIDER_KEYS,
        max_providers_per_key: kad::K_VALUE.get(),
    };
    let store = kad::store::MemoryStore::with_config(local, store_config);
    let mut kad = kad::Behaviour::with_config(local, store, kad_config);
    // Loopback and LAN addresses are never confirmed external, so automatic mode would leave us a
    // client that nobody can query (DEPENDENCIES.md pitfall 2).
    kad.set_mode(Some(kad::Mode::Server));

    let gossip_config = gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        .max_transmit_size(GOSSIP_MAX_TRANSMIT_SIZE)
        .heartbeat_initial_delay(GOSSIP_HEARTBEAT_INITIAL_DELAY)
        .heartbeat_interval(GOSSIP_HEARTBEAT_INTERVAL)
        .idontwant_message_size_threshold(GOSSIP_IDONTWANT_THRESHOLD)
        .mesh_n(GOSSIP_MESH_N)
        .mesh_n_low(GOSSIP_MESH_N_LOW)
        .mesh_n_high(GOSSIP_MESH_N_HIGH)
        .mesh_outbound_min(GOSSIP_MESH_OUTBOUND_MIN)
        // Said explicitly because purge's "every node within 2 s" relies on it.
        .flood_publish(true)
        .message_id_fn(|m: &gossipsub::Message| {
            let hash = blake3::hash(&m.data);
            gossipsub::MessageId::from(&hash.as_bytes()[..20])
        })
        .build()
        .map_err(|e| Error::Behaviour(format!("gossipsub config: {e}")))?;
    let mut gossipsub = gossipsub::Behaviour::new(
        gossipsub::MessageAuthenticity::Signed(keypair.clone()),
        gossip_config,
    )
    .map_err(|e| Error::Behaviour(format!("gossipsub: {e}")))?
    .with_metrics(
        registry.sub_registry_with_prefix("gossipsub"),
        gossipsub::MetricsConfig::default(),
    );
    let (params, thresholds) = scoring::peer_score();
    gossipsub
        .with_peer_score(params, thresholds)
        .map_err(|e| Error::Behaviour(format!("gossipsub peer scoring: {e}")))?;
    // The withdrawal topic is the overlay's own; every other topic gets its subscriber (and
    // its score parameters) through `Client::subscribe`.
    let withdrawals = gossipsub::IdentTopic::new(WITHDRAWAL_TOPIC);
    gossipsub
        .subscribe(&withdrawals)
        .map_err(|e| Error::Behaviour(format!("gossipsub subscribe: {e}")))?;
    gossipsub
        .set_topic_params(withdrawals, scoring::topic())
        .map_err(|e| Error::Behaviour(format!("gossipsub topic score: {e}")))?;

    let identify = identify::Behaviour::new(
        identify::Config::new(IDENTIFY_PROTOCOL.to_string(), keypair.public())
            .with_agent_version(format!("reef/{}", env!("CARGO_PKG_VERSION"))),
    );

    let ping = ping::Behaviour::new(
        ping::Config::new()
            .with_interval(PING_INTERVAL)
            .with_timeout(PING_TIMEOUT),
    );

    let mdns = if mdns_on {
        Some(
            mdns::tokio::Behaviour::new(mdns::Config::default(), local)
                .map_err(|e| Error::Behaviour(format!("mdns: {e}")))?,
        )
    } else {
        None
    };

    // Dials for a request use the addresses kad knows (fed by identify and bootstrap).
    let peering = request_response::Behaviour::with_codec(
        PeeringCodec,
        [(PEERING_PROTOCOL, request_response::ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(peering_timeout)
            .with_max_concurrent_streams(MAX_PEERING_STREAMS),
    );

    // Never dials: a goodbye goes over the connection it is about.
    let goodbye = request_response::Behaviour::with_codec(
        GoodbyeCodec,
        [(GOODBYE_PROTOCOL, request_response::ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(GOODBYE_TIMEOUT)
            .with_max_concurrent_streams(MAX_GOODBYE_STREAMS),
    );

    Ok(Behaviour {
        blocked: allow_block_list::Behaviour::default(),
        kad,
        gossipsub,
        identify,
        ping,
        mdns: Toggle::from(mdns),
        peering,
        goodbye,
    })
}
