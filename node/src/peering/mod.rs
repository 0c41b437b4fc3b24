//! Peering: the arrangements under which one provider's nodes serve another's services.
//!
//! Long-term arrangements come from policy (`[[peering.long_term]]`, active from start, no
//! negotiation); short-term ones are negotiated by the providers' agents when a primary is
//! overloaded ([`mediator`], [`agent`]). The edge asks [`Arrangements::serving`] before it
//! serves another provider's service and counts every request and body byte it serves under
//! the arrangement; an overloaded primary node sends a share of its requests to the peer's
//! nodes ([`redirect`]), whose health and SLA it watches ([`health`]); the peer's nodes report
//! their usage ([`receipts`]) and both sides settle in their [`ledger`]s.
//!
//! This module must not talk to the Swarm except through the overlay client, nor sign
//! anything but with the keys it is given.

pub mod agent;
pub mod health;
pub mod ledger;
pub mod mediator;
pub mod policy;
pub mod receipts;
pub mod redirect;
pub mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use reef_proto::records::{
    Agreement, ArrangementId, EndReason, OpenedAgreement, ProviderId, Sla, open_agreement,
};
use serde::Serialize;
use tracing::warn;

use crate::body::Body;
pub use policy::{LongTerm, Policy, PolicyFile};
pub use redirect::Redirector;
pub use store::PeerRecord;
use store::{Counts, Saved, Store, StoreError};

/// What an arrangement rests on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// Written by people in both providers' policies.
    LongTerm,
    /// Negotiated by the providers' agents when the primary was overloaded.
    ShortTerm,
}

/// Which side of an arrangement this node's provider is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Its services are served by the peer.
    Primary,
    /// It serves the primary's services.
    Peer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Active,
    Ended,
}

/// Requests and body bytes this node served under one arrangement since it started, and (on
/// the primary's side) the requests it sent to the peer.
#[derive(Debug, Default)]
pub struct Usage {
    requests: AtomicU64,
    bytes: AtomicU64,
    redirected: AtomicU64,
}

impl Usage {
    /// `body`, counted as one request and its data bytes as the connection pulls them.
    pub fn count(self: &Arc<Self>, body: Body) -> Body {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let usage = self.clone();
        crate::body::count_data(body, move |len| {
            usage.bytes.fetch_add(len, Ordering::Relaxed);
        })
    }

    pub fn redirected(&self) {
        self.redirected.fetch_add(1, Ordering::Relaxed);
    }

    fn counts(&self) -> Counts {
        Counts {
            requests: self.requests(),
            bytes: self.bytes(),
            redirected: self.redirected.load(Ordering::Relaxed),
        }
    }

    /// Carries on from counts saved before a restart.
    fn resume(&self, saved: Counts) {
        self.requests.fetch_add(saved.requests, Ordering::Relaxed);
        self.bytes.fetch_add(saved.bytes, Ordering::Relaxed);
        self.redirected
            .fetch_add(saved.redirected, Ordering::Relaxed);
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// One arrangement as this node knows it.
#[derive(Debug, Clone)]
pub struct Arrangement {
    pub id: ArrangementId,
    pub basis: Basis,
    pub primary: ProviderId,
    pub peer: ProviderId,
    pub services: BTreeSet<String>,
    pub share_permille: u16,
    pub price_micros_per_gb: u64,
    /// Capacity the peer lends under it (short-term only; 0 for long-term ones).
    pub req_per_s: u32,
    /// What the peer promised (short-term only).
    pub sla: Option<Sla>,
    pub status: Status,
    /// Why it ended, when this node knows.
    pub end_reason: Option<EndReason>,
    /// Unix ms when this node marked it ended.
    pub ended_at_ms: Option<u64>,
    /// Unix ms after which it is over; `None` for long-term arrangements.
    pub end_ms: Option<u64>,
    /// The agreement both providers signed (short-term only).
    pub agreement: Option<Agreement>,
    /// The other party's agent we negotiated with (on the primary's side, where it is known).
    pub counterpart: Option<reef_overlay::PeerId>,
    /// Unix ms when this node accepted the agreement (short-term only).
    pub accepted_at_ms: u64,
    /// On the primary's node that negotiated it: how long propose → commit took.
    pub negotiated_in: Option<Duration>,
    /// What this node served under it.
    pub usage: Arc<Usage>,
}

impl Arrangement {
    fn long_term(lt: &LongTerm) -> Self {
        Self {
            id: long_term_id(&lt.primary, &lt.peer),
            basis: Basis::LongTerm,
            primary: lt.primary,
            peer: lt.peer,
            services: lt.services.clone(),
            share_permille: lt.share_permille,
            price_micros_per_gb: lt.price_micros_per_gb,
            req_per_s: 0,
            sla: None,
            status: Status::Active,
            end_reason: None,
            ended_at_ms: None,
            end_ms: None,
            agreement: None,
            counterpart: None,
            accepted_at_ms: 0,
            negotiated_in: None,
            usage: Arc::default(),
        }
    }

    /// A negotiated arrangement, from the agreement both parties signed.
    pub fn short_term(opened: &OpenedAgreement) -> Self {
        let t = opened.terms();
        Self {
            id: t.id,
            basis: Basis::ShortTerm,
            primary: t.primary,
            peer: t.peer,
            services: t.services.iter().cloned().collect(),
            share_permille: t.share_permille,
            price_micros_per_gb: t.price_micros_per_gb,
            req_per_s: t.req_per_s,
            sla: Some(t.sla),
            status: Status::Active,
            end_reason: None,
            ended_at_ms: None,
            end_ms: Some(t.end_ms),
            agreement: Some(opened.agreement().clone()),
            counterpart: None,
            accepted_at_ms: now_ms(),
            negotiated_in: None,
            usage: Arc::default(),
        }
    }

    fn is_active(&self, now_ms: u64) -> bool {
        self.status == Status::Active && self.end_ms.is_none_or(|end| now_ms < end)
    }
}

/// Both providers derive the same id for a long-term arrangement from its parties, so their
/// ledgers name it alike without ever talking.
pub fn long_term_id(primary: &ProviderId, peer: &ProviderId) -> ArrangementId {
    let mut hasher = blake3::Hasher::new_derive_key("reef long-term arrangement id v1");
    hasher.update(primary.as_bytes());
    hasher.update(peer.as_bytes());
    let mut id = [0u8; 16];
    id.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    ArrangementId::from_bytes(id)
}

/// Arrangements remembered; ended ones make room for new ones.
const MAX_ARRANGEMENTS: usize = 1024;

fn now_ms() -> u64 {
    crate::provider::unix_ms()
}

/// How often usage counters are written to the peering database; a crash loses at most this
/// much accounting (a clean stop writes them too).
pub const SAVE_EVERY: Duration = Duration::from_secs(5);

/// Providers whose record we keep; the least recently breached make room.
const MAX_PEER_RECORDS: usize = 1024;

/// Every arrangement this node's provider is a party to.
pub struct Arrangements {
    own: ProviderId,
    all: RwLock<BTreeMap<ArrangementId, Arc<Arrangement>>>,
    /// How the providers we bought from kept their SLAs.
    records: std::sync::Mutex<BTreeMap<ProviderId, PeerRecord>>,
    store: Option<Store>,
}

impl Arrangements {
    /// [`Arrangements::new`], resuming the counters saved in `path` (created if missing).
    pub fn open(own: ProviderId, policy: &Policy, path: &Path) -> Result<Self, StoreError> {
        let store = Store::open(path)?;
        let saved = store.usage()?;
        let mut arrangements = Self::new(own, policy);
        arrangements.records = std::sync::Mutex::new(
            store
                .peer_records()?
                .into_iter()
                .map(|(id, r)| (ProviderId::from_bytes(id), r))
                .collect(),
        );
        for kept in store.arrangements()? {
            // Signatures are checked again: the file is ours, but it is still input.
            let Ok(opened) = open_agreement(&kept.agreement, kept.accepted_at_ms) else {
                continue;
            };
            let mut arrangement = Arrangement::short_term(&opened);
            arrangement.accepted_at_ms = kept.accepted_at_ms;
            arrangement.counterpart = kept
                .counterpart
                .and_then(|b| reef_overlay::PeerId::from_bytes(b.as_slice()).ok());
            if kept.ended {
                arrangement.status = Status::Ended;
                arrangement.end_reason = kept.end_reason;
                arrangement.ended_at_ms = kept.ended_at_ms;
            }
            arrangements.add(arrangement);
        }
        if let Ok(all) = arrangements.all.read() {
            for (id, counts) in saved {
                if let Some(a) = all.get(&ArrangementId::from_bytes(id)) {
                    a.usage.resume(counts);
                }
            }
        }
        let policy_json = serde_json::to_string(policy).map_err(|e| StoreError(e.to_string()))?;
        store.record_policy(&policy_json, now_ms())?;
        arrangements.store = Some(store);
        Ok(arrangements)
    }

    /// The policies this node has run with (`peering.redb`), newest first: (unix ms loaded,
    /// the policy). Blocks on disk (a few small rows).
    pub fn policy_history(&self) -> Result<Vec<(u64, serde_json::Value)>, StoreError> {
        let Some(store) = &self.store else {
            return Ok(Vec::new());
        };
        Ok(store
            .policies()?
            .into_iter()
            .rev()
            .filter_map(|(at, json)| Some((at, serde_json::from_str(&json).ok()?)))
            .collect())
    }

    /// Writes every arrangement's counters to the peering database (blocking).
    pub fn save(&self) -> Result<(), StoreError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let (usage, negotiated): (Vec<_>, Vec<_>) = match self.all.read() {
            Ok(all) => (
                all.values()
                    .map(|a| (*a.id.as_bytes(), a.usage.counts()))
                    .collect(),
                all.values()
                    .filter_map(|a| {
                        let saved = Saved {
                            agreement: a.agreement.clone()?,
                            accepted_at_ms: a.accepted_at_ms,
                            ended: a.status == Status::Ended,
                            end_reason: a.end_reason,
                            ended_at_ms: a.ended_at_ms,
                            counterpart: a.counterpart.map(|p| p.to_bytes()),
                        };
                        Some((*a.id.as_bytes(), saved))
                    })
                    .collect(),
            ),
            Err(_) => return Ok(()),
        };
        let records: Vec<_> = self
            .peer_records()
            .into_iter()
            .map(|(id, r)| (*id.as_bytes(), r))
            .collect();
        store.save(&usage, &negotiated, &records)
    }

    fn records(&self) -> std::sync::MutexGuard<'_, BTreeMap<ProviderId, PeerRecord>> {
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What we know of how every past peer kept its SLA.
    pub fn peer_records(&self) -> Vec<(ProviderId, PeerRecord)> {
        self.records().iter().map(|(id, r)| (*id, *r)).collect()
    }

    pub fn peer_record(&self, provider: &ProviderId) -> PeerRecord {
        self.records().get(provider).copied().unwrap_or_default()
    }

    /// Updates `provider`'s record: one more arrangement, or one more breach at `now_ms`.
    pub fn note_peer(&self, provider: ProviderId, arranged: bool, breached_at_ms: Option<u64>) {
        let mut records = self.records();
        if records.len() >= MAX_PEER_RECORDS
            && !records.contains_key(&provider)
            && let Some(oldest) = records
                .iter()
                .min_by_key(|(_, r)| r.last_breach_ms)
                .map(|(id, _)| *id)
        {
            records.remove(&oldest);
        }
        let record = records.entry(provider).or_default();
        if arranged {
            record.arrangements = record.arrangements.saturating_add(1);
        }
        if let Some(at) = breached_at_ms {
            record.breaches = record.breaches.saturating_add(1);
            record.last_breach_ms = at;
        }
    }

    /// [`Arrangements::save`] on a blocking thread; a failure is logged, never fatal: the
    /// counters stay in memory and the next save tries again.
    pub async fn persist(self: &Arc<Self>) {
        let this = self.clone();
        match tokio::task::spawn_blocking(move || this.save()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => warn!(%error, "cannot save peering usage"),
            Err(error) => warn!(%error, "saving peering usage panicked"),
        }
    }

    /// Saves every [`SAVE_EVERY`] until aborted.
    pub fn spawn_saver(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAVE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                this.persist().await;
            }
        })
    }

    /// The long-term arrangements of `policy` that name `own`, active at once; nothing is
    /// saved.
    pub fn new(own: ProviderId, policy: &Policy) -> Self {
        let all = policy
            .long_term
            .iter()
            .filter(|lt| lt.primary == own || lt.peer == own)
            .map(|lt| {
                let a = Arrangement::long_term(lt);
                (a.id, Arc::new(a))
            })
            .collect();
        Self {
            own,
            all: RwLock::new(all),
            records: std::sync::Mutex::default(),
            store: None,
        }
    }

    /// This node's provider.
    pub fn own(&self) -> ProviderId {
        self.own
    }

    /// The active arrangement under which we may serve `host`, a service of `owner`.
    pub fn serving(&self, owner: &ProviderId, host: &str) -> Option<Arc<Arrangement>> {
        let all = self.all.read().ok()?;
        all.values()
            .find(|a| {
                a.is_active(now_ms())
                    && a.peer == self.own
                    && a.primary == *owner
                    && a.services.contains(host)
            })
            .cloned()
    }

    /// The active arrangement under which a peer serves `host`, a service of ours.
    pub fn primary_for(&self, host: &str) -> Option<Arc<Arrangement>> {
        let all = self.all.read().ok()?;
        all.values()
            .find(|a| a.is_active(now_ms()) && a.primary == self.own && a.services.contains(host))
            .cloned()
    }

    /// Adds an arrangement our provider is a party to; one already known is kept as it is
    /// (agreements arrive more than once: from the negotiation and over gossip). Returns
    /// whether it was new.
    pub fn add(&self, arrangement: Arrangement) -> bool {
        if arrangement.primary != self.own && arrangement.peer != self.own {
            return false;
        }
        let Ok(mut all) = self.all.write() else {
            return false;
        };
        if all.contains_key(&arrangement.id) {
            return false;
        }
        if all.len() >= MAX_ARRANGEMENTS {
            // Ended ones make room, oldest first (ids are random, so: any ended one).
            if let Some(id) = all
                .values()
                .find(|a| a.status == Status::Ended)
                .map(|a| a.id)
            {
                all.remove(&id);
            } else {
                return false;
            }
        }
        all.insert(arrangement.id, Arc::new(arrangement));
        true
    }

    /// Records the other party's agent we negotiated `id` with, and how long it took: the
    /// agreement may have been learnt over gossip before the negotiation returned, without them.
    pub fn set_negotiated(&self, id: &ArrangementId, agent: reef_overlay::PeerId, took: Duration) {
        let Ok(mut all) = self.all.write() else {
            return;
        };
        if let Some(current) = all.get(id)
            && current.counterpart.is_none()
        {
            let mut known = (**current).clone();
            known.counterpart = Some(agent);
            known.negotiated_in = Some(took);
            all.insert(*id, Arc::new(known));
        }
    }

    /// Marks `id` ended for `reason`; whether it was active.
    pub fn end(&self, id: &ArrangementId, reason: EndReason) -> bool {
        let Ok(mut all) = self.all.write() else {
            return false;
        };
        let Some(current) = all.get(id) else {
            return false;
        };
        if current.status == Status::Ended {
            return false;
        }
        let mut ended = (**current).clone();
        ended.status = Status::Ended;
        ended.end_reason = Some(reason);
        ended.ended_at_ms = Some(now_ms());
        all.insert(*id, Arc::new(ended));
        true
    }

    pub fn get(&self, id: &ArrangementId) -> Option<Arc<Arrangement>> {
        self.all.read().ok()?.get(id).cloned()
    }

    /// Our active negotiated arrangement as the primary, if any.
    pub fn short_term_as_primary(&self) -> Option<Arc<Arrangement>> {
        let all = self.all.read().ok()?;
        all.values()
            .find(|a| a.basis == Basis::ShortTerm && a.primary == self.own && a.is_active(now_ms()))
            .cloned()
    }

    /// Every active arrangement (long- or short-term) under which a peer serves our services.
    pub fn active_as_primary(&self) -> Vec<Arc<Arrangement>> {
        let Ok(all) = self.all.read() else {
            return Vec::new();
        };
        let now = now_ms();
        all.values()
            .filter(|a| a.primary == self.own && a.is_active(now))
            .cloned()
            .collect()
    }

    /// Our negotiated arrangements as the primary that ended with no settlement in `ledger`.
    pub fn ended_unsettled_as_primary(&self, ledger: &ledger::Ledger) -> Vec<Arc<Arrangement>> {
        let Ok(all) = self.all.read() else {
            return Vec::new();
        };
        all.values()
            .filter(|a| {
                a.basis == Basis::ShortTerm
                    && a.primary == self.own
                    && a.status == Status::Ended
                    && ledger.settlement(&a.id).is_none()
            })
            .cloned()
            .collect()
    }

    /// Capacity (req/s) our provider lends under its active negotiated arrangements.
    pub fn lent_req_per_s(&self) -> u64 {
        let Ok(all) = self.all.read() else {
            return 0;
        };
        let now = now_ms();
        all.values()
            .filter(|a| a.peer == self.own && a.is_active(now))
            .map(|a| u64::from(a.req_per_s))
            .sum()
    }

    /// Every arrangement (active or ended) under which our provider serves another's
    /// services.
    pub fn as_peer(&self) -> Vec<Arc<Arrangement>> {
        let Ok(all) = self.all.read() else {
            return Vec::new();
        };
        all.values()
            .filter(|a| a.peer == self.own && a.primary != self.own)
            .cloned()
            .collect()
    }

    /// Ends every arrangement whose end has passed; their ids.
    pub fn expire(&self) -> Vec<ArrangementId> {
        let now = now_ms();
        let due: Vec<ArrangementId> = match self.all.read() {
            Ok(all) => all
                .values()
                .filter(|a| a.status == Status::Active && !a.is_active(now))
                .map(|a| a.id)
                .collect(),
            Err(_) => return Vec::new(),
        };
        due.into_iter()
            .filter(|id| self.end(id, EndReason::Expired))
            .collect()
    }

    /// What `GET /api/arrangements` shows; `health` measures the peers of our active ones.
    pub fn views(&self, health: &health::Health) -> Vec<View> {
        let Ok(all) = self.all.read() else {
            return Vec::new();
        };
        let (now, at) = (now_ms(), std::time::Instant::now());
        all.values()
            .map(|a| View {
                id: a.id.to_string(),
                basis: a.basis,
                role: if a.primary == self.own {
                    Role::Primary
                } else {
                    Role::Peer
                },
                status: a.status,
                end_reason: a.end_reason.map(EndReason::label),
                primary: a.primary.to_string(),
                peer: a.peer.to_string(),
                services: a.services.iter().cloned().collect(),
                share: f64::from(a.share_permille) / 1000.0,
                req_per_s: a.req_per_s,
                end_ms: a.end_ms,
                price_per_gb: a.price_micros_per_gb as f64 / 1e6,
                served: Served {
                    requests: a.usage.requests(),
                    bytes: a.usage.bytes(),
                },
                redirected: a.usage.redirected.load(Ordering::Relaxed),
                negotiation_ms: a.negotiated_in.map(|d| d.as_secs_f64() * 1e3),
                sla: a
                    .sla
                    .filter(|_| a.primary == self.own && a.is_active(now))
                    .map(|sla| health.sla(&a.id, &sla, at)),
            })
            .collect()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct View {
    pub id: String,
    pub basis: Basis,
    pub role: Role,
    pub status: Status,
    /// `low_load`, `expired`, `operator`, `sla_breach`, `peer_gone` or `replaced`; `null`
    /// while active (or when this node did not hear why).
    pub end_reason: Option<&'static str>,
    pub primary: String,
    pub peer: String,
    pub services: Vec<String>,
    pub share: f64,
    /// Capacity lent (short-term; 0 for long-term).
    pub req_per_s: u32,
    /// Unix ms; `null` for long-term arrangements.
    pub end_ms: Option<u64>,
    pub price_per_gb: f64,
    /// By this node, under this arrangement.
    pub served: Served,
    /// Requests this node sent to the peer's nodes under it (redirected or relayed).
    pub redirected: u64,
    /// Propose → commit, on the primary's node that negotiated it (until it restarts).
    pub negotiation_ms: Option<f64>,
    /// On the primary's side, while active: the peer against the SLA, as this node's probes
    /// measure it.
    pub sla: Option<health::SlaView>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Served {
    pub requests: u64,
    pub bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use reef_proto::records::ProviderKey;

    fn id(seed: u8) -> ProviderId {
        ProviderKey::from_bytes(&[seed; 32]).id()
    }

    #[test]
    fn a_long_term_arrangement_lets_only_the_peer_serve_only_its_services() {
        let (a, b, c) = (id(1), id(2), id(3));
        let policy = Policy {
            long_term: vec![LongTerm {
                primary: a,
                peer: b,
                services: ["video.example".to_string()].into(),
                share_permille: 300,
                price_micros_per_gb: 10_000,
            }],
            ..Policy::default()
        };
        let at_b = Arrangements::new(b, &policy);
        let found = at_b
            .serving(&a, "video.example")
            .expect("B serves A's video");
        assert_eq!(found.id, long_term_id(&a, &b));
        assert!(at_b.serving(&a, "other.example").is_none());
        assert!(at_b.serving(&c, "video.example").is_none());
        // The primary itself does not "serve under" its own arrangement; C is not a party.
        assert!(
            Arrangements::new(a, &policy)
                .serving(&a, "video.example")
                .is_none()
        );
        assert!(
            Arrangements::new(c, &policy)
                .views(&health::Health::default())
                .is_empty()
        );
        let views = Arrangements::new(a, &policy).views(&health::Health::default());
        assert_eq!((views.len(), views[0].role), (1, Role::Primary));
        assert_eq!(at_b.views(&health::Health::default())[0].role, Role::Peer);
        assert_ne!(long_term_id(&a, &b), long_term_id(&b, &a));
    }

    #[test]
    fn usage_resumes_after_a_restart() {
        let (a, b) = (id(1), id(2));
        let policy = Policy {
            long_term: vec![LongTerm {
                primary: a,
                peer: b,
                services: ["video.example".to_string()].into(),
                share_permille: 1000,
                price_micros_per_gb: 0,
            }],
            ..Policy::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peering.redb");
        {
            let at_b = Arrangements::open(b, &policy, &path).unwrap();
            let usage = &at_b.serving(&a, "video.example").unwrap().usage;
            usage.requests.fetch_add(2, Ordering::Relaxed);
            usage.bytes.fetch_add(500, Ordering::Relaxed);
            at_b.save().unwrap();
        }
        let at_b = Arrangements::open(b, &policy, &path).unwrap();
        let served = at_b.views(&health::Health::default())[0].served;
        assert_eq!((served.requests, served.bytes), (2, 500));
    }

    #[tokio::test]
    async fn usage_counts_requests_and_body_bytes() {
        use http_body_util::BodyExt;
        let usage = Arc::new(Usage::default());
        let body = usage.count(crate::body::full(vec![1u8; 777]));
        let got = body.collect().await.unwrap().to_bytes();
        assert_eq!(got.len(), 777);
        assert_eq!((usage.requests(), usage.bytes()), (1, 777));
    }
}
