//! DNS over TCP (RFC 7766): resolvers come here when a UDP answer was truncated. Each message
//! is a 2-byte length and the message; we answer queries on a connection one after another.
//!
//! Limits: at most [`MAX_CONNECTIONS`] at once (more are closed on accept and counted); a
//! connection idle for [`IDLE_TIMEOUT`] is closed; a message must arrive within
//! [`READ_TIMEOUT`] of its length and be at most [`MAX_QUERY`] bytes; an answer must be taken
//! within [`WRITE_TIMEOUT`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::net::xfer::Protocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tracing::debug;

use super::respond::Responder;
use super::stats::Stats;

/// Connections served at once: TCP is the fallback for truncated answers, which ours rarely
/// are; 256 resolvers at once is far beyond that, and each costs one small task.
pub const MAX_CONNECTIONS: usize = 256;
/// RFC 7766 asks servers to close idle connections after seconds, not minutes.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// A query is a few hundred bytes: once its length has arrived, the rest follows at once.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A client that does not take its answer in this long is gone or hostile.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest query accepted, as over UDP; a longer one closes the connection.
pub const MAX_QUERY: usize = super::udp::MAX_QUERY;
/// Pause after an accept error (out of file descriptors), so the loop cannot spin.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Accepts and serves connections until aborted (which ends every connection with it).
pub async fn serve(listener: TcpListener, responder: Arc<Responder>) {
    let stats = responder.stats();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        Stats::bump(&stats.tcp_rejected);
                        drop(stream);
                        continue;
                    };
                    Stats::bump(&stats.tcp_connections);
                    connections.spawn(connection(stream, peer, responder.clone(), slot));
                }
                Err(error) => {
                    debug!(%error, "DNS TCP accept failed");
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    responder: Arc<Responder>,
    _slot: OwnedSemaphorePermit,
) {
    let stats = responder.stats();
    let mut buf = vec![0u8; MAX_QUERY];
    loop {
        let mut len = [0u8; 2];
        match timeout(IDLE_TIMEOUT, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            // Closed, reset or idle: all the same to us.
            _ => return,
        }
        let len = usize::from(u16::from_be_bytes(len));
        if len == 0 || len > MAX_QUERY {
            Stats::bump(&stats.dropped);
            debug!(%peer, len, "DNS TCP message of a length we do not read; closing");
            return;
        }
        match timeout(READ_TIMEOUT, stream.read_exact(&mut buf[..len])).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let Some(answer) = responder.respond(&buf[..len], peer, Protocol::Tcp) else {
            continue;
        };
        // The encoder keeps answers within 65535 bytes.
        let Ok(answer_len) = u16::try_from(answer.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(2 + answer.len());
        framed.extend_from_slice(&answer_len.to_be_bytes());
        framed.extend_from_slice(&answer);
        match timeout(WRITE_TIMEOUT, stream.write_all(&framed)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
}
