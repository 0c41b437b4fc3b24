//! How a node proves to another node of its provider that it may have a private object.
//!
//! Every node of a certified provider holds the provider key file (it certifies itself with
//! it). A key derived from the provider secret authenticates `/_reef/object/<key>` requests
//! with a keyed blake3 MAC over the content key and the time: nothing to look up (no node
//! record, no certificate check) on a path that must stay fast, and no other provider, nor a
//! client, can make one. A node without a provider key is its own one-node provider: it has no
//! one to ask, and refuses everyone.
//!
//! A header seen on the wire can be replayed for the same key within [`MAX_SKEW_SECS`]; the
//! object's bytes cross that same wire in the clear anyway (node-to-node HTTP), so the MAC
//! guards against asking, not against listening.

use http::{HeaderMap, HeaderValue};
use reef_proto::ContentKey;

use crate::provider::unix_secs;

/// Carries `SECS.MAC` (unix seconds, 64 hex digits) on a node's `/_reef/object/` request.
pub const OBJECT_AUTH_HEADER: &str = "x-reef-object-auth";
/// How far the stamp may be from the checking node's clock: one provider's nodes keep their
/// clocks within seconds (certificates and records depend on it); a minute spares a slow NTP.
pub const MAX_SKEW_SECS: u64 = 60;
/// Names what the derived key is for, so it can never stand in for another use of the secret.
const CONTEXT: &str = "reef 2026-12 private object requests between one provider's nodes v1";

/// The MAC key of this node's provider.
#[derive(Clone)]
pub struct ObjectAuth {
    key: [u8; 32],
}

impl std::fmt::Debug for ObjectAuth {
    // Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ObjectAuth(…)")
    }
}

impl ObjectAuth {
    /// From the provider key's 32-byte secret.
    pub fn from_provider_secret(secret: &[u8; 32]) -> Self {
        Self {
            key: blake3::derive_key(CONTEXT, secret),
        }
    }

    /// The header value for a request of `key` now.
    pub fn stamp(&self, key: &ContentKey) -> Option<HeaderValue> {
        let secs = unix_secs();
        HeaderValue::from_str(&format!("{secs}.{}", self.mac(key, secs).to_hex())).ok()
    }

    /// Whether `headers` prove a node of our provider sent the request for `key`.
    pub fn admits(&self, key: &ContentKey, headers: &HeaderMap) -> bool {
        let Some(value) = headers
            .get(OBJECT_AUTH_HEADER)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let Some((secs, mac)) = value.split_once('.') else {
            return false;
        };
        let (Ok(secs), Ok(mac)) = (secs.parse::<u64>(), blake3::Hash::from_hex(mac)) else {
            return false;
        };
        if unix_secs().abs_diff(secs) > MAX_SKEW_SECS {
            return false;
        }
        // `blake3::Hash` compares in constant time.
        self.mac(key, secs) == mac
    }

    fn mac(&self, key: &ContentKey, secs: u64) -> blake3::Hash {
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        hasher.update(key.as_bytes());
        hasher.update(&secs.to_be_bytes());
        hasher.finalize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_provider_and_key_pass() {
        let ours = ObjectAuth::from_provider_secret(&[1; 32]);
        let theirs = ObjectAuth::from_provider_secret(&[2; 32]);
        let key = ContentKey::from_bytes([7; 32]);
        let other = ContentKey::from_bytes([8; 32]);
        let mut headers = HeaderMap::new();
        assert!(!ours.admits(&key, &headers));
        headers.insert(OBJECT_AUTH_HEADER, ours.stamp(&key).unwrap());
        assert!(ours.admits(&key, &headers));
        assert!(!ours.admits(&other, &headers));
        assert!(!theirs.admits(&key, &headers));
        let old = unix_secs() - MAX_SKEW_SECS - 5;
        let stale = format!("{old}.{}", ours.mac(&key, old).to_hex());
        headers.insert(OBJECT_AUTH_HEADER, HeaderValue::from_str(&stale).unwrap());
        assert!(!ours.admits(&key, &headers));
        for junk in ["", ".", "1.2", "x.y", "12345"] {
            headers.insert(OBJECT_AUTH_HEADER, HeaderValue::from_static(junk));
            assert!(!ours.admits(&key, &headers), "{junk}");
        }
    }
}
