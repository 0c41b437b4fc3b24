//! The load a node gossips every second.

use serde::{Deserialize, Serialize};

use super::cert::{Membership, membership};
use super::node::check_node;
use super::{Kind, Opened, Record, RecordError};

/// The gossipsub topic load reports travel on.
pub const LOAD_TOPIC: &str = "reef/load/1";

/// Utilisation is in permille of configured capacity; overload is reported as it is, up to
/// ten times capacity, beyond which the number says nothing more.
pub const MAX_UTILISATION_PERMILLE: u16 = 10_000;
pub const MAX_HIT_RATIO_PERMILLE: u16 = 1_000;

/// A node's load, gossiped every second and dropped when it expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadReport {
    /// Peer id bytes; must be the signer's.
    pub peer_id: Vec<u8>,
    /// The node's sealed [`ProviderCert`](super::ProviderCert), so the report counts toward
    /// its provider's load without looking up its node record.
    pub cert: Option<Vec<u8>>,
    /// Increases with every report of this node, so that a receiver can drop reordered ones.
    pub seq: u64,
    pub req_per_s: u32,
    pub egress_bytes_per_s: u64,
    /// The load the node bears: what it serves itself, against its capacity.
    pub utilisation_permille: u16,
    pub hit_ratio_permille: u16,
    /// The load that arrives at the node, including the requests it sends to a peer
    /// provider's nodes under an arrangement; never below `utilisation_permille`. Peering
    /// starts and ends on demand, so relief does not look like the surge is over.
    pub demand_permille: u16,
}

impl Record for LoadReport {
    const KIND: Kind = Kind::LoadReport;
    /// The largest valid report is under 450 bytes (see the tests); every node gossips one
    /// every second, so the limit stays tight.
    const MAX_LEN: usize = 512;
    /// A minute: busy nodes report every second with a 10 s lifetime, and load that old must
    /// not steer redirection or peering; quiet nodes of a large overlay report more rarely
    /// (down to every 12 s) and their reports live twice as long as they are listed.
    const MAX_LIFETIME_MS: u64 = 60 * 1000;

    fn validate(&self, signer: &[u8; 32], now_ms: u64) -> Result<(), RecordError> {
        check_node(&self.peer_id, signer, self.cert.as_deref(), now_ms)?;
        if self.utilisation_permille > MAX_UTILISATION_PERMILLE {
            return Err(RecordError::invalid("utilisation_permille", "too large"));
        }
        if self.demand_permille > MAX_UTILISATION_PERMILLE {
            return Err(RecordError::invalid("demand_permille", "too large"));
        }
        if self.hit_ratio_permille > MAX_HIT_RATIO_PERMILLE {
            return Err(RecordError::invalid("hit_ratio_permille", "over 1000"));
        }
        Ok(())
    }

    fn dht_key(&self) -> Option<Vec<u8>> {
        // Gossip only.
        None
    }
}

impl Opened<LoadReport> {
    /// The provider this report's load counts toward at `now_ms`.
    pub fn membership(&self, now_ms: u64) -> Membership {
        membership(
            self.signer(),
            &self.record().peer_id,
            self.record().cert.as_deref(),
            now_ms,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::tests::support::*;
    use crate::records::{ProviderCert, ProviderId, key_belongs, node_record_key, open, seal};

    const SECOND: u64 = 1000;

    #[test]
    fn round_trips_with_and_without_certificate() {
        let node = node_key(2);
        let certified = load_report(&node, Some(cert_of(&node)));
        for report in [load_report(&node, None), certified] {
            let sealed = seal(&node, &report, NOW, NOW + 5 * SECOND).unwrap();
            let opened = open::<LoadReport>(&sealed, NOW).unwrap();
            assert_eq!(opened.record(), &report);
            // Gossip only: belongs under no DHT key.
            assert!(!key_belongs(&node_record_key(&peer_of(&node)), &opened));
        }
    }

    #[test]
    fn rejects_the_common_attacks() {
        let node = node_key(2);
        rejects_tampering(&node, &load_report(&node, None));
        rejects_tampering(&node, &load_report(&node, Some(cert_of(&node))));
    }

    #[test]
    fn membership_follows_the_certificate() {
        let node = node_key(2);
        let sealed = seal(
            &node,
            &load_report(&node, Some(cert_of(&node))),
            NOW,
            NOW + 5 * SECOND,
        )
        .unwrap();
        let opened = open::<LoadReport>(&sealed, NOW).unwrap();
        assert_eq!(opened.membership(NOW).provider(), provider_key(1).id());

        let sealed = seal(&node, &load_report(&node, None), NOW, NOW + 5 * SECOND).unwrap();
        let opened = open::<LoadReport>(&sealed, NOW).unwrap();
        assert_eq!(
            opened.membership(NOW),
            Membership::Independent {
                provider: ProviderId::from_bytes(node.verifying_key().to_bytes())
            }
        );
    }

    #[test]
    fn only_the_node_can_report_its_load() {
        let node = node_key(2);
        let forged = seal_unchecked(
            &node_key(3),
            &load_report(&node, None),
            NOW,
            NOW + 5 * SECOND,
        );
        assert_eq!(reason(open::<LoadReport>(&forged, NOW)), "wrong_signer");
        // Nor borrow another node's certificate.
        let stolen = cert_of(&node_key(3));
        let report = load_report(&node, Some(stolen));
        assert_eq!(
            reason(seal(&node, &report, NOW, NOW + SECOND)),
            "wrong_signer"
        );
    }

    #[test]
    fn lifetime_is_short() {
        let node = node_key(2);
        let report = load_report(&node, None);
        assert!(seal(&node, &report, NOW, NOW + 60 * SECOND).is_ok());
        assert_eq!(
            reason(seal(&node, &report, NOW, NOW + 61 * SECOND)),
            "lifetime"
        );
    }

    #[test]
    fn fields_are_bounded() {
        let node = node_key(2);
        let good = load_report(&node, None);
        let overloaded = LoadReport {
            utilisation_permille: MAX_UTILISATION_PERMILLE,
            ..good.clone()
        };
        assert!(seal(&node, &overloaded, NOW, NOW + SECOND).is_ok());
        let cases = [
            LoadReport {
                utilisation_permille: MAX_UTILISATION_PERMILLE + 1,
                ..good.clone()
            },
            LoadReport {
                hit_ratio_permille: 1001,
                ..good.clone()
            },
            LoadReport {
                demand_permille: MAX_UTILISATION_PERMILLE + 1,
                ..good.clone()
            },
        ];
        for bad in cases {
            let sealed = seal_unchecked(&node, &bad, NOW, NOW + SECOND);
            assert_eq!(reason(open::<LoadReport>(&sealed, NOW)), "invalid");
        }
    }

    #[test]
    fn largest_valid_report_fits() {
        let node = node_key(2);
        let provider = provider_key(1);
        let cert = ProviderCert {
            name: "n".repeat(crate::records::cert::MAX_PROVIDER_NAME_LEN),
            ..cert_for(&provider, &node)
        };
        let cert = seal(
            provider.signing_key(),
            &cert,
            u64::MAX - ProviderCert::MAX_LIFETIME_MS,
            u64::MAX,
        )
        .unwrap();
        let report = LoadReport {
            peer_id: peer_of(&node),
            cert: Some(cert),
            seq: u64::MAX,
            req_per_s: u32::MAX,
            egress_bytes_per_s: u64::MAX,
            utilisation_permille: MAX_UTILISATION_PERMILLE,
            hit_ratio_permille: MAX_HIT_RATIO_PERMILLE,
            demand_permille: MAX_UTILISATION_PERMILLE,
        };
        let sealed = seal(
            &node,
            &report,
            u64::MAX - LoadReport::MAX_LIFETIME_MS,
            u64::MAX,
        )
        .unwrap();
        assert!(sealed.len() <= LoadReport::MAX_LEN, "{}", sealed.len());
    }
}
