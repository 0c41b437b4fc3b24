//! What may sit in the DHT: every value under a Reef key is a sealed envelope of the kind the
//! key names ([`kind_of_key`]), signed by whoever the key belongs to, current, and within its
//! kind's limits. The event loop runs [`check`] on every value a peer asks us to store and on
//! every value a lookup brings back, so nothing unverified is ever stored, forwarded (kad
//! re-replicates only what is in our store) or handed to a caller.

use std::cmp::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reef_proto::records::{
    CapacityOffer, ContentRecord, Kind, NodeRecord, Opened, ProviderCert, Record, RecordError,
    SIGNATURE_LEN, ServiceRecord, kind_of_key, open, open_under_key,
};

use crate::metrics::UNKNOWN_KIND;

/// A value that passed every check for the key it sits under.
#[derive(Debug, Clone)]
pub(crate) struct Checked {
    pub(crate) kind: Kind,
    issued_at: u64,
    signature: [u8; SIGNATURE_LEN],
    /// When the value stops being acceptable anywhere (unix ms): the envelope's expiry, or
    /// earlier if a node record's provider certificate expires first (from then on peers
    /// reject the record, so we must stop storing and re-replicating it).
    pub(crate) valid_until: u64,
    /// The opened record, for node records (the overlay caches and answers with them).
    pub(crate) node: Option<Opened<NodeRecord>>,
}

/// Why a value was refused: the labels of `reef_records_rejected_total`, and the detail.
#[derive(Debug, Clone)]
pub(crate) struct Rejected {
    /// `Kind::label()` of the key's kind, or `unknown`.
    pub(crate) kind: &'static str,
    pub(crate) error: RecordError,
}

impl Rejected {
    pub(crate) fn reason(&self) -> &'static str {
        self.error.reason()
    }
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} rejected: {}", self.kind, self.error)
    }
}

/// How a checked value compares with the one already held under the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Versus {
    Newer,
    /// The same record (same issue time and signature): an honest republisher's re-put.
    Same,
    /// Older: a replay, or a lagging replica.
    Older,
}

impl Checked {
    /// Same order as [`reef_proto::records::is_newer`]: later `issued_at` wins, ties are
    /// broken by the signature bytes so that every replica converges on one record.
    pub(crate) fn versus(&self, held: &Checked) -> Versus {
        match (self.issued_at, self.signature).cmp(&(held.issued_at, held.signature)) {
            Ordering::Greater => Versus::Newer,
            Ordering::Equal => Versus::Same,
            Ordering::Less => Versus::Older,
        }
    }
}

/// Opens `value` as the kind `key` names and checks it belongs under `key`, at `now_ms`.
pub(crate) fn check(key: &[u8], value: &[u8], now_ms: u64) -> Result<Checked, Rejected> {
    let Some(kind) = kind_of_key(key) else {
        return Err(Rejected {
            kind: UNKNOWN_KIND,
            error: RecordError::Invalid {
                field: "key",
                problem: "no record kind is stored under this key",
            },
        });
    };
    let rejected = |error| Rejected {
        kind: kind.label(),
        error,
    };
    match kind {
        Kind::NodeRecord => {
            let opened = open_under_key::<NodeRecord>(key, value, now_ms).map_err(rejected)?;
            let cert_until = opened
                .record()
                .cert
                .as_deref()
                .and_then(|cert| open::<ProviderCert>(cert, now_ms).ok())
                .map_or(u64::MAX, |cert| cert.expires_at());
            let mut checked = summary(&opened, kind);
            checked.valid_until = checked.valid_until.min(cert_until);
            checked.node = Some(opened);
            Ok(checked)
        }
        Kind::ContentRecord => open_under_key::<ContentRecord>(key, value, now_ms)
            .map(|o| summary(&o, kind))
            .map_err(rejected),
        Kind::CapacityOffer => open_under_key::<CapacityOffer>(key, value, now_ms)
            .map(|o| summary(&o, kind))
            .map_err(rejected),
        Kind::ServiceRecord => open_under_key::<ServiceRecord>(key, value, now_ms)
            .map(|o| summary(&o, kind))
            .map_err(rejected),
        // `kind_of_key` names no other kind today; a new one must be added here to be stored.
        _ => Err(rejected(RecordError::WrongKind {
            expected: kind,
            found: kind.code(),
        })),
    }
}

fn summary<T: Record>(opened: &Opened<T>, kind: Kind) -> Checked {
    Checked {
        kind,
        issued_at: opened.issued_at(),
        signature: *opened.signature(),
        valid_until: opened.expires_at(),
        node: None,
    }
}

/// Unix milliseconds now (0 before 1970, which only makes every record look from the future).
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The instant at unix time `at_ms`, seen from `now_ms` (now, for times already past).
pub(crate) fn instant_at(at_ms: u64, now_ms: u64) -> std::time::Instant {
    std::time::Instant::now() + Duration::from_millis(at_ms.saturating_sub(now_ms))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use reef_proto::ContentKey;
    use reef_proto::records::{
        Capacity, ProviderKey, SigningKey, content_record_key, node_record_key, offer_key,
        peer_id_bytes, region_key, seal,
    };

    use super::*;

    const NOW: u64 = 1_700_000_000_000;
    const MINUTE: u64 = 60_000;

    fn node_key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn peer(key: &SigningKey) -> Vec<u8> {
        peer_id_bytes(&key.verifying_key().to_bytes())
    }

    fn node_record(key: &SigningKey, cert: Option<Vec<u8>>) -> NodeRecord {
        NodeRecord {
            peer_id: peer(key),
            http: "127.0.0.1:8080".into(),
            region: "eu".into(),
            listen_addrs: vec![],
            capacity: Capacity::default(),
            cert,
        }
    }

    fn content(n: u8) -> ContentRecord {
        ContentRecord {
            key: ContentKey::from_bytes([n; 32]),
            body_hash: [1; 32],
            body_len: 3,
            etag: None,
            last_modified: None,
        }
    }

    #[test]
    fn each_kind_opens_under_its_own_key_only() {
        let node = node_key(2);
        let value = seal(&node, &node_record(&node, None), NOW, NOW + MINUTE).unwrap();
        let checked = check(&node_record_key(&peer(&node)), &value, NOW).unwrap();
        assert_eq!(checked.kind, Kind::NodeRecord);
        assert!(checked.node.is_some());
        assert_eq!(checked.valid_until, NOW + MINUTE);
        let other = check(&node_record_key(&peer(&node_key(3))), &value, NOW).unwrap_err();
        assert_eq!(
            (other.kind, other.reason()),
            ("node_record", "wrong_signer")
        );

        let value = seal(&node, &content(1), NOW, NOW + MINUTE).unwrap();
        let key = content_record_key(&ContentKey::from_bytes([1; 32]));
        assert_eq!(check(&key, &value, NOW).unwrap().kind, Kind::ContentRecord);
        let wrong = content_record_key(&ContentKey::from_bytes([2; 32]));
        assert_eq!(
            check(&wrong, &value, NOW).unwrap_err().reason(),
            "wrong_signer"
        );
        // A content record under a node key is the wrong kind.
        let under_node = check(&node_record_key(&peer(&node)), &value, NOW).unwrap_err();
        assert_eq!(
            (under_node.kind, under_node.reason()),
            ("node_record", "wrong_kind")
        );

        let unknown = check(&region_key("eu"), &value, NOW).unwrap_err();
        assert_eq!((unknown.kind, unknown.reason()), ("unknown", "invalid"));
        let unknown = check(b"/reef/node/old", &value, NOW).unwrap_err();
        assert_eq!(unknown.kind, "unknown");

        let provider = ProviderKey::from_bytes(&[5; 32]);
        let offer = CapacityOffer {
            provider: provider.id(),
            name: "acme".into(),
            req_per_s: 1,
            mbit_per_s: 1,
            regions: vec!["eu".into()],
            price_micros_per_gb: 1,
            min_duration_s: 1,
            max_duration_s: 2,
        };
        let value = seal(provider.signing_key(), &offer, NOW, NOW + MINUTE).unwrap();
        let checked = check(&offer_key(&provider.id()), &value, NOW).unwrap();
        assert_eq!(checked.kind, Kind::CapacityOffer);
        let other = ProviderKey::from_bytes(&[6; 32]).id();
        let wrong = check(&offer_key(&other), &value, NOW).unwrap_err();
        assert_eq!(
            (wrong.kind, wrong.reason()),
            ("capacity_offer", "wrong_signer")
        );
    }

    #[test]
    fn a_node_record_is_valid_only_while_its_certificate_is() {
        let node = node_key(2);
        let provider = ProviderKey::from_bytes(&[9; 32]);
        let cert = ProviderCert {
            provider: provider.id(),
            name: "acme".into(),
            node: peer(&node),
        };
        let cert = seal(
            provider.signing_key(),
            &cert,
            NOW - MINUTE,
            NOW + 5 * MINUTE,
        )
        .unwrap();
        let record = node_record(&node, Some(cert));
        let value = seal(&node, &record, NOW, NOW + 60 * MINUTE).unwrap();
        let checked = check(&node_record_key(&peer(&node)), &value, NOW).unwrap();
        assert_eq!(checked.valid_until, NOW + 5 * MINUTE);
    }

    #[test]
    fn newer_same_and_older() {
        let node = node_key(2);
        let key = node_record_key(&peer(&node));
        let record = node_record(&node, None);
        let old = check(
            &key,
            &seal(&node, &record, NOW - 1, NOW + MINUTE).unwrap(),
            NOW,
        )
        .unwrap();
        let new = check(&key, &seal(&node, &record, NOW, NOW + MINUTE).unwrap(), NOW).unwrap();
        assert_eq!(new.versus(&old), Versus::Newer);
        assert_eq!(old.versus(&new), Versus::Older);
        assert_eq!(new.versus(&new.clone()), Versus::Same);
    }

    #[test]
    fn instants_from_unix_times() {
        let now = std::time::Instant::now();
        assert!(instant_at(NOW - 1, NOW) >= now);
        assert!(instant_at(NOW + 60_000, NOW) >= now + Duration::from_secs(59));
    }
}
