//! Which provider this node belongs to, and the proof of it.
//!
//! A provider *is* an ed25519 key ([`ProviderKey`]); its id is the public key, its name a
//! label. `reef provider init` writes a key file; `reef run --provider-key FILE` makes the
//! node issue itself a [`ProviderCert`] with that key at start (30 days, the longest a
//! certificate may live), carry it in its NodeRecord, and renew it halfway through while
//! running. Every machine that holds the file can certify nodes of that provider, so it goes
//! only where the provider's own nodes run.
//!
//! A node without a key is its own single-node provider: its id is its own public key, and
//! `--provider NAME` is only a label for it, shown in its own status, logs and
//! `runtime.json`, never published. Nobody can make such a node count as a member of a
//! certified provider by naming it, and a certified provider's name proves nothing either:
//! peers decide membership by the certificate's signature alone.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reef_overlay::PeerId;
use reef_proto::records::{
    KeyError, MAX_PROVIDER_NAME_LEN, ProviderCert, ProviderId, ProviderKey, Record, RecordError,
    seal,
};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::hex;

/// A certificate lives as long as its kind allows: renewal is automatic while the node runs.
pub const CERT_LIFETIME: Duration = Duration::from_millis(ProviderCert::MAX_LIFETIME_MS);
/// Renewed halfway, so a node that fails to renew (a clock jump, an overlay hiccup) has two
/// weeks of retries before its peers stop counting it as a member.
pub const CERT_RENEW_AFTER: Duration = Duration::from_millis(ProviderCert::MAX_LIFETIME_MS / 2);
/// A failed renewal is retried this often.
const CERT_RETRY: Duration = Duration::from_secs(60 * 60);

#[derive(Debug, thiserror::Error)]
pub enum ProviderKeyError {
    #[error("cannot read provider key {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("provider key {path} is not valid: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("{path} already exists; refusing to overwrite a provider key")]
    Exists { path: PathBuf },
    #[error("cannot write provider key {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("provider name {name:?} is not valid: {reason}")]
    Name { name: String, reason: String },
    #[error("cannot make a provider key: {0}")]
    Generate(#[from] KeyError),
}

/// The key file: small, self-describing TOML. `id` is redundant (derived from `secret`) and
/// checked on load, so a damaged or hand-edited file is caught instead of silently becoming
/// another provider.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    name: String,
    id: Option<String>,
    secret: String,
}

/// A provider's key and the name its certificates carry.
#[derive(Clone)]
pub struct ProviderIdentity {
    pub name: String,
    pub key: ProviderKey,
}

impl std::fmt::Debug for ProviderIdentity {
    // Never the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderIdentity")
            .field("name", &self.name)
            .field("id", &self.key.id())
            .finish()
    }
}

/// A provider name: what certificates accept (1 to 64 bytes, no control characters).
pub fn check_name(name: &str) -> Result<(), ProviderKeyError> {
    let bad = |reason: &str| ProviderKeyError::Name {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if name.len() > MAX_PROVIDER_NAME_LEN {
        return Err(bad(&format!("longer than {MAX_PROVIDER_NAME_LEN} bytes")));
    }
    if name.chars().any(char::is_control) {
        return Err(bad("contains control characters"));
    }
    Ok(())
}

/// `reef provider init`: a new key named `name` in a new file at `path` (mode 0600; an
/// existing file is never overwritten).
pub fn init(path: &Path, name: &str) -> Result<ProviderIdentity, ProviderKeyError> {
    check_name(name)?;
    let key = ProviderKey::generate()?;
    let file = KeyFile {
        name: name.to_string(),
        id: Some(key.id().to_string()),
        secret: hex::encode(&key.to_bytes()),
    };
    let body = toml::to_string(&file).map_err(|e| ProviderKeyError::Invalid {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let text = format!(
        "# Reef provider key. Whoever holds this file can certify nodes as this provider:\n\
         # keep it private, and copy it only to the machines of this provider's nodes.\n{body}"
    );
    crate::secret_file::create(path, &text).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            ProviderKeyError::Exists {
                path: path.to_owned(),
            }
        } else {
            ProviderKeyError::Write {
                path: path.to_owned(),
                source: e,
            }
        }
    })?;
    Ok(ProviderIdentity {
        name: name.to_string(),
        key,
    })
}

/// Reads a key file written by [`init`].
pub fn load(path: &Path) -> Result<ProviderIdentity, ProviderKeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| ProviderKeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    let invalid = |reason: String| ProviderKeyError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let file: KeyFile = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    check_name(&file.name).map_err(|e| invalid(e.to_string()))?;
    let secret = hex::decode32(&file.secret)
        .ok_or_else(|| invalid("secret is not 64 hex digits".to_string()))?;
    let key = ProviderKey::from_bytes(&secret);
    if let Some(id) = &file.id {
        let id: ProviderId = id
            .parse()
            .map_err(|e: reef_proto::records::BadProviderId| invalid(format!("id: {e}")))?;
        if id != key.id() {
            return Err(invalid("id does not match the secret".to_string()));
        }
    }
    warn_if_readable_by_others(path);
    Ok(ProviderIdentity {
        name: file.name,
        key,
    })
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        warn!(path = %path.display(), "provider key is readable by other users; chmod 600 it");
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

/// A certificate of `provider` for the node `peer`, valid from `now_ms` for [`CERT_LIFETIME`].
pub fn issue_cert(
    provider: &ProviderIdentity,
    peer: &PeerId,
    now_ms: u64,
) -> Result<Vec<u8>, RecordError> {
    let cert = ProviderCert {
        provider: provider.key.id(),
        name: provider.name.clone(),
        node: peer.to_bytes(),
    };
    seal(
        provider.key.signing_key(),
        &cert,
        now_ms,
        now_ms.saturating_add(ProviderCert::MAX_LIFETIME_MS),
    )
}

/// Renews the node's certificate every [`CERT_RENEW_AFTER`] for as long as the node runs.
pub fn spawn_renewal(
    provider: ProviderIdentity,
    peer: PeerId,
    overlay: reef_overlay::Client,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut wait = CERT_RENEW_AFTER;
        loop {
            tokio::time::sleep(wait).await;
            let renewed = match issue_cert(&provider, &peer, unix_ms()) {
                Ok(cert) => overlay
                    .set_provider_cert(Some(cert))
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            wait = match renewed {
                Ok(()) => {
                    info!(provider = %provider.key.id().short(), "provider certificate renewed");
                    CERT_RENEW_AFTER
                }
                Err(error) => {
                    warn!(%error, "renewing the provider certificate failed; retrying");
                    CERT_RETRY
                }
            };
        }
    })
}

/// Whom a node belongs to, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProviderStatus {
    /// The provider's id (hex public key); for an independent node, its own public key.
    pub id: ProviderId,
    /// The certified name; for an independent node its own label (ours) or none (others').
    pub name: Option<String>,
    /// Whether a provider's key certified this node.
    pub certified: bool,
}

impl ProviderStatus {
    /// How another node's verified membership is shown.
    pub fn of(membership: &reef_proto::records::Membership) -> Self {
        match membership {
            reef_proto::records::Membership::Certified { provider, name } => Self {
                id: *provider,
                name: Some(name.clone()),
                certified: true,
            },
            reef_proto::records::Membership::Independent { provider } => Self {
                id: *provider,
                name: None,
                certified: false,
            },
        }
    }
}

pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Tokens and object stamps count in whole seconds.
pub fn unix_secs() -> u64 {
    unix_ms() / 1000
}

#[cfg(test)]
mod tests {
    use reef_proto::records::open;

    use super::*;

    #[test]
    fn init_writes_a_private_file_that_loads_back_and_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("acme.key");
        let made = init(&path, "acme").unwrap();
        let loaded = load(&path).unwrap();
        assert_eq!(loaded.key.id(), made.key.id());
        assert_eq!(loaded.name, "acme");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(&made.key.id().to_string()), "{text}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(matches!(
            init(&path, "other"),
            Err(ProviderKeyError::Exists { .. })
        ));
        assert_eq!(load(&path).unwrap().key.id(), made.key.id(), "unchanged");
    }

    #[test]
    fn bad_names_and_files_are_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["", "a\nb", &"n".repeat(MAX_PROVIDER_NAME_LEN + 1)] {
            assert!(matches!(
                init(&dir.path().join("x.key"), name),
                Err(ProviderKeyError::Name { .. })
            ));
        }
        assert!(matches!(
            load(&dir.path().join("missing.key")),
            Err(ProviderKeyError::Read { .. })
        ));
        let good = init(&dir.path().join("good.key"), "acme").unwrap();
        let secret = hex::encode(&good.key.to_bytes());
        let other_id = ProviderKey::from_bytes(&[1; 32]).id();
        for (i, text) in [
            "garbage".to_string(),
            format!("name = \"acme\"\nsecret = \"{}\"\n", &secret[..60]),
            format!("name = \"acme\"\nsecret = \"{secret}\"\nid = \"{other_id}\"\n"),
            format!("name = \"\"\nsecret = \"{secret}\"\n"),
            format!("name = \"acme\"\nsecret = \"{secret}\"\ncolour = 1\n"),
            format!("name = \"acme\"\nsecret = \"{}zz\"\n", &secret[..62]),
        ]
        .into_iter()
        .enumerate()
        {
            let path = dir.path().join(format!("bad-{i}.key"));
            std::fs::write(&path, text).unwrap();
            let err = load(&path).unwrap_err();
            assert!(
                matches!(err, ProviderKeyError::Invalid { .. }),
                "{i}: {err}"
            );
            assert!(!err.to_string().contains(&secret), "never print the secret");
        }
        // Without the redundant id it still loads.
        let path = dir.path().join("no-id.key");
        std::fs::write(&path, format!("name = \"acme\"\nsecret = \"{secret}\"\n")).unwrap();
        assert_eq!(load(&path).unwrap().key.id(), good.key.id());
    }

    #[test]
    fn issued_certificates_certify_the_node_for_thirty_days() {
        let dir = tempfile::tempdir().unwrap();
        let provider = init(&dir.path().join("p.key"), "acme").unwrap();
        let keypair = reef_overlay::Keypair::generate_ed25519();
        let peer = keypair.public().to_peer_id();
        let now = 1_700_000_000_000;
        let cert = issue_cert(&provider, &peer, now).unwrap();
        let opened = open::<ProviderCert>(&cert, now).unwrap();
        assert_eq!(opened.record().provider, provider.key.id());
        assert_eq!(opened.record().node, peer.to_bytes());
        assert_eq!(
            opened.expires_at() - opened.issued_at(),
            CERT_LIFETIME.as_millis() as u64
        );
        assert!(CERT_RENEW_AFTER < CERT_LIFETIME);
    }
}
