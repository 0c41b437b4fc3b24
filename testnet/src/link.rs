//! A network link of limited bandwidth in front of one server: a TCP relay on its own
//! address whose two directions each pass about `bytes_per_s`, shared fairly by the
//! connections sending (like TCP flows through a host's access link), counting what crosses
//! it.
//!
//! The flash-crowd experiment puts one in front of every node (advertised with
//! `--public-http`, so clients, redirects and peers all cross it) and one in front of the
//! origin, so that "capacity" is a physical limit a surge can exhaust, not only a number in a
//! load report.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tracing::debug;

use crate::Error;

/// Connections a link carries at once; more wait for one to close.
const MAX_CONNECTIONS: usize = 4096;
/// Bytes moved per read: small enough to share the link between connections finely.
const CHUNK: usize = 16 * 1024;
/// A connection with nothing to move either way for this long is closed.
const IDLE: Duration = Duration::from_secs(60);
/// How long a connection waits for the server behind the link to be known.
const TARGET_WAIT: Duration = Duration::from_secs(30);

/// One direction's capacity, shared fairly by the transfers under way: each chunk a
/// connection sends waits `len × active ÷ rate`, where `active` is how many of the link's
/// connections are sending at that moment. So, as TCP flows through one bottleneck do, every
/// flow gets its share: a 200-byte redirect is not queued behind megabytes of other bodies, and
/// the link as a whole passes about `rate`.
fn pace(len: usize, active: usize, rate: u64) -> Duration {
    Duration::from_secs_f64(len as f64 * active.max(1) as f64 / rate.max(1) as f64)
}

/// Bytes that crossed a link each way since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Crossed {
    /// From the client side to the server.
    pub up: u64,
    /// From the server to the client side.
    pub down: u64,
}

struct Direction {
    rate: u64,
    /// Connections sending this way right now.
    active: AtomicUsize,
    bytes: AtomicU64,
}

impl Direction {
    fn new(rate: u64) -> Direction {
        Direction {
            rate,
            active: AtomicUsize::new(0),
            bytes: AtomicU64::new(0),
        }
    }

    /// Sends `chunk` to `to` at this connection's share of the link.
    async fn send(&self, chunk: &[u8], to: &mut OwnedWriteHalf) -> std::io::Result<()> {
        let active = self.active.fetch_add(1, Ordering::Relaxed) + 1;
        tokio::time::sleep(pace(chunk.len(), active, self.rate)).await;
        let sent = to.write_all(chunk).await;
        self.active.fetch_sub(1, Ordering::Relaxed);
        self.bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        sent
    }
}

/// A running link; it stops, and drops its connections, when dropped.
pub struct Link {
    addr: SocketAddr,
    up: Arc<Direction>,
    down: Arc<Direction>,
    target: watch::Sender<Option<SocketAddr>>,
    task: JoinHandle<()>,
}

impl Link {
    /// A link listening on `listen` (port 0 picks one), `bytes_per_s` each way, to a server
    /// given later with [`Link::connect_to`] (connections wait for it).
    pub async fn start(listen: SocketAddr, bytes_per_s: u64) -> Result<Link, Error> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| Error::io(format!("binding a link to {listen}"), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("reading a link's address", e))?;
        let up = Arc::new(Direction::new(bytes_per_s));
        let down = Arc::new(Direction::new(bytes_per_s));
        let (target, target_rx) = watch::channel(None);
        let task = tokio::spawn(accept(listener, target_rx, up.clone(), down.clone()));
        Ok(Link {
            addr,
            up,
            down,
            target,
            task,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server behind the link.
    pub fn connect_to(&self, server: SocketAddr) {
        self.target.send_replace(Some(server));
    }

    pub fn crossed(&self) -> Crossed {
        Crossed {
            up: self.up.bytes.load(Ordering::Relaxed),
            down: self.down.bytes.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("addr", &self.addr)
            .field("crossed", &self.crossed())
            .finish()
    }
}

async fn accept(
    listener: TcpListener,
    target: watch::Receiver<Option<SocketAddr>>,
    up: Arc<Direction>,
    down: Arc<Direction>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(e) => {
                debug!(error = %e, "link accept failed");
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let (target, up, down) = (target.clone(), up.clone(), down.clone());
        connections.spawn(async move {
            if let Err(e) = relay(client, target, &up, &down).await {
                debug!(error = %e, "link connection ended");
            }
            drop(permit);
        });
    }
}

async fn relay(
    client: TcpStream,
    mut target: watch::Receiver<Option<SocketAddr>>,
    up: &Direction,
    down: &Direction,
) -> std::io::Result<()> {
    let known = async {
        target
            .wait_for(Option::is_some)
            .await
            .map(|server| *server)
            .map_err(|_| std::io::Error::other("link stopped"))
    };
    let Some(server) = tokio::time::timeout(TARGET_WAIT, known)
        .await
        .map_err(|_| std::io::Error::other("no server behind the link"))??
    else {
        return Err(std::io::Error::other("no server behind the link"));
    };
    let server = TcpStream::connect(server).await?;
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::try_join!(
        pipe(client_read, server_write, up),
        pipe(server_read, client_write, down),
    )?;
    Ok(())
}

async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    direction: &Direction,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match tokio::time::timeout(IDLE, from.read(&mut buf)).await {
            Ok(read) => read?,
            Err(_) => 0,
        };
        if n == 0 {
            let _ = to.shutdown().await;
            return Ok(());
        }
        direction.send(&buf[..n], &mut to).await?;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn each_sender_gets_its_share() {
        // Alone: 100 kB at 100 kB/s takes a second; with three others sending, four.
        assert_eq!(pace(100_000, 1, 100_000), Duration::from_secs(1));
        assert_eq!(pace(100_000, 4, 100_000), Duration::from_secs(4));
        // A redirect among 100 busy transfers on a 500 kB/s link: well under a second.
        assert!(pace(200, 100, 500_000) < Duration::from_millis(50));
    }

    #[tokio::test]
    async fn a_link_relays_at_its_rate() {
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server_addr = server.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = server.accept().await.unwrap();
            s.write_all(&vec![7u8; 200_000]).await.unwrap();
        });
        let link = Link::start("127.0.0.1:0".parse().unwrap(), 400_000)
            .await
            .unwrap();
        link.connect_to(server_addr);
        let started = std::time::Instant::now();
        let mut client = TcpStream::connect(link.addr()).await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), 200_000);
        // 200 kB at 400 kB/s: half a second.
        assert!(
            started.elapsed() > Duration::from_millis(300),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(link.crossed().down, 200_000);
    }
}
