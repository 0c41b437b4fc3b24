//! The one error type of the overlay's public API.

use libp2p::Multiaddr;
use reef_proto::records::RecordError;

/// What can go wrong when starting the overlay or talking to its event loop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The operation did not finish in time; retrying may help.
    #[error("overlay operation timed out")]
    Timeout,
    /// The event loop has ended (shutdown, or every handle was dropped); retrying will not help.
    #[error("the overlay event loop has stopped")]
    Stopped,
    /// A listen address could not be bound.
    #[error("cannot listen: {0}")]
    Listen(String),
    /// A bootstrap address that does not name the peer to expect there.
    #[error("bootstrap address {0} must end in /p2p/<peer id>")]
    BootstrapAddr(Multiaddr),
    /// The transport stack (TCP, QUIC, DNS) could not be set up.
    #[error("cannot set up the transport: {0}")]
    Transport(String),
    /// A network behaviour (gossipsub, mDNS, ...) could not be set up.
    #[error("cannot set up the network behaviour: {0}")]
    Behaviour(String),
    /// The local record store refused the record (e.g. too many provided keys).
    #[error("local record store: {0}")]
    Store(String),
    /// A DHT query failed.
    #[error("DHT query failed: {0}")]
    Query(String),
    /// Too many queries of this kind are in flight; retry later.
    #[error("too many overlay queries in flight")]
    Busy,
    /// The node key cannot sign records (not ed25519).
    #[error("node identity: {0}")]
    Identity(String),
    /// The provider certificate given for this node is not valid for it.
    #[error("provider certificate: {0}")]
    Cert(RecordError),
    /// A record (ours to publish, or found) fails validation: peers would reject it.
    #[error("{kind} record rejected: {error}")]
    Rejected {
        /// `Kind::label()`, or `unknown` for a key no record kind owns.
        kind: &'static str,
        error: RecordError,
    },
    /// Gossip refused the operation (message too large, duplicate, topic not allowed, a
    /// second subscriber for a topic...).
    #[error("gossip: {0}")]
    Gossip(String),
    /// A peering message over [`crate::MAX_PEERING_MESSAGE`] bytes: refused before sending
    /// (ours), or when its length prefix arrived (a peer's response).
    #[error("peering message of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    /// The peer could not be dialled: no known address, or none answered.
    #[error("cannot reach the peer")]
    Unreachable,
    /// The peer does not speak `/reef/peering/1`.
    #[error("the peer does not speak the peering protocol")]
    Unsupported,
    /// The connection closed before the peer's response arrived.
    #[error("the connection closed before the response arrived")]
    ConnectionClosed,
    /// The peering stream failed otherwise: reset, malformed frame, or the peer dropped the
    /// request unanswered (its inbox was full, or its node did not reply).
    #[error("peering request failed: {0}")]
    PeeringFailed(String),
    /// [`crate::Client::peering_inbox`] was called while an earlier inbox is still alive.
    #[error("the peering inbox is already taken")]
    PeeringInboxTaken,
}
