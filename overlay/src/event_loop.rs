//! The one task that owns the Swarm: it starts queries on command, answers them when their
//! events arrive, validates what peers store with us, and keeps the node joined and published.
//!
//! Nothing here blocks: file writes go to `spawn_blocking`, queries are answered from events.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, Swarm, gossipsub, identify,
    identity::Keypair,
    kad::{self, QueryId, QueryResult, RecordKey, store::RecordStore},
    mdns, ping,
    swarm::{SwarmEvent, dial_opts::DialOpts},
};
use reef_proto::{ContentKey, NodeRecord};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, info, warn};

use crate::Error;
use crate::addrs;
use crate::behaviour::{Behaviour, BehaviourEvent, IDENTIFY_PROTOCOL, KAD_PROTOCOL};
use crate::client::{Command, ProvidersReply, Status};
use crate::config::LocalInfo;
use crate::node_records::{self, RECORD_CACHE_CAPACITY, RECORD_CACHE_TTL, RecordCache};
use crate::peers_file::{self, RecentPeers};

/// First retry of joining (re-dial known peers, kad bootstrap) when the last attempt failed.
const JOIN_RETRY_MIN: Duration = Duration::from_millis(500);
/// Join retries back off to this; once joined, kad's own periodic bootstrap (5 min) takes over.
const JOIN_RETRY_MAX: Duration = Duration::from_secs(30);
/// Remembered peers re-dialled per join attempt; the best few suffice to find the overlay.
const MAX_REDIAL: usize = 16;
/// Our NodeRecord is re-put this often (records live 1 h in other peers' stores).
const RECORD_REPUBLISH_INTERVAL: Duration = Duration::from_secs(10 * 60);
/// A failed NodeRecord put is retried sooner than the next round: without it nobody can
/// resolve us as a holder.
const RECORD_RETRY_DELAY: Duration = Duration::from_secs(30);
/// The peers file is rewritten this often (and at shutdown).
const PEERS_SAVE_INTERVAL: Duration = Duration::from_secs(30);
/// How often deadlines of pending lookups are checked; well below their 3 s budget.
const SWEEP_INTERVAL: Duration = Duration::from_millis(250);
/// Lookups of one kind in flight at once; beyond this callers get `Error::Busy`.
const MAX_PENDING_QUERIES: usize = 1024;
/// Keys provided before joining, remembered to be announced once joined.
const MAX_UNANNOUNCED: usize = 4096;
/// Announcements of those keys run this many at a time, so joining does not start a storm.
const ANNOUNCE_CONCURRENCY: usize = 16;
/// Listen addresses fed from one identify message into kad; more is noise or abuse.
const MAX_IDENTIFY_ADDRS: usize = 8;
/// Addresses kept from one provider record stored for another peer.
const MAX_PROVIDER_ADDRS: usize = 8;

struct ProvidersQuery {
    key: ContentKey,
    found: HashSet<PeerId>,
    limit: usize,
    deadline: Instant,
    reply: ProvidersReply,
}

struct RecordQuery {
    peer: PeerId,
    deadline: Instant,
    reply: oneshot::Sender<Result<Option<NodeRecord>, Error>>,
}

pub(crate) struct EventLoop {
    swarm: Swarm<Behaviour>,
    local: PeerId,
    keypair: Keypair,
    local_info: LocalInfo,
    commands: mpsc::Receiver<Command>,
    joined_tx: watch::Sender<bool>,
    started: Instant,

    peers_file: Option<PathBuf>,
    recent: RecentPeers,
    save_task: Option<JoinHandle<()>>,

    /// Last ping RTT per connected peer (entries leave when the peer disconnects).
    rtt: HashMap<PeerId, Duration>,
    /// Whether a connected peer is reached over loopback (decides whether its loopback listen
    /// addresses are usable to us).
    via_loopback: HashMap<PeerId, bool>,
    records: RecordCache,

    joined: bool,
    bootstrap_done: bool,
    bootstrap_query: Option<QueryId>,
    /// Configured bootstrap peers, re-dialled while we have no connection.
    bootstrap_peers: Vec<(PeerId, Multiaddr)>,
    join_backoff: Duration,
    next_join_attempt: Option<Instant>,

    record_put_query: Option<QueryId>,
    next_record_put: Option<Instant>,

    pending_provide: HashMap<QueryId, oneshot::Sender<Result<(), Error>>>,
    pending_providers: HashMap<QueryId, ProvidersQuery>,
    pending_records: HashMap<QueryId, RecordQuery>,
    unannounced: VecDeque<RecordKey>,
    announcing: HashSet<QueryId>,
}

/// What [`EventLoop::new`] needs besides the swarm.
pub(crate) struct Parts {
    pub(crate) keypair: Keypair,
    pub(crate) local_info: LocalInfo,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) joined_tx: watch::Sender<bool>,
    pub(crate) started: Instant,
    pub(crate) peers_file: Option<PathBuf>,
}

impl EventLoop {
    pub(crate) fn new(swarm: Swarm<Behaviour>, parts: Parts) -> Self {
        Self {
            local: *swarm.local_peer_id(),
            swarm,
            keypair: parts.keypair,
            local_info: parts.local_info,
            commands: parts.commands,
            joined_tx: parts.joined_tx,
            started: parts.started,
            peers_file: parts.peers_file,
            recent: RecentPeers::default(),
            save_task: None,
            rtt: HashMap::new(),
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
            pending_provide: HashMap::new(),
            pending_providers: HashMap::new(),
            pending_records: HashMap::new(),
            unannounced: VecDeque::new(),
            announcing: HashSet::new(),
        }
    }

    /// Adds a known peer to kad and dials it (bootstrap, remembered and mDNS peers).
    fn add_and_dial(&mut self, peer: PeerId, addrs: Vec<Multiaddr>, why: &'static str) {
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

    /// A configured bootstrap peer: dialled now and again whenever we are alone.
    pub(crate) fn add_bootstrap(&mut self, peer: PeerId, addr: Multiaddr) {
        self.add_and_dial(peer, vec![addr.clone()], "bootstrap");
        self.bootstrap_peers.push((peer, addr));
    }

    /// A peer from the peers file: dialled now, and kept so the next save remembers it.
    pub(crate) fn add_remembered(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        self.recent
            .seen(peer, addrs.clone(), self.started.into_std());
        self.add_and_dial(peer, addrs, "remembered");
    }

    /// Dials the bootstrap peers and the best remembered peers again (we are alone).
    fn redial_known(&mut self) {
        for (peer, addr) in self.bootstrap_peers.clone() {
            self.add_and_dial(peer, vec![addr], "bootstrap");
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
            Command::Unprovide { key, reply } => {
                let rkey = RecordKey::new(key.as_bytes());
                self.swarm.behaviour_mut().kad.stop_providing(&rkey);
                self.unannounced.retain(|k| *k != rkey);
                debug!(key = %key.short(), "stopped providing");
                let _ = reply.send(());
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
                    reply,
                };
                self.pending_providers.insert(id, query);
            }
            Command::NodeRecord {
                peer,
                deadline,
                reply,
            } => self.lookup_record(peer, deadline, reply),
            // Handled by the run loop; nothing to do if it ever arrives here.
            Command::Shutdown { reply } => {
                let _ = reply.send(());
            }
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
            joined: self.joined,
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

    fn lookup_record(
        &mut self,
        peer: PeerId,
        deadline: Instant,
        reply: oneshot::Sender<Result<Option<NodeRecord>, Error>>,
    ) {
        if peer == self.local {
            let _ = reply.send(Ok(Some(self.own_record())));
            return;
        }
        if let Some(record) = self.records.get(&peer, std::time::Instant::now()) {
            let _ = reply.send(Ok(Some(record)));
            return;
        }
        if self.pending_records.len() >= MAX_PENDING_QUERIES {
            let _ = reply.send(Err(Error::Busy));
            return;
        }
        let id = self
            .swarm
            .behaviour_mut()
            .kad
            .get_record(node_records::record_key(&peer));
        self.pending_records.insert(
            id,
            RecordQuery {
                peer,
                deadline,
                reply,
            },
        );
    }

    /// Answers lookups whose caller's deadline has passed (or who stopped waiting) with what
    /// they have, and stops their kad queries.
    fn sweep(&mut self) {
        let now = Instant::now();
        let expired: Vec<QueryId> = self
            .pending_providers
            .iter()
            .filter(|(_, q)| q.deadline <= now || q.reply.is_closed())
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.finish_providers(id);
        }
        let expired: Vec<QueryId> = self
            .pending_records
            .iter()
            .filter(|(_, q)| q.deadline <= now || q.reply.is_closed())
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(q) = self.pending_records.remove(&id) {
                debug!(peer = %q.peer, "node record lookup timed out");
                let _ = q.reply.send(Err(Error::Timeout));
            }
            self.stop_query(id);
        }
    }

    fn stop_query(&mut self, id: QueryId) {
        if let Some(mut query) = self.swarm.behaviour_mut().kad.query_mut(&id) {
            query.finish();
        }
    }

    // ---- joining and publishing ----

    /// One step towards joining: dial known peers if we have none, start a kad bootstrap if
    /// none is running, and try again later (with backoff) until joined.
    fn join_attempt(&mut self) {
        self.next_join_attempt = None;
        if self.joined {
            return;
        }
        if self.swarm.connected_peers().next().is_none() {
            self.redial_known();
        }
        if !self.bootstrap_done && self.bootstrap_query.is_none() {
            // Err means the routing table is still empty: nothing to ask yet.
            if let Ok(id) = self.swarm.behaviour_mut().kad.bootstrap() {
                debug!(query = ?id, "kad bootstrap started");
                self.bootstrap_query = Some(id);
            }
        }
        self.next_join_attempt = Some(Instant::now() + self.join_backoff);
        self.join_backoff = (self.join_backoff * 2).min(JOIN_RETRY_MAX);
    }

    /// A peer just became reachable: try to join now rather than at the next backoff step.
    fn join_soon(&mut self) {
        if !self.joined && self.bootstrap_query.is_none() {
            self.join_backoff = JOIN_RETRY_MIN;
            self.next_join_attempt = Some(Instant::now());
        }
    }

    fn on_bootstrap_progress(&mut self, id: QueryId, last: bool) {
        if !last {
            return;
        }
        if self.bootstrap_query == Some(id) {
            self.bootstrap_query = None;
        }
        if self.bootstrap_done {
            return;
        }
        // A bootstrap that ends with an empty routing table reached nobody: not joined.
        if self.routing_table_size() > 0 {
            debug!(query = ?id, "kad bootstrap completed");
            self.bootstrap_done = true;
            self.check_joined();
        }
    }

    fn check_joined(&mut self) {
        if self.joined || !self.bootstrap_done || self.swarm.connected_peers().next().is_none() {
            return;
        }
        self.joined = true;
        self.next_join_attempt = None;
        self.joined_tx.send_replace(true);
        let elapsed_ms = self.started.elapsed().as_millis() as u64;
        let connected = self.swarm.connected_peers().count();
        let routing_table = self.routing_table_size();
        info!(
            target: "reef::join",
            peer = %self.local,
            elapsed_ms,
            connected,
            routing_table,
            "joined the overlay"
        );
        self.put_own_record();
        self.announce_next();
        self.save_peers();
    }

    fn own_record(&self) -> NodeRecord {
        let local = self.local;
        NodeRecord {
            peer_id: local.to_bytes(),
            http: self.local_info.http.clone(),
            provider: self.local_info.provider.clone(),
            region: self.local_info.region.clone(),
            listen_addrs: self
                .swarm
                .listeners()
                .map(|a| addrs::with_peer(a, local).to_string())
                .collect(),
            issued_at: node_records::unix_now(),
        }
    }

    fn put_own_record(&mut self) {
        self.next_record_put = None;
        if self.record_put_query.is_some() {
            return;
        }
        let record = self.own_record();
        let value = match node_records::sign(&self.keypair, &record) {
            Ok(value) => value,
            Err(error) => {
                warn!(%error, "cannot sign our node record");
                self.next_record_put = Some(Instant::now() + RECORD_REPUBLISH_INTERVAL);
                return;
            }
        };
        let record = kad::Record::new(node_records::record_key(&self.local), value);
        match self
            .swarm
            .behaviour_mut()
            .kad
            .put_record(record, kad::Quorum::One)
        {
            Ok(id) => self.record_put_query = Some(id),
            Err(error) => {
                warn!(%error, "cannot store our node record");
                self.next_record_put = Some(Instant::now() + RECORD_RETRY_DELAY);
            }
        }
    }

    /// Announces keys provided before we joined, a few at a time.
    fn announce_next(&mut self) {
        while self.joined && self.announcing.len() < ANNOUNCE_CONCURRENCY {
            let Some(rkey) = self.unannounced.pop_front() else {
                return;
            };
            let kad = &mut self.swarm.behaviour_mut().kad;
            let still_provided = kad
                .store_mut()
                .providers(&rkey)
                .iter()
                .any(|p| p.provider == self.local);
            if !still_provided {
                continue;
            }
            match kad.start_providing(rkey) {
                Ok(id) => {
                    self.announcing.insert(id);
                }
                Err(error) => debug!(%error, "cannot re-announce a key"),
            }
        }
    }

    // ---- peers file ----

    fn save_peers(&mut self) {
        let Some(path) = self.peers_file.clone() else {
            return;
        };
        if self.save_task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let now = std::time::Instant::now();
        let connected: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in connected {
            self.recent.seen(peer, [], now);
        }
        let contents = self.recent.to_json();
        self.save_task = Some(tokio::task::spawn_blocking(move || {
            if let Err(error) = peers_file::save_blocking(&path, &contents) {
                warn!(%error, "cannot save the peers file");
            }
        }));
    }

    // ---- swarm events ----

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Kad(event)) => self.on_kad_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(event)) => self.on_identify_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Ping(event)) => self.on_ping_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(event)) => self.on_gossip_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(event)) => self.on_mdns_event(event),
            SwarmEvent::ConnectionEstablished {
                peer_id: peer,
                endpoint,
                ..
            } => {
                let remote = endpoint.get_remote_address();
                let loopback = addrs::is_loopback(remote);
                *self.via_loopback.entry(peer).or_insert(loopback) |= loopback;
                let dialled = endpoint.is_dialer().then(|| {
                    addrs::split_peer(remote).map_or_else(|| remote.clone(), |(_, base)| base)
                });
                let usable = dialled.filter(|a| addrs::is_usable(a, loopback));
                self.recent.seen(peer, usable, std::time::Instant::now());
                debug!(%peer, %remote, "connected");
                self.join_soon();
                self.check_joined();
            }
            SwarmEvent::ConnectionClosed {
                peer_id: peer,
                num_established,
                cause,
                ..
            } => {
                debug!(%peer, ?cause, "connection closed");
                if num_established == 0 {
                    self.rtt.remove(&peer);
                    self.via_loopback.remove(&peer);
                    self.recent.seen(peer, [], std::time::Instant::now());
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                debug!(peer = ?peer_id, %error, "dial failed");
            }
            SwarmEvent::NewListenAddr { address, .. } => debug!(%address, "listening"),
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                debug!(%address, "listen address expired")
            }
            SwarmEvent::ListenerError { error, .. } => warn!(%error, "listener error"),
            _ => {}
        }
    }

    fn on_identify_event(&mut self, event: identify::Event) {
        let identify::Event::Received {
            peer_id: peer,
            info,
            ..
        } = event
        else {
            return;
        };
        if info.protocol_version != IDENTIFY_PROTOCOL {
            debug!(%peer, version = %info.protocol_version, "not a reef node");
            return;
        }
        let loopback = self.via_loopback.get(&peer).copied().unwrap_or(false);
        let usable: Vec<Multiaddr> = info
            .listen_addrs
            .iter()
            .map(|a| addrs::split_peer(a).map_or_else(|| a.clone(), |(_, base)| base))
            .filter(|a| addrs::is_usable(a, loopback))
            .take(MAX_IDENTIFY_ADDRS)
            .collect();
        if info.protocols.contains(&KAD_PROTOCOL) {
            for addr in &usable {
                self.swarm
                    .behaviour_mut()
                    .kad
                    .add_address(&peer, addr.clone());
            }
        }
        debug!(%peer, agent = %info.agent_version, addrs = usable.len(), "identified");
        self.recent.seen(peer, usable, std::time::Instant::now());
    }

    fn on_ping_event(&mut self, event: ping::Event) {
        match event.result {
            // Only connected peers: the table stays bounded by the connection count.
            Ok(rtt) if self.swarm.is_connected(&event.peer) => {
                self.rtt.insert(event.peer, rtt);
            }
            Ok(_) => {}
            Err(error) => debug!(peer = %event.peer, %error, "ping failed"),
        }
    }

    fn on_gossip_event(&mut self, event: gossipsub::Event) {
        if let gossipsub::Event::Message {
            propagation_source,
            message_id,
            ..
        } = event
        {
            // Nothing consumes load reports yet: do not forward what nobody validated.
            self.swarm
                .behaviour_mut()
                .gossipsub
                .report_message_validation_result(
                    &message_id,
                    &propagation_source,
                    gossipsub::MessageAcceptance::Ignore,
                );
        }
    }

    fn on_mdns_event(&mut self, event: mdns::Event) {
        if let mdns::Event::Discovered(found) = event {
            let mut by_peer: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
            for (peer, addr) in found {
                by_peer.entry(peer).or_default().push(addr);
            }
            for (peer, addrs) in by_peer {
                self.add_and_dial(peer, addrs, "mdns");
            }
        }
    }

    fn on_kad_event(&mut self, event: kad::Event) {
        match event {
            kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            } => self.on_query_progress(id, result, step),
            kad::Event::InboundRequest {
                request:
                    kad::InboundRequest::PutRecord {
                        source,
                        record: Some(record),
                        ..
                    },
            } => self.on_inbound_record(source, record),
            kad::Event::InboundRequest {
                request:
                    kad::InboundRequest::AddProvider {
                        record: Some(record),
                    },
            } => self.on_inbound_provider(record),
            kad::Event::RoutingUpdated {
                peer,
                is_new_peer: true,
                ..
            } => {
                debug!(%peer, "added to the routing table");
                self.join_soon();
            }
            _ => {}
        }
    }

    fn on_query_progress(&mut self, id: QueryId, result: QueryResult, step: kad::ProgressStep) {
        match result {
            QueryResult::Bootstrap(result) => {
                if let Err(error) = &result {
                    debug!(query = ?id, %error, "kad bootstrap step failed");
                }
                self.on_bootstrap_progress(id, step.last);
            }
            QueryResult::StartProviding(result) => {
                if let Some(reply) = self.pending_provide.remove(&id) {
                    let _ = reply.send(result.map(|_| ()).map_err(|e| Error::Query(e.to_string())));
                } else if self.announcing.remove(&id) {
                    if let Err(error) = result {
                        debug!(%error, "announcing a key provided before joining failed");
                    }
                    self.announce_next();
                }
            }
            QueryResult::RepublishProvider(Err(error)) => {
                debug!(%error, "provider republish failed")
            }
            QueryResult::GetProviders(result) => self.on_providers(id, result, step.last),
            QueryResult::GetRecord(result) => self.on_record(id, result, step.last),
            QueryResult::PutRecord(result) if self.record_put_query == Some(id) => {
                self.record_put_query = None;
                match result {
                    Ok(_) => {
                        debug!("node record published");
                        self.next_record_put = Some(Instant::now() + RECORD_REPUBLISH_INTERVAL);
                    }
                    Err(error) => {
                        warn!(%error, "publishing our node record failed; retrying");
                        self.next_record_put = Some(Instant::now() + RECORD_RETRY_DELAY);
                    }
                }
            }
            QueryResult::RepublishRecord(Err(error)) => debug!(%error, "record republish failed"),
            _ => {}
        }
    }

    fn on_providers(&mut self, id: QueryId, result: kad::GetProvidersResult, last: bool) {
        let Some(query) = self.pending_providers.get_mut(&id) else {
            return;
        };
        let done = match result {
            Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) => {
                let local = self.local;
                query
                    .found
                    .extend(providers.into_iter().filter(|p| *p != local));
                query.found.len() >= query.limit
            }
            Ok(kad::GetProvidersOk::FinishedWithNoAdditionalRecord { .. }) => true,
            Err(error) => {
                debug!(key = %query.key.short(), %error, "provider lookup ended early");
                true
            }
        };
        if done || last {
            self.finish_providers(id);
        }
    }

    fn finish_providers(&mut self, id: QueryId) {
        let Some(query) = self.pending_providers.remove(&id) else {
            return;
        };
        self.stop_query(id);
        let holders: Vec<(PeerId, Option<Duration>)> = query
            .found
            .into_iter()
            .take(query.limit)
            .map(|p| (p, self.rtt.get(&p).copied()))
            .collect();
        debug!(key = %query.key.short(), holders = holders.len(), "provider lookup done");
        let _ = query.reply.send(Ok(holders));
    }

    fn on_record(&mut self, id: QueryId, result: kad::GetRecordResult, last: bool) {
        let Some(query) = self.pending_records.get(&id) else {
            return;
        };
        let peer = query.peer;
        let answer = match result {
            Ok(kad::GetRecordOk::FoundRecord(found)) => {
                match node_records::verify(&peer, &found.record.value, node_records::unix_now()) {
                    Ok(record) => {
                        self.records
                            .insert(peer, record.clone(), std::time::Instant::now());
                        Some(Ok(Some(record)))
                    }
                    Err(error) => {
                        debug!(%peer, from = ?found.peer, %error, "ignoring an invalid node record");
                        None
                    }
                }
            }
            Ok(kad::GetRecordOk::FinishedWithNoAdditionalRecord { .. }) => Some(Ok(None)),
            Err(kad::GetRecordError::NotFound { .. }) => Some(Ok(None)),
            Err(kad::GetRecordError::Timeout { .. }) => Some(Err(Error::Timeout)),
        };
        let answer = match answer {
            Some(answer) => answer,
            None if last => Ok(None),
            None => return,
        };
        if let Some(query) = self.pending_records.remove(&id) {
            let _ = query.reply.send(answer);
        }
        if !last {
            self.stop_query(id);
        }
    }

    /// A peer asks us to store a record (FilterBoth): only valid node records get in, and a
    /// newer record is never replaced by an older one.
    fn on_inbound_record(&mut self, source: PeerId, record: kad::Record) {
        let Some(peer) = node_records::peer_of_key(&record.key) else {
            debug!(%source, "refusing a record under a key we do not know");
            return;
        };
        if peer == self.local {
            // We publish our own record; nobody else may write it.
            return;
        }
        let now = node_records::unix_now();
        let incoming = match node_records::verify(&peer, &record.value, now) {
            Ok(incoming) => incoming,
            Err(error) => {
                debug!(%source, %peer, %error, "refusing an invalid node record");
                return;
            }
        };
        let store = self.swarm.behaviour_mut().kad.store_mut();
        if let Some(existing) = store.get(&record.key)
            && let Ok(existing) = node_records::verify(&peer, &existing.value, now)
            && existing.issued_at > incoming.issued_at
        {
            debug!(%source, %peer, "refusing an older node record");
            return;
        }
        if let Err(error) = store.put(record) {
            debug!(%source, %peer, %error, "cannot store a node record");
            return;
        }
        self.records
            .insert(peer, incoming, std::time::Instant::now());
    }

    /// A peer announces it provides a key (kad already checked the announcer is the sender).
    fn on_inbound_provider(&mut self, mut record: kad::ProviderRecord) {
        if record.key.as_ref().len() != 32 {
            debug!(provider = %record.provider, "refusing a provider record that is not for a content key");
            return;
        }
        let loopback = self
            .via_loopback
            .get(&record.provider)
            .copied()
            .unwrap_or(false);
        record.addresses.retain(|a| addrs::is_usable(a, loopback));
        record.addresses.truncate(MAX_PROVIDER_ADDRS);
        let provider = record.provider;
        if let Err(error) = self
            .swarm
            .behaviour_mut()
            .kad
            .store_mut()
            .add_provider(record)
        {
            debug!(%provider, %error, "cannot store a provider record");
        }
    }

    fn routing_table_size(&mut self) -> usize {
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::behaviour::build_swarm;

    fn event_loop() -> EventLoop {
        let keypair = Keypair::generate_ed25519();
        let swarm = build_swarm(keypair.clone(), false).unwrap();
        let (_tx, commands) = mpsc::channel(1);
        let (joined_tx, _rx) = watch::channel(false);
        EventLoop::new(
            swarm,
            Parts {
                keypair,
                local_info: LocalInfo {
                    http: "h:1".into(),
                    provider: "p".into(),
                    region: "r".into(),
                },
                commands,
                joined_tx,
                started: Instant::now(),
                peers_file: None,
            },
        )
    }

    fn signed(keypair: &Keypair, claimed: PeerId, issued_at: u64) -> Vec<u8> {
        let record = NodeRecord {
            peer_id: claimed.to_bytes(),
            http: "x:1".into(),
            provider: "p".into(),
            region: "r".into(),
            listen_addrs: vec![],
            issued_at,
        };
        node_records::sign(keypair, &record).unwrap()
    }

    fn stored(el: &mut EventLoop, peer: &PeerId) -> Option<kad::Record> {
        let key = node_records::record_key(peer);
        el.swarm
            .behaviour_mut()
            .kad
            .store_mut()
            .get(&key)
            .map(|r| r.into_owned())
    }

    #[tokio::test]
    async fn inbound_records_are_validated_before_storing() {
        let mut el = event_loop();
        let source = PeerId::random();
        let y = Keypair::generate_ed25519();
        let y_peer = y.public().to_peer_id();
        let now = node_records::unix_now();

        // Forged: X signs a record claiming to be Y.
        let x = Keypair::generate_ed25519();
        let forged = kad::Record::new(node_records::record_key(&y_peer), signed(&x, y_peer, now));
        el.on_inbound_record(source, forged);
        assert!(stored(&mut el, &y_peer).is_none());

        // Garbage under a node key, and anything under a key we do not know.
        el.on_inbound_record(
            source,
            kad::Record::new(node_records::record_key(&y_peer), vec![1, 2, 3]),
        );
        el.on_inbound_record(
            source,
            kad::Record::new(b"/other/key".to_vec(), signed(&y, y_peer, now)),
        );
        assert!(stored(&mut el, &y_peer).is_none());
        assert_eq!(
            el.swarm.behaviour_mut().kad.store_mut().records().count(),
            0
        );

        // Genuine: stored and cached.
        let genuine = signed(&y, y_peer, now);
        el.on_inbound_record(
            source,
            kad::Record::new(node_records::record_key(&y_peer), genuine.clone()),
        );
        assert_eq!(stored(&mut el, &y_peer).unwrap().value, genuine);
        assert!(el.records.get(&y_peer, std::time::Instant::now()).is_some());

        // An older (replayed) record does not replace the newer one.
        let older = signed(&y, y_peer, now - 100);
        el.on_inbound_record(
            source,
            kad::Record::new(node_records::record_key(&y_peer), older),
        );
        assert_eq!(stored(&mut el, &y_peer).unwrap().value, genuine);

        // Nobody else may write our own record.
        let local = el.local;
        let ours = signed(&y, local, now);
        el.on_inbound_record(
            source,
            kad::Record::new(node_records::record_key(&local), ours),
        );
        assert!(stored(&mut el, &local).is_none());
    }

    #[tokio::test]
    async fn inbound_provider_records_are_checked() {
        let mut el = event_loop();
        let provider = PeerId::random();
        let short = kad::ProviderRecord::new(b"short".to_vec(), provider, vec![]);
        el.on_inbound_provider(short);
        assert!(
            el.swarm
                .behaviour_mut()
                .kad
                .store_mut()
                .providers(&RecordKey::new(b"short"))
                .is_empty()
        );

        let key = RecordKey::new(&[7u8; 32]);
        let addrs: Vec<Multiaddr> = vec![
            "/ip4/192.0.2.1/tcp/1".parse().unwrap(),
            "/ip4/0.0.0.0/tcp/1".parse().unwrap(),
            "/ip4/127.0.0.1/tcp/1".parse().unwrap(),
        ];
        el.on_inbound_provider(kad::ProviderRecord::new(key.clone(), provider, addrs));
        let stored = el.swarm.behaviour_mut().kad.store_mut().providers(&key);
        assert_eq!(stored.len(), 1);
        assert_eq!(
            stored[0].addresses,
            vec!["/ip4/192.0.2.1/tcp/1".parse::<Multiaddr>().unwrap()]
        );
    }
}
