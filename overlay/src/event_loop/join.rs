//! Joining the overlay, publishing our NodeRecord, announcing early keys, saving the peers file.

use std::collections::HashSet;
use std::time::Duration;

use libp2p::{
    PeerId,
    kad::{self, KBucketKey, QueryId, RecordKey, store::RecordStore},
};
use reef_proto::records::{Kind, RecordError, node_record_key};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::EventLoop;
use super::records::republish_delay;
use crate::Error;
use crate::addrs;
use crate::node_records;
use crate::peers_file;
use crate::validate;

/// First retry of joining (re-dial known peers, kad bootstrap) when the last attempt failed.
pub(super) const JOIN_RETRY_MIN: Duration = Duration::from_millis(500);
/// Join retries back off to this; once joined, kad's own periodic bootstrap (5 min) takes over.
const JOIN_RETRY_MAX: Duration = Duration::from_secs(30);
/// Our NodeRecord is re-put this often (it expires after an hour, its kind's longest
/// lifetime, or sooner with a certificate about to expire: then at half the time left).
pub(super) const RECORD_REPUBLISH_INTERVAL: Duration = Duration::from_secs(10 * 60);
/// A failed NodeRecord put is retried sooner than the next round: without it nobody can
/// resolve us as a holder.
pub(super) const RECORD_RETRY_DELAY: Duration = Duration::from_secs(30);
/// Keys provided before joining are announced this many at a time, so joining starts no storm.
const ANNOUNCE_CONCURRENCY: usize = 16;

impl EventLoop {
    // ---- joining and publishing ----

    /// One step towards joining: dial known peers if we have none, start a kad bootstrap if
    /// none is running, and try again later (with backoff) until joined.
    pub(super) fn join_attempt(&mut self) {
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
    pub(super) fn join_soon(&mut self) {
        if !self.joined && self.bootstrap_query.is_none() {
            self.join_backoff = JOIN_RETRY_MIN;
            self.next_join_attempt = Some(Instant::now());
        }
    }

    /// The first step of a kad bootstrap is the lookup of our own id, which fills the routing
    /// table with our neighbours; the later steps refresh distant buckets. Joining waits for
    /// the first only: the refreshes may dial departed peers and wait out their timeouts.
    pub(super) fn on_bootstrap_progress(&mut self, id: QueryId, last: bool) {
        if last && self.bootstrap_query == Some(id) {
            self.bootstrap_query = None;
        }
        if self.bootstrap_done {
            return;
        }
        // A bootstrap step that leaves the routing table empty reached nobody: not joined.
        if self.routing_table_size() > 0 {
            debug!(query = ?id, "kad bootstrap reached the overlay");
            self.bootstrap_done = true;
            self.check_joined();
        }
    }

    pub(super) fn check_joined(&mut self) {
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
        self.announced_at_table = routing_table;
        self.announce_next();
        self.save_peers();
    }

    /// Our record sealed at `now_ms`, and when it expires.
    pub(super) fn seal_own_record(&self, now_ms: u64) -> Result<(Vec<u8>, u64), Error> {
        let local = self.local;
        let listen = self
            .swarm
            .listeners()
            .map(|a| addrs::with_peer(a, local).to_string())
            .collect();
        node_records::seal_own(&self.signer, &self.local_info, listen, now_ms).map_err(
            |error: RecordError| Error::Rejected {
                kind: Kind::NodeRecord.label(),
                error,
            },
        )
    }

    pub(super) fn put_own_record(&mut self) {
        self.next_record_put = None;
        if self.record_put_query.is_some() {
            self.record_changed = true;
            return;
        }
        self.record_changed = false;
        let now_ms = validate::unix_ms();
        let (value, expires_at) = match self.seal_own_record(now_ms) {
            Ok(sealed) => sealed,
            Err(error) => {
                warn!(%error, "cannot seal our node record");
                self.next_record_put = Some(Instant::now() + RECORD_RETRY_DELAY);
                return;
            }
        };
        self.own_record_expires = expires_at;
        let record = kad::Record {
            key: RecordKey::new(&node_record_key(&self.local.to_bytes())),
            value,
            publisher: None,
            expires: Some(validate::instant_at(expires_at, now_ms)),
        };
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

    /// A peer new to our routing table that is among the K closest we know to our NodeRecord's
    /// key gets the record at once. The put at join reached the closest peers of the overlay
    /// as it was then; in a growing overlay (a testnet launching, a region coming up) those
    /// soon stop being the closest, and until our next republish a lookup that asks today's
    /// closest finds no record, so nobody could fetch from us as a holder.
    pub(super) fn hand_own_record_to(&mut self, peer: PeerId) {
        if !self.joined {
            // The put at join covers the peers known by then.
            return;
        }
        let key = RecordKey::new(&node_record_key(&self.local.to_bytes()));
        let kad = &mut self.swarm.behaviour_mut().kad;
        let Some(record) = kad.store_mut().get(&key).map(std::borrow::Cow::into_owned) else {
            return;
        };
        let target = KBucketKey::new(key);
        let close = kad
            .get_closest_local_peers(&target)
            .take(kad::K_VALUE.get())
            .any(|k| *k.preimage() == peer);
        if close {
            debug!(%peer, "handing our node record to a peer now among its closest");
            kad.put_record_to(record, std::iter::once(peer), kad::Quorum::One);
        }
    }

    /// Announces every key we provide again once our routing table has doubled since they
    /// last went out. An announcement reaches the closest peers of the overlay as it was; after
    /// the overlay has grown that much (a testnet launching, a region coming up) most of
    /// today's closest peers never heard of our keys, and kad's own republish is an hour away.
    /// Doubling bounds the cost: a node that joins an overlay of N peers does this at most
    /// log2(N) times, and at most `MAX_UNANNOUNCED` keys are queued at once.
    pub(super) fn reannounce_if_grown(&mut self) {
        if !self.joined {
            return;
        }
        let size = self.routing_table_size();
        if size < self.announced_at_table.max(1).saturating_mul(2) {
            return;
        }
        self.announced_at_table = size;
        let queued: HashSet<&RecordKey> = self.unannounced.iter().collect();
        let room = super::MAX_UNANNOUNCED.saturating_sub(self.unannounced.len());
        let keys: Vec<RecordKey> = self
            .swarm
            .behaviour_mut()
            .kad
            .store_mut()
            .provided()
            .map(|p| p.key.clone())
            .filter(|k| !queued.contains(k))
            .take(room)
            .collect();
        if keys.is_empty() {
            return;
        }
        debug!(
            keys = keys.len(),
            routing_table = size,
            "the overlay has doubled since our keys went out; announcing them again"
        );
        self.unannounced.extend(keys);
        self.announce_next();
    }

    /// The end of publishing our record: the next one is due before this one expires.
    pub(super) fn on_own_record_put(&mut self, result: &kad::PutRecordResult) {
        self.record_put_query = None;
        let delay = match result {
            Ok(_) if self.record_changed => Duration::ZERO,
            Ok(_) => {
                debug!("node record published");
                republish_delay(
                    RECORD_REPUBLISH_INTERVAL,
                    self.own_record_expires,
                    validate::unix_ms(),
                )
            }
            Err(error) => {
                warn!(%error, "publishing our node record failed; retrying");
                RECORD_RETRY_DELAY
            }
        };
        self.next_record_put = Some(Instant::now() + delay);
    }

    /// A new provider certificate (or none): checked, then published with our record at once.
    pub(super) fn set_cert(&mut self, cert: Option<Vec<u8>>) -> Result<(), Error> {
        if let Some(cert) = &cert {
            node_records::check_own_cert(&self.signer, cert, validate::unix_ms())
                .map_err(Error::Cert)?;
        }
        self.local_info.cert = cert;
        if self.joined {
            self.put_own_record();
        }
        Ok(())
    }

    /// Announces queued keys (provided before we joined, or again after the overlay grew), a
    /// few at a time.
    pub(super) fn announce_next(&mut self) {
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
                    debug!(query = ?id, "announcing a key again");
                    self.announcing.insert(id);
                }
                Err(error) => debug!(%error, "cannot re-announce a key"),
            }
        }
    }

    // ---- peers file ----

    pub(super) fn save_peers(&mut self) {
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
}
