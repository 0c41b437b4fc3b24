//! A hostname a provider serves, and the origin behind it: what a peer needs to know to serve
//! that hostname on the provider's behalf.

use serde::{Deserialize, Serialize};

use super::keys::service_key;
use super::{HOUR_MS, Kind, ProviderId, Record, RecordError};
use crate::CanonicalUrl;
use crate::token::{MAX_TOKEN_KEYS, TokenKey, check_key_id};

/// Longest DNS name (RFC 1035 §2.3.4, without the trailing dot).
pub const MAX_HOSTNAME_LEN: usize = 253;
/// Longest label of a DNS name.
pub const MAX_HOSTNAME_LABEL_LEN: usize = 63;
/// Longest origin URL: a scheme, a host and a base path; far below [`crate::MAX_URL_LEN`],
/// which bounds request URLs.
pub const MAX_ORIGIN_LEN: usize = 2048;

/// Who may fetch a service's content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Access {
    /// Anyone; the origin serves the content without credentials.
    #[default]
    Public,
    /// Only clients with a token ([`crate::token`]) signed by one of these keys, checked by
    /// every node that serves the service. Postcard encodes the variant's index, so adding
    /// this left `Public`'s encoding alone.
    Token { keys: Vec<TokenKey> },
}

impl Access {
    /// Whether the content is private (token-protected).
    pub fn is_private(&self) -> bool {
        matches!(self, Access::Token { .. })
    }
}

/// A provider's claim to serve `hostname` from `origin`, stored under [`service_key`] and
/// signed by the owner's provider key. It names the hostname's origin for the peers of an
/// arrangement; whether the owner really controls the hostname is for the peer's policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRecord {
    /// A lower-case DNS name without a port or a trailing dot.
    pub hostname: String,
    /// `http://` or `https://` URL in canonical form ([`CanonicalUrl::as_str`]), without a
    /// query or fragment, so every node fetches the same origin the same way.
    pub origin: String,
    pub owner: ProviderId,
    pub access: Access,
}

impl Record for ServiceRecord {
    const KIND: Kind = Kind::ServiceRecord;
    /// The largest valid record, with every token key, is under 3.5 KiB (see the tests).
    const MAX_LEN: usize = 4 * 1024;
    /// A day, like a capacity offer: the owner's agent republishes it, and a moved origin
    /// should not linger for longer.
    const MAX_LIFETIME_MS: u64 = 24 * HOUR_MS;

    fn validate(&self, signer: &[u8; 32], _now_ms: u64) -> Result<(), RecordError> {
        if signer != self.owner.as_bytes() {
            return Err(RecordError::WrongSigner(
                "service record is not signed by its owner",
            ));
        }
        check_hostname("hostname", &self.hostname)?;
        check_origin(&self.origin)?;
        check_access(&self.access)
    }

    fn dht_key(&self) -> Option<Vec<u8>> {
        Some(service_key(&self.hostname))
    }
}

/// A lower-case DNS name: 1..=253 bytes of dot-separated labels, each 1..=63 of `[a-z0-9-]`
/// not starting or ending with `-`. Lower case only, so that one hostname has one DHT key.
pub(crate) fn check_hostname(field: &'static str, hostname: &str) -> Result<(), RecordError> {
    if hostname.is_empty() {
        return Err(RecordError::invalid(field, "empty"));
    }
    if hostname.len() > MAX_HOSTNAME_LEN {
        return Err(RecordError::invalid(field, "too long"));
    }
    for label in hostname.split('.') {
        if label.is_empty() || label.len() > MAX_HOSTNAME_LABEL_LEN {
            return Err(RecordError::invalid(field, "label not 1 to 63 bytes"));
        }
        let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-';
        if !label.bytes().all(allowed) {
            return Err(RecordError::invalid(field, "not a lower-case DNS name"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(RecordError::invalid(field, "label starts or ends with '-'"));
        }
    }
    Ok(())
}

/// A token service lists 1 to [`MAX_TOKEN_KEYS`] keys with distinct, well-formed ids, each a
/// valid ed25519 public key: a record no token could ever pass is refused where it is opened.
fn check_access(access: &Access) -> Result<(), RecordError> {
    let Access::Token { keys } = access else {
        return Ok(());
    };
    if keys.is_empty() || keys.len() > MAX_TOKEN_KEYS {
        return Err(RecordError::invalid("access", "not 1 to 8 token keys"));
    }
    for (i, key) in keys.iter().enumerate() {
        check_key_id(&key.id).map_err(|_| RecordError::invalid("access", "bad key id"))?;
        if keys[..i].iter().any(|k| k.id == key.id) {
            return Err(RecordError::invalid("access", "duplicate key id"));
        }
        if !crate::token::is_usable_key(&key.public) {
            return Err(RecordError::invalid("access", "not an ed25519 public key"));
        }
    }
    Ok(())
}

fn check_origin(origin: &str) -> Result<(), RecordError> {
    if origin.len() > MAX_ORIGIN_LEN {
        return Err(RecordError::invalid("origin", "too long"));
    }
    if !CanonicalUrl::parse(origin).is_ok_and(|url| url.as_str() == origin) {
        return Err(RecordError::invalid(
            "origin",
            "not a canonical http(s) URL",
        ));
    }
    // Canonical form has dropped any fragment, so only a query is left to refuse.
    if origin.contains('?') {
        return Err(RecordError::invalid("origin", "has a query"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::tests::support::*;
    use crate::records::{key_belongs, kind_of_key, open, open_under_key, seal};

    #[test]
    fn round_trips() {
        let owner = provider_key(1);
        let record = service_of(&owner);
        let sealed = seal(owner.signing_key(), &record, NOW, NOW + HOUR_MS).unwrap();
        let opened = open::<ServiceRecord>(&sealed, NOW).unwrap();
        assert_eq!(opened.record(), &record);
        let key = service_key("img.example.com");
        assert_eq!(key, b"/reef/v1/service/img.example.com");
        assert_eq!(kind_of_key(&key), Some(Kind::ServiceRecord));
        assert!(key_belongs(&key, &opened));
        assert_eq!(
            reason(open_under_key::<ServiceRecord>(
                &service_key("other.example.com"),
                &sealed,
                NOW
            )),
            "wrong_signer"
        );
    }

    #[test]
    fn rejects_the_common_attacks() {
        let owner = provider_key(1);
        rejects_tampering(owner.signing_key(), &service_of(&owner));
    }

    #[test]
    fn only_the_owner_can_sign() {
        let record = service_of(&provider_key(1));
        let intruder = provider_key(5);
        let forged = seal_unchecked(intruder.signing_key(), &record, NOW, NOW + HOUR_MS);
        assert_eq!(reason(open::<ServiceRecord>(&forged, NOW)), "wrong_signer");
        assert_eq!(
            reason(seal(intruder.signing_key(), &record, NOW, NOW + HOUR_MS)),
            "wrong_signer"
        );
    }

    #[test]
    fn hostnames_are_lower_case_dns_names() {
        let long_label = "a".repeat(MAX_HOSTNAME_LABEL_LEN);
        let longest = [&long_label[..], &long_label, &long_label, &"b".repeat(61)].join(".");
        assert_eq!(longest.len(), MAX_HOSTNAME_LEN);
        for good in ["a", "img.example.com", "x-1.b2", "123.example", &longest] {
            assert_eq!(check_hostname("h", good), Ok(()), "{good}");
        }
        let too_long = format!("{longest}a");
        let long_label = format!("{}.com", "a".repeat(MAX_HOSTNAME_LABEL_LEN + 1));
        for bad in [
            "",
            &too_long,
            &long_label,
            "Img.example.com",
            "img.example.com.",
            ".example.com",
            "a..b",
            "img.example.com:8080",
            "-a.example",
            "a-.example",
            "a_b.example",
            "é.example",
            "a b",
        ] {
            assert!(check_hostname("h", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fields_are_bounded() {
        let owner = provider_key(1);
        let good = service_of(&owner);
        let origin = |o: &str| ServiceRecord {
            origin: o.into(),
            ..good.clone()
        };
        let long_origin = format!("https://o.example/{}", "p".repeat(MAX_ORIGIN_LEN));
        let cases = [
            ServiceRecord {
                hostname: "IMG.example.com".into(),
                ..good.clone()
            },
            ServiceRecord {
                hostname: String::new(),
                ..good.clone()
            },
            origin(""),
            origin("ftp://o.example/"),
            origin("https://o.example"),
            origin("HTTPS://o.example/"),
            origin("https://o.example/?a=1"),
            origin("https://o.example/#top"),
            origin("https://u@o.example/"),
            origin("/just/a/path"),
            origin(&long_origin),
        ];
        for bad in cases {
            let sealed = seal_unchecked(owner.signing_key(), &bad, NOW, NOW + HOUR_MS);
            assert_eq!(
                reason(open::<ServiceRecord>(&sealed, NOW)),
                "invalid",
                "{bad:?}"
            );
            assert_eq!(
                reason(seal(owner.signing_key(), &bad, NOW, NOW + HOUR_MS)),
                "invalid"
            );
        }
        for fine in ["http://10.0.0.1:8080/", "https://o.example/base/"] {
            assert!(seal(owner.signing_key(), &origin(fine), NOW, NOW + HOUR_MS).is_ok());
        }
    }

    #[test]
    fn access_is_an_extensible_enum() {
        // The variant index, so later variants leave `Public`'s encoding alone.
        assert_eq!(postcard::to_stdvec(&Access::Public).unwrap(), [0]);
        assert!(postcard::from_bytes::<Access>(&[1]).is_err());
        assert!(postcard::from_bytes::<Access>(&[2]).is_err());
        let token = Access::Token {
            keys: vec![token_key("k1", 1)],
        };
        let bytes = postcard::to_stdvec(&token).unwrap();
        assert_eq!(bytes[0], 1);
        assert_eq!(postcard::from_bytes::<Access>(&bytes).unwrap(), token);
    }

    fn token_key(id: &str, seed: u8) -> TokenKey {
        TokenKey {
            id: id.into(),
            public: crate::token::TokenSigner::from_bytes(&[seed; 32]).public(),
        }
    }

    #[test]
    fn token_access_is_checked_on_open() {
        let owner = provider_key(1);
        let with = |keys: Vec<TokenKey>| ServiceRecord {
            access: Access::Token { keys },
            ..service_of(&owner)
        };
        let good = with(vec![token_key("k1", 1), token_key("k2", 2)]);
        let sealed = seal(owner.signing_key(), &good, NOW, NOW + HOUR_MS).unwrap();
        assert_eq!(open::<ServiceRecord>(&sealed, NOW).unwrap().record(), &good);
        let too_many = (0..=MAX_TOKEN_KEYS as u8)
            .map(|i| token_key(&format!("k{i}"), i + 1))
            .collect();
        for bad in [
            with(vec![]),
            with(too_many),
            with(vec![token_key("k1", 1), token_key("k1", 2)]),
            with(vec![token_key("", 1)]),
            with(vec![token_key("k 1", 1)]),
            // The identity point: a small-order key.
            with(vec![TokenKey {
                id: "k1".into(),
                public: std::array::from_fn(|i| u8::from(i == 0)),
            }]),
        ] {
            let sealed = seal_unchecked(owner.signing_key(), &bad, NOW, NOW + HOUR_MS);
            assert_eq!(
                reason(open::<ServiceRecord>(&sealed, NOW)),
                "invalid",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn largest_valid_record_fits() {
        let owner = provider_key(1);
        let label = "a".repeat(MAX_HOSTNAME_LABEL_LEN);
        let hostname = [&label[..], &label, &label, &"b".repeat(61)].join(".");
        let prefix = "https://o.example/";
        let record = ServiceRecord {
            hostname,
            origin: format!("{prefix}{}", "p".repeat(MAX_ORIGIN_LEN - prefix.len())),
            owner: owner.id(),
            access: Access::Token {
                keys: (0..MAX_TOKEN_KEYS as u8)
                    .map(|i| token_key(&format!("{i:0>32}"), i + 1))
                    .collect(),
            },
        };
        let sealed = seal(
            owner.signing_key(),
            &record,
            u64::MAX - ServiceRecord::MAX_LIFETIME_MS,
            u64::MAX,
        )
        .unwrap();
        assert!(sealed.len() <= ServiceRecord::MAX_LEN, "{}", sealed.len());
    }
}
