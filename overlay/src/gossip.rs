//! The gossip surface of the overlay: what a subscriber receives and how it says whether a
//! message may travel on.
//!
//! Every message is signed by the node that published it (gossipsub's strict mode), so
//! [`GossipMessage::source`] is authenticated. A message is forwarded to other peers only after
//! the subscriber judged it: it must call [`crate::Client::report`] with the message's
//! [`MessageHandle`]; a message nobody reports on within a few heartbeats (~5 s) leaves
//! gossipsub's cache and goes no further. That is the seam where later message types plug in
//! their checks and, through `Reject`, peer scoring.

use libp2p::{PeerId, gossipsub};

/// Messages queued per subscriber at most; a caller asking for more gets this many.
pub(crate) const MAX_SUBSCRIBER_QUEUE: usize = 1024;
/// Topics with a subscriber at once; Reef has a handful of message types.
pub(crate) const MAX_SUBSCRIPTIONS: usize = 16;

/// One message received on a subscribed topic.
#[derive(Debug)]
pub struct GossipMessage {
    /// The node that published it (verified signature; not necessarily the peer that relayed it).
    pub source: PeerId,
    pub topic: String,
    pub data: Vec<u8>,
    /// Pass to [`crate::Client::report`] once the message is judged.
    pub handle: MessageHandle,
}

/// Names a received message for [`crate::Client::report`].
#[derive(Debug, Clone)]
pub struct MessageHandle {
    pub(crate) id: gossipsub::MessageId,
    /// The peer it arrived from: never sent back there, and penalised for a `Reject`.
    pub(crate) from: PeerId,
    /// Its topic, for counting verdicts per topic.
    pub(crate) topic: gossipsub::TopicHash,
}

/// The verdict on a received message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acceptance {
    /// Well-formed and authorised: forward it to our other peers.
    Accept,
    /// Invalid (malformed, or its source may not say this): drop it and hold it against the
    /// peer that relayed it.
    Reject,
    /// Not for forwarding, but nobody's fault (e.g. we could not check it right now).
    Ignore,
}

impl From<Acceptance> for gossipsub::MessageAcceptance {
    fn from(a: Acceptance) -> Self {
        match a {
            Acceptance::Accept => Self::Accept,
            Acceptance::Reject => Self::Reject,
            Acceptance::Ignore => Self::Ignore,
        }
    }
}

/// What [`crate::Client::publish`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// Handed to every connected peer subscribed to the topic (gossipsub's flood publishing);
    /// they forward it on through the mesh.
    Sent,
    /// No connected peer is subscribed to the topic: nobody to tell. Not an error for a node
    /// alone, or one whose neighbours have not told us their subscriptions yet.
    NoPeers,
}
