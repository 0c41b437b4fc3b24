//! The end of an arrangement, as one of its parties signs it for both providers' nodes.

use serde::{Deserialize, Serialize};

use super::arrangement::ArrangementId;
use super::{HOUR_MS, Kind, ProviderId, Record, RecordError};

/// Why an arrangement ends before its `end_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum EndReason {
    /// The primary no longer needs the capacity.
    LowLoad,
    Expired,
    Operator,
    /// The peer missed the SLA the agreement names (latency or availability).
    SlaBreach,
    PeerGone,
    /// A new arrangement takes its place.
    Replaced,
    /// The primary settled it before its end notice reached us.
    Settled,
}

impl EndReason {
    /// How logs and the admin API name it.
    pub const fn label(self) -> &'static str {
        match self {
            EndReason::LowLoad => "low_load",
            EndReason::Expired => "expired",
            EndReason::Operator => "operator",
            EndReason::SlaBreach => "sla_breach",
            EndReason::PeerGone => "peer_gone",
            EndReason::Replaced => "replaced",
            EndReason::Settled => "settled",
        }
    }
}

/// A party's word that arrangement `id` is over, sealed with that party's provider key and
/// gossiped to both providers' nodes. Nodes of other providers, who do not know the
/// arrangement, only relay it; a node that knows it applies it only if `party` is one of
/// the two parties.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrangementEnd {
    pub id: ArrangementId,
    /// The provider that ends it; must be the signer.
    pub party: ProviderId,
    pub reason: EndReason,
}

impl Record for ArrangementEnd {
    const KIND: Kind = Kind::ArrangementEnd;
    /// A sealed end is under 200 bytes: an id, a key, a reason and the envelope.
    const MAX_LEN: usize = 256;
    /// A day: long enough for a node that was briefly away to hear it relayed, short enough
    /// that an old notice cannot be replayed for long.
    const MAX_LIFETIME_MS: u64 = 24 * HOUR_MS;

    fn validate(&self, signer: &[u8; 32], _now_ms: u64) -> Result<(), RecordError> {
        if signer != self.party.as_bytes() {
            return Err(RecordError::WrongSigner(
                "an arrangement's end is not signed by the party it names",
            ));
        }
        Ok(())
    }

    fn dht_key(&self) -> Option<Vec<u8>> {
        // Gossip only.
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::tests::support::*;
    use crate::records::{open, seal};

    fn end_of(party: &crate::records::ProviderKey) -> ArrangementEnd {
        ArrangementEnd {
            id: ArrangementId::from_bytes([0x5a; 16]),
            party: party.id(),
            reason: EndReason::SlaBreach,
        }
    }

    #[test]
    fn round_trips_and_fits() {
        let party = provider_key(1);
        let end = end_of(&party);
        let sealed = seal(party.signing_key(), &end, u64::MAX - HOUR_MS, u64::MAX).unwrap();
        assert!(sealed.len() <= ArrangementEnd::MAX_LEN, "{}", sealed.len());
        let sealed = seal(party.signing_key(), &end, NOW, NOW + HOUR_MS).unwrap();
        assert_eq!(open::<ArrangementEnd>(&sealed, NOW).unwrap().record(), &end);
    }

    #[test]
    fn only_the_named_party_signs_it() {
        let party = provider_key(1);
        let forged = seal_unchecked(
            provider_key(2).signing_key(),
            &end_of(&party),
            NOW,
            NOW + HOUR_MS,
        );
        assert_eq!(reason(open::<ArrangementEnd>(&forged, NOW)), "wrong_signer");
        rejects_tampering(party.signing_key(), &end_of(&party));
    }

    #[test]
    fn labels_are_distinct() {
        let all = [
            EndReason::LowLoad,
            EndReason::Expired,
            EndReason::Operator,
            EndReason::SlaBreach,
            EndReason::PeerGone,
            EndReason::Replaced,
            EndReason::Settled,
        ];
        let labels: std::collections::BTreeSet<_> = all.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), all.len());
    }
}
