//! The one task that owns the Swarm: it starts queries on command, answers them when their
//! events arrive, validates what peers store with us, and keeps the node joined and published.
//!
//! Nothing here blocks: file writes go to `spawn_blocking`, queries are answered from events.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, Swarm,
    gossipsub::TopicHash,
    kad::{QueryId, RecordKey, store::RecordStore},
    swarm::dial_opts::DialOpts,
};
use reef_proto::ContentKey;
use reef_proto::records::SigningKey;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, info, warn};

use crate::Error;
use crate::Metrics;
use crate::addrs;
use crate::behaviour::Behaviour;
use crate::client::{Command, ProvidersReply, Status};
use crate::config::LocalInfo;
use crate::gossip::GossipMessage;
use crate::node_records::{RECORD_CACHE_CAPACITY, RECORD_CACHE_TTL, RecordCache};
use crate::offenders::Offenders;
use crate::peers_file::RecentPeers;
use join::JOIN_RETRY_MIN;
use records::{GetQuery, PutQuery};

mod events;
mod gossip;
mod join;
mod peering;
mod prune;
mod queries;
mod records;
#[cfg(test)]
mod tests;

/// Remembered peers re-dialled per join attempt; the best few suffice to find the overlay.
const MAX_REDIAL: usize = 16;
/// The peers file is rewritten this often (and at shutdown).
const PEERS_SAVE_INTERVAL: Duration = Duration::from_secs(30);
/// How often deadlines of pending lookups are checked; well below their 3 s budget.
const SWEEP_INTERVAL: Duration = Duration::from_millis(250);
/// Lookups of one kind in flight at once; beyond this callers get `Error::Busy`.
const MAX_PENDING_QUERIES: usize = 1024;
/// Keys provided before joining, remembered to be announced once joined.
const MAX_UNANNOUNCED: usize = 4096;

struct ProvidersQuery {
    key: ContentKey,
    found: HashSet<PeerId>,
    limit: usize,
    deadline: Instant,
    /// When the lookup started, for `reef_dht_lookup_duration_seconds`.
    started: Instant,
    /// Kademlia's counts of the peers asked so far, from its last progress report.
    stats: Option<crate::client::LookupStats>,
    reply: ProvidersReply,
}

pub(crate) struct EventLoop {
    swarm: Swarm<Behaviour>,
    local: PeerId,
    /// The node's key as an envelope signer (its libp2p ed25519 key).
    signer: SigningKey,
    local_info: LocalInfo,
    metrics: Metrics,
    /// Rejected records by `"<kind>/<reason>"`, for the status (at most kinds × reasons).
    rejected: BTreeMap<String, u64>,
    /// Peers sending invalid records, and the banned ones.
    offenders: Offenders,
    commands: mpsc::Receiver<Command>,
    joined_tx: watch::Sender<bool>,
    started: Instant,

    peers_file: Option<PathBuf>,
    recent: RecentPeers,
    save_task: Option<JoinHandle<()>>,

    /// Last ping RTT per connected peer (entries leave when the peer disconnects).
    rtt: HashMap<PeerId, Duration>,
    /// Pings in a row a connected peer failed to answer (entries leave when it answers or
    /// disconnects).
    ping_failures: HashMap<PeerId, u8>,
    /// Whether a connected peer is reached over loopback (decides whether its loopback listen
    /// addresses are usable to us).
    via_loopback: HashMap<PeerId, bool>,
    records: RecordCache,

    joined: bool,
    bootstrap_done: bool,
    bootstrap_query: Option<QueryId>,
    /// Configured bootstrap peers, re-dialled while we have no connection.
    bootstrap_peers: Vec<(PeerId, Vec<Multiaddr>)>,
    join_backoff: Duration,
    next_join_attempt: Option<Instant>,

    record_put_query: Option<QueryId>,
    next_record_put: Option<Instant>,
    /// Our record changed (new certificate) while a put of the old one was in flight.
    record_changed: bool,
    /// When the record we last published expires (unix ms).
    own_record_expires: u64,

    pending_provide: HashMap<QueryId, oneshot::Sender<Result<(), Error>>>,
    pending_providers: HashMap<QueryId, ProvidersQuery>,
    pending_gets: HashMap<QueryId, GetQuery>,
    pending_puts: HashMap<QueryId, PutQuery>,
    unannounced: VecDeque<RecordKey>,
    announcing: HashSet<QueryId>,
    /// Our routing table's size when our keys last went out to the whole overlay.
    announced_at_table: usize,

    /// One bounded queue per topic somebody subscribed to (at most `MAX_SUBSCRIPTIONS`).
    subscribers: HashMap<TopicHash, mpsc::Sender<GossipMessage>>,
    gossip_dropped: u64,
    /// Keys we stopped providing, withdrawn over gossip at the next sweep (bounded: flushed
    /// whenever a message's worth has gathered).
    withdrawals: Vec<ContentKey>,

    /// `/reef/peering/1` requests both ways.
    peering: peering::Peering,
    /// Peers whose last connection broke, shared with clients.
    broken: crate::broken::Broken,
    /// Connections kept near `Config::keep_connections`.
    budget: prune::Budget,
}

/// What [`EventLoop::new`] needs besides the swarm.
pub(crate) struct Parts {
    pub(crate) signer: SigningKey,
    pub(crate) local_info: LocalInfo,
    pub(crate) metrics: Metrics,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) joined_tx: watch::Sender<bool>,
    pub(crate) started: Instant,
    pub(crate) peers_file: Option<PathBuf>,
    pub(crate) peering_timeout: Duration,
    pub(crate) broken: crate::broken::Broken,
    pub(crate) keep_connections: usize,
}

impl EventLoop {
    pub(crate) fn new(swarm: Swarm<Behaviour>, parts: Parts) -> Self {
        Self {
            local: *swarm.local_peer_id(),
            swarm,
            signer: parts.signer,
            local_info: parts.local_info,
            metrics: parts.metrics,
            rejected: BTreeMap::new(),
            offenders: Offenders::default(),
            commands: parts.commands,
            joined_tx: parts.joined_tx,
            started: parts.started,
            peers_file: parts.peers_file,
            broken: parts.broken,
            recent: RecentPeers::default(),
            save_task: None,
            rtt: HashMap::new(),
            ping_failures: HashMap::new(),
            via_loopback: HashMap::new(),
            records: RecordCache::new(RECORD_CACHE_CAPACITY, RECORD_CACHE_TTL),
            joined: false,
            bootstrap_done: false,
            bootstrap_query: None,
            bootstrap_peers: Vec::new(),
            join_backoff: JOIN_RETRY_MIN,
            next_join_attempt: Some(Instant::now()),
            record_put_query: None,
            next_record_put: None,
            record_changed: false,
            own_record_expires: 0,
            pending_provide: HashMap::new(),
            pending_providers: HashMap::new(),
            pending_gets: HashMap::new(),
            pending_puts: HashMap::new(),
            unannounced: VecDeque::new(),
            announcing: HashSet::new(),
            announced_at_table: 0,
            subscribers: HashMap::new(),
            gossip_dropped: 0,
            withdrawals: Vec::new(),
            peering: peering::Peering::new(parts.peering_timeout),
            budget: prune::Budget::new(parts.keep_connections),
        }
    }

    /// Adds a known peer to kad and dials it (bootstrap, remembered and mDNS peers).
    pub(super) fn add_and_dial(&mut self, peer: PeerId, addrs: Vec<Multiaddr>, why: &'static str) {
        if peer == self.local || addrs.is_empty() {
            return;
        }
        for addr in &addrs {
            self.swarm
                .behaviour_mut()
                .kad
                .add_address(&peer, addr.clone());
        }
        if self.swarm.is_connected(&peer) {
            return;
        }
        let opts = DialOpts::peer_id(peer).addresses(addrs).build();
        if let Err(error) = self.swarm.dial(opts) {
            debug!(%peer, %error, why, "cannot dial");
        } else {
            debug!(%peer, why, "dialling");
        }
    }

    /// A configured bootstrap address, dialled at the first join attempt and again whenever
    /// we are alone. A peer's addresses (TCP and QUIC, say) go into one dial: dialled one by
    /// one, only the first would ever be tried (the others are refused while it is in
    /// progress), and a peer whose first address fails would never be reached.
    pub(crate) fn add_bootstrap(&mut self, peer: PeerId, addr: Multiaddr) {
        match self.bootstrap_peers.iter_mut().find(|(p, _)| *p == peer) {
            Some((_, addrs)) if !addrs.contains(&addr) => addrs.push(addr),
            Some(_) => {}
            None => self.bootstrap_peers.push((peer, vec![addr])),
        }
    }

    /// A peer from the peers file: dialled now, and kept so the next save remembers it.
    pub(crate) fn add_remembered(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        self.recent
            .seen(peer, addrs.clone(), self.started.into_std());
        self.add_and_dial(peer, addrs, "remembered");
    }

    /// Dials the bootstrap peers and the best remembered peers again (we are alone).
    pub(super) fn redial_known(&mut self) {
        for (peer, addrs) in self.bootstrap_peers.clone() {
            self.add_and_dial(peer, addrs, "bootstrap");
        }
        for (peer, addrs) in self.recent.best(MAX_REDIAL) {
            self.add_and_dial(peer, addrs, "remembered");
        }
    }

    pub(crate) async fn run(mut self) {
        let mut save_tick =
            tokio::time::interval_at(Instant::now() + PEERS_SAVE_INTERVAL, PEERS_SAVE_INTERVAL);
        save_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut sweep_tick = tokio::time::interval(SWEEP_INTERVAL);
        sweep_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut prune_tick = tokio::time::interval(prune::PRUNE_INTERVAL);
        prune_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);

        let shutdown_reply = loop {
            let join_at = self.next_join_attempt;
            let record_at = self.next_record_put;
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown { reply }) => break Some(reply),
                    Some(command) => self.on_command(command),
                    None => break None,
                },
                Some(awaited) = self.peering.awaiting.next(), if !self.peering.awaiting.is_empty() => {
                    self.on_peering_response(awaited);
                }
                () = sleep_until_opt(join_at) => self.join_attempt(),
                () = sleep_until_opt(record_at) => self.put_own_record(),
                _ = save_tick.tick() => {
                    if self.joined && self.swarm.connected_peers().next().is_none() {
                        debug!("no peers left; dialling known peers again");
                        self.redial_known();
                    }
                    self.save_peers();
                }
                _ = sweep_tick.tick() => self.sweep(),
                _ = prune_tick.tick() => self.prune_connections(),
            }
        };

        if let Some(task) = self.save_task.take() {
            let _ = task.await;
        }
        self.save_peers();
        if let Some(task) = self.save_task.take() {
            let _ = task.await;
        }
        info!(peer = %self.local, "overlay event loop stopped");
        // Drop the swarm, the command queue and the joined flag before confirming, so that
        // every later call on a Client sees a stopped loop.
        drop(self);
        if let Some(reply) = shutdown_reply {
            let _ = reply.send(());
        }
    }

    // ---- commands ----

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Command::Provide { key, reply } => self.provide(key, reply),
            Command::Unprovide { keys, reply } => {
                self.unprovide(keys);
                let _ = reply.send(());
            }
            Command::Subscribe {
                topic,
                queue,
                reply,
            } => {
                let _ = reply.send(self.subscribe(&topic, queue));
            }
            Command::Publish { topic, data, reply } => {
                let _ = reply.send(self.publish(&topic, data));
            }
            Command::Report {
                handle,
                acceptance,
                reply,
            } => {
                let _ = reply.send(self.report(&handle, acceptance));
            }
            Command::GetProviders {
                key,
                limit,
                deadline,
                reply,
            } => {
                if self.pending_providers.len() >= MAX_PENDING_QUERIES {
                    let _ = reply.send(Err(Error::Busy));
                    return;
                }
                let id = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .get_providers(RecordKey::new(key.as_bytes()));
                let query = ProvidersQuery {
                    key,
                    found: HashSet::new(),
                    limit,
                    deadline,
                    started: Instant::now(),
                    stats: None,
                    reply,
                };
                self.pending_providers.insert(id, query);
            }
            Command::NodeRecord {
                peer,
                deadline,
                reply,
            } => self.lookup_node_record(peer, deadline, reply),
            Command::PutRecord {
                key,
                value,
                deadline,
                reply,
            } => self.put_value(key, value, deadline, reply),
            Command::GetRecord {
                key,
                deadline,
                reply,
            } => self.lookup_record(key, deadline, reply),
            Command::LocalRecord { key, reply } => {
                let _ = reply.send(self.local_value(&key));
            }
            Command::SetCert { cert, reply } => {
                let _ = reply.send(self.set_cert(cert));
            }
            Command::PeeringRequest {
                peer,
                request,
                reply,
            } => self.peering_request(peer, request, reply),
            Command::PeeringInbox { reply } => {
                let _ = reply.send(self.peering_inbox());
            }
            // Handled by the run loop; nothing to do if it ever arrives here.
            Command::Shutdown { reply } => {
                let _ = reply.send(());
            }
            #[cfg(test)]
            Command::Inspect(f) => f(self),
        }
    }

    fn status(&mut self) -> Status {
        let local = self.local;
        Status {
            peer_id: local.to_string(),
            listen_addrs: self
                .swarm
                .listeners()
                .map(|a| addrs::with_peer(a, local).to_string())
                .collect(),
            connected_peers: self
                .swarm
                .connected_peers()
                .map(|p| p.to_string())
                .collect(),
            routing_table_size: self.routing_table_size(),
            dht_records: self.swarm.behaviour_mut().kad.store_mut().records().count(),
            joined: self.joined,
            gossip_dropped: self.gossip_dropped,
            records_rejected: self.rejected.clone(),
            banned_peers: self.offenders.banned(),
            peers_banned: self.offenders.bans,
            gossip_scores: self.gossip_scores(),
            // Filled in by the client, outside the loop.
            traffic: Default::default(),
            peering: self.peering.stats,
        }
    }

    fn provide(&mut self, key: ContentKey, reply: oneshot::Sender<Result<(), Error>>) {
        if self.pending_provide.len() >= MAX_PENDING_QUERIES {
            let _ = reply.send(Err(Error::Busy));
            return;
        }
        let rkey = RecordKey::new(key.as_bytes());
        match self.swarm.behaviour_mut().kad.start_providing(rkey.clone()) {
            Ok(id) => {
                debug!(key = %key.short(), query = ?id, "providing");
                if !self.joined && !self.unannounced.contains(&rkey) {
                    if self.unannounced.len() >= MAX_UNANNOUNCED {
                        // kad's hourly re-announcement still covers the dropped key.
                        self.unannounced.pop_front();
                    }
                    self.unannounced.push_back(rkey);
                }
                self.pending_provide.insert(id, reply);
            }
            Err(error) => {
                warn!(key = %key.short(), %error, "cannot store provider record");
                let _ = reply.send(Err(Error::Store(error.to_string())));
            }
        }
    }

    /// Answers lookups whose caller's deadline has passed (or who stopped waiting) with what
    /// they have, and stops their kad queries; forgets peering requests nobody awaits any more;
    /// publishes queued withdrawals.
    fn sweep(&mut self) {
        self.flush_withdrawals();
        self.sweep_peering();
        let now = Instant::now();
        for peer in self.offenders.lift_expired(now.into_std()) {
            info!(%peer, "ban over; the peer may connect again");
            self.swarm.behaviour_mut().blocked.unblock_peer(peer);
        }
        let expired: Vec<QueryId> = self
            .pending_providers
            .iter()
            .filter(|(_, q)| q.deadline <= now || q.reply.is_closed())
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.finish_providers(id);
        }
        self.sweep_gets(now);
    }

    pub(super) fn stop_query(&mut self, id: QueryId) {
        if let Some(mut query) = self.swarm.behaviour_mut().kad.query_mut(&id) {
            query.finish();
        }
    }

    pub(super) fn routing_table_size(&mut self) -> usize {
        self.swarm
            .behaviour_mut()
            .kad
            .kbuckets()
            .map(|b| b.num_entries())
            .sum()
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
