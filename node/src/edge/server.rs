use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tracing::{Instrument, debug, debug_span, info, warn};

use super::Edge;

/// Open client connections at once; beyond this we stop accepting until one closes.
const MAX_CONNECTIONS: usize = 8192;
/// hyper's HTTP/1 read buffer: above our 16 KiB header limit so that we, not hyper, answer
/// 431 with a reason for headers between the two; larger ones get hyper's bare 431.
const HTTP1_MAX_BUF: usize = 64 * 1024;
/// Header lines per request: browsers send 10 to 30; hyper's default, named here so that more
/// gets hyper's 431 (tested) rather than a reset.
const HTTP1_MAX_HEADERS: usize = 100;
/// A connection over the per-client cap gets this and is closed: a status a client can
/// read rather than a bare reset. Written once to a fresh socket, so it never blocks.
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Length: 45\r\nConnection: close\r\n\r\n\
too many open connections from this address\r\n";
/// HTTP/2 header list limit, the same budget as for HTTP/1.
const H2_MAX_HEADER_LIST: u32 = 16 * 1024;
/// What an HTTP/2 connection starts with; hyper-util reads up to this much to choose between
/// HTTP/1 and HTTP/2.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// While a client's first bytes are a partial HTTP/2 preface, how often to look for more:
/// only such clients ever wait here, and only until the header timeout.
const PREFACE_POLL: Duration = Duration::from_millis(10);
/// On shutdown, in-flight responses get this long to finish.
const GRACE: Duration = Duration::from_secs(5);

/// Serves the edge on `listener` until `shutdown` turns true.
pub async fn serve(listener: TcpListener, edge: Arc<Edge>, mut shutdown: watch::Receiver<bool>) {
    let limits = edge.limits().clone();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper arms the header timeout when it starts reading a request head and again right
    // after each response: it bounds slow headers and idle keep-alive connections. Before
    // hyper reads anything, `first_bytes` bounds the wait for a first byte (tests/e2e/abuse.rs).
    builder
        .http1()
        .max_buf_size(HTTP1_MAX_BUF)
        .max_headers(HTTP1_MAX_HEADERS)
        .timer(TokioTimer::new())
        .header_read_timeout(limits.settings().header_read_timeout);
    builder
        .http2()
        .max_header_list_size(H2_MAX_HEADER_LIST)
        .timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let header_timeout = limits.settings().header_read_timeout;
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let Some(slot) = limits.admit_connection(client.ip()) else {
            debug!(%client, "refused: the address holds its share of connections");
            let _ = stream.try_write(TOO_MANY_CONNECTIONS);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let edge = edge.clone();
        let limits = limits.clone();
        let service = service_fn(move |req| {
            let edge = edge.clone();
            async move { Ok::<_, std::convert::Infallible>(edge.handle(req, client).await) }
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let mut stopping = shutdown.clone();
        tokio::spawn(
            async move {
                let first = tokio::select! {
                    first = first_bytes(&stream, header_timeout) => first,
                    _ = stopping.changed() => First::Closed,
                };
                match first {
                    First::Ready => {}
                    First::Closed => return,
                    First::TimedOut => {
                        debug!("no request within the header timeout");
                        limits.rejected("header_timeout");
                        return;
                    }
                }
                let conn = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .into_owned();
                if let Err(e) = watcher.watch(conn).await {
                    debug!(error = %e, "connection ended with an error");
                    limits.connection_failed(&*e);
                }
                drop(slot);
                drop(permit);
            }
            .instrument(debug_span!("conn", %client)),
        );
    }
    info!("edge stops accepting; letting in-flight requests finish");
    if tokio::time::timeout(GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("some requests were still running after {GRACE:?}; dropping them");
    }
}

/// How a connection's first bytes came.
enum First {
    Ready,
    Closed,
    TimedOut,
}

/// Waits until the client has sent enough for hyper-util to tell HTTP/1 from HTTP/2: it reads
/// that without a timeout of its own, so a connection that never sends a byte (or trickles an
/// HTTP/2 preface) would otherwise stay open for good. hyper's header timeout takes over from
/// there.
async fn first_bytes(stream: &TcpStream, timeout: Duration) -> First {
    let wait = async {
        let mut buf = [0u8; H2_PREFACE.len()];
        loop {
            match stream.peek(&mut buf).await {
                Ok(0) | Err(_) => return First::Closed,
                Ok(n) if n == H2_PREFACE.len() || buf[..n] != H2_PREFACE[..n] => {
                    return First::Ready;
                }
                Ok(_) => tokio::time::sleep(PREFACE_POLL).await,
            }
        }
    };
    tokio::time::timeout(timeout, wait)
        .await
        .unwrap_or(First::TimedOut)
}
