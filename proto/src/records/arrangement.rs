//! Peering arrangements: the terms a primary provider proposes to a peer, and the agreement
//! both have signed.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::identity::{KeyError, parse_hex, write_hex};
use super::node::MAX_REGION_LEN;
use super::offer::MAX_OFFER_REGIONS;
use super::service::check_hostname;
use super::{HOUR_MS, Kind, Opened, ProviderId, Record, RecordError, SIGNATURE_LEN, open, text};

/// Hostnames one arrangement covers; a primary with more makes several arrangements.
pub const MAX_ARRANGEMENT_SERVICES: usize = 64;
/// Regions one arrangement names, as many as an offer may cover.
pub const MAX_ARRANGEMENT_REGIONS: usize = MAX_OFFER_REGIONS;
/// Longest `end_ms - start_ms`: a month, so prices and capacity are renegotiated at least
/// that often.
pub const MAX_ARRANGEMENT_DURATION_MS: u64 = 30 * 24 * HOUR_MS;
/// A share of the primary's requests, and availability, are in permille.
pub const MAX_PERMILLE: u16 = 1000;
/// Prefix of what a peer signs to accept terms: the same key signs records, and the prefix
/// keeps a countersignature from ever passing as one, nor the other way round.
pub const COUNTERSIGN_DOMAIN: &[u8] = b"reef arrangement countersign v1\0";

/// Names one arrangement in both providers' ledgers; random, so that neither side can pick an
/// id that collides with the other's arrangements.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ArrangementId([u8; 16]);

impl ArrangementId {
    /// A new id from the operating system's randomness.
    pub fn random() -> Result<Self, KeyError> {
        Ok(Self(super::identity::random()?))
    }

    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for ArrangementId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for ArrangementId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ArrangementId({self})")
    }
}

/// Error for an arrangement id given as text (admin API, logs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an arrangement id is 32 hex digits")]
pub struct BadArrangementId;

impl FromStr for ArrangementId {
    type Err = BadArrangementId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex(s).map(Self).ok_or(BadArrangementId)
    }
}

// Like ProviderId: hex in human-readable formats, 16 raw bytes in postcard.
impl Serialize for ArrangementId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            self.0.serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for ArrangementId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let text = String::deserialize(deserializer)?;
            text.parse().map_err(serde::de::Error::custom)
        } else {
            <[u8; 16]>::deserialize(deserializer).map(Self)
        }
    }
}

/// What the peer promises about the traffic it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sla {
    /// 95th percentile of the peer's response times, in milliseconds.
    pub max_p95_ms: u32,
    pub min_availability_permille: u16,
}

/// An arrangement as the primary proposes it: the peer serves `services` in `regions` for the
/// primary, up to the given rates and share of the primary's requests, at a price, from
/// `start_ms` until (excluding) `end_ms`. Sealed by the primary's provider key, with the
/// envelope expiring at `end_ms`; never stored in the DHT, it travels over the peering
/// protocol and, countersigned, as an [`Agreement`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terms {
    pub id: ArrangementId,
    pub primary: ProviderId,
    pub peer: ProviderId,
    /// Hostnames, each with a [`ServiceRecord`](super::ServiceRecord) of the primary.
    pub services: Vec<String>,
    /// Where the peer serves; empty means wherever it has nodes.
    pub regions: Vec<String>,
    pub req_per_s: u32,
    pub mbit_per_s: u32,
    /// Share of the primary's requests it may send to the peer, 1..=1000.
    pub share_permille: u16,
    pub price_micros_per_gb: u64,
    /// Unix milliseconds.
    pub start_ms: u64,
    /// Unix milliseconds, after `start_ms` and at most [`MAX_ARRANGEMENT_DURATION_MS`] later.
    pub end_ms: u64,
    pub sla: Sla,
}

impl Terms {
    /// The checks of the fields alone, without the signer: what [`open`] checks besides the
    /// signer, and what an unsigned counter-proposal must pass.
    pub fn check(&self) -> Result<(), RecordError> {
        if self.primary == self.peer {
            return Err(RecordError::invalid("peer", "is the primary"));
        }
        if self.services.is_empty() {
            return Err(RecordError::invalid("services", "empty"));
        }
        text::count("services", &self.services, MAX_ARRANGEMENT_SERVICES)?;
        for service in &self.services {
            check_hostname("services", service)?;
        }
        text::count("regions", &self.regions, MAX_ARRANGEMENT_REGIONS)?;
        for region in &self.regions {
            text::label("regions", region, MAX_REGION_LEN)?;
        }
        if !(1..=MAX_PERMILLE).contains(&self.share_permille) {
            return Err(RecordError::invalid("share_permille", "not 1 to 1000"));
        }
        if self.end_ms <= self.start_ms {
            return Err(RecordError::invalid("end_ms", "not after start_ms"));
        }
        if self.end_ms - self.start_ms > MAX_ARRANGEMENT_DURATION_MS {
            return Err(RecordError::invalid("end_ms", "arrangement too long"));
        }
        if self.sla.min_availability_permille > MAX_PERMILLE {
            return Err(RecordError::invalid(
                "sla.min_availability_permille",
                "over 1000",
            ));
        }
        Ok(())
    }
}

impl Record for Terms {
    const KIND: Kind = Kind::Arrangement;
    /// The largest valid terms are under 18 KiB (see the tests), almost all of it hostnames;
    /// well inside a peering message.
    const MAX_LEN: usize = 20 * 1024;
    /// A month and a day: the longest arrangement, proposed up to a day before it starts.
    const MAX_LIFETIME_MS: u64 = MAX_ARRANGEMENT_DURATION_MS + 24 * HOUR_MS;

    fn validate(&self, signer: &[u8; 32], _now_ms: u64) -> Result<(), RecordError> {
        if signer != self.primary.as_bytes() {
            return Err(RecordError::WrongSigner(
                "terms are not signed by their primary",
            ));
        }
        self.check()
    }

    fn dht_key(&self) -> Option<Vec<u8>> {
        // Request-response and gossip only.
        None
    }
}

/// The peer's ed25519 signature accepting sealed terms.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Countersignature(pub [u8; SIGNATURE_LEN]);

impl fmt::Debug for Countersignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Countersignature(")?;
        write_hex(f, &self.0[..8])?;
        f.write_str("…)")
    }
}

// serde implements arrays up to 32 only; two halves are 64 raw bytes in postcard.
impl Serialize for Countersignature {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut halves = ([0u8; 32], [0u8; 32]);
        halves.0.copy_from_slice(&self.0[..32]);
        halves.1.copy_from_slice(&self.0[32..]);
        halves.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Countersignature {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (a, b) = <([u8; 32], [u8; 32])>::deserialize(deserializer)?;
        let mut out = [0u8; SIGNATURE_LEN];
        out[..32].copy_from_slice(&a);
        out[32..].copy_from_slice(&b);
        Ok(Self(out))
    }
}

/// What a countersignature covers: the domain, then blake3 of the sealed terms exactly as
/// received, so it binds the primary's signature and envelope times along with the terms.
fn countersigned_message(sealed_terms: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(COUNTERSIGN_DOMAIN.len() + 32);
    out.extend_from_slice(COUNTERSIGN_DOMAIN);
    out.extend_from_slice(blake3::hash(sealed_terms).as_bytes());
    out
}

/// The peer's acceptance of `sealed_terms`, signed with its provider key. It signs whatever it
/// is given: [`open`] the terms and decide on them first.
pub fn countersign(peer_key: &SigningKey, sealed_terms: &[u8]) -> Countersignature {
    Countersignature(
        peer_key
            .sign(&countersigned_message(sealed_terms))
            .to_bytes(),
    )
}

/// Terms signed by the primary and countersigned by the peer: the arrangement both ledgers
/// record. Only [`open_agreement`] says whether it is valid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agreement {
    pub sealed_terms: Vec<u8>,
    pub countersignature: Countersignature,
}

/// An agreement whose terms opened and whose countersignature is the peer's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedAgreement {
    terms: Opened<Terms>,
    agreement: Agreement,
}

impl OpenedAgreement {
    pub fn terms(&self) -> &Terms {
        self.terms.record()
    }

    /// The terms' envelope: signer (the primary), issued and expiry times.
    pub fn opened_terms(&self) -> &Opened<Terms> {
        &self.terms
    }

    pub fn sealed_terms(&self) -> &[u8] {
        &self.agreement.sealed_terms
    }

    pub fn id(&self) -> ArrangementId {
        self.terms().id
    }

    pub fn agreement(&self) -> &Agreement {
        &self.agreement
    }
}

/// Opens the terms at `now_ms` and checks the countersignature is the peer's (`verify_strict`;
/// a bad one is [`RecordError::BadSignature`]).
///
/// `now_ms` is the instant validity is judged at, as for [`open`]: the clock for an agreement
/// arriving now. A ledger settling an arrangement that has since ended passes the time it
/// first accepted the agreement at (which it recorded then): the signatures do not depend on
/// the clock, and an agreement that was never valid at that time still fails.
pub fn open_agreement(agreement: &Agreement, now_ms: u64) -> Result<OpenedAgreement, RecordError> {
    let terms = open::<Terms>(&agreement.sealed_terms, now_ms)?;
    let peer = VerifyingKey::from_bytes(terms.record().peer.as_bytes())
        .map_err(|_| RecordError::BadSignature)?;
    peer.verify_strict(
        &countersigned_message(&agreement.sealed_terms),
        &Signature::from_bytes(&agreement.countersignature.0),
    )
    .map_err(|_| RecordError::BadSignature)?;
    Ok(OpenedAgreement {
        terms,
        agreement: agreement.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::tests::support::*;
    use crate::records::{key_belongs, seal};

    fn sealed(terms: &Terms) -> Vec<u8> {
        seal(provider_key(1).signing_key(), terms, NOW, terms.end_ms).unwrap()
    }

    fn agreement_of(terms: &Terms) -> Agreement {
        let sealed_terms = sealed(terms);
        Agreement {
            countersignature: countersign(provider_key(2).signing_key(), &sealed_terms),
            sealed_terms,
        }
    }

    #[test]
    fn id_text_round_trips() {
        let id = ArrangementId::from_bytes([0xab; 16]);
        let text = id.to_string();
        assert_eq!(text, "ab".repeat(16));
        assert_eq!(text.parse::<ArrangementId>(), Ok(id));
        assert_eq!(text.to_uppercase().parse::<ArrangementId>(), Ok(id));
        assert_eq!(format!("{id:?}"), format!("ArrangementId({text})"));
        for bad in ["", "ab", &"ab".repeat(17), &"g".repeat(32), &"é".repeat(16)] {
            assert_eq!(bad.parse::<ArrangementId>(), Err(BadArrangementId), "{bad}");
        }
        assert_ne!(
            ArrangementId::random().unwrap(),
            ArrangementId::random().unwrap()
        );
    }

    #[test]
    fn id_serde_is_hex_for_humans_and_raw_for_postcard() {
        let id = ArrangementId::from_bytes([3; 16]);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<ArrangementId>(&json).unwrap(), id);
        assert_eq!(postcard::to_stdvec(&id).unwrap(), id.as_bytes());
        assert!(serde_json::from_str::<ArrangementId>("\"ab\"").is_err());
    }

    #[test]
    fn countersignature_is_64_raw_bytes() {
        let sig = Countersignature([7; SIGNATURE_LEN]);
        let wire = postcard::to_stdvec(&sig).unwrap();
        assert_eq!(wire, [7; SIGNATURE_LEN]);
        assert_eq!(
            postcard::from_bytes::<Countersignature>(&wire).unwrap(),
            sig
        );
        assert!(postcard::from_bytes::<Countersignature>(&wire[..63]).is_err());
    }

    #[test]
    fn terms_round_trip() {
        let terms = terms_of(&provider_key(1), &provider_key(2));
        let opened = open::<Terms>(&sealed(&terms), NOW).unwrap();
        assert_eq!(opened.record(), &terms);
        assert!(!key_belongs(b"/reef/v1/arrangement/x", &opened));
        assert_eq!(terms.dht_key(), None);
    }

    #[test]
    fn terms_reject_the_common_attacks() {
        rejects_tampering(
            provider_key(1).signing_key(),
            &terms_of(&provider_key(1), &provider_key(2)),
        );
    }

    #[test]
    fn only_the_primary_can_sign_terms() {
        let terms = terms_of(&provider_key(1), &provider_key(2));
        // Not even the peer.
        let peer = provider_key(2);
        let forged = seal_unchecked(peer.signing_key(), &terms, NOW, NOW + HOUR_MS);
        assert_eq!(reason(open::<Terms>(&forged, NOW)), "wrong_signer");
        assert_eq!(
            reason(seal(peer.signing_key(), &terms, NOW, NOW + HOUR_MS)),
            "wrong_signer"
        );
    }

    #[test]
    fn terms_are_bounded() {
        let primary = provider_key(1);
        let good = terms_of(&primary, &provider_key(2));
        let longest = Terms {
            services: vec!["a.example".into(); MAX_ARRANGEMENT_SERVICES],
            regions: vec!["eu".into(); MAX_ARRANGEMENT_REGIONS],
            share_permille: MAX_PERMILLE,
            end_ms: good.start_ms + MAX_ARRANGEMENT_DURATION_MS,
            sla: Sla {
                max_p95_ms: 0,
                min_availability_permille: MAX_PERMILLE,
            },
            ..good.clone()
        };
        assert_eq!(longest.check(), Ok(()));
        let no_regions = Terms {
            regions: vec![],
            ..good.clone()
        };
        assert_eq!(no_regions.check(), Ok(()));
        let cases = [
            Terms {
                peer: primary.id(),
                ..good.clone()
            },
            Terms {
                services: vec![],
                ..good.clone()
            },
            Terms {
                services: vec!["a.example".into(); MAX_ARRANGEMENT_SERVICES + 1],
                ..good.clone()
            },
            Terms {
                services: vec!["A.example".into()],
                ..good.clone()
            },
            Terms {
                regions: vec!["eu".into(); MAX_ARRANGEMENT_REGIONS + 1],
                ..good.clone()
            },
            Terms {
                regions: vec![String::new()],
                ..good.clone()
            },
            Terms {
                regions: vec!["r".repeat(MAX_REGION_LEN + 1)],
                ..good.clone()
            },
            Terms {
                share_permille: 0,
                ..good.clone()
            },
            Terms {
                share_permille: MAX_PERMILLE + 1,
                ..good.clone()
            },
            Terms {
                end_ms: good.start_ms,
                ..good.clone()
            },
            Terms {
                end_ms: good.start_ms - 1,
                ..good.clone()
            },
            Terms {
                end_ms: good.start_ms + MAX_ARRANGEMENT_DURATION_MS + 1,
                ..good.clone()
            },
            Terms {
                sla: Sla {
                    max_p95_ms: 100,
                    min_availability_permille: MAX_PERMILLE + 1,
                },
                ..good.clone()
            },
        ];
        for bad in cases {
            assert_eq!(bad.check().map_err(|e| e.reason()), Err("invalid"));
            let sealed = seal_unchecked(primary.signing_key(), &bad, NOW, NOW + HOUR_MS);
            assert_eq!(reason(open::<Terms>(&sealed, NOW)), "invalid", "{bad:?}");
            assert_eq!(
                reason(seal(primary.signing_key(), &bad, NOW, NOW + HOUR_MS)),
                "invalid"
            );
        }
    }

    #[test]
    fn largest_valid_terms_fit() {
        let primary = provider_key(1);
        let label = "a".repeat(63);
        let hostname = [&label[..], &label, &label, &"b".repeat(61)].join(".");
        let terms = Terms {
            id: ArrangementId::from_bytes([0xff; 16]),
            services: vec![hostname; MAX_ARRANGEMENT_SERVICES],
            regions: vec!["r".repeat(MAX_REGION_LEN); MAX_ARRANGEMENT_REGIONS],
            req_per_s: u32::MAX,
            mbit_per_s: u32::MAX,
            share_permille: MAX_PERMILLE,
            price_micros_per_gb: u64::MAX,
            start_ms: u64::MAX - MAX_ARRANGEMENT_DURATION_MS,
            end_ms: u64::MAX,
            sla: Sla {
                max_p95_ms: u32::MAX,
                min_availability_permille: MAX_PERMILLE,
            },
            ..terms_of(&primary, &provider_key(2))
        };
        let sealed = seal(
            primary.signing_key(),
            &terms,
            u64::MAX - Terms::MAX_LIFETIME_MS,
            u64::MAX,
        )
        .unwrap();
        assert!(sealed.len() <= Terms::MAX_LEN, "{}", sealed.len());
    }

    #[test]
    fn agreement_opens_with_the_peers_countersignature() {
        let terms = terms_of(&provider_key(1), &provider_key(2));
        let agreement = agreement_of(&terms);
        let opened = open_agreement(&agreement, NOW).unwrap();
        assert_eq!(opened.terms(), &terms);
        assert_eq!(opened.id(), terms.id);
        assert_eq!(opened.sealed_terms(), agreement.sealed_terms);
        assert_eq!(opened.agreement(), &agreement);
        assert_eq!(opened.opened_terms().expires_at(), terms.end_ms);
        let wire = postcard::to_stdvec(&agreement).unwrap();
        assert_eq!(postcard::from_bytes::<Agreement>(&wire).unwrap(), agreement);
    }

    #[test]
    fn agreement_rejects_other_countersignatures() {
        let terms = terms_of(&provider_key(1), &provider_key(2));
        let good = agreement_of(&terms);
        let with = |countersignature| Agreement {
            countersignature,
            ..good.clone()
        };
        let mut flipped = good.countersignature;
        flipped.0[0] ^= 1;
        let other_terms = sealed(&Terms {
            req_per_s: 1,
            ..terms.clone()
        });
        let cases = [
            // Someone other than the peer: the primary itself, a third provider.
            with(countersign(
                provider_key(1).signing_key(),
                &good.sealed_terms,
            )),
            with(countersign(
                provider_key(3).signing_key(),
                &good.sealed_terms,
            )),
            // The peer's, but over other terms.
            with(countersign(provider_key(2).signing_key(), &other_terms)),
            with(flipped),
            with(Countersignature([0; SIGNATURE_LEN])),
            // A record signature by the peer over the same bytes is not a countersignature.
            with(Countersignature(
                provider_key(2)
                    .signing_key()
                    .sign(&good.sealed_terms)
                    .to_bytes(),
            )),
        ];
        for bad in cases {
            assert_eq!(reason(open_agreement(&bad, NOW)), "bad_signature");
        }
        // Swapped-in terms: the countersignature does not carry over.
        let swapped = Agreement {
            sealed_terms: other_terms,
            ..good.clone()
        };
        assert_eq!(reason(open_agreement(&swapped, NOW)), "bad_signature");
        // The terms' own rejections come through.
        let mut tampered = good.clone();
        tampered.sealed_terms[40] ^= 1;
        assert_eq!(reason(open_agreement(&tampered, NOW)), "bad_signature");
        let garbage = Agreement {
            sealed_terms: vec![1, 2, 3],
            ..good
        };
        assert_eq!(reason(open_agreement(&garbage, NOW)), "garbage");
    }

    #[test]
    fn an_ended_agreement_opens_at_a_time_it_was_valid() {
        let terms = terms_of(&provider_key(1), &provider_key(2));
        let agreement = agreement_of(&terms);
        assert_eq!(reason(open_agreement(&agreement, terms.end_ms)), "expired");
        assert!(open_agreement(&agreement, NOW).is_ok());
        assert!(open_agreement(&agreement, terms.end_ms - 1).is_ok());
    }
}
