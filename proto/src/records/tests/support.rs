//! Fixed keys, sample records and the rejection checks every kind must pass.

use std::fmt::Debug;

use crate::ContentKey;
use crate::records::envelope::seal_raw;
use crate::records::{
    Access, ArrangementId, Capacity, CapacityOffer, ContentRecord, ENVELOPE_OVERHEAD,
    ENVELOPE_VERSION, HOUR_MS, LoadReport, MAX_CLOCK_SKEW_MS, NodeRecord, ProviderCert,
    ProviderKey, Record, RecordError, ServiceRecord, SigningKey, Sla, Terms, UsageReceipt,
    is_newer, open, peer_id_bytes, seal,
};

/// A fixed "now" (2027-01-15), so tests do not depend on the clock.
pub(crate) const NOW: u64 = 1_800_000_000_000;
pub(crate) const DAY: u64 = 24 * HOUR_MS;

/// Deterministic keys: provider keys and node keys never coincide.
pub(crate) fn provider_key(n: u8) -> ProviderKey {
    ProviderKey::from_bytes(&[n; 32])
}

pub(crate) fn node_key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n.wrapping_add(100); 32])
}

pub(crate) fn peer_of(node: &SigningKey) -> Vec<u8> {
    peer_id_bytes(&node.verifying_key().to_bytes())
}

pub(crate) fn cert_for(provider: &ProviderKey, node: &SigningKey) -> ProviderCert {
    ProviderCert {
        provider: provider.id(),
        name: "acme".into(),
        node: peer_of(node),
    }
}

/// A certificate for `node` from provider 1, valid for a day from [`NOW`].
pub(crate) fn cert_of(node: &SigningKey) -> Vec<u8> {
    let provider = provider_key(1);
    seal(
        provider.signing_key(),
        &cert_for(&provider, node),
        NOW,
        NOW + DAY,
    )
    .unwrap()
}

pub(crate) fn node_record(node: &SigningKey, cert: Option<Vec<u8>>) -> NodeRecord {
    NodeRecord {
        peer_id: peer_of(node),
        http: "198.51.100.7:8080".into(),
        region: "eu".into(),
        listen_addrs: vec![
            "/ip4/198.51.100.7/tcp/4001".into(),
            "/ip4/198.51.100.7/udp/4001/quic-v1".into(),
        ],
        capacity: Capacity {
            req_per_s: 5_000,
            mbit_per_s: 1_000,
        },
        cert,
    }
}

pub(crate) fn certified_node_record(node: &SigningKey) -> NodeRecord {
    node_record(node, Some(cert_of(node)))
}

pub(crate) fn content_record() -> ContentRecord {
    ContentRecord {
        key: ContentKey::from_bytes([0xc0; 32]),
        body_hash: *blake3::hash(b"hello").as_bytes(),
        body_len: 5,
        etag: Some("\"v1\"".into()),
        last_modified: Some("Sun, 06 Nov 1994 08:49:37 GMT".into()),
    }
}

pub(crate) fn offer_of(provider: &ProviderKey) -> CapacityOffer {
    CapacityOffer {
        provider: provider.id(),
        name: "acme".into(),
        req_per_s: 20_000,
        mbit_per_s: 10_000,
        regions: vec!["eu".into(), "us-east".into()],
        price_micros_per_gb: 12_000,
        min_duration_s: 300,
        max_duration_s: 86_400,
    }
}

pub(crate) fn load_report(node: &SigningKey, cert: Option<Vec<u8>>) -> LoadReport {
    LoadReport {
        peer_id: peer_of(node),
        cert,
        seq: 7,
        req_per_s: 1_200,
        egress_bytes_per_s: 50_000_000,
        utilisation_permille: 640,
        hit_ratio_permille: 910,
        demand_permille: 900,
    }
}

pub(crate) fn service_of(owner: &ProviderKey) -> ServiceRecord {
    ServiceRecord {
        hostname: "img.example.com".into(),
        origin: "https://origin.example.com/img/".into(),
        owner: owner.id(),
        access: Access::Public,
    }
}

/// Terms from `primary` to `peer` for a day from [`NOW`].
pub(crate) fn terms_of(primary: &ProviderKey, peer: &ProviderKey) -> Terms {
    Terms {
        id: ArrangementId::from_bytes([0x5a; 16]),
        primary: primary.id(),
        peer: peer.id(),
        services: vec!["img.example.com".into(), "video.example.com".into()],
        regions: vec!["eu".into()],
        req_per_s: 2_000,
        mbit_per_s: 1_000,
        share_permille: 250,
        price_micros_per_gb: 12_000,
        start_ms: NOW,
        end_ms: NOW + DAY,
        sla: Sla {
            max_p95_ms: 150,
            min_availability_permille: 995,
        },
    }
}

pub(crate) fn receipt_of(node: &SigningKey, cert: Option<Vec<u8>>) -> UsageReceipt {
    UsageReceipt {
        arrangement: ArrangementId::from_bytes([0x5a; 16]),
        node: node.verifying_key().to_bytes(),
        seq: 3,
        requests: 120_000,
        bytes: 9_000_000_000,
        cert,
    }
}

/// The reason label of a rejection; a test that expects one fails if the record was accepted.
pub(crate) fn reason<T: Debug>(result: Result<T, RecordError>) -> &'static str {
    match result {
        Ok(accepted) => panic!("accepted: {accepted:?}"),
        Err(e) => e.reason(),
    }
}

/// Seals without `seal`'s checks, for records only a misbehaving node would send.
pub(crate) fn seal_unchecked<T: Record>(
    key: &SigningKey,
    record: &T,
    issued_at: u64,
    expires_at: u64,
) -> Vec<u8> {
    let body = postcard::to_stdvec(record).unwrap();
    seal_raw(
        key,
        ENVELOPE_VERSION,
        T::KIND.code(),
        issued_at,
        expires_at,
        &body,
    )
}

/// A lifetime every kind allows.
pub(crate) fn lifetime_of<T: Record>() -> u64 {
    T::MAX_LIFETIME_MS.min(HOUR_MS)
}

/// Every rejection `open` makes that does not depend on the record's fields: checked for each
/// kind with one of its valid records, which `key` may seal.
pub(crate) fn rejects_tampering<T: Record + Debug + PartialEq>(key: &SigningKey, record: &T) {
    let life = lifetime_of::<T>();
    let sealed = seal(key, record, NOW, NOW + life).unwrap();
    let opened = open::<T>(&sealed, NOW).unwrap();
    assert_eq!(opened.record(), record);
    assert_eq!(sealed[0], ENVELOPE_VERSION);
    assert_eq!(sealed[1], T::KIND.code());
    assert_eq!(sealed[2..34], key.verifying_key().to_bytes());
    let body_len = postcard::to_stdvec(record).unwrap().len();
    assert!(sealed.len() <= body_len + ENVELOPE_OVERHEAD);

    // bad_signature: any byte of the signature, of the body, or of the signer.
    let body_end = sealed.len() - 65;
    for i in [sealed.len() - 1, sealed.len() - 64, body_end, 2, 33] {
        let mut bad = sealed.clone();
        bad[i] ^= 0x01;
        assert_eq!(reason(open::<T>(&bad, NOW)), "bad_signature", "byte {i}");
    }
    // Signed by someone else entirely: a valid signature, but not over these bytes.
    let mut swapped = sealed.clone();
    let other = seal_unchecked(
        &SigningKey::from_bytes(&[0xaa; 32]),
        record,
        NOW,
        NOW + life,
    );
    let n = swapped.len();
    swapped[n - 64..].copy_from_slice(&other[other.len() - 64..]);
    assert_eq!(reason(open::<T>(&swapped, NOW)), "bad_signature");

    // expired: at and after expires_at, never before.
    assert!(open::<T>(&sealed, NOW + life - 1).is_ok());
    assert_eq!(reason(open::<T>(&sealed, NOW + life)), "expired");
    assert_eq!(reason(open::<T>(&sealed, u64::MAX)), "expired");

    // future: issued more than the allowed skew ahead of now.
    let ahead = seal(
        key,
        record,
        NOW + MAX_CLOCK_SKEW_MS + 1,
        NOW + MAX_CLOCK_SKEW_MS + 1 + life,
    )
    .unwrap();
    assert_eq!(reason(open::<T>(&ahead, NOW)), "future");
    assert!(open::<T>(&ahead, NOW + 1).is_ok());

    // lifetime: longer than the kind allows, or empty/backwards.
    let long = seal_unchecked(key, record, NOW, NOW + T::MAX_LIFETIME_MS + 1);
    assert_eq!(reason(open::<T>(&long, NOW)), "lifetime");
    assert_eq!(
        reason(seal(key, record, NOW, NOW + T::MAX_LIFETIME_MS + 1)),
        "lifetime"
    );
    let backwards = seal_unchecked(key, record, NOW + 10, NOW + 5);
    assert_eq!(reason(open::<T>(&backwards, NOW)), "lifetime");
    assert_eq!(reason(seal(key, record, NOW, NOW)), "lifetime");

    // too_large: checked before anything is decoded.
    let mut padded = sealed.clone();
    padded.resize(T::MAX_LEN + 1, 0);
    assert_eq!(reason(open::<T>(&padded, NOW)), "too_large");

    // garbage: too short, truncated, trailing bytes, random.
    for bad in [
        vec![],
        vec![1; 10],
        vec![0; 64],
        sealed[..sealed.len() - 1].to_vec(),
        sealed[..40].to_vec(),
        [&sealed[..body_end], &[0u8][..], &sealed[body_end..]].concat(),
    ] {
        let r = reason(open::<T>(&bad, NOW));
        assert!(r == "garbage" || r == "bad_signature", "{r}");
    }
    let mut body = postcard::to_stdvec(record).unwrap();
    body.push(0);
    let trailing = seal_raw(
        key,
        ENVELOPE_VERSION,
        T::KIND.code(),
        NOW,
        NOW + life,
        &body,
    );
    assert_eq!(reason(open::<T>(&trailing, NOW)), "garbage");
    let junk = seal_raw(
        key,
        ENVELOPE_VERSION,
        T::KIND.code(),
        NOW,
        NOW + life,
        &[0xff; 9],
    );
    assert_eq!(reason(open::<T>(&junk, NOW)), "garbage");

    // version and kind, with valid signatures.
    let body = postcard::to_stdvec(record).unwrap();
    let v2 = seal_raw(key, 2, T::KIND.code(), NOW, NOW + life, &body);
    assert_eq!(reason(open::<T>(&v2, NOW)), "version");
    for kind in [0, T::KIND.code() % 9 + 1, 200] {
        let other = seal_raw(key, ENVELOPE_VERSION, kind, NOW, NOW + life, &body);
        assert_eq!(reason(open::<T>(&other, NOW)), "wrong_kind", "kind {kind}");
    }

    // replay ordering: later issued_at wins; ties broken by signature, one way only.
    let later = open::<T>(&seal(key, record, NOW + 1, NOW + life).unwrap(), NOW).unwrap();
    assert!(is_newer(&later, &opened));
    assert!(!is_newer(&opened, &later));
    assert!(!is_newer(&opened, &opened));
    let twin = open::<T>(&seal(key, record, NOW, NOW + life - 1).unwrap(), NOW).unwrap();
    assert_ne!(twin.signature(), opened.signature());
    assert!(is_newer(&twin, &opened) ^ is_newer(&opened, &twin));
}
