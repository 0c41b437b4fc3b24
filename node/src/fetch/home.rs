//! The home node of a content key: among the live nodes of our own provider, the one that
//! fetches a new object for all of them.
//!
//! When a crowd asks many nodes for the same new object at the same instant, none of them can
//! have heard of another's fill yet (a DHT announcement takes milliseconds to land), so each
//! would go to the origin. Instead every node sends a cold miss to the key's *home*: the node
//! with the highest rendezvous score (blake3 of the key and the peer id) among the nodes that
//! the load table lists for our provider. Every node with the same table picks the same home,
//! so the origin sees one request; the home streams the body to the others while it arrives.
//! Adding or removing a node moves only the keys whose home it is.
//!
//! Only nodes of our own provider qualify: the load table lists a node under a provider only
//! with a certificate from that provider's key, and bodies from a home are streamed before
//! they are checked (see `fetch::verify::streaming`), which we allow only among the provider's
//! own machines. A home that fails (refused, slow, a wrong body) is passed over for
//! [`FAILED_HOME_TTL`], so the next-ranked node takes its keys.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reef_overlay::PeerId;
use reef_proto::ContentKey;
use reef_proto::records::ProviderId;

use crate::load::Load;

/// How long a home that failed us stays out of the running: long enough for the load table to
/// drop a dead node (5 s) and for pings to mark a frozen one, short enough that a node which
/// only hiccuped gets its keys back soon.
pub const FAILED_HOME_TTL: Duration = Duration::from_secs(10);
/// Failed homes remembered at once; the load table holds at most 4096 nodes.
const MAX_FAILED_HOMES: usize = 4096;
/// Domain separation for the rendezvous score.
const SCORE_CONTEXT: &str = "reef home node v1";

/// Picks the home of a key; disabled, it never names one and every miss takes its own path.
pub struct Homes {
    enabled: bool,
    load: Option<Load>,
    own: ProviderId,
    me: PeerId,
    failed: Mutex<HashMap<PeerId, Instant>>,
}

impl Homes {
    pub fn new(enabled: bool, load: Option<Load>, own: ProviderId, me: PeerId) -> Homes {
        Homes {
            enabled,
            load,
            own,
            me,
            failed: Mutex::new(HashMap::new()),
        }
    }

    /// Off: no forwarding at all.
    pub fn disabled(me: PeerId) -> Homes {
        Homes::new(false, None, ProviderId::from_bytes([0; 32]), me)
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The home of `key` among our provider's live nodes, ourselves included (`None` when
    /// routing is off). Homes that failed us lately are passed over.
    pub fn of(&self, key: &ContentKey) -> Option<PeerId> {
        if !self.enabled {
            return None;
        }
        let load = self.load.as_ref()?;
        let nodes: Vec<PeerId> = load.nodes_of(&self.own).iter().map(|n| n.peer).collect();
        let failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        pick(key, nodes, self.me, &failed, Instant::now())
    }

    /// `peer` failed us as a home: pass it over for a while.
    pub fn failed(&self, peer: PeerId) {
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if failed.len() >= MAX_FAILED_HOMES {
            failed.retain(|_, until| *until > now);
        }
        if failed.len() < MAX_FAILED_HOMES {
            failed.insert(peer, now + FAILED_HOME_TTL);
        }
    }

    pub fn me(&self) -> PeerId {
        self.me
    }
}

/// The home of `key` among `nodes` and ourselves (our own first report may not have reached
/// our table yet), leaving out those that failed us until their time is up.
fn pick(
    key: &ContentKey,
    mut nodes: Vec<PeerId>,
    me: PeerId,
    failed: &HashMap<PeerId, Instant>,
    now: Instant,
) -> Option<PeerId> {
    if !nodes.contains(&me) {
        nodes.push(me);
    }
    nodes.retain(|p| *p == me || failed.get(p).is_none_or(|until| *until <= now));
    choose(key, &nodes)
}

/// Rendezvous (highest random weight) hashing: the node whose score for `key` is highest.
pub fn choose(key: &ContentKey, nodes: &[PeerId]) -> Option<PeerId> {
    nodes
        .iter()
        .copied()
        .max_by_key(|peer| (score(key, peer), *peer))
}

fn score(key: &ContentKey, peer: &PeerId) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_derive_key(SCORE_CONTEXT);
    hasher.update(key.as_bytes());
    hasher.update(&peer.to_bytes());
    *hasher.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(n: usize) -> Vec<PeerId> {
        (0..n).map(|_| PeerId::random()).collect()
    }

    fn key(i: u32) -> ContentKey {
        let mut bytes = [0u8; 32];
        bytes[..4].copy_from_slice(&i.to_be_bytes());
        ContentKey::from_bytes(bytes)
    }

    #[test]
    fn every_node_picks_the_same_home_whatever_the_order() {
        let nodes = peers(20);
        let mut reversed = nodes.clone();
        reversed.reverse();
        for i in 0..200 {
            assert_eq!(choose(&key(i), &nodes), choose(&key(i), &reversed));
        }
        assert_eq!(choose(&key(0), &[]), None);
    }

    #[test]
    fn keys_spread_over_the_nodes() {
        let nodes = peers(10);
        let mut counts: HashMap<PeerId, usize> = HashMap::new();
        for i in 0..2000 {
            *counts.entry(choose(&key(i), &nodes).unwrap()).or_default() += 1;
        }
        assert_eq!(counts.len(), 10);
        // 200 expected each; a fair hash stays well within this.
        assert!(
            counts.values().all(|&c| (120..=280).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn removing_a_node_moves_only_its_own_keys() {
        let nodes = peers(8);
        let gone = nodes[3];
        let rest: Vec<_> = nodes.iter().copied().filter(|p| *p != gone).collect();
        for i in 0..500 {
            let before = choose(&key(i), &nodes).unwrap();
            let after = choose(&key(i), &rest).unwrap();
            if before != gone {
                assert_eq!(before, after, "key {i} moved though its home stayed");
            }
        }
    }

    #[test]
    fn a_failed_home_is_passed_over_for_a_while_and_we_never_are() {
        let nodes = peers(5);
        let me = nodes[0];
        let now = Instant::now();
        let k = (0..)
            .map(key)
            .find(|k| choose(k, &nodes) != Some(me))
            .unwrap();
        let home = choose(&k, &nodes).unwrap();
        let mut failed = HashMap::new();
        assert_eq!(pick(&k, nodes.clone(), me, &failed, now), Some(home));
        failed.insert(home, now + FAILED_HOME_TTL);
        let next = pick(&k, nodes.clone(), me, &failed, now).unwrap();
        assert_ne!(next, home, "the failed home is passed over");
        let rest: Vec<_> = nodes.iter().copied().filter(|p| *p != home).collect();
        assert_eq!(
            Some(next),
            choose(&k, &rest),
            "its keys go to the next-ranked node"
        );
        let later = now + FAILED_HOME_TTL + Duration::from_millis(1);
        assert_eq!(pick(&k, nodes.clone(), me, &failed, later), Some(home));
        // We are always a candidate, even missing from the table or marked failed.
        failed.insert(me, now + FAILED_HOME_TTL);
        assert_eq!(pick(&k, vec![], me, &failed, now), Some(me));
    }

    #[test]
    fn disabled_or_without_a_table_names_no_home() {
        let me = PeerId::random();
        assert_eq!(Homes::disabled(me).of(&key(1)), None);
        let homes = Homes::new(true, None, ProviderId::from_bytes([1; 32]), me);
        assert_eq!(homes.of(&key(1)), None);
    }
}
