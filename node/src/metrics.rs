//! The node's one Prometheus registry, served at `GET /metrics` on the admin API.
//!
//! `node::run` creates it and hands `&mut` to each part that has metrics before sharing it
//! read-only with the admin API; registering is done once, at start, so serving needs no lock
//! beyond each metric's own. Three kinds of series live in it:
//!
//! - the overlay's own (`reef_overlay::Metrics`): rejected records, DHT lookup latency,
//!   connected peers, gossip verdicts;
//! - [`Requests`], the one family bumped on the request path: `reef_requests_total{source,
//!   status}`, pre-resolved so that counting a request is one atomic add;
//! - [`Collector`], which reads at scrape time what other parts already count (the load
//!   meter, the cache, upstream traffic, arrangements and their SLA health, the ledger, DNS)
//!   instead of keeping a second copy of each counter.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use prometheus_client::collector::Collector as PromCollector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use crate::fetch::upstream::Ingress;
use crate::load::{Load, Meter};
use crate::peering::health::Health;
use crate::peering::ledger::Ledger;
use crate::peering::{Arrangements, Role, Status};

/// What prometheus-client's text encoder writes: OpenMetrics text, which Prometheus reads.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The registry in OpenMetrics text format.
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

/// Where a response's body came from: `X-Reef-Source` (`local`, `peer`, `origin`; requests of
/// other methods passed to the origin are `origin`), `relay` for another provider's node's
/// answer relayed under an arrangement, `none` for answers without a source (errors,
/// redirects, peers' object requests).
pub const SOURCES: [&str; 5] = ["local", "peer", "origin", "relay", "none"];
/// Status codes counted through a pre-resolved slot: every code `http` can hold in practice.
const FIRST_STATUS: u16 = 100;
const LAST_STATUS: u16 = 599;
const STATUSES: usize = (LAST_STATUS - FIRST_STATUS + 1) as usize;

/// Labels of `reef_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub source: &'static str,
    pub status: u16,
}

/// Labels of the families counted by why (`reef_throttled_requests_total`,
/// `reef_rejected_requests_total`, `reef_token_rejections_total`, …).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: &'static str,
}

/// `reef_requests_total{source,status}`: every request the edge answered.
///
/// The family is prometheus-client's, but the request path does not look labels up in it: each
/// (source, status) pair has a slot holding the family's counter, resolved the first time that
/// pair is seen, so a request costs a `OnceLock` read and an atomic add, no lock and no
/// allocation, and a series appears only once it has counted something.
pub struct Requests {
    family: Family<RequestLabels, Counter>,
    slots: Box<[OnceLock<Counter>]>,
    /// Requests per source, for the dashboard's request mix (one more relaxed add).
    by_source: [AtomicU64; SOURCES.len()],
}

impl std::fmt::Debug for Requests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Requests")
            .field("by_source", &self.by_source())
            .finish_non_exhaustive()
    }
}

impl Default for Requests {
    fn default() -> Self {
        Self {
            family: Family::default(),
            slots: (0..SOURCES.len() * STATUSES)
                .map(|_| OnceLock::new())
                .collect(),
            by_source: Default::default(),
        }
    }
}

impl Requests {
    /// Creates the family and registers it in `registry`.
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let requests = Arc::new(Self::default());
        registry.register(
            "reef_requests",
            "Requests the HTTP edge answered, by where the body came from (X-Reef-Source; relay \
             for a peer provider's answer relayed, none for answers without a source) and \
             status code",
            requests.family.clone(),
        );
        requests
    }

    /// One answered request; `source` is its `X-Reef-Source` value, if any.
    pub fn served(&self, source: Option<&[u8]>, status: u16) {
        let s = match source {
            Some(b"local") => 0,
            Some(b"peer") => 1,
            Some(b"origin") => 2,
            Some(b"relay") => 3,
            _ => 4,
        };
        self.by_source[s].fetch_add(1, Ordering::Relaxed);
        let labels = || RequestLabels {
            source: SOURCES[s],
            status,
        };
        if !(FIRST_STATUS..=LAST_STATUS).contains(&status) {
            self.family.get_or_create(&labels()).inc();
            return;
        }
        let slot = s * STATUSES + usize::from(status - FIRST_STATUS);
        match self.slots.get(slot) {
            Some(cell) => {
                cell.get_or_init(|| self.family.get_or_create_owned(&labels()))
                    .inc();
            }
            None => {
                self.family.get_or_create(&labels()).inc();
            }
        }
    }

    /// Requests answered since start per source, in the order of [`SOURCES`].
    pub fn by_source(&self) -> [u64; SOURCES.len()] {
        std::array::from_fn(|i| self.by_source[i].load(Ordering::Relaxed))
    }
}

/// Reads, at each scrape, what the node's parts count themselves.
pub struct Collector {
    pub meter: Arc<Meter>,
    pub load: Load,
    pub store: reef_cache::Store,
    pub ingress: Arc<Ingress>,
    pub arrangements: Arc<Arrangements>,
    pub health: Arc<Health>,
    pub ledger: Arc<Ledger>,
    pub dns: Option<crate::dns::Handle>,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector").finish_non_exhaustive()
    }
}

/// One descriptor and its samples, in the encoder's terms.
struct Out<'a, 'b> {
    encoder: &'a mut DescriptorEncoder<'b>,
}

impl Out<'_, '_> {
    fn counter(&mut self, name: &str, help: &str, unit: Option<Unit>, v: u64) -> Fmt {
        let metric = ConstCounter::new(v);
        let e = self
            .encoder
            .encode_descriptor(name, help, unit.as_ref(), metric.metric_type())?;
        metric.encode(e)
    }

    fn gauge(&mut self, name: &str, help: &str, unit: Option<Unit>, v: f64) -> Fmt {
        let metric = ConstGauge::new(v);
        let e = self
            .encoder
            .encode_descriptor(name, help, unit.as_ref(), metric.metric_type())?;
        metric.encode(e)
    }

    fn int_gauge(&mut self, name: &str, help: &str, unit: Option<Unit>, v: u64) -> Fmt {
        let metric = ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
        let e = self
            .encoder
            .encode_descriptor(name, help, unit.as_ref(), metric.metric_type())?;
        metric.encode(e)
    }

    /// A labelled family of `kind` (counter or gauge); `samples` are (labels, value).
    fn family<L: EncodeLabelSet, M: EncodeMetric>(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        kind: MetricType,
        samples: impl IntoIterator<Item = (L, M)>,
    ) -> Fmt {
        let mut e = self
            .encoder
            .encode_descriptor(name, help, unit.as_ref(), kind)?;
        for (labels, metric) in samples {
            metric.encode(e.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

type Fmt = Result<(), std::fmt::Error>;

fn ratio(permille: u32) -> f64 {
    f64::from(permille) / 1000.0
}

impl PromCollector for Collector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Fmt {
        let mut out = Out {
            encoder: &mut encoder,
        };
        let totals = self.meter.totals();
        let own = self.load.own();
        out.family(
            "reef_cache_lookups",
            "Clients' GET and HEAD requests answered through the cache, by whether the body \
             came from this node's disk (hit, stale and revalidated copies included)",
            None,
            MetricType::Counter,
            [
                ([("result", "hit")], ConstCounter::new(totals.hits)),
                (
                    [("result", "miss")],
                    ConstCounter::new(totals.lookups.saturating_sub(totals.hits)),
                ),
            ],
        )?;
        out.gauge(
            "reef_cache_hit_ratio",
            "Share of cache lookups served from this node's disk over the last 10 s (0 \
             without lookups)",
            None,
            f64::from(own.hit_ratio_permille) / 1000.0,
        )?;
        out.counter(
            "reef_sent",
            "Response body bytes sent to clients and peers",
            Some(Unit::Bytes),
            totals.egress_bytes,
        )?;
        let ingress = self.ingress.counts();
        out.family(
            "reef_received",
            "Response body bytes received from origins, from peers' caches, and from other \
             providers' nodes relaying under an arrangement",
            Some(Unit::Bytes),
            MetricType::Counter,
            [
                (
                    [("from", "origin")],
                    ConstCounter::new(ingress.origin_bytes),
                ),
                ([("from", "peer")], ConstCounter::new(ingress.peer_bytes)),
                ([("from", "relay")], ConstCounter::new(ingress.node_bytes)),
            ],
        )?;
        out.counter(
            "reef_origin_fetches",
            "Requests sent to origins: fills, revalidations, uncached and unsafe requests",
            None,
            ingress.origin_requests,
        )?;
        out.family(
            "reef_requests_offloaded",
            "Requests handed to a peer provider's node under an arrangement",
            None,
            MetricType::Counter,
            [
                ([("how", "redirect")], ConstCounter::new(totals.redirected)),
                ([("how", "relay")], ConstCounter::new(totals.proxied)),
            ],
        )?;
        let cache = self.store.stats();
        out.int_gauge("reef_cache_objects", "Objects stored", None, cache.objects)?;
        out.int_gauge(
            "reef_cache_stored",
            "Body bytes stored",
            Some(Unit::Bytes),
            cache.bytes,
        )?;
        out.int_gauge(
            "reef_cache_capacity",
            "The cache's byte budget",
            Some(Unit::Bytes),
            cache.max_bytes,
        )?;
        out.gauge(
            "reef_load_utilisation_ratio",
            "What this node serves itself against its capacity, over the last second (1 = at \
             capacity)",
            None,
            ratio(own.utilisation_permille),
        )?;
        out.gauge(
            "reef_load_demand_ratio",
            "What arrives at this node against its capacity, offloaded requests included",
            None,
            ratio(own.demand_permille),
        )?;
        out.int_gauge(
            "reef_load_table_nodes",
            "Nodes listed in this node's load table, itself included",
            None,
            self.load.stats().nodes as u64,
        )?;
        self.encode_peering(&mut out)?;
        self.encode_dns(&mut out)
    }
}

impl Collector {
    fn encode_peering(&self, out: &mut Out<'_, '_>) -> Fmt {
        let views = self.arrangements.views(&self.health);
        // Every state and role, zeros included, so the series exist before the first one.
        let mut states = [[0u64; 2]; 2];
        for v in &views {
            let s = usize::from(v.status == Status::Ended);
            let r = usize::from(v.role == Role::Peer);
            states[s][r] += 1;
        }
        let mut samples = Vec::with_capacity(4);
        for (s, state) in ["active", "ended"].into_iter().enumerate() {
            for (r, role) in ["primary", "peer"].into_iter().enumerate() {
                samples.push((
                    [("state", state), ("role", role)],
                    ConstGauge::new(i64::try_from(states[s][r]).unwrap_or(i64::MAX)),
                ));
            }
        }
        out.family(
            "reef_arrangements",
            "Peering arrangements this node's provider is a party to, by state and role",
            None,
            MetricType::Gauge,
            samples,
        )?;
        let labels = |v: &crate::peering::View| {
            [
                ("arrangement", v.id.clone()),
                ("primary", v.primary.clone()),
                ("peer", v.peer.clone()),
            ]
        };
        out.family(
            "reef_arrangement_served_requests",
            "Requests this node served under each arrangement (as the peer)",
            None,
            MetricType::Counter,
            views
                .iter()
                .map(|v| (labels(v), ConstCounter::new(v.served.requests))),
        )?;
        out.family(
            "reef_arrangement_served",
            "Response body bytes this node served under each arrangement (as the peer)",
            Some(Unit::Bytes),
            MetricType::Counter,
            views
                .iter()
                .map(|v| (labels(v), ConstCounter::new(v.served.bytes))),
        )?;
        out.family(
            "reef_arrangement_offloaded_requests",
            "Requests this node sent to the peer's nodes under each arrangement (as the primary)",
            None,
            MetricType::Counter,
            views
                .iter()
                .map(|v| (labels(v), ConstCounter::new(v.redirected))),
        )?;
        // SLA health, measured by this node's probes, for active arrangements where we are
        // the primary and the peer promised an SLA.
        let with_sla: Vec<_> = views
            .iter()
            .filter_map(|v| Some((v, v.sla.as_ref()?)))
            .collect();
        out.family(
            "reef_arrangement_sla_p95",
            "95th percentile of the peer's probe response times over the SLA window",
            Some(Unit::Seconds),
            MetricType::Gauge,
            with_sla.iter().filter_map(|(v, sla)| {
                let p95 = sla.p95_ms?;
                Some((labels(v), ConstGauge::new(f64::from(p95) / 1000.0)))
            }),
        )?;
        out.family(
            "reef_arrangement_sla_availability_ratio",
            "Share of the peer's probes answered properly over the SLA window",
            None,
            MetricType::Gauge,
            with_sla.iter().filter_map(|(v, sla)| {
                let a = sla.availability_permille?;
                Some((labels(v), ConstGauge::new(f64::from(a) / 1000.0)))
            }),
        )?;
        out.family(
            "reef_arrangement_sla_breached",
            "1 while the peer breaches the SLA (availability or latency), else 0",
            None,
            MetricType::Gauge,
            with_sla
                .iter()
                .map(|(v, sla)| (labels(v), ConstGauge::new(i64::from(sla.breach.is_some())))),
        )?;
        let ledger = self.ledger.view();
        let finals = ledger.settlements.iter().filter(|s| s.kind == "final");
        out.int_gauge(
            "reef_ledger_settlements",
            "Final settlements held in this node's ledger",
            None,
            finals.count() as u64,
        )
    }

    fn encode_dns(&self, out: &mut Out<'_, '_>) -> Fmt {
        let Some(dns) = &self.dns else {
            return Ok(());
        };
        let c = dns.status().counts;
        out.family(
            "reef_dns_queries",
            "DNS messages received, by the answer they got (dropped: not answered)",
            None,
            MetricType::Counter,
            [
                ("answered", c.answered),
                ("nodata", c.nodata),
                ("nxdomain", c.nxdomain),
                ("refused", c.refused),
                ("formerr", c.formerr),
                ("servfail", c.servfail),
                ("notimp", c.notimp),
                ("badvers", c.badvers),
                ("dropped", c.dropped),
            ]
            .map(|(answer, v)| ([("answer", answer)], ConstCounter::new(v))),
        )?;
        out.counter(
            "reef_dns_truncated_answers",
            "DNS answers cut to the client's UDP size (it retries over TCP)",
            None,
            c.truncated,
        )?;
        out.counter(
            "reef_dns_peer_answers",
            "DNS answers for a service led by an arrangement's peer provider",
            None,
            c.peer_answers,
        )?;
        out.family(
            "reef_dns_tcp_connections",
            "DNS TCP connections, accepted or closed at once over the limit",
            None,
            MetricType::Counter,
            [
                (
                    [("result", "accepted")],
                    ConstCounter::new(c.tcp_connections),
                ),
                ([("result", "rejected")], ConstCounter::new(c.tcp_rejected)),
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_overlay_metrics_are_served() {
        let mut registry = Registry::default();
        let _metrics = reef_overlay::Metrics::register(&mut registry);
        let text = encode(&registry).unwrap();
        assert!(
            text.contains("# TYPE reef_records_rejected counter"),
            "{text}"
        );
        assert!(
            text.contains(
                "reef_records_rejected_total{kind=\"node_record\",reason=\"bad_signature\"} 0"
            ),
            "{text}"
        );
        assert!(text.contains("# TYPE reef_connected_peers gauge"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn requests_are_counted_by_source_and_status() {
        let mut registry = Registry::default();
        let requests = Requests::register(&mut registry);
        requests.served(Some(b"origin"), 200);
        requests.served(Some(b"local"), 200);
        requests.served(Some(b"local"), 200);
        requests.served(Some(b"local"), 304);
        requests.served(None, 404);
        requests.served(Some(b"nonsense"), 502);
        requests.served(Some(b"relay"), 200);
        // Outside the pre-resolved range: still counted, through the family.
        requests.served(None, 999);
        let text = encode(&registry).unwrap();
        for line in [
            "# TYPE reef_requests counter",
            "reef_requests_total{source=\"origin\",status=\"200\"} 1",
            "reef_requests_total{source=\"local\",status=\"200\"} 2",
            "reef_requests_total{source=\"local\",status=\"304\"} 1",
            "reef_requests_total{source=\"none\",status=\"404\"} 1",
            "reef_requests_total{source=\"none\",status=\"502\"} 1",
            "reef_requests_total{source=\"relay\",status=\"200\"} 1",
            "reef_requests_total{source=\"none\",status=\"999\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        // Series that counted nothing are not listed.
        assert!(!text.contains("source=\"peer\""), "{text}");
        assert_eq!(requests.by_source(), [3, 0, 1, 1, 3]);
    }
}
