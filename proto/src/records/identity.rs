//! Self-certifying identities: a provider is its ed25519 public key, a node its libp2p
//! ed25519 key. Nothing here trusts a name.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::url::hex_val;

/// libp2p's PeerId of an ed25519 key is the identity multihash (code 0x00, length 36) of the
/// protobuf `PublicKey { Type = Ed25519 (field 1 = 1), Data (field 2, 32 bytes) }`.
const ED25519_PEER_ID_PREFIX: [u8; 6] = [0x00, 0x24, 0x08, 0x01, 0x12, 0x20];

/// Length of an ed25519 peer id in bytes.
pub(crate) const ED25519_PEER_ID_LEN: usize = ED25519_PEER_ID_PREFIX.len() + 32;

/// The libp2p PeerId bytes (`PeerId::to_bytes()`) of the node whose ed25519 public key is
/// `public`, computed without libp2p so that this crate stays free of it.
pub fn peer_id_bytes(public: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ED25519_PEER_ID_LEN);
    out.extend_from_slice(&ED25519_PEER_ID_PREFIX);
    out.extend_from_slice(public);
    out
}

/// The ed25519 public key inside PeerId bytes, or `None` if they are not an ed25519 peer id
/// (e.g. an RSA key's sha256 multihash, which no Reef envelope can be signed with).
pub fn ed25519_key_of_peer_id(peer_id: &[u8]) -> Option<[u8; 32]> {
    peer_id
        .strip_prefix(&ED25519_PEER_ID_PREFIX[..])?
        .try_into()
        .ok()
}

/// A CDN provider: its ed25519 public key. Whoever holds the matching secret *is* the
/// provider; the name in its certificates and offers is only a label.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProviderId([u8; 32]);

impl ProviderId {
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 8 hex digits, enough to tell providers apart in logs.
    pub fn short(&self) -> String {
        let mut s = self.to_string();
        s.truncate(8);
        s
    }
}

impl fmt::Display for ProviderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for ProviderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProviderId({})", self.short())
    }
}

/// Error for a provider id given as text (config, admin API).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a provider id is 64 hex digits")]
pub struct BadProviderId;

impl FromStr for ProviderId {
    type Err = BadProviderId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex(s).map(Self).ok_or(BadProviderId)
    }
}

/// Lower-case hex, as ids are shown to people.
pub(crate) fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for b in bytes {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

/// Exactly `2 * N` hex digits, either case, as `N` bytes.
pub(crate) fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.as_bytes();
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        *byte = (hex_val(pair[0])? << 4) | hex_val(pair[1])?;
    }
    Some(out)
}

// Hex in human-readable formats (config, admin JSON), 32 raw bytes in postcard.
impl Serialize for ProviderId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            self.0.serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for ProviderId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let text = String::deserialize(deserializer)?;
            text.parse().map_err(serde::de::Error::custom)
        } else {
            <[u8; 32]>::deserialize(deserializer).map(Self)
        }
    }
}

/// A provider's signing key. Nodes sign with their libp2p ed25519 key instead: convert its
/// 32-byte secret with [`SigningKey::from_bytes`].
#[derive(Clone)]
pub struct ProviderKey(SigningKey);

/// Error creating a key (or an [`ArrangementId`](super::ArrangementId)): both need the
/// operating system's randomness.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("no randomness from the operating system: {0}")]
    Randomness(getrandom::Error),
}

/// `N` bytes of the operating system's randomness: new keys' secrets, arrangement ids.
pub(crate) fn random<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(KeyError::Randomness)?;
    Ok(bytes)
}

impl ProviderKey {
    /// A new key from the operating system's randomness.
    pub fn generate() -> Result<Self, KeyError> {
        Ok(Self::from_bytes(&random()?))
    }

    /// The key with this 32-byte ed25519 secret (as stored by the caller; this crate does no I/O).
    pub fn from_bytes(secret: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(secret))
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    pub fn id(&self) -> ProviderId {
        ProviderId(self.0.verifying_key().to_bytes())
    }

    /// For [`seal`](super::seal).
    pub fn signing_key(&self) -> &SigningKey {
        &self.0
    }
}

impl fmt::Debug for ProviderKey {
    // Never the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProviderKey({})", self.id().short())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_id_matches_libp2p() {
        // Computed with libp2p 0.57 (libp2p-identity 0.3.1): `Keypair::ed25519_from_bytes([7;
        // 32])` then `public().to_peer_id().to_bytes()`; that test also checked that
        // `SigningKey::from_bytes` of the libp2p secret gives the same public key, which is how
        // a node signs envelopes with its libp2p key.
        let key = SigningKey::from_bytes(&[7; 32]);
        let public = key.verifying_key().to_bytes();
        assert_eq!(hex(&public), LIBP2P_PUBLIC_KEY);
        assert_eq!(hex(&peer_id_bytes(&public)), LIBP2P_PEER_ID);
        assert_eq!(
            ed25519_key_of_peer_id(&peer_id_bytes(&public)),
            Some(public)
        );
    }

    #[test]
    fn non_ed25519_peer_ids_have_no_key() {
        assert_eq!(ed25519_key_of_peer_id(&[]), None);
        assert_eq!(ed25519_key_of_peer_id(&ED25519_PEER_ID_PREFIX), None);
        let mut long = peer_id_bytes(&[1; 32]);
        long.push(0);
        assert_eq!(ed25519_key_of_peer_id(&long), None);
        // A sha256 multihash (RSA keys).
        let mut sha = vec![0x12, 0x20];
        sha.extend_from_slice(&[9; 32]);
        assert_eq!(ed25519_key_of_peer_id(&sha), None);
    }

    #[test]
    fn provider_id_text_round_trips() {
        let id = ProviderKey::from_bytes(&[1; 32]).id();
        let text = id.to_string();
        assert_eq!(text.len(), 64);
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(text.parse::<ProviderId>(), Ok(id));
        assert_eq!(id.short(), text[..8]);
        assert_eq!(format!("{id:?}"), format!("ProviderId({})", &text[..8]));
        assert_eq!(text.to_uppercase().parse::<ProviderId>(), Ok(id));
        assert_eq!("ab".parse::<ProviderId>(), Err(BadProviderId));
        assert_eq!("g".repeat(64).parse::<ProviderId>(), Err(BadProviderId));
        assert_eq!("é".repeat(32).parse::<ProviderId>(), Err(BadProviderId));
    }

    #[test]
    fn provider_id_serde_is_hex_for_humans_and_raw_for_postcard() {
        let id = ProviderKey::from_bytes(&[2; 32]).id();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<ProviderId>(&json).unwrap(), id);
        let wire = postcard::to_stdvec(&id).unwrap();
        assert_eq!(wire, id.as_bytes());
        assert_eq!(postcard::from_bytes::<ProviderId>(&wire).unwrap(), id);
    }

    #[test]
    fn provider_key_round_trips_and_hides_its_secret() {
        let key = ProviderKey::generate().unwrap();
        let again = ProviderKey::from_bytes(&key.to_bytes());
        assert_eq!(again.id(), key.id());
        assert_ne!(ProviderKey::generate().unwrap().id(), key.id());
        let debug = format!("{key:?}");
        assert!(!debug.contains(&hex(&key.to_bytes())[..16]));
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    const LIBP2P_PUBLIC_KEY: &str =
        "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c";
    /// `12D3KooWRawPbxPtP1eZaJpumGnyWX2DcUyd3RQnydr3eAto4Az7` as bytes.
    const LIBP2P_PEER_ID: &str =
        "002408011220ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c";
}
