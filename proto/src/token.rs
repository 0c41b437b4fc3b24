//! Access tokens for token-protected services: a content owner signs, with an ed25519 key its
//! service lists, the right to fetch one path prefix until a time, optionally from one client
//! address. Every node that serves the service checks the token before it looks at its cache.
//!
//! # Text form (version 1)
//!
//! `base64url(claims ++ signature)` without padding, where `claims` is
//! `postcard((version = 1, key_id, prefix, expires, client))` and `signature` is ed25519
//! (`verify_strict`) over [`DOMAIN`] `++ claims`, as received. Signing the received bytes (not
//! a re-encoding) means no second spelling of the same claims carries a valid signature; the
//! domain prefix keeps a token key's signatures apart from anything else. The text is at most
//! [`MAX_TOKEN_LEN`] characters, fit for a query parameter and an `Authorization` header.
//!
//! # What `verify` rejects, in order
//! malformed (too long, not base64url, does not decode, unknown version, bad fields) →
//! unknown key id → bad signature → expired → wrong prefix → wrong client. The claims are
//! only believed once the signature checked out.

use std::net::IpAddr;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::records::KeyError;

/// The only token version so far; the first byte of the claims.
pub const TOKEN_VERSION: u8 = 1;
/// Longest token text accepted: claims with the longest prefix and key id, signed, in
/// base64url, fit well inside it, and it keeps a junk header from costing a large decode.
pub const MAX_TOKEN_LEN: usize = 1024;
/// Longest path prefix a token binds: a deep directory, far below a URL's own limit.
pub const MAX_PREFIX_LEN: usize = 512;
/// Longest key id: a short label an operator types (`k1`, `2026-03`).
pub const MAX_KEY_ID_LEN: usize = 32;
/// Most token keys one service lists: the current key and a few being rotated in or out.
pub const MAX_TOKEN_KEYS: usize = 8;
/// Domain-separation prefix of the signed bytes.
pub const DOMAIN: &[u8] = b"reef access token v1\0";

const SIGNATURE_LEN: usize = 64;

/// Why a token was refused. [`TokenError::reason`] is a short label for metrics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("token key {0:?} is not one of the service's keys")]
    UnknownKey(String),
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token is for {prefix:?}, not this path")]
    WrongPrefix { prefix: String },
    #[error("token is bound to another client address")]
    WrongClient,
}

impl TokenError {
    /// Metrics label.
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::Malformed(_) => "malformed",
            TokenError::UnknownKey(_) => "unknown_key",
            TokenError::BadSignature => "bad_signature",
            TokenError::Expired => "expired",
            TokenError::WrongPrefix { .. } => "wrong_prefix",
            TokenError::WrongClient => "wrong_client",
        }
    }
}

/// One key a service accepts tokens from: `id` names it in tokens, so keys can be rotated by
/// listing the new one next to the old one for a while.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenKey {
    pub id: String,
    /// ed25519 public key.
    pub public: [u8; 32],
}

/// What a token grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Which of the service's keys signed it.
    pub key_id: String,
    /// Canonical path prefix, matched on segment boundaries (see [`prefix_covers`]).
    pub prefix: String,
    /// Unix seconds; the token is refused from this second on.
    pub expires: u64,
    /// If set, only a client connecting from this address may use it.
    pub client: Option<IpAddr>,
}

/// The encoded claims: a version, then the fields.
#[derive(Serialize, Deserialize)]
struct Wire {
    version: u8,
    key_id: String,
    prefix: String,
    expires: u64,
    client: Option<IpAddr>,
}

/// A token issuer's key.
pub struct TokenSigner(SigningKey);

impl TokenSigner {
    /// A new key from the operating system's randomness.
    pub fn generate() -> Result<Self, KeyError> {
        Ok(Self::from_bytes(&crate::records::random()?))
    }

    pub fn from_bytes(secret: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(secret))
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    pub fn public(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }

    /// The token text for `claims`, after checking them as a verifier would.
    pub fn issue(&self, claims: &Claims) -> Result<String, TokenError> {
        check_key_id(&claims.key_id)?;
        check_prefix(&claims.prefix)?;
        let wire = Wire {
            version: TOKEN_VERSION,
            key_id: claims.key_id.clone(),
            prefix: claims.prefix.clone(),
            expires: claims.expires,
            client: claims.client,
        };
        let mut bytes =
            postcard::to_stdvec(&wire).map_err(|_| TokenError::Malformed("cannot encode"))?;
        let signature = self.0.sign(&signed_message(&bytes));
        bytes.extend_from_slice(&signature.to_bytes());
        let text = base64url_encode(&bytes);
        if text.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed("longer than the limit"));
        }
        Ok(text)
    }
}

impl std::fmt::Debug for TokenSigner {
    // Never the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSigner(…)")
    }
}

/// Checks `text` against the service's `keys` for a request of canonical `path` from
/// `client` at unix second `now`; the claims if it grants the request.
pub fn verify(
    text: &str,
    keys: &[TokenKey],
    path: &str,
    client: IpAddr,
    now: u64,
) -> Result<Claims, TokenError> {
    let (claims, signed, signature) = decode(text)?;
    let key = keys
        .iter()
        .find(|k| k.id == claims.key_id)
        .ok_or_else(|| TokenError::UnknownKey(claims.key_id.clone()))?;
    let public = VerifyingKey::from_bytes(&key.public).map_err(|_| TokenError::BadSignature)?;
    public
        .verify_strict(&signed_message(&signed), &Signature::from_bytes(&signature))
        .map_err(|_| TokenError::BadSignature)?;
    if now >= claims.expires {
        return Err(TokenError::Expired);
    }
    if !prefix_covers(&claims.prefix, path) {
        return Err(TokenError::WrongPrefix {
            prefix: claims.prefix,
        });
    }
    if claims
        .client
        .is_some_and(|bound| canonical_ip(bound) != canonical_ip(client))
    {
        return Err(TokenError::WrongClient);
    }
    Ok(claims)
}

/// The claims, the bytes they were decoded from, and the signature; only the form is checked.
pub fn decode(text: &str) -> Result<(Claims, Vec<u8>, [u8; SIGNATURE_LEN]), TokenError> {
    if text.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed("longer than the limit"));
    }
    let mut bytes = base64url_decode(text).ok_or(TokenError::Malformed("not base64url"))?;
    if bytes.len() <= SIGNATURE_LEN {
        return Err(TokenError::Malformed("too short"));
    }
    let tail = bytes.split_off(bytes.len() - SIGNATURE_LEN);
    let signature: [u8; SIGNATURE_LEN] = tail
        .try_into()
        .map_err(|_| TokenError::Malformed("too short"))?;
    if bytes.first() != Some(&TOKEN_VERSION) {
        return Err(TokenError::Malformed("unknown version"));
    }
    let (wire, rest) = postcard::take_from_bytes::<Wire>(&bytes)
        .map_err(|_| TokenError::Malformed("claims do not decode"))?;
    if !rest.is_empty() {
        return Err(TokenError::Malformed("trailing bytes"));
    }
    check_key_id(&wire.key_id)?;
    check_prefix(&wire.prefix)?;
    let claims = Claims {
        key_id: wire.key_id,
        prefix: wire.prefix,
        expires: wire.expires,
        client: wire.client,
    };
    Ok((claims, bytes, signature))
}

fn signed_message(claims: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(DOMAIN.len() + claims.len());
    message.extend_from_slice(DOMAIN);
    message.extend_from_slice(claims);
    message
}

/// Whether the token prefix `prefix` covers the canonical request path `path`: equal, or
/// `path` continues `prefix` at a segment boundary. `/p` covers `/p` and `/p/x`, not `/p2`;
/// `/p/` covers `/p/x`, not `/p`. `path` must already be canonical (dot segments removed), so
/// `/p/../secret` arrives here as `/secret`.
pub fn prefix_covers(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/'),
        None => false,
    }
}

/// Whether `public` can verify tokens: a valid ed25519 point, not of small order (such a key
/// passes `verify_strict` for nobody, so listing one is a typo).
pub fn is_usable_key(public: &[u8; 32]) -> bool {
    VerifyingKey::from_bytes(public).is_ok_and(|k| !k.is_weak())
}

/// A key id: 1 to [`MAX_KEY_ID_LEN`] of `[A-Za-z0-9._-]`.
pub fn check_key_id(id: &str) -> Result<(), TokenError> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    if id.is_empty() || id.len() > MAX_KEY_ID_LEN || !id.bytes().all(allowed) {
        return Err(TokenError::Malformed(
            "key id is not 1 to 32 of A-Z a-z 0-9 . _ -",
        ));
    }
    Ok(())
}

/// A path prefix in canonical form: starts with `/`, no query or fragment, no `.` or `..`
/// segments, no empty segment but a trailing one, printable ASCII (non-ASCII is
/// percent-encoded in canonical paths), at most [`MAX_PREFIX_LEN`] bytes.
pub fn check_prefix(prefix: &str) -> Result<(), TokenError> {
    if !prefix.starts_with('/') {
        return Err(TokenError::Malformed("prefix does not start with /"));
    }
    if prefix.len() > MAX_PREFIX_LEN {
        return Err(TokenError::Malformed("prefix is too long"));
    }
    if !prefix.bytes().all(|b| b.is_ascii_graphic()) || prefix.contains(['?', '#']) {
        return Err(TokenError::Malformed(
            "prefix has a query, a fragment, spaces or non-ASCII",
        ));
    }
    let inner = prefix[1..].strip_suffix('/').unwrap_or(&prefix[1..]);
    if prefix.len() > 1
        && inner
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(TokenError::Malformed(
            "prefix has an empty, . or .. segment",
        ));
    }
    Ok(())
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is, so a dual-stack listener's view of
/// a client matches the address the token names.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// RFC 4648 §5 base64url without padding.
pub fn base64url_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(BASE64URL[(n >> (18 - 6 * i)) as usize & 63]));
        }
    }
    out
}

/// The inverse of [`base64url_encode`]; None for anything it would not have produced
/// (padding, other alphabets, a dangling character, non-zero spare bits).
pub fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| BASE64URL.iter().position(|&a| a == c).map(|v| v as u32);
    let text = text.as_bytes();
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c)? << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        let len = chunk.len() - 1;
        // The bits past the last whole byte must be zero: one text per byte string.
        if bytes[len..].iter().any(|&b| b != 0) {
            return None;
        }
        out.extend_from_slice(&bytes[..len]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn signer(seed: u8) -> TokenSigner {
        TokenSigner::from_bytes(&[seed; 32])
    }

    fn keys() -> Vec<TokenKey> {
        vec![
            TokenKey {
                id: "k1".into(),
                public: signer(1).public(),
            },
            TokenKey {
                id: "k2".into(),
                public: signer(2).public(),
            },
        ]
    }

    fn claims(prefix: &str) -> Claims {
        Claims {
            key_id: "k1".into(),
            prefix: prefix.into(),
            expires: NOW + 3600,
            client: None,
        }
    }

    fn client() -> IpAddr {
        "127.0.0.7".parse().unwrap()
    }

    fn check(token: &str, path: &str) -> Result<Claims, TokenError> {
        verify(token, &keys(), path, client(), NOW)
    }

    #[test]
    fn a_token_grants_its_prefix_until_it_expires() {
        let token = signer(1).issue(&claims("/p")).unwrap();
        assert!(token.len() < 200, "{}", token.len());
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(check(&token, "/p/a.bin").unwrap(), claims("/p"));
        assert!(check(&token, "/p").is_ok());
        let late = verify(&token, &keys(), "/p/a", client(), NOW + 3600);
        assert_eq!(late, Err(TokenError::Expired));
    }

    #[test]
    fn either_listed_key_works_and_others_do_not() {
        let mut second = claims("/p");
        second.key_id = "k2".into();
        assert!(check(&signer(2).issue(&second).unwrap(), "/p/x").is_ok());
        // Signed by k2's key but claiming k1: the signature does not check.
        let mut lying = claims("/p");
        lying.key_id = "k1".into();
        let forged = signer(2).issue(&lying).unwrap();
        assert_eq!(check(&forged, "/p/x"), Err(TokenError::BadSignature));
        let mut unknown = claims("/p");
        unknown.key_id = "k9".into();
        let token = signer(1).issue(&unknown).unwrap();
        assert_eq!(check(&token, "/p/x").unwrap_err().reason(), "unknown_key");
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        for (prefix, path, covers) in [
            ("/p", "/p", true),
            ("/p", "/p/", true),
            ("/p", "/p/x/y", true),
            ("/p", "/p2", false),
            ("/p", "/p2/x", false),
            ("/p", "/", false),
            ("/p", "/secret", false),
            ("/p/", "/p/x", true),
            ("/p/", "/p", false),
            ("/", "/anything", true),
            ("/a/b", "/a/bc", false),
            ("/a/b", "/a/b/c", true),
        ] {
            assert_eq!(prefix_covers(prefix, path), covers, "{prefix} {path}");
        }
        let token = signer(1).issue(&claims("/p")).unwrap();
        let err = check(&token, "/p2/x").unwrap_err();
        assert_eq!(err.reason(), "wrong_prefix");
        // The edge hands over canonical paths: `/p/../secret` arrives as `/secret`.
        let url = crate::CanonicalUrl::parse("http://h.example/p/../secret").unwrap();
        assert_eq!(
            check(&token, url.path_and_query()).unwrap_err().reason(),
            "wrong_prefix"
        );
    }

    #[test]
    fn prefixes_must_be_canonical() {
        for bad in [
            "",
            "p",
            "/p/../q",
            "/./p",
            "/p//q",
            "/p?x",
            "/p q",
            "/é",
            &format!("/{}", "a".repeat(MAX_PREFIX_LEN)),
        ] {
            assert!(signer(1).issue(&claims(bad)).is_err(), "{bad}");
        }
        for good in ["/", "/p", "/p/", "/a/b.c/d", "/%20x"] {
            assert!(signer(1).issue(&claims(good)).is_ok(), "{good}");
        }
    }

    #[test]
    fn a_bound_client_must_match() {
        let mut bound = claims("/p");
        bound.client = Some(client());
        let token = signer(1).issue(&bound).unwrap();
        assert!(check(&token, "/p/x").is_ok());
        let mapped: IpAddr = "::ffff:127.0.0.7".parse().unwrap();
        assert!(verify(&token, &keys(), "/p/x", mapped, NOW).is_ok());
        let other: IpAddr = "127.0.0.8".parse().unwrap();
        assert_eq!(
            verify(&token, &keys(), "/p/x", other, NOW),
            Err(TokenError::WrongClient)
        );
    }

    #[test]
    fn tampering_breaks_the_signature() {
        let token = signer(1).issue(&claims("/p")).unwrap();
        let mut bytes = base64url_decode(&token).unwrap();
        // Every byte of the claims and the signature is covered.
        for i in 0..bytes.len() {
            bytes[i] ^= 0x01;
            let tampered = base64url_encode(&bytes);
            assert!(check(&tampered, "/p/x").is_err(), "byte {i}");
            bytes[i] ^= 0x01;
        }
        // Widening the prefix by re-encoding the claims keeps the old signature: refused.
        let (_, signed, signature) = decode(&token).unwrap();
        let wider = Wire {
            version: TOKEN_VERSION,
            key_id: "k1".into(),
            prefix: "/".into(),
            expires: NOW + 3600,
            client: None,
        };
        let mut forged = postcard::to_stdvec(&wider).unwrap();
        assert_ne!(forged, signed);
        forged.extend_from_slice(&signature);
        assert_eq!(
            check(&base64url_encode(&forged), "/q"),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn garbage_is_malformed_never_a_panic() {
        let token = signer(1).issue(&claims("/p")).unwrap();
        let mut cases: Vec<String> = vec![
            String::new(),
            "a".into(),
            "====".into(),
            "not a token".into(),
            "A".repeat(MAX_TOKEN_LEN + 1),
            format!("{token}A"),
            format!("{token}="),
            token[..token.len() - 1].into(),
            token.replace('-', "+"),
        ];
        // A cheap deterministic generator: every length up to 300, varied bytes, and
        // truncations and extensions of a real token.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for len in 0..300 {
            let raw: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            cases.push(base64url_encode(&raw));
            cases.push(String::from_utf8_lossy(&raw).into_owned());
            let mut versioned = raw.clone();
            if let Some(first) = versioned.first_mut() {
                *first = TOKEN_VERSION;
            }
            cases.push(base64url_encode(&versioned));
        }
        for cut in 0..token.len() {
            cases.push(token[..cut].into());
        }
        for case in &cases {
            let result = check(case, "/p/x");
            assert!(result.is_err() || case == &token, "{case}");
        }
    }

    #[test]
    fn base64url_round_trips_and_is_strict() {
        for len in 0..70 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let text = base64url_encode(&bytes);
            assert_eq!(base64url_decode(&text), Some(bytes));
        }
        assert_eq!(base64url_encode(b"\xfb\xff"), "-_8");
        // Spare bits set: another spelling of the same bytes.
        assert_eq!(base64url_decode("-_9"), None);
        assert_eq!(base64url_decode("A"), None);
        assert_eq!(base64url_decode("AA=="), None);
        assert_eq!(base64url_decode("+/8"), None);
    }
}
