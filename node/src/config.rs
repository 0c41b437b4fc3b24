//! Node settings: a TOML file holds the same keys as the `reef run` flags; flags win.
//!
//! Services (tenants) are keyed by hostname in a table per service, `[services."HOST"]`, so
//! later per-service settings join `quota` there; `--quota HOST=SIZE` overrides one host's.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Default cache budget: big enough to matter, small enough for a laptop.
pub const DEFAULT_CACHE_SIZE: u64 = 1 << 30;
/// How long an origin may take to send response headers before the client gets 504.
pub const DEFAULT_ORIGIN_TIMEOUT: Duration = Duration::from_secs(15);
/// Requests per second a node is assumed to handle when the operator does not say: a modest
/// machine serving mostly cached objects. Utilisation in load reports is measured against it.
pub const DEFAULT_CAPACITY_RPS: u32 = 1000;
/// Egress a node is assumed to have when the operator does not say: a 1 Gbit/s port.
pub const DEFAULT_CAPACITY_MBPS: u32 = 1000;
/// Fewest overlay connections an operator may keep: gossip wants at least 3 mesh peers.
const MIN_KEEP_CONNECTIONS: u32 = 4;

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
    #[error("invalid service {service:?}: {reason}")]
    Service { service: String, reason: String },
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
    /// A key file from `reef provider init`: the node is certified by that provider.
    pub provider_key: Option<PathBuf>,
    pub region: Option<String>,
    pub mdns: Option<bool>,
    /// Bytes, or a size with a unit: "512MiB", "2GiB".
    pub cache_size: Option<toml::Value>,
    /// Seconds.
    pub origin_timeout: Option<f64>,
    /// Send cold misses to the key's home node among our provider's live nodes, which
    /// fetches each new object once for all of them (default true).
    pub home_routing: Option<bool>,
    /// Requests per second this node can serve (published in its NodeRecord; utilisation is
    /// measured against it).
    pub capacity_rps: Option<u32>,
    /// Egress this node can send, in Mbit/s (10^6 bits per second).
    pub capacity_mbps: Option<u32>,
    /// Overlay connections kept open once joined (default 12, at least 4); older ones beyond
    /// it are closed, after a goodbye.
    pub keep_connections: Option<u32>,
    /// Per-service settings, keyed by hostname (case-insensitive, no port).
    #[serde(default)]
    pub services: BTreeMap<String, ServiceFile>,
    /// The spare capacity this provider lends; published by a node with a provider key.
    pub offer: Option<crate::offers::OfferConfig>,
    /// The provider's peering policy.
    pub peering: Option<crate::peering::PolicyFile>,
    /// The DNS redirector: `listen` (`--dns`), the zone and how it answers.
    pub dns: Option<crate::dns::DnsFile>,
    /// Bearer token the admin API's mutating endpoints require (`POST /api/purge`,
    /// `POST /api/arrangements/end`).
    pub admin_token: Option<String>,
    /// A file holding the admin token (its first line), instead of `admin_token`.
    pub admin_token_file: Option<PathBuf>,
    /// Client request rates, connection caps, read timeouts, miss-sweep detection.
    pub limits: Option<crate::limits::LimitsFile>,
}

/// One `[services."HOST"]` table.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceFile {
    /// Storage quota: bytes, or a size with a unit like `cache_size`.
    pub quota: Option<toml::Value>,
    /// The customer's origin (`http://` or `https://`, no path): makes this a service of our
    /// provider that every node of the overlay can serve as `Host: HOST`.
    pub origin: Option<String>,
    /// `"public"` (default) or `"token"`: only clients with a token signed by one of
    /// `token_keys` are served (see `crate::private`).
    pub access: Option<String>,
    /// Key id → ed25519 public key (64 hex digits, as `reef token keygen` prints it).
    pub token_keys: Option<BTreeMap<String, String>>,
    /// Bandwidth quota: bytes per second, or a rate with a unit ("10MB/s", "512KiB/s").
    pub bandwidth: Option<toml::Value>,
    /// What the service may send at once above its bandwidth: a size like `quota`.
    pub bandwidth_burst: Option<toml::Value>,
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
    /// With a provider key: must match the key's name if given. Without one: a label for
    /// this node only (it is its own provider); None: `solo-<peer id tail>`.
    pub provider: Option<String>,
    /// The provider key file; None: the node is its own single-node provider.
    pub provider_key: Option<PathBuf>,
    pub region: String,
    pub mdns: bool,
    /// Requests per second the node can serve; at least 1.
    pub capacity_rps: u32,
    /// Egress the node can send, Mbit/s; at least 1.
    pub capacity_mbps: u32,
    pub cache_size: u64,
    pub origin_timeout: Duration,
    /// Cold misses go to the key's home node (see `fetch::home`).
    pub home_routing: bool,
    /// Overlay connections kept open (`reef_overlay::Config::keep_connections`).
    pub keep_connections: usize,
    /// Keyed by lower-case hostname without port, as the node derives a service from a URL.
    pub services: BTreeMap<String, Service>,
    pub offer: Option<crate::offers::OfferConfig>,
    pub peering: crate::peering::Policy,
    pub dns: crate::dns::Settings,
    /// Required by the admin API's mutating endpoints; without one they answer only on a
    /// loopback admin address.
    pub admin_token: Option<AdminToken>,
    pub limits: crate::limits::Settings,
}

/// Shortest admin token taken: 16 characters of a random string are beyond guessing.
pub const MIN_ADMIN_TOKEN: usize = 16;
/// Longest admin token taken; it travels in a header.
pub const MAX_ADMIN_TOKEN: usize = 256;
/// A token file is one line; anything longer is not one.
const MAX_ADMIN_TOKEN_FILE: u64 = 4096;

/// The admin API's bearer token. Its `Debug` does not show it, so it never reaches a log.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(…)")
    }
}

impl AdminToken {
    /// `text` as a token: 16 to 256 visible ASCII characters (no spaces).
    pub fn new(text: &str) -> Result<AdminToken, String> {
        let len = text.len();
        if !(MIN_ADMIN_TOKEN..=MAX_ADMIN_TOKEN).contains(&len) {
            return Err(format!(
                "must be {MIN_ADMIN_TOKEN} to {MAX_ADMIN_TOKEN} characters long, not {len} \
                 (e.g. `openssl rand -hex 24`)"
            ));
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("may hold only visible ASCII characters, no spaces".into());
        }
        Ok(AdminToken(text.to_string()))
    }

    /// Reads a token from the first line of `path`.
    pub fn from_file(path: &Path) -> Result<AdminToken, String> {
        use std::io::Read;
        let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut text = String::new();
        file.take(MAX_ADMIN_TOKEN_FILE)
            .read_to_string(&mut text)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let line = text.lines().next().unwrap_or("").trim();
        AdminToken::new(line).map_err(|e| format!("{}: the token {e}", path.display()))
    }

    /// Whether `presented` is this token, in time that does not depend on where they differ
    /// (blake3 hashes compare in constant time).
    pub fn matches(&self, presented: &str) -> bool {
        blake3::hash(self.0.as_bytes()) == blake3::hash(presented.as_bytes())
    }
}

/// Settings of one service (tenant).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Service {
    /// Most body bytes the cache keeps for this service; None: it only shares `cache_size`.
    pub quota: Option<u64>,
    /// Where its objects come from; None: only a quota for URLs of this host.
    pub origin: Option<reef_proto::CanonicalUrl>,
    /// Who may fetch its objects: anyone, or token holders.
    pub access: reef_proto::records::Access,
    /// Response body bytes per second this node sends for it; None: unlimited.
    pub bandwidth: Option<crate::limits::Bandwidth>,
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
            provider_key: None,
            region: "default".into(),
            mdns: false,
            capacity_rps: DEFAULT_CAPACITY_RPS,
            capacity_mbps: DEFAULT_CAPACITY_MBPS,
            cache_size: DEFAULT_CACHE_SIZE,
            origin_timeout: DEFAULT_ORIGIN_TIMEOUT,
            home_routing: true,
            keep_connections: reef_overlay::DEFAULT_KEEP_CONNECTIONS,
            services: BTreeMap::new(),
            offer: None,
            peering: crate::peering::Policy::default(),
            dns: crate::dns::Settings::default(),
            admin_token: None,
            limits: crate::limits::Settings::default(),
        }
    }

    /// The bandwidth quota of every service that has one.
    pub fn bandwidths(&self) -> Vec<(String, crate::limits::Bandwidth)> {
        self.services
            .iter()
            .filter_map(|(host, s)| Some((host.clone(), s.bandwidth?)))
            .collect()
    }

    /// The storage quota of every service that has one, as the cache takes them.
    pub fn quotas(&self) -> HashMap<String, u64> {
        self.services
            .iter()
            .filter_map(|(host, s)| Some((host.clone(), s.quota?)))
            .collect()
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
        let invalid = |reason: String| ConfigError::Invalid {
            field: "admin_token",
            reason,
        };
        match (file.admin_token, file.admin_token_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "give admin_token or admin_token_file, not both".into(),
                ));
            }
            (Some(text), None) => self.admin_token = Some(AdminToken::new(&text).map_err(invalid)?),
            (None, Some(path)) => {
                self.admin_token = Some(AdminToken::from_file(&path).map_err(invalid)?)
            }
            (None, None) => {}
        }
        if !file.listen.is_empty() {
            self.listen = file.listen;
        }
        self.bootstrap.extend(file.bootstrap);
        if file.provider.is_some() {
            self.provider = file.provider;
        }
        if file.provider_key.is_some() {
            self.provider_key = file.provider_key;
        }
        if file.offer.is_some() {
            self.offer = file.offer;
        }
        if let Some(policy) = file.peering {
            self.peering = policy.check().map_err(|reason| ConfigError::Invalid {
                field: "[peering]",
                reason,
            })?;
        }
        if let Some(dns) = file.dns {
            self.dns.apply(dns).map_err(|reason| ConfigError::Invalid {
                field: "[dns]",
                reason,
            })?;
        }
        if let Some(limits) = file.limits {
            self.limits
                .apply(limits)
                .map_err(|reason| ConfigError::Invalid {
                    field: "[limits]",
                    reason,
                })?;
        }
        if let Some(v) = file.region {
            self.region = v;
        }
        if let Some(v) = file.mdns {
            self.mdns = v;
        }
        if let Some(v) = file.cache_size {
            self.cache_size = size_value(v).map_err(|reason| ConfigError::Invalid {
                field: "cache_size",
                reason,
            })?;
        }
        if let Some(secs) = file.origin_timeout {
            self.origin_timeout = parse_secs("origin_timeout", secs)?;
        }
        if let Some(v) = file.home_routing {
            self.home_routing = v;
        }
        if let Some(v) = file.capacity_rps {
            self.capacity_rps = at_least("capacity_rps", v, 1)?;
        }
        if let Some(v) = file.capacity_mbps {
            self.capacity_mbps = at_least("capacity_mbps", v, 1)?;
        }
        if let Some(v) = file.keep_connections {
            let v = at_least("keep_connections", v, MIN_KEEP_CONNECTIONS)?;
            self.keep_connections = usize::try_from(v).unwrap_or(usize::MAX);
        }
        // Per host: a later layer replaces only the settings it gives.
        let mut seen = HashSet::new();
        for (name, given) in file.services {
            let host = service_host(&name)?;
            if !seen.insert(host.clone()) {
                return Err(ConfigError::Service {
                    service: name,
                    reason: "given twice (hostnames are case-insensitive)".into(),
                });
            }
            let service = self.services.entry(host.clone()).or_default();
            if let Some(v) = given.quota {
                let quota = size_value(v).map_err(|reason| ConfigError::Service {
                    service: host.clone(),
                    reason: format!("quota: {reason}"),
                })?;
                service.quota = Some(quota);
            }
            if given.bandwidth.is_some() || given.bandwidth_burst.is_some() {
                service.bandwidth = Some(
                    bandwidth(given.bandwidth, given.bandwidth_burst).map_err(|reason| {
                        ConfigError::Service {
                            service: host.clone(),
                            reason,
                        }
                    })?,
                );
            }
            if let Some(origin) = given.origin {
                service.origin =
                    Some(origin_url(&origin).map_err(|reason| ConfigError::Service {
                        service: host.clone(),
                        reason: format!("origin: {reason}"),
                    })?);
            }
            if let Some(access) = crate::private::access_of(given.access, given.token_keys)
                .map_err(|reason| ConfigError::Service {
                    service: host.clone(),
                    reason,
                })?
            {
                service.access = access;
            }
            if service.access.is_private() && service.origin.is_none() {
                return Err(ConfigError::Service {
                    service: host,
                    reason: "access = \"token\" needs an origin: only a service can be private"
                        .into(),
                });
            }
        }
        Ok(self)
    }
}

/// `--quota HOST=SIZE` flags as the services layer of the flags.
pub fn quota_flags(flags: &[String]) -> Result<BTreeMap<String, ServiceFile>, ConfigError> {
    let mut out = BTreeMap::new();
    for flag in flags {
        let bad = |reason: &str| ConfigError::Invalid {
            field: "--quota",
            reason: format!("{flag:?} {reason} (example: --quota img.example.com=2GiB)"),
        };
        let Some((host, size)) = flag.split_once('=') else {
            return Err(bad("is not HOST=SIZE"));
        };
        let host = service_host(host)?;
        let given = ServiceFile {
            quota: Some(toml::Value::String(size.to_string())),
            ..ServiceFile::default()
        };
        if out.insert(host, given).is_some() {
            return Err(bad("names a host given before"));
        }
    }
    Ok(out)
}

/// A service's key: the hostname, lower-case, as `CanonicalUrl::host` gives it for its URLs.
fn service_host(name: &str) -> Result<String, ConfigError> {
    let bad = |reason: &str| ConfigError::Service {
        service: name.to_string(),
        reason: format!("{reason}; a service is a hostname such as img.example.com"),
    };
    let authority: http::uri::Authority = name.parse().map_err(|_| bad("not a hostname"))?;
    if authority.as_str().contains('@') {
        return Err(bad("has user info"));
    }
    if authority.port().is_some() {
        return Err(bad("has a port (quotas apply to every port of a host)"));
    }
    Ok(authority.host().to_ascii_lowercase())
}

/// A service's origin: an http(s) URL of a host, without path, query or user info, because
/// the client's path is appended to it.
fn origin_url(text: &str) -> Result<reef_proto::CanonicalUrl, String> {
    let url = reef_proto::CanonicalUrl::parse(text).map_err(|e| format!("{text:?}: {e}"))?;
    if url.path_and_query() != "/" || text.contains('@') {
        return Err(format!(
            "{text:?} must be a scheme and host only, such as http://origin.example:8080"
        ));
    }
    Ok(url)
}

/// A size given as a TOML integer (bytes) or string ("2GiB").
fn size_value(v: toml::Value) -> Result<u64, String> {
    match v {
        toml::Value::Integer(n) if n >= 0 => Ok(n as u64),
        toml::Value::String(s) => size_bytes(&s),
        other => Err(format!(
            "expected bytes or a size like \"1GiB\", got {other}"
        )),
    }
}

/// A bandwidth quota: `rate` in bytes per second (a TOML integer, or a size per second like
/// "10MB/s"), positive, with an optional burst (a size).
fn bandwidth(
    rate: Option<toml::Value>,
    burst: Option<toml::Value>,
) -> Result<crate::limits::Bandwidth, String> {
    let rate = match rate {
        Some(toml::Value::String(s)) => {
            let Some(size) = s.trim().strip_suffix("/s") else {
                return Err(format!(
                    "bandwidth: {s:?} is not a rate (examples: \"10MB/s\", \"512KiB/s\", 1000000)"
                ));
            };
            size_bytes(size).map_err(|e| format!("bandwidth: {e}"))?
        }
        Some(other) => size_value(other).map_err(|e| format!("bandwidth: {e}"))?,
        None => return Err("bandwidth_burst needs bandwidth".into()),
    };
    if rate == 0 {
        return Err("bandwidth: must be more than 0 bytes per second".into());
    }
    let burst = match burst {
        Some(v) => Some(size_value(v).map_err(|e| format!("bandwidth_burst: {e}"))?),
        None => None,
    };
    if burst == Some(0) {
        return Err("bandwidth_burst: must be more than 0 bytes".into());
    }
    Ok(crate::limits::Bandwidth::new(rate, burst))
}

/// `v` if it is at least `min`: a capacity (utilisation divides by it, so 0 is refused) or the
/// connection budget.
fn at_least(field: &'static str, v: u32, min: u32) -> Result<u32, ConfigError> {
    if v < min {
        return Err(ConfigError::Invalid {
            field,
            reason: format!("must be at least {min}"),
        });
    }
    Ok(v)
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
    size_bytes(text).map_err(|reason| ConfigError::Invalid {
        field: "cache size",
        reason,
    })
}

fn size_bytes(text: &str) -> Result<u64, String> {
    let bad = || format!("{text:?} is not a size (examples: 1073741824, 512MiB, 2GiB)");
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
            provider_key = "/etc/reef/acme.key"
            cache_size = "2GiB"
            origin_timeout = 2.5
            capacity_rps = 250
            capacity_mbps = 10000
            keep_connections = 32
            "#,
        )
        .unwrap();
        let defaults = Config::defaults();
        assert_eq!(
            (defaults.capacity_rps, defaults.capacity_mbps),
            (1000, 1000)
        );
        assert_eq!(defaults.keep_connections, 12);
        let c = defaults.with_file(file).unwrap();
        assert_eq!(c.keep_connections, 32);
        assert_eq!(c.provider_key, Some(PathBuf::from("/etc/reef/acme.key")));
        assert_eq!((c.capacity_rps, c.capacity_mbps), (250, 10_000));
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.http.port(), 80);
        assert_eq!(c.bootstrap.len(), 1);
        assert_eq!(c.provider.as_deref(), Some("acme"));
        assert_eq!(c.cache_size, 2 << 30);
        assert_eq!(c.origin_timeout, Duration::from_millis(2500));
    }

    #[test]
    fn admin_tokens_come_from_the_file_or_a_token_file() {
        let token = "0123456789abcdef0123";
        let file: FileConfig = toml::from_str(&format!("admin_token = \"{token}\"")).unwrap();
        let c = Config::defaults().with_file(file).unwrap();
        let t = c.admin_token.unwrap();
        assert!(t.matches(token) && !t.matches("0123456789abcdef0124") && !t.matches(""));
        assert_eq!(format!("{t:?}"), "AdminToken(…)");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, format!("  {token}\nignored\n")).unwrap();
        let flags = FileConfig {
            admin_token_file: Some(path.clone()),
            ..FileConfig::default()
        };
        assert!(
            Config::defaults()
                .with_file(flags)
                .unwrap()
                .admin_token
                .unwrap()
                .matches(token)
        );

        for bad in [
            "admin_token = \"short\"".to_string(),
            "admin_token = \"has a space in it, sadly\"".to_string(),
            format!("admin_token = \"{token}\"\nadmin_token_file = \"/x\""),
            "admin_token_file = \"/nonexistent/token\"".to_string(),
        ] {
            let file: FileConfig = toml::from_str(&bad).unwrap();
            let e = Config::defaults().with_file(file).unwrap_err().to_string();
            assert!(e.contains("admin_token"), "{bad}: {e}");
        }
        assert!(Config::defaults().admin_token.is_none());
    }

    #[test]
    fn out_of_range_numbers_are_rejected() {
        for text in ["capacity_rps = 0", "capacity_mbps = 0"] {
            let file: FileConfig = toml::from_str(text).unwrap();
            let e = Config::defaults().with_file(file).unwrap_err().to_string();
            assert!(e.contains("capacity") && e.contains("at least 1"), "{e}");
        }
        assert!(toml::from_str::<FileConfig>("capacity_rps = -1").is_err());
        let file: FileConfig = toml::from_str("keep_connections = 3").unwrap();
        let e = Config::defaults().with_file(file).unwrap_err().to_string();
        assert!(
            e.contains("keep_connections") && e.contains("at least 4"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(toml::from_str::<FileConfig>("colour = 1").is_err());
        assert!(toml::from_str::<FileConfig>("[services.\"a\"]\ncolour = 1").is_err());
    }

    fn with_services(toml_text: &str, flags: &[&str]) -> Result<Config, ConfigError> {
        let file: FileConfig = toml::from_str(toml_text).unwrap();
        let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        let flags = FileConfig {
            services: quota_flags(&flags)?,
            ..FileConfig::default()
        };
        Config::defaults().with_file(file)?.with_file(flags)
    }

    #[test]
    fn token_services_list_their_keys_and_need_an_origin() {
        let key = "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c";
        let c = with_services(
            &format!(
                "[services.\"files.example\"]\norigin = \"http://o.example\"\naccess = \"token\"\n\
                 token_keys = {{ k1 = \"{key}\" }}"
            ),
            &["files.example=1MiB"],
        )
        .unwrap();
        let service = &c.services["files.example"];
        assert!(service.access.is_private(), "{service:?}");
        assert_eq!(service.quota, Some(1 << 20));
        let err = |text: &str| with_services(text, &[]).unwrap_err().to_string();
        let e = err(&format!(
            "[services.\"f.example\"]\naccess = \"token\"\ntoken_keys = {{ k1 = \"{key}\" }}"
        ));
        assert!(e.contains("needs an origin"), "{e}");
        let e = err("[services.\"f.example\"]\norigin = \"http://o.example\"\naccess = \"token\"");
        assert!(e.contains("token_keys"), "{e}");
        let e = err("[services.\"f.example\"]\norigin = \"http://o.example\"\naccess = \"open\"");
        assert!(e.contains("f.example") && e.contains("\"open\""), "{e}");
    }

    #[test]
    fn service_quotas_come_from_tables_and_flags_win_per_host() {
        let c = with_services(
            r#"
            [services."IMG.example.com"]
            quota = "2GiB"
            [services."video.example"]
            quota = 1000
            [services."plain.example"]
            "#,
            &["video.example=5MiB", "127.0.0.1=100KiB"],
        )
        .unwrap();
        let quota = |h: &str| c.services[h].quota;
        assert_eq!(quota("img.example.com"), Some(2 << 30));
        assert_eq!(quota("video.example"), Some(5 << 20));
        assert_eq!(quota("127.0.0.1"), Some(100 << 10));
        assert_eq!(quota("plain.example"), None);
        let quotas = c.quotas();
        assert_eq!(quotas.len(), 3);
        assert_eq!(quotas["127.0.0.1"], 102_400);
        assert!(Config::defaults().quotas().is_empty());
        // An IPv6 literal keeps its brackets, as in URLs.
        let c = with_services("", &["[::1]=1k"]).unwrap();
        assert_eq!(c.services["[::1]"].quota, Some(1024));
    }

    #[test]
    fn bandwidth_quotas_and_limits_parse_and_bad_ones_are_refused() {
        let c = with_services(
            r#"
            [limits]
            client_rps = 20
            sweep_misses = 100
            [services."a.example"]
            bandwidth = "10MB/s"
            [services."b.example"]
            bandwidth = 2048
            bandwidth_burst = "1MiB"
            "#,
            &[],
        )
        .unwrap();
        let bw = |h: &str| c.services[h].bandwidth.unwrap();
        assert_eq!(
            (bw("a.example").bytes_per_s, bw("a.example").burst),
            (10_000_000, 10_000_000)
        );
        assert_eq!(
            (bw("b.example").bytes_per_s, bw("b.example").burst),
            (2048, 1 << 20)
        );
        assert_eq!(c.bandwidths().len(), 2);
        assert_eq!(c.limits.client_rate, Some((20.0, 20.0)));
        assert_eq!(c.limits.sweep.misses, 100);
        for bad in [
            "bandwidth = \"10MB\"",
            "bandwidth = \"lots/s\"",
            "bandwidth = 0",
            "bandwidth = -5",
            "bandwidth_burst = \"1MiB\"",
            "bandwidth = \"1MB/s\"\nbandwidth_burst = 0",
        ] {
            let text = format!("[services.\"a.example\"]\n{bad}");
            let e = with_services(&text, &[]).unwrap_err().to_string();
            assert!(
                e.contains("a.example") && e.contains("bandwidth"),
                "{bad}: {e}"
            );
        }
        let e = with_services("[limits]\nclient_rps = 0", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("[limits]") && e.contains("client_rps"), "{e}");
    }

    #[test]
    fn bad_services_are_rejected_with_a_reason() {
        let err = |toml_text: &str, flags: &[&str]| {
            with_services(toml_text, flags).unwrap_err().to_string()
        };
        let e = err("[services.\"a.example\"]\nquota = \"2XB\"", &[]);
        assert!(e.contains("a.example") && e.contains("2XB"), "{e}");
        let e = err("[services.\"a.example\"]\nquota = -1", &[]);
        assert!(e.contains("expected bytes"), "{e}");
        let e = err("[services.\"a.example:8080\"]\nquota = 1", &[]);
        assert!(e.contains("port"), "{e}");
        let e = err(
            "[services.\"A.example\"]\nquota = 1\n[services.\"a.example\"]\nquota = 2",
            &[],
        );
        assert!(e.contains("twice"), "{e}");
        for flag in [
            "a.example",
            "a.example=lots",
            "=1GiB",
            "a b=1",
            "a.example=",
        ] {
            assert!(with_services("", &[flag]).is_err(), "{flag}");
        }
        let e = err("", &["a.example=1", "A.EXAMPLE=2"]);
        assert!(e.contains("before"), "{e}");
        let e = err("", &["nosize"]);
        assert!(e.contains("HOST=SIZE"), "{e}");
    }
}
