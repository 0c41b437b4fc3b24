//! Sealing and opening envelopes; the byte layout is documented on the `records` module.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::{Record, RecordError};

/// The envelope format this code writes and reads.
pub const ENVELOPE_VERSION: u8 = 1;
/// Prefix of every signed message. The keys that sign records also sign other things (a
/// node's libp2p key signs noise handshakes and gossip); the prefix makes sure no such
/// signature is ever a valid record signature, nor the other way round.
pub const DOMAIN: &[u8] = b"reef signed record v1\0";
pub const SIGNATURE_LEN: usize = 64;
/// Most bytes an envelope adds to its body: version 1, kind 1, signer 32, two u64 varints of at
/// most 10, a body-length varint (3 bytes cover bodies under 2 MiB), the signature 64.
pub const ENVELOPE_OVERHEAD: usize = 1 + 1 + 32 + 10 + 10 + 3 + SIGNATURE_LEN;
/// How far ahead of our clock a record may be issued: clocks of honest nodes drift a little;
/// more than this and a record could outrank ([`is_newer`]) the signer's real later ones.
pub const MAX_CLOCK_SKEW_MS: u64 = 60 * 1000;

/// Everything the signature covers, in wire order. `body` borrows from the input on decode.
#[derive(Serialize, Deserialize)]
struct Signed<'a> {
    version: u8,
    kind: u8,
    signer: [u8; 32],
    issued_at: u64,
    expires_at: u64,
    body: &'a [u8],
}

/// A record whose envelope, signature, times and own checks have all passed. Only [`open`]
/// makes one, so holding an `Opened` means the record was verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened<T> {
    signer: [u8; 32],
    issued_at: u64,
    expires_at: u64,
    signature: [u8; SIGNATURE_LEN],
    record: T,
}

impl<T> Opened<T> {
    /// The ed25519 public key that signed the record.
    pub fn signer(&self) -> &[u8; 32] {
        &self.signer
    }

    /// Unix milliseconds.
    pub fn issued_at(&self) -> u64 {
        self.issued_at
    }

    /// Unix milliseconds; the record is dead from this instant on.
    pub fn expires_at(&self) -> u64 {
        self.expires_at
    }

    pub fn signature(&self) -> &[u8; SIGNATURE_LEN] {
        &self.signature
    }

    pub fn record(&self) -> &T {
        &self.record
    }

    pub fn into_record(self) -> T {
        self.record
    }

    /// See [`is_newer`].
    pub fn is_newer_than(&self, other: &Opened<T>) -> bool {
        is_newer(self, other)
    }
}

/// Whether `candidate` replaces `current` in a store that keeps one record per key: later
/// `issued_at` wins, and equal times are broken by the signature bytes so that every replica
/// converges on the same record. An identical record is not newer; a store should treat it as
/// a no-op re-put and anything else that is not newer as a `replay`.
pub fn is_newer<T>(candidate: &Opened<T>, current: &Opened<T>) -> bool {
    (candidate.issued_at, candidate.signature) > (current.issued_at, current.signature)
}

/// Signs `record` as `key`, valid from `issued_at` until (excluding) `expires_at`, both unix
/// milliseconds. Runs the checks `open` would at `issued_at` (lifetime, size, the record's own
/// checks), so what a node publishes is what its peers accept.
pub fn seal<T: Record>(
    key: &SigningKey,
    record: &T,
    issued_at: u64,
    expires_at: u64,
) -> Result<Vec<u8>, RecordError> {
    check_lifetime::<T>(issued_at, expires_at)?;
    let signer = key.verifying_key().to_bytes();
    record.validate(&signer, issued_at)?;
    // Serialising these owned, bounded types into a Vec only fails on a bug in serde/postcard.
    let body = postcard::to_stdvec(record).map_err(|_| RecordError::invalid("body", "encode"))?;
    let signed = Signed {
        version: ENVELOPE_VERSION,
        kind: T::KIND.code(),
        signer,
        issued_at,
        expires_at,
        body: &body,
    };
    let mut out =
        postcard::to_stdvec(&signed).map_err(|_| RecordError::invalid("envelope", "encode"))?;
    let len = out.len() + SIGNATURE_LEN;
    if len > T::MAX_LEN {
        return Err(RecordError::TooLarge {
            len,
            max: T::MAX_LEN,
        });
    }
    let signature = key.sign(&message(&out));
    out.extend_from_slice(&signature.to_bytes());
    Ok(out)
}

/// Verifies `bytes` as a `T` at time `now_ms` (unix milliseconds) and decodes it. Never panics;
/// any input that is not a valid, current `T` envelope is an error whose
/// [`reason`](RecordError::reason) says why.
pub fn open<T: Record>(bytes: &[u8], now_ms: u64) -> Result<Opened<T>, RecordError> {
    if bytes.len() > T::MAX_LEN {
        return Err(RecordError::TooLarge {
            len: bytes.len(),
            max: T::MAX_LEN,
        });
    }
    let split = bytes
        .len()
        .checked_sub(SIGNATURE_LEN)
        .ok_or(RecordError::Garbage("envelope"))?;
    let (signed_bytes, signature_bytes) = bytes.split_at(split);
    let (signed, rest) = postcard::take_from_bytes::<Signed<'_>>(signed_bytes)
        .map_err(|_| RecordError::Garbage("envelope"))?;
    if !rest.is_empty() {
        return Err(RecordError::Garbage("envelope"));
    }
    let signature: [u8; SIGNATURE_LEN] = signature_bytes
        .try_into()
        .map_err(|_| RecordError::Garbage("envelope"))?;

    if signed.version != ENVELOPE_VERSION {
        return Err(RecordError::Version(signed.version));
    }
    if signed.kind != T::KIND.code() {
        return Err(RecordError::WrongKind {
            expected: T::KIND,
            found: signed.kind,
        });
    }
    // verify_strict also rejects small-order keys and non-canonical signatures, so a valid
    // signature cannot be reshaped into another valid one for the same bytes.
    let key = VerifyingKey::from_bytes(&signed.signer).map_err(|_| RecordError::BadSignature)?;
    key.verify_strict(&message(signed_bytes), &Signature::from_bytes(&signature))
        .map_err(|_| RecordError::BadSignature)?;

    if signed.expires_at <= now_ms {
        return Err(RecordError::Expired {
            expires_at: signed.expires_at,
            now: now_ms,
        });
    }
    if signed.issued_at > now_ms.saturating_add(MAX_CLOCK_SKEW_MS) {
        return Err(RecordError::Future {
            issued_at: signed.issued_at,
            now: now_ms,
        });
    }
    check_lifetime::<T>(signed.issued_at, signed.expires_at)?;

    let record = decode_body::<T>(signed.body, &signed.signer, now_ms)?;
    Ok(Opened {
        signer: signed.signer,
        issued_at: signed.issued_at,
        expires_at: signed.expires_at,
        signature,
        record,
    })
}

/// An envelope with any header and body, signed as given without any check: for tests that
/// need records `seal` refuses to make.
#[cfg(test)]
pub(crate) fn seal_raw(
    key: &SigningKey,
    version: u8,
    kind: u8,
    issued_at: u64,
    expires_at: u64,
    body: &[u8],
) -> Vec<u8> {
    let signed = Signed {
        version,
        kind,
        signer: key.verifying_key().to_bytes(),
        issued_at,
        expires_at,
        body,
    };
    let mut out = postcard::to_stdvec(&signed).unwrap_or_default();
    let signature = key.sign(&message(&out));
    out.extend_from_slice(&signature.to_bytes());
    out
}

/// The last steps of [`open`], after the signature: decode the body and run the record's own
/// checks. Public so fuzzers and property tests can reach the body decoders with arbitrary
/// bytes, which they never could through a signature they cannot forge. Its result is not
/// verified: use [`open`] for anything from the network.
#[doc(hidden)]
pub fn decode_body<T: Record>(
    body: &[u8],
    signer: &[u8; 32],
    now_ms: u64,
) -> Result<T, RecordError> {
    if body.len() > T::MAX_LEN {
        return Err(RecordError::TooLarge {
            len: body.len(),
            max: T::MAX_LEN,
        });
    }
    let (record, rest) =
        postcard::take_from_bytes::<T>(body).map_err(|_| RecordError::Garbage("body"))?;
    if !rest.is_empty() {
        return Err(RecordError::Garbage("body"));
    }
    record.validate(signer, now_ms)?;
    Ok(record)
}

/// A lifetime must be non-empty and within the kind's maximum, so that a leaked or stale
/// record cannot be kept alive for longer than its kind allows.
fn check_lifetime<T: Record>(issued_at: u64, expires_at: u64) -> Result<(), RecordError> {
    let lifetime = expires_at.saturating_sub(issued_at);
    if lifetime == 0 || lifetime > T::MAX_LIFETIME_MS {
        return Err(RecordError::Lifetime {
            issued_at,
            expires_at,
            max_ms: T::MAX_LIFETIME_MS,
        });
    }
    Ok(())
}

/// What is signed: the domain prefix, then the encoded fields as they are on the wire.
fn message(signed_bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(DOMAIN.len() + signed_bytes.len());
    out.extend_from_slice(DOMAIN);
    out.extend_from_slice(signed_bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_part_is_postcard_of_the_header_tuple() {
        // The layout documented on the module: a tuple of the fields with body as bytes.
        let body = [7u8, 8, 9];
        let signed = Signed {
            version: 1,
            kind: 2,
            signer: [5; 32],
            issued_at: 300,
            expires_at: 1,
            body: &body,
        };
        let bytes = postcard::to_stdvec(&signed).unwrap();
        let mut expected = vec![1, 2];
        expected.extend_from_slice(&[5; 32]);
        expected.extend_from_slice(&[0xac, 0x02, 0x01, 3, 7, 8, 9]);
        assert_eq!(bytes, expected);
        let tuple: (u8, u8, [u8; 32], u64, u64, Vec<u8>) = (1, 2, [5; 32], 300, 1, body.to_vec());
        assert_eq!(postcard::to_stdvec(&tuple).unwrap(), expected);
    }
}
