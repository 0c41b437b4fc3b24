//! Provider certificates, and what they make of the nodes that carry them.

use serde::{Deserialize, Serialize};

use super::identity::ed25519_key_of_peer_id;
use super::{HOUR_MS, Kind, Opened, ProviderId, Record, RecordError, open, text};

/// Longest provider name: a label for people, never used to decide anything.
pub const MAX_PROVIDER_NAME_LEN: usize = 64;

/// A provider's key vouching that a node belongs to it. The envelope's `expires_at` is the
/// certificate's `valid_until`; nodes carry it in their [`NodeRecord`](super::NodeRecord) and
/// [`LoadReport`](super::LoadReport)s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderCert {
    pub provider: ProviderId,
    /// The provider's name, as the provider chooses to call itself.
    pub name: String,
    /// PeerId bytes of the certified node (an ed25519 peer id, see
    /// [`peer_id_bytes`](super::peer_id_bytes)).
    pub node: Vec<u8>,
}

impl Record for ProviderCert {
    const KIND: Kind = Kind::ProviderCert;
    /// Real ones are under 200 bytes, the largest valid one 256 (see the tests); this also
    /// bounds the certificate carried in node records and load reports.
    const MAX_LEN: usize = 512;
    /// A month: operators renew certificates by hand or by cron; shorter would turn a forgotten
    /// renewal into an outage, longer keeps a node of a former member listed for too long.
    const MAX_LIFETIME_MS: u64 = 30 * 24 * HOUR_MS;

    fn validate(&self, signer: &[u8; 32], _now_ms: u64) -> Result<(), RecordError> {
        if signer != self.provider.as_bytes() {
            return Err(RecordError::WrongSigner(
                "certificate is not signed by its provider",
            ));
        }
        text::label("name", &self.name, MAX_PROVIDER_NAME_LEN)?;
        if ed25519_key_of_peer_id(&self.node).is_none() {
            return Err(RecordError::invalid("node", "not an ed25519 peer id"));
        }
        Ok(())
    }

    fn dht_key(&self) -> Option<Vec<u8>> {
        // Travels inside node records and load reports only.
        None
    }
}

/// Which provider a node belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Membership {
    /// The provider's key signed a certificate for this node.
    Certified { provider: ProviderId, name: String },
    /// No certificate (or it has since expired): the node is a provider of its own, identified
    /// by its own key. Whatever name it claims elsewhere, it is never listed under another
    /// provider.
    Independent { provider: ProviderId },
}

impl Membership {
    pub fn provider(&self) -> ProviderId {
        match self {
            Membership::Certified { provider, .. } | Membership::Independent { provider } => {
                *provider
            }
        }
    }

    pub fn is_certified(&self) -> bool {
        matches!(self, Membership::Certified { .. })
    }
}

/// Opens the certificate a node carries and checks it is for `peer_id`.
pub(crate) fn check_cert(
    cert: &[u8],
    peer_id: &[u8],
    now_ms: u64,
) -> Result<Opened<ProviderCert>, RecordError> {
    let opened = open::<ProviderCert>(cert, now_ms).map_err(|e| RecordError::Cert(Box::new(e)))?;
    if opened.record().node != peer_id {
        return Err(RecordError::Cert(Box::new(RecordError::WrongSigner(
            "certificate is for another node",
        ))));
    }
    Ok(opened)
}

/// The membership of the node that signed a record carrying `cert`, at `now_ms`.
pub(crate) fn membership(
    signer: &[u8; 32],
    peer_id: &[u8],
    cert: Option<&[u8]>,
    now_ms: u64,
) -> Membership {
    // Checked again rather than remembered from `open`: the certificate may have expired since.
    match cert.map(|c| check_cert(c, peer_id, now_ms)) {
        Some(Ok(opened)) => {
            let cert = opened.into_record();
            Membership::Certified {
                provider: cert.provider,
                name: cert.name,
            }
        }
        _ => Membership::Independent {
            provider: ProviderId::from_bytes(*signer),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::tests::support::*;
    use crate::records::{SigningKey, peer_id_bytes, seal};

    #[test]
    fn round_trips() {
        let provider = provider_key(1);
        let cert = cert_for(&provider, &node_key(2));
        let sealed = seal(provider.signing_key(), &cert, NOW, NOW + DAY).unwrap();
        let opened = open::<ProviderCert>(&sealed, NOW).unwrap();
        assert_eq!(opened.record(), &cert);
        assert_eq!(opened.signer(), provider.id().as_bytes());
        assert_eq!(opened.expires_at(), NOW + DAY);
    }

    #[test]
    fn rejects_the_common_attacks() {
        let provider = provider_key(1);
        rejects_tampering(provider.signing_key(), &cert_for(&provider, &node_key(2)));
    }

    #[test]
    fn only_the_provider_can_sign_its_certificate() {
        // A node (or another provider) signing a certificate that names provider 1.
        let cert = cert_for(&provider_key(1), &node_key(2));
        let intruder = provider_key(3);
        let forged = seal_unchecked(intruder.signing_key(), &cert, NOW, NOW + DAY);
        assert_eq!(reason(open::<ProviderCert>(&forged, NOW)), "wrong_signer");
        assert_eq!(
            reason(seal(intruder.signing_key(), &cert, NOW, NOW + DAY)),
            "wrong_signer"
        );
    }

    #[test]
    fn fields_are_bounded() {
        let provider = provider_key(1);
        let good = cert_for(&provider, &node_key(2));
        let cases = [
            ProviderCert {
                name: String::new(),
                ..good.clone()
            },
            ProviderCert {
                name: "n".repeat(MAX_PROVIDER_NAME_LEN + 1),
                ..good.clone()
            },
            ProviderCert {
                name: "acme\n2025-01-01 INFO forged".into(),
                ..good.clone()
            },
            ProviderCert {
                node: vec![1, 2, 3],
                ..good.clone()
            },
        ];
        for bad in cases {
            let sealed = seal_unchecked(provider.signing_key(), &bad, NOW, NOW + DAY);
            assert_eq!(
                reason(open::<ProviderCert>(&sealed, NOW)),
                "invalid",
                "{bad:?}"
            );
            assert_eq!(
                reason(seal(provider.signing_key(), &bad, NOW, NOW + DAY)),
                "invalid"
            );
        }
    }

    #[test]
    fn largest_valid_certificate_fits() {
        let provider = provider_key(1);
        let cert = ProviderCert {
            provider: provider.id(),
            name: "n".repeat(MAX_PROVIDER_NAME_LEN),
            node: peer_id_bytes(&[0xff; 32]),
        };
        let sealed = seal(
            provider.signing_key(),
            &cert,
            u64::MAX - ProviderCert::MAX_LIFETIME_MS,
            u64::MAX,
        )
        .unwrap();
        assert!(sealed.len() <= ProviderCert::MAX_LEN);
    }

    #[test]
    fn membership_needs_a_valid_certificate_for_this_node() {
        let provider = provider_key(1);
        let node = node_key(2);
        let node_peer = peer_of(&node);
        let signer = node.verifying_key().to_bytes();
        let cert = seal(
            provider.signing_key(),
            &cert_for(&provider, &node),
            NOW,
            NOW + DAY,
        )
        .unwrap();
        assert_eq!(
            membership(&signer, &node_peer, Some(&cert), NOW),
            Membership::Certified {
                provider: provider.id(),
                name: "acme".into()
            }
        );
        let independent = Membership::Independent {
            provider: ProviderId::from_bytes(signer),
        };
        assert_eq!(membership(&signer, &node_peer, None, NOW), independent);
        // Expired since.
        assert_eq!(
            membership(&signer, &node_peer, Some(&cert), NOW + DAY),
            independent
        );
        // Another node's certificate.
        let other: SigningKey = node_key(9);
        let other_cert = seal(
            provider.signing_key(),
            &cert_for(&provider, &other),
            NOW,
            NOW + DAY,
        )
        .unwrap();
        assert_eq!(
            membership(&signer, &node_peer, Some(&other_cert), NOW),
            independent
        );
        assert_eq!(
            reason(check_cert(&other_cert, &node_peer, NOW)),
            "wrong_signer"
        );
    }
}
