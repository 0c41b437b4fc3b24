//! What a peer's node has served under an arrangement, as it tells the primary.

use serde::{Deserialize, Serialize};

use super::arrangement::ArrangementId;
use super::cert::{Membership, membership};
use super::node::check_node;
use super::{HOUR_MS, Kind, Opened, Record, RecordError, peer_id_bytes};

/// A serving node's running totals for one arrangement, signed by the node's own key and sent
/// to the primary's agent over the peering protocol (never the DHT).
///
/// The counts are cumulative since the node began serving the arrangement, so a lost receipt
/// is healed by the next one: a ledger keeps the receipt with the highest `seq` of each node
/// and adds those up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageReceipt {
    pub arrangement: ArrangementId,
    /// The serving node's ed25519 public key; must be the signer.
    pub node: [u8; 32],
    /// Increases with every receipt of this node for this arrangement.
    pub seq: u64,
    pub requests: u64,
    pub bytes: u64,
    /// The node's sealed [`ProviderCert`](super::ProviderCert), so the primary can tell the
    /// node is the peer's without looking up its node record.
    pub cert: Option<Vec<u8>>,
}

impl Record for UsageReceipt {
    const KIND: Kind = Kind::UsageReceipt;
    /// The largest valid receipt is under 750 bytes (see the tests), most of it the
    /// certificate.
    const MAX_LEN: usize = 1024;
    /// An hour: nodes send receipts every few minutes, and an old one only restates what a
    /// later one counts.
    const MAX_LIFETIME_MS: u64 = HOUR_MS;

    fn validate(&self, signer: &[u8; 32], now_ms: u64) -> Result<(), RecordError> {
        check_node(
            &peer_id_bytes(&self.node),
            signer,
            self.cert.as_deref(),
            now_ms,
        )
    }

    fn dht_key(&self) -> Option<Vec<u8>> {
        None
    }
}

impl Opened<UsageReceipt> {
    /// The provider the serving node belongs to at `now_ms`; a receipt counts toward an
    /// arrangement only if this is the arrangement's peer.
    pub fn membership(&self, now_ms: u64) -> Membership {
        membership(
            self.signer(),
            &peer_id_bytes(&self.record().node),
            self.record().cert.as_deref(),
            now_ms,
        )
    }
}

/// The primary's answer to a receipt: it has recorded this node's totals up to `seq`. Unsigned:
/// it rides in the response of the authenticated libp2p stream the receipt came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptAck {
    pub arrangement: ArrangementId,
    pub node: [u8; 32],
    pub seq: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::tests::support::*;
    use crate::records::{ProviderCert, ProviderId, open, seal};

    #[test]
    fn round_trips_with_and_without_certificate() {
        let node = node_key(2);
        for receipt in [
            receipt_of(&node, None),
            receipt_of(&node, Some(cert_of(&node))),
        ] {
            let sealed = seal(&node, &receipt, NOW, NOW + HOUR_MS).unwrap();
            let opened = open::<UsageReceipt>(&sealed, NOW).unwrap();
            assert_eq!(opened.record(), &receipt);
            assert_eq!(receipt.dht_key(), None);
        }
    }

    #[test]
    fn rejects_the_common_attacks() {
        let node = node_key(2);
        rejects_tampering(&node, &receipt_of(&node, None));
        rejects_tampering(&node, &receipt_of(&node, Some(cert_of(&node))));
    }

    #[test]
    fn membership_follows_the_certificate() {
        let node = node_key(2);
        let receipt = receipt_of(&node, Some(cert_of(&node)));
        let opened =
            open::<UsageReceipt>(&seal(&node, &receipt, NOW, NOW + 1).unwrap(), NOW).unwrap();
        assert_eq!(opened.membership(NOW).provider(), provider_key(1).id());
        assert!(
            !opened.membership(NOW + DAY).is_certified(),
            "expired since"
        );

        let bare = receipt_of(&node, None);
        let opened = open::<UsageReceipt>(&seal(&node, &bare, NOW, NOW + 1).unwrap(), NOW).unwrap();
        assert_eq!(
            opened.membership(NOW),
            Membership::Independent {
                provider: ProviderId::from_bytes(node.verifying_key().to_bytes())
            }
        );
    }

    #[test]
    fn only_the_node_can_sign_its_receipt() {
        let node = node_key(2);
        let receipt = receipt_of(&node, None);
        let forged = seal_unchecked(&node_key(3), &receipt, NOW, NOW + HOUR_MS);
        assert_eq!(reason(open::<UsageReceipt>(&forged, NOW)), "wrong_signer");
        // Nor carry another node's certificate, or a broken one.
        let stolen = receipt_of(&node, Some(cert_of(&node_key(3))));
        assert_eq!(
            reason(seal(&node, &stolen, NOW, NOW + HOUR_MS)),
            "wrong_signer"
        );
        let broken = receipt_of(&node, Some(vec![1, 2, 3]));
        let sealed = seal_unchecked(&node, &broken, NOW, NOW + HOUR_MS);
        assert_eq!(reason(open::<UsageReceipt>(&sealed, NOW)), "garbage");
        // An expired certificate rejects the receipt.
        let late = NOW + DAY;
        let receipt = receipt_of(&node, Some(cert_of(&node)));
        let sealed = seal_unchecked(&node, &receipt, late, late + HOUR_MS);
        assert_eq!(reason(open::<UsageReceipt>(&sealed, late)), "expired");
    }

    #[test]
    fn largest_valid_receipt_fits() {
        let node = node_key(2);
        let provider = provider_key(1);
        let cert = ProviderCert {
            name: "n".repeat(crate::records::MAX_PROVIDER_NAME_LEN),
            ..cert_for(&provider, &node)
        };
        let cert = seal(
            provider.signing_key(),
            &cert,
            u64::MAX - ProviderCert::MAX_LIFETIME_MS,
            u64::MAX,
        )
        .unwrap();
        let receipt = UsageReceipt {
            arrangement: ArrangementId::from_bytes([0xff; 16]),
            seq: u64::MAX,
            requests: u64::MAX,
            bytes: u64::MAX,
            ..receipt_of(&node, Some(cert))
        };
        let sealed = seal(&node, &receipt, u64::MAX - HOUR_MS, u64::MAX).unwrap();
        assert!(sealed.len() <= UsageReceipt::MAX_LEN, "{}", sealed.len());
    }

    #[test]
    fn ack_is_plain_postcard() {
        let ack = ReceiptAck {
            arrangement: ArrangementId::from_bytes([1; 16]),
            node: [2; 32],
            seq: 3,
        };
        let wire = postcard::to_stdvec(&ack).unwrap();
        assert_eq!(wire.len(), 16 + 32 + 1);
        assert_eq!(postcard::from_bytes::<ReceiptAck>(&wire).unwrap(), ack);
    }
}
