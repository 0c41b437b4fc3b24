//! `reef token keygen` and `reef token issue`: a content owner's token keys, and the tokens
//! clients present for a token-protected service (see `crate::private`).
//!
//! The key file is small TOML, like a provider key: `id` (the key id tokens name), `public`
//! (what the service's `token_keys` lists) and `secret`, all checked against each other on load.
//! It belongs to the content owner, not to the CDN: nodes only ever see the public key.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reef_proto::token::{Claims, TokenSigner, check_key_id, check_prefix};
use serde::{Deserialize, Serialize};

use crate::hex;

/// Longest lifetime a token may be issued with: a year, for a long-lived download link; a
/// token cannot be revoked before it expires except by retiring its key.
pub const MAX_TTL: Duration = Duration::from_secs(366 * 24 * 3600);
/// A key file is a few lines; anything larger is not one.
const MAX_KEY_FILE: u64 = 4096;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    id: String,
    public: String,
    secret: String,
}

/// A usage error: the CLI prints it and exits 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TokenCmdError(pub String);

fn err(message: impl Into<String>) -> TokenCmdError {
    TokenCmdError(message.into())
}

/// `reef token keygen`: a new key in a new file at `out` (mode 0600, never overwritten).
/// Returns what to print: the id, the public key and the config line that lists it.
pub fn keygen(out: &Path, id: &str) -> Result<String, TokenCmdError> {
    check_key_id(id).map_err(|e| err(format!("--id {id:?}: {e}")))?;
    let signer = TokenSigner::generate().map_err(|e| err(e.to_string()))?;
    let public = hex::encode(&signer.public());
    let file = KeyFile {
        id: id.to_string(),
        public: public.clone(),
        secret: hex::encode(&signer.to_bytes()),
    };
    let body = toml::to_string(&file).map_err(|e| err(e.to_string()))?;
    let text = format!(
        "# Reef token key. Whoever holds this file can issue tokens for the services that list\n\
         # its public key: keep it with the content owner, never on CDN nodes.\n{body}"
    );
    crate::secret_file::create(out, &text).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            err(format!(
                "{} already exists; refusing to overwrite a token key",
                out.display()
            ))
        } else {
            err(format!("cannot write {}: {e}", out.display()))
        }
    })?;
    Ok(format!(
        "key id:     {id}\npublic key: {public}\nconfig:     token_keys = {{ {id} = \"{public}\" }}"
    ))
}

/// What `reef token issue` is asked for.
pub struct IssueArgs {
    pub key: PathBuf,
    pub prefix: String,
    pub ttl: String,
    pub client_ip: Option<String>,
    pub key_id: Option<String>,
}

/// `reef token issue`: the token text.
pub fn issue(args: &IssueArgs) -> Result<String, TokenCmdError> {
    let (file_id, signer) = load(&args.key)?;
    let key_id = args.key_id.clone().unwrap_or(file_id);
    check_key_id(&key_id).map_err(|e| err(format!("--key-id {key_id:?}: {e}")))?;
    check_prefix(&args.prefix).map_err(|e| {
        err(format!(
            "--prefix {:?}: {e} (a canonical path such as /reports/2026)",
            args.prefix
        ))
    })?;
    let ttl = parse_ttl(&args.ttl).map_err(|e| err(format!("--ttl {:?}: {e}", args.ttl)))?;
    let client = match &args.client_ip {
        Some(text) => Some(
            text.parse::<IpAddr>()
                .map_err(|e| err(format!("--client-ip {text:?}: {e}")))?,
        ),
        None => None,
    };
    let expires = crate::provider::unix_secs() + ttl.as_secs();
    signer
        .issue(&Claims {
            key_id,
            prefix: args.prefix.clone(),
            expires,
            client,
        })
        .map_err(|e| err(e.to_string()))
}

/// The key id and signer in a file `keygen` wrote.
fn load(path: &Path) -> Result<(String, TokenSigner), TokenCmdError> {
    use std::io::Read;
    let bad = |why: &str| err(format!("token key {}: {why}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| bad(&e.to_string()))?;
    let mut text = String::new();
    file.take(MAX_KEY_FILE)
        .read_to_string(&mut text)
        .map_err(|e| bad(&e.to_string()))?;
    let file: KeyFile = toml::from_str(&text).map_err(|e| bad(&e.to_string()))?;
    let secret = hex::decode32(&file.secret).ok_or_else(|| bad("secret is not 64 hex digits"))?;
    let signer = TokenSigner::from_bytes(&secret);
    if hex::decode32(&file.public) != Some(signer.public()) {
        return Err(bad("public does not match the secret"));
    }
    check_key_id(&file.id).map_err(|e| bad(&format!("id: {e}")))?;
    Ok((file.id, signer))
}

/// `90`, `90s`, `15m`, `1h`, `7d`: 1 second to [`MAX_TTL`].
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| "not a duration such as 90s, 15m, 1h or 7d".to_string())?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit {unit:?}; use s, m, h or d")),
    };
    let secs = n.checked_mul(unit).ok_or("too long")?;
    if secs == 0 || secs > MAX_TTL.as_secs() {
        return Err(format!(
            "must be between 1 second and {} days",
            MAX_TTL.as_secs() / 86_400
        ));
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_parse_with_units_and_bounds() {
        assert_eq!(parse_ttl("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("7d"), Ok(Duration::from_secs(7 * 86_400)));
        for bad in [
            "",
            "0",
            "h",
            "1w",
            "-1h",
            "1.5h",
            "400d",
            "99999999999999999999d",
        ] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keygen_then_issue_makes_a_token_the_listed_key_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k1.key");
        let printed = keygen(&path, "k1").unwrap();
        assert!(printed.contains("token_keys = { k1 = \""), "{printed}");
        assert!(keygen(&path, "k1").is_err(), "never overwritten");
        let args = IssueArgs {
            key: path.clone(),
            prefix: "/p".into(),
            ttl: "1h".into(),
            client_ip: None,
            key_id: None,
        };
        let token = issue(&args).unwrap();
        let (id, signer) = load(&path).unwrap();
        let keys = [reef_proto::token::TokenKey {
            id,
            public: signer.public(),
        }];
        let now = crate::provider::unix_secs();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(reef_proto::token::verify(&token, &keys, "/p/a", ip, now).is_ok());
        for bad in [
            IssueArgs {
                prefix: "p".into(),
                ..clone(&args)
            },
            IssueArgs {
                ttl: "forever".into(),
                ..clone(&args)
            },
            IssueArgs {
                client_ip: Some("nowhere".into()),
                ..clone(&args)
            },
            IssueArgs {
                key: dir.path().join("missing"),
                ..clone(&args)
            },
        ] {
            assert!(issue(&bad).is_err());
        }
    }

    fn clone(a: &IssueArgs) -> IssueArgs {
        IssueArgs {
            key: a.key.clone(),
            prefix: a.prefix.clone(),
            ttl: a.ttl.clone(),
            client_ip: a.client_ip.clone(),
            key_id: a.key_id.clone(),
        }
    }
}
