//! Node settings: a TOML file holds the same keys as the `reef run` flags; flags win.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Default cache budget: big enough to matter, small enough for a laptop.
pub const DEFAULT_CACHE_SIZE: u64 = 1 << 30;
/// How long an origin may take to send response headers before the client gets 504.
pub const DEFAULT_ORIGIN_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// Settings as they may appear in the TOML file; every field is optional there.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub http: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    #[serde(default)]
    pub listen: Vec<String>,
    #[serde(default)]
    pub bootstrap: Vec<String>,
    pub provider: Option<String>,
    pub region: Option<String>,
    pub mdns: Option<bool>,
    /// Bytes, or a size with a unit: "512MiB", "2GiB".
    pub cache_size: Option<toml::Value>,
    /// Seconds.
    pub origin_timeout: Option<f64>,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }
}

/// The resolved settings a node runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    pub listen: Vec<String>,
    pub bootstrap: Vec<String>,
    /// None: the node is its own single-node provider, named after its peer id.
    pub provider: Option<String>,
    pub region: String,
    pub mdns: bool,
    pub cache_size: u64,
    pub origin_timeout: Duration,
}

impl Config {
    pub fn defaults() -> Self {
        Self {
            data_dir: PathBuf::from("reef-data"),
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin: SocketAddr::from(([127, 0, 0, 1], 9090)),
            listen: vec![
                "/ip4/0.0.0.0/udp/4001/quic-v1".into(),
                "/ip4/0.0.0.0/tcp/4001".into(),
            ],
            bootstrap: Vec::new(),
            provider: None,
            region: "default".into(),
            mdns: false,
            cache_size: DEFAULT_CACHE_SIZE,
            origin_timeout: DEFAULT_ORIGIN_TIMEOUT,
        }
    }

    /// Applies the file's settings over the defaults.
    pub fn with_file(mut self, file: FileConfig) -> Result<Self, ConfigError> {
        if let Some(v) = file.data_dir {
            self.data_dir = v;
        }
        if let Some(v) = file.http {
            self.http = v;
        }
        if let Some(v) = file.admin {
            self.admin = v;
        }
        if !file.listen.is_empty() {
            self.listen = file.listen;
        }
        self.bootstrap.extend(file.bootstrap);
        if file.provider.is_some() {
            self.provider = file.provider;
        }
        if let Some(v) = file.region {
            self.region = v;
        }
        if let Some(v) = file.mdns {
            self.mdns = v;
        }
        if let Some(v) = file.cache_size {
            self.cache_size = match v {
                toml::Value::Integer(n) if n >= 0 => n as u64,
                toml::Value::String(s) => parse_size(&s)?,
                other => {
                    return Err(ConfigError::Invalid {
                        field: "cache_size",
                        reason: format!("expected bytes or a size like \"1GiB\", got {other}"),
                    });
                }
            };
        }
        if let Some(secs) = file.origin_timeout {
            self.origin_timeout = parse_secs("origin_timeout", secs)?;
        }
        Ok(self)
    }
}

pub(crate) fn parse_secs(field: &'static str, secs: f64) -> Result<Duration, ConfigError> {
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or(ConfigError::Invalid {
            field,
            reason: format!("{secs} is not a positive number of seconds"),
        })
}

/// Parses "1073741824", "512MiB", "2GiB", "100MB", "64k".
pub fn parse_size(text: &str) -> Result<u64, ConfigError> {
    let bad = || ConfigError::Invalid {
        field: "cache size",
        reason: format!("{text:?} is not a size (examples: 1073741824, 512MiB, 2GiB)"),
    };
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "kb" => 1_000,
        "m" | "mib" => 1 << 20,
        "mb" => 1_000_000,
        "g" | "gib" => 1 << 30,
        "gb" => 1_000_000_000,
        "t" | "tib" => 1 << 40,
        "tb" => 1_000_000_000_000,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("100MB").unwrap(), 100_000_000);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("20000000TiB").is_err());
    }

    #[test]
    fn file_overrides_defaults() {
        let file: FileConfig = toml::from_str(
            r#"
            data_dir = "/tmp/x"
            http = "127.0.0.5:80"
            bootstrap = ["/ip4/127.0.0.1/tcp/1/p2p/12D3KooWAbc"]
            provider = "acme"
            cache_size = "2GiB"
            origin_timeout = 2.5
            "#,
        )
        .unwrap();
        let c = Config::defaults().with_file(file).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.http.port(), 80);
        assert_eq!(c.bootstrap.len(), 1);
        assert_eq!(c.provider.as_deref(), Some("acme"));
        assert_eq!(c.cache_size, 2 << 30);
        assert_eq!(c.origin_timeout, Duration::from_millis(2500));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(toml::from_str::<FileConfig>("colour = 1").is_err());
    }
}
