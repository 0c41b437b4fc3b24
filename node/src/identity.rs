//! The node's long-term key, kept in the data dir so a restarted node keeps its peer id.

use std::io::Write;
use std::path::{Path, PathBuf};

use reef_overlay::Keypair;
use reef_proto::records::SigningKey;

const KEY_FILE: &str = "node.key";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot create data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read node key {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("node key {path} is corrupt ({reason}); move it away to make a new identity")]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot write node key {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Signed records need an ed25519 node key; `reef` only ever makes those, but a key file
    /// written by another tool could hold another type.
    #[error("the node key is not an ed25519 key; signed records need one")]
    NotEd25519,
}

/// Loads `DIR/node.key`, or creates a fresh ed25519 key there (mode 0600) when it is absent.
pub fn load_or_create(data_dir: &Path) -> Result<Keypair, IdentityError> {
    std::fs::create_dir_all(data_dir).map_err(|source| IdentityError::DataDir {
        path: data_dir.to_owned(),
        source,
    })?;
    let path = data_dir.join(KEY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes).map_err(|e| IdentityError::Corrupt {
            path,
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            write_key(&path, &key)?;
            Ok(key)
        }
        Err(source) => Err(IdentityError::Read { path, source }),
    }
}

/// The node's key as the signing key of the records it seals ([`reef_proto::records::seal`]):
/// the same ed25519 secret, so its public key is the one inside the node's peer id.
pub fn signing_key(keypair: &Keypair) -> Result<SigningKey, IdentityError> {
    let ed25519 = keypair
        .clone()
        .try_into_ed25519()
        .map_err(|_| IdentityError::NotEd25519)?;
    let secret: [u8; 32] = ed25519
        .secret()
        .as_ref()
        .try_into()
        .map_err(|_| IdentityError::NotEd25519)?;
    Ok(SigningKey::from_bytes(&secret))
}

fn write_key(path: &Path, key: &Keypair) -> Result<(), IdentityError> {
    let werr = |source| IdentityError::Write {
        path: path.to_owned(),
        source,
    };
    let bytes = key
        .to_protobuf_encoding()
        .map_err(|e| werr(std::io::Error::other(e.to_string())))?;
    let tmp = path.with_extension("key.tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&tmp).map_err(werr)?;
    f.write_all(&bytes).map_err(werr)?;
    f.sync_all().map_err(werr)?;
    std::fs::rename(&tmp, path).map_err(werr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_survives_reload_and_corruption_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path()).unwrap();
        let b = load_or_create(dir.path()).unwrap();
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        std::fs::write(dir.path().join(KEY_FILE), b"garbage").unwrap();
        let err = load_or_create(dir.path()).unwrap_err();
        assert!(matches!(err, IdentityError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn the_signing_key_is_the_one_in_the_peer_id() {
        let keypair = Keypair::generate_ed25519();
        let signing = signing_key(&keypair).unwrap();
        let public = signing.verifying_key().to_bytes();
        assert_eq!(
            reef_proto::records::peer_id_bytes(&public),
            keypair.public().to_peer_id().to_bytes()
        );
    }
}
