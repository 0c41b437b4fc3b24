//! Private content: services whose objects only token holders may fetch.
//!
//! A service is made private in its owner's config (`access = "token"` and the public keys its
//! tokens are signed with, `token_keys`); the keys travel in the signed ServiceRecord, so every
//! node that serves the service, the owner's or a peer provider's under an arrangement, checks
//! tokens the same way ([`gate`]). Tokens themselves are `reef_proto::token`.
//!
//! What keeps a private object from leaking through the overlay:
//! - it is never announced in the DHT, and its ContentRecord is never published there (it is
//!   kept in the node's memory, with only the body's hash and length, for the provider's own
//!   nodes that stream the body from it);
//! - it is stored with the [`PRIVATE_HEADER`] marker, so a node knows a stored copy is private
//!   whatever it knows of the service at the moment (after a restart, with the service's record
//!   not looked up yet);
//! - a node hands a private object (`/_reef/object/<key>`) only to nodes of its own provider,
//!   which prove it with [`object_auth`]: cold misses still go to the key's home node within a
//!   provider, and a peer provider's nodes fetch their misses from the origin.

pub mod gate;
pub mod object_auth;

use std::collections::BTreeMap;

use reef_proto::records::Access;
use reef_proto::token::{MAX_TOKEN_KEYS, TokenKey, check_key_id};

pub use gate::{Rejections, TokenCheck};
pub use object_auth::ObjectAuth;

/// On a stored private object's headers (and so on what a node sends of it): the object
/// belongs to a token-protected service.
pub const PRIVATE_HEADER: &str = "x-reef-access";

/// Marks a request for a token-protected service on its way into the fetch pipeline (a
/// request extension): its object is stored marked, and never announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Private;

/// A service's `access` and `token_keys` settings as an [`Access`]; None when neither is
/// given (the layer leaves the access as it was).
pub fn access_of(
    access: Option<String>,
    keys: Option<BTreeMap<String, String>>,
) -> Result<Option<Access>, String> {
    match (access.as_deref(), keys) {
        (None, None) => Ok(None),
        (None | Some("public"), Some(_)) => {
            Err("token_keys are given, but access is not \"token\"".into())
        }
        (Some("public"), None) => Ok(Some(Access::Public)),
        (Some("token"), None) => Err(
            "access = \"token\" needs token_keys = { ID = \"PUBLIC KEY HEX\" } (see `reef token keygen`)"
                .into(),
        ),
        (Some("token"), Some(keys)) => {
            if keys.is_empty() || keys.len() > MAX_TOKEN_KEYS {
                return Err(format!("token_keys must list 1 to {MAX_TOKEN_KEYS} keys"));
            }
            let keys = keys
                .into_iter()
                .map(|(id, public)| {
                    check_key_id(&id).map_err(|e| format!("token key {id:?}: {e}"))?;
                    let public = public_key(&public).map_err(|e| format!("token key {id:?}: {e}"))?;
                    Ok(TokenKey { id, public })
                })
                .collect::<Result<Vec<_>, String>>()?;
            Ok(Some(Access::Token { keys }))
        }
        (Some(other), _) => Err(format!(
            "access {other:?} is not \"public\" or \"token\""
        )),
    }
}

/// An ed25519 public key as 64 hex digits, checked to be a usable key.
pub fn public_key(text: &str) -> Result<[u8; 32], String> {
    let bytes = crate::hex::decode32(text).ok_or("the public key is not 64 hex digits")?;
    if !reef_proto::token::is_usable_key(&bytes) {
        return Err("not a valid ed25519 public key".into());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn access_settings_parse_with_reasons() {
        let public =
            crate::hex::encode(&reef_proto::token::TokenSigner::from_bytes(&[3; 32]).public());
        assert_eq!(access_of(None, None), Ok(None));
        assert_eq!(
            access_of(Some("public".into()), None),
            Ok(Some(Access::Public))
        );
        let Ok(Some(Access::Token { keys: got })) = access_of(
            Some("token".into()),
            keys(&[("k1", &public), ("k2", &public)]),
        ) else {
            panic!("token access did not parse");
        };
        assert_eq!(got.len(), 2);
        for (access, given, why) in [
            (Some("token"), None, "needs token_keys"),
            (None, keys(&[("k1", &public)]), "access is not"),
            (Some("secret"), None, "is not \"public\""),
            (Some("token"), keys(&[]), "1 to 8"),
            (Some("token"), keys(&[("k 1", &public)]), "key id"),
            (Some("token"), keys(&[("k1", "abc")]), "64 hex"),
            (
                Some("token"),
                keys(&[("k1", &"0".repeat(64))]),
                "valid ed25519",
            ),
        ] {
            let err = access_of(access.map(str::to_string), given).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }
}
