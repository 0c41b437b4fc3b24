//! Keeps the node's connections near a budget ([`crate::Config::keep_connections`]).
//!
//! Kademlia connects a node to most of the overlay while it joins (a lookup dials every peer
//! it asks), and gossipsub's streams then keep each of those connections open for good: at
//! 100 nodes every node held 99, at about 130 KiB each. Neither needs them: a lookup dials
//! whom it asks, and gossip forms its mesh from whichever peers are connected. So every
//! [`PRUNE_INTERVAL`] the loop closes the connections it needs least, outside the gossip
//! mesh and farthest first, after a goodbye (`goodbye.rs`) so the peer does not take the
//! close for a crash. A node that others pruned down to half its budget refuses further
//! goodbyes and dials some of the closest peers its routing table knows.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use libp2p::{
    PeerId,
    kad::KBucketKey,
    request_response::{self, OutboundFailure},
    swarm::dial_opts::{DialOpts, PeerCondition},
};
use tokio::time::Instant;
use tracing::debug;

use super::EventLoop;
use crate::goodbye::{Answer, GOODBYE_TIMEOUT};

/// How often the connection count is checked.
#[cfg(not(test))]
pub(super) const PRUNE_INTERVAL: Duration = Duration::from_secs(5);
#[cfg(test)]
pub(super) const PRUNE_INTERVAL: Duration = Duration::from_millis(500);
/// A connection younger than this is left alone: it most likely carries the lookup or the
/// exchange that opened it.
#[cfg(not(test))]
const MIN_AGE: Duration = Duration::from_secs(10);
#[cfg(test)]
const MIN_AGE: Duration = Duration::from_secs(1);
/// A peer that asked to keep its connection is not asked again for this long.
const STAY_FOR: Duration = Duration::from_secs(5 * 60);
/// A connection the remote drops sooner than this lost a dial race; it is not a crash.
const DIAL_RACE: Duration = Duration::from_secs(1);
/// At most one round of dials this often to make up for connections others pruned.
const REFILL_EVERY: Duration = Duration::from_secs(30);

/// What the budget needs to know about connections.
pub(super) struct Budget {
    /// Connections kept; a node under half of it refuses goodbyes.
    keep: usize,
    /// When each connected peer's first open connection was established.
    since: HashMap<PeerId, Instant>,
    /// Connected peers that said goodbye: their close is not a break.
    leaving: HashMap<PeerId, Instant>,
    /// Connected peers that asked to keep their connection, and when.
    staying: HashMap<PeerId, Instant>,
    /// Peers we said goodbye to, awaiting their answer.
    asking: HashSet<PeerId>,
    last_refill: Option<Instant>,
}

impl Budget {
    pub(super) fn new(keep: usize) -> Self {
        Self {
            keep,
            since: HashMap::new(),
            leaving: HashMap::new(),
            staying: HashMap::new(),
            asking: HashSet::new(),
            last_refill: None,
        }
    }

    pub(super) fn connected(&mut self, peer: PeerId) {
        self.since.entry(peer).or_insert_with(Instant::now);
    }

    /// The peer's last connection closed. True if that says nothing about the peer's
    /// health: it said goodbye first, or the connection was too young to be anything but the
    /// loser of a dial race (a peer dialling several of our addresses at once keeps the first
    /// that connects and drops the others).
    pub(super) fn disconnected(&mut self, peer: &PeerId) -> bool {
        let young = self
            .since
            .remove(peer)
            .is_some_and(|since| since.elapsed() < DIAL_RACE);
        self.staying.remove(peer);
        self.asking.remove(peer);
        self.leaving.remove(peer).is_some() || young
    }

    #[cfg(test)]
    pub(super) fn is_staying(&self, peer: &PeerId) -> bool {
        self.staying.contains_key(peer)
    }

    fn short(&self) -> bool {
        self.since.len() <= self.keep / 2
    }
}

impl EventLoop {
    pub(super) fn prune_connections(&mut self) {
        let now = Instant::now();
        let budget = &mut self.budget;
        // A peer that said goodbye and then kept the connection has changed its mind.
        budget
            .leaving
            .retain(|_, at| now.saturating_duration_since(*at) < 2 * GOODBYE_TIMEOUT);
        budget
            .staying
            .retain(|_, at| now.saturating_duration_since(*at) < STAY_FOR);
        let connected = budget.since.len();
        if budget.short() {
            self.refill(now);
            return;
        }
        let excess = connected.saturating_sub(budget.keep + budget.asking.len());
        if excess == 0 {
            return;
        }
        let mesh: HashSet<&PeerId> = self.swarm.behaviour().gossipsub.all_mesh_peers().collect();
        let mut candidates: Vec<(bool, Duration, PeerId)> = budget
            .since
            .iter()
            .filter(|(peer, since)| {
                now.saturating_duration_since(**since) >= MIN_AGE
                    && !budget.asking.contains(*peer)
                    && !budget.staying.contains_key(*peer)
            })
            .map(|(peer, _)| {
                let rtt = self.rtt.get(peer).copied().unwrap_or(Duration::MAX);
                (mesh.contains(peer), rtt, *peer)
            })
            .collect();
        // Outside the gossip mesh first (gossip re-forms its mesh from those kept, but every
        // change costs it a round of grafts), then the farthest first: nearby nodes serve our
        // misses fastest.
        candidates.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        for (_, _, peer) in candidates.into_iter().take(excess) {
            debug!(%peer, connected, "saying goodbye");
            self.budget.asking.insert(peer);
            self.swarm.behaviour_mut().goodbye.send_request(&peer, ());
        }
    }

    /// Others pruned us down to half the budget: dial our closest peers in the routing table
    /// that we are not connected to, up to three quarters of the budget. (A Kademlia
    /// bootstrap would connect to most of a small overlay at once, only for the excess to be
    /// pruned again.) While short, we answer goodbyes with `Stay`, so these stay.
    fn refill(&mut self, now: Instant) {
        let recent = self
            .budget
            .last_refill
            .is_some_and(|at| now.saturating_duration_since(at) < REFILL_EVERY);
        if !self.joined || recent {
            return;
        }
        self.budget.last_refill = Some(now);
        let want = (self.budget.keep * 3 / 4).saturating_sub(self.budget.since.len());
        let local = KBucketKey::from(self.local);
        let fresh: Vec<PeerId> = self
            .swarm
            .behaviour_mut()
            .kad
            .get_closest_local_peers(&local)
            .map(|key| *key.preimage())
            .filter(|peer| !self.budget.since.contains_key(peer))
            .take(want)
            .collect();
        debug!(
            connected = self.budget.since.len(),
            dialling = fresh.len(),
            "short of connections"
        );
        for peer in fresh {
            let opts = DialOpts::peer_id(peer)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            if let Err(error) = self.swarm.dial(opts) {
                debug!(%peer, %error, "cannot dial");
            }
        }
    }

    pub(super) fn on_goodbye_event(&mut self, event: request_response::Event<(), Answer>) {
        match event {
            request_response::Event::Message {
                peer,
                message: request_response::Message::Request { channel, .. },
                ..
            } => {
                let answer = if self.budget.short() {
                    Answer::Stay
                } else {
                    if self.budget.since.contains_key(&peer) {
                        self.budget.leaving.insert(peer, Instant::now());
                    }
                    Answer::Leave
                };
                debug!(%peer, ?answer, "peer said goodbye");
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .goodbye
                    .send_response(channel, answer);
            }
            request_response::Event::Message {
                peer,
                message: request_response::Message::Response { response, .. },
                ..
            } => {
                if !self.budget.asking.remove(&peer) {
                    return;
                }
                match response {
                    Answer::Leave => self.prune(peer),
                    Answer::Stay => {
                        debug!(%peer, "peer asked to keep its connection");
                        self.budget.staying.insert(peer, Instant::now());
                    }
                }
            }
            request_response::Event::OutboundFailure { peer, error, .. } => {
                if !self.budget.asking.remove(&peer) {
                    return;
                }
                // Hung, or not a node that speaks goodbye: either way, closing it is what an
                // idle timeout would do. Gone already: nothing to close.
                if matches!(
                    error,
                    OutboundFailure::Timeout | OutboundFailure::UnsupportedProtocols
                ) {
                    debug!(%peer, %error, "goodbye unanswered");
                    self.prune(peer);
                }
            }
            _ => {}
        }
    }

    fn prune(&mut self, peer: PeerId) {
        if self.swarm.disconnect_peer_id(peer).is_ok() {
            debug!(%peer, "connection pruned");
            self.metrics.connection_pruned();
        }
    }
}
