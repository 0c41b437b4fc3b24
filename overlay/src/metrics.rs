//! The overlay's Prometheus metrics, registered into the node's one registry.
//!
//! The node owns the [`Registry`] (it serves `/metrics`); the overlay only adds its families
//! to it through [`Metrics::register`], so it never needs to know how they are exposed.
//! Counters are atomics behind an `Arc`: the event loop bumps them without locks or awaits.
//!
//! - `reef_records_rejected_total{kind,reason}`: DHT records refused;
//! - `reef_dht_lookup_duration_seconds{lookup}`: how long the DHT lookups that went to the
//!   network took, from the command to the answer (`providers`, or the record kind);
//! - `reef_connected_peers`: peers with at least one open connection;
//! - `reef_gossip_messages_total{topic,verdict}`: gossip messages received on a subscribed
//!   topic, by the verdict that decided whether they travel on (`accept`, `reject`, `ignore`);
//! - `reef_peers_banned_total`: peers disconnected and refused for sending invalid records;
//! - `reef_connections_pruned_total`: connections closed to stay within the budget.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use reef_proto::records::Kind;

use crate::gossip::Acceptance;

/// The `kind` label of a value under a key no record kind owns.
pub(crate) const UNKNOWN_KIND: &str = "unknown";

/// Kinds stored in the DHT, whose rejections are counted from zero so that dashboards and
/// alerts see the series before the first attack rather than only after it.
const DHT_KINDS: [Kind; 3] = [Kind::NodeRecord, Kind::ContentRecord, Kind::CapacityOffer];
/// Every `RecordError::reason()` (and `replay`), for the same reason.
const REASONS: [&str; 11] = [
    "too_large",
    "garbage",
    "version",
    "wrong_kind",
    "bad_signature",
    "expired",
    "future",
    "lifetime",
    "wrong_signer",
    "invalid",
    "replay",
];

/// Labels of `reef_records_rejected_total`: the record kind (`Kind::label`, or `unknown`) and
/// why it was rejected (`RecordError::reason`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    pub kind: &'static str,
    pub reason: &'static str,
}

/// Labels of `reef_dht_lookup_duration_seconds`: `providers` (who holds a content key) or the
/// kind of record looked up (`node_record`, `content_record`, …).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LookupLabels {
    pub lookup: &'static str,
}

/// Labels of `reef_gossip_messages_total`. Topics are the few Reef subscribes to (at most
/// `MAX_SUBSCRIPTIONS` and the withdrawal topic), so the family stays small.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GossipLabels {
    pub topic: String,
    pub verdict: &'static str,
}

/// The `lookup` label of provider lookups.
pub(crate) const PROVIDERS_LOOKUP: &str = "providers";

/// Buckets of the lookup histogram: 1 ms to about 8 s, doubling. Loopback lookups take a few
/// milliseconds, lookups across the world hundreds, and a lookup's deadline is 3 to 5 s.
fn lookup_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

type LookupFamily = Family<LookupLabels, Histogram, fn() -> Histogram>;

/// The overlay's metric families. Cheap to clone (shared counters); `Default` makes an
/// unregistered set, for tests and embedders without a `/metrics`.
#[derive(Debug, Clone)]
pub struct Metrics {
    records_rejected: Family<RejectLabels, Counter>,
    lookups: LookupFamily,
    connected_peers: Gauge,
    gossip: Family<GossipLabels, Counter>,
    peers_banned: Counter,
    connections_pruned: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            records_rejected: Family::default(),
            lookups: Family::new_with_constructor(lookup_histogram as fn() -> Histogram),
            connected_peers: Gauge::default(),
            gossip: Family::default(),
            peers_banned: Counter::default(),
            connections_pruned: Counter::default(),
        }
    }
}

impl Metrics {
    /// Creates the families and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        for kind in DHT_KINDS {
            for reason in REASONS {
                let _ = metrics.records_rejected.get_or_create(&RejectLabels {
                    kind: kind.label(),
                    reason,
                });
            }
        }
        let _ = metrics.records_rejected.get_or_create(&RejectLabels {
            kind: UNKNOWN_KIND,
            reason: "invalid",
        });
        // prometheus-client appends `_total` to counters.
        registry.register(
            "reef_records_rejected",
            "DHT records refused by this node (never stored, never forwarded), by kind and reason",
            metrics.records_rejected.clone(),
        );
        registry.register_with_unit(
            "reef_dht_lookup_duration",
            "DHT lookups that went to the network, from the request to the answer, by what was looked up",
            Unit::Seconds,
            metrics.lookups.clone(),
        );
        registry.register(
            "reef_connected_peers",
            "Peers with at least one open libp2p connection",
            metrics.connected_peers.clone(),
        );
        registry.register(
            "reef_gossip_messages",
            "Gossip messages received on subscribed topics, by the verdict on forwarding them",
            metrics.gossip.clone(),
        );
        registry.register(
            "reef_peers_banned",
            "Peers disconnected and refused for a while for sending too many invalid records",
            metrics.peers_banned.clone(),
        );
        registry.register(
            "reef_connections_pruned",
            "Connections to peers this node closed (after a goodbye) to keep near its budget",
            metrics.connections_pruned.clone(),
        );
        metrics
    }

    pub(crate) fn connection_pruned(&self) {
        self.connections_pruned.inc();
    }

    #[cfg(test)]
    pub(crate) fn pruned(&self) -> u64 {
        self.connections_pruned.get()
    }

    pub(crate) fn peer_banned(&self) {
        self.peers_banned.inc();
    }

    pub(crate) fn record_rejected(&self, kind: &'static str, reason: &'static str) {
        self.records_rejected
            .get_or_create(&RejectLabels { kind, reason })
            .inc();
    }

    /// A DHT lookup of `lookup` took `elapsed`.
    pub(crate) fn lookup_took(&self, lookup: &'static str, elapsed: Duration) {
        self.lookups
            .get_or_create(&LookupLabels { lookup })
            .observe(elapsed.as_secs_f64());
    }

    pub(crate) fn set_connected_peers(&self, peers: usize) {
        self.connected_peers
            .set(i64::try_from(peers).unwrap_or(i64::MAX));
    }

    /// A gossip message on `topic` got `verdict`.
    pub(crate) fn gossip_verdict(&self, topic: &str, verdict: Acceptance) {
        let verdict = match verdict {
            Acceptance::Accept => "accept",
            Acceptance::Reject => "reject",
            Acceptance::Ignore => "ignore",
        };
        self.gossip
            .get_or_create(&GossipLabels {
                topic: topic.to_string(),
                verdict,
            })
            .inc();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rejections_are_exposed_with_kind_and_reason() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        metrics.record_rejected("node_record", "bad_signature");
        metrics.record_rejected("node_record", "bad_signature");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(
                "reef_records_rejected_total{kind=\"node_record\",reason=\"bad_signature\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "reef_records_rejected_total{kind=\"capacity_offer\",reason=\"replay\"} 0"
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE reef_records_rejected counter"),
            "{text}"
        );
    }

    #[test]
    fn lookups_peers_and_gossip_verdicts_are_exposed() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        metrics.lookup_took(PROVIDERS_LOOKUP, Duration::from_millis(3));
        metrics.lookup_took("node_record", Duration::from_secs(10));
        metrics.set_connected_peers(4);
        metrics.gossip_verdict("reef/load/1", Acceptance::Accept);
        metrics.gossip_verdict("reef/load/1", Acceptance::Accept);
        metrics.gossip_verdict("reef/load/1", Acceptance::Reject);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "# TYPE reef_dht_lookup_duration_seconds histogram",
            "# UNIT reef_dht_lookup_duration_seconds seconds",
            "reef_dht_lookup_duration_seconds_count{lookup=\"providers\"} 1",
            "reef_connected_peers 4",
            "reef_peers_banned_total 0",
            "reef_gossip_messages_total{topic=\"reef/load/1\",verdict=\"accept\"} 2",
            "reef_gossip_messages_total{topic=\"reef/load/1\",verdict=\"reject\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        // Bucket lines carry `le` and the family's label, in the encoder's order.
        let bucket = |lookup: &str, le: &str| -> String {
            let line = text
                .lines()
                .find(|l| {
                    l.starts_with("reef_dht_lookup_duration_seconds_bucket{")
                        && l.contains(&format!("lookup=\"{lookup}\""))
                        && l.contains(&format!("le=\"{le}\""))
                })
                .unwrap_or_else(|| panic!("no bucket {lookup} {le} in\n{text}"));
            line.rsplit(' ').next().unwrap().to_string()
        };
        assert_eq!(bucket("providers", "0.002"), "0");
        assert_eq!(bucket("providers", "0.004"), "1");
        assert_eq!(bucket("node_record", "8.192"), "0");
        assert_eq!(bucket("node_record", "+Inf"), "1");
    }

    #[test]
    fn the_reasons_listed_are_the_ones_records_give() {
        use reef_proto::records::RecordError;
        let errors = [
            RecordError::TooLarge { len: 2, max: 1 },
            RecordError::Garbage("x"),
            RecordError::Version(9),
            RecordError::WrongKind {
                expected: Kind::NodeRecord,
                found: 3,
            },
            RecordError::BadSignature,
            RecordError::Expired {
                expires_at: 1,
                now: 2,
            },
            RecordError::Future {
                issued_at: 9,
                now: 0,
            },
            RecordError::Lifetime {
                issued_at: 0,
                expires_at: 9,
                max_ms: 1,
            },
            RecordError::WrongSigner("x"),
            RecordError::Invalid {
                field: "f",
                problem: "p",
            },
            RecordError::Replay,
        ];
        let reasons: Vec<&str> = errors.iter().map(RecordError::reason).collect();
        assert_eq!(reasons, REASONS);
    }
}
