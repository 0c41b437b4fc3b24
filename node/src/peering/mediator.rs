//! The mediator watches its provider's demand and starts, watches and ends negotiated
//! arrangements.
//!
//! Every node with the provider key and a buying policy runs one, and the one with the lowest
//! peer id among the provider's nodes in the load table acts; the others stand by, so when it
//! dies its successor takes over within the load table's 5 s expiry. It reads *demand* (what
//! arrives at the provider's nodes, including what they send to a peer), not utilisation
//! (what they serve themselves), so the relief an arrangement brings is not taken for the end
//! of the surge:
//! - above the high watermark for the trigger window, it writes the service requirements
//!   (services, region, extra capacity, duration, price ceiling, SLA) and asks the agent for
//!   an arrangement;
//! - while one is active, it re-arranges with the next candidate when the peer breaches the
//!   SLA (as this node's probes measure it) or its nodes are gone, and arranges a larger one
//!   (then ends the old one as `replaced`) when the surge outgrew it: arranged at the first
//!   sign of a surge, it is sized for the demand of that moment;
//! - under the low watermark for the cool-down, it disbands it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reef_overlay::PeerId;
use reef_proto::peering::EndReason;
use reef_proto::records::{ArrangementId, ProviderId};
use tracing::{info, warn};

use super::agent::{Agent, RETRY_AFTER_FAILURE, Requirements};
use super::health::Health;
use super::redirect::relief_target;
use super::{Arrangement, Arrangements, Policy};
use crate::load::{Listed, Load};
use crate::provider::unix_ms;

/// A provider's listed nodes in the order they take the mediator's role: the lowest peer id
/// acts, the next takes over when it leaves the load table.
pub fn succession(nodes: &[Listed]) -> Vec<PeerId> {
    let mut peers: Vec<PeerId> = nodes.iter().map(|n| n.peer).collect();
    peers.sort();
    peers
}

/// The load table changes once a second; looking four times as often sees a change within a
/// quarter of a second of it, which is what a surge's reaction time is made of.
const TICK: Duration = Duration::from_millis(250);
/// A peer none of whose nodes has reported for this long is gone: the load table already
/// drops a node 5 s after its last report, so this adds the same again for a slow start.
const PEER_GONE_AFTER: Duration = Duration::from_secs(5);
/// An arrangement is outgrown when the provider needs this much more than it lends (in
/// permille of what it lends): a margin, so that small swings do not renegotiate.
const OUTGROWN_PERMILLE: u64 = 1250;
/// An arrangement must fall short this long without a break (or the trigger window, if
/// longer) before a larger one is sought: one burst second of a bumpy crowd is no surge.
/// After an attempt, the next waits as long again (the new one's relief shows in the load
/// reports first).
const GROW_AFTER: Duration = Duration::from_secs(5);
/// Capacity asked for, in multiples of what the provider needs now: a surge that triggers
/// peering is usually still rising, and lent capacity left unused costs nothing (the peer is
/// paid per byte served).
const HEADROOM: u32 = 2;

pub struct Mediator {
    pub agent: Arc<Agent>,
    pub arrangements: Arc<Arrangements>,
    pub health: Arc<Health>,
    pub load: Load,
    pub local: PeerId,
    pub own: ProviderId,
    pub policy: Policy,
    pub services: Vec<String>,
    pub region: String,
}

/// Where the mediator stands between ticks.
#[derive(Default)]
struct Watch {
    over_since: Option<Instant>,
    under_since: Option<Instant>,
    not_before: Option<Instant>,
    /// Since when the active arrangement lends less than the provider needs.
    outgrown_since: Option<Instant>,
    /// The active arrangement and when its peer last had a node in our load table (from
    /// when we started watching it, so a fresh start, with an empty table, is no death).
    peer_seen: Option<(ArrangementId, Instant)>,
}

/// The provider's mean demand over `nodes`, in permille of capacity.
fn mean_demand(nodes: &[Listed]) -> u64 {
    mean(nodes, |n| n.demand_permille)
}

/// The provider's mean utilisation (what its nodes serve themselves) over `nodes`.
fn mean_utilisation(nodes: &[Listed]) -> u64 {
    mean(nodes, |n| n.utilisation_permille)
}

fn mean(nodes: &[Listed], of: impl Fn(&Listed) -> u16) -> u64 {
    nodes.iter().map(|n| u64::from(of(n))).sum::<u64>() / nodes.len().max(1) as u64
}

/// Extra capacity the provider needs, req/s: what its nodes would send away to serve only
/// up to `target` (permille) themselves.
pub fn extra_capacity(nodes: &[Listed], target: u32) -> u32 {
    let wanted: u64 = nodes
        .iter()
        .filter(|n| u32::from(n.demand_permille) > target)
        .map(|n| {
            let demand = u64::from(n.demand_permille);
            u64::from(n.req_per_s) * (demand - u64::from(target)) / demand
        })
        .sum();
    u32::try_from(wanted).unwrap_or(u32::MAX).max(1)
}

/// Whether an arrangement lending `lent` req/s is well short of the `needed` req/s.
fn outgrown(needed: u32, lent: u32) -> bool {
    u64::from(needed) * 1000 >= u64::from(lent.max(1)) * OUTGROWN_PERMILLE
}

impl Mediator {
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut watch = Watch::default();
            loop {
                tick.tick().await;
                self.step(&mut watch).await;
            }
        })
    }

    async fn step(&self, watch: &mut Watch) {
        for id in self.arrangements.expire() {
            info!(arrangement = %id, "arrangement expired");
        }
        let nodes = self.load.nodes_of(&self.own);
        if succession(&nodes).first() != Some(&self.local) {
            *watch = Watch::default();
            return;
        }
        let demand = mean_demand(&nodes);
        let now = Instant::now();
        let high = u64::from(self.policy.high_watermark_permille);
        match self.arrangements.short_term_as_primary() {
            Some(active) => {
                watch.over_since = None;
                if self
                    .replaced_a_failing_peer(watch, &active, &nodes, now)
                    .await
                {
                    return;
                }
                if self.grew(watch, &active, &nodes, now).await {
                    return;
                }
                if demand >= u64::from(self.policy.low_watermark_permille) {
                    watch.under_since = None;
                    return;
                }
                let since = *watch.under_since.get_or_insert(now);
                if now - since >= self.policy.cooldown {
                    info!(arrangement = %active.id, demand, "demand is low; disbanding");
                    self.agent.disband(active.id, EndReason::LowLoad).await;
                    watch.under_since = None;
                }
            }
            None => {
                watch.under_since = None;
                if demand < high {
                    watch.over_since = None;
                    return;
                }
                let since = *watch.over_since.get_or_insert(now);
                if now - since < self.policy.trigger_window
                    || watch.not_before.is_some_and(|t| now < t)
                {
                    return;
                }
                info!(demand, region = %self.region, "overloaded; looking for a peer");
                self.arrange(watch, &nodes, BTreeSet::new()).await;
            }
        }
    }

    /// Ends `active` if its peer breaches the SLA or its nodes are gone, and arranges with
    /// another provider at once if we are still overloaded; whether it ended it.
    async fn replaced_a_failing_peer(
        &self,
        watch: &mut Watch,
        active: &Arrangement,
        nodes: &[Listed],
        now: Instant,
    ) -> bool {
        let seen = match watch.peer_seen {
            Some((id, at)) if id == active.id => at,
            _ => now,
        };
        let seen = if self.load.nodes_of(&active.peer).is_empty() {
            seen
        } else {
            now
        };
        watch.peer_seen = Some((active.id, seen));
        let breach = active
            .sla
            .and_then(|sla| self.health.sla(&active.id, &sla, now).breach);
        let reason = if let Some(what) = breach {
            warn!(arrangement = %active.id, peer = %active.peer.short(), breach = what, "the peer breaches the SLA; re-arranging");
            self.arrangements
                .note_peer(active.peer, false, Some(unix_ms()));
            EndReason::SlaBreach
        } else if now - seen >= PEER_GONE_AFTER {
            // Every node of the peer has been silent for the load table's expiry.
            warn!(arrangement = %active.id, "the peer's nodes are gone; re-arranging");
            EndReason::PeerGone
        } else {
            return false;
        };
        self.agent.disband(active.id, reason).await;
        if mean_demand(nodes) >= u64::from(self.policy.high_watermark_permille) {
            self.arrange(watch, nodes, [active.peer].into()).await;
        }
        true
    }

    /// Arranges a larger arrangement and ends `active` as replaced, once the provider has
    /// needed well over what `active` lends, or still served beyond its full capacity, for
    /// the trigger window; whether it did. A node swamped despite the arrangement measures
    /// less demand than there is (its clients queue, and a crowd's latecomers give up before
    /// they arrive), so it then asks for at least twice what it has.
    async fn grew(
        &self,
        watch: &mut Watch,
        active: &Arrangement,
        nodes: &[Listed],
        now: Instant,
    ) -> bool {
        let needed = extra_capacity(nodes, relief_target(&self.policy));
        let lent = active.req_per_s;
        // Beyond full capacity, not merely over the watermark: relief that only just falls
        // short is the redirector's rounding, not a surge outgrowing the arrangement.
        let still_over = mean_utilisation(nodes) >= u64::from(crate::load::SWAMPED_DEMAND_PERMILLE);
        // A peer that lately failed probes is judged by the SLA, not grown: its nodes get no
        // requests meanwhile, which also leaves ours over the watermark.
        let failing = active.sla.is_some_and(|sla| {
            let health = self.health.sla(&active.id, &sla, now);
            health
                .availability_permille
                .is_some_and(|a| a < sla.min_availability_permille)
        });
        if failing || (!outgrown(needed, lent) && !still_over) {
            watch.outgrown_since = None;
            return false;
        }
        let since = *watch.outgrown_since.get_or_insert(now);
        if now - since < self.policy.trigger_window.max(GROW_AFTER)
            || watch.not_before.is_some_and(|t| now < t)
        {
            return false;
        }
        watch.outgrown_since = None;
        watch.not_before = Some(now + GROW_AFTER);
        info!(arrangement = %active.id, lent, needed, "the surge outgrew the arrangement; arranging a larger one");
        let Some(mut needs) = self.requirements(nodes) else {
            return false;
        };
        if still_over {
            needs.req_per_s = needs.req_per_s.max(lent.saturating_mul(2));
        }
        match self.agent.arrange(&needs, &BTreeSet::new()).await {
            Ok(id) => {
                info!(arrangement = %id, replaces = %active.id, req_per_s = needs.req_per_s, "arranged");
                self.agent.disband(active.id, EndReason::Replaced).await;
                true
            }
            Err(why) => {
                warn!(%why, "no larger arrangement; keeping the one we have");
                false
            }
        }
    }

    /// The service requirements for our load now.
    fn requirements(&self, nodes: &[Listed]) -> Option<Requirements> {
        Some(Requirements {
            services: self.services.clone(),
            region: self.region.clone(),
            req_per_s: extra_capacity(nodes, relief_target(&self.policy)).saturating_mul(HEADROOM),
            duration: self.policy.duration,
            max_price_micros_per_gb: self.policy.max_price_micros_per_gb?,
            share_permille: self.policy.share_permille,
            sla: self.policy.sla,
        })
    }

    async fn arrange(&self, watch: &mut Watch, nodes: &[Listed], avoid: BTreeSet<ProviderId>) {
        let Some(needs) = self.requirements(nodes) else {
            return;
        };
        info!(
            services = ?needs.services, region = %needs.region, req_per_s = needs.req_per_s,
            duration_s = needs.duration.as_secs(), max_price_micros_per_gb = needs.max_price_micros_per_gb,
            "service requirements"
        );
        match self.agent.arrange(&needs, &avoid).await {
            Ok(id) => info!(arrangement = %id, "arranged"),
            Err(why) => {
                warn!(%why, "no arrangement");
                watch.not_before = Some(Instant::now() + RETRY_AFTER_FAILURE);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(req_per_s: u32, demand_permille: u16) -> Listed {
        Listed {
            peer: PeerId::random(),
            provider: reef_proto::records::ProviderKey::from_bytes(&[1; 32]).id(),
            utilisation_permille: demand_permille.min(1000),
            demand_permille,
            req_per_s,
            until: Instant::now(),
        }
    }

    #[test]
    fn an_arrangement_is_outgrown_only_well_past_what_it_lends() {
        assert!(!outgrown(100, 100));
        assert!(!outgrown(124, 100));
        assert!(outgrown(125, 100));
        assert!(outgrown(2, 0));
    }

    #[test]
    fn extra_capacity_is_what_the_nodes_over_target_would_send_away() {
        // 300 req/s at three times the target: two thirds should go elsewhere.
        let nodes = [listed(300, 1950), listed(10, 100)];
        assert_eq!(extra_capacity(&nodes, 650), 200);
        assert_eq!(mean_demand(&nodes), 1025);
        // Never nothing: a proposal asks for at least 1 req/s.
        assert_eq!(extra_capacity(&[listed(0, 100)], 650), 1);
    }

    #[test]
    fn the_lowest_peer_id_mediates() {
        let nodes = [listed(1, 1), listed(1, 1), listed(1, 1)];
        let order = succession(&nodes);
        assert!(order.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(order.len(), 3);
    }
}
