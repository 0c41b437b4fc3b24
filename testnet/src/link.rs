//! A network link of limited bandwidth in front of one server: a TCP relay on its own
//! address whose two directions each pass at most `bytes_per_s`, shared by the connections
//! sending in turns of one small chunk each (like TCP flows through a host's access link),
//! counting what crosses it.
//!
//! The flash-crowd experiment puts one in front of every node (advertised with
//! `--public-http`, so clients, redirects and peers all cross it) and one in front of the
//! origin, so that "capacity" is a physical limit a surge can exhaust, not only a number in a
//! load report.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::debug;

use crate::Error;

/// Connections a link carries at once; more wait for one to close.
const MAX_CONNECTIONS: usize = 4096;
/// Bytes moved per turn: small, so that a short answer (a redirect) waits for one chunk of
/// each other sender, not for whole bodies.
const CHUNK: usize = 4 * 1024;
/// A connection with nothing to move either way for this long is closed.
const IDLE: Duration = Duration::from_secs(60);
/// How long a connection waits for the server behind the link to be known.
const TARGET_WAIT: Duration = Duration::from_secs(30);

/// How long `len` bytes occupy a link of `rate` bytes a second.
fn transmission(len: usize, rate: u64) -> Duration {
    Duration::from_secs_f64(len as f64 / rate.max(1) as f64)
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
    /// When the link has sent every chunk handed to it so far. Each chunk takes the next
    /// turn after it (first come, first served); as every connection hands over one chunk
    /// at a time, the connections sending take turns, and the link as a whole never passes
    /// more than `rate`, nor idles while someone waits.
    busy_until: Mutex<Instant>,
    bytes: AtomicU64,
}

impl Direction {
    fn new(rate: u64) -> Direction {
        Direction {
            rate,
            busy_until: Mutex::new(Instant::now()),
            bytes: AtomicU64::new(0),
        }
    }

    /// The instant `len` bytes handed over now have crossed the link.
    fn take_turn(&self, len: usize) -> Instant {
        let mut busy_until = self
            .busy_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let done = (*busy_until).max(Instant::now()) + transmission(len, self.rate);
        *busy_until = done;
        done
    }

    /// Sends `chunk` to `to` once it has crossed the link.
    async fn send(&self, chunk: &[u8], to: &mut OwnedWriteHalf) -> std::io::Result<()> {
        tokio::time::sleep_until(self.take_turn(chunk.len())).await;
        to.write_all(chunk).await?;
        self.bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        Ok(())
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
    // A client that closes its side has gone (ours never half-close): whatever the server
    // still sends would only take others' turns, so the connection ends both ways.
    tokio::select! {
        sent = pipe(client_read, server_write, up) => sent,
        received = pipe(server_read, client_write, down) => received,
    }
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

    #[tokio::test]
    async fn senders_take_turns_and_an_idle_link_sends_at_once() {
        let link = Direction::new(100_000);
        let before = Instant::now();
        // 100 kB at 100 kB/s: a second; a chunk handed over meanwhile waits its turn.
        let first = link.take_turn(100_000);
        assert!(first >= before + Duration::from_secs(1));
        assert_eq!(link.take_turn(200), first + Duration::from_millis(2));
        // Idle time is not saved up for a burst.
        let link = Direction::new(1_000_000);
        link.take_turn(1000);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = Instant::now();
        assert!(link.take_turn(1000) >= now + Duration::from_millis(1));
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
