//! The peering agent: negotiates short-term arrangements over `/reef/peering/1` and tells
//! both providers' nodes about them over gossip.
//!
//! As the primary (driven by the mediator): discover offers for our region, drop what the
//! policy forbids, rank the rest by price then capacity, and with each candidate in turn
//! propose signed terms → get the peer's countersignature → commit the agreement. A
//! rejection, an error or a timeout moves on to the next candidate. As the peer (any node
//! with the provider key and an `[offer]`): check a proposal against our offer and policy,
//! countersign it (the same countersignature for the same terms, so retries are harmless),
//! and activate it on commit. Either side announces the agreement, and its end, on
//! [`TOPIC`]; every node of either provider that hears it updates its arrangements.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reef_overlay::{Acceptance, GossipMessage, PeerId};
use reef_proto::peering::{
    EndReason, RejectReason, Request, Response, Settlement, decode_request, decode_response, encode,
};
use reef_proto::records::{
    Agreement, ArrangementId, CapacityOffer, Countersignature, ProviderId, ReceiptAck, Sla, Terms,
    UsageReceipt, countersign, open, open_agreement, region_announce_key, seal,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info, info_span, warn};

use super::ledger::{self, Ledger};
use super::receipts::RECEIPT_EVERY;
use super::{Arrangement, Arrangements, Policy};
use crate::offers;
use crate::provider::{ProviderIdentity, unix_ms};
use crate::services::Services;

/// Gossip topic on which agreements and their ends travel to both providers' nodes.
pub const TOPIC: &str = "reef/arrangements/1";
/// Queue of notices heard; they are rare (a few per arrangement).
pub const NOTICE_QUEUE: usize = 64;
/// How often the primary looks for the final receipts while it settles.
const SETTLE_POLL: Duration = Duration::from_millis(250);
/// Proposals countersigned but not yet committed, remembered so a retried proposal gets the
/// same answer; the oldest make room.
const MAX_PENDING: usize = 256;
/// Agents of one provider asked before moving on to the next provider.
const AGENTS_PER_PROVIDER: usize = 2;
/// Announcers of a region looked at when looking for a provider's agents.
const MAX_AGENTS: usize = 20;
/// Signs the end of an arrangement: a party's provider key over this, then the id.
const END_DOMAIN: &[u8] = b"reef arrangement end v1\0";

/// What a party signs to end arrangement `id`.
fn end_message(id: &ArrangementId) -> Vec<u8> {
    [END_DOMAIN, id.as_bytes()].concat()
}

/// What travels on [`TOPIC`], postcard-encoded.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Notice {
    Agreed(Agreement),
    Ended {
        id: ArrangementId,
        by: ProviderId,
        signature: Countersignature,
    },
}

/// What the mediator asks for.
#[derive(Debug, Clone)]
pub struct Requirements {
    pub services: Vec<String>,
    pub region: String,
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
    /// Arrangement id → (the terms as sealed, our countersignature).
    pending: Mutex<HashMap<ArrangementId, (Vec<u8>, Countersignature)>>,
}

impl Agent {
    pub fn new(
        provider: ProviderIdentity,
        offer: Option<CapacityOffer>,
        policy: Policy,
        arrangements: Arc<Arrangements>,
        services: Arc<Services>,
        overlay: reef_overlay::Client,
        ledger: Arc<Ledger>,
    ) -> Arc<Self> {
        Arc::new(Self {
            provider,
            offer,
            policy,
            arrangements,
            services,
            overlay,
            ledger,
            pending: Mutex::new(HashMap::new()),
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
                Request::End { id, .. } => self.on_end(peer, id).await,
                Request::Usage { sealed_receipt } => self.on_usage(sealed_receipt).await,
                Request::Settle { settlement } => self.on_settle(peer, settlement).await,
            }
        }
        .instrument(span)
        .await
    }

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
        if terms.price_micros_per_gb < offer.price_micros_per_gb {
            return reject(RejectReason::PriceTooLow);
        }
        let seconds = terms.end_ms.saturating_sub(terms.start_ms) / 1000;
        if seconds < u64::from(offer.min_duration_s) || seconds > u64::from(offer.max_duration_s) {
            return reject(RejectReason::DurationOutOfRange);
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

    async fn on_commit(&self, agreement: Agreement) -> Response {
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
            self.announce(Notice::Agreed(agreement)).await;
        }
        Response::Committed
    }

    /// A serving node's receipt (at the primary), or one the primary hands on before it
    /// settles (at the peer): kept if it is the node's newest.
    async fn on_usage(&self, sealed: Vec<u8>) -> Response {
        let now = unix_ms();
        let Ok(opened) = open::<UsageReceipt>(&sealed, now) else {
            return Response::Reject {
                reason: RejectReason::BadSignature,
            };
        };
        let receipt = opened.record().clone();
        let id = receipt.arrangement;
        let Some(arrangement) = self.arrangements.get(&id) else {
            return Response::Reject {
                reason: RejectReason::NotForUs,
            };
        };
        if let Err(why) = ledger::check(&arrangement, self.own(), &opened, now) {
            debug!(arrangement = %id, %why, "receipt refused");
            return Response::Reject {
                reason: RejectReason::NotForUs,
            };
        }
        let ledger = self.ledger.clone();
        let kept = {
            let receipt = receipt.clone();
            tokio::task::spawn_blocking(move || ledger.record(&receipt, &sealed)).await
        };
        match kept {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                warn!(arrangement = %id, %error, "receipt not kept");
                return Response::Error {
                    reason: "ledger unavailable".into(),
                };
            }
            Err(_) => {
                return Response::Error {
                    reason: "ledger unavailable".into(),
                };
            }
        }
        let seq = self
            .ledger
            .receipts(&id)
            .into_iter()
            .find(|(node, _)| *node == receipt.node)
            .map_or(receipt.seq, |(_, held)| held.seq);
        Response::Ack(ReceiptAck {
            arrangement: id,
            node: receipt.node,
            seq,
        })
    }

    /// As the peer: the primary's settlement, checked against the receipts of our own nodes
    /// it handed us; written only if both agree exactly. Answers with our own account.
    async fn on_settle(&self, from: PeerId, theirs: Settlement) -> Response {
        let Some(arrangement) = self.arrangements.get(&theirs.id) else {
            return Response::Reject {
                reason: RejectReason::NotForUs,
            };
        };
        if arrangement.peer != self.own() {
            return Response::Reject {
                reason: RejectReason::NotForUs,
            };
        }
        // The numbers are checked against our own nodes' signatures, so the sender matters
        // only for ending it: once ended here (by notice), anyone may hand us the account.
        if arrangement.status != super::Status::Ended {
            match self.overlay.node_record(from).await {
                Ok(Some(info)) if info.membership.provider() == arrangement.primary => {}
                _ => {
                    return Response::Reject {
                        reason: RejectReason::NotForUs,
                    };
                }
            }
            self.end_here(arrangement.id).await;
        }
        let ours = self
            .ledger
            .account(arrangement.id, arrangement.price_micros_per_gb);
        if ours != theirs {
            warn!(arrangement = %arrangement.id, ?ours, ?theirs, "settlements differ; not written");
            return Response::Settled { settlement: ours };
        }
        if self.ledger.settlement(&arrangement.id).is_none() {
            self.write_settlement(arrangement, ours).await;
        }
        Response::Settled { settlement: ours }
    }

    async fn write_settlement(&self, arrangement: Arc<Arrangement>, settlement: Settlement) {
        let ledger = self.ledger.clone();
        let id = arrangement.id;
        match tokio::task::spawn_blocking(move || {
            ledger.settle(&arrangement, &settlement, unix_ms())
        })
        .await
        {
            Ok(Ok(entry)) => info!(
                arrangement = %id, requests = entry.requests, bytes = entry.bytes,
                amount_micros = entry.amount_micros, "settled"
            ),
            Ok(Err(error)) => warn!(arrangement = %id, %error, "settlement not written"),
            Err(error) => warn!(arrangement = %id, %error, "writing the settlement panicked"),
        }
    }

    /// As the primary, once `id` has ended: waits (bounded) for every serving node's final
    /// receipt, writes the settlement, then hands the receipts and the settlement to the peer's
    /// agent, which checks and writes the same.
    /// `reach_peer`: false when the peer is gone; the settlement is then ours alone.
    async fn settle(&self, id: ArrangementId, ended_at: u64, reach_peer: bool) {
        // The primary settles, from the receipts it holds; the peer writes it when told.
        let Some(arrangement) = self
            .arrangements
            .get(&id)
            .filter(|a| a.primary == self.own())
        else {
            return;
        };
        let deadline = tokio::time::Instant::now() + 2 * RECEIPT_EVERY;
        while tokio::time::Instant::now() < deadline {
            let held = self.ledger.receipts(&id);
            if !held.is_empty() && held.iter().all(|(_, h)| h.seq > ended_at) {
                break;
            }
            tokio::time::sleep(SETTLE_POLL).await;
        }
        let settlement = self.ledger.account(id, arrangement.price_micros_per_gb);
        self.write_settlement(arrangement.clone(), settlement).await;
        let Some(agent) = arrangement.counterpart.filter(|_| reach_peer) else {
            return;
        };
        for (_, held) in self.ledger.receipts(&id) {
            let request = Request::Usage {
                sealed_receipt: held.sealed,
            };
            if let Err(why) = self.ask(agent, &request).await {
                debug!(arrangement = %id, %why, "receipt not handed to the peer");
            }
        }
        match self.ask(agent, &Request::Settle { settlement }).await {
            Ok(Response::Settled { settlement: theirs }) if theirs == settlement => {
                info!(arrangement = %id, "the peer agrees with the settlement");
            }
            Ok(other) => warn!(arrangement = %id, ?other, "the peer disagrees with the settlement"),
            Err(why) => warn!(arrangement = %id, %why, "the peer did not settle"),
        }
    }

    async fn on_end(&self, from: PeerId, id: ArrangementId) -> Response {
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
        self.end_here(id).await;
        Response::Ended
    }

    /// Marks `id` ended and tells every node of both providers.
    async fn end_here(&self, id: ArrangementId) {
        if self.arrangements.end(&id) {
            info!(arrangement = %id, "arrangement ended");
            let signature = self.sign_end(&id);
            self.announce(Notice::Ended {
                id,
                by: self.own(),
                signature,
            })
            .await;
        }
    }

    fn sign_end(&self, id: &ArrangementId) -> Countersignature {
        use ed25519_dalek::Signer;
        let signature = self.provider.key.signing_key().sign(&end_message(id));
        Countersignature(signature.to_bytes())
    }

    async fn announce(&self, notice: Notice) {
        let Ok(bytes) = postcard::to_stdvec(&notice) else {
            return;
        };
        if let Err(error) = self.overlay.publish(TOPIC, bytes).await {
            debug!(%error, "arrangement notice not published");
        }
    }

    /// As the primary: finds a peer (none of `avoid`) and agrees an arrangement with it; its
    /// id.
    pub async fn arrange(
        &self,
        needs: &Requirements,
        avoid: &BTreeSet<ProviderId>,
    ) -> Result<ArrangementId, String> {
        let Some(max_price) = self.policy.max_price_micros_per_gb else {
            return Err("the policy sets no max_price_per_gb".into());
        };
        let own = self.own();
        let offers = offers::discover_records(&self.overlay, &needs.region, own, avoid)
            .await
            .map_err(|e| format!("discovery failed: {e}"))?;
        let mut offers: Vec<CapacityOffer> = offers.into_iter().map(|(o, _)| o).collect();
        offers.retain(|o| {
            o.provider != own
                && !avoid.contains(&o.provider)
                && !self.policy.refuse.contains(&o.provider)
                && o.price_micros_per_gb <= max_price
        });
        offers.sort_by_key(|o| (o.price_micros_per_gb, std::cmp::Reverse(o.req_per_s)));
        if offers.is_empty() {
            return Err(format!("no acceptable offer for region {}", needs.region));
        }
        let agents = self
            .overlay
            .find_holders(region_announce_key(&needs.region), MAX_AGENTS)
            .await
            .map_err(|e| format!("looking up agents failed: {e}"))?;
        for offer in &offers {
            let candidates = agents
                .iter()
                .filter(|a| a.membership.provider() == offer.provider)
                .map(|a| a.peer)
                .take(AGENTS_PER_PROVIDER);
            for agent in candidates {
                match self.negotiate(needs, offer, agent).await {
                    Ok(id) => return Ok(id),
                    Err(why) => {
                        info!(provider = %offer.provider.short(), %agent, %why, "no arrangement; next candidate");
                    }
                }
            }
        }
        Err("every candidate declined or failed".into())
    }

    async fn negotiate(
        &self,
        needs: &Requirements,
        offer: &CapacityOffer,
        agent: PeerId,
    ) -> Result<ArrangementId, String> {
        let started = std::time::Instant::now();
        let now = unix_ms();
        let seconds = self.policy.duration.as_secs().clamp(
            u64::from(offer.min_duration_s),
            u64::from(offer.max_duration_s),
        );
        let terms = Terms {
            id: ArrangementId::random().map_err(|e| e.to_string())?,
            primary: self.own(),
            peer: offer.provider,
            services: needs.services.clone(),
            regions: vec![needs.region.clone()],
            req_per_s: offer.req_per_s,
            mbit_per_s: offer.mbit_per_s,
            share_permille: self.policy.share_permille,
            price_micros_per_gb: offer.price_micros_per_gb,
            start_ms: now,
            end_ms: now + seconds * 1000,
            sla: Sla {
                max_p95_ms: 500,
                min_availability_permille: 990,
            },
        };
        let sealed_terms = seal(self.provider.key.signing_key(), &terms, now, terms.end_ms)
            .map_err(|e| format!("our terms do not seal: {e}"))?;
        let countersignature = match self
            .ask(
                agent,
                &Request::Propose {
                    sealed_terms: sealed_terms.clone(),
                },
            )
            .await?
        {
            Response::Accept { countersignature } => countersignature,
            Response::Reject { reason } => return Err(format!("rejected: {reason:?}")),
            other => return Err(format!("unexpected answer {other:?}")),
        };
        let agreement = Agreement {
            sealed_terms,
            countersignature,
        };
        let opened = open_agreement(&agreement, unix_ms())
            .map_err(|e| format!("the countersignature does not verify: {e}"))?;
        match self
            .ask(
                agent,
                &Request::Commit {
                    agreement: agreement.clone(),
                },
            )
            .await?
        {
            Response::Committed => {}
            other => return Err(format!("commit refused: {other:?}")),
        }
        let mut arrangement = Arrangement::short_term(&opened);
        arrangement.counterpart = Some(agent);
        if !self.arrangements.add(arrangement) {
            self.arrangements.set_counterpart(&terms.id, agent);
        }
        info!(
            arrangement = %terms.id,
            peer = %offer.provider.short(),
            negotiation_ms = started.elapsed().as_secs_f64() * 1e3,
            "arrangement active (primary)"
        );
        self.announce(Notice::Agreed(agreement)).await;
        Ok(terms.id)
    }

    /// As the primary: ends our arrangement `id` with the peer, then here.
    pub async fn disband(self: &Arc<Self>, id: ArrangementId, reason: EndReason) {
        // Before anyone hears of the end, so every final receipt is newer.
        let ended_at = unix_ms();
        // A peer that is gone cannot answer; waiting for its timeout only delays the next
        // arrangement.
        let counterpart = match reason {
            EndReason::PeerGone => None,
            _ => self.arrangements.get(&id).and_then(|a| a.counterpart),
        };
        if let Some(agent) = counterpart {
            match self.ask(agent, &Request::End { id, reason }).await {
                Ok(Response::Ended) => {}
                Ok(other) => debug!(arrangement = %id, ?other, "peer did not confirm the end"),
                Err(why) => debug!(arrangement = %id, %why, "peer did not confirm the end"),
            }
        }
        // The notice reaches the peer's nodes even when its agent did not answer.
        self.end_here(id).await;
        // Settling waits for the final receipts; the mediator must not wait with it (it may
        // have a replacement to arrange).
        let this = self.clone();
        let reach_peer = counterpart.is_some();
        tokio::spawn(async move { this.settle(id, ended_at, reach_peer).await });
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

/// Every node (agent or not) keeps its arrangements in step with [`TOPIC`].
pub fn listen(
    arrangements: Arc<Arrangements>,
    services: Arc<Services>,
    overlay: reef_overlay::Client,
    mut notices: mpsc::Receiver<GossipMessage>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(message) = notices.recv().await {
            let verdict = apply(&arrangements, &services, &message.data);
            if let Err(error) = overlay.report(message.handle, verdict).await {
                debug!(%error, "cannot report an arrangement notice's verdict");
            }
        }
    })
}

/// Checks and applies one notice: valid ones travel on, invalid ones count against the relay.
fn apply(arrangements: &Arrangements, services: &Arc<Services>, data: &[u8]) -> Acceptance {
    if data.len() > reef_proto::peering::MAX_MESSAGE_LEN {
        return Acceptance::Reject;
    }
    let Ok(notice) = postcard::from_bytes::<Notice>(data) else {
        return Acceptance::Reject;
    };
    match notice {
        Notice::Agreed(agreement) => match open_agreement(&agreement, unix_ms()) {
            Ok(opened) => {
                let arrangement = Arrangement::short_term(&opened);
                if arrangements.add(arrangement.clone()) {
                    warm(services, &arrangement, arrangements.own());
                    info!(arrangement = %opened.id(), "arrangement learnt");
                }
                Acceptance::Accept
            }
            // Expired agreements are old news, not an attack.
            Err(e) if e.reason() == "expired" => Acceptance::Ignore,
            Err(_) => Acceptance::Reject,
        },
        Notice::Ended { id, by, signature } => {
            let message = end_message(&id);
            let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(by.as_bytes()) else {
                return Acceptance::Reject;
            };
            let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
            if key.verify_strict(&message, &sig).is_err() {
                return Acceptance::Reject;
            }
            // Signed by `by`; it ends the arrangement only if `by` is a party to it. Others'
            // nodes, who do not know it, pass it on.
            match arrangements.get(&id) {
                Some(a) if by != a.primary && by != a.peer => Acceptance::Reject,
                Some(_) => {
                    if arrangements.end(&id) {
                        info!(arrangement = %id, "arrangement ended (notice)");
                    }
                    Acceptance::Accept
                }
                None => Acceptance::Accept,
            }
        }
    }
}

/// How long the agent waits after a failed attempt before the mediator may try again.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);
