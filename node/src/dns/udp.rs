//! DNS over UDP: a few workers share one socket; each receives a datagram, answers it in place
//! (the responder never waits) and sends the answer back. No task per datagram, so a flood
//! costs a fixed amount of memory and the kernel's socket buffer is the only queue.

use std::sync::Arc;
use std::time::Duration;

use hickory_server::net::xfer::Protocol;
use tokio::net::UdpSocket;
use tracing::debug;

use super::respond::Responder;
use super::stats::Stats;

/// Largest query we read: real queries are a few hundred bytes (a name, an OPT record, a
/// cookie); a longer datagram is cut here, fails to parse and gets FORMERR.
pub const MAX_QUERY: usize = 4096;
/// Pause after a receive error, so a socket that keeps failing cannot spin a core.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// Answers queries on `socket` until aborted.
pub async fn serve(socket: Arc<UdpSocket>, responder: Arc<Responder>) {
    let stats = responder.stats();
    let mut buf = vec![0u8; MAX_QUERY];
    loop {
        let (len, src) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(error) => {
                debug!(%error, "DNS UDP receive failed");
                tokio::time::sleep(ERROR_PAUSE).await;
                continue;
            }
        };
        if src.port() == 0 {
            // Nowhere to answer to.
            Stats::bump(&stats.dropped);
            continue;
        }
        let Some(answer) = responder.respond(&buf[..len], src, Protocol::Udp) else {
            continue;
        };
        if let Err(error) = socket.send_to(&answer, src).await {
            debug!(%error, %src, "DNS UDP answer not sent");
        }
    }
}
