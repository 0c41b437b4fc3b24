//! Arrangement notices on gossip: how both providers' nodes learn of an agreement and of its
//! end, whether or not they run an agent.

use std::sync::Arc;

use reef_overlay::{Acceptance, GossipMessage};
use reef_proto::peering::{NOTICE_TOPIC, Notice, decode_notice, encode};
use reef_proto::records::{ArrangementEnd, open, open_agreement};
use tokio::sync::mpsc;
use tracing::{debug, info};

use super::warm;
use crate::peering::{Arrangement, Arrangements};
use crate::provider::unix_ms;
use crate::services::Services;

/// Publishes `notice` on [`NOTICE_TOPIC`]; a notice nobody hears is only logged (the other
/// party's agent learns by request-response too).
pub async fn announce(overlay: &reef_overlay::Client, notice: &Notice) {
    let bytes = match encode(notice) {
        Ok(bytes) => bytes,
        Err(error) => {
            debug!(%error, "arrangement notice does not encode");
            return;
        }
    };
    if let Err(error) = overlay.publish(NOTICE_TOPIC, bytes).await {
        debug!(%error, "arrangement notice not published");
    }
}

/// Every node (agent or not) keeps its arrangements in step with [`NOTICE_TOPIC`].
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
    let Ok(notice) = decode_notice(data) else {
        return Acceptance::Reject;
    };
    let now = unix_ms();
    match notice {
        Notice::Agreed(agreement) => match open_agreement(&agreement, now) {
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
        Notice::Ended { sealed_end } => {
            let end = match open::<ArrangementEnd>(&sealed_end, now) {
                Ok(opened) => opened.into_record(),
                Err(e) if e.reason() == "expired" => return Acceptance::Ignore,
                Err(_) => return Acceptance::Reject,
            };
            // Signed by `end.party`; it ends the arrangement only if that is a party to it.
            // Others' nodes, who do not know it, pass it on.
            match arrangements.get(&end.id) {
                Some(a) if end.party != a.primary && end.party != a.peer => Acceptance::Reject,
                Some(_) => {
                    if arrangements.end(&end.id, end.reason) {
                        info!(arrangement = %end.id, reason = end.reason.label(), "arrangement ended (notice)");
                    }
                    Acceptance::Accept
                }
                None => Acceptance::Accept,
            }
        }
    }
}
