//! Accounting at both ends: receipts in, the final settlement written by the primary and
//! handed to the peer, which checks it against its own nodes' signatures and writes the same.
//!
//! The hand-over is retried until the peer agrees: a peer whose agent is down at the end
//! (killed, restarting, partitioned) settles when it is back. The primary tries the agent it
//! negotiated with, then the peer's live nodes (every node with the provider key can settle,
//! since it checks receipts against its own provider's certificates).

use std::sync::Arc;
use std::time::Duration;

use reef_overlay::PeerId;
use reef_proto::peering::{EndReason, RejectReason, Request, Response, Settlement};
use reef_proto::records::{ArrangementId, ProviderId, ReceiptAck, UsageReceipt, open};
use tracing::{debug, info, warn};

use super::Agent;
use crate::peering::ledger::{self, Entry};
use crate::peering::mediator::succession;
use crate::peering::receipts::RECEIPT_EVERY;
use crate::peering::{Arrangement, Basis, Status};
use crate::provider::unix_ms;

/// How often the primary looks for the final receipts while it settles.
const SETTLE_POLL: Duration = Duration::from_millis(250);
/// A settlement the peer has not agreed to is handed over again this often.
pub const SETTLE_RETRY_EVERY: Duration = Duration::from_secs(10);
/// After this long the primary stops handing a settlement over; the ledger shows it as not
/// agreed, for people to sort out.
const GIVE_UP_AFTER_MS: u64 = 24 * 60 * 60 * 1000;
/// Nodes of the peer tried per hand-over besides the agent we negotiated with.
const PEER_NODES_TRIED: usize = 2;

impl Agent {
    /// A serving node's receipt (at the primary), or one the primary hands on before it
    /// settles (at the peer): kept if it is the node's newest.
    pub(super) async fn on_usage(&self, sealed: Vec<u8>) -> Response {
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
    pub(super) async fn on_settle(&self, from: PeerId, theirs: Settlement) -> Response {
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
        // only for what the account does to the arrangement: it ends a short-term one (once
        // ended here, by notice, anyone may hand us its account) and restates a long-term one.
        if arrangement.status != Status::Ended {
            match self.overlay.node_record(from).await {
                Ok(Some(info)) if info.membership.provider() == arrangement.primary => {}
                _ => {
                    return Response::Reject {
                        reason: RejectReason::NotForUs,
                    };
                }
            }
            if arrangement.basis == Basis::ShortTerm {
                self.end_here(arrangement.id, EndReason::Settled).await;
            }
        }
        let ours = self.own_account(&arrangement);
        if ours != theirs {
            warn!(arrangement = %arrangement.id, ?ours, ?theirs, "settlements differ; not written");
            return Response::Settled { settlement: ours };
        }
        let written = self.ledger.settlement(&arrangement.id);
        if written.is_none_or(|e| e.statement && settlement_of(&e) != ours) {
            self.write_settlement(arrangement, ours, true).await;
        }
        Response::Settled { settlement: ours }
    }

    /// As the peer: the account of `arrangement` from the receipts the primary handed us,
    /// where this node's own counts (which it knows first-hand) replace its receipt if that is
    /// behind: a final receipt that has not reached the primary yet is not forgotten.
    fn own_account(&self, arrangement: &Arrangement) -> Settlement {
        let id = arrangement.id;
        let from_receipts = self.ledger.account(id, arrangement.price_micros_per_gb);
        let local = (arrangement.usage.requests(), arrangement.usage.bytes());
        let handed = self
            .ledger
            .receipts(&id)
            .into_iter()
            .find(|(node, _)| *node == self.node_key)
            .map_or((0, 0), |(_, held)| (held.requests, held.bytes));
        with_own_counts(
            from_receipts,
            handed,
            local,
            arrangement.price_micros_per_gb,
        )
    }

    async fn write_settlement(
        &self,
        arrangement: Arc<Arrangement>,
        settlement: Settlement,
        agreed: bool,
    ) {
        let ledger = self.ledger.clone();
        let id = arrangement.id;
        match tokio::task::spawn_blocking(move || {
            ledger.settle(&arrangement, &settlement, unix_ms(), agreed)
        })
        .await
        {
            Ok(Ok(entry)) => info!(
                arrangement = %id, requests = entry.requests, bytes = entry.bytes,
                amount_micros = entry.amount_micros, agreed, "settled"
            ),
            Ok(Err(error)) => warn!(arrangement = %id, %error, "settlement not written"),
            Err(error) => warn!(arrangement = %id, %error, "writing the settlement panicked"),
        }
    }

    /// As the primary, once `id` has ended at `ended_at` (unix ms): waits (bounded) for
    /// every serving node's final receipt, writes the settlement, then hands the receipts and
    /// the settlement to the peer.
    pub(super) async fn settle(&self, id: ArrangementId, ended_at: u64) {
        let Some(arrangement) = self
            .arrangements
            .get(&id)
            .filter(|a| a.primary == self.own() && a.basis == Basis::ShortTerm)
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
        self.write_settlement(arrangement.clone(), settlement, false)
            .await;
        self.hand_over(&arrangement, settlement).await;
    }

    /// Gives the peer the receipts and our settlement of `arrangement`; whether it agreed
    /// (then the ledger says so).
    async fn hand_over(&self, arrangement: &Arrangement, settlement: Settlement) -> bool {
        let id = arrangement.id;
        if self.load.nodes_of(&arrangement.peer).is_empty() {
            // None of its nodes is alive: nobody to ask until one comes back.
            return false;
        }
        for target in self.peer_contacts(arrangement.counterpart, &arrangement.peer) {
            let mut reachable = true;
            for (_, held) in self.ledger.receipts(&id) {
                let request = Request::Usage {
                    sealed_receipt: held.sealed,
                };
                if let Err(why) = self.ask(target, &request).await {
                    debug!(arrangement = %id, %target, %why, "receipt not handed over");
                    reachable = false;
                    break;
                }
            }
            if !reachable {
                continue;
            }
            match self.ask(target, &Request::Settle { settlement }).await {
                Ok(Response::Settled { settlement: theirs }) if theirs == settlement => {
                    info!(arrangement = %id, "the peer agrees with the settlement");
                    let ledger = self.ledger.clone();
                    let marked = tokio::task::spawn_blocking(move || ledger.mark_agreed(&id)).await;
                    if !matches!(marked, Ok(Ok(()))) {
                        warn!(arrangement = %id, "agreement not recorded; will ask again");
                    }
                    return true;
                }
                Ok(other) => {
                    warn!(arrangement = %id, %target, ?other, "the peer disagrees with the settlement")
                }
                Err(why) => debug!(arrangement = %id, %target, %why, "the peer did not settle"),
            }
        }
        false
    }

    /// Whom to ask on `peer`'s side: the agent we negotiated with, then its live nodes in the
    /// order their own mediator role passes.
    fn peer_contacts(&self, counterpart: Option<PeerId>, peer: &ProviderId) -> Vec<PeerId> {
        let mut out: Vec<PeerId> = counterpart.into_iter().collect();
        for node in succession(&self.load.nodes_of(peer)) {
            if out.len() > PEER_NODES_TRIED {
                break;
            }
            if !out.contains(&node) {
                out.push(node);
            }
        }
        out
    }

    /// Hands over, every [`SETTLE_RETRY_EVERY`], the settlements the peer has not agreed to
    /// yet, and settles arrangements that ended without one (a restart in between).
    pub fn spawn_settler(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SETTLE_RETRY_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is immediate; give a running settlement its time first.
            tick.tick().await;
            loop {
                tick.tick().await;
                this.settle_overdue().await;
            }
        })
    }

    async fn settle_overdue(&self) {
        let own = self.own();
        let now = unix_ms();
        for entry in self.ledger.unagreed() {
            if entry.primary != *own.as_bytes()
                || now.saturating_sub(entry.written_at_ms) > GIVE_UP_AFTER_MS
            {
                continue;
            }
            let id = ArrangementId::from_bytes(entry.id);
            let Some(arrangement) = self.arrangements.get(&id) else {
                continue;
            };
            // Until the peer agrees, ours is provisional: a final receipt that came late
            // (its node was unreachable at the end) still counts.
            let mut settlement = settlement_of(&entry);
            let current = self.ledger.account(id, arrangement.price_micros_per_gb);
            if current != settlement {
                info!(arrangement = %id, ?current, "late receipts; settlement updated");
                self.write_settlement(arrangement.clone(), current, false)
                    .await;
                settlement = current;
            }
            self.hand_over(&arrangement, settlement).await;
        }
        self.state_long_term(now).await;
        // Ended before the last stop, never settled: the receipts held are all there is.
        for arrangement in self.arrangements.ended_unsettled_as_primary(&self.ledger) {
            let ended_at = arrangement.ended_at_ms.unwrap_or(0);
            if now.saturating_sub(ended_at) < 2 * RECEIPT_EVERY.as_millis() as u64 {
                // Its own settlement is still waiting for the final receipts.
                continue;
            }
            self.settle(arrangement.id, 0).await;
        }
    }
}

/// `account` (from receipts, among them ours at `handed` (requests, bytes)) with our own
/// node's counts as it knows them, `local`, where they are ahead.
fn with_own_counts(
    account: Settlement,
    handed: (u64, u64),
    local: (u64, u64),
    price_micros_per_gb: u64,
) -> Settlement {
    if local.0 <= handed.0 && local.1 <= handed.1 {
        return account;
    }
    let swap =
        |total: u64, was: u64, now: u64| total.saturating_sub(was).saturating_add(now.max(was));
    Settlement::compute(
        account.id,
        swap(account.requests, handed.0, local.0),
        swap(account.bytes, handed.1, local.1),
        price_micros_per_gb,
    )
}

impl Agent {
    /// As the primary's mediator node (where the peer's nodes send their receipts): writes a
    /// statement of each long-term arrangement every [`Policy::statement_every`], when its
    /// figures changed, and hands it to the peer like a settlement.
    async fn state_long_term(&self, now: u64) {
        let own = self.own();
        if succession(&self.load.nodes_of(&own)).first() != Some(&self.overlay.local_peer_id()) {
            return;
        }
        let every = self.policy.statement_every.as_millis() as u64;
        for arrangement in self.arrangements.active_as_primary() {
            if arrangement.basis != Basis::LongTerm {
                continue;
            }
            let account = self
                .ledger
                .account(arrangement.id, arrangement.price_micros_per_gb);
            let due = match self.ledger.settlement(&arrangement.id) {
                Some(last) => {
                    now.saturating_sub(last.written_at_ms) >= every
                        && settlement_of(&last) != account
                }
                None => account.requests > 0 || account.bytes > 0,
            };
            if due {
                self.write_settlement(arrangement.clone(), account, false)
                    .await;
                self.hand_over(&arrangement, account).await;
            }
        }
    }
}

fn settlement_of(entry: &Entry) -> Settlement {
    Settlement {
        id: ArrangementId::from_bytes(entry.id),
        requests: entry.requests,
        bytes: entry.bytes,
        amount_micros: entry.amount_micros,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_counts_what_its_own_node_served_even_before_the_primary_has_its_receipt() {
        let id = ArrangementId::from_bytes([1; 16]);
        // Two nodes' receipts: ours said 10 requests / 1000 bytes, another node 5 / 500.
        let account = Settlement::compute(id, 15, 1500, 1_000_000_000);
        assert_eq!(
            with_own_counts(account, (10, 1000), (10, 1000), 1_000_000_000),
            account
        );
        // We served more since: our final receipt has not reached the primary.
        let ahead = with_own_counts(account, (10, 1000), (12, 1400), 1_000_000_000);
        assert_eq!(
            (ahead.requests, ahead.bytes, ahead.amount_micros),
            (17, 1900, 1900)
        );
        // No receipt of ours at all.
        let missing = with_own_counts(Settlement::compute(id, 5, 500, 0), (0, 0), (3, 300), 0);
        assert_eq!((missing.requests, missing.bytes), (8, 800));
    }
}
