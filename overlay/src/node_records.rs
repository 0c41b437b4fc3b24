//! Node records in the overlay: what callers get for a peer ([`NodeInfo`]), how our own record
//! is built and sealed with the node's key, and the bounded cache of verified records of others.
//!
//! A record is the enveloped [`reef_proto::records::NodeRecord`] under
//! [`node_record_key`](reef_proto::records::node_record_key) of the peer id; only the node's
//! own key can sign it, and a provider certificate inside it is what makes the node a member
//! of a provider ([`Membership`]). Membership is worked out again whenever a record is handed
//! out, because a certificate may expire while its record is cached.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::identity::Keypair;
use reef_proto::records::{
    MAX_ADDR_LEN, MAX_LISTEN_ADDRS, Membership, NodeRecord, Opened, ProviderCert, Record,
    RecordError, SigningKey, open, peer_id_bytes, seal,
};
use tracing::warn;

use crate::Error;
use crate::config::LocalInfo;

/// Verified records are reused for this long; nodes re-put every 10 min, so it tracks changes.
pub(crate) const RECORD_CACHE_TTL: Duration = Duration::from_secs(10 * 60);
/// Entries in the verified-record cache: one per peer we recently looked up.
pub(crate) const RECORD_CACHE_CAPACITY: usize = 4096;

/// A node's verified record and whom it belongs to, as of the lookup.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub peer: PeerId,
    pub record: NodeRecord,
    /// `Certified` only while the node carries a valid certificate of that provider for
    /// itself; otherwise the node is its own provider, whatever it calls itself elsewhere.
    pub membership: Membership,
    /// Unix milliseconds.
    pub issued_at: u64,
    /// Unix milliseconds; the record is not used after this.
    pub expires_at: u64,
}

impl NodeInfo {
    pub(crate) fn new(peer: PeerId, opened: &Opened<NodeRecord>, now_ms: u64) -> Self {
        Self {
            peer,
            record: opened.record().clone(),
            membership: opened.membership(now_ms),
            issued_at: opened.issued_at(),
            expires_at: opened.expires_at(),
        }
    }
}

/// The node's own signing key for envelopes: the ed25519 secret of its libp2p key (the same
/// public key, so the record's signer is the node's peer id).
pub fn signing_key(keypair: &Keypair) -> Result<SigningKey, Error> {
    let ed = keypair
        .clone()
        .try_into_ed25519()
        .map_err(|_| Error::Identity("the node key is not an ed25519 key".into()))?;
    let secret: [u8; 32] = ed
        .secret()
        .as_ref()
        .try_into()
        .map_err(|_| Error::Identity("ed25519 secret is not 32 bytes".into()))?;
    let key = SigningKey::from_bytes(&secret);
    let peer = keypair.public().to_peer_id();
    if peer_id_bytes(&key.verifying_key().to_bytes()) != peer.to_bytes() {
        return Err(Error::Identity(
            "the signing key does not match the peer id".into(),
        ));
    }
    Ok(key)
}

/// Checks that `cert` is a current provider certificate for the node `signer`.
pub(crate) fn check_own_cert(
    signer: &SigningKey,
    cert: &[u8],
    now_ms: u64,
) -> Result<Opened<ProviderCert>, RecordError> {
    let opened = open::<ProviderCert>(cert, now_ms)?;
    if opened.record().node != peer_id_bytes(&signer.verifying_key().to_bytes()) {
        return Err(RecordError::WrongSigner("certificate is for another node"));
    }
    Ok(opened)
}

/// Our own record, sealed at `now_ms`: valid for the kind's longest lifetime, or until our
/// certificate expires if that is sooner. A certificate that has become invalid (not renewed
/// in time) is left out rather than making peers reject the whole record: the node then
/// counts as independent until it gets a new one.
pub(crate) fn seal_own(
    signer: &SigningKey,
    local: &LocalInfo,
    listen_addrs: Vec<String>,
    now_ms: u64,
) -> Result<(Vec<u8>, u64), RecordError> {
    let mut expires_at = now_ms.saturating_add(NodeRecord::MAX_LIFETIME_MS);
    let cert = match &local.cert {
        Some(cert) => match check_own_cert(signer, cert, now_ms) {
            Ok(opened) => {
                expires_at = expires_at.min(opened.expires_at());
                Some(cert.clone())
            }
            Err(error) => {
                warn!(%error, "our provider certificate is not valid; publishing our node record without it");
                None
            }
        },
        None => None,
    };
    let record = NodeRecord {
        peer_id: peer_id_bytes(&signer.verifying_key().to_bytes()),
        http: local.http.clone(),
        region: local.region.clone(),
        listen_addrs: listen_addrs
            .into_iter()
            .filter(|a| a.len() <= MAX_ADDR_LEN)
            .take(MAX_LISTEN_ADDRS)
            .collect(),
        capacity: local.capacity,
        cert,
    };
    let sealed = seal(signer, &record, now_ms, expires_at)?;
    Ok((sealed, expires_at))
}

/// Verified records by peer, bounded and expiring.
#[derive(Debug)]
pub(crate) struct RecordCache {
    entries: HashMap<PeerId, (Opened<NodeRecord>, Instant)>,
    capacity: usize,
    ttl: Duration,
}

impl RecordCache {
    pub(crate) fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            entries: HashMap::new(),
            capacity,
            ttl,
        }
    }

    /// The cached record of `peer`, unless it was cached too long ago or has expired.
    pub(crate) fn get(
        &mut self,
        peer: &PeerId,
        now: Instant,
        now_ms: u64,
    ) -> Option<Opened<NodeRecord>> {
        let (record, stored) = self.entries.get(peer)?;
        if now.saturating_duration_since(*stored) >= self.ttl || record.expires_at() <= now_ms {
            self.entries.remove(peer);
            return None;
        }
        Some(record.clone())
    }

    /// Stores a verified record; an older record never replaces a newer one.
    pub(crate) fn insert(&mut self, peer: PeerId, record: Opened<NodeRecord>, now: Instant) {
        if let Some((existing, _)) = self.entries.get(&peer)
            && !record.is_newer_than(existing)
        {
            return;
        }
        if !self.entries.contains_key(&peer) && self.entries.len() >= self.capacity {
            let ttl = self.ttl;
            self.entries
                .retain(|_, (_, stored)| now.saturating_duration_since(*stored) < ttl);
            if self.entries.len() >= self.capacity
                && let Some(oldest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (_, stored))| *stored)
                    .map(|(p, _)| *p)
            {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(peer, (record, now));
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use reef_proto::records::{Capacity, ProviderId, ProviderKey};

    use super::*;

    const NOW: u64 = 1_700_000_000_000;
    const DAY: u64 = 24 * 60 * 60 * 1000;

    fn local(cert: Option<Vec<u8>>) -> LocalInfo {
        LocalInfo {
            http: "127.0.0.1:8080".into(),
            region: "eu".into(),
            capacity: Capacity {
                req_per_s: 10,
                mbit_per_s: 20,
            },
            cert,
        }
    }

    fn cert(provider: &ProviderKey, node: &SigningKey, from: u64, until: u64) -> Vec<u8> {
        let cert = ProviderCert {
            provider: provider.id(),
            name: "acme".into(),
            node: peer_id_bytes(&node.verifying_key().to_bytes()),
        };
        seal(provider.signing_key(), &cert, from, until).unwrap()
    }

    #[test]
    fn the_signing_key_is_the_libp2p_key() {
        let keypair = Keypair::generate_ed25519();
        let key = signing_key(&keypair).unwrap();
        assert_eq!(
            peer_id_bytes(&key.verifying_key().to_bytes()),
            keypair.public().to_peer_id().to_bytes()
        );
    }

    #[test]
    fn own_record_carries_a_valid_certificate_and_expires_with_it() {
        let node = SigningKey::from_bytes(&[3; 32]);
        let provider = ProviderKey::from_bytes(&[4; 32]);
        let good = cert(&provider, &node, NOW, NOW + 60_000);
        let (sealed, expires_at) = seal_own(&node, &local(Some(good)), vec![], NOW).unwrap();
        assert_eq!(expires_at, NOW + 60_000);
        let opened = open::<NodeRecord>(&sealed, NOW).unwrap();
        assert_eq!(
            opened.membership(NOW),
            Membership::Certified {
                provider: provider.id(),
                name: "acme".into()
            }
        );
        assert_eq!(opened.record().capacity.mbit_per_s, 20);

        // Expired, or for another node: left out, the node is independent.
        for bad in [
            cert(&provider, &node, NOW - DAY, NOW),
            cert(&provider, &SigningKey::from_bytes(&[5; 32]), NOW, NOW + DAY),
        ] {
            let (sealed, expires_at) = seal_own(&node, &local(Some(bad)), vec![], NOW).unwrap();
            assert_eq!(expires_at, NOW + NodeRecord::MAX_LIFETIME_MS);
            let opened = open::<NodeRecord>(&sealed, NOW).unwrap();
            assert_eq!(opened.record().cert, None);
            assert_eq!(
                opened.membership(NOW),
                Membership::Independent {
                    provider: ProviderId::from_bytes(node.verifying_key().to_bytes())
                }
            );
        }
    }

    #[test]
    fn own_record_drops_addresses_it_cannot_carry() {
        let node = SigningKey::from_bytes(&[3; 32]);
        let addrs = vec!["/ip4/127.0.0.1/tcp/1".to_string(); MAX_LISTEN_ADDRS + 3];
        let mut with_long = addrs.clone();
        with_long.insert(0, "a".repeat(MAX_ADDR_LEN + 1));
        let (sealed, _) = seal_own(&node, &local(None), with_long, NOW).unwrap();
        let opened = open::<NodeRecord>(&sealed, NOW).unwrap();
        assert_eq!(opened.record().listen_addrs.len(), MAX_LISTEN_ADDRS);
        assert!(opened.record().listen_addrs.iter().all(|a| a.len() < 30));
    }

    fn opened(node: &SigningKey, issued_at: u64) -> Opened<NodeRecord> {
        let (sealed, _) = seal_own(node, &local(None), vec![], issued_at).unwrap();
        open::<NodeRecord>(&sealed, issued_at).unwrap()
    }

    #[test]
    fn cache_is_bounded_and_expires() {
        let now = Instant::now();
        let mut cache = RecordCache::new(2, Duration::from_secs(10));
        let keys: Vec<SigningKey> = (0..3).map(|i| SigningKey::from_bytes(&[i; 32])).collect();
        let peers: Vec<PeerId> = (0..3).map(|_| PeerId::random()).collect();
        for (i, (p, k)) in peers.iter().zip(&keys).enumerate() {
            cache.insert(*p, opened(k, NOW), now + Duration::from_millis(i as u64));
        }
        assert_eq!(cache.len(), 2);
        assert!(
            cache.get(&peers[0], now, NOW).is_none(),
            "the oldest entry is evicted"
        );
        assert!(cache.get(&peers[2], now, NOW).is_some());
        assert!(
            cache
                .get(&peers[2], now + Duration::from_secs(11), NOW)
                .is_none()
        );
        // Expired by its own envelope.
        cache.insert(peers[1], opened(&keys[1], NOW), now);
        let after = NOW + NodeRecord::MAX_LIFETIME_MS;
        assert!(cache.get(&peers[1], now, after).is_none());
    }

    #[test]
    fn cache_keeps_the_newer_record() {
        let now = Instant::now();
        let mut cache = RecordCache::new(4, Duration::from_secs(10));
        let peer = PeerId::random();
        let key = SigningKey::from_bytes(&[1; 32]);
        let newer = opened(&key, NOW + 2_000);
        cache.insert(peer, newer.clone(), now);
        cache.insert(peer, opened(&key, NOW), now);
        assert_eq!(cache.get(&peer, now, NOW + 2_000), Some(newer));
    }
}
