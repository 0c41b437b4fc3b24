//! The mediator watches its provider's load and starts and ends negotiated arrangements.
//!
//! Every node with the provider key and a buying policy runs one, and the one with the lowest
//! peer id among the provider's nodes in the load table acts; the others stand by, so when it
//! dies its successor takes over within the load table's 5 s expiry. Above the high watermark
//! for the trigger window it asks the agent for capacity; under the low watermark for the
//! cool-down it ends the arrangement.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reef_overlay::PeerId;
use reef_proto::peering::EndReason;
use reef_proto::records::ProviderId;
use tracing::{info, warn};

use super::agent::{Agent, RETRY_AFTER_FAILURE, Requirements};
use super::{Arrangements, Policy};
use crate::load::Load;

/// A provider's listed nodes in the order they take the mediator's role: the lowest peer id
/// acts, the next takes over when it leaves the load table. `nodes` as `Load::nodes_of` gives.
pub fn succession(nodes: &[(PeerId, u16)]) -> Vec<PeerId> {
    let mut peers: Vec<PeerId> = nodes.iter().map(|(peer, _)| *peer).collect();
    peers.sort();
    peers
}

/// The load table is refreshed once a second; looking more often sees nothing new.
const TICK: Duration = Duration::from_secs(1);

pub struct Mediator {
    pub agent: Arc<Agent>,
    pub arrangements: Arc<Arrangements>,
    pub load: Load,
    pub local: PeerId,
    pub own: ProviderId,
    pub policy: Policy,
    pub needs: Requirements,
}

/// Where the mediator stands between ticks.
#[derive(Default)]
struct Watch {
    over_since: Option<Instant>,
    under_since: Option<Instant>,
    not_before: Option<Instant>,
    /// The active arrangement and when its peer last had a node in our load table (from
    /// when we started watching it, so a fresh start, with an empty table, is no death).
    peer_seen: Option<(reef_proto::records::ArrangementId, Instant)>,
}

/// A peer none of whose nodes has reported for this long is gone: the load table already
/// drops a node 5 s after its last report, so this adds the same again for a slow start.
const PEER_GONE_AFTER: Duration = Duration::from_secs(5);

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
        let utilisation =
            nodes.iter().map(|(_, u)| u64::from(*u)).sum::<u64>() / nodes.len().max(1) as u64;
        let now = Instant::now();
        let active = self.arrangements.short_term_as_primary();
        if let Some(a) = &active {
            let seen = match watch.peer_seen {
                Some((id, at)) if id == a.id => at,
                _ => now,
            };
            let seen = if self.load.nodes_of(&a.peer).is_empty() {
                seen
            } else {
                now
            };
            watch.peer_seen = Some((a.id, seen));
        }
        let peer_gone = watch
            .peer_seen
            .is_some_and(|(_, seen)| now - seen >= PEER_GONE_AFTER);
        match active {
            Some(active) if peer_gone => {
                // Every node of the peer has been silent for the load table's expiry: it is
                // gone. End it and arrange with another at once if we still need to.
                warn!(arrangement = %active.id, "the peer's nodes are gone; re-arranging");
                self.agent.disband(active.id, EndReason::PeerGone).await;
                if utilisation >= u64::from(self.policy.high_watermark_permille) {
                    self.arrange(watch, [active.peer].into()).await;
                }
            }
            Some(active) => {
                watch.over_since = None;
                if utilisation >= u64::from(self.policy.low_watermark_permille) {
                    watch.under_since = None;
                    return;
                }
                let since = *watch.under_since.get_or_insert(now);
                if now - since >= self.policy.cooldown {
                    info!(arrangement = %active.id, utilisation, "load is low; disbanding");
                    self.agent.disband(active.id, EndReason::LowLoad).await;
                    watch.under_since = None;
                }
            }
            None => {
                watch.under_since = None;
                if utilisation < u64::from(self.policy.high_watermark_permille) {
                    watch.over_since = None;
                    return;
                }
                let since = *watch.over_since.get_or_insert(now);
                if now - since < self.policy.trigger_window
                    || watch.not_before.is_some_and(|t| now < t)
                {
                    return;
                }
                info!(utilisation, region = %self.needs.region, "overloaded; looking for a peer");
                self.arrange(watch, BTreeSet::new()).await;
            }
        }
    }

    async fn arrange(&self, watch: &mut Watch, avoid: BTreeSet<ProviderId>) {
        match self.agent.arrange(&self.needs, &avoid).await {
            Ok(id) => info!(arrangement = %id, "arranged"),
            Err(why) => {
                warn!(%why, "no arrangement");
                watch.not_before = Some(Instant::now() + RETRY_AFTER_FAILURE);
            }
        }
    }
}
