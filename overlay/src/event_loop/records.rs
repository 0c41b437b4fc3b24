//! Signed records in the loop: validating what peers ask us to store, answering record
//! lookups with the newest valid value, publishing records for callers, and counting every
//! rejection.
//!
//! Kademlia runs with `StoreInserts::FilterBoth`, so it stores nothing a peer sends: each
//! inbound `PutRecord` comes here, and only a value that [`validate::check`] accepts, and that
//! is not older than the one we hold, goes into the store (with kad's expiry capped at the
//! record's own, so kad neither serves nor re-replicates it once peers would refuse it). Kad's
//! re-replication only ever sends what is in that store, so it forwards nothing unverified.
//! Provider announcements (`AddProvider`) carry no value and are checked in `events.rs`.

use std::time::Duration;

use libp2p::{
    PeerId,
    kad::{self, QueryId, RecordKey, store::RecordStore},
};
use reef_proto::records::{Kind, RecordError, kind_of_key, node_record_key};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::EventLoop;
use super::MAX_PENDING_QUERIES;
use crate::Error;
use crate::metrics::UNKNOWN_KIND;
use crate::node_records::NodeInfo;
use crate::offenders;
use crate::validate::{self, Checked, Rejected, Versus};

/// Valid answers after which a generic lookup stops: replicas can lag behind a republish,
/// so one answer is not enough to call it the newest, and more only add latency.
const GET_ENOUGH_ANSWERS: usize = 3;
/// A node record lookup stops at the first valid answer: any current record of a node names
/// its HTTP edge, and it runs on the fetch path of a miss.
const NODE_ENOUGH_ANSWERS: usize = 1;
/// Peers that answered a lookup with an older version, brought up to date afterwards (kad
/// asks at most this many per lookup anyway).
const MAX_STALE_PEERS: usize = kad::K_VALUE.get();

/// Who waits for a lookup, and in what form.
pub(super) enum GetReply {
    Value(oneshot::Sender<Result<Option<Vec<u8>>, Error>>),
    Node {
        peer: PeerId,
        reply: oneshot::Sender<Result<Option<NodeInfo>, Error>>,
    },
}

impl GetReply {
    fn is_closed(&self) -> bool {
        match self {
            GetReply::Value(reply) => reply.is_closed(),
            GetReply::Node { reply, .. } => reply.is_closed(),
        }
    }
}

/// The newest valid answer to a lookup so far.
struct Best {
    checked: Checked,
    value: Vec<u8>,
    /// `None`: our own store.
    from: Option<PeerId>,
}

/// A record lookup in flight: the newest valid value so far, and who answered with less.
pub(super) struct GetQuery {
    key: RecordKey,
    best: Option<Best>,
    answers: usize,
    enough: usize,
    stale: Vec<PeerId>,
    pub(super) deadline: Instant,
    /// When the lookup started, and the kind of record looked up, for
    /// `reef_dht_lookup_duration_seconds`.
    started: Instant,
    lookup: &'static str,
    reply: GetReply,
}

impl GetQuery {
    pub(super) fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }
}

/// A caller's record publication in flight.
pub(super) struct PutQuery {
    pub(super) deadline: Instant,
    pub(super) reply: oneshot::Sender<Result<(), Error>>,
}

/// How a lookup ended.
enum End {
    /// The query ran its course (or had enough answers).
    Done,
    /// Kad's own timeout, or the caller's deadline.
    TimedOut,
}

impl EventLoop {
    /// Counts a refused record (metric and status) and logs who sent it.
    pub(super) fn reject(&mut self, rejected: &Rejected, from: Option<PeerId>) {
        let reason = rejected.reason();
        self.metrics.record_rejected(rejected.kind, reason);
        *self
            .rejected
            .entry(format!("{}/{reason}", rejected.kind))
            .or_default() += 1;
        debug!(from = ?from, kind = rejected.kind, %reason, error = %rejected.error, "record rejected");
        if let Some(peer) = from
            && offenders::is_strike(rejected)
            && self.offenders.strike(peer, std::time::Instant::now())
        {
            self.ban(peer);
        }
    }

    /// Disconnects `peer` and refuses it for [`offenders::BAN_FOR`]; it leaves the routing
    /// table and the remembered peers, so no lookup or redial goes its way meanwhile.
    fn ban(&mut self, peer: PeerId) {
        warn!(
            %peer,
            strikes = offenders::STRIKES_TO_BAN,
            ban_s = offenders::BAN_FOR.as_secs(),
            "peer keeps sending invalid records: disconnected and refused"
        );
        self.metrics.peer_banned();
        let behaviour = self.swarm.behaviour_mut();
        behaviour.blocked.block_peer(peer);
        behaviour.kad.remove_peer(&peer);
        self.recent.forget(&peer);
    }

    /// Validates what `key` holds in our store now; `None` if nothing, or nothing valid any
    /// more (an expired record kad has not dropped yet).
    fn held(&mut self, key: &RecordKey, now_ms: u64) -> Option<Checked> {
        let store = self.swarm.behaviour_mut().kad.store_mut();
        let held = store.get(key)?;
        validate::check(key.as_ref(), &held.value, now_ms).ok()
    }

    /// A peer asks us to store a record (FilterBoth): only a valid one gets in, and a newer
    /// record is never replaced by an older one. The same record again is stored again
    /// (refreshing its expiry): honest republishers do that, it is no attack.
    pub(super) fn on_inbound_record(&mut self, source: PeerId, mut record: kad::Record) {
        let now_ms = validate::unix_ms();
        let checked = match validate::check(record.key.as_ref(), &record.value, now_ms) {
            Ok(checked) => checked,
            Err(rejected) => return self.reject(&rejected, Some(source)),
        };
        if let Some(held) = self.held(&record.key, now_ms)
            && checked.versus(&held) == Versus::Older
        {
            let rejected = Rejected {
                kind: checked.kind.label(),
                error: RecordError::Replay,
            };
            return self.reject(&rejected, Some(source));
        }
        let until = validate::instant_at(checked.valid_until, now_ms);
        record.expires = Some(record.expires.map_or(until, |kad_ttl| kad_ttl.min(until)));
        let kind = checked.kind.label();
        if let Err(error) = self.swarm.behaviour_mut().kad.store_mut().put(record) {
            // Full: kad's own limits, not the sender's fault.
            debug!(%source, kind, %error, "cannot store a record");
            return;
        }
        debug!(%source, kind, "record stored");
        if let Some(opened) = checked.node
            && let Ok(peer) = PeerId::from_bytes(&opened.record().peer_id)
        {
            self.records.insert(peer, opened, std::time::Instant::now());
        }
    }

    // ---- lookups ----

    /// The record of `peer`: ours, cached, or looked up in the DHT.
    pub(super) fn lookup_node_record(
        &mut self,
        peer: PeerId,
        deadline: Instant,
        reply: oneshot::Sender<Result<Option<NodeInfo>, Error>>,
    ) {
        let now_ms = validate::unix_ms();
        if peer == self.local {
            let _ = reply.send(self.own_info(now_ms));
            return;
        }
        if let Some(opened) = self.records.get(&peer, std::time::Instant::now(), now_ms) {
            let _ = reply.send(Ok(Some(NodeInfo::new(peer, &opened, now_ms))));
            return;
        }
        let key = node_record_key(&peer.to_bytes());
        self.start_get(
            key,
            NODE_ENOUGH_ANSWERS,
            deadline,
            GetReply::Node { peer, reply },
        );
    }

    /// A caller's lookup of any record.
    pub(super) fn lookup_record(
        &mut self,
        key: Vec<u8>,
        deadline: Instant,
        reply: oneshot::Sender<Result<Option<Vec<u8>>, Error>>,
    ) {
        if kind_of_key(&key).is_none() {
            let _ = reply.send(Err(Error::Rejected {
                kind: UNKNOWN_KIND,
                error: RecordError::Invalid {
                    field: "key",
                    problem: "no record kind is stored under this key",
                },
            }));
            return;
        }
        self.start_get(key, GET_ENOUGH_ANSWERS, deadline, GetReply::Value(reply));
    }

    fn start_get(&mut self, key: Vec<u8>, enough: usize, deadline: Instant, reply: GetReply) {
        if self.pending_gets.len() >= MAX_PENDING_QUERIES {
            match reply {
                GetReply::Value(reply) => {
                    let _ = reply.send(Err(Error::Busy));
                }
                GetReply::Node { reply, .. } => {
                    let _ = reply.send(Err(Error::Busy));
                }
            }
            return;
        }
        let lookup = kind_of_key(&key).map_or(UNKNOWN_KIND, Kind::label);
        let key = RecordKey::new(&key);
        // Kad answers from our own store first (as a progress event), then asks the network.
        let id = self.swarm.behaviour_mut().kad.get_record(key.clone());
        self.pending_gets.insert(
            id,
            GetQuery {
                key,
                best: None,
                answers: 0,
                enough,
                stale: Vec::new(),
                deadline,
                started: Instant::now(),
                lookup,
                reply,
            },
        );
    }

    pub(super) fn on_get_record(&mut self, id: QueryId, result: kad::GetRecordResult, last: bool) {
        if !self.pending_gets.contains_key(&id) {
            return;
        }
        let end = match result {
            Ok(kad::GetRecordOk::FoundRecord(found)) => {
                self.on_found(id, found);
                None
            }
            Ok(kad::GetRecordOk::FinishedWithNoAdditionalRecord { .. }) => Some(End::Done),
            Err(kad::GetRecordError::NotFound { .. }) => Some(End::Done),
            Err(kad::GetRecordError::Timeout { .. }) => Some(End::TimedOut),
        };
        let enough = self
            .pending_gets
            .get(&id)
            .is_some_and(|q| q.answers >= q.enough);
        match end {
            Some(end) => self.finish_get(id, end),
            None if enough || last => self.finish_get(id, End::Done),
            None => {}
        }
    }

    /// One answer to a lookup: validated, kept if it is the newest so far.
    fn on_found(&mut self, id: QueryId, found: kad::PeerRecord) {
        let now_ms = validate::unix_ms();
        let Some(key) = self.pending_gets.get(&id).map(|q| q.key.clone()) else {
            return;
        };
        if found.record.key != key {
            return;
        }
        let checked = match validate::check(key.as_ref(), &found.record.value, now_ms) {
            Ok(checked) => checked,
            Err(rejected) => {
                // From our own store it has only expired since; from a peer it is counted.
                if found.peer.is_some() {
                    self.reject(&rejected, found.peer);
                }
                return;
            }
        };
        let Some(query) = self.pending_gets.get_mut(&id) else {
            return;
        };
        query.answers += 1;
        let (replace, behind) = match &query.best {
            None => (true, None),
            Some(best) => match checked.versus(&best.checked) {
                Versus::Newer => (true, best.from),
                Versus::Same => (false, None),
                Versus::Older => (false, found.peer),
            },
        };
        if let Some(peer) = behind
            && query.stale.len() < MAX_STALE_PEERS
        {
            query.stale.push(peer);
        }
        if replace {
            query.best = Some(Best {
                checked,
                value: found.record.value,
                from: found.peer,
            });
        }
    }

    fn finish_get(&mut self, id: QueryId, end: End) {
        let Some(query) = self.pending_gets.remove(&id) else {
            return;
        };
        self.stop_query(id);
        self.metrics
            .lookup_took(query.lookup, query.started.elapsed());
        let now_ms = validate::unix_ms();
        if let Some(best) = &query.best
            && !query.stale.is_empty()
        {
            // Bring peers that answered with an older version up to date.
            let record = kad::Record {
                key: query.key.clone(),
                value: best.value.clone(),
                publisher: None,
                expires: Some(validate::instant_at(best.checked.valid_until, now_ms)),
            };
            let peers = query.stale.clone().into_iter();
            self.swarm
                .behaviour_mut()
                .kad
                .put_record_to(record, peers, kad::Quorum::One);
        }
        match (query.reply, query.best) {
            (GetReply::Value(reply), Some(best)) => {
                let _ = reply.send(Ok(Some(best.value)));
            }
            (GetReply::Node { peer, reply }, Some(best)) => {
                let answer = best.checked.node.map(|opened| {
                    let info = NodeInfo::new(peer, &opened, now_ms);
                    self.records.insert(peer, opened, std::time::Instant::now());
                    info
                });
                let _ = reply.send(Ok(answer));
            }
            (GetReply::Value(reply), None) => {
                let _ = reply.send(match end {
                    End::Done => Ok(None),
                    End::TimedOut => Err(Error::Timeout),
                });
            }
            (GetReply::Node { peer, reply }, None) => {
                debug!(%peer, timed_out = matches!(end, End::TimedOut), "no node record found");
                let _ = reply.send(match end {
                    End::Done => Ok(None),
                    End::TimedOut => Err(Error::Timeout),
                });
            }
        }
    }

    /// Lookups whose caller's deadline has passed, or who stopped waiting: answered with the
    /// newest value found so far.
    pub(super) fn sweep_gets(&mut self, now: Instant) {
        let expired: Vec<QueryId> = self
            .pending_gets
            .iter()
            .filter(|(_, q)| q.deadline <= now || q.abandoned())
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.finish_get(id, End::TimedOut);
        }
        let expired: Vec<QueryId> = self
            .pending_puts
            .iter()
            .filter(|(_, q)| q.deadline <= now || q.reply.is_closed())
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(query) = self.pending_puts.remove(&id) {
                let _ = query.reply.send(Err(Error::Timeout));
            }
            self.stop_query(id);
        }
    }

    // ---- publishing for callers ----

    /// Checks a caller's record as peers will, stores it and starts its publication.
    pub(super) fn put_value(
        &mut self,
        key: Vec<u8>,
        value: Vec<u8>,
        deadline: Instant,
        reply: oneshot::Sender<Result<(), Error>>,
    ) {
        if self.pending_puts.len() >= MAX_PENDING_QUERIES {
            let _ = reply.send(Err(Error::Busy));
            return;
        }
        let now_ms = validate::unix_ms();
        let checked = match validate::check(&key, &value, now_ms) {
            Ok(checked) => checked,
            Err(rejected) => {
                let _ = reply.send(Err(Error::Rejected {
                    kind: rejected.kind,
                    error: rejected.error,
                }));
                return;
            }
        };
        let key = RecordKey::new(&key);
        if let Some(held) = self.held(&key, now_ms)
            && checked.versus(&held) == Versus::Older
        {
            let _ = reply.send(Err(Error::Rejected {
                kind: checked.kind.label(),
                error: RecordError::Replay,
            }));
            return;
        }
        let record = kad::Record {
            key,
            value,
            publisher: None,
            expires: Some(validate::instant_at(checked.valid_until, now_ms)),
        };
        match self
            .swarm
            .behaviour_mut()
            .kad
            .put_record(record, kad::Quorum::One)
        {
            Ok(id) => {
                self.pending_puts.insert(id, PutQuery { deadline, reply });
            }
            Err(error) => {
                let _ = reply.send(Err(Error::Store(error.to_string())));
            }
        }
    }

    /// The end of a caller's publication; false if `id` is not one.
    pub(super) fn on_put_record(&mut self, id: QueryId, result: &kad::PutRecordResult) -> bool {
        let Some(query) = self.pending_puts.remove(&id) else {
            return false;
        };
        let answer = result
            .as_ref()
            .map(|_| ())
            .map_err(|e| Error::Query(e.to_string()));
        let _ = query.reply.send(answer);
        true
    }

    /// What our store holds under `key`, for [`crate::Client::local_record`].
    pub(super) fn local_value(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        let key = RecordKey::new(&key);
        let store = self.swarm.behaviour_mut().kad.store_mut();
        store.get(&key).map(|r| r.value.clone())
    }

    /// Our own record as a caller sees others' (freshly sealed, so always current).
    fn own_info(&mut self, now_ms: u64) -> Result<Option<NodeInfo>, Error> {
        let (sealed, _) = self.seal_own_record(now_ms)?;
        let opened = reef_proto::records::open::<reef_proto::records::NodeRecord>(&sealed, now_ms)
            .map_err(|error| Error::Rejected {
                kind: Kind::NodeRecord.label(),
                error,
            })?;
        Ok(Some(NodeInfo::new(self.local, &opened, now_ms)))
    }
}

/// How long to wait before republishing a record that expires at `expires_at` (unix ms):
/// `interval`, or half the time left if that is sooner.
pub(super) fn republish_delay(interval: Duration, expires_at: u64, now_ms: u64) -> Duration {
    let left = Duration::from_millis(expires_at.saturating_sub(now_ms) / 2);
    interval.min(left).max(Duration::from_secs(1))
}
