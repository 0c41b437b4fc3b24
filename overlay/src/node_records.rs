//! Signed NodeRecords: how a node's record is sealed with its libp2p key, stored in the DHT
//! under `/reef/node/<peer id>`, verified on every receipt, and cached after verification.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::{PeerId, identity::Keypair, identity::PublicKey, kad};
use reef_proto::{MAX_NODE_RECORD_LEN, NodeRecord};
use serde::{Deserialize, Serialize};

/// Prefix of the DHT key of a node record; the peer id bytes follow.
const KEY_PREFIX: &[u8] = b"/reef/node/";
/// Wire version of [`SignedNodeRecord`].
const SIGNED_RECORD_VERSION: u8 = 1;
/// Domain separation: the node key also signs noise handshakes and gossip messages, so a
/// signature over a record must never be valid as anything else (and vice versa).
const SIGNING_CONTEXT: &[u8] = b"reef node record v1\0";
/// Room for the envelope around the record: an ed25519 public key (36 bytes as protobuf), a
/// 64-byte signature, version and length prefixes. Generous so other key types still fit.
const ENVELOPE_OVERHEAD: usize = 1024;
/// Largest DHT value we try to decode as a signed node record.
pub(crate) const MAX_SIGNED_RECORD_LEN: usize = MAX_NODE_RECORD_LEN + ENVELOPE_OVERHEAD;
/// A record issued further in the future than this is from a broken clock (or a replay trick
/// to pin a record); reject it.
const MAX_CLOCK_SKEW_SECS: u64 = 10 * 60;
/// Verified records are reused for this long; nodes re-put every 10 min, so it tracks changes.
pub(crate) const RECORD_CACHE_TTL: Duration = Duration::from_secs(10 * 60);
/// Entries in the verified-record cache: one per peer we recently looked up.
pub(crate) const RECORD_CACHE_CAPACITY: usize = 4096;

/// What a node record looks like in the DHT.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SignedNodeRecord {
    version: u8,
    /// `NodeRecord::encode()`.
    record: Vec<u8>,
    /// `PublicKey::encode_protobuf()` of the node's key.
    public_key: Vec<u8>,
    /// Signature over `SIGNING_CONTEXT ++ record`.
    signature: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum VerifyError {
    #[error("value is {0} bytes, over the limit")]
    TooLarge(usize),
    #[error("envelope does not decode")]
    Envelope,
    #[error("envelope version {0} is not supported")]
    Version(u8),
    #[error("public key does not decode")]
    PublicKey,
    #[error("signature is invalid")]
    Signature,
    #[error("record does not decode: {0}")]
    Record(#[from] reef_proto::RecordError),
    #[error("record names a peer id that does not decode")]
    PeerId,
    /// Signer, claimed peer and the peer we asked for are not all the same.
    #[error("wrong peer: {0}")]
    WrongPeer(String),
    #[error("record is issued {0} s in the future")]
    FromTheFuture(u64),
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum SignError {
    #[error("cannot sign: {0}")]
    Signing(#[from] libp2p::identity::SigningError),
    #[error("record is {0} bytes, over the limit")]
    TooLarge(usize),
}

/// The DHT key under which `peer` publishes its record.
pub(crate) fn record_key(peer: &PeerId) -> kad::RecordKey {
    let mut key = KEY_PREFIX.to_vec();
    key.extend_from_slice(&peer.to_bytes());
    kad::RecordKey::new(&key)
}

/// The peer a node-record key belongs to, or `None` if it is not a node-record key.
pub(crate) fn peer_of_key(key: &kad::RecordKey) -> Option<PeerId> {
    let rest = key.as_ref().strip_prefix(KEY_PREFIX)?;
    PeerId::from_bytes(rest).ok()
}

/// Seals `record` with the node's key; the result is the DHT value.
pub(crate) fn sign(keypair: &Keypair, record: &NodeRecord) -> Result<Vec<u8>, SignError> {
    let encoded = record.encode();
    if encoded.len() > MAX_NODE_RECORD_LEN {
        return Err(SignError::TooLarge(encoded.len()));
    }
    let signature = keypair.sign(&signed_bytes(&encoded))?;
    let envelope = SignedNodeRecord {
        version: SIGNED_RECORD_VERSION,
        record: encoded,
        public_key: keypair.public().encode_protobuf(),
        signature,
    };
    // Serialising plain owned fields into a Vec cannot fail.
    Ok(postcard::to_stdvec(&envelope).unwrap_or_default())
}

/// Opens a DHT value that should be `expected`'s record. Anything but a record signed by
/// `expected`'s own key and naming `expected` is an error.
pub(crate) fn verify(
    expected: &PeerId,
    value: &[u8],
    now_unix: u64,
) -> Result<NodeRecord, VerifyError> {
    if value.len() > MAX_SIGNED_RECORD_LEN {
        return Err(VerifyError::TooLarge(value.len()));
    }
    let (envelope, rest): (SignedNodeRecord, _) =
        postcard::take_from_bytes(value).map_err(|_| VerifyError::Envelope)?;
    if !rest.is_empty() {
        return Err(VerifyError::Envelope);
    }
    if envelope.version != SIGNED_RECORD_VERSION {
        return Err(VerifyError::Version(envelope.version));
    }
    let public_key =
        PublicKey::try_decode_protobuf(&envelope.public_key).map_err(|_| VerifyError::PublicKey)?;
    if !public_key.verify(&signed_bytes(&envelope.record), &envelope.signature) {
        return Err(VerifyError::Signature);
    }
    let record = NodeRecord::decode(&envelope.record)?;
    let claimed = PeerId::from_bytes(&record.peer_id).map_err(|_| VerifyError::PeerId)?;
    let signer = public_key.to_peer_id();
    if signer != claimed || claimed != *expected {
        return Err(VerifyError::WrongPeer(format!(
            "signed by {signer}, claims {claimed}, asked for {expected}"
        )));
    }
    if record.issued_at > now_unix.saturating_add(MAX_CLOCK_SKEW_SECS) {
        return Err(VerifyError::FromTheFuture(record.issued_at - now_unix));
    }
    Ok(record)
}

fn signed_bytes(record: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SIGNING_CONTEXT.len() + record.len());
    out.extend_from_slice(SIGNING_CONTEXT);
    out.extend_from_slice(record);
    out
}

/// Seconds since the Unix epoch (0 if the clock is before 1970).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Verified records by peer, bounded and expiring.
#[derive(Debug)]
pub(crate) struct RecordCache {
    entries: HashMap<PeerId, (NodeRecord, Instant)>,
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

    pub(crate) fn get(&mut self, peer: &PeerId, now: Instant) -> Option<NodeRecord> {
        let (record, stored) = self.entries.get(peer)?;
        if now.saturating_duration_since(*stored) >= self.ttl {
            self.entries.remove(peer);
            return None;
        }
        Some(record.clone())
    }

    /// Stores a verified record; an older record never replaces a newer one.
    pub(crate) fn insert(&mut self, peer: PeerId, record: NodeRecord, now: Instant) {
        if let Some((existing, _)) = self.entries.get(&peer)
            && existing.issued_at > record.issued_at
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
    use super::*;

    fn record_for(peer: &PeerId) -> NodeRecord {
        NodeRecord {
            peer_id: peer.to_bytes(),
            http: "127.0.0.1:8080".into(),
            provider: "acme".into(),
            region: "eu".into(),
            listen_addrs: vec!["/ip4/127.0.0.1/tcp/4001".into()],
            issued_at: 1_000,
        }
    }

    #[test]
    fn round_trips() {
        let key = Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let record = record_for(&peer);
        let value = sign(&key, &record).unwrap();
        assert!(value.len() <= MAX_SIGNED_RECORD_LEN);
        assert_eq!(verify(&peer, &value, 1_000).unwrap(), record);
    }

    #[test]
    fn key_round_trips() {
        let peer = PeerId::random();
        assert_eq!(peer_of_key(&record_key(&peer)), Some(peer));
        assert_eq!(peer_of_key(&kad::RecordKey::new(b"/reef/other/x")), None);
        assert_eq!(
            peer_of_key(&kad::RecordKey::new(b"/reef/node/garbage")),
            None
        );
    }

    #[test]
    fn forged_with_another_key_is_rejected() {
        // X signs a record that claims to be Y's.
        let x = Keypair::generate_ed25519();
        let y = Keypair::generate_ed25519();
        let y_peer = y.public().to_peer_id();
        let forged = sign(&x, &record_for(&y_peer)).unwrap();
        assert!(matches!(
            verify(&y_peer, &forged, 1_000),
            Err(VerifyError::WrongPeer(_))
        ));

        // X's signature presented with Y's public key.
        let mut envelope: SignedNodeRecord = postcard::from_bytes(&forged).unwrap();
        envelope.public_key = y.public().encode_protobuf();
        let swapped = postcard::to_stdvec(&envelope).unwrap();
        assert!(matches!(
            verify(&y_peer, &swapped, 1_000),
            Err(VerifyError::Signature)
        ));
    }

    #[test]
    fn valid_record_under_the_wrong_key_is_rejected() {
        // X's own, correctly signed record returned when we asked for Y.
        let x = Keypair::generate_ed25519();
        let x_peer = x.public().to_peer_id();
        let value = sign(&x, &record_for(&x_peer)).unwrap();
        let y_peer = PeerId::random();
        assert!(matches!(
            verify(&y_peer, &value, 1_000),
            Err(VerifyError::WrongPeer(_))
        ));
    }

    #[test]
    fn tampered_record_is_rejected() {
        let key = Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let value = sign(&key, &record_for(&peer)).unwrap();
        let mut envelope: SignedNodeRecord = postcard::from_bytes(&value).unwrap();
        let mut record = NodeRecord::decode(&envelope.record).unwrap();
        record.http = "203.0.113.66:80".into();
        envelope.record = record.encode();
        let tampered = postcard::to_stdvec(&envelope).unwrap();
        assert!(matches!(
            verify(&peer, &tampered, 1_000),
            Err(VerifyError::Signature)
        ));
    }

    #[test]
    fn garbage_and_oversized_values_are_rejected() {
        let peer = PeerId::random();
        assert!(verify(&peer, &[], 0).is_err());
        assert!(verify(&peer, b"definitely not a record", 0).is_err());
        assert!(matches!(
            verify(&peer, &vec![0; MAX_SIGNED_RECORD_LEN + 1], 0),
            Err(VerifyError::TooLarge(_))
        ));
        // Trailing bytes after a valid envelope.
        let key = Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let mut value = sign(&key, &record_for(&peer)).unwrap();
        value.push(0);
        assert!(matches!(
            verify(&peer, &value, 1_000),
            Err(VerifyError::Envelope)
        ));
    }

    #[test]
    fn records_from_the_future_are_rejected() {
        let key = Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let value = sign(&key, &record_for(&peer)).unwrap();
        assert!(verify(&peer, &value, 1_000 - MAX_CLOCK_SKEW_SECS).is_ok());
        assert!(matches!(
            verify(&peer, &value, 0),
            Err(VerifyError::FromTheFuture(_))
        ));
    }

    #[test]
    fn cache_is_bounded_and_expires() {
        let now = Instant::now();
        let mut cache = RecordCache::new(2, Duration::from_secs(10));
        let peers: Vec<PeerId> = (0..3).map(|_| PeerId::random()).collect();
        for (i, p) in peers.iter().enumerate() {
            cache.insert(*p, record_for(p), now + Duration::from_millis(i as u64));
        }
        assert_eq!(cache.len(), 2);
        assert!(
            cache.get(&peers[0], now).is_none(),
            "the oldest entry is evicted"
        );
        assert!(cache.get(&peers[2], now).is_some());
        assert!(
            cache
                .get(&peers[2], now + Duration::from_secs(11))
                .is_none()
        );
    }

    #[test]
    fn cache_keeps_the_newer_record() {
        let now = Instant::now();
        let mut cache = RecordCache::new(4, Duration::from_secs(10));
        let peer = PeerId::random();
        let mut newer = record_for(&peer);
        newer.issued_at = 2_000;
        cache.insert(peer, newer.clone(), now);
        cache.insert(peer, record_for(&peer), now);
        assert_eq!(cache.get(&peer, now), Some(newer));
    }

    proptest::proptest! {
        #[test]
        fn verifying_arbitrary_bytes_never_panics(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048),
        ) {
            let peer = PeerId::random();
            proptest::prop_assert!(verify(&peer, &bytes, unix_now()).is_err());
        }

        #[test]
        fn verifying_mutated_records_never_panics(
            flip in 0usize..4096,
            bit in 0u8..8,
        ) {
            let key = Keypair::generate_ed25519();
            let peer = key.public().to_peer_id();
            let mut value = sign(&key, &record_for(&peer)).unwrap();
            let i = flip % value.len();
            value[i] ^= 1 << bit;
            // A flipped bit must never yield a record that verifies as someone else's.
            if let Ok(r) = verify(&peer, &value, 1_000) {
                proptest::prop_assert_eq!(r.peer_id, peer.to_bytes());
            }
        }
    }
}
