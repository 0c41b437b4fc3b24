//! Usage receipts: every node that serves under an arrangement as the peer tells the primary
//! what it has served, in cumulative receipts signed by its own key and carrying its provider
//! certificate, so the primary can bill what the peer's nodes vouch for.
//!
//! They go to the primary's mediator (the lowest peer id among the primary's live nodes in
//! the load table, as in the mediator's election), else the next one. A receipt is sent only
//! when the counts changed since the last acknowledged one, plus once more after the
//! arrangement ends, so the primary settles on the final counts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use reef_proto::peering::{Request, Response, decode_response, encode};
use reef_proto::records::{ArrangementId, ProviderId, UsageReceipt, seal};
use tracing::debug;

use super::{Arrangements, Status};
use crate::load::Load;
use crate::provider::unix_ms;

/// How often a serving node reports its usage.
pub const RECEIPT_EVERY: Duration = Duration::from_secs(5);
/// How long after an arrangement ends its final receipt is still tried.
const FINAL_WINDOW: Duration = Duration::from_secs(30);
/// Primary nodes tried per receipt: the mediator, then its successor.
const MEDIATOR_CANDIDATES: usize = 2;
/// A receipt is valid this long; the primary settles within seconds of the last one.
const RECEIPT_LIFETIME_MS: u64 = 60 * 60 * 1000;

pub struct Sender {
    pub arrangements: Arc<Arrangements>,
    pub load: Load,
    pub overlay: reef_overlay::Client,
    pub own: ProviderId,
    pub key: SigningKey,
    pub cert: Option<Vec<u8>>,
}

/// Where one arrangement's receipts stand; one per arrangement in the (bounded) registry.
#[derive(Default)]
struct Track {
    acked: (u64, u64),
    seq: u64,
    ended_seen: Option<Instant>,
    final_acked: bool,
}

impl Sender {
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RECEIPT_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut tracks: HashMap<ArrangementId, Track> = HashMap::new();
            loop {
                tick.tick().await;
                self.step(&mut tracks).await;
            }
        })
    }

    async fn step(&self, tracks: &mut HashMap<ArrangementId, Track>) {
        let serving = self.arrangements.as_peer();
        tracks.retain(|id, _| serving.iter().any(|a| a.id == *id));
        for a in serving {
            let track = tracks.entry(a.id).or_default();
            let ended = a.status == Status::Ended;
            if ended {
                let seen = *track.ended_seen.get_or_insert_with(Instant::now);
                if track.final_acked || seen.elapsed() > FINAL_WINDOW {
                    continue;
                }
            }
            let counts = (a.usage.requests(), a.usage.bytes());
            if counts == (0, 0) || (counts == track.acked && !ended) {
                continue;
            }
            // Unix ms keeps it increasing across restarts without storing it.
            let seq = unix_ms().max(track.seq + 1);
            let receipt = UsageReceipt {
                arrangement: a.id,
                node: self.key.verifying_key().to_bytes(),
                seq,
                requests: counts.0,
                bytes: counts.1,
                cert: self.cert.clone(),
            };
            let now = unix_ms();
            let sealed = match seal(&self.key, &receipt, now, now + RECEIPT_LIFETIME_MS) {
                Ok(s) => s,
                Err(error) => {
                    debug!(arrangement = %a.id, %error, "receipt does not seal");
                    continue;
                }
            };
            track.seq = seq;
            if self.send(&a.primary, sealed, a.id, seq).await {
                track.acked = counts;
                track.final_acked = ended;
            }
        }
    }

    /// Tries the primary's mediator, then the next; whether one acknowledged `seq`.
    async fn send(
        &self,
        primary: &ProviderId,
        sealed: Vec<u8>,
        id: ArrangementId,
        seq: u64,
    ) -> bool {
        let Ok(request) = encode(&Request::Usage {
            sealed_receipt: sealed,
        }) else {
            return false;
        };
        let nodes = super::mediator::succession(&self.load.nodes_of(primary));
        for node in nodes.into_iter().take(MEDIATOR_CANDIDATES) {
            match self.overlay.peering_request(node, request.clone()).await {
                Ok(bytes) => match decode_response(&bytes) {
                    Ok(Response::Ack(ack)) if ack.arrangement == id && ack.seq >= seq => {
                        return true;
                    }
                    other => debug!(arrangement = %id, %node, ?other, "receipt not acked"),
                },
                Err(error) => debug!(arrangement = %id, %node, %error, "receipt not sent"),
            }
        }
        false
    }
}
