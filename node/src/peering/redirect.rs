//! Offloading: an overloaded node of a primary sends part of its service requests to the
//! least loaded healthy nodes of the peer, with a `302` or (by policy) by relaying the peer
//! node's answer.
//!
//! How much goes: once the node's demand (what arrives, see `load::meter`) is above its
//! *relief target*, the middle of the policy's low and high watermarks, it sends the part of
//! its requests that brings what it serves itself back to that target, never more than the
//! arrangement's agreed share, nor more than its even part of the capacity the peer lends. Demand does not fall when requests go elsewhere, so the part
//! stays steady while the surge lasts, and the node's utilisation settles under the high
//! watermark instead of flapping around it.
//!
//! The redirect names the peer node by address, so the service travels in the path:
//! `http://PEER/_reef/s/HOST/PATH`, which any node reads as `Host: HOST`, `PATH`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use reef_overlay::PeerId;
use reef_proto::records::{ArrangementId, ProviderId};
use tracing::debug;

use super::health::{Health, PROBED_NODES};
use super::{Arrangement, Arrangements, Policy};
use crate::limits::token_bucket::TokenBucket;
use crate::load::{Load, REPORT_INTERVAL};

/// Path prefix of a service request addressed to a node rather than to the service's name.
pub const SERVICE_PATH: &str = "/_reef/s/";

/// How a primary node hands a request to the peer (`[peering] offload`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// `302` to the peer node: the body never passes through us.
    #[default]
    Redirect,
    /// We fetch the answer from the peer node and relay it: for clients that do not follow
    /// redirects. It spares our cache and origin, not our bandwidth.
    Proxy,
}

/// One request to send to a peer node.
#[derive(Debug, Clone)]
pub struct Offload {
    pub arrangement: Arc<Arrangement>,
    pub node: PeerId,
    /// The node's HTTP address.
    pub http: String,
    /// `/_reef/s/HOST/PATH`.
    pub target: String,
}

impl Offload {
    /// Where a redirect sends the client.
    pub fn location(&self) -> String {
        format!("http://{}{}", self.http, self.target)
    }
}

/// The utilisation an overloaded node sheds down to, in permille: halfway between the
/// watermarks, so it is under the high one with room to spare and the arrangement is not
/// ended (under the low one) while demand stays high.
pub fn relief_target(policy: &Policy) -> u32 {
    (u32::from(policy.low_watermark_permille) + u32::from(policy.high_watermark_permille)) / 2
}

/// Permille of requests to send away at `demand` (permille of capacity) to serve `target`
/// ourselves, capped at the agreed `share`.
pub fn part_to_send(demand: u32, target: u32, share: u16) -> u64 {
    if demand <= target {
        return 0;
    }
    let needed = 1000 - u64::from(target) * 1000 / u64::from(demand);
    needed.clamp(1, u64::from(share))
}

/// Decides, per request, whether to send it to a peer provider.
pub struct Redirector {
    arrangements: Arc<Arrangements>,
    load: Load,
    overlay: reef_overlay::Client,
    health: Arc<Health>,
    target_permille: u32,
    pub mode: Mode,
    /// Requests considered, for spreading the part evenly.
    considered: AtomicU64,
    /// This node's part of what the arrangement lends, spent a request at a time.
    lent: Mutex<Lent>,
    view: Mutex<Option<Arc<TableView>>>,
}

impl Redirector {
    pub fn new(
        arrangements: Arc<Arrangements>,
        load: Load,
        overlay: reef_overlay::Client,
        health: Arc<Health>,
        policy: &Policy,
    ) -> Self {
        Self {
            arrangements,
            load,
            overlay,
            health,
            target_permille: relief_target(policy),
            mode: policy.offload,
            considered: AtomicU64::new(0),
            lent: Mutex::new(Lent::default()),
            view: Mutex::new(None),
        }
    }

    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// Where to send a request for `path_and_query` of our service `host`, if it should go
    /// to a peer: this node's demand is over its relief target, an active arrangement covers
    /// the service, the request falls in the part to send, and a peer node is healthy.
    /// `over_ceiling`: this node may not serve it at all (see `limits`), so it goes whatever
    /// the part, as long as the arrangement's rate allows and a peer node is healthy.
    pub async fn offload(
        &self,
        host: &str,
        path_and_query: &str,
        over_ceiling: bool,
    ) -> Option<Offload> {
        let own = self.load.own();
        if !over_ceiling && own.demand_permille <= self.target_permille {
            return None;
        }
        let arrangement = self.arrangements.primary_for(host)?;
        let view = self.view_of(&arrangement.peer);
        if !over_ceiling {
            let part = part_to_send(
                own.demand_permille,
                self.target_permille,
                arrangement.share_permille,
            );
            let n = self.considered.fetch_add(1, Ordering::Relaxed);
            // Spread evenly: request n goes when the running part crosses a whole request.
            if (n + 1) * part / 1000 == n * part / 1000 {
                return None;
            }
        }
        // The peer lends this much in all (long-term arrangements set no limit); each of our
        // nodes takes its even part of it.
        if arrangement.req_per_s > 0 {
            let cap = (arrangement.req_per_s / view.own_nodes.max(1)).max(1);
            let mut lent = self.lent.lock().unwrap_or_else(PoisonError::into_inner);
            if !lent.take(arrangement.id, cap, Instant::now()) {
                return None;
            }
        }
        // Probes find a dead node within a second; a broken connection tells at once.
        for peer in view
            .peer_nodes
            .iter()
            .filter(|p| self.health.usable(p) && !self.overlay.connection_broken(p))
        {
            match self.overlay.node_record(*peer).await {
                Ok(Some(info)) => {
                    debug!(arrangement = %arrangement.id, %peer, %host, "sent to a peer");
                    self.health.sent(host, path_and_query);
                    return Some(Offload {
                        node: *peer,
                        http: info.record.http,
                        target: format!("{SERVICE_PATH}{host}{path_and_query}"),
                        arrangement,
                    });
                }
                Ok(None) => continue,
                Err(error) => debug!(%peer, %error, "no record for a peer node"),
            }
        }
        None
    }

    /// What the load table says of `peer` and of us, read at most once per load report
    /// (a scan of the table on every request would cost more than the request).
    fn view_of(&self, peer: &ProviderId) -> Arc<TableView> {
        let mut cached = self.view.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(view) = cached.as_ref()
            && view.peer == *peer
            && view.at.elapsed() < REPORT_INTERVAL
        {
            return view.clone();
        }
        let view = Arc::new(TableView {
            at: Instant::now(),
            peer: *peer,
            peer_nodes: self
                .load
                .nodes_of(peer)
                .into_iter()
                .take(PROBED_NODES)
                .map(|n| n.peer)
                .collect(),
            own_nodes: self.load.nodes_of(&self.arrangements.own()).len() as u32,
        });
        *cached = Some(view.clone());
        view
    }
}

/// A node's part of an arrangement's agreed rate, as a bucket of that many requests a second
/// (and as many at once). Checked against the last second's rate instead, the node sent
/// everything for a second, then nothing the next, while its rate caught up: every other
/// second of a surge past the arrangement's size went unrelieved.
#[derive(Default)]
struct Lent(Option<(ArrangementId, u32, TokenBucket)>);

impl Lent {
    /// Takes one request from `cap` a second lent under `id`; false when this second's are
    /// spent. A new arrangement or part starts a full bucket.
    fn take(&mut self, id: ArrangementId, cap: u32, now: Instant) -> bool {
        let (_, _, bucket) = match &mut self.0 {
            Some(lent) if lent.0 == id && lent.1 == cap => lent,
            slot => {
                let rate = f64::from(cap.max(1));
                slot.insert((id, cap, TokenBucket::new(rate, rate, now)))
            }
        };
        bucket.try_take(1.0, now).is_ok()
    }
}

/// The part of the load table the redirector reads, as of `at`.
struct TableView {
    at: Instant,
    peer: ProviderId,
    /// Its least loaded nodes, the ones the probes watch.
    peer_nodes: Vec<PeerId>,
    own_nodes: u32,
}

/// A service request addressed to a node (`/_reef/s/HOST/PATH`): `(HOST, /PATH)`.
pub fn parse_service_path(path_and_query: &str) -> Option<(&str, String)> {
    let rest = path_and_query.strip_prefix(SERVICE_PATH)?;
    let (host, path) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if host.is_empty() {
        return None;
    }
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    Some((host, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_paths_split_into_host_and_path() {
        assert_eq!(
            parse_service_path("/_reef/s/video.example/a/b?x=1"),
            Some(("video.example", "/a/b?x=1".to_string()))
        );
        assert_eq!(
            parse_service_path("/_reef/s/video.example"),
            Some(("video.example", "/".to_string()))
        );
        assert_eq!(
            parse_service_path("/_reef/s/video.example?q"),
            Some(("video.example", "/?q".to_string()))
        );
        assert_eq!(parse_service_path("/_reef/s/"), None);
        assert_eq!(parse_service_path("/other"), None);
    }

    #[test]
    fn the_part_sent_brings_the_node_back_to_its_target_within_the_share() {
        // Under the target nothing goes.
        assert_eq!(part_to_send(650, 650, 1000), 0);
        // Twice the target: half goes, so the node serves its target.
        assert_eq!(part_to_send(1300, 650, 1000), 500);
        // Ten times: 935 of 1000 go, but never more than the agreed share.
        assert_eq!(part_to_send(10_000, 650, 1000), 935);
        assert_eq!(part_to_send(10_000, 650, 300), 300);
        // Just over the target: a sliver (rounded up, so the node ends at or under it).
        assert_eq!(part_to_send(651, 650, 1000), 2);
        let policy = Policy {
            low_watermark_permille: 500,
            high_watermark_permille: 800,
            ..Policy::default()
        };
        assert_eq!(relief_target(&policy), 650);
    }

    #[test]
    fn a_node_spends_its_part_of_the_lent_rate_evenly() {
        let t0 = Instant::now();
        let (a, b) = (
            ArrangementId::from_bytes([1; 16]),
            ArrangementId::from_bytes([2; 16]),
        );
        let mut lent = Lent::default();
        // 10 a second: a second's worth at once, then one per 100 ms.
        assert_eq!((0..15).filter(|_| lent.take(a, 10, t0)).count(), 10);
        let later = t0 + std::time::Duration::from_millis(100);
        assert!(lent.take(a, 10, later));
        assert!(!lent.take(a, 10, later));
        // Over a long surge: the rate, not twice it one second and nothing the next.
        let sent = (0..1000u64)
            .filter(|i| lent.take(a, 10, later + std::time::Duration::from_millis(10 * i)))
            .count();
        assert!((99..=101).contains(&sent), "{sent}");
        // A new arrangement (or part) starts afresh.
        assert!(lent.take(b, 10, later));
        assert!(lent.take(b, 20, later));
    }

    #[test]
    fn the_share_is_spread_evenly() {
        for share in [1u64, 300, 500, 999, 1000] {
            let went = (0..10_000u64)
                .filter(|n| (n + 1) * share / 1000 != n * share / 1000)
                .count() as u64;
            assert_eq!(went, share * 10, "share {share}");
        }
    }
}
