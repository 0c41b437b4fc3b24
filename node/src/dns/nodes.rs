//! The nodes the DNS server may answer with, kept off the query path.
//!
//! A background task ([`spawn_refresher`]) rebuilds a [`Snapshot`] every
//! [`SNAPSHOT_EVERY`]: the nodes the load table lists for our provider and for the peers of our
//! active arrangements, joined with each node's address and region from its NodeRecord. The
//! records come from `overlay.node_record`, which may take a DHT lookup; the task keeps them
//! in a bounded book, looks up at most [`MAX_LOOKUPS`] at a time, refreshes them every
//! [`RECORD_REFRESH`] and forgets nodes unlisted for [`FORGET_AFTER`]. A query only reads the
//! current snapshot (one `Arc` clone under a read lock) and never waits on the network.
//!
//! Each candidate carries the instant its load-table listing ends, so a node that stops
//! reporting leaves answers on time even between two snapshots.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use reef_overlay::PeerId;
use reef_proto::records::ProviderId;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tracing::debug;

use super::select::Candidate;
use crate::load::{Listed, Load};
use crate::peering::Arrangements;

/// Load reports arrive once a second; four rebuilds a second show a new node or a new figure
/// within a quarter second of its report, for a few microseconds of work each.
pub const SNAPSHOT_EVERY: Duration = Duration::from_millis(250);
/// NodeRecord lookups in flight: enough to learn a few dozen new nodes within a second or two
/// without crowding the overlay's command queue.
pub const MAX_LOOKUPS: usize = 8;
/// A node's address changes only when it restarts elsewhere; a minute bounds how long we
/// would keep answering the old one.
pub const RECORD_REFRESH: Duration = Duration::from_secs(60);
/// A node without a usable record (not published yet, or an address no client can reach) is
/// asked for again after this long.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);
/// Nodes unlisted for this long are forgotten (a node back after a short outage is answered
/// again at once).
pub const FORGET_AFTER: Duration = Duration::from_secs(600);
/// Records kept: as many nodes as the load table holds.
pub const MAX_BOOK: usize = crate::load::table::MAX_NODES;

/// The nodes answers may name, per provider.
#[derive(Debug, Default)]
pub struct Snapshot {
    by_provider: HashMap<ProviderId, Vec<Candidate>>,
}

impl Snapshot {
    pub fn new(by_provider: HashMap<ProviderId, Vec<Candidate>>) -> Self {
        Self { by_provider }
    }

    /// The candidates of `provider`, in no particular order.
    pub fn of(&self, provider: &ProviderId) -> &[Candidate] {
        self.by_provider.get(provider).map_or(&[], Vec::as_slice)
    }
}

/// The current snapshot, shared by the refresher (writer) and the query path (readers).
#[derive(Debug, Default)]
pub struct Nodes {
    current: RwLock<Arc<Snapshot>>,
}

impl Nodes {
    pub fn current(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn replace(&self, snapshot: Snapshot) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(snapshot);
    }
}

/// What the book knows of one node.
#[derive(Debug, Clone)]
enum Known {
    Usable {
        addr: IpAddr,
        region: Arc<str>,
        provider: ProviderId,
        fetched: Instant,
    },
    Unusable {
        retry_at: Instant,
    },
}

#[derive(Debug, Clone)]
struct Page {
    known: Known,
    last_listed: Instant,
}

/// A lookup's result: the node's address, region and provider, or nothing usable.
type Found = Option<(IpAddr, Arc<str>, ProviderId)>;

/// The nodes' records as far as we know them, bounded by [`MAX_BOOK`].
#[derive(Debug, Default)]
struct Book {
    pages: HashMap<PeerId, Page>,
}

impl Book {
    /// Whether `peer`'s record should be looked up (again) at `now`.
    fn due(&self, peer: &PeerId, now: Instant) -> bool {
        match self.pages.get(peer).map(|p| &p.known) {
            None => true,
            Some(Known::Usable { fetched, .. }) => now.duration_since(*fetched) >= RECORD_REFRESH,
            Some(Known::Unusable { retry_at }) => now >= *retry_at,
        }
    }

    /// The candidate `listed` makes with what we know of its record, if that is usable and
    /// names the same provider its load reports do; notes it as listed at `now`.
    fn candidate(&mut self, listed: &Listed, now: Instant) -> Option<Candidate> {
        let page = self.pages.get_mut(&listed.peer)?;
        page.last_listed = now;
        match &page.known {
            Known::Usable {
                addr,
                region,
                provider,
                ..
            } if *provider == listed.provider => Some(Candidate {
                peer: listed.peer,
                addr: *addr,
                region: region.clone(),
                utilisation_permille: listed.utilisation_permille,
                until: listed.until,
            }),
            _ => None,
        }
    }

    /// Takes a lookup's result. A failed refresh keeps the address we had, due again after
    /// [`RETRY_AFTER`]; a node never found is asked for again after that long.
    fn learn(&mut self, peer: PeerId, found: Found, now: Instant) {
        let known = match (found, self.pages.get(&peer).map(|p| &p.known)) {
            (Some((addr, region, provider)), _) => Known::Usable {
                addr,
                region,
                provider,
                fetched: now,
            },
            (
                None,
                Some(Known::Usable {
                    addr,
                    region,
                    provider,
                    ..
                }),
            ) => Known::Usable {
                addr: *addr,
                region: region.clone(),
                provider: *provider,
                fetched: now.checked_sub(RECORD_REFRESH - RETRY_AFTER).unwrap_or(now),
            },
            (None, _) => Known::Unusable {
                retry_at: now + RETRY_AFTER,
            },
        };
        if self.pages.len() >= MAX_BOOK && !self.pages.contains_key(&peer) {
            return;
        }
        self.pages.insert(
            peer,
            Page {
                known,
                last_listed: now,
            },
        );
    }

    /// Drops pages of nodes unlisted for [`FORGET_AFTER`].
    fn forget(&mut self, now: Instant) {
        self.pages
            .retain(|_, page| now.duration_since(page.last_listed) < FORGET_AFTER);
    }
}

/// What the refresher reads.
pub struct Sources {
    pub load: Load,
    pub overlay: reef_overlay::Client,
    pub arrangements: Arc<Arrangements>,
    /// Our provider.
    pub own: ProviderId,
    /// Our services: arrangements covering them bring their peers' nodes in.
    pub services: Vec<String>,
}

/// Keeps `nodes` current until aborted.
pub fn spawn_refresher(sources: Sources, nodes: Arc<Nodes>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut book = Book::default();
        let mut lookups = FuturesUnordered::new();
        // Peers whose lookup is in flight, so none is asked for twice at once.
        let mut asked: HashSet<PeerId> = HashSet::new();
        let mut tick = tokio::time::interval(SNAPSHOT_EVERY);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let now = Instant::now();
                    let providers = providers(&sources);
                    let mut by_provider: HashMap<ProviderId, Vec<Candidate>> = HashMap::new();
                    for listed in sources.load.listed() {
                        if !providers.contains(&listed.provider) {
                            continue;
                        }
                        if book.due(&listed.peer, now)
                            && lookups.len() < MAX_LOOKUPS
                            && asked.insert(listed.peer)
                        {
                            let (overlay, peer) = (sources.overlay.clone(), listed.peer);
                            lookups.push(async move { (peer, look_up(&overlay, peer).await) });
                        }
                        if let Some(candidate) = book.candidate(&listed, now) {
                            by_provider.entry(listed.provider).or_default().push(candidate);
                        }
                    }
                    nodes.replace(Snapshot::new(by_provider));
                    book.forget(now);
                }
                Some((peer, found)) = lookups.next(), if !lookups.is_empty() => {
                    asked.remove(&peer);
                    book.learn(peer, found, Instant::now());
                }
            }
        }
    })
}

/// Our provider and the peer of every active arrangement covering one of our services.
fn providers(sources: &Sources) -> HashSet<ProviderId> {
    let mut out: HashSet<ProviderId> = sources
        .services
        .iter()
        .filter_map(|host| sources.arrangements.primary_for(host))
        .map(|a| a.peer)
        .collect();
    out.insert(sources.own);
    out
}

/// The node's address (the IP of its HTTP edge), region and provider from its verified
/// NodeRecord; `None` if it has none, or its HTTP address is a name or unspecified.
async fn look_up(overlay: &reef_overlay::Client, peer: PeerId) -> Found {
    let info = match overlay.node_record(peer).await {
        Ok(Some(info)) => info,
        Ok(None) => {
            debug!(%peer, "no node record yet");
            return None;
        }
        Err(error) => {
            debug!(%peer, %error, "node record lookup failed");
            return None;
        }
    };
    let addr = info
        .record
        .http
        .parse::<SocketAddr>()
        .ok()
        .map(|a| a.ip().to_canonical())
        .filter(|ip| !ip.is_unspecified());
    let Some(addr) = addr else {
        debug!(%peer, http = %info.record.http, "node's HTTP address is not an address clients can use");
        return None;
    };
    Some((
        addr,
        Arc::from(info.record.region.as_str()),
        info.membership.provider(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(seed: u8) -> PeerId {
        let key = reef_proto::records::SigningKey::from_bytes(&[seed; 32]);
        PeerId::from_bytes(&reef_proto::records::peer_id_bytes(
            &key.verifying_key().to_bytes(),
        ))
        .unwrap()
    }

    fn provider(seed: u8) -> ProviderId {
        reef_proto::records::ProviderKey::from_bytes(&[seed; 32]).id()
    }

    fn listed(p: PeerId, of: ProviderId, now: Instant) -> Listed {
        Listed {
            peer: p,
            provider: of,
            utilisation_permille: 250,
            demand_permille: 250,
            req_per_s: 10,
            until: now + Duration::from_secs(5),
        }
    }

    #[test]
    fn the_book_keeps_addresses_through_failed_refreshes_and_forgets_old_nodes() {
        let now = Instant::now();
        let (a, acme) = (peer(1), provider(9));
        let mut book = Book::default();
        assert!(book.due(&a, now));
        assert!(book.candidate(&listed(a, acme, now), now).is_none());

        // Not found: asked again only after RETRY_AFTER.
        book.learn(a, None, now);
        assert!(!book.due(&a, now + RETRY_AFTER / 2));
        assert!(book.due(&a, now + RETRY_AFTER));

        // Found: a candidate with the listing's load and deadline, refreshed each minute.
        let addr: IpAddr = "127.0.0.10".parse().unwrap();
        book.learn(a, Some((addr, Arc::from("eu"), acme)), now);
        let c = book.candidate(&listed(a, acme, now), now).unwrap();
        assert_eq!(
            (c.addr, &*c.region, c.utilisation_permille),
            (addr, "eu", 250)
        );
        assert!(!book.due(&a, now + RECORD_REFRESH / 2));
        assert!(book.due(&a, now + RECORD_REFRESH));
        // A record that names another provider than its load reports: left out.
        assert!(book.candidate(&listed(a, provider(8), now), now).is_none());

        // A failed refresh keeps the address, due again after RETRY_AFTER.
        let later = now + RECORD_REFRESH;
        book.learn(a, None, later);
        assert!(book.candidate(&listed(a, acme, later), later).is_some());
        assert!(!book.due(&a, later));
        assert!(book.due(&a, later + RETRY_AFTER));

        // Unlisted for FORGET_AFTER: gone.
        book.forget(later + FORGET_AFTER);
        assert!(book.pages.is_empty());
    }
}
