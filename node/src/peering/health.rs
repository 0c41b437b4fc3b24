//! Watching the peer's nodes while they serve for us.
//!
//! Every node of a primary with an active arrangement probes the peer nodes it may send
//! requests to, once a second: a `HEAD` of a path it recently sent there (the service's root
//! before any), addressed as a redirect would (`/_reef/s/HOST/PATH`), marked as a probe so the
//! peer does not bill it. A node whose last probe failed gets no requests from us until a
//! probe succeeds again, so a dead or frozen peer node costs clients about a second of failed
//! redirects at most; one that leaves the load table is probed for [`LINGER`] more, so its
//! death shows in the SLA. The probes of the last [`SLA_WINDOW`] are the primary's own measure of the peer against the agreement's SLA:
//! availability (answered, not 5xx, not 403) and the 95th percentile of response times,
//! counted from the peer's first answer (a new peer warms up first, for [`WARM_UP`] at most).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use http::{HeaderMap, Method, StatusCode};
use reef_overlay::PeerId;
use reef_proto::records::{ArrangementId, Sla};
use serde::Serialize;
use tracing::debug;

use super::redirect::SERVICE_PATH;
use super::{Arrangement, Arrangements};
use crate::edge::PROBE_HEADER;
use crate::fetch::upstream::Upstreams;
use crate::load::Load;

/// Probes go out this often: the load table changes once a second too.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);
/// A probe not answered within this counts as failed: well above any SLA's p95 we would
/// sign, well below what a client waits before giving up.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Peer nodes probed per arrangement, least loaded first; the redirector picks among them.
pub const PROBED_NODES: usize = 4;
/// The SLA is judged over the probes of this long: long enough for a p95 over a few dozen
/// samples, short enough to act while the surge lasts.
pub const SLA_WINDOW: Duration = Duration::from_secs(30);
/// A new peer warms up (looks the service up, fetches the object) before it answers fast:
/// failures before its first answered probe do not count, for this long at most.
pub const WARM_UP: Duration = Duration::from_secs(15);
/// Fewer failed probes than this never breach availability: one or two lost probes are
/// noise on any network, not a peer that fails its customers.
const MIN_FAILURES: usize = 3;
/// A p95 over fewer answered probes says nothing.
const MIN_LATENCY_SAMPLES: usize = 10;
/// A node that leaves the load table (it stopped reporting: dead, or hung) is still probed
/// this long, so its failures count against the SLA rather than vanish with it.
pub const LINGER: Duration = Duration::from_secs(10);
/// Samples kept per arrangement (a window's worth at several probed nodes).
const MAX_SAMPLES: usize = 1024;
/// Nodes, arrangements and services remembered; the oldest make room.
const MAX_TRACKED: usize = 256;

#[derive(Default)]
pub struct Health {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Peer node → whether its last probe (or relayed request) succeeded, and when.
    nodes: HashMap<PeerId, (bool, Instant)>,
    /// Arrangement → its probes, oldest first; `None` latency is a failure.
    samples: HashMap<ArrangementId, Samples>,
    /// Service → the last path and query we sent to a peer, and when.
    paths: HashMap<String, (String, Instant)>,
}

/// One arrangement's probes.
#[derive(Default)]
struct Samples {
    /// Oldest first; `None` latency is a failure.
    all: VecDeque<(Instant, Option<Duration>)>,
    /// When the first probe went out, and when one was first answered.
    first: Option<Instant>,
    warm: Option<Instant>,
    /// The peer nodes probed for it, and when each was last in the load table.
    nodes: HashMap<PeerId, Instant>,
}

impl Samples {
    /// The latencies that count at `now`: those of the last [`SLA_WINDOW`], and none from
    /// before the peer warmed up unless it took longer than [`WARM_UP`].
    fn counted(&self, now: Instant) -> Vec<Option<Duration>> {
        let since = match (self.warm, self.first) {
            (Some(warm), _) => warm,
            (None, Some(first)) if now.saturating_duration_since(first) > WARM_UP => first,
            _ => return Vec::new(),
        };
        self.all
            .iter()
            .filter(|(at, _)| *at >= since && now.saturating_duration_since(*at) <= SLA_WINDOW)
            .map(|(_, latency)| *latency)
            .collect()
    }
}

/// How the peer is doing against the SLA, as measured by this node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SlaView {
    pub max_p95_ms: u32,
    pub min_availability_permille: u16,
    /// Probes in the window.
    pub samples: usize,
    pub failures: usize,
    /// `null` until there are samples.
    pub availability_permille: Option<u16>,
    /// Of answered probes; `null` until there are any.
    pub p95_ms: Option<u32>,
    /// What is breached (`availability` or `latency`), if anything.
    pub breach: Option<&'static str>,
}

/// Drops the entry with the oldest time once `map` is full, so a new key fits.
fn make_room<K: Clone + Eq + std::hash::Hash, V>(
    map: &mut HashMap<K, V>,
    key: &K,
    at: impl Fn(&V) -> Instant,
) {
    if map.len() >= MAX_TRACKED
        && !map.contains_key(key)
        && let Some(oldest) = map
            .iter()
            .min_by_key(|(_, v)| at(v))
            .map(|(k, _)| k.clone())
    {
        map.remove(&oldest);
    }
}

impl Health {
    fn state(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the maps consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether requests may go to `node`: yes unless its last probe failed.
    pub fn usable(&self, node: &PeerId) -> bool {
        self.state().nodes.get(node).is_none_or(|(ok, _)| *ok)
    }

    /// `node` did (or did not) answer a relayed request properly.
    pub fn observed(&self, node: PeerId, ok: bool) {
        let now = Instant::now();
        let mut state = self.state();
        make_room(&mut state.nodes, &node, |(_, at)| *at);
        state.nodes.insert(node, (ok, now));
    }

    /// We sent `path` of `host` to a peer: probes use it, as a path the peer should hold.
    pub fn sent(&self, host: &str, path: &str) {
        let now = Instant::now();
        let mut state = self.state();
        if let Some((kept, at)) = state.paths.get_mut(host) {
            if kept != path {
                path.clone_into(kept);
            }
            *at = now;
            return;
        }
        make_room(&mut state.paths, &host.to_string(), |(_, at)| *at);
        state
            .paths
            .insert(host.to_string(), (path.to_string(), now));
    }

    /// The service and path to probe for `arrangement`.
    fn probe_target(&self, arrangement: &Arrangement) -> Option<(String, String)> {
        let state = self.state();
        arrangement
            .services
            .iter()
            .filter_map(|host| {
                let (path, at) = state.paths.get(host)?;
                Some((*at, host.clone(), path.clone()))
            })
            .max()
            .map(|(_, host, path)| (host, path))
            .or_else(|| {
                let host = arrangement.services.first()?;
                Some((host.clone(), "/".to_string()))
            })
    }

    fn record(&self, id: ArrangementId, node: PeerId, latency: Option<Duration>, now: Instant) {
        let mut state = self.state();
        make_room(&mut state.nodes, &node, |(_, at)| *at);
        state.nodes.insert(node, (latency.is_some(), now));
        make_room(&mut state.samples, &id, |s| {
            s.all.back().map_or(now, |(at, _)| *at)
        });
        let samples = state.samples.entry(id).or_default();
        if samples.all.len() >= MAX_SAMPLES {
            samples.all.pop_front();
        }
        samples.all.push_back((now, latency));
        samples.first.get_or_insert(now);
        if latency.is_some() {
            samples.warm.get_or_insert(now);
        }
    }

    /// The peer of `id` against `sla`, over the probes of the last [`SLA_WINDOW`] before `now`.
    pub fn sla(&self, id: &ArrangementId, sla: &Sla, now: Instant) -> SlaView {
        let counted = self
            .state()
            .samples
            .get(id)
            .map(|s| s.counted(now))
            .unwrap_or_default();
        judge(&counted, sla)
    }

    /// The peer nodes to probe for `id`: `listed` (the peer's least loaded nodes in the load
    /// table now), and those listed before that left it less than [`LINGER`] ago.
    fn targets(&self, id: ArrangementId, listed: &[PeerId], now: Instant) -> Vec<PeerId> {
        let mut state = self.state();
        make_room(&mut state.samples, &id, |s| {
            s.all.back().map_or(now, |(at, _)| *at)
        });
        let nodes = &mut state.samples.entry(id).or_default().nodes;
        for peer in listed {
            nodes.insert(*peer, now);
        }
        nodes.retain(|_, seen| now.saturating_duration_since(*seen) < LINGER);
        let mut out = listed.to_vec();
        out.extend(nodes.keys().filter(|p| !listed.contains(p)));
        out.truncate(2 * PROBED_NODES);
        out
    }

    /// Forgets the probes of arrangements no longer active.
    fn retain(&self, active: &[ArrangementId]) {
        self.state().samples.retain(|id, _| active.contains(id));
    }
}

/// The verdict on `samples` (`None`: a failed probe) against `sla`.
fn judge(samples: &[Option<Duration>], sla: &Sla) -> SlaView {
    let failures = samples.iter().filter(|s| s.is_none()).count();
    let mut answered: Vec<Duration> = samples.iter().flatten().copied().collect();
    answered.sort();
    let p95 = (!answered.is_empty()).then(|| {
        // Nearest rank: the smallest value with at least 95% of samples at or below it.
        let rank = (answered.len() * 95).div_ceil(100).max(1);
        answered[rank - 1]
    });
    let p95_ms = p95.map(|d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX));
    let availability_permille =
        (!samples.is_empty()).then(|| ((samples.len() - failures) * 1000 / samples.len()) as u16);
    let breach = if failures >= MIN_FAILURES
        && availability_permille.is_some_and(|a| a < sla.min_availability_permille)
    {
        Some("availability")
    } else if answered.len() >= MIN_LATENCY_SAMPLES && p95_ms.is_some_and(|p| p > sla.max_p95_ms) {
        Some("latency")
    } else {
        None
    };
    SlaView {
        max_p95_ms: sla.max_p95_ms,
        min_availability_permille: sla.min_availability_permille,
        samples: samples.len(),
        failures,
        availability_permille,
        p95_ms,
        breach,
    }
}

/// Whether a peer node's answer to a probe or a relayed request counts as served: anything
/// but a server error, or a refusal (the node does not honour the arrangement).
pub fn served_properly(status: StatusCode) -> bool {
    !status.is_server_error() && status != StatusCode::FORBIDDEN
}

/// Sends the probes, once every [`PROBE_EVERY`], on every node.
pub struct Prober {
    pub health: Arc<Health>,
    pub arrangements: Arc<Arrangements>,
    pub load: Load,
    pub overlay: reef_overlay::Client,
    pub upstreams: Upstreams,
}

impl Prober {
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PROBE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                self.round().await;
            }
        })
    }

    async fn round(&self) {
        let active = self.arrangements.active_as_primary();
        self.health
            .retain(&active.iter().map(|a| a.id).collect::<Vec<_>>());
        let mut probes = Vec::new();
        for arrangement in &active {
            let Some((host, path)) = self.health.probe_target(arrangement) else {
                continue;
            };
            let target = format!("{SERVICE_PATH}{host}{path}");
            let listed: Vec<PeerId> = self
                .load
                .nodes_of(&arrangement.peer)
                .into_iter()
                .take(PROBED_NODES)
                .map(|n| n.peer)
                .collect();
            for node in self.health.targets(arrangement.id, &listed, Instant::now()) {
                probes.push(self.probe(arrangement.id, node, target.clone()));
            }
        }
        // At most a few arrangements × 2 × PROBED_NODES, each bounded by PROBE_TIMEOUT.
        futures::future::join_all(probes).await;
    }

    async fn probe(&self, id: ArrangementId, node: PeerId, target: String) {
        let http = match self.overlay.node_record(node).await {
            Ok(Some(info)) => info.record.http,
            // No address known: the node cannot get requests either; nothing to measure.
            _ => return,
        };
        let mut headers = HeaderMap::new();
        headers.insert(PROBE_HEADER, http::HeaderValue::from_static("1"));
        let started = Instant::now();
        let outcome = self
            .upstreams
            .node(Method::HEAD, &http, &target, headers, PROBE_TIMEOUT)
            .await;
        let latency = match outcome {
            Ok(resp) if served_properly(resp.status()) => Some(started.elapsed()),
            Ok(resp) => {
                debug!(arrangement = %id, %node, status = resp.status().as_u16(), "probe refused");
                None
            }
            Err(why) => {
                debug!(arrangement = %id, %node, %why, "probe failed");
                None
            }
        };
        self.health.record(id, node, latency, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLA: Sla = Sla {
        max_p95_ms: 100,
        min_availability_permille: 990,
    };

    fn ms(v: u64) -> Option<Duration> {
        Some(Duration::from_millis(v))
    }

    #[test]
    fn a_few_lost_probes_are_noise_more_are_a_breach() {
        let mut samples = vec![ms(5); 20];
        samples.extend([None, None]);
        let view = judge(&samples, &SLA);
        assert_eq!((view.failures, view.breach), (2, None));
        assert_eq!(view.availability_permille, Some(909));
        samples.push(None);
        assert_eq!(judge(&samples, &SLA).breach, Some("availability"));
        // Nothing measured yet: no verdict.
        let empty = judge(&[], &SLA);
        assert_eq!(
            (empty.availability_permille, empty.p95_ms, empty.breach),
            (None, None, None)
        );
    }

    #[test]
    fn p95_is_the_nearest_rank_and_needs_enough_answers() {
        let mut samples: Vec<_> = (1..=19).map(|v| ms(v * 10)).collect();
        samples.push(ms(1000));
        // 19 values up to 190 ms and one of 1 s: the 19th of 20 is 190 ms.
        let view = judge(&samples, &SLA);
        assert_eq!(view.p95_ms, Some(190));
        assert_eq!(view.breach, Some("latency"));
        let few: Vec<_> = (0..9).map(|_| ms(500)).collect();
        assert_eq!(judge(&few, &SLA).breach, None, "9 answers are too few");
        let fast: Vec<_> = (0..40).map(|_| ms(20)).collect();
        assert_eq!(judge(&fast, &SLA).breach, None);
    }

    #[test]
    fn a_node_that_failed_is_not_used_until_it_answers_again() {
        let health = Health::default();
        let node = PeerId::random();
        let id = ArrangementId::from_bytes([1; 16]);
        assert!(health.usable(&node), "unknown nodes may be used");
        health.record(id, node, None, Instant::now());
        assert!(!health.usable(&node));
        health.record(id, node, ms(3), Instant::now());
        assert!(health.usable(&node));
        health.observed(node, false);
        assert!(!health.usable(&node));
        // The failure came before the peer's first answer: it was warming up.
        let view = health.sla(&id, &SLA, Instant::now());
        assert_eq!((view.samples, view.failures), (1, 0));
        health.record(id, node, None, Instant::now());
        let view = health.sla(&id, &SLA, Instant::now());
        assert_eq!((view.samples, view.failures), (2, 1));
        // Old samples leave the window.
        let later = Instant::now() + SLA_WINDOW + Duration::from_secs(1);
        assert_eq!(health.sla(&id, &SLA, later).samples, 0);
    }

    #[test]
    fn a_peer_that_never_warms_up_is_judged_after_the_warm_up() {
        let health = Health::default();
        let (id, node, t0) = (
            ArrangementId::from_bytes([2; 16]),
            PeerId::random(),
            Instant::now(),
        );
        for i in 0..5 {
            health.record(id, node, None, t0 + Duration::from_secs(i));
        }
        assert_eq!(
            health.sla(&id, &SLA, t0 + Duration::from_secs(5)).breach,
            None
        );
        let late = t0 + WARM_UP + Duration::from_secs(1);
        health.record(id, node, None, late);
        // Samples of the window only: those within SLA_WINDOW of `late`.
        assert_eq!(health.sla(&id, &SLA, late).breach, Some("availability"));
    }

    #[test]
    fn a_node_that_left_the_load_table_is_probed_a_while_longer() {
        let health = Health::default();
        let (id, t0) = (ArrangementId::from_bytes([3; 16]), Instant::now());
        let (a, b) = (PeerId::random(), PeerId::random());
        assert_eq!(health.targets(id, &[a, b], t0), vec![a, b]);
        let later = t0 + Duration::from_secs(3);
        let targets = health.targets(id, &[b], later);
        assert_eq!(targets.len(), 2, "a lingers");
        assert!(targets.contains(&a));
        assert_eq!(health.targets(id, &[b], t0 + LINGER), vec![b]);
    }

    #[test]
    fn probes_use_the_last_path_sent_and_memory_is_bounded() {
        let health = Health::default();
        for i in 0..(MAX_TRACKED + 10) {
            health.sent(&format!("s{i}.example"), "/x");
        }
        assert_eq!(health.state().paths.len(), MAX_TRACKED);
        health.sent("video.example", "/a");
        health.sent("video.example", "/b?q=1");
        let lt = super::super::LongTerm {
            primary: reef_proto::records::ProviderKey::from_bytes(&[1; 32]).id(),
            peer: reef_proto::records::ProviderKey::from_bytes(&[2; 32]).id(),
            services: ["video.example".to_string(), "img.example".to_string()].into(),
            share_permille: 1000,
            price_micros_per_gb: 0,
        };
        let arrangement = Arrangement::long_term(&lt);
        assert_eq!(
            health.probe_target(&arrangement),
            Some(("video.example".into(), "/b?q=1".into()))
        );
        let fresh = Health::default();
        assert_eq!(
            fresh.probe_target(&arrangement),
            Some(("img.example".into(), "/".into()))
        );
    }

    #[test]
    fn server_errors_and_refusals_are_not_service() {
        assert!(served_properly(StatusCode::OK));
        assert!(served_properly(StatusCode::NOT_FOUND));
        assert!(!served_properly(StatusCode::FORBIDDEN));
        assert!(!served_properly(StatusCode::BAD_GATEWAY));
    }
}
