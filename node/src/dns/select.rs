//! Which node addresses go into one answer: a pure function of a snapshot of the nodes, so it
//! can be tested without a network.
//!
//! Per provider, a node is *eligible* while it is listed in the load table (its last report
//! is under 5 s old, checked against the instant of the query, not of the snapshot) and has an
//! address of the asked family. Eligible nodes under the high watermark are ranked: the
//! client's region first, then by utilisation in steps of [`LOAD_STEP_PERMILLE`]; nodes that
//! tie are rotated from one query to the next, so idle nodes share the clients instead of the
//! first by peer id taking every one.
//!
//! A response is *led* by one provider: the arrangement's peer for its share of the responses
//! to a service, our own provider for the others. It lists the leader's best nodes only, so a
//! client that takes the first address (most do) goes where the share says. A peer with no
//! node under the watermark gives its turn back. When none of ours is under it, our least
//! loaded nodes are answered anyway (an overloaded CDN still answers; the arrangement's share
//! is what moves load, and it is not exceeded); the peer answers out of turn only when none of
//! ours is listed at all.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use reef_overlay::PeerId;

/// Utilisation differences below this (10 % of capacity) are noise between two one-second
/// reports; nodes this close rank alike and take turns.
pub const LOAD_STEP_PERMILLE: u16 = 100;

/// A node that may appear in answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub peer: PeerId,
    /// From its NodeRecord's HTTP address.
    pub addr: IpAddr,
    /// From its NodeRecord.
    pub region: Arc<str>,
    pub utilisation_permille: u16,
    /// Listed in the load table until this instant, unless it reports again.
    pub until: Instant,
}

/// Which addresses the question asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
    /// ANY: both.
    Both,
}

impl Family {
    pub fn admits(self, addr: IpAddr) -> bool {
        matches!(
            (self, addr),
            (Family::Both, _) | (Family::V4, IpAddr::V4(_)) | (Family::V6, IpAddr::V6(_))
        )
    }
}

/// What one answer wants.
#[derive(Debug, Clone, Copy)]
pub struct Want<'a> {
    pub count: usize,
    pub family: Family,
    /// The client's region, if known.
    pub region: Option<&'a str>,
    pub high_watermark_permille: u16,
    pub now: Instant,
    /// Turns the order of nodes that rank alike; any number that changes per query.
    pub spin: u64,
}

/// The chosen addresses, best first, and whether the arrangement's peer led the answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Picked {
    pub addrs: Vec<IpAddr>,
    pub by_peer: bool,
}

/// Picks the answer from our provider's nodes (`own`) and, under an arrangement, the peer's
/// (`peer`), which leads this answer if `peer_turn`.
pub fn pick(own: &[Candidate], peer: &[Candidate], peer_turn: bool, want: &Want<'_>) -> Picked {
    let answer = |nodes: Vec<&Candidate>, by_peer| Picked {
        addrs: nodes.iter().take(want.count).map(|c| c.addr).collect(),
        by_peer,
    };
    if peer_turn {
        let theirs = ranked(peer, want, true);
        if !theirs.is_empty() {
            return answer(theirs, true);
        }
    }
    let ours = ranked(own, want, true);
    if !ours.is_empty() {
        return answer(ours, false);
    }
    let ours = ranked(own, want, false);
    if !ours.is_empty() {
        return answer(ours, false);
    }
    // None of ours is listed at all: the peer's nodes keep the service up.
    answer(ranked(peer, want, true), true)
}

/// Whether any node of `nodes` is listed at `now`, whatever its address family: an empty pick
/// is then "no address of this family" (NODATA) rather than "no node at all" (SERVFAIL).
pub fn any_listed(nodes: &[Candidate], now: Instant) -> bool {
    nodes.iter().any(|c| now < c.until)
}

/// The eligible nodes of one provider, best first; only those under the watermark unless
/// `under_only` is false.
fn ranked<'c>(nodes: &'c [Candidate], want: &Want<'_>, under_only: bool) -> Vec<&'c Candidate> {
    let mut eligible: Vec<&Candidate> = nodes
        .iter()
        .filter(|c| want.now < c.until && want.family.admits(c.addr))
        .filter(|c| !under_only || c.utilisation_permille < want.high_watermark_permille)
        .collect();
    let key = |c: &Candidate| {
        let elsewhere = want.region.is_some_and(|r| *c.region != *r);
        (elsewhere, c.utilisation_permille / LOAD_STEP_PERMILLE)
    };
    eligible.sort_by(|a, b| key(a).cmp(&key(b)).then(a.peer.cmp(&b.peer)));
    // Rotate each run of nodes that rank alike by the spin.
    let mut start = 0;
    while start < eligible.len() {
        let k = key(eligible[start]);
        let end = start + eligible[start..].iter().take_while(|c| key(c) == k).count();
        let len = end - start;
        let turn = usize::try_from(want.spin % len as u64).unwrap_or(0);
        eligible[start..end].rotate_left(turn);
        start = end;
    }
    eligible
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn node(seed: u8, ip: &str, region: &str, util: u16, now: Instant) -> Candidate {
        let key = reef_proto::records::SigningKey::from_bytes(&[seed; 32]);
        let peer = PeerId::from_bytes(&reef_proto::records::peer_id_bytes(
            &key.verifying_key().to_bytes(),
        ))
        .unwrap();
        Candidate {
            peer,
            addr: ip.parse().unwrap(),
            region: region.into(),
            utilisation_permille: util,
            until: now + Duration::from_secs(5),
        }
    }

    fn want(now: Instant, count: usize, region: Option<&str>) -> Want<'_> {
        Want {
            count,
            family: Family::V4,
            region,
            high_watermark_permille: 800,
            now,
            spin: 0,
        }
    }

    fn ips(p: &Picked) -> Vec<String> {
        p.addrs.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn same_region_first_then_least_loaded_and_never_over_the_watermark() {
        let now = Instant::now();
        let own = [
            node(1, "10.0.0.1", "eu", 500, now),
            node(2, "10.0.0.2", "us", 0, now),
            node(3, "10.0.0.3", "eu", 100, now),
            node(4, "10.0.0.4", "eu", 900, now), // over the watermark
            node(5, "2001:db8::5", "eu", 0, now),
        ];
        let got = pick(&own, &[], false, &want(now, 3, Some("eu")));
        assert_eq!(ips(&got), ["10.0.0.3", "10.0.0.1", "10.0.0.2"]);
        assert!(!got.by_peer);
        // No region known: least loaded first.
        let got = pick(&own, &[], false, &want(now, 2, None));
        assert_eq!(ips(&got), ["10.0.0.2", "10.0.0.3"]);
        // AAAA only sees the v6 node.
        let v6 = Want {
            family: Family::V6,
            ..want(now, 3, Some("eu"))
        };
        assert_eq!(ips(&pick(&own, &[], false, &v6)), ["2001:db8::5"]);
    }

    #[test]
    fn a_node_drops_out_when_its_listing_ends() {
        let now = Instant::now();
        let mut own = vec![
            node(1, "10.0.0.1", "eu", 0, now),
            node(2, "10.0.0.2", "eu", 300, now),
        ];
        own[0].until = now + Duration::from_millis(10);
        let later = now + Duration::from_millis(10);
        assert_eq!(
            ips(&pick(&own, &[], false, &want(later, 2, None))),
            ["10.0.0.2"]
        );
        assert!(any_listed(&own, later));
        assert!(!any_listed(&own, now + Duration::from_secs(5)));
        assert!(
            pick(
                &own,
                &[],
                false,
                &want(now + Duration::from_secs(5), 2, None)
            )
            .addrs
            .is_empty()
        );
    }

    #[test]
    fn nodes_that_rank_alike_take_turns() {
        let now = Instant::now();
        let own = [
            node(1, "10.0.0.1", "eu", 10, now),
            node(2, "10.0.0.2", "eu", 20, now),
            node(3, "10.0.0.3", "eu", 30, now),
            node(4, "10.0.0.4", "eu", 700, now),
        ];
        let mut firsts = std::collections::BTreeSet::new();
        for spin in 0..3 {
            let w = Want {
                spin,
                ..want(now, 4, None)
            };
            let got = pick(&own, &[], false, &w);
            assert_eq!(got.addrs.len(), 4);
            // The busy node stays last whatever the turn.
            assert_eq!(got.addrs[3].to_string(), "10.0.0.4");
            firsts.insert(got.addrs[0]);
        }
        assert_eq!(firsts.len(), 3, "each idle node leads once in three");
    }

    #[test]
    fn the_peer_leads_its_turns_and_gives_way_when_it_cannot() {
        let now = Instant::now();
        let own = [
            node(1, "10.0.0.1", "eu", 0, now),
            node(2, "10.0.0.2", "eu", 0, now),
        ];
        let peer = [node(3, "10.1.0.3", "us", 0, now)];
        let got = pick(&own, &peer, true, &want(now, 2, Some("eu")));
        assert_eq!((ips(&got), got.by_peer), (vec!["10.1.0.3".into()], true));
        let got = pick(&own, &peer, false, &want(now, 2, Some("eu")));
        assert_eq!(got.addrs.len(), 2);
        assert!(!got.by_peer);
        // An overloaded peer gives its turn back.
        let busy_peer = [node(3, "10.1.0.3", "us", 950, now)];
        let got = pick(&own, &busy_peer, true, &want(now, 2, None));
        assert!(!got.by_peer && got.addrs.len() == 2);
        // Every own node overloaded: our least loaded still answer out of the peer's turns,
        // so the peer gets no more than its share.
        let busy_own = [
            node(1, "10.0.0.1", "eu", 990, now),
            node(2, "10.0.0.2", "eu", 850, now),
        ];
        let got = pick(&busy_own, &peer, false, &want(now, 1, None));
        assert_eq!((ips(&got), got.by_peer), (vec!["10.0.0.2".into()], false));
        let got = pick(&busy_own, &busy_peer, true, &want(now, 1, None));
        assert_eq!((ips(&got), got.by_peer), (vec!["10.0.0.2".into()], false));
        // None of ours listed: the peer keeps the service up.
        let got = pick(&[], &peer, false, &want(now, 2, None));
        assert_eq!((ips(&got), got.by_peer), (vec!["10.1.0.3".into()], true));
    }
}
