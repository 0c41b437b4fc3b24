//! Keeping tenants within their quotas and the edge working under abusive clients.
//!
//! - [`token_bucket`]: the one rate-limiting primitive, over an injected clock.
//! - **Bandwidth quotas** per service (`[services."HOST"] bandwidth`): a bucket per service
//!   charged by response body bytes as they leave; a service in debt gets 429s.
//! - **Client request rate** (`[limits] client_rps`): a bucket per client address in a
//!   bounded [`clients::Table`]; off unless configured.
//! - **Miss sweeps** ([`sweep`]): a client whose requests nearly all go to the origin is
//!   reported and served only from the cache for a while.
//! - **Connections** ([`conns`]): open connections per client address.
//! - **Request bodies** ([`request_body`]): a read deadline for uploads.
//!
//! Node-to-node requests (peers' object and record fetches, health probes, answers relayed
//! under an arrangement) are not client requests: the edge does not pass them through the
//! client limits (see `edge::route`).

pub mod clients;
pub mod conns;
pub mod request_body;
pub mod sweep;
pub mod token_bucket;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::body::Body;
use crate::metrics::Reason;
use clients::{ClientKey, Table};
use sweep::Sweep;
use token_bucket::TokenBucket;

/// Open connections one client address may hold: half the node's slots, so one address
/// cannot take them all, while the flash experiment's 4096 waiting clients (all on one
/// loopback address) still fit.
pub const DEFAULT_CLIENT_CONNECTIONS: usize = 4096;
/// A client must have sent a request's headers this long after it started (or after the
/// connection opened, or after the previous response): slow-header clients and idle
/// keep-alive connections are dropped.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A request body must start arriving and keep a minimal pace (see `request_body`): nginx's
/// `client_body_timeout` is 60 s between reads; ours also bounds a trickle's total.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(20);
/// Misses in one window that make a sweep: a client sweeping at 500 misses/s is
/// stopped within a window, while the cold-crowd benchmark (1000 clients on one loopback
/// address, all missing at once, then hitting; 500 requests a node a run) stays far below.
pub const DEFAULT_SWEEP_MISSES: u32 = 5000;
pub const DEFAULT_SWEEP_WINDOW: Duration = Duration::from_secs(10);
/// Long enough to matter to a scraper, short enough that a misjudged client recovers soon.
pub const DEFAULT_SWEEP_COOLDOWN: Duration = Duration::from_secs(60);
/// A bandwidth quota without a burst may send one second of its rate at once, but at least
/// this much (one body chunk), so a small rate does not refuse every first response.
pub const MIN_BANDWIDTH_BURST: u64 = 64 * 1024;

/// The `[limits]` table of the config file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// Requests per second one client address may make (sustained); unset: no limit.
    pub client_rps: Option<f64>,
    /// Requests a client may make at once above its rate (default: one second's worth).
    pub client_burst: Option<f64>,
    /// Open connections per client address.
    pub client_connections: Option<usize>,
    /// Seconds.
    pub header_read_timeout: Option<f64>,
    /// Seconds.
    pub body_read_timeout: Option<f64>,
    /// Misses per window that make a miss sweep; 0 turns detection off.
    pub sweep_misses: Option<u32>,
    /// Seconds.
    pub sweep_window: Option<f64>,
    /// Seconds.
    pub sweep_cooldown: Option<f64>,
    /// Client requests a second this node serves itself, as a multiple of `capacity_rps`,
    /// beyond which it answers 503 (after offering the request to a peer provider under an
    /// arrangement); unset: never shed.
    pub shed_above_capacity: Option<f64>,
}

/// The limits a node runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// (requests per second, burst) per client address; None: unlimited.
    pub client_rate: Option<(f64, f64)>,
    pub client_connections: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub sweep: sweep::Settings,
    /// Multiple of the node's `capacity_rps` it serves at most; None: no ceiling.
    pub shed_above_capacity: Option<f64>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            client_rate: None,
            client_connections: DEFAULT_CLIENT_CONNECTIONS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            sweep: sweep::Settings {
                misses: DEFAULT_SWEEP_MISSES,
                window: DEFAULT_SWEEP_WINDOW,
                cooldown: DEFAULT_SWEEP_COOLDOWN,
            },
            shed_above_capacity: None,
        }
    }
}

fn secs(field: &str, v: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(v)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{field}: {v} is not a positive number of seconds"))
}

impl Settings {
    /// Applies the file's keys; a bad value is an error naming its key.
    pub fn apply(&mut self, file: LimitsFile) -> Result<(), String> {
        if let Some(rps) = file.client_rps {
            if !(rps.is_finite() && rps > 0.0) {
                return Err(format!("client_rps: {rps} is not a positive rate"));
            }
            let burst = file.client_burst.unwrap_or(rps.max(1.0));
            if !(burst.is_finite() && burst >= 1.0) {
                return Err(format!("client_burst: {burst} must be at least 1"));
            }
            self.client_rate = Some((rps, burst));
        } else if file.client_burst.is_some() {
            return Err("client_burst needs client_rps".into());
        }
        if let Some(n) = file.client_connections {
            if n == 0 {
                return Err("client_connections must be at least 1".into());
            }
            self.client_connections = n;
        }
        if let Some(v) = file.header_read_timeout {
            self.header_read_timeout = secs("header_read_timeout", v)?;
        }
        if let Some(v) = file.body_read_timeout {
            self.body_read_timeout = secs("body_read_timeout", v)?;
        }
        if let Some(n) = file.sweep_misses {
            self.sweep.misses = n;
        }
        if let Some(v) = file.sweep_window {
            self.sweep.window = secs("sweep_window", v)?;
        }
        if let Some(v) = file.sweep_cooldown {
            self.sweep.cooldown = secs("sweep_cooldown", v)?;
        }
        if let Some(v) = file.shed_above_capacity {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!(
                    "shed_above_capacity: {v} is not a positive multiple of capacity_rps"
                ));
            }
            self.shed_above_capacity = Some(v);
        }
        Ok(())
    }
}

/// A service's bandwidth quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bandwidth {
    pub bytes_per_s: u64,
    pub burst: u64,
}

impl Bandwidth {
    /// `bytes_per_s` (positive) with `burst`, or the default burst.
    pub fn new(bytes_per_s: u64, burst: Option<u64>) -> Self {
        Self {
            bytes_per_s,
            burst: burst.unwrap_or(bytes_per_s.max(MIN_BANDWIDTH_BURST)),
        }
    }
}

/// A service's bandwidth quota, to charge a response's body bytes to.
#[derive(Debug, Clone)]
pub struct Charge(Arc<Mutex<TokenBucket>>);

impl Charge {
    /// Account phase: `body`, charging the quota as the connection sends it.
    pub fn body(self, body: Body) -> Body {
        crate::body::count_data(body, move |len| {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .charge(len as f64, Instant::now());
        })
    }
}

/// A request refused for now: 429 with `Retry-After`.
#[derive(Debug, Clone)]
pub struct Throttled {
    /// The metric label: `client_rate`, `bandwidth`, `miss_sweep`.
    pub reason: &'static str,
    pub retry_after: Duration,
    /// One line for the client.
    pub why: String,
}

impl Throttled {
    /// Whole seconds for `Retry-After`: rounded up, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        (self.retry_after.as_secs_f64().ceil() as u64).max(1)
    }
}

/// What a client's request may do.
#[derive(Debug, Clone)]
pub enum Admission {
    Serve,
    /// Served from the cache only; what would go upstream is refused with this.
    CacheOnly(Throttled),
    Refused(Throttled),
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: &'static str,
}

/// Every label value, so that each series exists (at 0) before its first event.
const THROTTLE_REASONS: [&str; 3] = ["client_rate", "bandwidth", "miss_sweep"];
const REJECT_REASONS: [&str; 6] = [
    "malformed",
    "headers_too_large",
    "uri_too_long",
    "header_timeout",
    "body_timeout",
    "body_malformed",
];

struct Counts {
    throttled: Family<Reason, Counter>,
    abuse: Family<Kind, Counter>,
    refused_connections: Family<Reason, Counter>,
    rejected: Family<Reason, Counter>,
    shed: Counter,
}

struct Client {
    rate: Option<TokenBucket>,
    sweep: Sweep,
}

pub struct Limits {
    settings: Settings,
    clients: Table<Client>,
    connections: Arc<conns::Connections>,
    /// Per service hostname; fixed at start, from the config.
    bandwidth: HashMap<String, Arc<Mutex<TokenBucket>>>,
    /// The node's own ceiling (`shed_above_capacity`): one token per client request served.
    ceiling: Option<Mutex<TokenBucket>>,
    counts: Counts,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// `/api/status` → `limits`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub client_rps: Option<f64>,
    pub client_connections: usize,
    /// Client addresses tracked for rate and sweep limits.
    pub clients_tracked: usize,
    /// Client addresses with a connection open.
    pub clients_connected: usize,
    /// Services with a bandwidth quota, and how many seconds each is in debt (0: none).
    pub bandwidth_debt_s: HashMap<String, f64>,
    pub throttled: HashMap<&'static str, u64>,
    pub miss_sweeps: u64,
    pub refused_connections: u64,
    pub rejected: HashMap<&'static str, u64>,
    /// Client requests a second served at most before shedding; None: never shed.
    pub ceiling_rps: Option<f64>,
    pub shed: u64,
}

impl Limits {
    /// Limits with `settings`, the node's `capacity_rps` and the bandwidth quotas of
    /// `services` (hostname → quota), their metrics registered in `registry`.
    pub fn new(
        settings: Settings,
        capacity_rps: u32,
        services: impl IntoIterator<Item = (String, Bandwidth)>,
        registry: &mut Registry,
    ) -> Arc<Self> {
        let now = Instant::now();
        let counts = Counts {
            throttled: Family::default(),
            abuse: Family::default(),
            refused_connections: Family::default(),
            rejected: Family::default(),
            shed: Counter::default(),
        };
        for reason in THROTTLE_REASONS {
            let _ = counts.throttled.get_or_create(&Reason { reason });
        }
        for reason in REJECT_REASONS {
            let _ = counts.rejected.get_or_create(&Reason { reason });
        }
        let _ = counts.abuse.get_or_create(&Kind { kind: "miss_sweep" });
        let _ = counts.refused_connections.get_or_create(&Reason {
            reason: "per_client",
        });
        registry.register(
            "reef_throttled_requests",
            "Requests answered 429: client over its request rate, service over its bandwidth \
             quota, or a sweeping client's miss",
            counts.throttled.clone(),
        );
        registry.register(
            "reef_abuse_detected",
            "Abuse episodes detected (miss_sweep: a client whose requests nearly all miss)",
            counts.abuse.clone(),
        );
        registry.register(
            "reef_connections_refused",
            "Connections closed at accept (per_client: the address holds its share already)",
            counts.refused_connections.clone(),
        );
        registry.register(
            "reef_rejected_requests",
            "Requests refused for their form or pace: malformed (400), headers_too_large \
             (431), uri_too_long (414), header_timeout, body_timeout (408), body_malformed",
            counts.rejected.clone(),
        );
        registry.register(
            "reef_shed_requests",
            "Client requests answered 503 because the node was serving all it may \
             ([limits] shed_above_capacity) and no peer provider could take them",
            counts.shed.clone(),
        );
        // One second's worth may come at once: a second is also the load meter's grain.
        let ceiling = settings.shed_above_capacity.map(|multiple| {
            let rps = f64::from(capacity_rps) * multiple;
            Mutex::new(TokenBucket::new(rps, rps.max(1.0), now))
        });
        Arc::new(Self {
            clients: Table::new(clients::MAX_CLIENTS),
            connections: conns::Connections::new(settings.client_connections),
            bandwidth: services
                .into_iter()
                .map(|(host, b)| {
                    let bucket = TokenBucket::new(b.bytes_per_s as f64, b.burst as f64, now);
                    (host, Arc::new(Mutex::new(bucket)))
                })
                .collect(),
            ceiling,
            settings,
            counts,
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// A slot for a connection from `ip`; None (counted) if it has its share open already.
    pub fn admit_connection(&self, ip: IpAddr) -> Option<conns::Slot> {
        let slot = self.connections.open(ip);
        if slot.is_none() {
            self.counts
                .refused_connections
                .get_or_create(&Reason {
                    reason: "per_client",
                })
                .inc();
        }
        slot
    }

    /// Counts a connection that hyper ended with `err`: a request it refused itself (and
    /// answered 400/431 when it could) or a client that did not send its headers in time.
    pub fn connection_failed(&self, err: &(dyn std::error::Error + 'static)) {
        let Some(e) = err.downcast_ref::<hyper::Error>() else {
            return;
        };
        let reason = if e.is_timeout() {
            "header_timeout"
        } else if e.is_parse_too_large() {
            "headers_too_large"
        } else if e.is_parse() {
            "malformed"
        } else {
            return;
        };
        self.rejected(reason);
    }

    /// Counts a request refused for its form or pace (one of the `REJECT_REASONS`).
    pub fn rejected(&self, reason: &'static str) {
        self.counts.rejected.get_or_create(&Reason { reason }).inc();
    }

    fn throttled(&self, t: Throttled) -> Throttled {
        self.counts
            .throttled
            .get_or_create(&Reason { reason: t.reason })
            .inc();
        t
    }

    fn new_client(&self, now: Instant) -> Client {
        Client {
            rate: self
                .settings
                .client_rate
                .map(|(rps, burst)| TokenBucket::new(rps, burst, now)),
            sweep: Sweep::new(now),
        }
    }

    /// Phase: whether a client's request from `ip` may be served, and how.
    pub fn admit(&self, ip: IpAddr, now: Instant) -> Admission {
        let tracked = self.settings.client_rate.is_some() || self.settings.sweep.misses > 0;
        if !tracked {
            return Admission::Serve;
        }
        let key = ClientKey::of(ip);
        let check = |c: &mut Client| {
            if let Some(rate) = c.rate.as_mut()
                && let Err(wait) = rate.try_take(1.0, now)
            {
                return Admission::Refused(Throttled {
                    reason: "client_rate",
                    retry_after: wait,
                    why: format!("too many requests from {ip}; slow down"),
                });
            }
            match c.sweep.throttled(now) {
                Some(left) => Admission::CacheOnly(Throttled {
                    reason: "miss_sweep",
                    retry_after: left,
                    why: format!(
                        "{ip} asked for too many objects nobody else asks for; only cached \
                         objects are served to it for now"
                    ),
                }),
                None => Admission::Serve,
            }
        };
        // Without a rate limit, a client without an entry has nothing to check.
        let admission = if self.settings.client_rate.is_some() {
            self.clients.with(key, || self.new_client(now), check)
        } else {
            self.clients.peek(key, check).unwrap_or(Admission::Serve)
        };
        match admission {
            Admission::Refused(t) => Admission::Refused(self.throttled(t)),
            other => other,
        }
    }

    /// Phase: whether this node may serve one more client request itself without going over
    /// its ceiling; takes the request's share of it when so. Always true without a ceiling.
    pub fn within_ceiling(&self, now: Instant) -> bool {
        self.ceiling.as_ref().is_none_or(|bucket| {
            bucket
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .try_take(1.0, now)
                .is_ok()
        })
    }

    /// Counts a client request refused (503): over the ceiling, and no peer could take it.
    pub fn shed(&self) {
        self.counts.shed.inc();
    }

    /// A sweeping client's request that would have gone upstream was refused (counted).
    pub fn refuse_miss(&self, t: Throttled) -> Throttled {
        self.throttled(t)
    }

    /// Account phase: a client's cache lookup was answered, from elsewhere than our disk
    /// (`miss`) or from it.
    pub fn observe_lookup(&self, ip: IpAddr, miss: bool, now: Instant) {
        let s = self.settings.sweep;
        if s.misses == 0 {
            return;
        }
        let key = ClientKey::of(ip);
        let started = self.clients.with(
            key,
            || self.new_client(now),
            |c| c.sweep.observe(miss, now, &s),
        );
        if started {
            self.counts
                .abuse
                .get_or_create(&Kind { kind: "miss_sweep" })
                .inc();
            warn!(
                client = %ip,
                misses = s.misses,
                window_s = s.window.as_secs_f64(),
                cooldown_s = s.cooldown.as_secs_f64(),
                "miss sweep: nearly every request of this client goes to the origin; serving it only from the cache for the cooldown"
            );
        }
    }

    /// Phase: whether service `host` is within its bandwidth quota (always, without one);
    /// if it has one, what to charge its response to.
    pub fn admit_service(&self, host: &str, now: Instant) -> Result<Option<Charge>, Throttled> {
        let Some(bucket) = self.bandwidth.get(host) else {
            return Ok(None);
        };
        let debt = bucket
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .in_deficit(now);
        match debt {
            None => Ok(Some(Charge(bucket.clone()))),
            Some(wait) => Err(self.throttled(Throttled {
                reason: "bandwidth",
                retry_after: wait,
                why: format!("{host} is over its bandwidth quota; try again later"),
            })),
        }
    }

    /// `body` with the read deadline of `[limits] body_read_timeout`; its failures counted.
    pub fn guard_body<B>(
        self: &Arc<Self>,
        body: B,
    ) -> (request_body::Guarded<B>, request_body::Watch) {
        let limits = self.clone();
        request_body::guard(body, self.settings.body_read_timeout, move |failure| {
            limits.rejected(match failure {
                request_body::Failure::Timeout => "body_timeout",
                request_body::Failure::Malformed => "body_malformed",
            });
        })
    }

    pub fn status(&self) -> Status {
        let now = Instant::now();
        let count = |f: &Family<Reason, Counter>, reasons: &[&'static str]| {
            reasons
                .iter()
                .map(|&reason| (reason, f.get_or_create(&Reason { reason }).get()))
                .collect()
        };
        Status {
            client_rps: self.settings.client_rate.map(|(rps, _)| rps),
            client_connections: self.settings.client_connections,
            clients_tracked: self.clients.entries(),
            clients_connected: self.connections.clients(),
            bandwidth_debt_s: self
                .bandwidth
                .iter()
                .map(|(host, b)| {
                    let debt = b
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .in_deficit(now)
                        .map_or(0.0, |d| d.as_secs_f64());
                    (host.clone(), debt)
                })
                .collect(),
            throttled: count(&self.counts.throttled, &THROTTLE_REASONS),
            miss_sweeps: self
                .counts
                .abuse
                .get_or_create(&Kind { kind: "miss_sweep" })
                .get(),
            refused_connections: self
                .counts
                .refused_connections
                .get_or_create(&Reason {
                    reason: "per_client",
                })
                .get(),
            rejected: count(&self.counts.rejected, &REJECT_REASONS),
            ceiling_rps: self
                .ceiling
                .as_ref()
                .map(|b| b.lock().unwrap_or_else(PoisonError::into_inner).rate()),
            shed: self.counts.shed.get(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(file: &str, services: Vec<(String, Bandwidth)>) -> Arc<Limits> {
        let mut settings = Settings::default();
        settings.apply(toml::from_str(file).unwrap()).unwrap();
        Limits::new(settings, 1000, services, &mut Registry::default())
    }

    #[test]
    fn settings_parse_and_refuse_nonsense() {
        let mut s = Settings::default();
        s.apply(
            toml::from_str(
                "client_rps = 50\nclient_connections = 10\nbody_read_timeout = 2.5\nsweep_misses = 0\nshed_above_capacity = 0.8",
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(s.client_rate, Some((50.0, 50.0)));
        assert_eq!(s.shed_above_capacity, Some(0.8));
        assert_eq!(Settings::default().shed_above_capacity, None);
        assert_eq!(s.client_connections, 10);
        assert_eq!(s.body_read_timeout, Duration::from_millis(2500));
        assert_eq!(s.sweep.misses, 0);
        for bad in [
            "client_rps = 0",
            "client_rps = -1",
            "client_burst = 5",
            "client_rps = 1\nclient_burst = 0.5",
            "client_connections = 0",
            "header_read_timeout = 0",
            "sweep_window = -3",
            "shed_above_capacity = 0",
            "shed_above_capacity = -1",
            "shed_above_capacity = inf",
        ] {
            let e = Settings::default().apply(toml::from_str(bad).unwrap());
            assert!(e.is_err(), "{bad}");
        }
        assert!(toml::from_str::<LimitsFile>("colour = 1").is_err());
    }

    #[test]
    fn the_ceiling_passes_its_rate_and_burst_and_no_more() {
        let settings = Settings {
            shed_above_capacity: Some(0.5),
            ..Settings::default()
        };
        let l = Limits::new(settings, 10, vec![], &mut Registry::default());
        let t0 = Instant::now();
        // 5 a second, a burst of 5.
        let passed = (0..8).filter(|_| l.within_ceiling(t0)).count();
        assert_eq!(passed, 5);
        assert!(l.within_ceiling(t0 + Duration::from_millis(200)));
        assert!(!l.within_ceiling(t0 + Duration::from_millis(200)));
        assert_eq!(l.status().ceiling_rps, Some(5.0));
        // Without a ceiling everything passes.
        let open = limits("", vec![]);
        assert!((0..10_000).all(|_| open.within_ceiling(t0)));
        assert_eq!(open.status().ceiling_rps, None);
    }

    #[test]
    fn a_client_over_its_rate_is_refused_and_others_are_not() {
        let l = limits("client_rps = 1\nclient_burst = 2", vec![]);
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap());
        let t0 = Instant::now();
        assert!(matches!(l.admit(a, t0), Admission::Serve));
        assert!(matches!(l.admit(a, t0), Admission::Serve));
        let Admission::Refused(t) = l.admit(a, t0) else {
            panic!("a third request at once is over the burst");
        };
        assert_eq!((t.reason, t.retry_after_secs()), ("client_rate", 1));
        assert!(matches!(l.admit(b, t0), Admission::Serve));
        assert!(matches!(
            l.admit(a, t0 + Duration::from_secs(1)),
            Admission::Serve
        ));
        assert_eq!(l.status().throttled["client_rate"], 1);
    }

    #[test]
    fn a_sweeping_client_is_served_from_the_cache_only() {
        let l = limits("sweep_misses = 5\nsweep_cooldown = 30", vec![]);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(matches!(l.admit(a, t0), Admission::Serve));
            l.observe_lookup(a, true, t0);
        }
        let Admission::CacheOnly(t) = l.admit(a, t0) else {
            panic!("sweeping");
        };
        assert_eq!((t.reason, t.retry_after_secs()), ("miss_sweep", 30));
        assert!(matches!(l.admit(b, t0), Admission::Serve));
        assert!(matches!(
            l.admit(a, t0 + Duration::from_secs(31)),
            Admission::Serve
        ));
        assert_eq!(l.status().miss_sweeps, 1);
    }

    #[test]
    fn a_service_in_bandwidth_debt_is_refused_until_paid_back() {
        let l = limits(
            "",
            vec![("a.example".into(), Bandwidth::new(1000, Some(1000)))],
        );
        let t0 = Instant::now();
        assert!(l.admit_service("a.example", t0).unwrap().is_some());
        assert!(l.admit_service("b.example", t0).unwrap().is_none());
        l.bandwidth["a.example"].lock().unwrap().charge(3500.0, t0);
        let t = l.admit_service("a.example", t0).unwrap_err();
        assert_eq!((t.reason, t.retry_after_secs()), ("bandwidth", 3));
        assert!(l.admit_service("b.example", t0).is_ok());
        assert!(
            l.admit_service("a.example", t0 + Duration::from_secs(3))
                .is_ok()
        );
    }
}
