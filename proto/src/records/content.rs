//! What a body fetched from a peer must hash to.

use serde::{Deserialize, Serialize};

use super::keys::content_record_key;
use super::{HOUR_MS, Kind, Record, RecordError, text};
use crate::ContentKey;

/// ETags are opaque quoted strings; real ones are a hash or two.
pub const MAX_ETAG_LEN: usize = 256;
/// An HTTP-date is 29 bytes; room for the obsolete formats.
pub const MAX_LAST_MODIFIED_LEN: usize = 64;

/// Signed by the node that fetched the object from its origin, stored under
/// [`content_record_key`]: lets any node verify a body it got from a peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentRecord {
    pub key: ContentKey,
    /// blake3 of the body.
    pub body_hash: [u8; 32],
    pub body_len: u64,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

impl Record for ContentRecord {
    const KIND: Kind = Kind::ContentRecord;
    /// The largest valid record is about 520 bytes (see the tests).
    const MAX_LEN: usize = 1024;
    /// A day: objects are re-announced when fetched again, and validators older than that are
    /// worth asking the origin about anyway.
    const MAX_LIFETIME_MS: u64 = 24 * HOUR_MS;

    fn validate(&self, _signer: &[u8; 32], _now_ms: u64) -> Result<(), RecordError> {
        // Any node may vouch for a body it fetched from the origin.
        if let Some(etag) = &self.etag {
            text::optional_text("etag", etag, MAX_ETAG_LEN)?;
        }
        if let Some(date) = &self.last_modified {
            text::optional_text("last_modified", date, MAX_LAST_MODIFIED_LEN)?;
        }
        Ok(())
    }

    fn dht_key(&self) -> Option<Vec<u8>> {
        Some(content_record_key(&self.key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::tests::support::*;
    use crate::records::{NodeRecord, key_belongs, open, open_under_key, seal};

    #[test]
    fn round_trips() {
        let node = node_key(2);
        let record = content_record();
        let sealed = seal(&node, &record, NOW, NOW + HOUR_MS).unwrap();
        let opened = open::<ContentRecord>(&sealed, NOW).unwrap();
        assert_eq!(opened.record(), &record);
        assert!(key_belongs(&content_record_key(&record.key), &opened));
        let bare = ContentRecord {
            etag: None,
            last_modified: None,
            ..record
        };
        let sealed = seal(&node, &bare, NOW, NOW + HOUR_MS).unwrap();
        assert_eq!(open::<ContentRecord>(&sealed, NOW).unwrap().record(), &bare);
    }

    #[test]
    fn rejects_the_common_attacks() {
        rejects_tampering(&node_key(2), &content_record());
    }

    #[test]
    fn opened_as_a_node_record_is_the_wrong_kind() {
        let sealed = seal(&node_key(2), &content_record(), NOW, NOW + HOUR_MS).unwrap();
        assert_eq!(reason(open::<NodeRecord>(&sealed, NOW)), "wrong_kind");
    }

    #[test]
    fn belongs_only_under_its_own_content_key() {
        let sealed = seal(&node_key(2), &content_record(), NOW, NOW + HOUR_MS).unwrap();
        let other = content_record_key(&ContentKey::from_bytes([0xee; 32]));
        assert_eq!(
            reason(open_under_key::<ContentRecord>(&other, &sealed, NOW)),
            "wrong_signer"
        );
    }

    #[test]
    fn fields_are_bounded() {
        let node = node_key(2);
        let good = content_record();
        let cases = [
            ContentRecord {
                etag: Some("e".repeat(MAX_ETAG_LEN + 1)),
                ..good.clone()
            },
            ContentRecord {
                last_modified: Some("d".repeat(MAX_LAST_MODIFIED_LEN + 1)),
                ..good.clone()
            },
            ContentRecord {
                etag: Some("\"a\"\r\nSet-Cookie: x".into()),
                ..good.clone()
            },
        ];
        for bad in cases {
            let sealed = seal_unchecked(&node, &bad, NOW, NOW + HOUR_MS);
            assert_eq!(reason(open::<ContentRecord>(&sealed, NOW)), "invalid");
        }
    }

    #[test]
    fn largest_valid_record_fits() {
        let record = ContentRecord {
            key: ContentKey::from_bytes([0xff; 32]),
            body_hash: [0xff; 32],
            body_len: u64::MAX,
            etag: Some("e".repeat(MAX_ETAG_LEN)),
            last_modified: Some("d".repeat(MAX_LAST_MODIFIED_LEN)),
        };
        let sealed = seal(
            &node_key(2),
            &record,
            u64::MAX - ContentRecord::MAX_LIFETIME_MS,
            u64::MAX,
        )
        .unwrap();
        assert!(sealed.len() <= ContentRecord::MAX_LEN, "{}", sealed.len());
    }
}
