//! The node's one Prometheus registry, served at `GET /metrics` on the admin API.
//!
//! `node::run` creates it and hands `&mut` to each part that has metrics (today the overlay:
//! `reef_records_rejected_total{kind,reason}`) before sharing it read-only with the admin API;
//! registering is done once, at start, so serving needs no lock beyond each metric's own.

use prometheus_client::registry::Registry;

/// What prometheus-client's text encoder writes: OpenMetrics text, which Prometheus reads.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The registry in OpenMetrics text format.
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
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
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
