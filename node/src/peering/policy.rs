//! `[peering]` in a provider's config: the policy repository. Watermarks and windows drive
//! the mediator, prices and refusals the negotiation; long-term arrangements agreed by people
//! are active from start and skip negotiation.

use std::collections::BTreeSet;
use std::time::Duration;

use reef_proto::records::{ProviderId, Sla};
use serde::{Deserialize, Serialize, Serializer};

use super::redirect::Mode;

/// Services one arrangement may cover.
pub const MAX_SERVICES: usize = 64;

/// `[peering]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Our nodes' utilisation (1.0 = at capacity) from which they send the share agreed in
    /// an arrangement to the peer's nodes. Default 0.8.
    pub high_watermark: Option<f64>,
    /// Provider utilisation under which a negotiated arrangement is no longer needed.
    /// Default 0.5.
    pub low_watermark: Option<f64>,
    /// Seconds over the high watermark before the mediator asks for capacity. Default 3.
    pub trigger_window_s: Option<f64>,
    /// Seconds under the low watermark before a negotiated arrangement is ended. Default 10.
    pub cooldown_s: Option<f64>,
    /// Most we pay a peer, per GB. Without it this provider never buys capacity.
    pub max_price_per_gb: Option<f64>,
    /// Share of our requests a negotiated arrangement asks for. Default 0.5.
    pub share: Option<f64>,
    /// Seconds a negotiated arrangement asks for. Default 600.
    pub duration_s: Option<u32>,
    /// How an overloaded node hands requests to the peer: `"redirect"` (302, the default) or
    /// `"proxy"` (relays the peer node's answer).
    pub offload: Option<Mode>,
    /// The SLA a negotiated arrangement asks of the peer: 95th percentile of response times,
    /// ms. Default 500.
    pub sla_max_p95_ms: Option<u32>,
    /// The SLA's availability, 0 < a ≤ 1. Default 0.99.
    pub sla_min_availability: Option<f64>,
    /// Seconds between statements of a long-term arrangement (the usage so far, agreed by
    /// both ledgers) while it goes on. Default 3600.
    pub statement_every_s: Option<f64>,
    /// Provider ids we never peer with, either way.
    #[serde(default)]
    pub refuse: Vec<String>,
    #[serde(default)]
    pub long_term: Vec<LongTermFile>,
}

/// One `[[peering.long_term]]`: `peer` serves `services` of `primary`. Both providers write
/// the same table into their configs; each node applies those that name its provider.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongTermFile {
    /// Provider id (from `reef provider init`) whose services are served.
    pub primary: String,
    /// Provider id of the provider whose nodes serve them.
    pub peer: String,
    pub services: Vec<String>,
    /// Share of the primary's requests it may send to the peer, 0 < share ≤ 1.
    pub share: f64,
    /// Currency units per GB served, e.g. 0.01; kept in millionths.
    pub price_per_gb: f64,
}

/// A long-term arrangement as checked from the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LongTerm {
    pub primary: ProviderId,
    pub peer: ProviderId,
    /// Lower-case hostnames.
    pub services: BTreeSet<String>,
    pub share_permille: u16,
    pub price_micros_per_gb: u64,
}

/// Utilisation from which a node redirects, when the policy does not say.
pub const DEFAULT_HIGH_WATERMARK_PERMILLE: u16 = 800;

/// The checked policy; serialised (durations in seconds) into the policy history of
/// `peering.redb`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    pub high_watermark_permille: u16,
    pub low_watermark_permille: u16,
    #[serde(serialize_with = "seconds_of")]
    pub trigger_window: Duration,
    #[serde(serialize_with = "seconds_of")]
    pub cooldown: Duration,
    /// `None`: we never buy capacity (no mediator runs).
    pub max_price_micros_per_gb: Option<u64>,
    pub share_permille: u16,
    #[serde(serialize_with = "seconds_of")]
    pub duration: Duration,
    pub offload: Mode,
    pub sla: Sla,
    #[serde(serialize_with = "seconds_of")]
    pub statement_every: Duration,
    pub refuse: BTreeSet<ProviderId>,
    pub long_term: Vec<LongTerm>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            high_watermark_permille: DEFAULT_HIGH_WATERMARK_PERMILLE,
            low_watermark_permille: 500,
            trigger_window: Duration::from_secs(3),
            cooldown: Duration::from_secs(10),
            max_price_micros_per_gb: None,
            share_permille: 500,
            duration: Duration::from_secs(600),
            offload: Mode::Redirect,
            sla: Sla {
                max_p95_ms: 500,
                min_availability_permille: 990,
            },
            statement_every: Duration::from_secs(3600),
            refuse: BTreeSet::new(),
            long_term: Vec::new(),
        }
    }
}

fn seconds_of<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// `value` (a share of capacity, 1.0 = 100%) in permille, within `(0, max]`.
fn permille(field: &str, value: f64, max: f64) -> Result<u16, String> {
    if value.is_finite() && value > 0.0 && value <= max {
        Ok(((value * 1000.0).round() as u16).max(1))
    } else {
        Err(format!("{field} {value} is not in (0, {max}]"))
    }
}

fn seconds(field: &str, value: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or(format!(
            "{field} {value} is not a positive number of seconds"
        ))
}

fn price(field: &str, value: f64) -> Result<u64, String> {
    if value.is_finite() && value >= 0.0 {
        Ok((value * 1e6).round() as u64)
    } else {
        Err(format!("{field} {value} is not a price"))
    }
}

impl PolicyFile {
    /// Checks every entry; the error says which one is wrong and why.
    pub fn check(&self) -> Result<Policy, String> {
        let mut long_term = Vec::new();
        let mut pairs = BTreeSet::new();
        for (i, entry) in self.long_term.iter().enumerate() {
            let at = |reason: String| format!("[[peering.long_term]] #{}: {reason}", i + 1);
            let checked = entry.check().map_err(at)?;
            if !pairs.insert((checked.primary, checked.peer)) {
                return Err(at(
                    "a second long-term arrangement between the same primary and peer".into(),
                ));
            }
            long_term.push(checked);
        }
        let defaults = Policy::default();
        let high_watermark_permille = match self.high_watermark {
            Some(w) => permille("high_watermark", w, 10.0)?,
            None => defaults.high_watermark_permille,
        };
        let low_watermark_permille = match self.low_watermark {
            Some(w) => permille("low_watermark", w, 10.0)?,
            None => defaults.low_watermark_permille.min(high_watermark_permille),
        };
        if low_watermark_permille > high_watermark_permille {
            return Err("low_watermark is above high_watermark".into());
        }
        let refuse = self
            .refuse
            .iter()
            .map(|id| {
                id.parse::<ProviderId>()
                    .map_err(|e| format!("refuse: {id:?} is not a provider id: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Policy {
            high_watermark_permille,
            low_watermark_permille,
            trigger_window: match self.trigger_window_s {
                Some(v) => seconds("trigger_window_s", v)?,
                None => defaults.trigger_window,
            },
            cooldown: match self.cooldown_s {
                Some(v) => seconds("cooldown_s", v)?,
                None => defaults.cooldown,
            },
            max_price_micros_per_gb: self
                .max_price_per_gb
                .map(|p| price("max_price_per_gb", p))
                .transpose()?,
            share_permille: match self.share {
                Some(v) => permille("share", v, 1.0)?,
                None => defaults.share_permille,
            },
            duration: match self.duration_s {
                Some(0) => return Err("duration_s must be at least 1".into()),
                Some(v) => Duration::from_secs(v.into()),
                None => defaults.duration,
            },
            offload: self.offload.unwrap_or_default(),
            sla: Sla {
                max_p95_ms: match self.sla_max_p95_ms {
                    Some(0) => return Err("sla_max_p95_ms must be at least 1".into()),
                    Some(v) => v,
                    None => defaults.sla.max_p95_ms,
                },
                min_availability_permille: match self.sla_min_availability {
                    Some(v) => permille("sla_min_availability", v, 1.0)?,
                    None => defaults.sla.min_availability_permille,
                },
            },
            statement_every: match self.statement_every_s {
                Some(v) => seconds("statement_every_s", v)?,
                None => defaults.statement_every,
            },
            refuse,
            long_term,
        })
    }
}

impl LongTermFile {
    fn check(&self) -> Result<LongTerm, String> {
        let provider = |field: &str, text: &str| {
            text.parse::<ProviderId>()
                .map_err(|e| format!("{field} {text:?} is not a provider id: {e}"))
        };
        let primary = provider("primary", &self.primary)?;
        let peer = provider("peer", &self.peer)?;
        if primary == peer {
            return Err("primary and peer are the same provider".into());
        }
        if self.services.is_empty() || self.services.len() > MAX_SERVICES {
            return Err(format!("services: give 1 to {MAX_SERVICES} hostnames"));
        }
        let services = self
            .services
            .iter()
            .map(|s| s.trim().to_ascii_lowercase())
            .collect();
        Ok(LongTerm {
            primary,
            peer,
            services,
            share_permille: permille("share", self.share, 1.0)?,
            price_micros_per_gb: price("price_per_gb", self.price_per_gb)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reef_proto::records::ProviderKey;

    fn id(seed: u8) -> String {
        ProviderKey::from_bytes(&[seed; 32]).id().to_string()
    }

    fn parse(text: &str) -> Result<Policy, String> {
        toml::from_str::<PolicyFile>(text)
            .map_err(|e| e.to_string())?
            .check()
    }

    #[test]
    fn long_term_arrangements_are_checked() {
        let (a, b) = (id(1), id(2));
        let ok = parse(&format!(
            "[[long_term]]\nprimary = \"{a}\"\npeer = \"{b}\"\nservices = [\"Video.Example\"]\nshare = 0.3\nprice_per_gb = 0.01\n"
        ))
        .unwrap();
        let lt = &ok.long_term[0];
        assert_eq!(lt.share_permille, 300);
        assert_eq!(lt.price_micros_per_gb, 10_000);
        assert!(lt.services.contains("video.example"));

        let bad = |primary: &str, peer: &str, services: &str, share: f64, price: f64| {
            parse(&format!(
                "[[long_term]]\nprimary = \"{primary}\"\npeer = \"{peer}\"\nservices = {services}\nshare = {share}\nprice_per_gb = {price}\n"
            ))
            .unwrap_err()
        };
        assert!(bad("x", &b, "[\"a\"]", 0.3, 0.0).contains("not a provider id"));
        assert!(bad(&a, &a, "[\"a\"]", 0.3, 0.0).contains("same provider"));
        assert!(bad(&a, &b, "[]", 0.3, 0.0).contains("services"));
        assert!(bad(&a, &b, "[\"a\"]", 0.0, 0.0).contains("share"));
        assert!(bad(&a, &b, "[\"a\"]", 1.5, 0.0).contains("share"));
        assert!(bad(&a, &b, "[\"a\"]", 0.5, -1.0).contains("price"));
        let twice = format!(
            "[[long_term]]\nprimary = \"{a}\"\npeer = \"{b}\"\nservices = [\"a\"]\nshare = 1\nprice_per_gb = 0\n"
        )
        .repeat(2);
        assert!(parse(&twice).unwrap_err().contains("#2"));
        assert!(parse("[[long_term]]\ncolour = 1").is_err());
    }

    #[test]
    fn offload_and_sla_are_checked() {
        let p = parse("offload = \"proxy\"\nsla_max_p95_ms = 200\nsla_min_availability = 0.995\n")
            .unwrap();
        assert_eq!(p.offload, Mode::Proxy);
        assert_eq!(
            (p.sla.max_p95_ms, p.sla.min_availability_permille),
            (200, 995)
        );
        let defaults = parse("").unwrap();
        assert_eq!(defaults.offload, Mode::Redirect);
        assert_eq!(defaults.sla.min_availability_permille, 990);
        assert!(parse("offload = \"carrier-pigeon\"").is_err());
        assert!(
            parse("sla_max_p95_ms = 0")
                .unwrap_err()
                .contains("sla_max_p95_ms")
        );
        assert!(
            parse("sla_min_availability = 1.5")
                .unwrap_err()
                .contains("availability")
        );
    }
}
