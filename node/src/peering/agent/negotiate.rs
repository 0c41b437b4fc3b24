//! Making an arrangement: the primary's discovery and proposals, the peer's commit.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reef_overlay::PeerId;
use reef_proto::peering::{RejectReason, Request, Response};
use reef_proto::records::{
    Agreement, ArrangementId, CapacityOffer, ProviderId, Terms, open_agreement, seal,
};
use tracing::info;

use super::rank::{Candidate, rank};
use super::{Agent, Requirements, warm};
use crate::offers;
use crate::peering::{Arrangement, PeerRecord};
use crate::provider::unix_ms;

/// Agents of one provider asked before moving on to the next provider.
const AGENTS_PER_PROVIDER: usize = 2;
/// A discovery's candidates are tried again without a new discovery for this long: offers
/// live an hour, and a proposal to one that changed is countered or refused anyway.
const CANDIDATES_FRESH: Duration = Duration::from_secs(60);
/// Counter-proposals taken per candidate: one settles price, duration and capacity; a peer
/// that counters its own counter is haggling, and the next candidate is quicker.
const MAX_COUNTERS: usize = 1;

impl Agent {
    /// As the primary: finds a peer (none of `avoid`) for `needs` and agrees an arrangement
    /// with it; its id. The candidates of a recent discovery for the same region are tried
    /// first: a re-arrangement after a peer failed goes to the next one at once, rather than
    /// waiting on DHT lookups that the failed peer's nodes slow down.
    pub async fn arrange(
        &self,
        needs: &Requirements,
        avoid: &BTreeSet<ProviderId>,
    ) -> Result<ArrangementId, String> {
        let mut tried = avoid.clone();
        if let Some(known) = self.recent_candidates(&needs.region)
            && let Some(id) = self.try_candidates(needs, known, &mut tried).await
        {
            return Ok(id);
        }
        let own = self.own();
        let found = offers::discover_records(&self.overlay, &needs.region, own, &tried)
            .await
            .map_err(|e| format!("discovery failed: {e}"))?;
        let candidates: Vec<Candidate> = found
            .offers
            .into_iter()
            .map(|(offer, _)| {
                let agents: Vec<_> = found
                    .agents
                    .iter()
                    .filter(|a| a.membership.provider() == offer.provider)
                    .collect();
                Candidate {
                    record: PeerRecord::default(),
                    alive: true,
                    rtt: agents.iter().filter_map(|a| a.rtt).min(),
                    agents: agents
                        .iter()
                        .map(|a| a.peer)
                        .take(AGENTS_PER_PROVIDER)
                        .collect(),
                    offer,
                }
            })
            .collect();
        if let Ok(mut last) = self.last_candidates.lock() {
            *last = Some((Instant::now(), needs.region.clone(), candidates.clone()));
        }
        if let Some(id) = self.try_candidates(needs, candidates, &mut tried).await {
            return Ok(id);
        }
        Err(format!(
            "no acceptable offer in region {} took our terms",
            needs.region
        ))
    }

    /// The candidates of the last discovery for `region`, if it is recent.
    fn recent_candidates(&self, region: &str) -> Option<Vec<Candidate>> {
        let last = self.last_candidates.lock().ok()?;
        let (at, of, candidates) = last.as_ref()?;
        (of == region && at.elapsed() < CANDIDATES_FRESH).then(|| candidates.clone())
    }

    /// Negotiates with `candidates` the policy allows, best first, skipping and adding to
    /// `tried`; the arrangement made, if any.
    async fn try_candidates(
        &self,
        needs: &Requirements,
        mut candidates: Vec<Candidate>,
        tried: &mut BTreeSet<ProviderId>,
    ) -> Option<ArrangementId> {
        let own = self.own();
        candidates.retain(|c| {
            let o = &c.offer;
            o.provider != own
                && !tried.contains(&o.provider)
                && !self.policy.refuse.contains(&o.provider)
                && o.price_micros_per_gb <= needs.max_price_micros_per_gb
        });
        for c in &mut candidates {
            c.record = self.arrangements.peer_record(&c.offer.provider);
            c.alive = !self.load.nodes_of(&c.offer.provider).is_empty();
        }
        rank(&mut candidates, &needs.region, unix_ms());
        for candidate in &candidates {
            tried.insert(candidate.offer.provider);
            for agent in &candidate.agents {
                match self.negotiate(needs, &candidate.offer, *agent).await {
                    Ok(id) => return Some(id),
                    Err(why) => {
                        info!(provider = %candidate.offer.provider.short(), %agent, %why, "no arrangement; next candidate");
                    }
                }
            }
        }
        None
    }

    /// The terms we propose to `offer`'s provider for `needs`.
    fn terms_for(&self, needs: &Requirements, offer: &CapacityOffer) -> Result<Terms, String> {
        let now = unix_ms();
        let seconds = needs.duration.as_secs().clamp(
            u64::from(offer.min_duration_s),
            u64::from(offer.max_duration_s),
        );
        Ok(Terms {
            id: ArrangementId::random().map_err(|e| e.to_string())?,
            primary: self.own(),
            peer: offer.provider,
            services: needs.services.clone(),
            regions: vec![needs.region.clone()],
            req_per_s: needs.req_per_s.clamp(1, offer.req_per_s.max(1)),
            mbit_per_s: offer.mbit_per_s,
            share_permille: needs.share_permille,
            price_micros_per_gb: offer.price_micros_per_gb,
            start_ms: now,
            end_ms: now + seconds.max(1) * 1000,
            sla: needs.sla,
        })
    }

    async fn negotiate(
        &self,
        needs: &Requirements,
        offer: &CapacityOffer,
        agent: PeerId,
    ) -> Result<ArrangementId, String> {
        let started = std::time::Instant::now();
        let mut terms = self.terms_for(needs, offer)?;
        let mut counters = 0;
        let (agreement, opened) = loop {
            let now = unix_ms();
            let sealed_terms = seal(self.provider.key.signing_key(), &terms, now, terms.end_ms)
                .map_err(|e| format!("our terms do not seal: {e}"))?;
            let request = Request::Propose {
                sealed_terms: sealed_terms.clone(),
            };
            match self.ask(agent, &request).await? {
                Response::Accept { countersignature } => {
                    let agreement = Agreement {
                        sealed_terms,
                        countersignature,
                    };
                    let opened = open_agreement(&agreement, unix_ms())
                        .map_err(|e| format!("the countersignature does not verify: {e}"))?;
                    break (agreement, opened);
                }
                Response::Counter {
                    terms: theirs,
                    reason,
                } if counters < MAX_COUNTERS => {
                    counters += 1;
                    acceptable(&terms, &theirs, needs)
                        .map_err(|why| format!("counter-proposal ({reason}) refused: {why}"))?;
                    info!(arrangement = %terms.id, %reason, "taking the peer's counter-proposal");
                    terms = theirs;
                }
                Response::Reject { reason } => return Err(format!("rejected: {reason:?}")),
                other => return Err(format!("unexpected answer {other:?}")),
            }
        };
        let commit = Request::Commit {
            agreement: agreement.clone(),
        };
        match self.ask(agent, &commit).await? {
            Response::Committed => {}
            other => return Err(format!("commit refused: {other:?}")),
        }
        let id = terms.id;
        let took = started.elapsed();
        let mut arrangement = Arrangement::short_term(&opened);
        arrangement.counterpart = Some(agent);
        arrangement.negotiated_in = Some(took);
        if !self.arrangements.add(arrangement) {
            self.arrangements.set_negotiated(&id, agent, took);
        }
        self.arrangements.note_peer(terms.peer, true, None);
        info!(
            arrangement = %id,
            peer = %terms.peer.short(),
            req_per_s = terms.req_per_s,
            price_micros_per_gb = terms.price_micros_per_gb,
            counters,
            negotiation_ms = took.as_secs_f64() * 1e3,
            "arrangement active (primary)"
        );
        self.announce(reef_proto::peering::Notice::Agreed(agreement))
            .await;
        Ok(id)
    }

    /// As the peer: the primary confirms the terms we countersigned; they are active now.
    pub(super) async fn on_commit(&self, agreement: Agreement) -> Response {
        let opened = match open_agreement(&agreement, unix_ms()) {
            Ok(o) => o,
            Err(_) => {
                return Response::Reject {
                    reason: RejectReason::BadSignature,
                };
            }
        };
        if opened.terms().peer != self.own() {
            return Response::Reject {
                reason: RejectReason::NotForUs,
            };
        }
        let arrangement = Arrangement::short_term(&opened);
        if self.arrangements.add(arrangement.clone()) {
            warm(&self.services, &arrangement, self.own());
            info!(arrangement = %opened.id(), "arrangement active (peer)");
            self.announce(reef_proto::peering::Notice::Agreed(agreement))
                .await;
        }
        Response::Committed
    }
}

/// Whether we take the peer's counter-proposal `theirs` to our `ours`: the same arrangement
/// (id, parties, services, regions, share, SLA), at a price we pay, for capacity we can use.
fn acceptable(ours: &Terms, theirs: &Terms, needs: &Requirements) -> Result<(), String> {
    let same = ours.id == theirs.id
        && ours.primary == theirs.primary
        && ours.peer == theirs.peer
        && ours.services == theirs.services
        && ours.regions == theirs.regions
        && ours.share_permille == theirs.share_permille
        && ours.sla == theirs.sla;
    if !same {
        return Err("it changes what the arrangement is about".into());
    }
    if theirs.price_micros_per_gb > needs.max_price_micros_per_gb {
        return Err(format!(
            "price {} per GB is over our maximum",
            theirs.price_micros_per_gb as f64 / 1e6
        ));
    }
    if theirs.req_per_s == 0 {
        return Err("no capacity".into());
    }
    if theirs.end_ms <= unix_ms() {
        return Err("it would be over before it starts".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use reef_proto::records::Sla;

    fn needs() -> Requirements {
        Requirements {
            services: vec!["video.example".into()],
            region: "r0".into(),
            req_per_s: 100,
            duration: Duration::from_secs(600),
            max_price_micros_per_gb: 50_000,
            share_permille: 1000,
            sla: Sla {
                max_p95_ms: 500,
                min_availability_permille: 990,
            },
        }
    }

    fn terms() -> Terms {
        Terms {
            req_per_s: 100,
            share_permille: 1000,
            ..super::super::tests::terms_from(unix_ms())
        }
    }

    #[test]
    fn counters_within_policy_are_taken_others_not() {
        let ours = terms();
        let dearer = Terms {
            price_micros_per_gb: 40_000,
            req_per_s: 30,
            ..terms()
        };
        assert_eq!(acceptable(&ours, &dearer, &needs()), Ok(()));
        let too_dear = Terms {
            price_micros_per_gb: 60_000,
            ..terms()
        };
        assert!(acceptable(&ours, &too_dear, &needs()).is_err());
        let other_services = Terms {
            services: vec!["img.example".into()],
            ..terms()
        };
        assert!(acceptable(&ours, &other_services, &needs()).is_err());
        let weaker_sla = Terms {
            sla: Sla {
                max_p95_ms: 5000,
                min_availability_permille: 900,
            },
            ..terms()
        };
        assert!(acceptable(&ours, &weaker_sla, &needs()).is_err());
        let nothing = Terms {
            req_per_s: 0,
            ..terms()
        };
        assert!(acceptable(&ours, &nothing, &needs()).is_err());
    }
}
