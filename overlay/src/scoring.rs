//! Gossipsub peer scoring: what a peer's messages cost it.
//!
//! Every message on a topic with a subscriber is judged by that subscriber
//! ([`crate::Client::report`]); a `Reject` counts as an invalid delivery (P4) against the peer
//! that relayed it, and gossipsub's own checks (bad message signatures) count the same way.
//! The penalty is the square of the (decaying) count, so one bad message costs little and a
//! stream of them shuts the peer out:
//!
//! | invalid deliveries | score | effect |
//! |---|---|---|
//! | 1 | −10 | down to the gossip threshold |
//! | 2 | −40 | below it: no gossip (IHAVE/IWANT) with the peer, but still published to |
//! | 3 | −90 | below the graylist threshold: everything it sends is ignored |
//!
//! The count decays to a tenth in [`INVALID_DECAY_TIME`], so a peer that once relayed a bad
//! message (a clock far off, a certificate that expired in flight) recovers on its own.
//!
//! Honest nodes must never get there, so every component that can punish an honest peer on a
//! small or quiet overlay is off or blunted:
//! - mesh message deliveries (P3, P3b) are off: reports are flood-published, so mesh peers
//!   rarely deliver a message first, and purge notices are rare; P3 would punish everyone.
//! - IP colocation (P6) is off: a testnet runs every node on one host, and a provider may run
//!   several nodes behind one address. Provider certificates, not addresses, are what make
//!   identities costly.
//! - behaviour penalties (P7: GRAFT during backoff, IHAVE promises not kept) only count beyond
//!   a few, since a loaded node can break a promise now and then.
//!
//! Positive components (time in mesh, first deliveries) are small and capped, so a peer cannot
//! bank credit to spend on misbehaviour later.

use std::time::Duration;

use libp2p::gossipsub::{
    PeerScoreParams, PeerScoreThresholds, TopicScoreParams, score_parameter_decay,
};

/// Below this a peer gets no gossip (IHAVE/IWANT) from us: more than one invalid message.
pub const GOSSIP_THRESHOLD: f64 = -10.0;
/// Below this we do not flood-publish to the peer.
pub const PUBLISH_THRESHOLD: f64 = -50.0;
/// Below this everything the peer sends is ignored: three invalid messages in a short while.
pub const GRAYLIST_THRESHOLD: f64 = -80.0;
/// Weight of P4: score = weight × count².
const INVALID_MESSAGE_WEIGHT: f64 = -10.0;
/// The invalid-message count falls to a tenth over this long: a peer that relayed one bad
/// message is back in good standing within minutes.
pub const INVALID_DECAY_TIME: Duration = Duration::from_secs(5 * 60);
/// Positive topic contributions are capped at this (summed over topics): never enough to
/// offset even one invalid message.
const TOPIC_SCORE_CAP: f64 = 5.0;
/// Behaviour penalties count only beyond this many (decaying) incidents.
const BEHAVIOUR_PENALTY_THRESHOLD: f64 = 6.0;

/// The overlay's scoring parameters and thresholds; topics get theirs with [`topic`].
pub(crate) fn peer_score() -> (PeerScoreParams, PeerScoreThresholds) {
    let params = PeerScoreParams {
        topic_score_cap: TOPIC_SCORE_CAP,
        // We set no application score.
        app_specific_weight: 0.0,
        ip_colocation_factor_weight: 0.0,
        behaviour_penalty_weight: -1.0,
        behaviour_penalty_threshold: BEHAVIOUR_PENALTY_THRESHOLD,
        behaviour_penalty_decay: score_parameter_decay(Duration::from_secs(60)),
        ..PeerScoreParams::default()
    };
    let thresholds = PeerScoreThresholds {
        gossip_threshold: GOSSIP_THRESHOLD,
        publish_threshold: PUBLISH_THRESHOLD,
        graylist_threshold: GRAYLIST_THRESHOLD,
        // Peer exchange is off; no peer's PX is trusted.
        accept_px_threshold: 100.0,
        // Honest mesh peers reach about +1 within a minute; a mesh whose median is below
        // half of that is poor, and gossipsub grafts better-scoring peers into it.
        opportunistic_graft_threshold: 0.5,
    };
    (params, thresholds)
}

/// Score parameters of every topic we subscribe to (load reports, purge notices,
/// withdrawals): invalid deliveries cost, mesh delivery rates do not.
pub(crate) fn topic() -> TopicScoreParams {
    TopicScoreParams {
        topic_weight: 1.0,
        // P1: up to +1 after a minute in the mesh.
        time_in_mesh_weight: 1.0 / 60.0,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 60.0,
        // P2: up to +1 for being first with messages.
        first_message_deliveries_weight: 0.1,
        first_message_deliveries_decay: score_parameter_decay(Duration::from_secs(60)),
        first_message_deliveries_cap: 10.0,
        // P3, P3b: off (see the module docs).
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        // P4.
        invalid_message_deliveries_weight: INVALID_MESSAGE_WEIGHT,
        invalid_message_deliveries_decay: score_parameter_decay(INVALID_DECAY_TIME),
        ..TopicScoreParams::default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_valid() {
        let (params, thresholds) = peer_score();
        params.validate().unwrap();
        thresholds.validate().unwrap();
        topic().validate().unwrap();
    }

    /// The table in the module docs.
    #[test]
    fn three_invalid_messages_graylist_a_peer_and_one_does_not() {
        let score = |count: f64| INVALID_MESSAGE_WEIGHT * count * count;
        assert!(score(1.0) >= GOSSIP_THRESHOLD);
        assert!(score(2.0) < GOSSIP_THRESHOLD && score(2.0) > PUBLISH_THRESHOLD);
        assert!(score(3.0) < GRAYLIST_THRESHOLD);
        // The most an honest peer can earn does not outweigh one invalid message.
        assert!(TOPIC_SCORE_CAP + score(1.0) < 0.0);
        let t = topic();
        let positive = t.time_in_mesh_weight * t.time_in_mesh_cap
            + t.first_message_deliveries_weight * t.first_message_deliveries_cap;
        assert!(positive <= 2.0);
    }
}
