use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tracing::{Instrument, debug, debug_span, info, warn};

use super::Edge;

/// Open client connections at once; beyond this we stop accepting until one closes.
const MAX_CONNECTIONS: usize = 8192;
/// hyper's HTTP/1 read buffer: above our 16 KiB header limit so that we, not hyper, answer
/// 431 with a reason for headers between the two; larger ones get hyper's bare 431.
const HTTP1_MAX_BUF: usize = 64 * 1024;
/// A client that has not finished sending its headers by then is dropped (slow-header abuse).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 header list limit, the same budget as for HTTP/1.
const H2_MAX_HEADER_LIST: u32 = 16 * 1024;
/// On shutdown, in-flight responses get this long to finish.
const GRACE: Duration = Duration::from_secs(5);

/// Serves the edge on `listener` until `shutdown` turns true.
pub async fn serve(listener: TcpListener, edge: Arc<Edge>, mut shutdown: watch::Receiver<bool>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .max_buf_size(HTTP1_MAX_BUF)
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder
        .http2()
        .max_header_list_size(H2_MAX_HEADER_LIST)
        .timer(TokioTimer::new());
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
        let _ = stream.set_nodelay(true);
        let edge = edge.clone();
        let service = service_fn(move |req| {
            let edge = edge.clone();
            async move { Ok::<_, std::convert::Infallible>(edge.handle(req, client).await) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(
            async move {
                if let Err(e) = conn.await {
                    debug!(error = %e, "connection ended with an error");
                }
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
