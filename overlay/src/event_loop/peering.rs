//! `/reef/peering/1` in the loop: outbound requests answered from their events, inbound ones
//! handed to the node's inbox, and the node's responses passed back to libp2p.
//!
//! Nothing here waits: a full table refuses a request at once, a full (or missing) inbox drops
//! the inbound request (counted), and responses come back through oneshots the loop polls
//! alongside the swarm.

use std::collections::HashMap;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use libp2p::{
    PeerId,
    request_response::{
        self, InboundFailure, InboundRequestId, OutboundFailure, OutboundRequestId, ResponseChannel,
    },
};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, debug_span};

use super::EventLoop;
use crate::Error;
use crate::peering::{
    self, InboundPeering, MAX_AWAITING_RESPONSE, MAX_PENDING_PEERING, PEERING_INBOX, PeeringStats,
    Responder,
};

/// What a pending inbound request resolves to: the node's response (`None`: it dropped its
/// [`Responder`], or did not answer in time) and the channel to send it on.
pub(super) type AwaitedResponse = (
    PeerId,
    InboundRequestId,
    Option<Vec<u8>>,
    ResponseChannel<Vec<u8>>,
);

/// The loop's peering state; every table is bounded by a const in [`crate::peering`].
pub(super) struct Peering {
    /// How long the node has to answer an inbound request (libp2p gives up on the stream then).
    timeout: Duration,
    /// Our requests awaiting their response (at most `MAX_PENDING_PEERING`).
    pending: HashMap<OutboundRequestId, oneshot::Sender<Result<Vec<u8>, Error>>>,
    /// Where inbound requests go, once the node has taken the inbox.
    inbox: Option<mpsc::Sender<InboundPeering>>,
    /// Inbound requests handed to the node, until it answers (at most
    /// `MAX_AWAITING_RESPONSE`); each resolves within `timeout`.
    pub(super) awaiting: FuturesUnordered<BoxFuture<'static, AwaitedResponse>>,
    pub(super) stats: PeeringStats,
}

impl Peering {
    pub(super) fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            pending: HashMap::new(),
            inbox: None,
            awaiting: FuturesUnordered::new(),
            stats: PeeringStats::default(),
        }
    }
}

impl EventLoop {
    pub(super) fn peering_request(
        &mut self,
        peer: PeerId,
        request: Vec<u8>,
        reply: oneshot::Sender<Result<Vec<u8>, Error>>,
    ) {
        let peering = &mut self.peering;
        if peering.pending.len() >= MAX_PENDING_PEERING {
            // Callers that gave up leave their entry until the response or failure arrives.
            peering.pending.retain(|_, reply| !reply.is_closed());
        }
        if peering.pending.len() >= MAX_PENDING_PEERING {
            debug!(%peer, "too many peering requests in flight");
            peering.stats.requests_failed += 1;
            let _ = reply.send(Err(Error::Busy));
            return;
        }
        let len = request.len();
        let id = self
            .swarm
            .behaviour_mut()
            .peering
            .send_request(&peer, request);
        let _span = debug_span!("peering_out", %peer, request = %id).entered();
        debug!(len, "peering request sent");
        self.peering.stats.requests_sent += 1;
        self.peering.stats.bytes_sent += len as u64;
        self.peering.pending.insert(id, reply);
    }

    pub(super) fn peering_inbox(&mut self) -> Result<mpsc::Receiver<InboundPeering>, Error> {
        if self
            .peering
            .inbox
            .as_ref()
            .is_some_and(|tx| !tx.is_closed())
        {
            return Err(Error::PeeringInboxTaken);
        }
        let (tx, rx) = mpsc::channel(PEERING_INBOX);
        self.peering.inbox = Some(tx);
        Ok(rx)
    }

    /// Drops the entries of callers that stopped waiting (timed out, or went away).
    pub(super) fn sweep_peering(&mut self) {
        self.peering.pending.retain(|_, reply| !reply.is_closed());
    }

    pub(super) fn on_peering_event(
        &mut self,
        event: request_response::Event<Vec<u8>, Vec<u8>, Vec<u8>>,
    ) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                let _span = debug_span!("peering_out", %peer, request = %request_id).entered();
                debug!(len = response.len(), "peering response received");
                self.peering.stats.bytes_received += response.len() as u64;
                if let Some(reply) = self.peering.pending.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
            }
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request_id,
                        request,
                        channel,
                    },
                ..
            } => self.on_peering_request(peer, request_id, request, channel),
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                let _span = debug_span!("peering_out", %peer, request = %request_id).entered();
                debug!(%error, "peering request failed");
                self.peering.stats.requests_failed += 1;
                if let Some(reply) = self.peering.pending.remove(&request_id) {
                    let _ = reply.send(Err(outbound_error(error)));
                }
            }
            request_response::Event::InboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                let _span = debug_span!("peering_in", %peer, request = %request_id).entered();
                match error {
                    // Ours to count: a dropped request, already counted, or an unanswered one.
                    InboundFailure::ResponseOmission => debug!("peering request not answered"),
                    error => debug!(%error, "peering request from a peer failed"),
                }
            }
            request_response::Event::ResponseSent {
                peer, request_id, ..
            } => {
                let _span = debug_span!("peering_in", %peer, request = %request_id).entered();
                debug!("peering response sent");
            }
        }
    }

    /// Hands a peer's request to the inbox, or drops it (the peer's request fails at once).
    fn on_peering_request(
        &mut self,
        peer: PeerId,
        request_id: InboundRequestId,
        request: Vec<u8>,
        channel: ResponseChannel<Vec<u8>>,
    ) {
        let _span = debug_span!("peering_in", %peer, request = %request_id).entered();
        let peering = &mut self.peering;
        let Some(inbox) = peering.inbox.as_ref() else {
            debug!("no peering inbox; request dropped");
            peering.stats.requests_dropped += 1;
            return;
        };
        if peering.awaiting.len() >= MAX_AWAITING_RESPONSE {
            debug!("too many peering requests awaiting a response; request dropped");
            peering.stats.requests_dropped += 1;
            return;
        }
        let (tx, rx) = oneshot::channel();
        let len = request.len();
        let delivered = InboundPeering {
            peer,
            request,
            reply: Responder { tx },
        };
        match inbox.try_send(delivered) {
            Ok(()) => {
                debug!(len, "peering request received");
                peering.stats.requests_received += 1;
                peering.stats.bytes_received += len as u64;
                let timeout = peering.timeout;
                peering.awaiting.push(
                    async move {
                        let response = tokio::time::timeout(timeout, rx)
                            .await
                            .ok()
                            .and_then(Result::ok);
                        (peer, request_id, response, channel)
                    }
                    .boxed(),
                );
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                debug!("peering inbox full; request dropped");
                peering.stats.requests_dropped += 1;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                debug!("peering inbox gone; request dropped");
                peering.inbox = None;
                peering.stats.requests_dropped += 1;
            }
        }
    }

    /// The node answered a peer's request (or gave up on it): pass the response to libp2p.
    pub(super) fn on_peering_response(&mut self, awaited: AwaitedResponse) {
        let (peer, request_id, response, channel) = awaited;
        let _span = debug_span!("peering_in", %peer, request = %request_id).entered();
        let Some(response) = response else {
            // Dropping the channel fails the peer's request at once.
            debug!("peering request dropped unanswered");
            return;
        };
        self.peering.stats.bytes_sent += response.len() as u64;
        if self
            .swarm
            .behaviour_mut()
            .peering
            .send_response(channel, response)
            .is_err()
        {
            debug!("peering response too late: the stream is gone");
        }
    }
}

/// Our typed error for a failed outbound request.
fn outbound_error(error: OutboundFailure) -> Error {
    match error {
        OutboundFailure::DialFailure => Error::Unreachable,
        OutboundFailure::Timeout => Error::Timeout,
        OutboundFailure::ConnectionClosed => Error::ConnectionClosed,
        OutboundFailure::UnsupportedProtocols => Error::Unsupported,
        OutboundFailure::Io(error) => match peering::too_large(&error) {
            Some(len) => Error::TooLarge {
                len,
                max: peering::MAX_PEERING_MESSAGE,
            },
            None => Error::PeeringFailed(error.to_string()),
        },
    }
}
