//! Byte counters for the admin API, read back from the metrics libp2p keeps itself.
//!
//! Gossipsub counts every message copy it sends or receives per topic, and the bandwidth
//! transport counts every byte of every stream; both write into one prometheus-client
//! [`Registry`] (the one a later `/metrics` endpoint will serve). That crate offers no way to
//! read a value back except encoding it, so [`read`] encodes the registry as text and picks out
//! the few series it needs. It runs in the caller's task, never in the event loop, and costs a
//! few hundred microseconds, fine for a status request.

use std::collections::BTreeMap;

use libp2p::metrics::Registry;
use serde::Serialize;

/// Gossip and stream byte counters since the node started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Traffic {
    /// Per gossip topic, message copies and their bytes (each copy's protobuf encoding).
    pub gossip: BTreeMap<String, TopicTraffic>,
    /// Bytes read from all libp2p streams (every protocol: gossipsub with its control
    /// messages, Kademlia, identify, ping, and protocol negotiation), counted above the
    /// encryption and multiplexing layers, so their framing is not included.
    pub streams_in: u64,
    /// Bytes written to all libp2p streams, counted like `streams_in`.
    pub streams_out: u64,
}

/// What one topic's messages cost. Counted: every copy of a message received (first
/// deliveries and duplicates alike) and every copy sent to a peer (published, forwarded, or
/// sent in answer to IWANT). Not counted: control messages (IHAVE, IWANT, IDONTWANT, GRAFT,
/// PRUNE, subscriptions) and the RPC framing around messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TopicTraffic {
    pub messages_in: u64,
    pub bytes_in: u64,
    pub messages_out: u64,
    pub bytes_out: u64,
}

impl Traffic {
    /// Message bytes over all topics, (in, out).
    pub fn gossip_bytes(&self) -> (u64, u64) {
        self.gossip
            .values()
            .fold((0, 0), |(i, o), t| (i + t.bytes_in, o + t.bytes_out))
    }
}

/// The counters as they stand now. An encoding failure (which the text encoder only reports
/// for a failing `fmt::Write`, never for a `String`) reads as zeros.
pub(crate) fn read(registry: &Registry) -> Traffic {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, registry).is_err() {
        return Traffic::default();
    }
    parse(&text)
}

/// The series [`read`] needs, from prometheus text exposition.
fn parse(text: &str) -> Traffic {
    let mut traffic = Traffic::default();
    for line in text.lines() {
        let Some((name, labels, value)) = sample(line) else {
            continue;
        };
        let topic = || {
            label(labels, "hash")
                .or_else(|| label(labels, "topic_hash"))
                .unwrap_or_default()
        };
        match name {
            "gossipsub_topic_msg_recv_counts_unfiltered_total" => {
                traffic.gossip.entry(topic()).or_default().messages_in += value;
            }
            "gossipsub_topic_msg_recv_bytes_unfiltered_total" => {
                traffic.gossip.entry(topic()).or_default().bytes_in += value;
            }
            "gossipsub_topic_msg_sent_counts_total" => {
                traffic.gossip.entry(topic()).or_default().messages_out += value;
            }
            "gossipsub_topic_msg_sent_bytes_total" => {
                traffic.gossip.entry(topic()).or_default().bytes_out += value;
            }
            "libp2p_bandwidth_bytes_total" => match label(labels, "direction").as_deref() {
                Some("Inbound") => traffic.streams_in += value,
                Some("Outbound") => traffic.streams_out += value,
                _ => {}
            },
            _ => {}
        }
    }
    traffic
}

/// `name{labels} value` → (name, labels, value); comments and non-integer values are skipped.
fn sample(line: &str) -> Option<(&str, &str, u64)> {
    if line.starts_with('#') {
        return None;
    }
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    match series.split_once('{') {
        Some((name, labels)) => Some((name, labels.strip_suffix('}')?, value)),
        None => Some((series, "", value)),
    }
}

/// The value of label `key` in `k="v",k2="v2"` (escapes `\"`, `\\`, `\n` undone).
fn label(labels: &str, key: &str) -> Option<String> {
    let mut rest = labels;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        if name == key {
            return Some(value);
        }
        rest = after[end + 1..].trim_start_matches(',');
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_gossip_and_stream_series() {
        let text = r#"# HELP gossipsub_topic_msg_sent_bytes bytes.
# TYPE gossipsub_topic_msg_sent_bytes counter
gossipsub_topic_msg_sent_bytes_total{partial="false",topic_hash="reef/load/1"} 700
gossipsub_topic_msg_sent_counts_total{hash="reef/load/1"} 2
gossipsub_topic_msg_recv_bytes_unfiltered_total{hash="reef/load/1"} 1050
gossipsub_topic_msg_recv_counts_unfiltered_total{hash="reef/load/1"} 3
gossipsub_topic_msg_recv_bytes_total{hash="reef/load/1"} 350
gossipsub_topic_msg_recv_bytes_unfiltered_total{hash="odd \"topic\"\\"} 5
libp2p_bandwidth_bytes_total{protocols="/ip4/tcp",direction="Inbound"} 10
libp2p_bandwidth_bytes_total{protocols="/ip4/udp/quic-v1",direction="Inbound"} 20
libp2p_bandwidth_bytes_total{protocols="/ip4/tcp",direction="Outbound"} 7
gossipsub_heartbeat_duration_sum 0.5
# EOF
"#;
        let t = parse(text);
        assert_eq!(
            t.gossip["reef/load/1"],
            TopicTraffic {
                messages_in: 3,
                bytes_in: 1050,
                messages_out: 2,
                bytes_out: 700
            }
        );
        assert_eq!(t.gossip[r#"odd "topic"\"#].bytes_in, 5);
        assert_eq!((t.streams_in, t.streams_out), (30, 7));
        assert_eq!(t.gossip_bytes(), (1055, 700));
    }

    #[test]
    fn bad_lines_are_skipped() {
        for line in [
            "",
            "x",
            "x{a=\"1\" 2",
            "x{a=\"unterminated} 3",
            "x 1.5",
            "x{} -1",
        ] {
            let t = parse(line);
            assert_eq!(t, Traffic::default(), "{line}");
        }
        assert_eq!(label(r#"a="1",b="2""#, "b").as_deref(), Some("2"));
        assert_eq!(label(r#"a="1""#, "c"), None);
    }
}
