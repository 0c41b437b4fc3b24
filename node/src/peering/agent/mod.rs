//! The peering agent: negotiates short-term arrangements over `/reef/peering/1`, tells both
//! providers' nodes about them over gossip, and settles them.
//!
//! As the primary (driven by the mediator): discover offers for our region, drop what the
//! policy forbids, rank the rest ([`rank`]), and with each candidate in turn propose signed
//! terms → get the peer's countersignature (or one counter-proposal, taken if our policy
//! allows it) → commit the agreement ([`negotiate`]). A rejection, an error or a timeout moves
//! on to the next candidate. As the peer (any node with the provider key and an `[offer]`):
//! check a proposal against our offer, our spare capacity and our policy, countersign it (the
//! same countersignature for the same terms, so retries are harmless) or counter it, and
//! activate it on commit. Either side announces the agreement, and its end, on
//! [`NOTICE_TOPIC`](reef_proto::peering::NOTICE_TOPIC) ([`notices`]); every node of either provider that hears it updates its
//! arrangements. At the end the primary settles and hands the account to the peer
//! ([`settle`]), retrying until the peer agrees.

mod negotiate;
mod notices;
mod rank;
mod settle;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reef_overlay::PeerId;
use reef_proto::peering::{
    EndReason, MAX_REASON_LEN, Notice, RejectReason, Request, Response, decode_request,
    decode_response, encode,
};
use reef_proto::records::{
    ArrangementEnd, ArrangementId, CapacityOffer, Countersignature, ProviderId, Sla, Terms,
    countersign, open, seal,
};
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info, info_span, warn};

use super::ledger::Ledger;
use super::{Arrangement, Arrangements, Policy};
use crate::load::Load;
use crate::provider::{ProviderIdentity, unix_ms};
use crate::services::Services;

pub use notices::listen;

/// Queue of notices heard; they are rare (a few per arrangement).
pub const NOTICE_QUEUE: usize = 64;
/// Proposals countersigned but not yet committed, remembered so a retried proposal gets the
/// same answer; the oldest make room.
const MAX_PENDING: usize = 256;
/// How long a sealed end stays valid while it is relayed: gossip delivers in seconds, and a
/// node away longer learns the end from the expiry or the next notice.
const END_LIFETIME_MS: u64 = 60 * 60 * 1000;
/// How long the agent waits after a failed attempt before the mediator may try again.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// The service requirements the mediator writes when its provider is overloaded.
#[derive(Debug, Clone)]
pub struct Requirements {
    pub services: Vec<String>,
    pub region: String,
    /// Extra capacity wanted, req/s.
    pub req_per_s: u32,
    pub duration: Duration,
    /// The most we pay, per GB.
    pub max_price_micros_per_gb: u64,
    /// Share of our requests the peer may take.
    pub share_permille: u16,
    pub sla: Sla,
}

pub struct Agent {
    provider: ProviderIdentity,
    /// Our offer, when we lend capacity.
    offer: Option<CapacityOffer>,
    policy: Policy,
    arrangements: Arc<Arrangements>,
    services: Arc<Services>,
    overlay: reef_overlay::Client,
    ledger: Arc<Ledger>,
    /// Where the other provider's nodes are, to reach one of them when its agent is gone.
    load: Load,
    /// This node's own public key, as its usage receipts name it.
    node_key: [u8; 32],
    /// Arrangement id → (the terms as sealed, our countersignature).
    pending: Mutex<HashMap<ArrangementId, (Vec<u8>, Countersignature)>>,
    /// The last discovery: when, for which region, its candidates.
    last_candidates: Mutex<Option<(std::time::Instant, String, Vec<rank::Candidate>)>>,
}

/// What an agent needs besides its identity.
pub struct Parts {
    pub offer: Option<CapacityOffer>,
    pub policy: Policy,
    pub arrangements: Arc<Arrangements>,
    pub services: Arc<Services>,
    pub overlay: reef_overlay::Client,
    pub ledger: Arc<Ledger>,
    pub load: Load,
    pub node_key: [u8; 32],
}

impl Agent {
    pub fn new(provider: ProviderIdentity, parts: Parts) -> Arc<Self> {
        Arc::new(Self {
            provider,
            offer: parts.offer,
            policy: parts.policy,
            arrangements: parts.arrangements,
            services: parts.services,
            overlay: parts.overlay,
            ledger: parts.ledger,
            load: parts.load,
            node_key: parts.node_key,
            pending: Mutex::new(HashMap::new()),
            last_candidates: Mutex::new(None),
        })
    }

    fn own(&self) -> ProviderId {
        self.provider.key.id()
    }

    /// Answers peers' peering requests until the overlay stops.
    pub fn serve(
        self: &Arc<Self>,
        mut inbox: mpsc::Receiver<reef_overlay::InboundPeering>,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            while let Some(inbound) = inbox.recv().await {
                let response = this.answer(inbound.peer, &inbound.request).await;
                match encode(&response) {
                    Ok(bytes) => {
                        if let Err(error) = inbound.reply.send(bytes) {
                            debug!(peer = %inbound.peer, %error, "peering response not sent");
                        }
                    }
                    Err(error) => warn!(%error, "cannot encode a peering response"),
                }
            }
        })
    }

    async fn answer(&self, peer: PeerId, request: &[u8]) -> Response {
        let request = match decode_request(request) {
            Ok(r) => r,
            Err(e) => {
                return Response::Error {
                    reason: e.to_string().chars().take(200).collect(),
                };
            }
        };
        let span = info_span!("peering_in", %peer);
        async {
            match request {
                Request::Propose { sealed_terms } => self.on_propose(sealed_terms),
                Request::Commit { agreement } => self.on_commit(agreement).await,
                Request::End { id, reason } => self.on_end(peer, id, reason).await,
                Request::Usage { sealed_receipt } => self.on_usage(sealed_receipt).await,
                Request::Settle { settlement } => self.on_settle(peer, settlement).await,
            }
        }
        .instrument(span)
        .await
    }

    /// As the peer: accept `sealed_terms` (countersign), counter them with what we can do, or
    /// reject them with the reason.
    fn on_propose(&self, sealed_terms: Vec<u8>) -> Response {
        let reject = |reason| Response::Reject { reason };
        let terms = match open::<Terms>(&sealed_terms, unix_ms()) {
            Ok(opened) => opened.into_record(),
            Err(e) if e.reason() == "expired" => return reject(RejectReason::Expired),
            Err(_) => return reject(RejectReason::BadSignature),
        };
        if terms.peer != self.own() {
            return reject(RejectReason::NotForUs);
        }
        let Some(offer) = &self.offer else {
            return reject(RejectReason::NoCapacity);
        };
        if self.policy.refuse.contains(&terms.primary) {
            return reject(RejectReason::PolicyRefuses);
        }
        let Ok(mut pending) = self.pending.lock() else {
            return reject(RejectReason::Other("busy".into()));
        };
        if let Some((sealed, signature)) = pending.get(&terms.id) {
            // A retry: the same terms get the same answer; other terms under a used id none.
            return if *sealed == sealed_terms {
                Response::Accept {
                    countersignature: *signature,
                }
            } else {
                reject(RejectReason::Other("arrangement id already used".into()))
            };
        }
        let spare = u64::from(offer.req_per_s).saturating_sub(self.arrangements.lent_req_per_s());
        if spare == 0 {
            return reject(RejectReason::NoCapacity);
        }
        if let Some((counter, reason)) = counter(&terms, offer, spare) {
            info!(arrangement = %terms.id, primary = %terms.primary.short(), %reason, "proposal countered");
            return Response::Counter {
                terms: counter,
                reason,
            };
        }
        if pending.len() >= MAX_PENDING
            && let Some(oldest) = pending.keys().next().copied()
        {
            pending.remove(&oldest);
        }
        let signature = countersign(self.provider.key.signing_key(), &sealed_terms);
        pending.insert(terms.id, (sealed_terms, signature));
        info!(arrangement = %terms.id, primary = %terms.primary.short(), "proposal accepted");
        Response::Accept {
            countersignature: signature,
        }
    }

    async fn on_end(&self, from: PeerId, id: ArrangementId, reason: EndReason) -> Response {
        let Some(arrangement) = self.arrangements.get(&id) else {
            return Response::Ended;
        };
        // Only a node of the other party may end it.
        let other = if arrangement.primary == self.own() {
            arrangement.peer
        } else {
            arrangement.primary
        };
        match self.overlay.node_record(from).await {
            Ok(Some(info)) if info.membership.provider() == other => {}
            _ => {
                return Response::Reject {
                    reason: RejectReason::NotForUs,
                };
            }
        }
        self.end_here(id, reason).await;
        Response::Ended
    }

    /// Marks `id` ended and tells every node of both providers, with our signature.
    async fn end_here(&self, id: ArrangementId, reason: EndReason) {
        if !self.arrangements.end(&id, reason) {
            return;
        }
        info!(arrangement = %id, reason = reason.label(), "arrangement ended");
        let end = ArrangementEnd {
            id,
            party: self.own(),
            reason,
        };
        let now = unix_ms();
        match seal(
            self.provider.key.signing_key(),
            &end,
            now,
            now + END_LIFETIME_MS,
        ) {
            Ok(sealed_end) => self.announce(Notice::Ended { sealed_end }).await,
            Err(error) => warn!(arrangement = %id, %error, "cannot seal the end notice"),
        }
    }

    async fn announce(&self, notice: Notice) {
        notices::announce(&self.overlay, &notice).await;
    }

    /// Ends our arrangement `id` with the other party, then here; as the primary, settles it
    /// in the background.
    pub async fn disband(self: &Arc<Self>, id: ArrangementId, reason: EndReason) {
        // Before anyone hears of the end, so every final receipt is newer.
        let ended_at = unix_ms();
        let Some(arrangement) = self.arrangements.get(&id) else {
            return;
        };
        // A peer that is gone cannot answer; waiting for its timeout only delays the next
        // arrangement. Its nodes learn the end from the notice.
        let counterpart = match reason {
            EndReason::PeerGone | EndReason::SlaBreach => None,
            _ => arrangement.counterpart,
        };
        if let Some(agent) = counterpart {
            match self.ask(agent, &Request::End { id, reason }).await {
                Ok(Response::Ended) => {}
                Ok(other) => debug!(arrangement = %id, ?other, "peer did not confirm the end"),
                Err(why) => debug!(arrangement = %id, %why, "peer did not confirm the end"),
            }
        }
        self.end_here(id, reason).await;
        if arrangement.primary == self.own() {
            // Settling waits for the final receipts; the mediator must not wait with it (it
            // may have a replacement to arrange).
            let this = self.clone();
            tokio::spawn(async move { this.settle(id, ended_at).await });
        }
    }

    async fn ask(&self, agent: PeerId, request: &Request) -> Result<Response, String> {
        let bytes = encode(request).map_err(|e| e.to_string())?;
        let answer = self
            .overlay
            .peering_request(agent, bytes)
            .await
            .map_err(|e| e.to_string())?;
        decode_response(&answer).map_err(|e| e.to_string())
    }
}

/// As the peer: the terms we would accept instead of `terms`, and why, if `terms` ask for
/// less than our `offer` or more than our `spare` capacity (req/s); `None` if they are fine.
fn counter(terms: &Terms, offer: &CapacityOffer, spare: u64) -> Option<(Terms, String)> {
    let mut ours = terms.clone();
    let mut why = Vec::new();
    if terms.price_micros_per_gb < offer.price_micros_per_gb {
        ours.price_micros_per_gb = offer.price_micros_per_gb;
        why.push(format!(
            "our price is {} per GB",
            offer.price_micros_per_gb as f64 / 1e6
        ));
    }
    let seconds = terms.end_ms.saturating_sub(terms.start_ms) / 1000;
    let allowed = u64::from(offer.min_duration_s)..=u64::from(offer.max_duration_s);
    if !allowed.contains(&seconds) {
        let fixed = seconds.clamp(*allowed.start(), *allowed.end()).max(1);
        ours.end_ms = terms.start_ms + fixed * 1000;
        why.push(format!(
            "we lend for {} to {} s",
            allowed.start(),
            allowed.end()
        ));
    }
    if u64::from(terms.req_per_s) > spare {
        ours.req_per_s = u32::try_from(spare).unwrap_or(u32::MAX);
        why.push(format!("{spare} req/s are spare"));
    }
    if why.is_empty() {
        return None;
    }
    let mut reason = why.join("; ");
    reason.truncate(MAX_REASON_LEN);
    Some((ours, reason))
}

/// Once we serve another provider's services (a new arrangement), look them up ahead of the
/// first redirected request, so that it does not wait on the DHT.
fn warm(services: &Arc<Services>, arrangement: &Arrangement, own: ProviderId) {
    if arrangement.peer != own {
        return;
    }
    for host in &arrangement.services {
        let (services, host) = (services.clone(), host.clone());
        tokio::spawn(async move {
            services.resolve(&host).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reef_proto::records::ProviderKey;

    fn offer() -> CapacityOffer {
        CapacityOffer {
            provider: ProviderKey::from_bytes(&[2; 32]).id(),
            name: "b".into(),
            req_per_s: 1000,
            mbit_per_s: 1000,
            regions: vec!["r0".into()],
            price_micros_per_gb: 20_000,
            min_duration_s: 60,
            max_duration_s: 3600,
        }
    }

    /// Terms of p1 to p2 for `video.example` in r0, 10 minutes from `start_ms`.
    pub(super) fn terms_from(start_ms: u64) -> Terms {
        Terms {
            id: ArrangementId::from_bytes([1; 16]),
            primary: ProviderKey::from_bytes(&[1; 32]).id(),
            peer: ProviderKey::from_bytes(&[2; 32]).id(),
            services: vec!["video.example".into()],
            regions: vec!["r0".into()],
            req_per_s: 500,
            mbit_per_s: 100,
            share_permille: 500,
            price_micros_per_gb: 20_000,
            start_ms,
            end_ms: start_ms + 600_000,
            sla: Sla {
                max_p95_ms: 500,
                min_availability_permille: 990,
            },
        }
    }

    fn terms() -> Terms {
        terms_from(1_000_000)
    }

    #[test]
    fn fair_terms_are_not_countered() {
        assert_eq!(counter(&terms(), &offer(), 1000), None);
    }

    #[test]
    fn a_counter_fixes_price_duration_and_capacity_and_says_why() {
        let cheap_long_big = Terms {
            price_micros_per_gb: 10_000,
            end_ms: 1_000_000 + 7_200_000,
            req_per_s: 900,
            ..terms()
        };
        let (ours, why) = counter(&cheap_long_big, &offer(), 300).unwrap();
        assert_eq!(ours.price_micros_per_gb, 20_000);
        assert_eq!(ours.end_ms - ours.start_ms, 3_600_000);
        assert_eq!(ours.req_per_s, 300);
        assert_eq!(
            (ours.id, ours.services.clone()),
            (terms().id, terms().services)
        );
        assert!(why.contains("price") && why.contains("3600 s") && why.contains("300 req/s"));
        // What we counter with we accept.
        assert_eq!(counter(&ours, &offer(), 300), None);
        let short = Terms {
            end_ms: 1_000_000 + 10_000,
            ..terms()
        };
        assert_eq!(counter(&short, &offer(), 1000).unwrap().0.end_ms, 1_060_000);
    }
}
