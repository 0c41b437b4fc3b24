//! A cold flash crowd: N nodes, C clients spread over them (client `c` asks node `c mod N`),
//! all started at once, each fetching K of M objects nobody holds yet, in its own random
//! order. What counts is how often the origin was asked for each object (the target is
//! exactly once across the overlay), and what the clients saw: latency and errors.
//!
//! Each run uses a new set of objects on the same testnet, so every run is cold. The
//! clients run in this process, on the same cores as the nodes: on a small machine the
//! latencies include that contention.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use tracing::info;

use crate::bench::{Machine, Summary, shuffled};
use crate::client::{self, ResponseHeaders};
use crate::{Error, Options, Testnet, origin};

/// One client request, first byte to last, through a node that may itself wait on the origin.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);
/// Until every node's load table lists every node (home routing needs the whole table).
const TABLES_TIMEOUT: Duration = Duration::from_secs(120);
/// Between polls of the nodes' tables.
const POLL: Duration = Duration::from_millis(250);
/// Object paths of run `r` start at `BASE + r * STRIDE`, so no run sees another's objects.
const BASE: u64 = 1_000_000;
const STRIDE: u64 = 100_000;

#[derive(Debug, Clone)]
pub struct ColdBenchOptions {
    pub bin: PathBuf,
    pub nodes: usize,
    pub providers: usize,
    pub clients: usize,
    pub objects: usize,
    /// Objects each client fetches (one after another).
    pub per_client: usize,
    /// Body bytes of each object (about; each object's size differs by its index).
    pub size: u64,
    /// The origin waits this long before each response's headers (0: at once).
    pub origin_delay_ms: u64,
    pub runs: usize,
    /// `--home-routing` for every node.
    pub home_routing: bool,
    pub seed: u64,
    pub dir: PathBuf,
    pub command: String,
}

impl ColdBenchOptions {
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |why: &str| Err(Error::InvalidOptions(why.into()));
        if self.nodes == 0 || self.clients == 0 || self.objects == 0 || self.runs == 0 {
            return bad("nodes, clients, objects and runs must be at least 1");
        }
        if self.per_client == 0 || self.per_client > self.objects {
            return bad("per-client must be between 1 and the number of objects");
        }
        if self.objects as u64 >= STRIDE {
            return bad("at most 99999 objects");
        }
        Ok(())
    }
}

/// One run's figures.
#[derive(Debug, Clone, Default)]
pub struct Run {
    /// Origin requests for each object.
    pub hits: Vec<u64>,
    /// Latency (whole body) of each answered request, ms.
    pub latency_ms: Vec<f64>,
    /// Time to first byte of each answered request, ms.
    pub first_byte_ms: Vec<f64>,
    /// `X-Reef-Source` of the correct answers, or what went wrong.
    pub outcomes: BTreeMap<String, usize>,
    pub errors: usize,
    pub first_error: Option<String>,
    pub wall: Duration,
    /// Summed over the nodes: misses sent to the key's home, answered by it, failed.
    pub home_forwarded: u64,
    pub home_served: u64,
    pub home_failed: u64,
    pub peer_bodies_rejected: u64,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub opts: ColdBenchOptions,
    pub date: String,
    pub machine: Machine,
    pub launch: Duration,
    pub runs: Vec<Run>,
}

pub async fn run(opts: &ColdBenchOptions) -> Result<Report, Error> {
    opts.validate()?;
    let date = httpdate::fmt_http_date(SystemTime::now());
    let machine = Machine::describe(&opts.bin);
    let started = Instant::now();
    let testnet = Testnet::launch(Options {
        bin: opts.bin.clone(),
        nodes: opts.nodes,
        providers: opts.providers,
        dir: opts.dir.join("net"),
        extra_args: vec!["--home-routing".into(), opts.home_routing.to_string()],
        env: Vec::new(),
        provider_configs: Vec::new(),
        dns: false,
        links: Default::default(),
    })
    .await?;
    let launch = started.elapsed();
    info!(?launch, "testnet up; waiting for full load tables");
    let measured = measure(opts, &testnet).await;
    testnet.shutdown().await;
    Ok(Report {
        opts: opts.clone(),
        date,
        machine,
        launch,
        runs: measured?,
    })
}

async fn measure(opts: &ColdBenchOptions, testnet: &Testnet) -> Result<Vec<Run>, Error> {
    wait_tables(testnet).await?;
    let mut runs = Vec::new();
    for r in 0..opts.runs {
        info!(run = r + 1, "cold crowd");
        runs.push(one_run(opts, testnet, r).await?);
    }
    Ok(runs)
}

/// Until every node's load table lists every node of the testnet.
async fn wait_tables(testnet: &Testnet) -> Result<(), Error> {
    let n = testnet.nodes.len() as u64;
    let deadline = Instant::now() + TABLES_TIMEOUT;
    loop {
        let statuses =
            futures::future::try_join_all(testnet.nodes.iter().map(|node| node.status())).await?;
        if statuses
            .iter()
            .all(|s| s["load"]["nodes"].as_u64() == Some(n))
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Timeout {
                what: "every load table listing every node".into(),
                after: TABLES_TIMEOUT,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

struct Object {
    path: String,
    size: u64,
}

/// What one client request came to.
struct Fetch {
    outcome: String,
    first_byte: Duration,
    elapsed: Duration,
    error: Option<String>,
}

async fn one_run(opts: &ColdBenchOptions, testnet: &Testnet, r: usize) -> Result<Run, Error> {
    let base = BASE + r as u64 * STRIDE;
    let objects: Arc<Vec<Object>> = Arc::new(
        (0..opts.objects as u64)
            .map(|i| {
                let size = opts.size + base + i - BASE;
                let path = if opts.origin_delay_ms > 0 {
                    format!("/slow/{}/{size}", opts.origin_delay_ms)
                } else {
                    format!("/bytes/{size}")
                };
                Object { path, size }
            })
            .collect(),
    );
    let before = home_counts(testnet).await?;
    let origin_url = Arc::new(testnet.origin.url(""));
    let start = Instant::now();
    let clients = (0..opts.clients).map(|c| {
        let node = testnet.nodes[c % testnet.nodes.len()].runtime().http;
        let order = shuffled(opts.objects, opts.seed ^ (r as u64) << 32 ^ c as u64);
        let picks: Vec<usize> = order.into_iter().take(opts.per_client).collect();
        let (objects, origin_url) = (objects.clone(), origin_url.clone());
        tokio::spawn(async move {
            let mut fetches = Vec::with_capacity(picks.len());
            for k in picks {
                let object = &objects[k];
                let url = format!("{}{}", origin_url.trim_end_matches('/'), object.path);
                fetches.push(fetch(node, &url, object).await);
            }
            fetches
        })
    });
    // Every client at once: the crowd arrives together.
    let results: Vec<_> = futures::stream::iter(clients)
        .buffer_unordered(opts.clients)
        .collect()
        .await;
    let wall = start.elapsed();
    let mut run = Run {
        wall,
        ..Run::default()
    };
    for result in results {
        let fetches = result.map_err(|e| Error::InvalidOptions(format!("client task: {e}")))?;
        for f in fetches {
            *run.outcomes.entry(f.outcome.clone()).or_default() += 1;
            if let Some(e) = f.error {
                run.errors += 1;
                run.first_error.get_or_insert(e);
            } else {
                run.latency_ms.push(f.elapsed.as_secs_f64() * 1e3);
                run.first_byte_ms.push(f.first_byte.as_secs_f64() * 1e3);
            }
        }
    }
    run.hits = objects
        .iter()
        .map(|o| testnet.origin.hits(&o.path))
        .collect();
    let after = home_counts(testnet).await?;
    run.home_forwarded = after[0] - before[0];
    run.home_served = after[1] - before[1];
    run.home_failed = after[2] - before[2];
    run.peer_bodies_rejected = after[3] - before[3];
    Ok(run)
}

async fn fetch(node: std::net::SocketAddr, url: &str, object: &Object) -> Fetch {
    match client::fetch_digest(Some(node), url, FETCH_TIMEOUT).await {
        Ok(r) => {
            let wrong = if !r.status.is_success() {
                Some(format!("HTTP {}", r.status.as_u16()))
            } else if r.len != object.size
                || r.digest != origin::expected_digest(&object.path, object.size)
            {
                Some("wrong body".to_string())
            } else {
                None
            };
            Fetch {
                outcome: wrong
                    .clone()
                    .unwrap_or_else(|| r.source().unwrap_or("no source header").to_string()),
                first_byte: r.first_byte,
                elapsed: r.elapsed,
                error: wrong.map(|w| format!("{url}: {w}")),
            }
        }
        Err(e) => Fetch {
            outcome: "error".into(),
            first_byte: Duration::ZERO,
            elapsed: Duration::ZERO,
            error: Some(e.to_string()),
        },
    }
}

/// Summed over the nodes: home.forwarded, home.served, home.failed, peer_bodies_rejected.
async fn home_counts(testnet: &Testnet) -> Result<[u64; 4], Error> {
    let statuses =
        futures::future::try_join_all(testnet.nodes.iter().map(|node| node.status())).await?;
    let mut sums = [0u64; 4];
    for s in statuses {
        let home = &s["home"];
        sums[0] += home["forwarded"].as_u64().unwrap_or(0);
        sums[1] += home["served"].as_u64().unwrap_or(0);
        sums[2] += home["failed"].as_u64().unwrap_or(0);
        sums[3] += s["peer_bodies_rejected"].as_u64().unwrap_or(0);
    }
    Ok(sums)
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let (o, m) = (&self.opts, &self.machine);
        let _ = writeln!(out, "## Reef cold flash crowd\n");
        let _ = writeln!(out, "```sh\n{}\n```\n", o.command);
        let _ = writeln!(out, "- Date: {}", self.date);
        out.push_str(&m.markdown_lines());
        let _ = writeln!(
            out,
            "- `reef` binary: `{}` ({} build)",
            m.bin.display(),
            m.build
        );
        let delay = if o.origin_delay_ms > 0 {
            format!(
                "the origin waits {} ms before each answer",
                o.origin_delay_ms
            )
        } else {
            "the origin answers at once".into()
        };
        let _ = writeln!(
            out,
            "- Setup: {} nodes of {} provider(s) on loopback, home routing {}; {} clients \
             started at once, client c asking node c mod {}; each fetches {} of {} new objects \
             (~{} bytes) one after another in its own random order; {delay}; seed {}",
            o.nodes,
            o.providers,
            if o.home_routing { "on" } else { "off" },
            o.clients,
            o.nodes,
            o.per_client,
            o.objects,
            o.size,
            o.seed
        );
        let _ = writeln!(
            out,
            "- Testnet launch (every node joined): {:.1} s\n",
            self.launch.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "| run | origin requests (total / objects) | per object mean | max | objects fetched more than once | requests | errors | latency p50 / p99 ms | first byte p50 / p99 ms | wall s | sources |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
        for (i, run) in self.runs.iter().enumerate() {
            let total: u64 = run.hits.iter().sum();
            let max = run.hits.iter().max().copied().unwrap_or(0);
            let over = run.hits.iter().filter(|&&h| h > 1).count();
            let mean = total as f64 / run.hits.len().max(1) as f64;
            let requests: usize = run.outcomes.values().sum();
            let lat = Summary::of(&run.latency_ms);
            let fb = Summary::of(&run.first_byte_ms);
            let pair = |s: Option<Summary>| {
                s.map_or("-".into(), |s| format!("{:.1} / {:.1}", s.median, s.p99))
            };
            let sources = run
                .outcomes
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(
                out,
                "| {} | {total} / {} | **{mean:.2}** | {max} | {over} | {requests} | {} | {} | {} | {:.1} | {sources} |",
                i + 1,
                run.hits.len(),
                run.errors,
                pair(lat),
                pair(fb),
                run.wall.as_secs_f64(),
            );
        }
        let _ = writeln!(out);
        for (i, run) in self.runs.iter().enumerate() {
            let _ = writeln!(
                out,
                "- Run {}: misses sent to their home node {}, answered by it {}, home failures {}, peer bodies rejected {}{}",
                i + 1,
                run.home_forwarded,
                run.home_served,
                run.home_failed,
                run.peer_bodies_rejected,
                run.first_error
                    .as_ref()
                    .map_or(String::new(), |e| format!("; first error: {e}"))
            );
        }
        out
    }
}
