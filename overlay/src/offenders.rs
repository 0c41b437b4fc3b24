//! Peers that keep sending forged or malformed DHT records: counted, then disconnected and
//! refused for a while.
//!
//! One invalid record proves little (a bug, a lagging replica), so a peer is only banned
//! after [`STRIKES_TO_BAN`] within [`STRIKE_WINDOW`]. Only rejections an honest node of any
//! version cannot cause count as strikes: an expired or not-yet-valid record can come from
//! clock skew, an older replica is a replay a lagging replica also sends, and a record kind or
//! envelope version we do not know may come from newer software (see [`is_strike`]). Gossip
//! is not counted here: gossipsub's peer score already ignores a peer that relays invalid
//! messages (`scoring.rs`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use reef_proto::records::RecordError;

use crate::metrics::UNKNOWN_KIND;
use crate::validate::Rejected;

/// Invalid records from one peer, within [`STRIKE_WINDOW`], that get it banned: far above what
/// a buggy honest node sends by accident in a minute (it republishes a few records an hour),
/// and far below what a peer flooding us with forgeries sends.
pub(crate) const STRIKES_TO_BAN: u32 = 20;
/// Strikes older than this are forgotten.
const STRIKE_WINDOW: Duration = Duration::from_secs(60);
/// How long a banned peer is refused: long enough to make flooding us pointless, short enough
/// that a node fixed and restarted by its operator is back within minutes.
pub(crate) const BAN_FOR: Duration = Duration::from_secs(10 * 60);
/// Peers with recent strikes remembered at once; past this the stalest make room, so a
/// swarm of throwaway identities cannot grow the map.
const MAX_TRACKED: usize = 1024;
/// Peers banned at once; past this the ban closest to its end is lifted early.
const MAX_BANNED: usize = 4096;

/// Whether a rejection counts against the peer that sent it (see the module comment).
pub(crate) fn is_strike(rejected: &Rejected) -> bool {
    rejected.kind != UNKNOWN_KIND && forged(&rejected.error)
}

fn forged(error: &RecordError) -> bool {
    match error {
        RecordError::TooLarge { .. }
        | RecordError::Garbage(_)
        | RecordError::WrongKind { .. }
        | RecordError::BadSignature
        | RecordError::Lifetime { .. }
        | RecordError::WrongSigner(_)
        | RecordError::Invalid { .. } => true,
        RecordError::Cert(inner) => forged(inner),
        // Version, Expired, Future, Replay, and whatever later versions add: an honest peer
        // may be behind us.
        _ => false,
    }
}

struct Strikes {
    count: u32,
    /// When the current window began (the first strike in it).
    since: Instant,
}

/// Strikes and bans, by peer.
#[derive(Default)]
pub(crate) struct Offenders {
    strikes: HashMap<PeerId, Strikes>,
    /// Banned peers and when their ban ends.
    banned: HashMap<PeerId, Instant>,
    /// Bans since start.
    pub(crate) bans: u64,
}

impl Offenders {
    /// Counts one strike against `peer`; true when this one gets it banned (the caller
    /// disconnects it and refuses it until [`Offenders::lift_expired`] says otherwise).
    pub(crate) fn strike(&mut self, peer: PeerId, now: Instant) -> bool {
        if self.banned.contains_key(&peer) {
            return false;
        }
        if !self.strikes.contains_key(&peer) && self.strikes.len() >= MAX_TRACKED {
            let stalest = self
                .strikes
                .iter()
                .min_by_key(|(_, s)| s.since)
                .map(|(p, _)| *p);
            if let Some(stalest) = stalest {
                self.strikes.remove(&stalest);
            }
        }
        let strikes = self.strikes.entry(peer).or_insert(Strikes {
            count: 0,
            since: now,
        });
        if now.saturating_duration_since(strikes.since) > STRIKE_WINDOW {
            *strikes = Strikes {
                count: 0,
                since: now,
            };
        }
        strikes.count += 1;
        if strikes.count < STRIKES_TO_BAN {
            return false;
        }
        self.strikes.remove(&peer);
        if self.banned.len() >= MAX_BANNED {
            let soonest = self.banned.iter().min_by_key(|(_, u)| **u).map(|(p, _)| *p);
            if let Some(soonest) = soonest {
                self.banned.remove(&soonest);
            }
        }
        self.banned.insert(peer, now + BAN_FOR);
        self.bans += 1;
        true
    }

    /// Peers whose ban is over, forgotten here; the caller lets them connect again.
    pub(crate) fn lift_expired(&mut self, now: Instant) -> Vec<PeerId> {
        let over: Vec<PeerId> = self
            .banned
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(p, _)| *p)
            .collect();
        for peer in &over {
            self.banned.remove(peer);
        }
        self.strikes
            .retain(|_, s| now.saturating_duration_since(s.since) <= STRIKE_WINDOW);
        over
    }

    #[cfg(test)]
    pub(crate) fn is_banned(&self, peer: &PeerId) -> bool {
        self.banned.contains_key(peer)
    }

    /// The peers banned now, for the status.
    pub(crate) fn banned(&self) -> Vec<String> {
        let mut peers: Vec<String> = self.banned.keys().map(PeerId::to_string).collect();
        peers.sort();
        peers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(kind: &'static str, error: RecordError) -> Rejected {
        Rejected { kind, error }
    }

    #[test]
    fn only_what_no_honest_node_sends_is_a_strike() {
        assert!(is_strike(&rejected(
            "node_record",
            RecordError::BadSignature
        )));
        assert!(is_strike(&rejected(
            "node_record",
            RecordError::Cert(Box::new(RecordError::WrongSigner("x")))
        )));
        assert!(!is_strike(&rejected("node_record", RecordError::Replay)));
        assert!(!is_strike(&rejected(
            "node_record",
            RecordError::Version(9)
        )));
        assert!(!is_strike(&rejected(
            "node_record",
            RecordError::Cert(Box::new(RecordError::Expired {
                expires_at: 1,
                now: 2
            }))
        )));
        // A record kind we do not know may be newer software's.
        assert!(!is_strike(&rejected(
            UNKNOWN_KIND,
            RecordError::Invalid {
                field: "key",
                problem: "p"
            }
        )));
    }

    #[test]
    fn a_peer_is_banned_at_the_threshold_and_released_after_the_ban() {
        let mut offenders = Offenders::default();
        let peer = PeerId::random();
        let t0 = Instant::now();
        for i in 1..STRIKES_TO_BAN {
            assert!(!offenders.strike(peer, t0 + Duration::from_millis(u64::from(i))));
        }
        assert!(offenders.strike(peer, t0 + Duration::from_secs(1)));
        assert!(offenders.is_banned(&peer));
        assert_eq!(offenders.bans, 1);
        // Further strikes while banned change nothing.
        assert!(!offenders.strike(peer, t0 + Duration::from_secs(2)));
        assert!(
            offenders
                .lift_expired(t0 + Duration::from_secs(2))
                .is_empty()
        );
        let lifted = offenders.lift_expired(t0 + Duration::from_secs(1) + BAN_FOR);
        assert_eq!(lifted, vec![peer]);
        assert!(!offenders.is_banned(&peer));
    }

    #[test]
    fn strikes_spread_over_more_than_the_window_never_ban() {
        let mut offenders = Offenders::default();
        let peer = PeerId::random();
        let t0 = Instant::now();
        for i in 0..(STRIKES_TO_BAN * 3) {
            let at = t0 + (STRIKE_WINDOW / 10) * i;
            assert!(!offenders.strike(peer, at), "strike {i}");
        }
    }

    #[test]
    fn memory_stays_bounded_under_throwaway_identities() {
        let mut offenders = Offenders::default();
        let t0 = Instant::now();
        for _ in 0..(MAX_TRACKED * 2) {
            offenders.strike(PeerId::random(), t0);
        }
        assert!(offenders.strikes.len() <= MAX_TRACKED);
    }
}
