//! `reef-testnet`: start a Reef network of real `reef` processes on loopback.
//!
//! `up` launches it and waits for Ctrl-C / SIGTERM; `demo` does the same with 5 nodes of
//! 2 providers and first shows where fetched objects come from (origin, peer, local);
//! `bench` measures the foundation figures and `bench-load` the load gossip figures, and print
//! them as markdown.
//! Every process it started is stopped on exit; should this process die abruptly, the
//! nodes die with it (PR_SET_PDEATHSIG), and a panic unwinds through `Testnet`'s drop.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use reef_testnet::client::{self, ResponseHeaders};
use reef_testnet::{
    Announcements, Options, Testnet, bench, bench_cold, bench_dht, bench_discovery, bench_dns,
    bench_load, bench_metrics, bench_nginx, bench_peering, flash, locate_reef_binary, origin,
};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

/// Time allowed for one demo fetch, 10 MiB on loopback through a debug build included.
const DEMO_FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// Time allowed for node-0 to announce what it fetched from the origin: one DHT provider
/// put on loopback takes milliseconds, a loaded debug build far less than this.
const DEMO_ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(20);

/// How often `up` checks whether a node died on its own, to say so once.
const LIVENESS_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Exit code for every failure (clap's usage errors use it too).
const EXIT_FAILURE: u8 = 2;

#[derive(Parser)]
#[command(
    name = "reef-testnet",
    version,
    about = "Run a local Reef testnet of real nodes"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Launch N nodes of K providers plus a demo origin and run until Ctrl-C.
    Up(UpArgs),
    /// Launch 5 nodes of 2 providers, show fetches via origin / peer / local, keep running.
    Demo(DemoArgs),
    /// Measure join time, DHT lookups, peer fetches, origin offload and idle memory on
    /// loopback; print a markdown report.
    Bench(BenchArgs),
    /// A cold flash crowd: many clients on every node ask for the same new objects at once;
    /// origin requests per object, client latency and errors; print a markdown report.
    BenchCold(BenchColdArgs),
    /// Provider lookup latency and peers asked, idle memory and CPU per node, at several
    /// testnet sizes; print a markdown table.
    BenchDht(BenchDhtArgs),
    /// Measure load gossip on testnets of several sizes: time until every node's load table
    /// lists every node, gossip bytes per node and second; print a markdown report.
    BenchLoad(BenchLoadArgs),
    /// Measure capacity discovery (`/api/offers?region=`) on a testnet where every node is
    /// its provider's agent; print a markdown table.
    BenchDiscovery(BenchDiscoveryArgs),
    /// Measure DNS answers per second and answer latency of one node's DNS server (UDP, on
    /// loopback); print a markdown table.
    BenchDns(BenchDnsArgs),
    /// Measure peering under a flash crowd on fresh 3-provider testnets: reaction time,
    /// negotiation, receipts' overhead, disband and settlement; print a markdown table.
    BenchPeering(BenchPeeringArgs),
    /// Measure what a `/metrics` scrape every second costs one node's hit path (req/s with
    /// and without scraping); print a markdown table.
    BenchMetrics(BenchMetricsArgs),
    /// The flash-crowd experiment: a crowd on provider p0, run with and without peering on
    /// fresh testnets whose nodes and origin sit behind links of limited bandwidth; writes
    /// per-second CSV, plots and a markdown summary.
    Flash(FlashArgs),
    /// Measure one node's hit path beside nginx with `proxy_cache` in front of the same
    /// origin, with wrk (installed from Debian if missing): req/s, latency and MB/s as ratios
    /// Reef / nginx; print a markdown report.
    BenchNginx(BenchNginxArgs),
}

#[derive(Args)]
struct FlashArgs {
    /// Providers (p0 is the primary; the others offer capacity).
    #[arg(long, default_value_t = 3, value_parser = at_least_two)]
    providers: usize,
    /// Nodes per provider.
    #[arg(long, default_value_t = 2, value_parser = at_least_one)]
    nodes: usize,
    /// Bandwidth of each of p0's nodes' links, Mbit/s.
    #[arg(long, default_value_t = 4.0)]
    primary_mbit: f64,
    /// Bandwidth of each other provider's nodes' links, Mbit/s.
    #[arg(long, default_value_t = 100.0)]
    peer_mbit: f64,
    /// Bandwidth of the origin's link, Mbit/s.
    #[arg(long, default_value_t = 80.0)]
    origin_mbit: f64,
    /// Bytes per object.
    #[arg(long, default_value_t = 20_000)]
    object_size: u64,
    /// Objects in the catalogue.
    #[arg(long, default_value_t = 500, value_parser = at_least_one)]
    objects: usize,
    /// Zipf exponent of the objects' popularity.
    #[arg(long, default_value_t = 0.9)]
    zipf: f64,
    /// Clients a second before and after the surge, in multiples of p0's capacity (under
    /// the high watermark, so that the surge is what triggers peering).
    #[arg(long, default_value_t = 0.3)]
    baseline: f64,
    /// Clients a second at the surge, in multiples of p0's capacity.
    #[arg(long, default_value_t = 10.0)]
    surge: f64,
    /// Seconds of baseline before the surge.
    #[arg(long, default_value_t = 10)]
    warmup: u64,
    /// Seconds of each ramp.
    #[arg(long, default_value_t = 10)]
    ramp: u64,
    /// Seconds the surge holds.
    #[arg(long, default_value_t = 40)]
    hold: u64,
    /// Seconds of baseline after the surge.
    #[arg(long, default_value_t = 30)]
    calm: u64,
    /// p0's high watermark: share of its capacity above which it looks for relief. Below 1,
    /// so that what it keeps serving, plus the redirects, leaves its links room to drain.
    #[arg(long, default_value_t = 0.6)]
    high_watermark: f64,
    /// p0's low watermark: relief aims between the two, and ends below this.
    #[arg(long, default_value_t = 0.3)]
    low_watermark: f64,
    /// p0's trigger window, seconds.
    #[arg(long, default_value_t = 3.0)]
    trigger_window: f64,
    /// p0's cool-down, seconds.
    #[arg(long, default_value_t = 10.0)]
    cooldown: f64,
    /// p0's ceiling (`[limits] shed_above_capacity`), in both runs: past this share of its
    /// capacity a node sends requests to a peer whatever the part, or refuses them (503).
    /// Below 1, because its links also carry the redirects and refusals. 0: no ceiling.
    #[arg(long, default_value_t = 0.8, value_parser = not_negative)]
    ceiling: f64,
    /// Seed of the crowd's object choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where the CSV, plots and summary go.
    #[arg(long, default_value = "flash-results")]
    out: PathBuf,
    /// Keep node data and logs here [default: a temporary directory, removed afterwards].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The `reef` binary [default: $REEF_BIN, else `reef` next to this executable].
    #[arg(long)]
    bin: Option<PathBuf>,
}

#[derive(Args)]
struct BenchColdArgs {
    #[arg(long, default_value_t = 20, value_parser = at_least_one)]
    nodes: usize,
    #[arg(long, default_value_t = 1, value_parser = at_least_one)]
    providers: usize,
    /// Clients started at once, spread over the nodes.
    #[arg(long, default_value_t = 1000, value_parser = at_least_one)]
    clients: usize,
    /// New objects per run.
    #[arg(long, default_value_t = 100, value_parser = at_least_one)]
    objects: usize,
    /// Objects each client fetches, one after another.
    #[arg(long, default_value_t = 10, value_parser = at_least_one)]
    per_client: usize,
    /// Body bytes per object (each object is a few bytes larger than the last).
    #[arg(long, default_value_t = 10_240)]
    size: u64,
    /// Milliseconds the origin waits before answering each request.
    #[arg(long, default_value_t = 0)]
    origin_delay_ms: u64,
    /// Runs on the same testnet, each with new objects.
    #[arg(long, default_value_t = 2, value_parser = at_least_one)]
    runs: usize,
    /// `--home-routing` of every node (false gives the figures without home nodes).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    home_routing: bool,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Keep node data and logs here [default: a temporary directory, removed afterwards].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The `reef` binary [default: $REEF_BIN, else `reef` next to this executable].
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Also write the report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct BenchDhtArgs {
    /// Testnet sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10,50,100")]
    nodes: Vec<usize>,
    /// Objects node 0 announces; every asker looks each up once.
    #[arg(long, default_value_t = 10, value_parser = at_least_one)]
    objects: usize,
    /// Nodes that run lookups, spread over the testnet.
    #[arg(long, default_value_t = 9, value_parser = at_least_one)]
    askers: usize,
    /// Seconds to wait after launch before reading idle memory: a 100-node launch keeps the
    /// connection budget pruning for a minute or two.
    #[arg(long, default_value_t = 90)]
    settle: u64,
    /// Seconds over which idle CPU is measured.
    #[arg(long, default_value_t = 10, value_parser = at_least_one)]
    window: usize,
    /// Keep node data and logs here [default: a temporary directory, removed afterwards].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The `reef` binary [default: $REEF_BIN, else `reef` next to this executable].
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Also write the report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct BenchNginxArgs {
    /// wrk connections (`-c`), each with one request in flight.
    #[arg(long, default_value_t = 64, value_parser = at_least_one)]
    connections: usize,
    /// wrk threads (`-t`): two per core of a 2-core machine, as with one per core a thread
    /// can be held on one connection while the others' answers wait unread
    /// (docs/benchmarks.md says more)
    #[arg(long, default_value_t = 4, value_parser = at_least_one)]
    threads: usize,
    /// Seconds per measured run.
    #[arg(long, default_value_t = 10, value_parser = at_least_one)]
    seconds: usize,
    /// Rounds per object; each runs Reef, nginx, nginx, Reef.
    #[arg(long, default_value_t = 1, value_parser = at_least_one)]
    rounds: usize,
    /// Object sizes in bytes, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = bench_nginx::DEFAULT_SIZES)]
    sizes: Vec<u64>,
    /// nginx `worker_processes` [default: the number of CPUs, as many as the node's worker
    /// threads].
    #[arg(long, value_parser = at_least_one)]
    nginx_workers: Option<usize>,
    /// The nginx binary [default: `nginx` on PATH or in /usr/sbin].
    #[arg(long)]
    nginx: Option<PathBuf>,
    /// The wrk binary [default: `wrk` on PATH].
    #[arg(long)]
    wrk: Option<PathBuf>,
    /// Do not install nginx and wrk with apt-get when they are missing.
    #[arg(long)]
    no_install: bool,
    /// Niceness for the node, nginx and wrk alike (below 0 needs root): on a machine others
    /// use, e.g. -10 gives the measured processes the CPU first.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    nice: i32,
    /// The `reef` binary [default: $REEF_BIN, else `reef` next to this executable].
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Also write the report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct BenchPeeringArgs {
    /// Runs, each on a fresh testnet.
    #[arg(long, default_value_t = 5, value_parser = at_least_one)]
    runs: usize,
    /// Clients a second in the crowd.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// Requests per second the primary's node is made for.
    #[arg(long, default_value_t = 10)]
    capacity_rps: u32,
    /// The primary's trigger window, seconds (the policy's default is 3).
    #[arg(long, default_value_t = 3.0)]
    trigger_window: f64,
    /// Seconds over which the receipts' traffic is counted.
    #[arg(long, default_value_t = 20)]
    window: u64,
    /// The `reef` binary [default: $REEF_BIN, else `reef` next to this executable].
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Also write the report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct BenchMetricsArgs {
    /// Client connections, each with one request in flight.
    #[arg(long, default_value_t = 16, value_parser = at_least_one)]
    connections: usize,
    /// Seconds per run.
    #[arg(long, default_value_t = 10, value_parser = at_least_one)]
    seconds: usize,
    /// Runs with and without scraping each, alternating.
    #[arg(long, default_value_t = 3, value_parser = at_least_one)]
    rounds: usize,
    /// Body bytes of the cached object.
    #[arg(long, default_value_t = 1024)]
    size: u64,
    /// The `reef` binary [default: $REEF_BIN, else `reef` next to this executable].
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Also write the report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct BenchDnsArgs {
    /// Nodes of the provider whose zone is asked (their addresses rotate in answers).
    #[arg(long, default_value_t = 3, value_parser = at_least_one)]
    nodes: usize,
    /// Client sockets sending queries.
    #[arg(long, default_value_t = 4, value_parser = at_least_one)]
    sockets: usize,
    /// Queries in flight per socket.
    #[arg(long, default_value_t = 16, value_parser = at_least_one)]
    window: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 10, value_parser = at_least_one)]
    seconds: usize,
    /// The `reef` binary [default: $REEF_BIN, else `reef` next to this executable].
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Also write the report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct BenchDiscoveryArgs {
    #[arg(long, default_value_t = 20, value_parser = at_least_two)]
    nodes: usize,
    #[arg(long, default_value_t = 4, value_parser = at_least_one)]
    providers: usize,
    /// Discoveries to time, from each node in turn.
    #[arg(long, default_value_t = 200, value_parser = at_least_one)]
    lookups: usize,
    /// The `reef` binary [default: $REEF_BIN, else `reef` next to this executable].
    #[arg(long)]
    bin: Option<PathBuf>,
}

#[derive(Args)]
struct BenchLoadArgs {
    /// Testnet sizes, comma-separated, run one after another (each at least 2).
    #[arg(long, value_delimiter = ',', default_value = "10,20,50", value_parser = at_least_two)]
    nodes: Vec<usize>,
    /// Providers per testnet, assigned round-robin.
    #[arg(long, default_value_t = 3, value_parser = at_least_one)]
    providers: usize,
    /// Seconds over which gossip traffic is counted.
    #[arg(long, default_value_t = 10, value_parser = at_least_one)]
    window: usize,
    /// Seconds to wait after the tables converged before counting (start-up DHT work settles).
    #[arg(long, default_value_t = 10)]
    settle: usize,
    /// The `reef` binary [default: $REEF_BIN, else `reef` next to this executable].
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Also write the report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Root directory for node data and logs, kept afterwards
    /// [default: a new reef-bench-load-<pid> under the temp dir, removed after a successful run].
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Args)]
struct BenchArgs {
    /// Testnet size for the lookup, offload and memory phases (at least 2).
    #[arg(long, default_value_t = 10, value_parser = at_least_two)]
    nodes: usize,
    /// Providers among the nodes, assigned round-robin.
    #[arg(long, default_value_t = 2, value_parser = at_least_one)]
    providers: usize,
    /// Objects per set (the lookup phase and each offload run use a new set).
    #[arg(long, default_value_t = 100, value_parser = at_least_one)]
    objects: usize,
    /// Fresh nodes that join a seed node, one after another, for the join time.
    #[arg(long, default_value_t = 10, value_parser = at_least_one)]
    join_runs: usize,
    /// Concurrent fetches per node in the offload phase.
    #[arg(long, default_value_t = 8, value_parser = at_least_one)]
    concurrency: usize,
    /// Seed of each node's random fetch order.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The `reef` binary [default: $REEF_BIN, else `reef` next to this executable].
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Also write the report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Root directory for node data and logs, kept afterwards
    /// [default: a new reef-bench-<pid> under the temp dir, removed after a successful run].
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn at_least_one(s: &str) -> Result<usize, String> {
    at_least(s, 1)
}

fn at_least_two(s: &str) -> Result<usize, String> {
    at_least(s, 2)
}

fn not_negative(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        Ok(_) => Err("must be a number, 0 or more".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn at_least(s: &str, min: usize) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n < min => Err(format!("must be at least {min}")),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

#[derive(Args)]
struct UpArgs {
    /// Number of nodes.
    #[arg(long)]
    nodes: usize,
    /// Number of providers, assigned round-robin.
    #[arg(long, default_value_t = 1)]
    providers: usize,
    /// Run every node's DNS server too: provider p<k> gets the zone `p<k>.cdn.test` and a
    /// service `site-p<k>.example` (from the demo origin) to ask for in it.
    #[arg(long)]
    dns: bool,
    #[command(flatten)]
    common: CommonArgs,
}

/// The config of provider `k` for `up --dns`: one service and its zone.
fn dns_provider_config(k: usize) -> String {
    format!(
        "[services.\"site-p{k}.example\"]\norigin = \"{{origin}}\"\n\n[dns]\nzone = \"p{k}.cdn.test\"\n"
    )
}

#[derive(Args)]
struct DemoArgs {
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Args)]
struct CommonArgs {
    /// Root directory for node data, logs and manifest.json
    /// [default: a new reef-testnet-<pid> under the temp dir, kept after exit].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The `reef` binary [default: $REEF_BIN, else `reef` next to this executable].
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Extra arguments for every node, after `--`.
    #[arg(last = true)]
    node_args: Vec<String>,
}

impl CommonArgs {
    fn options(self, nodes: usize, providers: usize) -> anyhow::Result<Options> {
        let bin = locate_reef_binary(self.bin)?;
        let dir = self.dir.unwrap_or_else(|| {
            std::env::temp_dir().join(format!("reef-testnet-{}", std::process::id()))
        });
        Ok(Options {
            bin,
            nodes,
            providers,
            dir,
            extra_args: self.node_args,
            env: Vec::new(),
            provider_configs: Vec::new(),
            dns: false,
            links: Default::default(),
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("reef-testnet: error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("reef-testnet: error: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // Registered before anything starts, so a SIGTERM during launch is not lost.
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let (opts, demo) = match cli.command {
        Cmd::Up(args) => {
            let mut opts = args.common.options(args.nodes, args.providers)?;
            if args.dns {
                opts.dns = true;
                opts.provider_configs = (0..args.providers).map(dns_provider_config).collect();
            }
            (opts, false)
        }
        Cmd::Demo(args) => (args.common.options(5, 2)?, true),
        Cmd::Bench(args) => return run_bench(args, &mut sigterm).await,
        Cmd::BenchCold(args) => return run_bench_cold(args, &mut sigterm).await,
        Cmd::BenchDht(args) => return run_bench_dht(args, &mut sigterm).await,
        Cmd::BenchLoad(args) => return run_bench_load(args, &mut sigterm).await,
        Cmd::BenchDiscovery(args) => return run_bench_discovery(args, &mut sigterm).await,
        Cmd::BenchDns(args) => return run_bench_dns(args, &mut sigterm).await,
        Cmd::BenchPeering(args) => return run_bench_peering(args, &mut sigterm).await,
        Cmd::BenchMetrics(args) => return run_bench_metrics(args, &mut sigterm).await,
        Cmd::Flash(args) => return run_flash(args, &mut sigterm).await,
        Cmd::BenchNginx(args) => return run_bench_nginx(args, &mut sigterm).await,
    };
    println!(
        "launching {} nodes of {} providers in {}",
        opts.nodes,
        opts.providers,
        opts.dir.display()
    );
    let testnet = tokio::select! {
        launched = Testnet::launch(opts) => launched.context("launching the testnet")?,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted while launching"),
        _ = sigterm.recv() => anyhow::bail!("terminated while launching"),
    };
    print_nodes(&testnet);
    if demo {
        // A failing demo fetch is reported in the table; only a broken testnet stops here.
        run_demo(&testnet).await;
    }
    println!("testnet running — Ctrl-C to stop");
    wait_for_stop(&testnet, &mut sigterm).await;
    println!("stopping…");
    testnet.shutdown().await;
    println!("stopped");
    Ok(())
}

async fn wait_for_stop(testnet: &Testnet, sigterm: &mut tokio::signal::unix::Signal) {
    let mut reported = vec![false; testnet.nodes.len()];
    let mut tick = tokio::time::interval(LIVENESS_CHECK_INTERVAL);
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = sigterm.recv() => return,
            _ = tick.tick() => {
                for (i, node) in testnet.nodes.iter().enumerate() {
                    if !reported[i] && let Some(status) = node.exit_status() {
                        reported[i] = true;
                        tracing::warn!(node = %Testnet::node_name(i), %status, log = %node.log_path().display(), "node exited on its own");
                    }
                }
            }
        }
    }
}

/// The announcement counters of every node, summed: with home routing the first fetch is
/// stored and announced by the key's home node, which need not be the node asked.
async fn announcements_of(testnet: &Testnet) -> Option<Announcements> {
    let mut sum = Announcements::default();
    for node in &testnet.nodes {
        let a = node.announcements().await.ok()?;
        sum.done += a.done;
        sum.failed += a.failed;
        sum.skipped += a.skipped;
    }
    Some(sum)
}

/// Waits until the testnet finished announcing one more object than `before` and says so if
/// that failed: the next nodes then cannot find it in the DHT and go to the origin.
async fn wait_announced(testnet: &Testnet, before: Announcements) {
    let started = std::time::Instant::now();
    loop {
        match announcements_of(testnet).await {
            Some(now) if now.settled() > before.settled() => {
                if now.done == before.done {
                    println!(
                        "{:<18} it could not be announced (failed {}, skipped {}); the next fetches may go to the origin",
                        "",
                        now.failed - before.failed,
                        now.skipped - before.skipped
                    );
                }
                return;
            }
            _ if started.elapsed() >= DEMO_ANNOUNCE_TIMEOUT => {
                println!(
                    "{:<18} it was not announced within {DEMO_ANNOUNCE_TIMEOUT:?}; the next fetches may go to the origin",
                    ""
                );
                return;
            }
            // Poll interval of a status read, not synchronisation.
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn run_bench(
    args: BenchArgs,
    sigterm: &mut tokio::signal::unix::Signal,
) -> anyhow::Result<()> {
    let bin = locate_reef_binary(args.bin)?;
    let (dir, temporary) = match args.dir {
        Some(dir) => (dir, false),
        None => (
            std::env::temp_dir().join(format!("reef-bench-{}", std::process::id())),
            true,
        ),
    };
    let opts = bench::BenchOptions {
        bin,
        nodes: args.nodes,
        providers: args.providers,
        objects: args.objects,
        join_runs: args.join_runs,
        concurrency: args.concurrency,
        seed: args.seed,
        dir: dir.clone(),
        command: std::env::args()
            .map(|a| shell_quote(&a))
            .collect::<Vec<_>>()
            .join(" "),
    };
    opts.validate()?;
    eprintln!(
        "reef-testnet: benchmarking; node data and logs in {}",
        dir.display()
    );
    // Dropping the benchmark mid-way (signal) drops its nodes, which kills them.
    let report = bench::run(&opts);
    finish_bench(
        async { report.await.map(|r| r.markdown()) },
        &dir,
        temporary,
        args.out.as_deref(),
        sigterm,
    )
    .await
}

async fn run_bench_cold(
    args: BenchColdArgs,
    sigterm: &mut tokio::signal::unix::Signal,
) -> anyhow::Result<()> {
    let (dir, temporary) = match args.dir {
        Some(dir) => (dir, false),
        None => (
            std::env::temp_dir().join(format!("reef-bench-cold-{}", std::process::id())),
            true,
        ),
    };
    let opts = bench_cold::ColdBenchOptions {
        bin: locate_reef_binary(args.bin)?,
        nodes: args.nodes,
        providers: args.providers,
        clients: args.clients,
        objects: args.objects,
        per_client: args.per_client,
        size: args.size,
        origin_delay_ms: args.origin_delay_ms,
        runs: args.runs,
        home_routing: args.home_routing,
        seed: args.seed,
        dir: dir.clone(),
        command: std::env::args()
            .map(|a| shell_quote(&a))
            .collect::<Vec<_>>()
            .join(" "),
    };
    opts.validate()?;
    eprintln!(
        "reef-testnet: cold flash crowd; node data and logs in {}",
        dir.display()
    );
    let report = bench_cold::run(&opts);
    finish_bench(
        async { report.await.map(|r| r.markdown()) },
        &dir,
        temporary,
        args.out.as_deref(),
        sigterm,
    )
    .await
}

async fn run_bench_dht(
    args: BenchDhtArgs,
    sigterm: &mut tokio::signal::unix::Signal,
) -> anyhow::Result<()> {
    let (dir, temporary) = match args.dir {
        Some(dir) => (dir, false),
        None => (
            std::env::temp_dir().join(format!("reef-bench-dht-{}", std::process::id())),
            true,
        ),
    };
    let opts = bench_dht::DhtBenchOptions {
        bin: locate_reef_binary(args.bin)?,
        sizes: args.nodes,
        objects: args.objects,
        askers: args.askers,
        settle: Duration::from_secs(args.settle),
        window: Duration::from_secs(args.window as u64),
        dir: dir.clone(),
        command: std::env::args()
            .map(|a| shell_quote(&a))
            .collect::<Vec<_>>()
            .join(" "),
    };
    opts.validate()?;
    eprintln!(
        "reef-testnet: DHT at scale; node data and logs in {}",
        dir.display()
    );
    let report = bench_dht::run(&opts);
    finish_bench(
        async { report.await.map(|r| r.markdown()) },
        &dir,
        temporary,
        args.out.as_deref(),
        sigterm,
    )
    .await
}

async fn run_bench_load(
    args: BenchLoadArgs,
    sigterm: &mut tokio::signal::unix::Signal,
) -> anyhow::Result<()> {
    let bin = locate_reef_binary(args.bin)?;
    let (dir, temporary) = match args.dir {
        Some(dir) => (dir, false),
        None => (
            std::env::temp_dir().join(format!("reef-bench-load-{}", std::process::id())),
            true,
        ),
    };
    let opts = bench_load::LoadBenchOptions {
        bin,
        sizes: args.nodes,
        providers: args.providers,
        window: Duration::from_secs(args.window as u64),
        settle: Duration::from_secs(args.settle as u64),
        dir: dir.clone(),
        command: std::env::args()
            .map(|a| shell_quote(&a))
            .collect::<Vec<_>>()
            .join(" "),
    };
    opts.validate()?;
    eprintln!(
        "reef-testnet: benchmarking load gossip; node data and logs in {}",
        dir.display()
    );
    let report = bench_load::run(&opts);
    finish_bench(
        async { report.await.map(|r| r.markdown()) },
        &dir,
        temporary,
        args.out.as_deref(),
        sigterm,
    )
    .await
}

async fn run_bench_discovery(
    args: BenchDiscoveryArgs,
    sigterm: &mut tokio::signal::unix::Signal,
) -> anyhow::Result<()> {
    if args.providers > args.nodes {
        anyhow::bail!("--providers must not exceed --nodes");
    }
    let dir = std::env::temp_dir().join(format!("reef-bench-discovery-{}", std::process::id()));
    let opts = bench_discovery::DiscoveryBenchOptions {
        bin: locate_reef_binary(args.bin)?,
        nodes: args.nodes,
        providers: args.providers,
        lookups: args.lookups,
        dir: dir.clone(),
    };
    let report = bench_discovery::run(&opts);
    finish_bench(
        async { report.await.map(|r| r.markdown()) },
        &dir,
        true,
        None,
        sigterm,
    )
    .await
}

async fn run_bench_dns(
    args: BenchDnsArgs,
    sigterm: &mut tokio::signal::unix::Signal,
) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("reef-bench-dns-{}", std::process::id()));
    let opts = bench_dns::DnsBenchOptions {
        bin: locate_reef_binary(args.bin)?,
        nodes: args.nodes,
        sockets: args.sockets,
        window: args.window,
        duration: Duration::from_secs(args.seconds as u64),
        dir: dir.clone(),
    };
    let report = bench_dns::run(&opts);
    finish_bench(
        async { report.await.map(|r| r.markdown()) },
        &dir,
        true,
        args.out.as_deref(),
        sigterm,
    )
    .await
}

async fn run_bench_peering(
    args: BenchPeeringArgs,
    sigterm: &mut tokio::signal::unix::Signal,
) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("reef-bench-peering-{}", std::process::id()));
    let opts = bench_peering::PeeringBenchOptions {
        bin: locate_reef_binary(args.bin)?,
        runs: args.runs,
        rate: args.rate.max(1),
        capacity_rps: args.capacity_rps.max(1),
        trigger_window_s: args.trigger_window,
        window: args.window,
        dir: dir.clone(),
    };
    let report = bench_peering::run(&opts);
    finish_bench(
        async { report.await.map(|r| r.markdown()) },
        &dir,
        true,
        args.out.as_deref(),
        sigterm,
    )
    .await
}

async fn run_bench_metrics(
    args: BenchMetricsArgs,
    sigterm: &mut tokio::signal::unix::Signal,
) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("reef-bench-metrics-{}", std::process::id()));
    let opts = bench_metrics::MetricsBenchOptions {
        bin: locate_reef_binary(args.bin)?,
        connections: args.connections,
        duration: Duration::from_secs(args.seconds as u64),
        rounds: args.rounds,
        size: args.size,
        dir: dir.clone(),
    };
    let report = bench_metrics::run(&opts);
    finish_bench(
        async { report.await.map(|r| r.markdown()) },
        &dir,
        true,
        args.out.as_deref(),
        sigterm,
    )
    .await
}

async fn run_flash(
    args: FlashArgs,
    sigterm: &mut tokio::signal::unix::Signal,
) -> anyhow::Result<()> {
    let bytes = |mbit: f64| (mbit * 1e6 / 8.0).max(1.0) as u64;
    let (dir, temporary) = match args.dir {
        Some(d) => (d, false),
        None => (
            std::env::temp_dir().join(format!("reef-flash-{}", std::process::id())),
            true,
        ),
    };
    let opts = flash::FlashOptions {
        bin: locate_reef_binary(args.bin)?,
        dir: dir.clone(),
        out: args.out.clone(),
        providers: args.providers,
        nodes_per_provider: args.nodes,
        primary_link: bytes(args.primary_mbit),
        peer_link: bytes(args.peer_mbit),
        origin_link: bytes(args.origin_mbit),
        object_size: args.object_size.max(1),
        catalogue: args.objects,
        zipf: args.zipf,
        baseline: args.baseline,
        surge: args.surge,
        schedule: flash::Durations {
            warmup: Duration::from_secs(args.warmup),
            ramp: Duration::from_secs(args.ramp),
            hold: Duration::from_secs(args.hold),
            calm: Duration::from_secs(args.calm),
        },
        high_watermark: args.high_watermark,
        low_watermark: args.low_watermark,
        trigger_window_s: args.trigger_window,
        cooldown_s: args.cooldown,
        ceiling: (args.ceiling != 0.0).then_some(args.ceiling),
        seed: args.seed,
        command: std::env::args()
            .map(|a| shell_quote(&a))
            .collect::<Vec<_>>()
            .join(" "),
    };
    let report = flash::run(&opts);
    let out = args.out;
    finish_bench(
        async {
            report
                .await
                .map(|summary| format!("{summary}\nWritten to {}\n", out.display()))
        },
        &dir,
        temporary,
        None,
        sigterm,
    )
    .await
}

async fn run_bench_nginx(
    args: BenchNginxArgs,
    sigterm: &mut tokio::signal::unix::Signal,
) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("reef-bench-nginx-{}", std::process::id()));
    let command = std::env::args()
        .map(|a| shell_quote(&a))
        .collect::<Vec<_>>()
        .join(" ");
    let bin = locate_reef_binary(args.bin)?;
    let tools = match (args.nginx, args.wrk) {
        (Some(nginx), Some(wrk)) => bench_nginx::Tools { nginx, wrk },
        (nginx, wrk) => {
            let found = bench_nginx::ensure_tools(!args.no_install).await?;
            bench_nginx::Tools {
                nginx: nginx.unwrap_or(found.nginx),
                wrk: wrk.unwrap_or(found.wrk),
            }
        }
    };
    let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
    let opts = bench_nginx::NginxBenchOptions {
        bin,
        tools,
        sizes: args.sizes,
        connections: args.connections,
        threads: args.threads,
        duration: Duration::from_secs(args.seconds as u64),
        rounds: args.rounds,
        nginx_workers: args.nginx_workers.unwrap_or(nproc),
        nice: args.nice,
        dir: dir.clone(),
        command,
    };
    let report = bench_nginx::run(&opts);
    finish_bench(
        async { report.await.map(|r| r.markdown()) },
        &dir,
        true,
        args.out.as_deref(),
        sigterm,
    )
    .await
}

/// Waits for a benchmark (stopping, which kills its nodes, on Ctrl-C or SIGTERM), prints its
/// markdown report and writes it to `out` if asked, and removes a temporary `dir`.
async fn finish_bench(
    report: impl std::future::Future<Output = Result<String, reef_testnet::Error>>,
    dir: &std::path::Path,
    temporary: bool,
    out: Option<&std::path::Path>,
    sigterm: &mut tokio::signal::unix::Signal,
) -> anyhow::Result<()> {
    let text = tokio::select! {
        report = report => report.with_context(|| {
            format!("benchmark failed; node data and logs are in {}", dir.display())
        })?,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
        _ = sigterm.recv() => anyhow::bail!("terminated"),
    };
    print!("{text}");
    if let Some(out) = out {
        std::fs::write(out, &text).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("reef-testnet: report written to {}", out.display());
    }
    if temporary && let Err(e) = std::fs::remove_dir_all(dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "could not remove the benchmark directory");
    }
    Ok(())
}

/// `arg` as a POSIX shell word: unchanged when safe, else single-quoted.
fn shell_quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/:._-=@,+".contains(c))
    {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

fn short(peer_id: &str) -> String {
    let n = peer_id.chars().count();
    if n <= 12 {
        peer_id.to_owned()
    } else {
        let tail: String = peer_id.chars().skip(n - 6).collect();
        format!("{}…{tail}", peer_id.chars().take(5).collect::<String>())
    }
}

fn print_nodes(testnet: &Testnet) {
    println!();
    println!(
        "{:<8} {:<8} {:<10} {:<6} {:<14} {:<22} admin",
        "name", "provider", "id", "region", "peer", "http"
    );
    for (i, node) in testnet.nodes.iter().enumerate() {
        let rt = node.runtime();
        let id: String = rt.provider_id.chars().take(8).collect();
        println!(
            "{:<8} {:<8} {:<10} {:<6} {:<14} {:<22} {}",
            Testnet::node_name(i),
            rt.provider,
            id,
            rt.region,
            short(&rt.peer_id),
            rt.http.to_string(),
            rt.admin
        );
    }
    println!();
    println!("origin:   {}", testnet.origin.url("/"));
    println!("manifest: {}", testnet.manifest_path().display());
    println!(
        "dashboard: http://{}/ (every node's admin address serves one)",
        testnet.nodes[0].runtime().admin
    );
    println!(
        "try:      curl -sv -x http://{} {} -o /dev/null",
        testnet.nodes[0].runtime().http,
        testnet.origin.url("/bytes/1048576")
    );
    for (i, node) in testnet.nodes.iter().enumerate() {
        let rt = node.runtime();
        if let Some(dns) = rt.dns {
            let k = rt.provider.trim_start_matches('p');
            println!(
                "dns:      {} at {dns}: dig @{} -p {} site-p{k}.example.p{k}.cdn.test A",
                Testnet::node_name(i),
                dns.ip(),
                dns.port()
            );
        }
    }
    println!();
}

async fn run_demo(testnet: &Testnet) {
    const PATHS: [&str; 3] = ["/bytes/1024", "/bytes/1048576", "/bytes/10485760"];
    let n = testnet.nodes.len();
    // First via node-0 (origin), then via every other node (peer), then node-0 again (local).
    let order: Vec<usize> = std::iter::once(0)
        .chain(1..n)
        .chain(std::iter::once(0))
        .collect();
    println!(
        "{:<18} {:<7} {:<7} {:<6} {:>10} {:>8} body",
        "url", "node", "source", "cache", "bytes", "ms"
    );
    for path in PATHS {
        let url = testnet.origin.url(path);
        let len = path
            .rsplit('/')
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        let expected = origin::expected_digest(path, len);
        for (k, &i) in order.iter().enumerate() {
            let node = &testnet.nodes[i];
            let name = Testnet::node_name(i);
            // The first fetch goes to the origin; node-0 announces the object in the
            // background once it is stored, so take the counters' baseline now and wait for
            // the announcement before the other nodes look for it.
            let announced_before = if k == 0 {
                announcements_of(testnet).await
            } else {
                None
            };
            let mut stored = false;
            match client::fetch_digest(Some(node.runtime().http), &url, DEMO_FETCH_TIMEOUT).await {
                Ok(r) => {
                    stored = r.status.is_success();
                    let body = if !r.status.is_success() {
                        format!("HTTP {}", r.status.as_u16())
                    } else if r.digest == expected && r.len == len {
                        "ok".into()
                    } else {
                        "WRONG".into()
                    };
                    println!(
                        "{:<18} {:<7} {:<7} {:<6} {:>10} {:>8} {}",
                        path,
                        name,
                        r.source().unwrap_or("-"),
                        r.x_cache().unwrap_or("-"),
                        r.len,
                        r.elapsed.as_millis(),
                        body
                    );
                }
                Err(e) => println!("{path:<18} {name:<7} error: {e}"),
            }
            if let Some(before) = announced_before.filter(|_| stored) {
                wait_announced(testnet, before).await;
            }
        }
        println!(
            "{:<18} origin served it {} time(s)",
            "",
            testnet.origin.hits(path)
        );
    }
    println!();
}
