//! DNS request routing: an authoritative nameserver for the provider's CDN zone
//! (`reef run --dns ADDR`, `[dns]` in the config), UDP and TCP on one port.
//!
//! `<service>.<zone>` (a service of our provider by its hostname: `video.example.cdn.example`)
//! answers A/AAAA records of the best nodes for the asking client: listed in the load table
//! (reported within 5 s), under the high watermark, the client's region first (from its EDNS
//! Client Subnet or the resolver's address, mapped by `[[dns.regions]]`), least loaded; under
//! an active arrangement covering the service, the peer provider's nodes lead its agreed share
//! of the answers. The apex answers SOA and NS; other names in the zone NXDOMAIN (or NODATA
//! between names); anything malformed FORMERR. The TTL is short (`ttl_s`, 20 s).
//!
//! What it owns, file by file:
//! - [`settings`]: `[dns]` and `--dns`, checked;
//! - [`zone`]: the zone's names and fixed records (SOA, NS, glue);
//! - [`regions`]: client subnet → region;
//! - [`nodes`]: the snapshot of answerable nodes, rebuilt off the query path from the load
//!   table and the nodes' records;
//! - [`select`]: which nodes go into one answer (pure);
//! - [`respond`]: one message in, one answer out, via hickory-server's message types;
//! - [`udp`], [`tcp`]: the transports, each with its limits;
//! - [`stats`]: counters for `/api/status` → `dns`.
//!
//! hickory-server's own `Server` spawns a task per UDP message and accepts TCP connections
//! without a cap; our transports use a fixed set of UDP workers and a bounded number of TCP
//! connections with timeouts, and share hickory's parser and encoder.

pub mod nodes;
pub mod regions;
pub mod respond;
pub mod select;
pub mod settings;
pub mod stats;
pub mod tcp;
pub mod udp;
pub mod zone;

#[cfg(test)]
mod transport_tests;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use reef_proto::records::ProviderId;
use serde::Serialize;
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;
use tracing::info;

use crate::load::Load;
use crate::peering::Arrangements;
pub use settings::{DnsFile, Settings};
pub use stats::Counts;

/// Tries at a port the kernel picks (`--dns IP:0`) before giving up: UDP is bound first and
/// TCP then needs the same port free, which it almost always is.
const BIND_ATTEMPTS: usize = 16;
/// UDP workers at most; past the machine's cores more only contend for the socket.
const MAX_UDP_WORKERS: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The settings cannot make a zone: the operator's to fix.
    #[error("[dns]: {0}")]
    Zone(#[from] zone::ZoneError),
    #[error("cannot listen for DNS on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
}

/// What the DNS server needs from the rest of the node.
pub struct Parts {
    pub settings: Settings,
    /// Where to listen (`--dns`).
    pub listen: SocketAddr,
    /// Our provider and our own services (hostnames): the zone's names.
    pub own: ProviderId,
    pub services: Vec<String>,
    /// This node's region: the client's when no region rule places it.
    pub region: String,
    pub high_watermark_permille: u16,
    pub load: Load,
    pub overlay: reef_overlay::Client,
    pub arrangements: Arc<Arrangements>,
}

/// A running DNS server; [`Dns::stop`] ends it.
pub struct Dns {
    handle: Handle,
    tasks: Vec<JoinHandle<()>>,
}

/// What the admin API shows of the DNS server.
#[derive(Clone)]
pub struct Handle {
    addr: SocketAddr,
    zone: String,
    stats: Arc<stats::Stats>,
}

/// `/api/status` → `dns`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The bound address (UDP and TCP).
    pub addr: SocketAddr,
    pub zone: String,
    #[serde(flatten)]
    pub counts: Counts,
}

impl Handle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn status(&self) -> Status {
        Status {
            addr: self.addr,
            zone: self.zone.clone(),
            counts: self.stats.counts(),
        }
    }
}

/// Checks, before the node starts anything, that `settings` with our `services` make a zone
/// (when a DNS server is asked for at all).
pub fn check<'a>(
    settings: &Settings,
    services: impl IntoIterator<Item = &'a str>,
) -> Result<(), zone::ZoneError> {
    match settings.listen {
        Some(listen) => zone::Zone::new(settings, services, listen, 0).map(drop),
        None => Ok(()),
    }
}

/// Binds `parts.listen` (UDP and TCP, one port), builds the zone and starts answering.
pub async fn start(parts: Parts) -> Result<Dns, Error> {
    // A zone is needed whatever the address; say so before binding anything.
    if parts.settings.zone.is_none() {
        return Err(zone::ZoneError::NoZone.into());
    }
    let (udp, tcp) = bind(parts.listen).await?;
    let addr = udp.local_addr().map_err(|source| Error::Bind {
        addr: parts.listen,
        source,
    })?;
    let serial = u32::try_from(crate::provider::unix_ms() / 1000 % (1 << 32)).unwrap_or(1);
    let zone = zone::Zone::new(
        &parts.settings,
        parts.services.iter().map(String::as_str),
        addr,
        serial,
    )?;
    let zone_name = zone.apex().to_ascii();
    let services = zone.services().map(str::to_string).collect();
    let nodes = Arc::new(nodes::Nodes::default());
    let responder = Arc::new(respond::Responder::new(respond::Parts {
        zone,
        own: parts.own,
        region: parts.region,
        regions: parts.settings.regions.clone(),
        answers: parts.settings.answers,
        high_watermark_permille: parts.high_watermark_permille,
        arrangements: parts.arrangements.clone(),
        nodes: nodes.clone(),
    }));
    let mut tasks = vec![nodes::spawn_refresher(
        nodes::Sources {
            load: parts.load,
            overlay: parts.overlay,
            arrangements: parts.arrangements,
            own: parts.own,
            services,
        },
        nodes,
    )];
    let udp = Arc::new(udp);
    let workers = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(MAX_UDP_WORKERS);
    for _ in 0..workers {
        tasks.push(tokio::spawn(udp::serve(udp.clone(), responder.clone())));
    }
    tasks.push(tokio::spawn(tcp::serve(tcp, responder.clone())));
    info!(%addr, zone = %zone_name, udp_workers = workers, "DNS server ready");
    Ok(Dns {
        handle: Handle {
            addr,
            zone: zone_name,
            stats: responder.stats(),
        },
        tasks,
    })
}

impl Dns {
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Stops answering; open TCP connections end with their task set.
    pub fn stop(self) {
        for task in self.tasks {
            task.abort();
        }
    }
}

/// UDP and TCP on the same address; with port 0, a port free for both.
async fn bind(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), Error> {
    let attempts = if addr.port() == 0 { BIND_ATTEMPTS } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let udp = UdpSocket::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        let bound = udp
            .local_addr()
            .map_err(|source| Error::Bind { addr, source })?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if attempts > 1 && e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
            Err(source) => {
                return Err(Error::Bind {
                    addr: bound,
                    source,
                });
            }
        }
    }
    Err(Error::Bind {
        addr,
        source: last.unwrap_or_else(|| io::Error::other("no port free for both UDP and TCP")),
    })
}
