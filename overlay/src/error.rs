//! The one error type of the overlay's public API.

use libp2p::Multiaddr;

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
    /// Gossip refused the operation (message too large, duplicate, topic not allowed, a
    /// second subscriber for a topic...).
    #[error("gossip: {0}")]
    Gossip(String),
}
