//! `reef-testnet flash`: the flash-crowd experiment, on real processes.
//!
//! K providers of M nodes each; every node, and the demo origin, sits behind a [`Link`] of
//! limited bandwidth, so capacity is physical: provider p0 (the primary, which owns the
//! service) has thin links, the others (which offer capacity) thick ones, the origin its own.
//! A crowd of clients (see [`clients`]) ramps from a baseline to a surge of `surge` times p0's
//! capacity, holds it, and falls back, asking p0's nodes for a Zipf-popular catalogue and
//! following redirects. The experiment runs twice on fresh testnets, with peering (p0 may buy
//! capacity) and without (it may not), and writes per-second CSV, plots and a markdown summary
//! comparing them.
//!
//! [`Link`]: crate::link::Link

mod clients;
mod plot;
mod report;
mod sample;
mod schedule;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::Method;
use indicatif::{ProgressBar, ProgressStyle};

use crate::bench::Machine;
use crate::testnet::Links;
use crate::{Error, Options, Testnet, client};

pub use report::{Report, RunResult};
pub use schedule::Schedule;

/// The service the crowd asks for.
const SERVICE: &str = "video.example";
/// The provider the crowd is after.
const PRIMARY: &str = "p0";
const WAIT: Duration = Duration::from_secs(60);
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct FlashOptions {
    pub bin: PathBuf,
    /// Where the runs' nodes live (removed by the caller).
    pub dir: PathBuf,
    /// Where the CSV, plots and summary go.
    pub out: PathBuf,
    pub providers: usize,
    pub nodes_per_provider: usize,
    /// Each primary node's link, and each other provider's node's, bytes/s each way.
    pub primary_link: u64,
    pub peer_link: u64,
    /// The origin's link, bytes/s.
    pub origin_link: u64,
    pub object_size: u64,
    pub catalogue: usize,
    pub zipf: f64,
    /// Clients a second at the baseline and at the surge, as multiples of the primary's
    /// capacity (its links' bandwidth over the object size).
    pub baseline: f64,
    pub surge: f64,
    pub schedule: Durations,
    /// p0's high and low watermarks (fractions of its capacity).
    pub high_watermark: f64,
    pub low_watermark: f64,
    pub trigger_window_s: f64,
    pub cooldown_s: f64,
    /// p0's `shed_above_capacity`; None: no ceiling.
    pub ceiling: Option<f64>,
    pub seed: u64,
    /// The command line, for the report.
    pub command: String,
}

/// The phases' lengths.
#[derive(Debug, Clone, Copy)]
pub struct Durations {
    pub warmup: Duration,
    pub ramp: Duration,
    pub hold: Duration,
    pub calm: Duration,
}

impl FlashOptions {
    /// The primary's capacity, requests a second: its nodes' links over the object size.
    pub fn primary_capacity_rps(&self) -> f64 {
        (self.nodes_per_provider as u64 * self.primary_link) as f64 / self.object_size as f64
    }

    pub fn schedule(&self) -> Schedule {
        let capacity = self.primary_capacity_rps();
        Schedule {
            baseline_rps: capacity * self.baseline,
            surge_rps: capacity * self.surge,
            warmup: self.schedule.warmup,
            ramp: self.schedule.ramp,
            hold: self.schedule.hold,
            calm: self.schedule.calm,
        }
    }

    /// Each provider's config: p0 owns the service and (with peering) buys; the others offer.
    fn configs(&self, peering: bool) -> Vec<String> {
        // What a node can take, as its load reports say it: its link.
        let mbit = |bytes_per_s: u64| (bytes_per_s * 8 / 1_000_000).max(1);
        let capacity_rps = (self.primary_link / self.object_size.max(1)).max(1);
        let buying = if peering {
            format!(
                "max_price_per_gb = 0.05\nshare = 1.0\nhigh_watermark = {}\nlow_watermark = {}\ntrigger_window_s = {}\ncooldown_s = {}\n",
                self.high_watermark, self.low_watermark, self.trigger_window_s, self.cooldown_s
            )
        } else {
            String::new()
        };
        let ceiling = self.ceiling.map_or(String::new(), |c| {
            format!("[limits]\nshed_above_capacity = {c}\n")
        });
        let mut configs = vec![format!(
            "capacity_rps = {capacity_rps}\ncapacity_mbps = {}\n[services.\"{SERVICE}\"]\norigin = \"{{origin}}\"\n[peering]\n{buying}{ceiling}",
            mbit(self.primary_link)
        )];
        for k in 1..self.providers {
            configs.push(format!(
                "capacity_rps = 100000\ncapacity_mbps = {}\n[offer]\nreq_per_s = 100000\nmbit_per_s = {}\nregions = [\"r0\", \"r1\"]\nprice_per_gb = {}\nmin_duration_s = 60\nmax_duration_s = 3600\n",
                mbit(self.peer_link),
                mbit(self.peer_link) * self.nodes_per_provider as u64,
                0.01 + 0.01 * k as f64
            ));
        }
        configs
    }
}

/// Runs the experiment with and without peering; writes everything into `opts.out` and
/// returns the summary.
pub async fn run(opts: &FlashOptions) -> Result<String, Error> {
    std::fs::create_dir_all(&opts.out)
        .map_err(|e| Error::io(format!("creating {}", opts.out.display()), e))?;
    let mut runs = Vec::new();
    for (i, peering) in [true, false].into_iter().enumerate() {
        runs.push(one_run(opts, peering, i).await?);
    }
    let report = Report {
        opts: opts.clone(),
        machine: Machine::describe(&opts.bin),
        runs,
    };
    report.write(&opts.out)
}

async fn one_run(opts: &FlashOptions, peering: bool, i: usize) -> Result<RunResult, Error> {
    let label = if peering {
        "with peering"
    } else {
        "without peering"
    };
    let schedule = opts.schedule();
    let bar = ProgressBar::new(schedule.total().as_secs());
    bar.set_style(
        ProgressStyle::with_template("{prefix:>16} [{bar:30}] {pos:>3}/{len} s  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(label);
    bar.set_message("launching the testnet");
    let testnet = Testnet::launch(Options {
        bin: opts.bin.clone(),
        nodes: opts.providers * opts.nodes_per_provider,
        providers: opts.providers,
        dir: opts.dir.join(format!("run-{i}")),
        extra_args: Vec::new(),
        env: Vec::new(),
        provider_configs: opts.configs(peering),
        dns: false,
        links: Links {
            node_bytes_per_s: std::iter::once(opts.primary_link)
                .chain(std::iter::repeat_n(opts.peer_link, opts.providers - 1))
                .collect(),
            origin_bytes_per_s: Some(opts.origin_link),
        },
    })
    .await?;
    bar.set_message("waiting for the service and the offers");
    ready(&testnet, opts, peering).await?;
    let names: BTreeMap<String, String> = testnet
        .nodes
        .iter()
        .map(|n| {
            (
                n.runtime().provider_id.clone(),
                n.runtime().provider.clone(),
            )
        })
        .collect();
    // The primary's nodes are 0, K, 2K, … (providers are assigned round-robin).
    let primary_nodes: Vec<_> = (0..testnet.nodes.len())
        .step_by(opts.providers)
        .map(|n| testnet.public_http(n))
        .collect();

    let started = Instant::now();
    let record = Arc::new(Mutex::new(clients::Record::default()));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let crowd = clients::run(
        clients::Target {
            nodes: primary_nodes,
            host: SERVICE.into(),
            object_size: opts.object_size,
            catalogue: opts.catalogue,
            zipf: opts.zipf,
            seed: opts.seed,
        },
        schedule,
        started,
        record.clone(),
    );
    let sampler = sample::run(
        &testnet,
        0,
        &names,
        started,
        schedule.total(),
        samples.clone(),
    );
    let progress = show_progress(&bar, &schedule, started, &record, &samples);
    tokio::join!(crowd, sampler, progress);
    bar.set_message("waiting for the settlements");
    let settlements = settled(&testnet, &names).await;
    bar.finish_with_message("done");
    let record = std::mem::take(&mut *record.lock().unwrap_or_else(PoisonError::into_inner));
    let samples = std::mem::take(&mut *samples.lock().unwrap_or_else(PoisonError::into_inner));
    let origin_requests = testnet.origin.total_hits();
    testnet.shutdown().await;
    Ok(RunResult::new(
        label,
        opts,
        &schedule,
        record,
        samples,
        origin_requests,
        settlements,
    ))
}

/// Until the service is published and, with peering, every other provider's offer is
/// discoverable from the primary.
async fn ready(testnet: &Testnet, opts: &FlashOptions, peering: bool) -> Result<(), Error> {
    let node = &testnet.nodes[0];
    let started = Instant::now();
    loop {
        let published = node.status().await?["services"]["published"]
            .as_u64()
            .unwrap_or(0)
            >= 1;
        let offers = if peering {
            admin(testnet, "/api/offers?region=r0").await["offers"]
                .as_array()
                .map_or(0, Vec::len)
        } else {
            opts.providers - 1
        };
        if published && offers >= opts.providers - 1 {
            return Ok(());
        }
        if started.elapsed() > WAIT {
            return Err(Error::Timeout {
                what: "the service and the offers".into(),
                after: WAIT,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn admin(testnet: &Testnet, path: &str) -> serde_json::Value {
    admin_of(&testnet.nodes[0], path).await
}

async fn admin_of(node: &crate::NodeProcess, path: &str) -> serde_json::Value {
    let url = format!("http://{}{path}", node.runtime().admin);
    match client::fetch(None, Method::GET, &url, ADMIN_TIMEOUT).await {
        Ok(got) => serde_json::from_slice(&got.body).unwrap_or_default(),
        Err(_) => serde_json::Value::Null,
    }
}

/// The primary's settlements once every arrangement it made has ended and been agreed (or
/// after [`WAIT`]), with the peer's name. Each settlement is in the ledger of the node that
/// was the mediator when its arrangement ended, so every node of the primary is asked.
async fn settled(testnet: &Testnet, names: &BTreeMap<String, String>) -> Vec<report::Settled> {
    let started = Instant::now();
    let primary: Vec<_> = testnet
        .nodes
        .iter()
        .filter(|n| n.runtime().provider == PRIMARY)
        .collect();
    loop {
        let (mut views, mut ledgers) = (Vec::new(), Vec::new());
        for node in &primary {
            views.push(admin_of(node, "/api/arrangements").await);
            ledgers.push(admin_of(node, "/api/ledger").await);
        }
        // Each node lists what it negotiated or learnt; the mediator's view may be ahead.
        let mut made: Vec<&serde_json::Value> = Vec::new();
        for a in views
            .iter()
            .filter_map(|v| v["arrangements"].as_array())
            .flatten()
            .filter(|a| a["basis"] == "short_term")
        {
            match made.iter_mut().find(|m| m["id"] == a["id"]) {
                Some(m) if m["status"] != "ended" => *m = a,
                Some(_) => {}
                None => made.push(a),
            }
        }
        let agreed: Vec<&serde_json::Value> = ledgers
            .iter()
            .filter_map(|ledger| ledger["settlements"].as_array())
            .flatten()
            .filter(|s| s["agreed"] == true)
            .collect();
        let done = made
            .iter()
            .all(|a| a["status"] == "ended" && agreed.iter().any(|s| s["id"] == a["id"]));
        if done || started.elapsed() > WAIT {
            return made
                .iter()
                .map(|a| {
                    let peer = a["peer"].as_str().unwrap_or_default();
                    let settlement = agreed.iter().find(|s| s["id"] == a["id"]);
                    report::Settled {
                        id: a["id"].as_str().unwrap_or_default().to_string(),
                        peer: names.get(peer).cloned().unwrap_or_else(|| peer.into()),
                        end_reason: a["end_reason"].as_str().unwrap_or("-").to_string(),
                        requests: settlement.and_then(|s| s["requests"].as_u64()),
                        bytes: settlement.and_then(|s| s["bytes"].as_u64()),
                        amount_micros: settlement.and_then(|s| s["amount_micros"].as_u64()),
                    }
                })
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Updates the bar twice a second until the schedule is over.
async fn show_progress(
    bar: &ProgressBar,
    schedule: &Schedule,
    started: Instant,
    record: &Mutex<clients::Record>,
    samples: &Mutex<Vec<sample::Sample>>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let t = started.elapsed();
        let (phase, _) = schedule.phase(t);
        // The last full second.
        let last = t.as_secs().saturating_sub(1) as usize;
        let (done, p95, errors) = {
            let r = record.lock().unwrap_or_else(PoisonError::into_inner);
            match r.seconds.get(last) {
                Some(s) => {
                    let mut l = s.latencies_ms.clone();
                    (s.ok + s.errors, clients::quantile(&mut l, 0.95), s.errors)
                }
                None => (0, 0, 0),
            }
        };
        let (util, event) = {
            let s = samples.lock().unwrap_or_else(PoisonError::into_inner);
            let util = s
                .last()
                .and_then(|s| s.utilisation.get(PRIMARY).copied())
                .unwrap_or(0);
            let event = s
                .iter()
                .rev()
                .find_map(|s| s.events.last().cloned())
                .unwrap_or_default();
            (util, event)
        };
        bar.set_position(t.as_secs().min(bar.length().unwrap_or(0)));
        bar.set_message(format!(
            "{:<9} offered {:>4.0}/s  done {done:>4}/s  p95 {p95:>5} ms  errors {errors:>3}  p0 at {:>3}%  {event}",
            phase.label(),
            schedule.rate(t),
            util / 10
        ));
        if phase == schedule::Phase::Done {
            return;
        }
    }
}
