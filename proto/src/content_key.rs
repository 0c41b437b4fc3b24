use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::CanonicalUrl;
use crate::url::hex_val;

/// Domain separation so a content key can never collide with another blake3 use of ours.
const CONTEXT: &str = "reef 2026-11 content key v1";
const VARIANT_CONTEXT: &str = "reef 2026-11 variant key v1";

/// The DHT key of a cached object: blake3 of the canonical URL, or for one variant of a
/// response that varies (RFC 9110 §12.5.5), of the URL's key and the selecting request headers.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ContentKey([u8; 32]);

impl ContentKey {
    pub fn for_url(url: &CanonicalUrl) -> Self {
        let mut hasher = blake3::Hasher::new_derive_key(CONTEXT);
        hasher.update(url.as_str().as_bytes());
        Self(*hasher.finalize().as_bytes())
    }

    /// The key of the variant selected by `selecting`: (lower-case header name, the request's
    /// normalised value or None when the request lacks it), in the order the response's `Vary`
    /// names them. Deterministic, so every node computes the same key for the same variant and
    /// variants can be shared through the DHT like any object.
    pub fn for_variant<'a>(
        primary: &ContentKey,
        selecting: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
    ) -> Self {
        let mut hasher = blake3::Hasher::new_derive_key(VARIANT_CONTEXT);
        hasher.update(&primary.0);
        for (name, value) in selecting {
            // Lengths make the encoding unambiguous; an absent header differs from an empty one.
            hasher.update(&(name.len() as u64).to_le_bytes());
            hasher.update(name.as_bytes());
            match value {
                Some(v) => {
                    hasher.update(&[1]);
                    hasher.update(&(v.len() as u64).to_le_bytes());
                    hasher.update(v);
                }
                None => {
                    hasher.update(&[0]);
                }
            }
        }
        Self(*hasher.finalize().as_bytes())
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 8 hex digits, enough to tell keys apart in logs.
    pub fn short(&self) -> String {
        self.to_string()[..8].to_string()
    }
}

impl fmt::Display for ContentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ContentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentKey({})", self.short())
    }
}

/// Error for a content key given as text (e.g. in a peer-fetch path).
#[derive(Debug, thiserror::Error)]
#[error("a content key is 64 hex digits")]
pub struct BadKey;

impl FromStr for ContentKey {
    type Err = BadKey;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.as_bytes();
        if s.len() != 64 {
            return Err(BadKey);
        }
        let mut out = [0u8; 32];
        for (i, pair) in s.chunks_exact(2).enumerate() {
            let hi = hex_val(pair[0]).ok_or(BadKey)?;
            let lo = hex_val(pair[1]).ok_or(BadKey)?;
            out[i] = (hi << 4) | lo;
        }
        Ok(Self(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(url: &str) -> ContentKey {
        ContentKey::for_url(&CanonicalUrl::parse(url).unwrap())
    }

    #[test]
    fn equivalent_urls_share_a_key() {
        assert_eq!(
            key("http://Example.COM:80/a/./b/../c"),
            key("http://example.com/a/c")
        );
        assert_eq!(key("http://example.com"), key("http://example.com/"));
        assert_eq!(
            key("http://example.com/%7euser"),
            key("http://example.com/~user")
        );
    }

    #[test]
    fn different_urls_have_different_keys() {
        assert_ne!(key("http://example.com/a"), key("https://example.com/a"));
        assert_ne!(key("http://example.com/a"), key("http://example.com/a?x=1"));
        assert_ne!(
            key("http://example.com/a"),
            key("http://example.com:8080/a")
        );
    }

    #[test]
    fn hex_round_trip() {
        let k = key("http://example.com/");
        let parsed: ContentKey = k.to_string().parse().unwrap();
        assert_eq!(k, parsed);
        assert_eq!(k.short().len(), 8);
        assert!("zz".parse::<ContentKey>().is_err());
        assert!("g".repeat(64).parse::<ContentKey>().is_err());
    }

    #[test]
    fn key_is_stable_across_releases() {
        // A changed derivation would orphan every object announced in a running overlay.
        assert_eq!(key("http://example.com/").to_string(), PINNED);
    }

    #[test]
    fn variants_differ_by_value_and_by_absence() {
        let p = key("http://example.com/");
        let gzip = ContentKey::for_variant(&p, [("accept-encoding", Some(&b"gzip"[..]))]);
        let br = ContentKey::for_variant(&p, [("accept-encoding", Some(&b"br"[..]))]);
        let empty = ContentKey::for_variant(&p, [("accept-encoding", Some(&b""[..]))]);
        let absent = ContentKey::for_variant(&p, [("accept-encoding", None)]);
        let keys = [p, gzip, br, empty, absent];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(
            gzip,
            ContentKey::for_variant(&p, [("accept-encoding", Some(&b"gzip"[..]))])
        );
        // Name/value boundaries are part of the encoding.
        assert_ne!(
            ContentKey::for_variant(&p, [("ab", Some(&b"c"[..]))]),
            ContentKey::for_variant(&p, [("a", Some(&b"bc"[..]))])
        );
    }

    const PINNED: &str = "0736581749c369b622ea2c014c6a7a6a7782431bc33edcd59e2857b9099b8c9e";
}
