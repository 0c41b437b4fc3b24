//! Checks across kinds, and property tests: no input makes `open` panic, and no change to a
//! valid envelope opens.

pub(crate) mod support;

use proptest::prelude::*;

use self::support::*;
use super::envelope::seal_raw;
use super::{
    Agreement, ArrangementEnd, ArrangementId, CapacityOffer, ContentRecord, Countersignature,
    ENVELOPE_VERSION, Kind, LoadReport, NodeRecord, ProviderCert, Record, RecordError,
    ServiceRecord, Terms, UsageReceipt, countersign, decode_body, open, open_agreement, seal,
};

/// One valid envelope of every kind, with the kind it holds.
fn samples() -> Vec<(Kind, Vec<u8>)> {
    let provider = provider_key(1);
    let node = node_key(2);
    vec![
        (
            Kind::ProviderCert,
            seal(
                provider.signing_key(),
                &cert_for(&provider, &node),
                NOW,
                NOW + DAY,
            )
            .unwrap(),
        ),
        (
            Kind::NodeRecord,
            seal(&node, &certified_node_record(&node), NOW, NOW + 60_000).unwrap(),
        ),
        (
            Kind::ContentRecord,
            seal(&node, &content_record(), NOW, NOW + 60_000).unwrap(),
        ),
        (
            Kind::CapacityOffer,
            seal(
                provider.signing_key(),
                &offer_of(&provider),
                NOW,
                NOW + 60_000,
            )
            .unwrap(),
        ),
        (
            Kind::LoadReport,
            seal(
                &node,
                &load_report(&node, Some(cert_of(&node))),
                NOW,
                NOW + 5_000,
            )
            .unwrap(),
        ),
        (
            Kind::ServiceRecord,
            seal(
                provider.signing_key(),
                &service_of(&provider),
                NOW,
                NOW + 60_000,
            )
            .unwrap(),
        ),
        (
            Kind::Arrangement,
            seal(
                provider.signing_key(),
                &terms_of(&provider, &provider_key(2)),
                NOW,
                NOW + DAY,
            )
            .unwrap(),
        ),
        (
            Kind::UsageReceipt,
            seal(
                &node,
                &receipt_of(&node, Some(cert_of(&node))),
                NOW,
                NOW + 60_000,
            )
            .unwrap(),
        ),
        (
            Kind::ArrangementEnd,
            seal(
                provider.signing_key(),
                &ArrangementEnd {
                    id: ArrangementId::from_bytes([1; 16]),
                    party: provider.id(),
                    reason: super::EndReason::LowLoad,
                },
                NOW,
                NOW + 60_000,
            )
            .unwrap(),
        ),
    ]
}

/// Decodes and checks `bytes` as the body of a record of `kind`, keeping only the outcome.
fn decode_as(kind: Kind, bytes: &[u8], signer: &[u8; 32], now: u64) -> Result<(), RecordError> {
    fn go<T: Record>(bytes: &[u8], signer: &[u8; 32], now: u64) -> Result<(), RecordError> {
        decode_body::<T>(bytes, signer, now).map(|_| ())
    }
    match kind {
        Kind::ProviderCert => go::<ProviderCert>(bytes, signer, now),
        Kind::NodeRecord => go::<NodeRecord>(bytes, signer, now),
        Kind::ContentRecord => go::<ContentRecord>(bytes, signer, now),
        Kind::CapacityOffer => go::<CapacityOffer>(bytes, signer, now),
        Kind::LoadReport => go::<LoadReport>(bytes, signer, now),
        Kind::ServiceRecord => go::<ServiceRecord>(bytes, signer, now),
        Kind::Arrangement => go::<Terms>(bytes, signer, now),
        Kind::UsageReceipt => go::<UsageReceipt>(bytes, signer, now),
        Kind::ArrangementEnd => go::<ArrangementEnd>(bytes, signer, now),
        _ => Err(RecordError::Garbage("no record type for this kind yet")),
    }
}

/// Opens `bytes` as the record type of `kind`, keeping only the outcome.
fn open_as(kind: Kind, bytes: &[u8], now: u64) -> Result<(), RecordError> {
    fn go<T: Record>(bytes: &[u8], now: u64) -> Result<(), RecordError> {
        open::<T>(bytes, now).map(|_| ())
    }
    match kind {
        Kind::ProviderCert => go::<ProviderCert>(bytes, now),
        Kind::NodeRecord => go::<NodeRecord>(bytes, now),
        Kind::ContentRecord => go::<ContentRecord>(bytes, now),
        Kind::CapacityOffer => go::<CapacityOffer>(bytes, now),
        Kind::LoadReport => go::<LoadReport>(bytes, now),
        Kind::ServiceRecord => go::<ServiceRecord>(bytes, now),
        Kind::Arrangement => go::<Terms>(bytes, now),
        Kind::UsageReceipt => go::<UsageReceipt>(bytes, now),
        Kind::ArrangementEnd => go::<ArrangementEnd>(bytes, now),
        _ => Err(RecordError::Garbage("no record type for this kind yet")),
    }
}

const OPENABLE: [Kind; 9] = [
    Kind::ProviderCert,
    Kind::NodeRecord,
    Kind::ContentRecord,
    Kind::CapacityOffer,
    Kind::LoadReport,
    Kind::ServiceRecord,
    Kind::Arrangement,
    Kind::UsageReceipt,
    Kind::ArrangementEnd,
];

#[test]
fn every_kind_opens_only_as_itself() {
    for (kind, bytes) in samples() {
        for other in OPENABLE {
            let result = open_as(other, &bytes, NOW);
            if other == kind {
                assert_eq!(result, Ok(()), "{kind:?}");
            } else {
                // A small kind's size limit may reject a big envelope before its kind is read.
                let r = reason(result);
                assert!(
                    r == "wrong_kind" || r == "too_large",
                    "{kind:?} as {other:?}: {r}"
                );
            }
        }
    }
}

#[test]
fn a_signature_is_bound_to_its_kind() {
    // Same signer, same body bytes, different kind byte: the signature does not carry over.
    let node = node_key(2);
    let content = seal(&node, &content_record(), NOW, NOW + 60_000).unwrap();
    let mut relabelled = content.clone();
    relabelled[1] = Kind::NodeRecord.code();
    assert_eq!(
        reason(open::<NodeRecord>(&relabelled, NOW)),
        "bad_signature"
    );
}

#[test]
fn signatures_are_domain_separated() {
    // A signature over the bare envelope bytes (no domain prefix), as another protocol using
    // the same key might make, is not a record signature.
    use ed25519_dalek::Signer;
    let node = node_key(2);
    let sealed = seal(&node, &content_record(), NOW, NOW + 60_000).unwrap();
    let signed = &sealed[..sealed.len() - 64];
    let mut bare = signed.to_vec();
    bare.extend_from_slice(&node.sign(signed).to_bytes());
    assert_eq!(reason(open::<ContentRecord>(&bare, NOW)), "bad_signature");
}

fn arbitrary_kind_code() -> impl Strategy<Value = u8> {
    prop_oneof![(1u8..=9), any::<u8>()]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn opening_arbitrary_bytes_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        now in any::<u64>(),
    ) {
        for kind in OPENABLE {
            prop_assert!(open_as(kind, &bytes, now).is_err());
        }
    }

    /// The body decoders and record checks, which `open` only reaches behind a valid
    /// signature, on arbitrary bytes; the signer is sometimes the one a node record needs.
    #[test]
    fn decoding_arbitrary_bodies_never_panics(
        mut bytes in proptest::collection::vec(any::<u8>(), 0..1024),
        prefix_with_own_peer_id in any::<bool>(),
        now in prop_oneof![Just(NOW), any::<u64>()],
    ) {
        let node = node_key(2);
        let signer = node.verifying_key().to_bytes();
        if prefix_with_own_peer_id {
            let peer = peer_of(&node);
            let mut prefixed = vec![peer.len() as u8];
            prefixed.extend_from_slice(&peer);
            prefixed.append(&mut bytes);
            bytes = prefixed;
        }
        for kind in OPENABLE {
            let _ = decode_as(kind, &bytes, &signer, now);
        }
    }

    /// Arbitrary bytes rarely get past the decoder; these do, and must still fail.
    #[test]
    fn well_formed_envelopes_with_forged_signatures_never_open(
        version in prop_oneof![Just(ENVELOPE_VERSION), any::<u8>()],
        kind in arbitrary_kind_code(),
        signer in any::<[u8; 32]>(),
        issued_at in prop_oneof![Just(NOW), any::<u64>()],
        lifetime in 0u64..100_000,
        body in proptest::collection::vec(any::<u8>(), 0..600),
        signature in proptest::collection::vec(any::<u8>(), 64),
    ) {
        let node = node_key(2);
        let mut bytes = seal_raw(
            &node, version, kind, issued_at, issued_at.saturating_add(lifetime), &body,
        );
        bytes[2..34].copy_from_slice(&signer);
        let n = bytes.len();
        bytes[n - 64..].copy_from_slice(&signature);
        for open_kind in OPENABLE {
            prop_assert!(open_as(open_kind, &bytes, NOW).is_err());
        }
    }

    /// Any change to a valid envelope (flipped bits, cut, inserted or appended bytes) is
    /// rejected; only the unchanged bytes open.
    #[test]
    fn mutated_envelopes_never_open(
        sample in 0usize..OPENABLE.len(),
        flips in proptest::collection::vec((any::<usize>(), 1u8..=255), 0..4),
        cut in proptest::option::of(any::<usize>()),
        insert in proptest::option::of((any::<usize>(), any::<u8>())),
    ) {
        let (kind, original) = samples().swap_remove(sample);
        let mut bytes = original.clone();
        for (at, mask) in flips {
            let i = at % bytes.len();
            bytes[i] ^= mask;
        }
        if let Some(at) = cut {
            bytes.truncate(at % (bytes.len() + 1));
        }
        if let Some((at, byte)) = insert {
            bytes.insert(at % (bytes.len() + 1), byte);
        }
        let result = open_as(kind, &bytes, NOW);
        if bytes == original {
            prop_assert_eq!(result, Ok(()));
        } else {
            prop_assert!(result.is_err(), "mutated {:?} envelope opened", kind);
        }
    }

    /// Agreements with arbitrary terms bytes and countersignatures, and valid terms with an
    /// arbitrary countersignature, never open.
    #[test]
    fn arbitrary_agreements_never_open(
        sealed_terms in proptest::collection::vec(any::<u8>(), 0..1024),
        signature in proptest::collection::vec(any::<u8>(), 64),
        now in prop_oneof![Just(NOW), any::<u64>()],
    ) {
        let mut countersignature = Countersignature([0; 64]);
        countersignature.0.copy_from_slice(&signature);
        let agreement = Agreement { sealed_terms, countersignature };
        prop_assert!(open_agreement(&agreement, now).is_err());
        let primary = provider_key(1);
        let sealed_terms =
            seal(primary.signing_key(), &terms_of(&primary, &provider_key(2)), NOW, NOW + DAY)
                .unwrap();
        let valid = countersign(provider_key(2).signing_key(), &sealed_terms);
        let agreement = Agreement { sealed_terms, countersignature };
        prop_assert_eq!(open_agreement(&agreement, NOW).is_ok(), countersignature == valid);
    }

    #[test]
    fn parsing_arbitrary_arrangement_ids_never_panics(s in "\\PC{0,40}") {
        if let Ok(id) = s.parse::<ArrangementId>() {
            prop_assert_eq!(id.to_string(), s.to_ascii_lowercase());
        }
    }

    #[test]
    fn any_valid_content_record_round_trips(
        key in any::<[u8; 32]>(),
        body_hash in any::<[u8; 32]>(),
        body_len in any::<u64>(),
        etag in proptest::option::of("[ -~]{0,256}"),
        last_modified in proptest::option::of("[ -~]{0,64}"),
        issued_at in 0u64..u64::MAX / 2,
        lifetime in 1u64..=ContentRecord::MAX_LIFETIME_MS,
    ) {
        let record = ContentRecord {
            key: crate::ContentKey::from_bytes(key),
            body_hash,
            body_len,
            etag,
            last_modified,
        };
        let node = node_key(2);
        let sealed = seal(&node, &record, issued_at, issued_at + lifetime).unwrap();
        let opened = open::<ContentRecord>(&sealed, issued_at).unwrap();
        prop_assert_eq!(opened.record(), &record);
        prop_assert_eq!(opened.issued_at(), issued_at);
        prop_assert_eq!(opened.expires_at(), issued_at + lifetime);
    }
}
