//! `/reef/peering/1`: a request-response protocol carrying opaque bytes between two nodes.
//!
//! The node runs peering negotiation, usage receipts and settlements over it and encodes the
//! messages itself; the overlay only moves bytes. One request, one response, each a frame of
//! a 4-byte big-endian length and at most [`MAX_PEERING_MESSAGE`] bytes. A frame announcing
//! more is refused before anything is allocated for it, and every exchange (stream opened,
//! request written, response read) must finish within the request timeout.

use std::io;
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{PeerId, StreamProtocol, request_response};
use serde::Serialize;
use tokio::sync::oneshot;

use crate::Error;

/// The protocol name; a node that does not speak it takes no part in peering.
pub(crate) const PEERING_PROTOCOL: StreamProtocol = StreamProtocol::new("/reef/peering/1");
/// Largest request or response. Negotiation messages, receipts and settlements are a few
/// hundred bytes to a few KiB; 64 KiB leaves room for batched receipts while bounding what one
/// stream can make us buffer.
pub const MAX_PEERING_MESSAGE: usize = 64 * 1024;
/// Default time one exchange may take once connected ([`crate::Config::peering_timeout`]). A
/// negotiation step must fail fast so that the node moves on to its next candidate.
pub const PEERING_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Peering streams (inbound and outbound together) open at once on one connection. Peering
/// talks to one peer a step at a time; beyond this a peer is flooding us, and its excess
/// inbound streams are dropped by libp2p.
pub(crate) const MAX_PEERING_STREAMS: usize = 16;
/// Inbound requests queued for the node, not yet taken from the inbox; when full, new requests
/// are dropped (the remote sees its stream fail) and counted.
pub(crate) const PEERING_INBOX: usize = 256;
/// Outbound requests awaiting their response; beyond this callers get [`Error::Busy`] at
/// once rather than waiting behind a backlog.
pub(crate) const MAX_PENDING_PEERING: usize = 256;
/// Inbound requests handed to the node whose response the loop still awaits (those in the
/// inbox plus those being worked on); beyond this new ones are dropped and counted.
pub(crate) const MAX_AWAITING_RESPONSE: usize = 2 * PEERING_INBOX;

/// The frame length prefix.
const LEN_BYTES: usize = 4;

/// One request received from a peer, to be answered through [`InboundPeering::reply`].
#[derive(Debug)]
pub struct InboundPeering {
    /// The peer that sent it (authenticated by the connection's noise/TLS handshake).
    pub peer: PeerId,
    pub request: Vec<u8>,
    /// Sends the response; dropping it fails the remote's request at once.
    pub reply: Responder,
}

/// Hands the response to an [`InboundPeering`] back to the event loop, without waiting.
#[derive(Debug)]
pub struct Responder {
    pub(crate) tx: oneshot::Sender<Vec<u8>>,
}

impl Responder {
    /// Sends `bytes` as the response. [`Error::TooLarge`] if over [`MAX_PEERING_MESSAGE`]
    /// (the remote's request then fails); [`Error::Timeout`] if the request is no longer
    /// waiting (its timeout passed, or the overlay stopped).
    pub fn send(self, bytes: Vec<u8>) -> Result<(), Error> {
        check_len(bytes.len())?;
        self.tx.send(bytes).map_err(|_| Error::Timeout)
    }
}

/// Peering counters since start, for the admin API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PeeringStats {
    /// Requests we sent out.
    pub requests_sent: u64,
    /// Requests of ours that got no response (timeout, unreachable peer, refused, too many in
    /// flight...).
    pub requests_failed: u64,
    /// Requests from peers handed to the node's inbox.
    pub requests_received: u64,
    /// Requests from peers dropped unseen: no inbox taken, inbox full, or too many awaiting
    /// their response.
    pub requests_dropped: u64,
    /// Message bytes (requests and responses, without the 4-byte frame) sent and received.
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

/// `Err(TooLarge)` unless `len` fits in one frame.
pub(crate) fn check_len(len: usize) -> Result<(), Error> {
    if len > MAX_PEERING_MESSAGE {
        return Err(Error::TooLarge {
            len,
            max: MAX_PEERING_MESSAGE,
        });
    }
    Ok(())
}

/// A frame over the cap, as the codec reports it inside an [`io::Error`] (so that the event
/// loop can tell it apart from other stream failures).
#[derive(Debug, thiserror::Error)]
#[error("peering frame of {len} bytes exceeds {MAX_PEERING_MESSAGE}")]
pub(crate) struct FrameTooLarge {
    pub(crate) len: usize,
}

/// The length `Err(TooLarge)` names, if `error` is one.
pub(crate) fn too_large(error: &io::Error) -> Option<usize> {
    error
        .get_ref()
        .and_then(|e| e.downcast_ref::<FrameTooLarge>())
        .map(|e| e.len)
}

/// Length-prefixed opaque frames, both ways.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PeeringCodec;

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    let mut prefix = [0u8; LEN_BYTES];
    io.read_exact(&mut prefix).await?;
    let len = usize::try_from(u32::from_be_bytes(prefix)).unwrap_or(usize::MAX);
    if len > MAX_PEERING_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            FrameTooLarge { len },
        ));
    }
    // `len` is at most the cap, and `take` stops reading there whatever the peer sends.
    let mut frame = Vec::with_capacity(len);
    io.take(len as u64).read_to_end(&mut frame).await?;
    if frame.len() != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("peering frame truncated: {} of {len} bytes", frame.len()),
        ));
    }
    Ok(frame)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, frame: &[u8]) -> io::Result<()> {
    let len = u32::try_from(frame.len())
        .ok()
        .filter(|_| frame.len() <= MAX_PEERING_MESSAGE)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                FrameTooLarge { len: frame.len() },
            )
        })?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(frame).await?;
    io.flush().await
}

impl request_response::Codec for PeeringCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &request).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &response).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use futures::executor::block_on;
    use futures::io::Cursor;
    use libp2p::request_response::Codec;

    use super::*;

    fn encode(payload: &[u8]) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        block_on(PeeringCodec.write_request(&PEERING_PROTOCOL, &mut out, payload.to_vec()))
            .unwrap();
        out.into_inner()
    }

    fn decode(wire: Vec<u8>) -> io::Result<Vec<u8>> {
        block_on(PeeringCodec.read_response(&PEERING_PROTOCOL, &mut Cursor::new(wire)))
    }

    #[test]
    fn round_trip() {
        for payload in [Vec::new(), b"hello".to_vec(), vec![7; MAX_PEERING_MESSAGE]] {
            let wire = encode(&payload);
            assert_eq!(wire.len(), LEN_BYTES + payload.len());
            assert_eq!(wire[..4], (payload.len() as u32).to_be_bytes());
            assert_eq!(decode(wire).unwrap(), payload);
        }
        // Requests and responses share the framing.
        let mut out = Cursor::new(Vec::new());
        block_on(PeeringCodec.write_response(&PEERING_PROTOCOL, &mut out, b"r".to_vec())).unwrap();
        let read = block_on(
            PeeringCodec.read_request(&PEERING_PROTOCOL, &mut Cursor::new(out.into_inner())),
        );
        assert_eq!(read.unwrap(), b"r");
    }

    #[test]
    fn over_cap_frames_are_refused_both_ways() {
        let mut out = Cursor::new(Vec::new());
        let error = block_on(PeeringCodec.write_request(
            &PEERING_PROTOCOL,
            &mut out,
            vec![0; MAX_PEERING_MESSAGE + 1],
        ))
        .unwrap_err();
        assert_eq!(too_large(&error), Some(MAX_PEERING_MESSAGE + 1));
        assert!(out.into_inner().is_empty(), "nothing written");

        // A header announcing more than the cap is refused before its body is read, however
        // much follows (here: nothing, and 4 GiB announced).
        for len in [MAX_PEERING_MESSAGE as u32 + 1, u32::MAX] {
            let error = decode(len.to_be_bytes().to_vec()).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidData);
            assert_eq!(too_large(&error), Some(len as usize));
        }
    }

    #[test]
    fn truncated_frames_are_refused() {
        let mut wire = encode(b"hello");
        wire.pop();
        let error = decode(wire).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(too_large(&error), None);
        // A short header too.
        let error = decode(vec![0, 0]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
        // Bytes after the frame are not read into it.
        let mut wire = encode(b"abc");
        wire.extend_from_slice(b"trailing");
        assert_eq!(decode(wire).unwrap(), b"abc");
    }

    #[test]
    fn responder_refuses_oversized_responses() {
        let (tx, rx) = oneshot::channel();
        let error = Responder { tx }
            .send(vec![0; MAX_PEERING_MESSAGE + 1])
            .unwrap_err();
        assert!(matches!(error, Error::TooLarge { .. }), "{error:?}");
        drop(rx);
        let (tx, rx) = oneshot::channel();
        drop(rx);
        assert!(matches!(
            Responder { tx }.send(vec![1]),
            Err(Error::Timeout)
        ));
    }
}
