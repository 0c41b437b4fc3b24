//! The overlay's Prometheus metrics, registered into the node's one registry.
//!
//! The node owns the [`Registry`] (it serves `/metrics`); the overlay only adds its families
//! to it through [`Metrics::register`], so it never needs to know how they are exposed.
//! Counters are atomics behind an `Arc`: the event loop bumps them without locks or awaits.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use reef_proto::records::Kind;

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

/// The overlay's metric families. Cheap to clone (shared counters); `Default` makes an
/// unregistered set, for tests and embedders without a `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    records_rejected: Family<RejectLabels, Counter>,
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
        metrics
    }

    pub(crate) fn record_rejected(&self, kind: &'static str, reason: &'static str) {
        self.records_rejected
            .get_or_create(&RejectLabels { kind, reason })
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
