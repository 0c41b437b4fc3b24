//! `/reef/goodbye/1`: how a node closes a connection it no longer needs without looking dead.
//!
//! A connection that ends by an I/O error marks the peer as broken (`broken.rs`): it leaves
//! the routing table and the redirector stops sending users to it. A graceful close looks
//! the same as a crash from the other end (yamux and QUIC both report the stream ended), so
//! before pruning a connection the node asks first. The request is one byte; the answer is
//! one byte, [`Answer::Leave`] (the peer will not count the close as a break) or
//! [`Answer::Stay`] (the peer is short of connections and wants this one kept).

use std::io;
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{StreamProtocol, request_response};

pub(crate) const GOODBYE_PROTOCOL: StreamProtocol = StreamProtocol::new("/reef/goodbye/1");
/// A peer that has not answered by then is closed on anyway: it is hung or gone.
pub(crate) const GOODBYE_TIMEOUT: Duration = Duration::from_secs(5);
/// One exchange per connection at a time is all a pruner ever sends.
pub(crate) const MAX_GOODBYE_STREAMS: usize = 2;

/// The only request.
const GOODBYE: u8 = 1;

/// The answer to a goodbye.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Close it; the close will not count as a break.
    Leave = 1,
    /// Keep it: this node is short of connections.
    Stay = 2,
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct GoodbyeCodec;

async fn read_byte<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<u8> {
    let mut byte = [0u8; 1];
    io.read_exact(&mut byte).await?;
    Ok(byte[0])
}

async fn write_byte<T: AsyncWrite + Unpin + Send>(io: &mut T, byte: u8) -> io::Result<()> {
    io.write_all(&[byte]).await?;
    io.flush().await
}

fn invalid(what: &str, byte: u8) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{what} byte {byte}"))
}

impl request_response::Codec for GoodbyeCodec {
    type Protocol = StreamProtocol;
    type Request = ();
    type Response = Answer;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<()>
    where
        T: AsyncRead + Unpin + Send,
    {
        match read_byte(io).await? {
            GOODBYE => Ok(()),
            other => Err(invalid("unknown goodbye", other)),
        }
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Answer>
    where
        T: AsyncRead + Unpin + Send,
    {
        match read_byte(io).await? {
            b if b == Answer::Leave as u8 => Ok(Answer::Leave),
            b if b == Answer::Stay as u8 => Ok(Answer::Stay),
            other => Err(invalid("unknown answer", other)),
        }
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, (): ()) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_byte(io, GOODBYE).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        answer: Answer,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_byte(io, answer as u8).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use futures::executor::block_on;
    use futures::io::Cursor;
    use libp2p::request_response::Codec;

    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let mut wire = Cursor::new(Vec::new());
        block_on(GoodbyeCodec.write_request(&GOODBYE_PROTOCOL, &mut wire, ())).unwrap();
        let wire = wire.into_inner();
        assert_eq!(wire, [GOODBYE]);
        block_on(GoodbyeCodec.read_request(&GOODBYE_PROTOCOL, &mut Cursor::new(wire))).unwrap();
        for answer in [Answer::Leave, Answer::Stay] {
            let mut wire = Cursor::new(Vec::new());
            block_on(GoodbyeCodec.write_response(&GOODBYE_PROTOCOL, &mut wire, answer)).unwrap();
            let read = block_on(
                GoodbyeCodec.read_response(&GOODBYE_PROTOCOL, &mut Cursor::new(wire.into_inner())),
            );
            assert_eq!(read.unwrap(), answer);
        }
        for wire in [vec![], vec![0], vec![9]] {
            let request = block_on(
                GoodbyeCodec.read_request(&GOODBYE_PROTOCOL, &mut Cursor::new(wire.clone())),
            );
            assert!(request.is_err());
            let answer =
                block_on(GoodbyeCodec.read_response(&GOODBYE_PROTOCOL, &mut Cursor::new(wire)));
            assert!(answer.is_err());
        }
    }
}
