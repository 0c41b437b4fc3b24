//! Load gossip: every node measures its own load, publishes it once a second as a signed
//! [`LoadReport`] on [`LOAD_TOPIC`], and keeps a table of every node's latest report, which
//! `GET /api/load` shows (and which redirection and peering will read).
//!
//! - [`meter`]: counters on the request path, turned into per-second rates;
//! - [`report`]: sealing our own report (node key, growing `seq`, 10 s lifetime);
//! - [`check`]: the verdict on a received report (reject and count what is invalid, ignore
//!   what is old, take what is newer);
//! - [`table`]: the bounded, expiring table;
//! - [`view`]: the table as the admin API shows it.
//!
//! One task ([`Load::start`]) does both the publishing, on a 1 s tick, and the judging of
//! received reports, so the overlay sees one subscriber that reports every verdict in order.
//! Our own report goes into our table as anyone else's would, so a node alone lists itself.

mod check;
pub mod meter;
mod report;
pub mod table;
pub mod view;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use reef_overlay::{GossipMessage, PeerId, Published};
use reef_proto::records::{LOAD_TOPIC, LoadReport, SigningKey, open};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tracing::{Instrument, debug, info_span, warn};

pub use check::Verdict;
pub use meter::{Busy, Meter, Rates};
pub use view::LoadView;

use meter::RateWindow;
use report::Reporter;
use table::{Now, Table};

/// Reports are published this often (the figure); tables drop a node after five
/// missed ones.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// A quiet node (demand under `QUIET_PERMILLE`, as in its last report) reports at most this
/// often: every node receives, checks and relays every report, so idle reports are most of an
/// idle overlay's CPU. Still well inside the tables' five-second expiry; the first busy second
/// is reported at once.
pub const QUIET_REPORT_INTERVAL: Duration = Duration::from_secs(2);
/// Quiet reports per second the whole overlay may send. Each costs every node a few
/// receptions, signature checks and relays (about 1 ms of CPU all told, measured on a
/// 30-node loopback testnet), so with every quiet node reporting every 2 s the idle cost per
/// node grew with the overlay's size, and 100 nodes overran two cores. Beyond 20 nodes a
/// quiet node stretches its interval (RTCP does the same for its receiver reports, RFC 3550
/// §6.2), and asks to be listed for 2.5 intervals; busy nodes still report every second.
const QUIET_REPORTS_PER_S: f64 = 10.0;
/// The longest quiet interval: a silent quiet node leaves the tables within 30 s at most
/// (`table::MAX_ENTRY_TTL`), at 120 nodes and beyond.
const MAX_QUIET_REPORT_INTERVAL: Duration = Duration::from_secs(12);

/// How often a quiet node reports when `listed` nodes are in its table.
fn quiet_interval(listed: usize) -> Duration {
    Duration::from_secs_f64(listed as f64 / QUIET_REPORTS_PER_S)
        .clamp(QUIET_REPORT_INTERVAL, MAX_QUIET_REPORT_INTERVAL)
}

/// How long a report sent every `interval` asks to be listed: two lost reports and a half
/// before a silent node is dropped, never less than [`table::ENTRY_TTL`].
fn listing_for(interval: Duration) -> Duration {
    (interval * 5 / 2).max(table::ENTRY_TTL)
}
/// Demand (permille of capacity) under which a node is quiet.
const QUIET_PERMILLE: u32 = 100;
/// Received reports waiting to be judged: every node sends one a second, so this absorbs a
/// burst from a thousand nodes; beyond it the overlay drops (and counts) them.
pub const REPORT_QUEUE: usize = 1024;

/// What the load service needs from the node's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Requests per second the node can serve.
    pub capacity_rps: u32,
    /// Egress the node can send, Mbit/s.
    pub capacity_mbps: u32,
    /// The node's sealed `ProviderCert`, carried in every report so that its load counts
    /// toward its provider. `None` until provider certificates are issued: the node is then
    /// its own provider.
    pub cert: Option<Vec<u8>>,
}

/// Demand at which a node is swamped: requests arrive at its full capacity or beyond.
pub const SWAMPED_DEMAND_PERMILLE: u16 = 1000;

/// This node's own latest figures. Utilisation and demand are not capped here (reports cap
/// them).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct OwnLoad {
    pub req_per_s: u32,
    pub egress_bytes_per_s: u64,
    pub utilisation_permille: u32,
    pub demand_permille: u32,
    pub hit_ratio_permille: u16,
    /// Requests sent on to a peer provider's nodes, by redirect and by relay.
    pub redirected_per_s: u32,
    pub proxied_per_s: u32,
    /// Requests refused for want of capacity (see `limits`).
    pub shed_per_s: u32,
}

/// One node listed in the load table, with its latest figures as its last report gives them
/// (see [`Load::listed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listed {
    pub peer: PeerId,
    /// The provider its load counts toward (verified when its report arrived).
    pub provider: reef_proto::records::ProviderId,
    pub utilisation_permille: u16,
    /// Never below utilisation, whatever the node reports.
    pub demand_permille: u16,
    /// Requests arriving per second.
    pub req_per_s: u32,
    /// It is no longer listed from this instant on, unless a newer report arrives.
    pub until: Instant,
}

/// Load gossip counters for `/api/status` (`load`).
#[derive(Debug, Clone, Serialize)]
pub struct LoadStats {
    pub capacity_rps: u32,
    pub capacity_mbps: u32,
    pub own: OwnLoad,
    /// Nodes listed in the table now, ourselves included.
    pub nodes: usize,
    /// Our reports handed to at least one peer.
    pub published: u64,
    /// Our reports nobody was subscribed to hear (a node alone, or just started).
    pub not_published: u64,
    /// Our reports that could not be sealed or published.
    pub publish_failed: u64,
    /// Reports received over gossip.
    pub received: u64,
    /// Valid and newer than what we held: taken and forwarded.
    pub accepted: u64,
    /// Invalid, by reason (`garbage`, `bad_signature`, `expired`, `wrong_signer`, …): dropped
    /// and held against the peer that relayed them.
    pub rejected: BTreeMap<String, u64>,
    /// Valid but not newer than the report held (`replay`): dropped, nobody penalised.
    pub ignored: BTreeMap<String, u64>,
}

/// Handle to the load service: the meter for the edge, the table for the admin API.
#[derive(Clone)]
pub struct Load {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    local: PeerId,
    meter: Arc<Meter>,
    overlay: reef_overlay::Client,
    /// Written by the gossip task, read by the admin API. A lock rather than messages: readers
    /// want a consistent snapshot on demand, and nobody holds it across an await or for more
    /// than one table operation.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    table: Table,
    own: OwnLoad,
    published: u64,
    not_published: u64,
    publish_failed: u64,
    received: u64,
    accepted: u64,
    rejected: BTreeMap<&'static str, u64>,
    ignored: BTreeMap<&'static str, u64>,
}

fn own_load(rates: &Rates, busy: Busy) -> OwnLoad {
    OwnLoad {
        req_per_s: rates.req_per_s,
        egress_bytes_per_s: rates.egress_bytes_per_s,
        utilisation_permille: busy.utilisation_permille,
        demand_permille: busy.demand_permille,
        hit_ratio_permille: rates.hit_ratio_permille,
        redirected_per_s: rates.redirected_per_s,
        proxied_per_s: rates.proxied_per_s,
        shed_per_s: rates.shed_per_s,
    }
}

impl Load {
    pub fn new(config: Config, overlay: reef_overlay::Client) -> Load {
        Load {
            inner: Arc::new(Inner {
                config,
                local: overlay.local_peer_id(),
                meter: Arc::new(Meter::default()),
                overlay,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// The counters the edge bumps.
    pub fn meter(&self) -> Arc<Meter> {
        self.inner.meter.clone()
    }

    /// Starts publishing our reports (signed with `key`, the node's own) and judging those
    /// that arrive on `inbound` (the subscription to [`LOAD_TOPIC`]). Ends when the overlay
    /// stops (the subscription closes).
    pub fn start(&self, key: SigningKey, inbound: mpsc::Receiver<GossipMessage>) -> JoinHandle<()> {
        let load = self.clone();
        tokio::spawn(load.run(key, inbound).instrument(info_span!("load")))
    }

    async fn run(self, key: SigningKey, mut inbound: mpsc::Receiver<GossipMessage>) {
        let mut reporter = Reporter::new(key, self.inner.config.cert.clone());
        let mut window = RateWindow::default();
        let mut tick = tokio::time::interval(REPORT_INTERVAL);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut quiet_since_report: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    self.publish(&mut reporter, &mut window, &mut quiet_since_report).await
                }
                message = inbound.recv() => match message {
                    Some(message) => self.on_message(message).await,
                    None => break,
                },
            }
        }
        debug!("load gossip stopped");
    }

    /// Measures, seals, takes our own report into the table, and publishes it; a quiet node
    /// whose last report (at `quiet_report`) was quiet too skips it until its
    /// [`quiet_interval`] has passed.
    async fn publish(
        &self,
        reporter: &mut Reporter,
        window: &mut RateWindow,
        quiet_report: &mut Option<Instant>,
    ) {
        let now = Now::current();
        let config = &self.inner.config;
        let rates = window.update(self.inner.meter.totals(), now.mono);
        let busy = Busy::of(&rates, config.capacity_rps, config.capacity_mbps);
        let listing = if busy.demand_permille < QUIET_PERMILLE {
            let interval = quiet_interval(self.state().table.live(now.mono).count());
            if quiet_report.is_some_and(|at| now.mono - at < interval) {
                self.state().own = own_load(&rates, busy);
                return;
            }
            *quiet_report = Some(now.mono);
            listing_for(interval)
        } else {
            *quiet_report = None;
            table::ENTRY_TTL
        };
        let sealed = match reporter.seal(rates, busy, now.unix_ms, listing) {
            Ok(sealed) => sealed,
            Err(error) => {
                warn!(%error, "cannot seal our load report");
                self.state().publish_failed += 1;
                return;
            }
        };
        {
            let mut state = self.state();
            state.own = own_load(&rates, busy);
            state.table.sweep(now);
            match open::<LoadReport>(&sealed, now.unix_ms) {
                Ok(own) => {
                    let _ = state.table.insert(self.inner.local, own, now);
                }
                Err(error) => warn!(%error, "our own load report does not open"),
            }
        }
        let outcome = self.inner.overlay.publish(LOAD_TOPIC, sealed).await;
        let mut state = self.state();
        match outcome {
            Ok(Published::Sent) => state.published += 1,
            Ok(Published::NoPeers) => state.not_published += 1,
            Err(error) => {
                debug!(%error, "load report not published");
                state.publish_failed += 1;
            }
        }
    }

    async fn on_message(&self, message: GossipMessage) {
        let now = Now::current();
        // The signature check runs outside the lock.
        let verified = check::verify(message.source, &message.data, now.unix_ms);
        let verdict = {
            let mut state = self.state();
            state.received += 1;
            let verdict = match verified {
                Ok(report) => check::admit(&mut state.table, message.source, report, now),
                Err(verdict) => verdict,
            };
            match verdict {
                Verdict::Accept => state.accepted += 1,
                Verdict::Reject(reason) => *state.rejected.entry(reason).or_default() += 1,
                Verdict::Ignore(reason) => *state.ignored.entry(reason).or_default() += 1,
            }
            verdict
        };
        if let Verdict::Reject(reason) = verdict {
            debug!(source = %message.source, reason, "load report rejected");
        }
        let acceptance = verdict.acceptance();
        if let Err(error) = self.inner.overlay.report(message.handle, acceptance).await {
            debug!(%error, "cannot report a load report's verdict");
        }
    }

    /// Our own latest figures (updated once a second).
    pub fn own(&self) -> OwnLoad {
        self.state().own
    }

    /// The listed nodes of `provider`, least utilised first.
    pub fn nodes_of(&self, provider: &reef_proto::records::ProviderId) -> Vec<Listed> {
        let mut nodes: Vec<Listed> = self
            .listed()
            .into_iter()
            .filter(|n| n.provider == *provider)
            .collect();
        nodes.sort_by_key(|n| (n.utilisation_permille, n.peer));
        nodes
    }

    /// The listed nodes whose reports say more requests arrive than they can serve.
    pub fn swamped(&self) -> std::collections::HashSet<PeerId> {
        self.listed()
            .into_iter()
            .filter(|n| n.demand_permille >= SWAMPED_DEMAND_PERMILLE)
            .map(|n| n.peer)
            .collect()
    }

    /// Every node listed now.
    pub fn listed(&self) -> Vec<Listed> {
        let state = self.state();
        state
            .table
            .live(Instant::now())
            .map(|(peer, e)| {
                let report = e.report.record();
                Listed {
                    peer: *peer,
                    provider: e.membership.provider(),
                    utilisation_permille: report.utilisation_permille,
                    demand_permille: report.demand_permille.max(report.utilisation_permille),
                    req_per_s: report.req_per_s,
                    until: e.listed_until(),
                }
            })
            .collect()
    }

    /// The table as `GET /api/load` shows it.
    pub fn view(&self) -> LoadView {
        view::view(&self.state().table, Instant::now())
    }

    pub fn stats(&self) -> LoadStats {
        let config = &self.inner.config;
        let state = self.state();
        let labels =
            |m: &BTreeMap<&'static str, u64>| m.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        LoadStats {
            capacity_rps: config.capacity_rps,
            capacity_mbps: config.capacity_mbps,
            own: state.own,
            nodes: state.table.live(Instant::now()).count(),
            published: state.published,
            not_published: state.not_published,
            publish_failed: state.publish_failed,
            received: state.received,
            accepted: state.accepted,
            rejected: labels(&state.rejected),
            ignored: labels(&state.ignored),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state consistent; a panic in one poisons nothing.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests;
