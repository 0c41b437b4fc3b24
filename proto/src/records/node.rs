//! The record a node publishes about itself.

use serde::{Deserialize, Serialize};

use super::cert::{Membership, check_cert, membership};
use super::identity::{ED25519_PEER_ID_LEN, peer_id_bytes};
use super::keys::node_record_key;
use super::{HOUR_MS, Kind, Opened, Record, RecordError, text};

/// `host:port` of an HTTP edge; a DNS name is at most 253 bytes.
pub const MAX_HTTP_LEN: usize = 260;
/// Region names are short codes (`eu`, `us-east`).
pub const MAX_REGION_LEN: usize = 32;
/// A node listens on a handful of addresses (TCP and QUIC, v4 and v6, public and local).
pub const MAX_LISTEN_ADDRS: usize = 16;
/// A multiaddr with a DNS name and a `/p2p/` suffix stays far below this.
pub const MAX_ADDR_LEN: usize = 256;

/// What a node can serve, as configured by its operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Capacity {
    pub req_per_s: u32,
    pub mbit_per_s: u32,
}

/// Where a node's HTTP edge listens, where it is, what it can take, and (through its
/// certificate) whom it belongs to. Signed by the node's own key and stored under
/// [`node_record_key`] of its peer id; nodes republish it well before it expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Peer id bytes; must be the signer's ([`peer_id_bytes`]).
    pub peer_id: Vec<u8>,
    /// `host:port` of the node's HTTP edge.
    pub http: String,
    pub region: String,
    /// Multiaddrs the node listens on, as text.
    pub listen_addrs: Vec<String>,
    pub capacity: Capacity,
    /// A sealed [`ProviderCert`](super::ProviderCert) for this node; without one the node is
    /// its own provider.
    pub cert: Option<Vec<u8>>,
}

impl Record for NodeRecord {
    const KIND: Kind = Kind::NodeRecord;
    /// The largest valid record is under 5 KiB (see the tests); Kademlia's default packet limit
    /// is 16 KiB.
    const MAX_LEN: usize = 8 * 1024;
    /// An hour; nodes republish every 10 minutes, so a node that left drops out within the
    /// hour while a few missed republishes do no harm.
    const MAX_LIFETIME_MS: u64 = HOUR_MS;

    fn validate(&self, signer: &[u8; 32], now_ms: u64) -> Result<(), RecordError> {
        check_node(&self.peer_id, signer, self.cert.as_deref(), now_ms)?;
        text::label("http", &self.http, MAX_HTTP_LEN)?;
        text::label("region", &self.region, MAX_REGION_LEN)?;
        text::count("listen_addrs", &self.listen_addrs, MAX_LISTEN_ADDRS)?;
        for addr in &self.listen_addrs {
            text::label("listen_addrs", addr, MAX_ADDR_LEN)?;
        }
        Ok(())
    }

    fn dht_key(&self) -> Option<Vec<u8>> {
        Some(node_record_key(&self.peer_id))
    }
}

impl Opened<NodeRecord> {
    /// The provider this node belongs to at `now_ms`: the certifying provider while its
    /// certificate is valid, otherwise the node itself.
    pub fn membership(&self, now_ms: u64) -> Membership {
        membership(
            self.signer(),
            &self.record().peer_id,
            self.record().cert.as_deref(),
            now_ms,
        )
    }
}

/// Shared by records a node signs about itself: `peer_id` is the signer's, and a certificate,
/// if carried, is valid and for this node. A bad certificate rejects the whole record rather
/// than being ignored: a node honestly carries only certificates it was given.
pub(crate) fn check_node(
    peer_id: &[u8],
    signer: &[u8; 32],
    cert: Option<&[u8]>,
    now_ms: u64,
) -> Result<(), RecordError> {
    if peer_id.len() != ED25519_PEER_ID_LEN || peer_id != peer_id_bytes(signer).as_slice() {
        return Err(RecordError::WrongSigner("peer id is not the signer's"));
    }
    if let Some(cert) = cert {
        check_cert(cert, peer_id, now_ms)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::tests::support::*;
    use crate::records::{ProviderId, key_belongs, open, open_under_key, seal};

    #[test]
    fn round_trips_with_and_without_certificate() {
        let node = node_key(2);
        for record in [node_record(&node, None), certified_node_record(&node)] {
            let sealed = seal(&node, &record, NOW, NOW + HOUR_MS).unwrap();
            let opened = open::<NodeRecord>(&sealed, NOW).unwrap();
            assert_eq!(opened.record(), &record);
            assert!(key_belongs(&node_record_key(&peer_of(&node)), &opened));
        }
    }

    #[test]
    fn rejects_the_common_attacks() {
        let node = node_key(2);
        rejects_tampering(&node, &node_record(&node, None));
        rejects_tampering(&node, &certified_node_record(&node));
    }

    #[test]
    fn only_the_node_can_sign_its_record() {
        let node = node_key(2);
        let intruder = node_key(3);
        let record = node_record(&node, None);
        let forged = seal_unchecked(&intruder, &record, NOW, NOW + HOUR_MS);
        assert_eq!(reason(open::<NodeRecord>(&forged, NOW)), "wrong_signer");
        assert_eq!(
            reason(seal(&intruder, &record, NOW, NOW + HOUR_MS)),
            "wrong_signer"
        );
    }

    #[test]
    fn a_valid_record_under_another_nodes_key_is_rejected() {
        let node = node_key(2);
        let sealed = seal(&node, &node_record(&node, None), NOW, NOW + HOUR_MS).unwrap();
        let other = node_record_key(&peer_of(&node_key(3)));
        assert_eq!(
            reason(open_under_key::<NodeRecord>(&other, &sealed, NOW)),
            "wrong_signer"
        );
        let own = node_record_key(&peer_of(&node));
        assert!(open_under_key::<NodeRecord>(&own, &sealed, NOW).is_ok());
    }

    #[test]
    fn certified_and_independent_membership() {
        let node = node_key(2);
        let provider = provider_key(1);
        let sealed = seal(&node, &certified_node_record(&node), NOW, NOW + HOUR_MS).unwrap();
        let opened = open::<NodeRecord>(&sealed, NOW).unwrap();
        assert_eq!(
            opened.membership(NOW),
            Membership::Certified {
                provider: provider.id(),
                name: "acme".into()
            }
        );

        let sealed = seal(&node, &node_record(&node, None), NOW, NOW + HOUR_MS).unwrap();
        let opened = open::<NodeRecord>(&sealed, NOW).unwrap();
        let membership = opened.membership(NOW);
        assert!(!membership.is_certified());
        assert_eq!(
            membership.provider(),
            ProviderId::from_bytes(node.verifying_key().to_bytes())
        );
    }

    #[test]
    fn a_certificate_for_another_node_is_rejected() {
        let node = node_key(2);
        let provider = provider_key(1);
        let cert = seal(
            provider.signing_key(),
            &cert_for(&provider, &node_key(3)),
            NOW,
            NOW + DAY,
        )
        .unwrap();
        let record = node_record(&node, Some(cert));
        let sealed = seal_unchecked(&node, &record, NOW, NOW + HOUR_MS);
        let err = open::<NodeRecord>(&sealed, NOW).unwrap_err();
        assert!(matches!(err, RecordError::Cert(_)), "{err}");
        assert_eq!(err.reason(), "wrong_signer");
        assert_eq!(
            reason(seal(&node, &record, NOW, NOW + HOUR_MS)),
            "wrong_signer"
        );
    }

    #[test]
    fn a_certificate_naming_a_provider_whose_key_did_not_sign_it_is_rejected() {
        // The node claims provider 1, but the certificate is signed by key 4.
        let node = node_key(2);
        let claimed = provider_key(1);
        let signer = provider_key(4);
        let cert = seal_unchecked(
            signer.signing_key(),
            &cert_for(&claimed, &node),
            NOW,
            NOW + DAY,
        );
        let sealed = seal_unchecked(&node, &node_record(&node, Some(cert)), NOW, NOW + HOUR_MS);
        assert_eq!(reason(open::<NodeRecord>(&sealed, NOW)), "wrong_signer");

        // Or a certificate from the right provider with its signature damaged.
        let mut cert = seal(
            claimed.signing_key(),
            &cert_for(&claimed, &node),
            NOW,
            NOW + DAY,
        )
        .unwrap();
        let last = cert.len() - 1;
        cert[last] ^= 1;
        let sealed = seal_unchecked(&node, &node_record(&node, Some(cert)), NOW, NOW + HOUR_MS);
        assert_eq!(reason(open::<NodeRecord>(&sealed, NOW)), "bad_signature");
    }

    #[test]
    fn an_expired_certificate_rejects_the_record() {
        let node = node_key(2);
        let provider = provider_key(1);
        let cert = seal(
            provider.signing_key(),
            &cert_for(&provider, &node),
            NOW - DAY,
            NOW,
        )
        .unwrap();
        let record = node_record(&node, Some(cert));
        assert_eq!(reason(seal(&node, &record, NOW, NOW + HOUR_MS)), "expired");
    }

    #[test]
    fn fields_are_bounded() {
        let node = node_key(2);
        let good = node_record(&node, None);
        let cases = [
            NodeRecord {
                http: String::new(),
                ..good.clone()
            },
            NodeRecord {
                http: "h".repeat(MAX_HTTP_LEN + 1),
                ..good.clone()
            },
            NodeRecord {
                region: "r".repeat(MAX_REGION_LEN + 1),
                ..good.clone()
            },
            NodeRecord {
                listen_addrs: vec!["/ip4/1.2.3.4/tcp/1".into(); MAX_LISTEN_ADDRS + 1],
                ..good.clone()
            },
            NodeRecord {
                listen_addrs: vec!["a".repeat(MAX_ADDR_LEN + 1)],
                ..good.clone()
            },
            NodeRecord {
                listen_addrs: vec![String::new()],
                ..good.clone()
            },
        ];
        for bad in cases {
            let sealed = seal_unchecked(&node, &bad, NOW, NOW + HOUR_MS);
            assert_eq!(reason(open::<NodeRecord>(&sealed, NOW)), "invalid");
            assert_eq!(reason(seal(&node, &bad, NOW, NOW + HOUR_MS)), "invalid");
        }
    }

    #[test]
    fn largest_valid_record_fits() {
        let node = node_key(2);
        let provider = provider_key(1);
        let cert = crate::records::ProviderCert {
            name: "n".repeat(crate::records::cert::MAX_PROVIDER_NAME_LEN),
            ..cert_for(&provider, &node)
        };
        let cert = seal(
            provider.signing_key(),
            &cert,
            u64::MAX - crate::records::ProviderCert::MAX_LIFETIME_MS,
            u64::MAX,
        )
        .unwrap();
        let record = NodeRecord {
            peer_id: peer_of(&node),
            http: "h".repeat(MAX_HTTP_LEN),
            region: "r".repeat(MAX_REGION_LEN),
            listen_addrs: vec!["a".repeat(MAX_ADDR_LEN); MAX_LISTEN_ADDRS],
            capacity: Capacity {
                req_per_s: u32::MAX,
                mbit_per_s: u32::MAX,
            },
            cert: Some(cert),
        };
        let sealed = seal(&node, &record, u64::MAX - HOUR_MS, u64::MAX).unwrap();
        assert!(sealed.len() <= NodeRecord::MAX_LEN, "{}", sealed.len());
    }
}
