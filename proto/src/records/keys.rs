//! DHT keys. Each kind has its own prefix, so keys of different kinds can never collide and
//! a node receiving a `PutRecord` knows from the key alone which kind to open the value as.
//! The `v1` is the envelope version: a future format gets fresh keys instead of fighting over
//! the old ones (the unversioned `/reef/node/…` keys of earlier builds included).

use super::{Kind, Opened, Record, RecordError, open};
use crate::ContentKey;
use crate::records::ProviderId;

const ROOT: &[u8] = b"/reef/v1/";
const NODE: &[u8] = b"node/";
const CONTENT: &[u8] = b"content/";
const OFFER: &[u8] = b"offer/";
const REGION: &[u8] = b"region/";
const SERVICE: &[u8] = b"service/";

fn key(kind: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ROOT.len() + kind.len() + rest.len());
    out.extend_from_slice(ROOT);
    out.extend_from_slice(kind);
    out.extend_from_slice(rest);
    out
}

/// Where a node publishes its [`NodeRecord`](super::NodeRecord): its peer id bytes.
pub fn node_record_key(peer_id: &[u8]) -> Vec<u8> {
    key(NODE, peer_id)
}

/// Where the [`ContentRecord`](super::ContentRecord) of an object lives.
pub fn content_record_key(content: &ContentKey) -> Vec<u8> {
    key(CONTENT, content.as_bytes())
}

/// Where a provider's agent publishes its [`CapacityOffer`](super::CapacityOffer).
pub fn offer_key(provider: &ProviderId) -> Vec<u8> {
    key(OFFER, provider.as_bytes())
}

/// The key a provider's agent `start_providing`s under for each region of its offer, so that
/// discovery finds every provider offering capacity in a region with one `get_providers`.
/// Region names are compared byte for byte.
pub fn region_key(region: &str) -> Vec<u8> {
    key(REGION, region.as_bytes())
}

/// The 32-byte key nodes announce themselves under (kad provider records) for a region of
/// their provider's offer: blake3 of [`region_key`], as the overlay keys every announcement
/// like a content key.
pub fn region_announce_key(region: &str) -> ContentKey {
    ContentKey::from_bytes(*blake3::hash(&region_key(region)).as_bytes())
}

/// Where the [`ServiceRecord`](super::ServiceRecord) of a hostname lives. Hostnames in service
/// records are lower case, so look up the lower-case name.
pub fn service_key(hostname: &str) -> Vec<u8> {
    key(SERVICE, hostname.as_bytes())
}

/// The kind of record stored under `dht_key`, or `None` if no record belongs there (a region
/// key holds provider announcements only; anything else is not ours).
pub fn kind_of_key(dht_key: &[u8]) -> Option<Kind> {
    let rest = dht_key.strip_prefix(ROOT)?;
    if rest.starts_with(NODE) {
        Some(Kind::NodeRecord)
    } else if rest.starts_with(CONTENT) {
        Some(Kind::ContentRecord)
    } else if rest.starts_with(OFFER) {
        Some(Kind::CapacityOffer)
    } else if rest.starts_with(SERVICE) {
        Some(Kind::ServiceRecord)
    } else {
        None
    }
}

/// Whether `opened` may sit under `dht_key`. A node record only under its signer's peer id, an
/// offer only under its signing provider (both guaranteed by the record's own checks), a
/// content record only under its content key, a service record only under its hostname.
/// Records that never go into the DHT belong nowhere.
pub fn key_belongs<T: Record>(dht_key: &[u8], opened: &Opened<T>) -> bool {
    opened
        .record()
        .dht_key()
        .is_some_and(|own| own.as_slice() == dht_key)
}

/// [`open`] a DHT value and check it belongs under the key it was stored at: what Kademlia's
/// record validation calls for every incoming value.
pub fn open_under_key<T: Record>(
    dht_key: &[u8],
    value: &[u8],
    now_ms: u64,
) -> Result<Opened<T>, RecordError> {
    let opened = open::<T>(value, now_ms)?;
    if !key_belongs(dht_key, &opened) {
        return Err(RecordError::WrongSigner(
            "record does not belong under this key",
        ));
    }
    Ok(opened)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_different_kinds_never_collide() {
        let bytes = [3u8; 32];
        let keys = [
            node_record_key(&bytes),
            content_record_key(&ContentKey::from_bytes(bytes)),
            offer_key(&ProviderId::from_bytes(bytes)),
            region_key("\u{3}"),
            service_key("\u{3}"),
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
                assert!(!a.starts_with(b) && !b.starts_with(a));
            }
        }
        assert_eq!(kind_of_key(&keys[0]), Some(Kind::NodeRecord));
        assert_eq!(kind_of_key(&keys[1]), Some(Kind::ContentRecord));
        assert_eq!(kind_of_key(&keys[2]), Some(Kind::CapacityOffer));
        assert_eq!(kind_of_key(&keys[3]), None);
        assert_eq!(kind_of_key(&keys[4]), Some(Kind::ServiceRecord));
        assert_eq!(kind_of_key(b"/reef/node/abc"), None, "the old format");
        assert_eq!(kind_of_key(&bytes), None, "a raw content key (providers)");
    }

    #[test]
    fn keys_are_stable() {
        // A changed key would orphan every record in a running overlay.
        assert_eq!(region_key("eu"), b"/reef/v1/region/eu");
        assert_eq!(node_record_key(&[1, 2]), b"/reef/v1/node/\x01\x02");
    }
}
