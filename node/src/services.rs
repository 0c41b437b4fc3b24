//! Services: customer hostnames and the origins behind them.
//!
//! A provider declares its customers' services in its config (`[services."HOST"] origin = …`);
//! its nodes publish each one as a ServiceRecord signed by the provider key, under the
//! hostname's DHT key, so that any node of the overlay can answer `Host: HOST` requests: it
//! looks the record up once, remembers it for a while, and fetches misses from the origin the
//! record names. Objects are cached under the service's own URL (`http://HOST/path`), so a
//! service keeps its cache and quota whichever origin it moves to.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reef_proto::CanonicalUrl;
use reef_proto::records::{Access, ProviderId, ServiceRecord, SigningKey, open, seal, service_key};
use tracing::debug;

use crate::config;
use crate::provider::unix_ms;

/// A service record lives this long in the DHT; it is republished well before.
const RECORD_LIFETIME: Duration = Duration::from_secs(3600);
const REPUBLISH_EVERY: Duration = Duration::from_secs(20 * 60);
const RETRY_AFTER: Duration = Duration::from_secs(30);
/// How long a looked-up service is trusted before it is looked up again: an owner that moves
/// its origin is followed within a minute.
const LEARNT_TTL: Duration = Duration::from_secs(60);
/// A hostname nobody publishes is asked for again after this long, so a flood of requests for
/// unknown hosts costs one DHT lookup per host per interval.
const UNKNOWN_TTL: Duration = Duration::from_secs(5);
/// Hostnames remembered (known and unknown); past this the oldest make room.
const MAX_LEARNT: usize = 4096;

/// One service as this node serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub hostname: String,
    /// Scheme and authority only (`http://origin.example:8080/`).
    pub origin: CanonicalUrl,
    pub owner: ProviderId,
    pub access: Access,
}

impl Service {
    /// The origin URL for `url`, a URL of this service: the same path and query on the origin.
    pub fn origin_url(&self, url: &CanonicalUrl) -> Option<CanonicalUrl> {
        let base = self.origin.as_str().trim_end_matches('/');
        CanonicalUrl::parse(&format!("{base}{}", url.path_and_query())).ok()
    }

    /// The URL objects of this service are cached under.
    pub fn url(&self, path_and_query: &str) -> Result<CanonicalUrl, reef_proto::UrlError> {
        CanonicalUrl::parse(&format!("http://{}{path_and_query}", self.hostname))
    }
}

struct Learnt {
    service: Option<Arc<Service>>,
    until: Instant,
}

/// Every service this node knows: its own provider's from the config, others' from the DHT.
pub struct Services {
    own: HashMap<String, Arc<Service>>,
    learnt: Mutex<HashMap<String, Learnt>>,
    overlay: reef_overlay::Client,
    /// Records of ours put into the DHT since start (each service once per round).
    published: AtomicU64,
}

/// `/api/status` → `services`.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Stats {
    /// Services of our provider in our config.
    pub own: usize,
    /// Their records put into the DHT since start, every republication counted.
    pub published: u64,
    /// Hostnames looked up and remembered (known and unknown).
    pub learnt: usize,
}

impl Services {
    /// `owner` is this node's provider: the config's services are its.
    pub fn new(
        configured: &std::collections::BTreeMap<String, config::Service>,
        owner: ProviderId,
        overlay: reef_overlay::Client,
    ) -> Self {
        let own = configured
            .iter()
            .filter_map(|(host, s)| {
                let service = Service {
                    hostname: host.clone(),
                    origin: s.origin.clone()?,
                    owner,
                    access: s.access.clone(),
                };
                Some((host.clone(), Arc::new(service)))
            })
            .collect();
        Self {
            own,
            learnt: Mutex::new(HashMap::new()),
            overlay,
            published: AtomicU64::new(0),
        }
    }

    pub fn stats(&self) -> Stats {
        Stats {
            own: self.own.len(),
            published: self.published.load(Ordering::Relaxed),
            learnt: self.learnt.lock().map_or(0, |l| l.len()),
        }
    }

    /// Our own provider's services.
    pub fn own(&self) -> impl Iterator<Item = &Arc<Service>> {
        self.own.values()
    }

    /// The service `host` names, from the config or what was looked up lately; no lookup.
    pub fn cached(&self, host: &str) -> Option<Arc<Service>> {
        self.known(host).flatten()
    }

    /// What we know of `host` without a lookup: `Some(None)` is a hostname looked up lately
    /// that nobody publishes; `None`, one we know nothing of.
    fn known(&self, host: &str) -> Option<Option<Arc<Service>>> {
        if let Some(s) = self.own.get(host) {
            return Some(Some(s.clone()));
        }
        let learnt = self.learnt.lock().ok()?;
        learnt
            .get(host)
            .filter(|l| l.until > Instant::now())
            .map(|l| l.service.clone())
    }

    /// The service `host` names, looked up in the DHT when not known; None if nobody
    /// publishes a valid record for it.
    pub async fn resolve(&self, host: &str) -> Option<Arc<Service>> {
        if let Some(known) = self.known(host) {
            return known;
        }
        let found = self.look_up(host).await;
        let ttl = if found.is_some() {
            LEARNT_TTL
        } else {
            UNKNOWN_TTL
        };
        if let Ok(mut learnt) = self.learnt.lock() {
            if learnt.len() >= MAX_LEARNT && !learnt.contains_key(host) {
                make_room(&mut learnt);
            }
            learnt.insert(
                host.to_string(),
                Learnt {
                    service: found.clone(),
                    until: Instant::now() + ttl,
                },
            );
        }
        found
    }

    async fn look_up(&self, host: &str) -> Option<Arc<Service>> {
        let value = match self.overlay.get_record(service_key(host)).await {
            Ok(Some(value)) => value,
            Ok(None) => return None,
            Err(error) => {
                debug!(%host, %error, "service lookup failed");
                return None;
            }
        };
        // The overlay checked signature and key; opening again gives the fields.
        let record = open::<ServiceRecord>(&value, unix_ms()).ok()?.into_record();
        let origin = CanonicalUrl::parse(&record.origin).ok()?;
        (record.hostname == host).then(|| {
            Arc::new(Service {
                hostname: record.hostname,
                origin,
                owner: record.owner,
                access: record.access,
            })
        })
    }

    /// Where to fetch `url` from: its service's origin if its host is a known service.
    pub fn origin_for(&self, url: &CanonicalUrl) -> Option<CanonicalUrl> {
        self.cached(url.host())?.origin_url(url)
    }
}

/// Expired entries first; if none, the one closest to expiry.
fn make_room(learnt: &mut HashMap<String, Learnt>) {
    let now = Instant::now();
    learnt.retain(|_, l| l.until > now);
    if learnt.len() >= MAX_LEARNT
        && let Some(victim) = learnt
            .iter()
            .min_by_key(|(_, l)| l.until)
            .map(|(host, _)| host.clone())
    {
        learnt.remove(&victim);
    }
}

/// The record for one of our services, as our provider signs it.
fn record_of(service: &Service) -> ServiceRecord {
    ServiceRecord {
        hostname: service.hostname.clone(),
        origin: service.origin.as_str().to_string(),
        owner: service.owner,
        access: service.access.clone(),
    }
}

/// Checks that every configured service would be accepted by other nodes; the error names the
/// first that would not.
pub fn check(services: &Services, owner: &SigningKey) -> Result<(), String> {
    for service in services.own() {
        sealed(owner, &record_of(service))
            .map_err(|e| format!("service {}: {e}", service.hostname))?;
    }
    Ok(())
}

fn sealed(
    owner: &SigningKey,
    record: &ServiceRecord,
) -> Result<Vec<u8>, reef_proto::records::RecordError> {
    let now = unix_ms();
    seal(owner, record, now, now + RECORD_LIFETIME.as_millis() as u64)
}

/// Publishes every service of ours now and every [`REPUBLISH_EVERY`], signed by `owner`: our
/// provider's key, or for a node that is its own provider, the node's key.
pub fn spawn_publisher(
    owner: SigningKey,
    services: Arc<Services>,
    overlay: reef_overlay::Client,
) -> Option<tokio::task::JoinHandle<()>> {
    if services.own.is_empty() {
        return None;
    }
    Some(crate::republish::spawn(
        "service records",
        REPUBLISH_EVERY,
        RETRY_AFTER,
        move || {
            let (owner, services, overlay) = (owner.clone(), services.clone(), overlay.clone());
            async move {
                let count = publish(&owner, &services, &overlay).await?;
                Ok(format!("{count} services"))
            }
        },
    ))
}

async fn publish(
    owner: &SigningKey,
    services: &Services,
    overlay: &reef_overlay::Client,
) -> Result<usize, String> {
    overlay
        .wait_joined(Duration::from_secs(60))
        .await
        .map_err(|e| e.to_string())?;
    let mut count = 0;
    for service in services.own() {
        let value = sealed(owner, &record_of(service)).map_err(|e| e.to_string())?;
        overlay
            .put_record(service_key(&service.hostname), value)
            .await
            .map_err(|e| format!("{}: {e}", service.hostname))?;
        services.published.fetch_add(1, Ordering::Relaxed);
        count += 1;
    }
    Ok(count)
}
