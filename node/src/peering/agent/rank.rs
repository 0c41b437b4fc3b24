//! Ranking the offers the policy allows: which provider to ask first.
//!
//! In order: a provider none of whose nodes is in our load table (dead, or hung) goes last;
//! then one that breached an SLA of ours within [`BREACH_MEMORY`]; then
//! the cheaper price; then an offer covering our region outright before one found for it
//! otherwise; then the nearer agents (ping RTT, in [`RTT_STEP`] steps so that noise does not
//! outweigh the next criterion; unmeasured last); then the larger capacity.

use std::cmp::Reverse;
use std::time::Duration;

use reef_overlay::PeerId;
use reef_proto::records::CapacityOffer;

use crate::peering::PeerRecord;

/// How long a breach of our SLA counts against a provider.
pub const BREACH_MEMORY: Duration = Duration::from_secs(60 * 60);
/// RTT differences under this are noise among nearby points of presence.
pub const RTT_STEP: Duration = Duration::from_millis(10);

/// One provider we may ask.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub offer: CapacityOffer,
    /// Its agents, to ask in turn.
    pub agents: Vec<PeerId>,
    /// The lowest ping RTT to one of its agents, if we are connected to any.
    pub rtt: Option<Duration>,
    pub record: PeerRecord,
    /// Whether any of its nodes is in our load table now.
    pub alive: bool,
}

/// Sorts `candidates`, best first, for `region` at `now_ms`.
pub fn rank(candidates: &mut [Candidate], region: &str, now_ms: u64) {
    let memory = BREACH_MEMORY.as_millis() as u64;
    candidates.sort_by_key(|c| {
        let breached =
            c.record.breaches > 0 && now_ms.saturating_sub(c.record.last_breach_ms) < memory;
        let covers = c.offer.regions.iter().any(|r| r == region);
        let rtt_steps = c
            .rtt
            .map_or(u128::MAX, |rtt| rtt.as_millis() / RTT_STEP.as_millis());
        (
            !c.alive,
            breached,
            c.offer.price_micros_per_gb,
            !covers,
            rtt_steps,
            Reverse(c.offer.req_per_s),
        )
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use reef_proto::records::ProviderKey;

    fn candidate(seed: u8, price: u64, rtt_ms: Option<u64>, req_per_s: u32) -> Candidate {
        Candidate {
            offer: CapacityOffer {
                provider: ProviderKey::from_bytes(&[seed; 32]).id(),
                name: format!("p{seed}"),
                req_per_s,
                mbit_per_s: 100,
                regions: vec!["r0".into()],
                price_micros_per_gb: price,
                min_duration_s: 60,
                max_duration_s: 3600,
            },
            agents: Vec::new(),
            rtt: rtt_ms.map(Duration::from_millis),
            record: PeerRecord::default(),
            alive: true,
        }
    }

    fn order(candidates: &[Candidate]) -> Vec<String> {
        candidates.iter().map(|c| c.offer.name.clone()).collect()
    }

    #[test]
    fn price_then_distance_then_capacity() {
        let mut c = vec![
            candidate(1, 30, Some(1), 100),
            candidate(2, 20, Some(80), 100),
            candidate(3, 20, Some(12), 100),
            candidate(4, 20, Some(15), 900),
            candidate(5, 20, None, 5000),
        ];
        rank(&mut c, "r0", 0);
        // p4 and p3 are in the same 10 ms step: the larger capacity first.
        assert_eq!(order(&c), ["p4", "p3", "p2", "p5", "p1"]);
    }

    #[test]
    fn a_recent_breach_goes_last_an_old_one_is_forgiven() {
        let now = 10 * BREACH_MEMORY.as_millis() as u64;
        let mut breached = candidate(1, 10, Some(1), 100);
        breached.record = PeerRecord {
            arrangements: 1,
            breaches: 1,
            last_breach_ms: now - 1000,
        };
        let mut c = vec![breached.clone(), candidate(2, 50, Some(50), 10)];
        rank(&mut c, "r0", now);
        assert_eq!(order(&c), ["p2", "p1"]);
        breached.record.last_breach_ms = now - BREACH_MEMORY.as_millis() as u64 - 1;
        let mut c = vec![candidate(2, 50, Some(50), 10), breached];
        rank(&mut c, "r0", now);
        assert_eq!(order(&c), ["p1", "p2"]);
    }

    #[test]
    fn a_provider_with_no_live_node_goes_last() {
        let mut silent = candidate(1, 10, Some(1), 100);
        silent.alive = false;
        let mut c = vec![silent, candidate(2, 50, None, 10)];
        rank(&mut c, "r0", 0);
        assert_eq!(order(&c), ["p2", "p1"]);
    }

    #[test]
    fn an_offer_for_our_region_comes_before_one_that_is_not() {
        let mut elsewhere = candidate(1, 20, Some(1), 100);
        elsewhere.offer.regions = vec!["r9".into()];
        let mut c = vec![elsewhere, candidate(2, 20, Some(40), 100)];
        rank(&mut c, "r0", 0);
        assert_eq!(order(&c), ["p2", "p1"]);
    }
}
