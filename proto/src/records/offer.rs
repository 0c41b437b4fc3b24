//! A provider's spare capacity, published for peering.

use serde::{Deserialize, Serialize};

use super::cert::MAX_PROVIDER_NAME_LEN;
use super::keys::offer_key;
use super::node::MAX_REGION_LEN;
use super::{HOUR_MS, Kind, ProviderId, Record, RecordError, text};

/// Regions one offer may cover; a provider with more publishes per-continent offers.
pub const MAX_OFFER_REGIONS: usize = 16;

/// Spare capacity a provider's agent offers to other providers, stored under [`offer_key`] and
/// announced under the [`region_key`](super::region_key) of each region. Signed by the
/// provider's key; valid until the envelope's `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapacityOffer {
    pub provider: ProviderId,
    /// The provider's name, a label.
    pub name: String,
    pub req_per_s: u32,
    pub mbit_per_s: u32,
    pub regions: Vec<String>,
    pub price_micros_per_gb: u64,
    /// Shortest arrangement the provider accepts, in seconds.
    pub min_duration_s: u32,
    /// Longest arrangement the provider accepts, in seconds.
    pub max_duration_s: u32,
}

impl Record for CapacityOffer {
    const KIND: Kind = Kind::CapacityOffer;
    /// The largest valid offer is under 800 bytes (see the tests).
    const MAX_LEN: usize = 1024;
    /// A day: spare capacity changes; agents republish often and an offer that outlives its
    /// agent by more than a day only wastes negotiations.
    const MAX_LIFETIME_MS: u64 = 24 * HOUR_MS;

    fn validate(&self, signer: &[u8; 32], _now_ms: u64) -> Result<(), RecordError> {
        if signer != self.provider.as_bytes() {
            return Err(RecordError::WrongSigner(
                "offer is not signed by its provider",
            ));
        }
        text::label("name", &self.name, MAX_PROVIDER_NAME_LEN)?;
        if self.regions.is_empty() {
            return Err(RecordError::invalid("regions", "empty"));
        }
        text::count("regions", &self.regions, MAX_OFFER_REGIONS)?;
        for region in &self.regions {
            text::label("regions", region, MAX_REGION_LEN)?;
        }
        if self.max_duration_s == 0 {
            return Err(RecordError::invalid("max_duration_s", "zero"));
        }
        if self.min_duration_s > self.max_duration_s {
            return Err(RecordError::invalid(
                "min_duration_s",
                "longer than max_duration_s",
            ));
        }
        Ok(())
    }

    fn dht_key(&self) -> Option<Vec<u8>> {
        Some(offer_key(&self.provider))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::tests::support::*;
    use crate::records::{key_belongs, open, open_under_key, seal};

    #[test]
    fn round_trips() {
        let provider = provider_key(1);
        let offer = offer_of(&provider);
        let sealed = seal(provider.signing_key(), &offer, NOW, NOW + HOUR_MS).unwrap();
        let opened = open::<CapacityOffer>(&sealed, NOW).unwrap();
        assert_eq!(opened.record(), &offer);
        assert_eq!(opened.expires_at(), NOW + HOUR_MS, "valid_until");
        assert!(key_belongs(&offer_key(&provider.id()), &opened));
    }

    #[test]
    fn rejects_the_common_attacks() {
        let provider = provider_key(1);
        rejects_tampering(provider.signing_key(), &offer_of(&provider));
    }

    #[test]
    fn only_the_provider_can_sign_its_offer() {
        let provider = provider_key(1);
        let offer = offer_of(&provider);
        let intruder = provider_key(5);
        let forged = seal_unchecked(intruder.signing_key(), &offer, NOW, NOW + HOUR_MS);
        assert_eq!(reason(open::<CapacityOffer>(&forged, NOW)), "wrong_signer");
        // The intruder's own, valid offer does not belong under the victim's key.
        let own = seal(
            intruder.signing_key(),
            &offer_of(&intruder),
            NOW,
            NOW + HOUR_MS,
        )
        .unwrap();
        assert_eq!(
            reason(open_under_key::<CapacityOffer>(
                &offer_key(&provider.id()),
                &own,
                NOW
            )),
            "wrong_signer"
        );
    }

    #[test]
    fn fields_are_bounded() {
        let provider = provider_key(1);
        let good = offer_of(&provider);
        let cases = [
            CapacityOffer {
                regions: vec![],
                ..good.clone()
            },
            CapacityOffer {
                regions: vec!["eu".into(); MAX_OFFER_REGIONS + 1],
                ..good.clone()
            },
            CapacityOffer {
                regions: vec!["r".repeat(MAX_REGION_LEN + 1)],
                ..good.clone()
            },
            CapacityOffer {
                regions: vec![String::new()],
                ..good.clone()
            },
            CapacityOffer {
                name: String::new(),
                ..good.clone()
            },
            CapacityOffer {
                min_duration_s: 600,
                max_duration_s: 599,
                ..good.clone()
            },
            CapacityOffer {
                min_duration_s: 0,
                max_duration_s: 0,
                ..good.clone()
            },
        ];
        for bad in cases {
            let sealed = seal_unchecked(provider.signing_key(), &bad, NOW, NOW + HOUR_MS);
            assert_eq!(
                reason(open::<CapacityOffer>(&sealed, NOW)),
                "invalid",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn largest_valid_offer_fits() {
        let provider = provider_key(1);
        let offer = CapacityOffer {
            provider: provider.id(),
            name: "n".repeat(MAX_PROVIDER_NAME_LEN),
            req_per_s: u32::MAX,
            mbit_per_s: u32::MAX,
            regions: vec!["r".repeat(MAX_REGION_LEN); MAX_OFFER_REGIONS],
            price_micros_per_gb: u64::MAX,
            min_duration_s: u32::MAX,
            max_duration_s: u32::MAX,
        };
        let sealed = seal(
            provider.signing_key(),
            &offer,
            u64::MAX - CapacityOffer::MAX_LIFETIME_MS,
            u64::MAX,
        )
        .unwrap();
        assert!(sealed.len() <= CapacityOffer::MAX_LEN, "{}", sealed.len());
    }
}
